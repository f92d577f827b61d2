//! A message on its way into the store: the open message file, the CRLF-to-LF conversion of the body,
//! the loop check (Received fields counted in the header section), and the commit that makes it durable
//! in every local recipient's mailbox and, for remote recipients, in the outbound queue, before the 250.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use mailroom_proto::data::{HeaderScan, ToLf};
use mailroom_proto::params::{self, RcptParams};
use mailroom_proto::server::Transaction;
use mailroom_proto::{Enhanced, ForwardPath, Reply, ReversePath};
use mailroom_queue::{Envelope, Queue, Recipient};
use mailroom_store::{Incoming, MailboxId, Store, StoreError};
use tracing::{info, warn};

use crate::inbound::{MessageFilter, Outcome};
use crate::outbound::{DeliveredNotice, Outbound};
use crate::policy::Route;
use crate::signing::MessageSigner;
use crate::trace::{trace_headers, TraceInfo};

/// The remote half of a transaction: its envelope (the message id and size are filled in at commit),
/// the queue it goes into and the relay to wake once it is there.
pub(crate) struct Outgoing<'a> {
    pub(crate) queue: &'a Queue,
    pub(crate) outbound: Option<&'a Arc<dyn Outbound>>,
    pub(crate) envelope: Envelope,
}

/// Who handed a message over, for the envelope.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin<'a> {
    pub(crate) auth: Option<&'a str>,
    pub(crate) client: IpAddr,
}

/// The largest body chunk converted and handed to the store in one write (the session's chunks are
/// at most the socket read buffer).
const SCRATCH: usize = 64 * 1024;

/// A message being received: the store's open file and the body converter.
pub(crate) struct Receiving {
    incoming: Incoming,
    lf: ToLf,
    scratch: Vec<u8>,
    /// The first write error; the rest of the body is then dropped and the end of data says 451/452.
    failed: Option<StoreError>,
    /// Counts the Received fields of the header section (the loop check).
    scan: HeaderScan,
    /// The header section kept for the vacation decision, when a recipient has a reply on.
    pub(crate) vacation: Option<crate::vacation::Watch>,
    store: Store,
    /// Bytes of mailroom's own trace headers at the start of the file: headers known only at the end
    /// (Authentication-Results, DKIM-Signature) are inserted here.
    trace_len: u64,
    /// DKIM signing of submitted mail (`signing.rs`), when the client may submit and keys exist.
    signer: Option<MessageSigner>,
    /// The inbound filter and checks (`[inbound]`), when on.
    filter: Option<MessageFilter>,
}

impl Receiving {
    /// Opens the message file and writes the trace headers (`Return-Path:`, `Received:`); `trace` holds
    /// everything but the message id, which the store gives.
    pub(crate) fn begin(
        store: &Store,
        trace: TraceInfo<'_>,
        filter: Option<MessageFilter>,
    ) -> Result<Receiving, StoreError> {
        let mut incoming = store.begin()?;
        let headers = trace_headers(&TraceInfo { id: incoming.id(), ..trace });
        incoming.write(headers.as_bytes())?;
        let trace_len = incoming.len();
        Ok(Receiving {
            incoming,
            lf: ToLf::default(),
            scratch: Vec::with_capacity(SCRATCH),
            failed: None,
            scan: HeaderScan::default(),
            vacation: None,
            store: store.clone(),
            trace_len,
            signer: None,
            filter,
        })
    }

    /// Where mailroom's own trace headers (Return-Path, Received) end in the stored file.
    #[allow(dead_code)] // for DKIM signing, being built
    pub(crate) fn trace_len(&self) -> u64 {
        self.trace_len
    }

    /// Signs the message with `signer` (DKIM-Signature fields go in below the trace headers at the end).
    pub(crate) fn sign_with(&mut self, signer: Option<MessageSigner>) {
        self.signer = signer;
    }

    /// Body bytes as the session hands them over (CRLF line endings, unstuffed).
    pub(crate) fn handle_data(&mut self, chunk: &[u8]) {
        if let Some(s) = &mut self.signer {
            s.handle_data(chunk);
        }
        // The session bounds the header section itself; here it is only counted.
        self.scan.feed(chunk, usize::MAX, usize::MAX);
        if let Some(watch) = self.vacation.as_mut() {
            watch.handle_data(chunk);
        }
        match self.filter.as_mut() {
            Some(f) => {
                let (header, rest) = f.handle_data(chunk);
                if let Some(h) = header {
                    self.write(&h);
                }
                self.write(rest);
            }
            None => self.write(chunk),
        }
    }

    /// Converts and writes; keeps the first error.
    fn write(&mut self, bytes: &[u8]) {
        if self.failed.is_some() || bytes.is_empty() {
            return;
        }
        self.scratch.clear();
        self.lf.convert(bytes, &mut self.scratch);
        if let Err(e) = self.incoming.write(&self.scratch) {
            self.failed = Some(e);
        }
    }

    /// Whether the message goes through the inbound checks (`[inbound]`) at the end of data.
    pub(crate) fn is_checked(&self) -> bool {
        self.filter.is_some()
    }

    /// The inbound checks at the end of data (None when the message is not checked): a message to store
    /// gets its Authentication-Results field below the trace headers.
    pub(crate) async fn finish_checks(&mut self) -> Option<Outcome> {
        let (held, checking) = self.filter.take()?.finish();
        if let Some(h) = held {
            self.write(&h);
        }
        let outcome = checking?.finish().await;
        if let (Outcome::Deliver { field, .. }, None) = (&outcome, &self.failed) {
            if let Err(e) = self.incoming.insert(self.trace_len, field.as_bytes()) {
                self.failed = Some(e);
            }
        }
        Some(outcome)
    }

    /// Makes the message durable in every local recipient's mailbox and, with `outgoing`, in the queue,
    /// then says 250 (`queued as` when anything was queued, then the relay is woken); or 451/452 and
    /// nothing stored; or 554 5.4.6 for a loop. Logs one line per stored message (sender, recipients,
    /// size): accepted MAIL and RCPT are logged at debug level only.
    pub(crate) async fn finish(
        mut self,
        locals: &[MailboxId],
        outgoing: Option<Outgoing<'_>>,
        notice: Option<SuccessNotice<'_>>,
        from: &str,
        max_hops: usize,
    ) -> Reply {
        if let Err(reply) = self.finish_body() {
            return reply;
        }
        // The copy stored here carries one more Received field, ours: count it too, as the relay does
        // when it reads the queued copy (RFC 5321 §6.3).
        let hops = self.scan.received() + 1;
        if hops > max_hops {
            info!(hops, max_hops, "message refused: too many Received headers (a mail loop?)");
            crate::metrics::record::refusal(crate::metrics::RefusalReason::MailLoop);
            return Reply::new(554, Enhanced(5, 4, 6), "Too many hops: mail loop detected");
        }
        let (id, size) = (self.incoming.id().to_owned(), self.incoming.len());
        let outgoing = outgoing.map(|mut o| {
            o.envelope.id.clone_from(&id);
            o.envelope.size = size;
            o
        });
        let spool = outgoing.as_ref().map(|o| o.queue.spool_for(&o.envelope));
        let started = std::time::Instant::now();
        let committed = self.incoming.commit_with(locals, spool).await;
        crate::metrics::record::commit_duration(started.elapsed());
        match committed {
            Ok(d) => {
                crate::quota::handle_stored(&self.store, locals, d.size);
                crate::metrics::record::message_received(d.size);
                let mut to: Vec<String> = locals.iter().map(|m| m.address()).collect();
                if let Some(n) = notice {
                    n.send(&d, locals);
                }
                let Some(o) = outgoing else {
                    info!(id = %d.id, from, to = %to.join(","), size = d.size, "message stored");
                    return Reply::new(250, Enhanced(2, 0, 0), format!("Ok: stored as {}", d.id));
                };
                to.extend(o.envelope.rcpts.iter().map(|r| r.address.clone()));
                info!(id = %d.id, from, to = %to.join(","), size = d.size, queued = o.envelope.rcpts.len(), "message queued");
                o.queue.add_committed(o.envelope);
                if let Some(outbound) = o.outbound {
                    outbound.wake();
                }
                Reply::new(250, Enhanced(2, 0, 0), format!("Ok: queued as {}", d.id))
            }
            Err(e) => {
                warn!(error = %e, "message commit failed");
                storage_failure(&e)
            }
        }
    }

    /// Writes what the converter still holds; the reply for a write that failed on the way.
    fn finish_body(&mut self) -> Result<(), Reply> {
        // A header section still held (the checks were not run): it goes to disk as it is filtered.
        if let Some((Some(h), _)) = self.filter.take().map(MessageFilter::finish) {
            self.write(&h);
        }
        if self.failed.is_none() {
            self.scratch.clear();
            self.lf.finish(&mut self.scratch);
            if !self.scratch.is_empty() {
                if let Err(e) = self.incoming.write(&self.scratch) {
                    self.failed = Some(e);
                }
            }
        }
        if let (None, Some(fields)) = (&self.failed, self.signer.take().and_then(MessageSigner::finish)) {
            if let Err(e) = self.incoming.insert(self.trace_len, &fields) {
                self.failed = Some(e);
            }
        }
        match &self.failed {
            Some(e) => {
                warn!(error = %e, "message write failed");
                Err(storage_failure(e))
            }
            None => Ok(()),
        }
    }
}

/// The local recipients of a transaction that asked for a success notice (RFC 3461 NOTIFY=SUCCESS), and
/// where to send it; sent once the message is durable.
pub(crate) struct SuccessNotice<'a> {
    pub outbound: &'a dyn Outbound,
    pub notice: DeliveredNotice,
}

impl SuccessNotice<'_> {
    /// Fills in the store's id and one stored copy, then hands the notice to the delivery agent.
    fn send(mut self, d: &mailroom_store::Delivered, locals: &[MailboxId]) {
        let Some(first) = locals.first() else { return };
        self.notice.id.clone_from(&d.id);
        self.notice.message = self.store_path(first, d);
        self.outbound.delivered(self.notice);
    }

    fn store_path(&self, mailbox: &MailboxId, d: &mailroom_store::Delivered) -> std::path::PathBuf {
        self.notice.message.join(mailbox.relative_dir()).join("new").join(format!("{},S={}", d.id, d.size))
    }
}

/// The success notice a transaction calls for: its locally routed recipients whose NOTIFY includes
/// SUCCESS (None when there are none, or no delivery agent to send it). `mailboxes` is the store's
/// `<data-dir>/mailboxes`.
pub(crate) fn success_notice<'a>(
    tx: &Transaction<Route>,
    outbound: Option<&'a Arc<dyn Outbound>>,
    mailboxes: std::path::PathBuf,
    now: SystemTime,
) -> Option<SuccessNotice<'a>> {
    let outbound = outbound?;
    let recipients: Vec<(String, Option<String>)> = tx
        .recipients()
        .zip(tx.rcpt_params())
        .filter(|((_, route), params)| route.is_local() && params.notify.is_some_and(|n| n.success))
        .map(|((to, _), params)| {
            let orcpt = params.orcpt.as_ref().map(|o| format!("{};{}", o.addr_type, o.address));
            let to = match to {
                ForwardPath::Mailbox(a) => a.to_string(),
                ForwardPath::Postmaster => "postmaster".to_string(),
            };
            (to, orcpt)
        })
        .collect();
    // The null sender asks for nothing (RFC 3461 §5.2: no DSN about a DSN).
    let ReversePath::Mailbox(from) = &tx.from else { return None };
    if recipients.is_empty() {
        return None;
    }
    let notice = DeliveredNotice {
        id: String::new(),
        from: from.to_string(),
        envid: tx.params.envid.clone(),
        ret_full: matches!(tx.params.ret, Some(params::Ret::Full)),
        arrival: now,
        recipients,
        message: mailboxes,
    };
    Some(SuccessNotice { outbound: outbound.as_ref(), notice })
}

/// The envelope of the transaction's queued copies (None when all are local): sender, recipients with
/// their RFC 3461 parameters, who handed it over and when. Each address is queued once, however many
/// recipients lead there. The sender is the one the routes ask for (the SRS form for forwarded copies;
/// the policy keeps it one per transaction), else the transaction's. A forwarded copy carries the
/// recipient that was forwarded as its ORCPT (RFC 3461 §4.2) unless the client gave one. The id and size
/// are filled in by [`Receiving::finish`].
pub(crate) fn envelope(tx: &Transaction<Route>, origin: Origin<'_>, now: SystemTime) -> Option<Envelope> {
    envelope_of(&tx.from, tx.routes(), tx.rcpt_params(), &tx.params, origin, now)
}

/// [`envelope`] from its parts: the sender, each accepted recipient's route and RCPT parameters (in the
/// same order) and the MAIL parameters (RET, ENVID). The in-process submission (`crate::submit`) builds
/// its queue entry with this too.
pub(crate) fn envelope_of(
    from: &ReversePath,
    routes: &[Route],
    rcpt_params: &[RcptParams],
    mail_params: &params::MailParams,
    origin: Origin<'_>,
    now: SystemTime,
) -> Option<Envelope> {
    let mut remote: Vec<(&str, &Route, &RcptParams)> = Vec::new();
    for (route, params) in routes.iter().zip(rcpt_params) {
        for address in &route.remotes {
            if !remote.iter().any(|(a, _, _)| a.eq_ignore_ascii_case(address)) {
                remote.push((address, route, params));
            }
        }
    }
    if remote.is_empty() {
        return None;
    }
    let from = match (remote.iter().find_map(|(_, r, _)| r.sender.as_ref()), from) {
        (Some(sender), _) => sender.clone(),
        (None, ReversePath::Null) => String::new(),
        (None, ReversePath::Mailbox(a)) => a.to_string(),
    };
    let addresses: Vec<&str> = remote.iter().map(|(a, _, _)| *a).collect();
    // Every recipient pending, due at arrival.
    let mut env = Envelope::new(String::new(), from, now, 0, &addresses);
    for (rcpt, (address, route, params)) in env.rcpts.iter_mut().zip(&remote) {
        set_dsn(rcpt, params);
        if rcpt.orcpt.is_none() && route.is_served && *address != route.rcpt {
            rcpt.orcpt = Some(format!("rfc822;{}", route.rcpt));
        }
    }
    env.ret = mail_params.ret.map(|r| match r {
        params::Ret::Full => mailroom_queue::Ret::Full,
        params::Ret::Hdrs => mailroom_queue::Ret::Hdrs,
    });
    env.envid.clone_from(&mail_params.envid);
    env.auth = origin.auth.map(str::to_owned);
    env.client = Some(origin.client.to_string());
    Some(env)
}

/// A queue recipient's NOTIFY (absent: the default) and ORCPT (kept in its wire form, `type;xtext`,
/// which the relay passes on as is and decodes for a DSN).
fn set_dsn(r: &mut Recipient, params: &RcptParams) {
    use mailroom_queue::Notify as N;
    r.orcpt = params.orcpt.as_ref().map(ToString::to_string);
    r.notify = params.notify.map(|n| {
        if n.is_never() {
            return vec![N::Never];
        }
        [(n.success, N::Success), (n.failure, N::Failure), (n.delay, N::Delay)]
            .into_iter()
            .filter_map(|(on, kind)| on.then_some(kind))
            .collect()
    });
}

/// 452 4.3.1 when the disk is full (RFC 3463: mail system full), else 451 4.3.0.
pub(crate) fn storage_failure(e: &StoreError) -> Reply {
    if e.is_no_space() {
        Reply::new(452, Enhanced(4, 3, 1), "Insufficient system storage, try again later")
    } else {
        Reply::new(451, Enhanced(4, 3, 0), "Local error in processing, try again later")
    }
}
