//! Connections per destination: the limits (`max_connections_per_destination`, `max_connections`), the
//! workers that send a destination's jobs one after another over one connection each, and the cache of
//! idle connections kept a few seconds so the next message to the same destination reuses one (RSET).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::connect::{Connector, Destination, NoConnection};
use crate::deliver::{local, send_job, Conn, Job, RcptResult, Verdict};

/// How long an idle connection is kept for reuse (Postfix keeps them 2 s; a little longer catches the
/// next message of a burst that arrives one transaction at a time).
pub const IDLE_TIME: Duration = Duration::from_secs(5);
/// Transactions per connection before it is closed and a fresh one opened (keeps one session from
/// living forever; Postfix's reuse time limit plays the same part).
pub const MAX_TRANSACTIONS_PER_CONNECTION: usize = 100;
/// How long a connection being closed is given for QUIT.
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection with the permits it holds (one of its destination, one of the total).
struct Held {
    conn: Conn,
    _dest: OwnedSemaphorePermit,
    _total: OwnedSemaphorePermit,
}

/// What became of one job.
#[derive(Debug, Clone)]
pub struct JobResult {
    pub job: Arc<Job>,
    pub results: Vec<RcptResult>,
    /// `host[ip]:port` of the connection used (or last tried), for the log line.
    pub relay: Option<String>,
}

/// The connection pool. Cheap to clone.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    connector: Connector,
    total: Arc<Semaphore>,
    per_dest: Mutex<HashMap<Destination, Arc<Semaphore>>>,
    idle: Mutex<HashMap<Destination, Vec<(Instant, Held)>>>,
    /// Signalled when a connection goes idle, for a checkout waiting for room under `max_connections`.
    checked_in: tokio::sync::Notify,
    /// Jobs waiting per destination, and its workers.
    queues: Mutex<HashMap<Destination, DestQueue>>,
}

/// A job and where its result goes.
struct Queued {
    job: Arc<Job>,
    tx: mpsc::UnboundedSender<JobResult>,
}

/// The waiting jobs of one destination.
#[derive(Default)]
struct DestQueue {
    jobs: VecDeque<Queued>,
    /// Workers running for it.
    workers: usize,
    /// Those of them holding a connection.
    connected: usize,
}

impl Pool {
    pub fn new(connector: Connector) -> Pool {
        let total = Arc::new(Semaphore::new(connector.settings.max_connections.max(1)));
        Pool {
            inner: Arc::new(Inner {
                connector,
                total,
                per_dest: Mutex::new(HashMap::new()),
                idle: Mutex::new(HashMap::new()),
                checked_in: tokio::sync::Notify::new(),
                queues: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Sends every job to `dest` and returns all results at the end.
    pub async fn run(&self, dest: &Destination, jobs: Vec<Job>) -> Vec<JobResult> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.run_into(dest, jobs, tx);
        let mut out = Vec::new();
        while let Some(r) = rx.recv().await {
            out.push(r);
        }
        out
    }

    /// Queues `jobs` for `dest`; each job's result goes to `tx` as soon as it is in (the channel closes
    /// when the last one is sent). Jobs wait in the destination's queue for its workers: a job behind
    /// one that is being sent waits for that connection rather than opening another, and more
    /// workers start only for a backlog (up to `max_connections_per_destination`), so messages that
    /// arrive one at a time share a connection.
    pub fn run_into(&self, dest: &Destination, jobs: Vec<Job>, tx: mpsc::UnboundedSender<JobResult>) {
        let per_dest = self.inner.connector.settings.max_connections_per_destination.max(1);
        let start = {
            let mut queues = lock(&self.inner.queues);
            let q = queues.entry(dest.clone()).or_default();
            q.jobs.extend(jobs.into_iter().map(|job| Queued { job: Arc::new(job), tx: tx.clone() }));
            // A batch for an idle destination gets its workers at once; while workers run, one more
            // at a time, and only for a backlog larger than they are.
            let start = match q.workers {
                0 => q.jobs.len().min(per_dest),
                w if q.jobs.len() > w && w < per_dest => 1,
                _ => 0,
            };
            q.workers += start;
            start
        };
        for _ in 0..start {
            let (pool, dest) = (self.clone(), dest.clone());
            tokio::spawn(async move { pool.worker(&dest).await });
        }
    }

    /// The next job of `dest`, or `None` (and the worker counted out) when there is none.
    fn next_job(&self, dest: &Destination, connected: bool) -> Option<Queued> {
        let mut queues = lock(&self.inner.queues);
        let q = queues.get_mut(dest)?;
        if let Some(j) = q.jobs.pop_front() {
            return Some(j);
        }
        q.workers -= 1;
        q.connected -= usize::from(connected);
        if q.workers == 0 {
            queues.remove(dest);
        }
        None
    }

    /// A worker of `dest`: takes its jobs one after another over the connection it holds (opening one
    /// when it has none). One that cannot connect while another worker of the destination holds a
    /// connection (a server that limits connections per client) hands its job back and stops; when
    /// none can, the job and every one waiting get the failure.
    async fn worker(&self, dest: &Destination) {
        let mut held: Option<Held> = None;
        while let Some(Queued { job, tx }) = self.next_job(dest, held.is_some()) {
            let mut retried = false;
            loop {
                let mut h = match held.take() {
                    Some(h) => h,
                    None => match self.checkout(dest).await {
                        Ok(h) => {
                            self.set_connected(dest, true);
                            h
                        }
                        Err(nc) => {
                            if self.give_back(dest, Queued { job: job.clone(), tx: tx.clone() }) {
                                return;
                            }
                            let _ = tx.send(unreachable(job.clone(), &nc));
                            for q in self.take_all(dest) {
                                let _ = q.tx.send(unreachable(q.job, &nc));
                            }
                            break;
                        }
                    },
                };
                let reused = h.conn.uses > 0;
                let relay = Some(h.conn.relay());
                match send_job(&mut h.conn, &job).await {
                    Ok(results) => {
                        let _ = tx.send(JobResult { job: job.clone(), results, relay });
                        if h.conn.uses < MAX_TRANSACTIONS_PER_CONNECTION && h.conn.client.is_ready() {
                            held = Some(h);
                        } else {
                            self.set_connected(dest, false);
                            close(h).await;
                        }
                        break;
                    }
                    // A reused connection that had died in the meantime: once more on a fresh one.
                    Err(b) if reused && b.done.is_empty() && !retried => {
                        tracing::debug!(%dest, error = %b.error, "reused connection failed; opening a new one");
                        self.set_connected(dest, false);
                        retried = true;
                    }
                    Err(b) => {
                        self.set_connected(dest, false);
                        let text = format!("lost connection with {}: {}", h.conn.relay(), b.error);
                        let mut results = b.done;
                        for r in &job.rcpts {
                            if !results.iter().any(|x| x.index == r.index) {
                                results.push(local(r.index, Verdict::Deferred, "4.4.2", &text, Some(&h.conn.host)));
                            }
                        }
                        let _ = tx.send(JobResult { job: job.clone(), results, relay });
                        break;
                    }
                }
            }
        }
        if let Some(h) = held {
            self.checkin(dest, h);
        }
    }

    fn set_connected(&self, dest: &Destination, yes: bool) {
        if let Some(q) = lock(&self.inner.queues).get_mut(dest) {
            if yes {
                q.connected += 1;
            } else {
                q.connected -= 1;
            }
        }
    }

    /// Puts a job back at the head of the queue and counts the worker out, if another worker holds a
    /// connection to take it; false (nothing changed) when none does.
    fn give_back(&self, dest: &Destination, job: Queued) -> bool {
        let mut queues = lock(&self.inner.queues);
        let Some(q) = queues.get_mut(dest) else { return false };
        if q.connected == 0 {
            return false;
        }
        q.jobs.push_front(job);
        q.workers -= 1;
        true
    }

    fn take_all(&self, dest: &Destination) -> Vec<Queued> {
        lock(&self.inner.queues).get_mut(dest).map(|q| q.jobs.drain(..).collect()).unwrap_or_default()
    }

    /// An idle connection to `dest`, or a new one within the limits. Idle connections keep their
    /// permits, so a checkout that waits for one is also woken when a connection goes idle: it may take
    /// that one (same destination) or close it to make room (another destination), rather than wait
    /// for it to expire.
    async fn checkout(&self, dest: &Destination) -> Result<Held, NoConnection> {
        let sem = self.dest_semaphore(dest);
        loop {
            let checked_in = self.inner.checked_in.notified();
            tokio::pin!(checked_in);
            checked_in.as_mut().enable();
            if let Some(h) = self.take_idle(dest) {
                return Ok(h);
            }
            let dest_permit = tokio::select! {
                p = sem.clone().acquire_owned() => p.map_err(|_| closed())?,
                _ = &mut checked_in => continue,
            };
            // `None`: a connection to `dest` went idle meanwhile; the next round takes it.
            let Some(total) = self.total_permit(dest).await? else { continue };
            let conn = self.inner.connector.connect(dest).await?;
            return Ok(Held { conn, _dest: dest_permit, _total: total });
        }
    }

    /// One of the `max_connections`: a free one, or the one of an idle connection to another
    /// destination closed to make room, or the first that frees up; `None` when a connection to `dest`
    /// itself went idle (to be reused instead).
    async fn total_permit(&self, dest: &Destination) -> Result<Option<OwnedSemaphorePermit>, NoConnection> {
        loop {
            let checked_in = self.inner.checked_in.notified();
            tokio::pin!(checked_in);
            checked_in.as_mut().enable();
            if let Ok(p) = self.inner.total.clone().try_acquire_owned() {
                return Ok(Some(p));
            }
            if self.has_idle(dest) {
                return Ok(None);
            }
            if let Some(h) = self.evict_one() {
                close(h).await;
                continue;
            }
            tokio::select! {
                p = self.inner.total.clone().acquire_owned() => return p.map(Some).map_err(|_| closed()),
                _ = checked_in => {}
            }
        }
    }

    fn has_idle(&self, dest: &Destination) -> bool {
        let idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.get(dest).is_some_and(|l| !l.is_empty())
    }

    fn dest_semaphore(&self, dest: &Destination) -> Arc<Semaphore> {
        let limit = self.inner.connector.settings.max_connections_per_destination.max(1);
        let mut map = self.inner.per_dest.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(dest.clone()).or_insert_with(|| Arc::new(Semaphore::new(limit))).clone()
    }

    fn take_idle(&self, dest: &Destination) -> Option<Held> {
        let mut idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(dest)?;
        while let Some((since, h)) = list.pop() {
            if since.elapsed() < IDLE_TIME {
                return Some(h);
            }
            tokio::spawn(close(h));
        }
        None
    }

    fn checkin(&self, dest: &Destination, h: Held) {
        let mut idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.entry(dest.clone()).or_default().push((Instant::now(), h));
        drop(idle);
        self.inner.checked_in.notify_waiters();
    }

    fn evict_one(&self) -> Option<Held> {
        let mut idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
        let dest = idle.iter().find(|(_, l)| !l.is_empty()).map(|(d, _)| d.clone())?;
        idle.get_mut(&dest).and_then(|l| (!l.is_empty()).then(|| l.remove(0).1))
    }

    /// Closes idle connections older than [`IDLE_TIME`]; the scheduler calls it as it goes round.
    pub fn purge(&self) {
        let mut idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
        for list in idle.values_mut() {
            let (old, keep): (Vec<_>, Vec<_>) = list.drain(..).partition(|(since, _)| since.elapsed() >= IDLE_TIME);
            *list = keep;
            for (_, h) in old {
                tokio::spawn(close(h));
            }
        }
        idle.retain(|_, l| !l.is_empty());
    }

    /// Closes every idle connection (shutdown).
    pub async fn close_all(&self) {
        let all: Vec<Held> = {
            let mut idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.drain().flat_map(|(_, l)| l.into_iter().map(|(_, h)| h)).collect()
        };
        for h in all {
            close(h).await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn closed() -> NoConnection {
    NoConnection { permanent: false, status: "4.3.0".into(), reply: "relay shutting down".into(), relay: None }
}

fn unreachable(job: Arc<Job>, nc: &NoConnection) -> JobResult {
    let verdict = if nc.permanent { Verdict::Bounced } else { Verdict::Deferred };
    let results = job.rcpts.iter().map(|r| local(r.index, verdict, &nc.status, &nc.reply, None)).collect();
    JobResult { job, results, relay: nc.relay.clone() }
}

async fn close(h: Held) {
    let _ = tokio::time::timeout(QUIT_TIMEOUT, h.conn.client.quit()).await;
}
