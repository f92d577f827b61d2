//! Vacation replies (RFC 3834) on the delivery path: [`Responder::watch`] decides at the start of data
//! whether a message could need a reply (a local recipient with a reply on, a non-null sender) and only
//! then keeps its header section ([`Watch`], bounded by `[limits] max_header_size`) while it streams;
//! after the 250, [`Responder::handle_stored`] decides per user (`mailroom_store::vacation::skip_reason`,
//! one reply per sender per `[vacation] interval`), builds the reply and hands it over like the relay's
//! DSNs: through the queue with the null reverse path (or into a local sender's mailbox), then wakes the
//! relay. Settings, records and the decision live in `mailroom_store::vacation`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mailroom_proto::ReversePath;
use mailroom_queue::{Envelope, Queue};
use mailroom_store::store::JUNK_FOLDER;
use mailroom_store::vacation::{skip_reason, HeaderFacts, Vacation, VacationCache};
use mailroom_store::{MailboxId, Store, StoreError};
use tracing::{debug, info, warn};

use crate::outbound::Outbound;
use crate::trace::rfc5322_date;

/// What a server needs to answer for its users.
pub(crate) struct Responder {
    cache: Arc<VacationCache>,
    store: Store,
    queue: Queue,
    hostname: String,
    /// `[vacation] interval`.
    interval: Duration,
    /// `[limits] max_header_size`: the most of a header section a [`Watch`] keeps.
    max_header: usize,
}

/// A message on its way in whose recipients include users with a reply on: the envelope sender, those
/// users, and the header section as it streams (CRLF form).
pub(crate) struct Watch {
    from: String,
    users: Vec<(MailboxId, Arc<Vacation>)>,
    header: Vec<u8>,
    max_header: usize,
    /// The empty line was seen (or the bound reached): nothing more is kept.
    is_complete: bool,
}

impl Watch {
    /// Body bytes as the session hands them over; keeps the header section, never more than the bound.
    pub(crate) fn handle_data(&mut self, chunk: &[u8]) {
        if self.is_complete {
            return;
        }
        // A message with no header section at all starts with the empty line.
        let search_from = self.header.len().saturating_sub(3);
        let room = self.max_header.saturating_sub(self.header.len());
        self.header.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if self.header.starts_with(b"\r\n") {
            self.header.clear();
            self.is_complete = true;
        } else if let Some(at) = self.header[search_from..].windows(4).position(|w| w == b"\r\n\r\n") {
            self.header.truncate(search_from + at + 4);
            self.is_complete = true;
        } else if self.header.len() >= self.max_header {
            self.is_complete = true;
        }
    }
}

impl Responder {
    pub(crate) fn new(
        store: Store,
        queue: Queue,
        hostname: String,
        interval: Duration,
        max_header: usize,
    ) -> Result<Responder, StoreError> {
        let cache = VacationCache::start(store.data_dir())?;
        Ok(Responder { cache, store, queue, hostname, interval, max_header })
    }

    /// At the start of data: a [`Watch`] when some local recipient has a reply on now and the sender is
    /// not null; None otherwise (the common case costs one in-memory look).
    pub(crate) fn watch(&self, from: &ReversePath, locals: &[MailboxId]) -> Option<Watch> {
        let ReversePath::Mailbox(sender) = from else { return None };
        if self.cache.is_empty() {
            return None;
        }
        let now = SystemTime::now();
        let mut users: Vec<(MailboxId, Arc<Vacation>)> = Vec::new();
        for mailbox in locals {
            // Mail filed as junk gets no reply (it would go to a forged sender).
            if mailbox.folder() == Some(JUNK_FOLDER) {
                continue;
            }
            // One reply per user, however many of its folders the message lands in.
            let inbox = mailbox.inbox();
            if users.iter().any(|(m, _)| *m == inbox) {
                continue;
            }
            if let Some(v) = self.cache.get(&inbox).filter(|v| v.is_active(now)) {
                users.push((inbox, v));
            }
        }
        if users.is_empty() {
            return None;
        }
        let from = sender.to_string();
        Some(Watch { from, users, header: Vec::new(), max_header: self.max_header, is_complete: false })
    }

    /// After the 250: the replies `watch` calls for, decided and sent off the async threads.
    pub(crate) fn handle_stored(self: &Arc<Self>, watch: Watch, outbound: Option<Arc<dyn Outbound>>) {
        let responder = self.clone();
        tokio::task::spawn_blocking(move || {
            let facts = HeaderFacts::parse(&watch.header);
            let mut queued = false;
            for (user, vacation) in &watch.users {
                match responder.reply(&facts, &watch.from, user, vacation) {
                    Ok(q) => queued |= q,
                    Err(error) => warn!(%error, %user, to = %watch.from, "vacation reply failed"),
                }
            }
            if let (true, Some(outbound)) = (queued, outbound) {
                outbound.wake();
            }
        });
    }

    /// One user's reply to `sender`, when due: recorded first, then stored. True when it was queued.
    fn reply(&self, facts: &HeaderFacts, sender: &str, user: &MailboxId, v: &Vacation) -> Result<bool, StoreError> {
        if let Some(reason) = skip_reason(facts, sender, user) {
            debug!(%user, to = sender, reason, "no vacation reply");
            return Ok(false);
        }
        if !self.cache.check_and_record(user, sender, SystemTime::now(), self.interval)? {
            debug!(%user, to = sender, "no vacation reply: answered within the interval");
            return Ok(false);
        }
        let mut incoming = self.store.begin()?;
        let id = incoming.id().to_string();
        let now = SystemTime::now();
        let message = build_reply(&ReplyParts { id: &id, hostname: &self.hostname, user, sender, now }, facts, v);
        // DKIM: the signing hook (crates/server/src/signing.rs) adds its DKIM-Signature for the user's
        // domain here, before `message` is written, when a key exists.
        incoming.write(message.as_bytes())?;
        let local = sender.rsplit_once('@').and_then(|(l, d)| self.store.users().lookup(l, d));
        if let Some(mailbox) = local {
            incoming.commit(&[mailbox]).wait()?;
            info!(id, %user, to = sender, "vacation reply delivered to a local mailbox");
            return Ok(false);
        }
        let envelope = Envelope::new(id.clone(), "", now, incoming.len(), &[sender]);
        let spool = self.queue.spool_for(&envelope);
        incoming.commit_with(&[], Some(spool)).wait()?;
        self.queue.add_committed(envelope);
        info!(id, %user, to = sender, "vacation reply queued");
        Ok(true)
    }
}

/// Who and when, for [`build_reply`].
struct ReplyParts<'a> {
    id: &'a str,
    hostname: &'a str,
    user: &'a MailboxId,
    sender: &'a str,
    now: SystemTime,
}

/// The reply in the store's form (LF line ends, our Return-Path and trace lines first): From the user, To
/// the envelope sender, the configured Subject, `In-Reply-To`/`References` to the original, and
/// `Auto-Submitted: auto-replied` (RFC 3834 §3.1, §5) so that other responders do not answer it.
fn build_reply(p: &ReplyParts<'_>, facts: &HeaderFacts, v: &Vacation) -> String {
    let date = rfc5322_date(p.now);
    let mut m = String::from("Return-Path: <>\n");
    m.push_str(&format!("Received: by {} (mailroom) id {}\n\tfor <{}>; {date}\n", p.hostname, p.id, p.sender));
    m.push_str(&format!("Date: {date}\nFrom: <{}>\nTo: <{}>\n", p.user.address(), p.sender));
    m.push_str(&format!("Subject: {}\n", encode_word(&v.subject)));
    m.push_str(&format!("Message-ID: <{}@{}>\n", p.id, p.hostname));
    if let Some(original) = &facts.message_id {
        // RFC 3834 §3.1.5 / RFC 5322 §3.6.4: the original's references, then the original itself.
        let mut refs: Vec<String> = facts.references.iter().map(|r| format!("<{r}>")).collect();
        refs.push(format!("<{original}>"));
        m.push_str(&format!("In-Reply-To: <{original}>\nReferences: {}\n", refs.join("\n ")));
    }
    m.push_str("Auto-Submitted: auto-replied\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n");
    let encoding = if v.body.is_ascii() { "7bit" } else { "8bit" };
    m.push_str(&format!("Content-Transfer-Encoding: {encoding}\n\n"));
    let body = v.body.replace("\r\n", "\n").replace('\r', "\n");
    m.push_str(&body);
    if !body.ends_with('\n') {
        m.push('\n');
    }
    m
}

/// The subject as is when it is ASCII, else one RFC 2047 encoded word per 45 octets (whole characters).
fn encode_word(text: &str) -> String {
    if text.is_ascii() {
        return text.to_string();
    }
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in text.chars() {
        if chunk.len() + c.len_utf8() > 45 {
            words.push(std::mem::take(&mut chunk));
        }
        chunk.push(c);
    }
    words.push(chunk);
    let encoded: Vec<String> =
        words.iter().map(|w| format!("=?utf-8?B?{}?=", mailroom_proto::base64::encode(w.as_bytes()))).collect();
    encoded.join("\n ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(max_header: usize) -> Watch {
        Watch { from: "b@x".into(), users: Vec::new(), header: Vec::new(), max_header, is_complete: false }
    }

    #[test]
    fn the_header_section_is_kept_across_chunks_and_bounded() {
        let msg = b"Subject: a\r\nTo: x@y\r\n\r\nbody\r\n\r\nmore";
        for split in 0..msg.len() {
            let mut w = watch(1000);
            w.handle_data(&msg[..split]);
            w.handle_data(&msg[split..]);
            assert_eq!(w.header, b"Subject: a\r\nTo: x@y\r\n\r\n", "split at {split}");
        }
        let mut w = watch(10);
        w.handle_data(msg);
        w.handle_data(msg);
        assert_eq!(w.header.len(), 10);
        let mut w = watch(100);
        w.handle_data(b"\r\nbody");
        assert!(w.header.is_empty() && w.is_complete);
    }

    #[test]
    fn a_non_ascii_subject_is_encoded() {
        assert_eq!(encode_word("Away"), "Away");
        let e = encode_word("Abwesend bis März");
        assert!(e.starts_with("=?utf-8?B?") && e.is_ascii(), "{e}");
    }
}
