//! One delivery attempt of one message to one destination, over a connection the caller holds: the checks
//! that bounce without sending (SIZE, SMTPUTF8), the transactions (split on 452), and the result of every
//! recipient. No queue and no DNS here: [`crate::connect`] finds the connection, the scheduler records.

use std::sync::Arc;

use mailroom_client::{Client, Envelope, Message};
use mailroom_proto::params::{RcptParams, Ret};
use mailroom_proto::{Address, Domain, ForwardPath, Reply, ReversePath};

use crate::dns::to_a_label;
use crate::message::Outgoing;

/// A message and the recipients of it that go to one destination.
#[derive(Debug, Clone)]
pub struct Job {
    /// The queue id, in every log line.
    pub id: String,
    pub from: ReversePath,
    /// RFC 3461 RET and ENVID, passed on to a server that offers DSN.
    pub ret: Option<Ret>,
    pub envid: Option<String>,
    pub rcpts: Vec<JobRcpt>,
    pub message: Arc<Outgoing>,
}

/// One recipient of a [`Job`].
#[derive(Debug, Clone)]
pub struct JobRcpt {
    /// Its index in the queue entry.
    pub index: usize,
    pub to: ForwardPath,
    /// NOTIFY and ORCPT, passed on to a server that offers DSN.
    pub params: RcptParams,
}

/// What happened to a recipient in one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx after the data: the next hop has it.
    Sent,
    /// Try again later (4xx, no host reachable, connection lost).
    Deferred,
    /// Give up (5xx, or a check that will fail the same way every time).
    Bounced,
}

/// One recipient's result of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptResult {
    pub index: usize,
    pub verdict: Verdict,
    /// The remote reply (or our own words when no remote reply applies), one line.
    pub reply: String,
    /// RFC 3463 status.
    pub status: String,
    /// The host that gave the reply, if any host did.
    pub remote_mta: Option<String>,
    /// The next hop offered DSN and got the recipient's DSN parameters: a success notification is now its
    /// business; without it, a NOTIFY=SUCCESS recipient is owed a "relayed" DSN (RFC 3461 §4.1).
    pub dsn_passed: bool,
}

/// The connection a job is sent over, with what the log line says of it.
pub struct Conn {
    pub client: Client,
    /// The host name (MX name, or the relayhost).
    pub host: String,
    pub addr: std::net::SocketAddr,
    /// Transactions sent over it so far (for reuse: RSET before the next).
    pub uses: usize,
}

impl Conn {
    /// `host[ip]:port`, Postfix's form.
    pub fn relay(&self) -> String {
        format!("{}[{}]:{}", self.host, self.addr.ip(), self.addr.port())
    }
}

/// RFC 5321 §4.5.3.1.10: 452 to a RCPT means "too many recipients": the rest go in a next transaction.
const TOO_MANY_RECIPIENTS: u16 = 452;
/// A bound on transactions for one job (each carries at least one recipient, so this only stops a
/// server that answers 452 to the first RCPT and 250 to the rest in an odd loop).
const MAX_TRANSACTIONS_PER_JOB: usize = 1000;

/// The connection failed mid-job: which recipients are still without a result, and why.
#[derive(Debug)]
pub struct Broken {
    pub done: Vec<RcptResult>,
    pub error: mailroom_client::Error,
}

/// Sends `job` over `conn`. `Ok` carries a result for every recipient; `Err` means the connection broke:
/// the results so far, and the error (the recipients without a result are to be deferred, and the
/// connection dropped).
pub async fn send_job(conn: &mut Conn, job: &Job) -> Result<Vec<RcptResult>, Broken> {
    let host = conn.host.clone();
    if let Some(results) = precheck(conn, job) {
        return Ok(results);
    }
    let from = wire_reverse(&job.from);
    let mut pending: Vec<JobRcpt> =
        job.rcpts.iter().map(|r| JobRcpt { to: wire_forward(&r.to), ..r.clone() }).collect();
    let mut done = Vec::new();
    for _ in 0..MAX_TRANSACTIONS_PER_JOB {
        if pending.is_empty() {
            break;
        }
        if conn.uses > 0 {
            // A reused connection (or one after a failed transaction): start clean (RFC 5321 §4.1.1.5).
            match conn.client.rset().await {
                Ok(r) if r.code == 250 => {}
                Ok(r) => return Err(Broken { done, error: rejected_rset(r) }),
                Err(error) => return Err(Broken { done, error }),
            }
        }
        conn.uses += 1;
        let envelope = Envelope::new(from.clone(), pending.iter().map(|r| r.to.clone()).collect())
            .with_dsn(job.ret, job.envid.clone())
            .with_rcpt_params(pending.iter().map(|r| r.params.clone()).collect());
        let dsn_passed = conn.client.capabilities().dsn;
        let outcome = match conn.client.send(&envelope, Message::from_bytes(&job.message.bytes)).await {
            Ok(o) => o,
            Err(error) => return Err(Broken { done, error }),
        };
        let any_accepted = outcome.recipients.iter().any(|r| r.result.is_ok());
        let mut next = Vec::new();
        for (rcpt, r) in pending.into_iter().zip(outcome.recipients) {
            match r.result {
                Ok(reply) => done.push(RcptResult { dsn_passed, ..result(rcpt.index, Verdict::Sent, &reply, &host) }),
                // Too many recipients: they go again in the next transaction, if this one got anywhere.
                Err(reply) if reply.code == TOO_MANY_RECIPIENTS && any_accepted => next.push(rcpt),
                Err(reply) => {
                    let verdict = if reply.code >= 500 { Verdict::Bounced } else { Verdict::Deferred };
                    done.push(result(rcpt.index, verdict, &reply, &host));
                }
            }
        }
        pending = next;
    }
    for rcpt in pending {
        done.push(local(rcpt.index, Verdict::Deferred, "4.5.3", "too many recipients; retrying later", Some(&host)));
    }
    Ok(done)
}

/// Checks that fail the same way however often they are sent: the size against the server's SIZE
/// (RFC 1870, 5.3.4), UTF-8 against SMTPUTF8 (RFC 6531: 5.6.7 for addresses, 5.6.9 for a header only)
/// and 8-bit content against 8BITMIME (5.6.3).
fn precheck(conn: &Conn, job: &Job) -> Option<Vec<RcptResult>> {
    let caps = conn.client.capabilities();
    let host = conn.host.as_str();
    let bounce_all = |status: &str, text: String| {
        Some(job.rcpts.iter().map(|r| local(r.index, Verdict::Bounced, status, &text, Some(host))).collect())
    };
    let size = mailroom_proto::client::MessageInfo::scan(&job.message.bytes).size.unwrap_or(0);
    if let Some(limit) = caps.size_limit() {
        if size > limit {
            return bounce_all(
                "5.3.4",
                format!("message of {size} octets exceeds the limit of {limit} octets of {host} (SIZE)"),
            );
        }
    }
    if !caps.smtputf8 {
        let addresses_utf8 =
            !is_ascii_on_wire_reverse(&job.from) || job.rcpts.iter().any(|r| !is_ascii_on_wire_forward(&r.to));
        if addresses_utf8 {
            return bounce_all(
                "5.6.7",
                format!("{host} does not support SMTPUTF8, and an address is not ASCII (RFC 6531)"),
            );
        }
        if job.message.has_utf8_header() {
            return bounce_all(
                "5.6.9",
                format!("{host} does not support SMTPUTF8, and the message header is UTF-8 (RFC 6532)"),
            );
        }
    }
    // RFC 6152: 8-bit content only to a server that offers 8BITMIME (no downgrade to 7-bit here).
    if !caps.eight_bit_mime && !job.message.bytes.is_ascii() {
        return bounce_all(
            "5.6.3",
            format!("{host} does not support 8BITMIME, and the message has 8-bit content (RFC 6152)"),
        );
    }
    None
}

fn rejected_rset(reply: Reply) -> mailroom_client::Error {
    mailroom_client::Error::Protocol(mailroom_proto::client::Error::Rejected {
        step: mailroom_proto::client::Step::Rset,
        reply,
    })
}

/// A result from a remote reply.
fn result(index: usize, verdict: Verdict, reply: &Reply, host: &str) -> RcptResult {
    let status = match reply.enhanced {
        Some(e) => e.to_string(),
        // RFC 3463 §3: without an enhanced code, the class of the basic one with "other".
        None => format!("{}.0.0", reply.code / 100),
    };
    RcptResult {
        index,
        verdict,
        reply: reply.to_string(),
        status,
        remote_mta: Some(host.to_string()),
        dsn_passed: false,
    }
}

/// A result in our own words.
pub fn local(index: usize, verdict: Verdict, status: &str, text: &str, host: Option<&str>) -> RcptResult {
    RcptResult {
        index,
        verdict,
        reply: text.to_string(),
        status: status.to_string(),
        remote_mta: host.map(str::to_string),
        dsn_passed: false,
    }
}

/// The address as it goes on the wire: a U-label domain as its A-label when the local part is ASCII
/// (RFC 5890: an IDN alone needs no SMTPUTF8); otherwise as it is.
pub fn wire_address(a: &Address) -> Address {
    let Domain::Name(domain) = a.domain() else { return a.clone() };
    if domain.is_ascii() || !a.local().is_ascii() {
        return a.clone();
    }
    let Some(ascii) = to_a_label(domain) else { return a.clone() };
    let text = a.to_string();
    let local = text.rsplit_once('@').map_or(text.as_str(), |(l, _)| l);
    Address::parse(&format!("{local}@{ascii}")).unwrap_or_else(|_| a.clone())
}

fn wire_forward(p: &ForwardPath) -> ForwardPath {
    match p {
        ForwardPath::Mailbox(a) => ForwardPath::Mailbox(wire_address(a)),
        other => other.clone(),
    }
}

fn wire_reverse(p: &ReversePath) -> ReversePath {
    match p {
        ReversePath::Mailbox(a) => ReversePath::Mailbox(wire_address(a)),
        ReversePath::Null => ReversePath::Null,
    }
}

fn is_ascii_on_wire_forward(p: &ForwardPath) -> bool {
    match p {
        ForwardPath::Mailbox(a) => wire_address(a).is_ascii(),
        ForwardPath::Postmaster => true,
    }
}

fn is_ascii_on_wire_reverse(p: &ReversePath) -> bool {
    match p {
        ReversePath::Mailbox(a) => wire_address(a).is_ascii(),
        ReversePath::Null => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idn_alone_becomes_an_a_label() {
        let a = Address::parse("bob@bücher.example").unwrap();
        assert_eq!(wire_address(&a).to_string(), "bob@xn--bcher-kva.example");
        assert!(wire_address(&a).is_ascii());
        let u = Address::parse("böb@bücher.example").unwrap();
        assert_eq!(wire_address(&u), u, "a UTF-8 local part keeps the whole address as it is");
        let plain = Address::parse("\"a b\"@example.org").unwrap();
        assert_eq!(wire_address(&plain), plain);
    }
}
