//! The scheduler: [`Relay::run`] wakes when something is queued (the waker), when the next recipient is
//! due, and at least every [`REQUEST_POLL`] for the queue's CLI requests; claims what is due, groups it
//! per destination, delivers through the [`Pool`], and records each recipient's result (with backoff,
//! expiry, DSNs and one Postfix-style log line per recipient and attempt).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mailroom_proto::params::{Notify as ProtoNotify, Orcpt, RcptParams, Ret as ProtoRet};
use mailroom_proto::{Address, ForwardPath, ReversePath};
use mailroom_queue::{Claim, Entry, Envelope, Notify, Outcome, Queue, Request, Ret};
use mailroom_store::Store;
use tokio::sync::Notify as Waker;
use tokio::task::JoinSet;

use crate::connect::{destination_of, Connector, Destination};
use crate::deliver::{local, Job, JobRcpt, RcptResult, Verdict};
use crate::dns::Resolver;
use crate::dsn::{self, Action, RecipientReport, Report};
use crate::message::Outgoing;
use crate::pool::{JobResult, Pool};
use crate::settings::Settings;

/// The longest the scheduler sleeps: CLI requests (flush, delete, bounce) are picked up within it.
pub const REQUEST_POLL: Duration = Duration::from_secs(1);
/// The shortest sleep between rounds, so a recipient that stays due (a busy entry) cannot spin the loop.
const MIN_SLEEP: Duration = Duration::from_millis(20);
/// How long attempts in flight are given to finish at shutdown before they are abandoned (their
/// recipients stay as they were and are tried again after the restart: at-least-once).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Jobs (a message for one destination) claimed and not yet recorded, per allowed connection: bounds
/// the messages held in memory while keeping every connection busy.
pub const JOBS_PER_CONNECTION: usize = 4;
/// The wait before a recipient whose message file cannot be read is tried again.
const UNREADABLE_RETRY: Duration = Duration::from_secs(60);

/// The outbound delivery agent.
pub struct Relay {
    queue: Queue,
    store: Store,
    settings: Arc<Settings>,
    pool: Pool,
    waker: Arc<Waker>,
    /// Jobs claimed and not yet recorded (see [`JOBS_PER_CONNECTION`]).
    in_flight: AtomicUsize,
}

/// One claimed group: the recipients of one entry going to one destination.
struct Work {
    claim: Claim,
    job: Job,
}

impl Relay {
    pub fn new(queue: Queue, store: Store, settings: Settings, resolver: Resolver) -> Relay {
        let settings = Arc::new(settings);
        let pool = Pool::new(Connector { settings: settings.clone(), resolver });
        Relay { queue, store, settings, pool, waker: Arc::new(Waker::new()), in_flight: AtomicUsize::new(0) }
    }

    /// Call `notify_one()` on it when something was queued: the scheduler starts a round at once (a
    /// wake-up while a round runs is kept for the next one, so none is lost).
    pub fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    /// Runs until `shutdown` resolves; then gives attempts in flight [`SHUTDOWN_GRACE`].
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let this = Arc::new(self);
        let mut tasks: JoinSet<()> = JoinSet::new();
        tokio::pin!(shutdown);
        let mut gauges = crate::metrics::Gauges::default();
        let mut requests_read: Option<Instant> = None;
        loop {
            // The CLI's requests are files: read their directory twice per REQUEST_POLL, not at every
            // wake-up (each commit and each result is one).
            if requests_read.is_none_or(|t| t.elapsed() >= REQUEST_POLL / 2) {
                requests_read = Some(Instant::now());
                this.handle_requests(&mut tasks).await;
            }
            this.pool.purge();
            this.start_due(&mut tasks).await;
            gauges.update(&this.queue);
            let wait = this.sleep_time();
            tokio::select! {
                _ = &mut shutdown => break,
                _ = this.waker.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                Some(r) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Err(e) = r { tracing::error!(error = %e, "delivery task failed") }
                }
            }
        }
        let grace = tokio::time::timeout(SHUTDOWN_GRACE, async { while tasks.join_next().await.is_some() {} });
        if grace.await.is_err() {
            tracing::warn!("delivery attempts still running at shutdown were abandoned; they will be retried");
            tasks.abort_all();
        }
        this.pool.close_all().await;
    }

    fn is_busy(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) >= self.settings.max_connections.max(1) * JOBS_PER_CONNECTION
    }

    /// Until the next recipient is due, at most [`REQUEST_POLL`]; when as much is in flight as
    /// allowed, until an attempt ends (or the poll).
    fn sleep_time(&self) -> Duration {
        if self.is_busy() {
            return REQUEST_POLL;
        }
        let until_due = match self.queue.next_due() {
            Some(t) => t.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO),
            None => REQUEST_POLL,
        };
        until_due.clamp(MIN_SLEEP, REQUEST_POLL)
    }

    /// The CLI's flush, delete and bounce requests.
    async fn handle_requests(self: &Arc<Self>, tasks: &mut JoinSet<()>) {
        for (id, request) in self.queue.take_requests() {
            let result = match request {
                Request::Flush => self.queue.flush(&id),
                Request::Delete => self.queue.delete(&id),
                Request::Bounce => {
                    let (this, id) = (self.clone(), id.clone());
                    tasks.spawn(async move { this.bounce_now(&id).await });
                    Ok(())
                }
            };
            match result {
                Ok(()) => tracing::info!(id, request = request.as_str(), "queue request done"),
                Err(e) => tracing::warn!(id, request = request.as_str(), error = %e, "queue request failed"),
            }
        }
    }

    /// `mailroom queue bounce ID`: every recipient not final and not in flight bounces now.
    async fn bounce_now(&self, id: &str) {
        let Ok(env) = self.queue.get(id) else {
            tracing::warn!(id, "bounce request for an unknown entry");
            return;
        };
        let open: Vec<usize> = (0..env.rcpts.len()).filter(|&i| !env.rcpts[i].state.is_final()).collect();
        let claims: Vec<Claim> = match self.queue.claim(id, &open) {
            Some(c) => vec![c],
            // Some are in flight: take the others one by one.
            None => open.iter().filter_map(|&i| self.queue.claim(id, &[i])).collect(),
        };
        let message = self.load(id).await.unwrap_or_else(|_| Arc::new(Outgoing::from_spool(Vec::new())));
        for claim in claims {
            let results = claim
                .rcpts()
                .iter()
                .map(|&i| local(i, Verdict::Bounced, "5.0.0", "bounced by the queue administrator", None))
                .collect();
            self.finish(claim, &message, results, None).await;
        }
    }

    /// Claims every due recipient, checks what needs no connection, and starts one task per destination.
    async fn start_due(self: &Arc<Self>, tasks: &mut JoinSet<()>) {
        if self.is_busy() {
            // Nothing could start: do not scan the queue (every commit and every result wakes us).
            return;
        }
        let now = SystemTime::now();
        let mut groups: HashMap<Destination, Vec<Work>> = HashMap::new();
        for entry in self.queue.due(now) {
            if self.is_busy() {
                break;
            }
            for (dest, work) in self.prepare(entry, now).await {
                self.in_flight.fetch_add(1, Ordering::SeqCst);
                groups.entry(dest).or_default().push(work);
            }
        }
        for (dest, works) in groups {
            let this = self.clone();
            tasks.spawn(async move { this.deliver(dest, works).await });
        }
    }

    /// Claims an entry's due recipients per destination; settles at once those that need no attempt
    /// (expired, a loop, an unroutable address, an unreadable message).
    async fn prepare(&self, entry: Entry, now: SystemTime) -> Vec<(Destination, Work)> {
        let env = &entry.envelope;
        let Some(claim) = self.queue.claim(&env.id, &entry.due) else { return Vec::new() };
        let message = match self.load(&env.id).await {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(id = %env.id, error = %e, "cannot read the queued message");
                let retry_at = now + UNREADABLE_RETRY;
                let results = claim
                    .rcpts()
                    .iter()
                    .map(|&i| {
                        let reply = format!("cannot read the queued message: {e}");
                        (i, Outcome::Deferred { reply, status: "4.3.0".into(), remote_mta: None, retry_at })
                    })
                    .collect();
                if let Err(e) = self.queue.record(claim, results) {
                    tracing::error!(id = %env.id, error = %e, "cannot record a result");
                }
                return Vec::new();
            }
        };
        if let Some(settled) = self.settle_without_attempt(&claim, &message) {
            self.finish(claim, &message, settled, None).await;
            return Vec::new();
        }
        self.split_by_destination(claim, message).await
    }

    /// Results that need no connection: a loop (RFC 5321 §6.3, 5.4.6). (Expiry is decided when an
    /// attempt fails: a message past its lifetime gets one last try, as in Postfix.)
    fn settle_without_attempt(&self, claim: &Claim, message: &Outgoing) -> Option<Vec<RcptResult>> {
        let all = |status: &str, text: &str| {
            claim.rcpts().iter().map(|&i| local(i, Verdict::Bounced, status, text, None)).collect::<Vec<_>>()
        };
        let hops = message.hops();
        if hops > self.settings.max_hops {
            let text =
                format!("too many hops ({hops} Received headers, more than {}): mail loop", self.settings.max_hops);
            return Some(all("5.4.6", &text));
        }
        None
    }

    /// One claim per destination (so each group is recorded as soon as it is done).
    async fn split_by_destination(&self, claim: Claim, message: Arc<Outgoing>) -> Vec<(Destination, Work)> {
        let env = claim.envelope().clone();
        let mut per_dest: HashMap<Destination, Vec<usize>> = HashMap::new();
        let mut unroutable = Vec::new();
        for &i in claim.rcpts() {
            match parse_forward(&env.rcpts[i].address).and_then(|to| destination_of(&self.settings, &to)) {
                Some(d) => per_dest.entry(d).or_default().push(i),
                None => unroutable.push(local(i, Verdict::Bounced, "5.1.3", "bad recipient address syntax", None)),
            }
        }
        let from = parse_reverse(&env.from);
        // Give the entry's claim back and take one per destination.
        drop(claim);
        if !unroutable.is_empty() {
            let idx: Vec<usize> = unroutable.iter().map(|r| r.index).collect();
            if let Some(c) = self.queue.claim(&env.id, &idx) {
                self.finish(c, &message, unroutable, None).await;
            }
        }
        let mut out = Vec::new();
        for (dest, idx) in per_dest {
            let Some(claim) = self.queue.claim(&env.id, &idx) else { continue };
            let rcpts = idx
                .iter()
                .filter_map(|&i| {
                    let to = parse_forward(&env.rcpts[i].address)?;
                    Some(JobRcpt { index: i, to, params: rcpt_params(&env.rcpts[i]) })
                })
                .collect();
            let job = Job {
                id: env.id.clone(),
                from: from.clone(),
                ret: env.ret.map(|r| match r {
                    Ret::Full => ProtoRet::Full,
                    Ret::Hdrs => ProtoRet::Hdrs,
                }),
                envid: env.envid.clone(),
                rcpts,
                message: message.clone(),
            };
            out.push((dest, Work { claim, job }));
        }
        out
    }

    /// Delivers one destination's work and records every result.
    async fn deliver(self: Arc<Self>, dest: Destination, works: Vec<Work>) {
        let mut claims: HashMap<String, Claim> = HashMap::new();
        let mut jobs = Vec::new();
        for w in works {
            claims.insert(w.job.id.clone(), w.claim);
            jobs.push(w.job);
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        self.pool.run_into(&dest, jobs, tx);
        while let Some(JobResult { job, results, relay }) = rx.recv().await {
            let Some(claim) = claims.remove(&job.id) else { continue };
            self.finish(claim, &job.message, results, relay.as_deref()).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        // Claims without a result (a worker that failed) are released as they drop.
        self.in_flight.fetch_sub(claims.len(), Ordering::SeqCst);
    }

    /// Logs, reports (DSNs) and records the results of one claim.
    async fn finish(&self, claim: Claim, message: &Outgoing, results: Vec<RcptResult>, relay: Option<&str>) {
        let env = claim.envelope().clone();
        let now = SystemTime::now();
        let mut outcomes = Vec::new();
        let mut reports = Vec::new();
        let mut warned = Vec::new();
        for r in results {
            let rcpt = &env.rcpts[r.index];
            log_attempt(&env, &rcpt.address, relay, now, &r);
            let (outcome, action) = self.outcome(&env, &r, now);
            crate::metrics::attempt(&outcome);
            if let Some(action) = action {
                // The report says what the queue records (an expiry turns a 4xx into 5.4.7).
                let (status, diagnostic) = match &outcome {
                    Outcome::Bounced { status, reply, .. } => (status.clone(), reply.clone()),
                    _ => (r.status.clone(), r.reply.clone()),
                };
                let r = RcptResult { status, reply: diagnostic, ..r.clone() };
                reports.push(recipient_report(&env, &r, action, now, &self.settings));
                if action == Action::Delayed {
                    warned.push(r.index);
                }
            }
            outcomes.push((r.index, outcome));
        }
        if !reports.is_empty() {
            let report = Report {
                hostname: self.settings.hostname.clone(),
                id: env.id.clone(),
                sender: env.from.clone(),
                envid: env.envid.clone(),
                ret: env.ret.map(|r| match r {
                    Ret::Full => dsn::Ret::Full,
                    Ret::Hdrs => dsn::Ret::Hdrs,
                }),
                arrival: env.arrival_time(),
                date: now,
                recipients: reports,
            };
            let sent = crate::notify::send_report(
                &self.store,
                &self.queue,
                &self.settings.postmaster,
                &report,
                &message.bytes,
            );
            match sent.await {
                Ok(_) => {}
                // A double bounce that cannot reach the postmaster has nowhere else to go: retrying
                // would loop for ever, so the failure is logged and the bounce stands.
                Err(e) if env.from.is_empty() => {
                    tracing::error!(id = %env.id, error = %e, "cannot deliver a double bounce to the postmaster; dropped")
                }
                Err(e) => {
                    // Without its report a bounce must not be final: try the recipient again later.
                    tracing::error!(id = %env.id, error = %e, "cannot deliver a delivery status notification");
                    defer_bounces(&mut outcomes, now + self.settings.min_backoff);
                }
            }
        }
        if !warned.is_empty() {
            if let Err(e) = self.queue.mark_delay_warned(&claim, &warned) {
                tracing::error!(id = %env.id, error = %e, "cannot record the delay warning");
            }
        }
        // Recording syncs the queue's files: off the async workers, so that a slow fsync stalls no
        // session (the envelope directory's fsync is shared by the results recorded meanwhile).
        let queue = self.queue.clone();
        let recorded = tokio::task::spawn_blocking(move || queue.record(claim, outcomes)).await;
        match recorded {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(id = %env.id, error = %e, "cannot record delivery results; they will be retried")
            }
            Err(e) => {
                tracing::error!(id = %env.id, error = %e, "recording delivery results failed; they will be retried")
            }
        }
    }

    /// The queue outcome of one result, and the DSN it calls for (if the sender asked for one).
    fn outcome(&self, env: &Envelope, r: &RcptResult, now: SystemTime) -> (Outcome, Option<Action>) {
        let rcpt = &env.rcpts[r.index];
        let s = &self.settings;
        let remote = r.remote_mta.clone();
        match r.verdict {
            Verdict::Sent => {
                let remote_mta = remote.unwrap_or_default();
                if rcpt.wants(Notify::Success) && !r.dsn_passed {
                    (Outcome::Relayed { reply: r.reply.clone(), remote_mta }, Some(Action::Relayed))
                } else {
                    (Outcome::Delivered { reply: r.reply.clone(), remote_mta }, None)
                }
            }
            Verdict::Bounced => {
                let o = Outcome::Bounced { reply: r.reply.clone(), status: r.status.clone(), remote_mta: remote };
                (o, rcpt.wants(Notify::Failure).then_some(Action::Failed).or(self.double_bounce(env)))
            }
            Verdict::Deferred if mailroom_queue::is_expired(env.arrival_time(), now, s.max_queue_lifetime) => {
                let reply = format!("message expired in the queue; last reply: {}", r.reply);
                let o = Outcome::Bounced { reply, status: "5.4.7".into(), remote_mta: remote };
                (o, rcpt.wants(Notify::Failure).then_some(Action::Failed).or(self.double_bounce(env)))
            }
            Verdict::Deferred => {
                let wait = mailroom_queue::next_retry(rcpt.attempts + 1, s.min_backoff, s.max_backoff);
                let retry_at = ceil_to_second(now + wait);
                let o = Outcome::Deferred {
                    reply: r.reply.clone(),
                    status: r.status.clone(),
                    remote_mta: remote,
                    retry_at,
                };
                let age = now.duration_since(env.arrival_time()).unwrap_or_default();
                let warn = s.delay_warning.is_some_and(|d| age >= d)
                    && !rcpt.delay_warned
                    && rcpt.wants(Notify::Delay)
                    && !env.from.is_empty();
                (o, warn.then_some(Action::Delayed))
            }
        }
    }

    /// A failed message with the null sender goes to the postmaster whatever NOTIFY says (there is no
    /// sender to ask): a double bounce.
    fn double_bounce(&self, env: &Envelope) -> Option<Action> {
        env.from.is_empty().then_some(Action::Failed)
    }

    async fn load(&self, id: &str) -> std::io::Result<Arc<Outgoing>> {
        Outgoing::load(&self.queue.message_path(id)).await.map(Arc::new)
    }
}

/// The queue keeps retry times in whole seconds: rounding up keeps the backoff from being cut short.
fn ceil_to_second(t: SystemTime) -> SystemTime {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() + u64::from(since.subsec_nanos() > 0);
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// Turns bounces whose report could not be delivered into deferrals.
fn defer_bounces(outcomes: &mut [(usize, Outcome)], retry_at: SystemTime) {
    for (_, o) in outcomes.iter_mut() {
        if let Outcome::Bounced { reply, status, remote_mta } = o {
            let status = format!("4{}", status.get(1..).unwrap_or(".0.0"));
            *o = Outcome::Deferred { reply: reply.clone(), status, remote_mta: remote_mta.clone(), retry_at };
        }
    }
}

fn recipient_report(env: &Envelope, r: &RcptResult, action: Action, now: SystemTime, s: &Settings) -> RecipientReport {
    let rcpt = &env.rcpts[r.index];
    let status = match action {
        Action::Relayed | Action::Delivered => {
            if r.status.starts_with('2') {
                r.status.clone()
            } else {
                "2.0.0".into()
            }
        }
        _ => r.status.clone(),
    };
    RecipientReport {
        recipient: rcpt.address.clone(),
        original_recipient: rcpt.orcpt.clone(),
        action,
        status,
        remote_mta: r.remote_mta.clone(),
        diagnostic: Some(r.reply.clone()),
        last_attempt: Some(now),
        will_retry_until: (action == Action::Delayed).then(|| env.arrival_time() + s.max_queue_lifetime),
    }
}

/// Logs the Postfix-style line of one recipient's attempt.
fn log_attempt(env: &Envelope, to: &str, relay: Option<&str>, now: SystemTime, r: &RcptResult) {
    let delay = now.duration_since(env.arrival_time()).unwrap_or_default();
    tracing::info!(target: "mailroom::delivery", "{}", attempt_line(&env.id, to, relay, delay, r));
}

/// `id=… to=<…> relay=host[ip]:port delay=… status=sent|deferred|bounced (reply)`, as Postfix's smtp
/// logs it (`relay=none` when no host was reached).
pub fn attempt_line(id: &str, to: &str, relay: Option<&str>, delay: Duration, r: &RcptResult) -> String {
    let status = match r.verdict {
        Verdict::Sent => "sent",
        Verdict::Deferred => "deferred",
        Verdict::Bounced => "bounced",
    };
    format!(
        "id={id} to=<{to}> relay={} delay={:.1} status={status} ({})",
        relay.unwrap_or("none"),
        delay.as_secs_f64(),
        r.reply
    )
}

fn parse_forward(address: &str) -> Option<ForwardPath> {
    Address::parse(address).ok().map(ForwardPath::Mailbox)
}

fn parse_reverse(address: &str) -> ReversePath {
    match Address::parse(address) {
        Ok(a) if !address.is_empty() => ReversePath::Mailbox(a),
        _ => ReversePath::Null,
    }
}

/// The recipient's NOTIFY and ORCPT as they are passed on (RFC 3461 §4.1, §4.2).
fn rcpt_params(r: &mailroom_queue::Recipient) -> RcptParams {
    let notify = r.notify.as_ref().map(|list| {
        if list.contains(&Notify::Never) {
            ProtoNotify::NEVER
        } else {
            ProtoNotify {
                success: list.contains(&Notify::Success),
                failure: list.contains(&Notify::Failure),
                delay: list.contains(&Notify::Delay),
            }
        }
    });
    RcptParams { notify, orcpt: r.orcpt.as_deref().and_then(Orcpt::parse) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_line() {
        let r = local(0, Verdict::Sent, "2.0.0", "250 2.0.0 queued as X", Some("mx.example"));
        let line =
            attempt_line("Q1", "bob@example.org", Some("mx.example[192.0.2.1]:25"), Duration::from_millis(1234), &r);
        assert_eq!(
            line,
            "id=Q1 to=<bob@example.org> relay=mx.example[192.0.2.1]:25 delay=1.2 status=sent (250 2.0.0 queued as X)"
        );
        let r = local(0, Verdict::Deferred, "4.4.1", "connection refused", None);
        assert!(attempt_line("Q1", "b@x", None, Duration::ZERO, &r).contains("relay=none delay=0.0 status=deferred"));
    }

    #[test]
    fn retry_times_round_up() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(100_900);
        assert_eq!(ceil_to_second(t), SystemTime::UNIX_EPOCH + Duration::from_secs(101));
        let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(7);
        assert_eq!(ceil_to_second(whole), whole);
    }

    #[test]
    fn bounces_without_their_report_are_deferred() {
        let t = SystemTime::now();
        let mut o = vec![
            (0, Outcome::Bounced { reply: "550 no".into(), status: "5.1.1".into(), remote_mta: None }),
            (1, Outcome::Delivered { reply: "250 ok".into(), remote_mta: "mx".into() }),
        ];
        defer_bounces(&mut o, t);
        assert!(matches!(&o[0].1, Outcome::Deferred { status, .. } if status == "4.1.1"));
        assert!(matches!(&o[1].1, Outcome::Delivered { .. }));
    }
}
