//! In-process submission: a message that a user already authenticated by other means (the web
//! interface's session) hands over without an SMTP session. It takes the same decisions as a session
//! on a submission listener after AUTH, through the same functions: the sender binding and the message
//! rate of [`Policy::check_sender`](crate::policy::Policy::check_sender), each recipient routed by
//! [`Policy::route`](crate::policy::Policy::route) and checked against its quota, the message limits of
//! the submission listener (`[limits] max_recipients`, `max_message_size`), DKIM signing, vacation
//! replies, and the commit of `crate::delivery` (local mailboxes, the outbound queue for the rest)
//! before the answer; with `keep_copy`, the same commit also stores it in the user's `Sent` folder.
//! The trace fields say how it came: `Received: from web ([client]) by HOST
//! (mailroom) with PROTOCOL (web interface, user ADDRESS) id ID`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use mailroom_proto::params::{MailParams, RcptParams};
use mailroom_proto::{Address, ForwardPath, Reply, ReversePath};
use mailroom_store::routing::one_per_maildir;
use tracing::info;

use crate::delivery::{envelope_of, storage_failure, Origin, Outgoing, Receiving};
use crate::metrics::RefusalReason;
use crate::policy::{Client, Route};
use crate::shared::Shared;
use crate::trace::TraceInfo;

/// Body bytes handed to the message file in one write (as a session's largest read).
const CHUNK: usize = 64 * 1024;

/// The name a web submission's Received field gives as the client's (it sent no HELO).
const WEB_HELO: &str = "web";

/// Submits messages in-process for authenticated users (see the module doc). Cheap to clone.
#[derive(Clone)]
pub struct Submitter {
    shared: Arc<Shared>,
}

/// One message to submit.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The authenticated user (its address as the user directory has it).
    pub user: String,
    /// The address the user's client connected from (the per-address message rate applies to it).
    pub client: IpAddr,
    /// The protocol word of the Received field's `with` clause: `HTTP` or `HTTPS`.
    pub protocol: &'static str,
    /// The envelope sender; it must be an address the user may send as.
    pub from: Address,
    /// Every envelope recipient (To, Cc and Bcc).
    pub rcpts: Vec<Address>,
    /// The message: RFC 5322, CRLF line ends, no trace fields (they are added here).
    pub message: Vec<u8>,
    /// Also store the message in the user's own `Sent` folder (Maildir++ `.Sent/`, made when missing),
    /// in the same commit as the recipients' copies: all of them or none.
    pub keep_copy: bool,
}

/// A submitted message: durable in every local mailbox and in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The store's id (as in the 250 reply of SMTP).
    pub id: String,
    /// Local mailboxes it was stored in.
    pub local: usize,
    /// Addresses queued for delivery elsewhere.
    pub queued: usize,
    /// A copy is in the user's `Sent` folder (`.Sent/new/`, under the id).
    pub kept: bool,
}

/// Why a submission was refused: the reply an SMTP client would have had, by kind.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SubmitError {
    /// The sender is not an address the user may send as (553 5.7.1).
    #[error("{0}")]
    SenderNotAllowed(Reply),
    /// Too many messages from the client's address lately (450 4.7.1).
    #[error("{0}")]
    RateLimited(Reply),
    #[error("no recipients")]
    NoRecipients,
    /// More than `[limits] max_recipients`.
    #[error("{given} recipients, at most {max}")]
    TooManyRecipients { given: usize, max: usize },
    /// Larger than `[limits] max_message_size` (RFC 1870's SIZE limit).
    #[error("{size} octets, at most {max}")]
    TooLarge { size: u64, max: u64 },
    /// A recipient refused (no such user, relaying not configured, null MX, mailbox full, ...).
    #[error("<{address}>: {reply}")]
    Recipient { address: String, reply: Reply },
    /// The message was not taken: storage failure (4xx) or a loop (5xx).
    #[error("{0}")]
    Refused(Reply),
}

impl Submitter {
    pub(crate) fn new(shared: Arc<Shared>) -> Submitter {
        Submitter { shared }
    }

    /// Submits `s` as its user's SMTP AUTH session would; the message is durable when this returns Ok.
    pub async fn submit(&self, s: Submission) -> Result<Submitted, SubmitError> {
        let limits = &self.shared.submission;
        let size = s.message.len() as u64;
        if s.rcpts.is_empty() {
            return Err(SubmitError::NoRecipients);
        }
        if s.rcpts.len() > limits.max_recipients {
            return Err(SubmitError::TooManyRecipients { given: s.rcpts.len(), max: limits.max_recipients });
        }
        if size > limits.max_message_size {
            return Err(SubmitError::TooLarge { size, max: limits.max_message_size });
        }
        let client = Client { ip: s.client, authenticated: Some(&s.user) };
        let from = ReversePath::Mailbox(s.from.clone());
        if let Err(refusal) = self.shared.policy.check_sender(client, &from, Instant::now()) {
            crate::metrics::refusal(&refusal);
            info!(user = %s.user, %from, reason = refusal.reason, "web submission: sender refused");
            return Err(match crate::metrics::refusal_reason(&refusal) {
                RefusalReason::RateLimited => SubmitError::RateLimited(refusal.reply),
                _ => SubmitError::SenderNotAllowed(refusal.reply),
            });
        }
        let rcpts: Vec<ForwardPath> = s.rcpts.iter().cloned().map(ForwardPath::Mailbox).collect();
        let routes = self.route_all(client, &from, &rcpts, size).await?;
        self.deliver(&s, &from, &rcpts, &routes).await
    }

    /// Every recipient routed and quota-checked as RCPT TO is; the first refusal ends the submission.
    async fn route_all(
        &self,
        client: Client<'_>,
        from: &ReversePath,
        rcpts: &[ForwardPath],
        size: u64,
    ) -> Result<Vec<Route>, SubmitError> {
        let policy = &self.shared.policy;
        let mut routes: Vec<Route> = Vec::with_capacity(rcpts.len());
        for to in rcpts {
            let routed = match policy.route(client, from, to, &routes).await {
                Ok(route) => policy.check_quota(&route, Some(size)).await.map(|()| route),
                Err(refusal) => Err(refusal),
            };
            match routed {
                Ok(route) => routes.push(route),
                Err(refusal) => {
                    crate::metrics::refusal(&refusal);
                    info!(%to, reply = %refusal.reply, "web submission: rcpt refused");
                    let address = crate::policy::rcpt_string(to);
                    return Err(SubmitError::Recipient { address, reply: refusal.reply });
                }
            }
        }
        Ok(routes)
    }

    /// Writes the message with its trace fields (and DKIM signature) and commits it.
    async fn deliver(
        &self,
        s: &Submission,
        from: &ReversePath,
        rcpts: &[ForwardPath],
        routes: &[Route],
    ) -> Result<Submitted, SubmitError> {
        let shared = &self.shared;
        // The user's address goes into a comment: keep only what cannot end one.
        let user: String = s.user.chars().filter(|c| c.is_ascii_graphic() && !"()\\".contains(*c)).collect();
        let protocol = format!("{} (web interface, user {user})", s.protocol);
        let trace = TraceInfo {
            helo: WEB_HELO,
            peer: s.client,
            hostname: &shared.submission.hostname,
            protocol: &protocol,
            id: "",
            from,
            rcpts,
            delivered_to: crate::connection::delivered_to(routes),
            now: SystemTime::now(),
        };
        let mut r =
            Receiving::begin(&shared.store, trace, None).map_err(|e| SubmitError::Refused(storage_failure(&e)))?;
        let locals = one_per_maildir(routes.iter().flat_map(Route::locals));
        r.vacation = shared.vacation.watch(from, &locals);
        r.sign_with(shared.signing.message_signer());
        for chunk in s.message.chunks(CHUNK) {
            r.handle_data(chunk);
        }
        let origin = Origin { auth: Some(&s.user), client: s.client };
        let params = vec![RcptParams::default(); routes.len()];
        let envelope = envelope_of(from, routes, &params, &MailParams::default(), origin, SystemTime::now());
        let queued = envelope.as_ref().map_or(0, |e| e.rcpts.len());
        let outgoing =
            envelope.map(|envelope| Outgoing { queue: &shared.queue, outbound: shared.outbound.as_ref(), envelope });
        let vacation = r.vacation.take();
        // The sender's own copy rides in the same commit (a user without a mailbox here keeps none).
        let kept = s.keep_copy.then(|| shared.store.mailbox(&s.user).ok()).flatten().map(|m| shared.store.sent(m.id()));
        let places: Vec<_> = locals.iter().cloned().chain(kept.iter().cloned()).collect();
        let reply = r.finish(&places, outgoing, None, &from.to_string(), shared.max_hops).await;
        if reply.code != 250 {
            return Err(SubmitError::Refused(reply));
        }
        if let Some(watch) = vacation {
            shared.vacation.handle_stored(watch, shared.outbound.clone());
        }
        // "Ok: stored as ID" / "Ok: queued as ID".
        let id = reply.lines.first().and_then(|l| l.rsplit(' ').next()).unwrap_or_default().to_owned();
        info!(user = %s.user, %id, local = locals.len(), queued, kept = kept.is_some(), "web submission");
        Ok(Submitted { id, local: locals.len(), queued, kept: kept.is_some() })
    }
}
