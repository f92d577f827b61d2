//! The checks of inbound mail in the server: who is checked, SPF at MAIL (run on its own task, so it
//! overlaps RCPT and the data transfer unless `spf_fail = "reject"` needs the answer at once), the header
//! section filter (incoming Authentication-Results fields claiming our host name are dropped before they
//! reach the disk, RFC 8601 §5), the DKIM/ARC/DMARC run at the end of data, and the decision it leads to.
//!
//! Checked: clients of the smtp listener that did not authenticate, outside `[limits] trusted_networks`
//! and `[delivery] relay_networks` (mail from those is our own users' outgoing mail, not inbound mail
//! from the world). The filter runs on every message while `[inbound] checks` is on.

use std::net::IpAddr;
use std::sync::Arc;

use mailroom_auth::checks::{spf_name, MessageCheck, Verdict};
use mailroom_auth::mail_auth::SpfResult;
use mailroom_auth::resolver::{Budget, Resolver};
use mailroom_auth::results::strip_ours;
use mailroom_auth::spf::{check_spf, SpfCheck, SpfInput};
use mailroom_proto::{Enhanced, Reply, ReversePath};
use mailroom_store::{MailboxId, Store};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn, Instrument};

use crate::config::{Config, ConfigError};
use crate::config_inbound::{DmarcMode, SpfFail, TempError};
use crate::limits::Cidr;

/// The inbound checks' settings and resolver, shared by every session.
pub(crate) struct Inbound {
    settings: crate::config_inbound::Inbound,
    resolver: Arc<Resolver>,
    relay_networks: Vec<Cidr>,
    hostname: String,
    /// `[limits] max_header_size`: the header section is held in memory up to this (plus a line).
    max_header_size: usize,
}

/// SPF of the current transaction: still running, or done with what is left of the message's DNS budget.
pub(crate) enum Spf {
    Running(SpfTask),
    Done(SpfCheck, Budget),
}

/// A running SPF check, stopped when dropped: a new MAIL (or the end of the session) drops the previous
/// one, so a client cycling MAIL/RSET keeps at most one check running.
pub(crate) struct SpfTask(JoinHandle<(SpfCheck, Budget)>);

impl Drop for SpfTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Inbound {
    /// None when `[inbound] checks = false`.
    pub(crate) fn new(config: &Config) -> Result<Option<Inbound>, ConfigError> {
        if !config.inbound.checks {
            return Ok(None);
        }
        let resolver = Resolver::new(&config.dns.servers, config.inbound.dns_budget)
            .map_err(|e| ConfigError::Invalid(format!("inbound checks: {e}")))?;
        Ok(Some(Inbound {
            settings: config.inbound.clone(),
            resolver: Arc::new(resolver),
            relay_networks: config.delivery.relay_networks()?,
            hostname: config.server.hostname.clone(),
            max_header_size: config.limits.max_header_size,
        }))
    }

    /// True when a client's mail is checked (see the module doc): `is_smtp`, its listener's role is smtp;
    /// `trusted`, it is in `trusted_networks`.
    pub(crate) fn is_checked(&self, is_smtp: bool, ip: IpAddr, authenticated: bool, trusted: bool) -> bool {
        is_smtp && !authenticated && !trusted && !self.relay_networks.iter().any(|n| n.contains(ip))
    }

    /// SPF for a new transaction: started on its own task; with `spf_fail = "reject"` waited for here, and
    /// then a `fail` is 550 5.7.23 (and a `temperror` 451 4.4.3 under `temperror = "defer"`).
    pub(crate) async fn handle_mail(&self, ip: IpAddr, helo: &str, from: &ReversePath) -> Result<Spf, Reply> {
        let resolver = self.resolver.clone();
        let (helo, hostname) = (helo.to_string(), self.hostname.clone());
        let from = match from {
            ReversePath::Mailbox(a) => Some(format!("{}@{}", a.local(), a.domain().as_str())),
            ReversePath::Null => None,
        };
        // In the session's span, so that its log line names the session.
        let task = tokio::spawn(
            async move {
                let mut budget = resolver.budget();
                let input = SpfInput { ip, helo: &helo, mail_from: from.as_deref(), hostname: &hostname };
                let check = check_spf(&resolver, &mut budget, input).await;
                (check, budget)
            }
            .instrument(tracing::Span::current()),
        );
        let mut task = SpfTask(task);
        if self.settings.spf_fail == SpfFail::Tag {
            return Ok(Spf::Running(task));
        }
        let (check, budget) = join(&mut task, &self.resolver).await;
        match check.result() {
            SpfResult::Fail => {
                info!(domain = check.domain(), "sender refused: SPF fail");
                Err(Reply::new(550, Enhanced(5, 7, 23), format!("SPF validation failed for {}", check.domain())))
            }
            SpfResult::TempError if self.settings.temperror == TempError::Defer => Err(defer()),
            _ => Ok(Spf::Done(check, budget)),
        }
    }

    /// The filter for a message's data; with `spf`, the message is checked too.
    pub(crate) fn filter(self: &Arc<Self>, spf: Option<Spf>) -> MessageFilter {
        let checking = spf.map(|spf| {
            let check = MessageCheck::new(self.resolver.clone(), &self.hostname, self.max_header_size);
            Checking { inbound: self.clone(), spf, check }
        });
        MessageFilter {
            header: Some(Vec::new()),
            limit: self.max_header_size,
            hostname: self.hostname.clone(),
            checking,
        }
    }
}

async fn join(task: &mut SpfTask, resolver: &Resolver) -> (SpfCheck, Budget) {
    match (&mut task.0).await {
        Ok(done) => done,
        Err(e) => {
            // Only a panic in mail-auth gets here: record it as a DNS-less result rather than fail the session.
            warn!(error = %e, "SPF check failed");
            let out = mailroom_auth::mail_auth::SpfOutput::new(String::new()).with_result(SpfResult::TempError);
            (SpfCheck { output: out, identity: mailroom_auth::spf::Identity::Helo(String::new()) }, resolver.budget())
        }
    }
}

fn defer() -> Reply {
    Reply::new(451, Enhanced(4, 4, 3), "Temporary DNS failure checking the sender, try again later")
}

/// A message being checked: SPF from MAIL, and the DKIM/ARC/DMARC state fed as the data streams.
pub(crate) struct Checking {
    inbound: Arc<Inbound>,
    spf: Spf,
    check: MessageCheck,
}

/// What the checks say to do with a message.
pub(crate) enum Outcome {
    /// Store it, with this Authentication-Results field (LF line endings) below the trace headers; into
    /// the recipients' `.Junk/` folders when `junk`.
    Deliver { field: String, junk: bool },
    /// Refuse it with this reply; nothing is stored.
    Refuse(Reply),
}

impl Checking {
    /// Waits for SPF, runs the end-of-data checks and decides.
    pub(crate) async fn finish(self) -> Outcome {
        let Checking { inbound, spf, check } = self;
        let (spf, budget) = match spf {
            Spf::Done(check, budget) => (check, budget),
            Spf::Running(mut task) => join(&mut task, &inbound.resolver).await,
        };
        let verdict = check.finish(spf, budget).await;
        log_verdict(&verdict);
        let s = &inbound.settings;
        let enforce = s.dmarc == DmarcMode::Enforce;
        if enforce && verdict.dmarc.is_reject() {
            info!(from = %verdict.dmarc.header_from, "message refused: DMARC policy reject");
            let text = format!("Message rejected: it fails the DMARC policy of {}", verdict.dmarc.header_from);
            return Outcome::Refuse(Reply::new(550, Enhanced(5, 7, 1), text));
        }
        if s.temperror == TempError::Defer && verdict.is_temperror() {
            info!("message deferred: temporary DNS failure");
            return Outcome::Refuse(defer());
        }
        let junk = enforce && verdict.dmarc.is_quarantine();
        if junk {
            info!(from = %verdict.dmarc.header_from, "message quarantined: DMARC policy quarantine");
        }
        Outcome::Deliver { field: verdict.results.to_field("\n"), junk }
    }
}

fn log_verdict(v: &Verdict) {
    let dkim: Vec<String> =
        v.dkim.iter().map(|d| format!("{}:{}", d.domain.as_deref().unwrap_or("-"), d.status)).collect();
    debug!(
        spf = spf_name(v.spf.result()),
        dkim = %dkim.join(","),
        dmarc = v.dmarc.result,
        arc = v.arc.result,
        "inbound checks"
    );
}

/// The mailboxes a message goes to after the checks: each recipient's `.Junk/` folder for a quarantined
/// one.
pub(crate) fn targets(store: &Store, locals: Vec<MailboxId>, junk: bool) -> Vec<MailboxId> {
    if junk {
        locals.iter().map(|m| store.junk(m)).collect()
    } else {
        locals
    }
}

/// A message's data on its way to the store: the header section is held until it is complete (at most
/// `[limits] max_header_size`), our own Authentication-Results fields are dropped from it, then it and
/// the body pass through, fed to the checks on the way.
pub(crate) struct MessageFilter {
    /// The header section so far; None once it has passed.
    header: Option<Vec<u8>>,
    limit: usize,
    hostname: String,
    checking: Option<Checking>,
}

impl MessageFilter {
    /// Takes a chunk of data (CRLF, unstuffed); gives what to store now: the filtered header section when
    /// it just completed, then the rest of the chunk (empty while the header section is still held).
    pub(crate) fn handle_data<'c>(&mut self, chunk: &'c [u8]) -> (Option<Vec<u8>>, &'c [u8]) {
        let Some(held) = self.header.as_mut() else {
            self.feed_body(chunk);
            return (None, chunk);
        };
        let before = held.len();
        held.extend_from_slice(chunk);
        match header_end(held, before) {
            Some(end) => {
                let rest = &chunk[end - before..];
                held.truncate(end);
                let section = self.pass_header();
                self.feed_body(rest);
                (Some(section), rest)
            }
            // Past the limit the session refuses the message anyway: stop holding, pass it through.
            None if held.len() > self.limit + 2 => (Some(self.pass_header()), &[]),
            None => (None, &[]),
        }
    }

    /// At the end of data: what is still held (a message that is all header, without the empty line),
    /// filtered; and the checks, if any.
    pub(crate) fn finish(mut self) -> (Option<Vec<u8>>, Option<Checking>) {
        let held = self.header.is_some().then(|| self.pass_header());
        (held, self.checking)
    }

    /// Drops our own Authentication-Results fields from the held header section and lets it go.
    fn pass_header(&mut self) -> Vec<u8> {
        let held = self.header.take().unwrap_or_default();
        let (section, dropped) = strip_ours(&held, &self.hostname);
        if dropped > 0 {
            info!(dropped, "removed Authentication-Results headers claiming this host");
        }
        let section = section.into_owned();
        if let Some(c) = self.checking.as_mut() {
            c.check.handle_data(&section);
        }
        section
    }

    fn feed_body(&mut self, chunk: &[u8]) {
        if let (Some(c), false) = (self.checking.as_mut(), chunk.is_empty()) {
            c.check.handle_data(chunk);
        }
    }
}

/// Where the header section ends in `held` (just past its empty line), looking from a little before
/// `from` (the separator may straddle chunks); a message starting with an empty line has none.
fn header_end(held: &[u8], from: usize) -> Option<usize> {
    if held.starts_with(b"\r\n") {
        return Some(2);
    }
    let start = from.saturating_sub(3);
    held[start..].windows(4).position(|w| w == b"\r\n\r\n").map(|p| start + p + 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter() -> MessageFilter {
        MessageFilter { header: Some(Vec::new()), limit: 1000, hostname: "mx.test".into(), checking: None }
    }

    /// Feeds `chunks` and returns what would be stored.
    fn run(f: &mut MessageFilter, chunks: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks {
            let (head, rest) = f.handle_data(c);
            out.extend(head.unwrap_or_default());
            out.extend_from_slice(rest);
        }
        out
    }

    #[test]
    fn drops_our_field_across_chunk_boundaries() {
        let msg = b"Authentication-Results: mx.test;\r\n\tdkim=pass\r\nSubject: x\r\n\r\nbody\r\n";
        for split in 1..msg.len() {
            let mut f = filter();
            let out = run(&mut f, &[&msg[..split], &msg[split..]]);
            let (held, _) = f.finish();
            assert!(held.is_none(), "split {split}");
            assert_eq!(out, b"Subject: x\r\n\r\nbody\r\n", "split {split}");
        }
    }

    #[test]
    fn empty_header_section_and_header_only_messages() {
        let mut f = filter();
        assert_eq!(run(&mut f, &[b"\r\nbody\r\n"]), b"\r\nbody\r\n");
        let mut f = filter();
        assert!(run(&mut f, &[b"Authentication-Results: mx.test; spf=pass\r\nSubject: y\r\n"]).is_empty());
        let (held, _) = f.finish();
        assert_eq!(held.unwrap(), b"Subject: y\r\n");
    }

    #[test]
    fn an_endless_header_section_is_not_held_past_the_limit() {
        let mut f = filter();
        let line =
            b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
        let mut stored = 0;
        for _ in 0..100 {
            let (head, rest) = f.handle_data(line);
            stored += head.map_or(0, |h| h.len()) + rest.len();
            assert!(f.header.as_ref().map_or(0, Vec::len) <= 1000 + 2 + line.len());
        }
        assert_eq!(stored, 100 * line.len());
    }
}
