//! One client connection: moves bytes between the socket and the proto session, answers its events
//! with the policy and the store, and keeps its timers. One tokio task per connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use mailroom_proto::data::ToLf;
use mailroom_proto::server::{Decision, Event, Session};
use mailroom_proto::{Enhanced, Reply};
use mailroom_store::{Incoming, MailboxId, StoreError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::policy::RcptVerdict;
use crate::trace::{trace_headers, TraceInfo};
use crate::{Phase, Shared};

/// Socket read buffer; also the largest body chunk handed to the store in one write.
const READ_BUFFER: usize = 64 * 1024;

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// A message being received: the store's open file and where it goes.
struct Receiving {
    incoming: Incoming,
    lf: ToLf,
    scratch: Vec<u8>,
    failed: Option<StoreError>,
}

pub(crate) async fn serve<S>(
    mut stream: S,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let id = format!("{:08X}", NEXT_SESSION.fetch_add(1, Ordering::Relaxed));
    info!(session = %id, %peer, "connect");
    let mut session = Session::new(shared.proto.clone(), Instant::now());
    let mut buf = vec![0u8; READ_BUFFER];
    let mut rcpts: Vec<MailboxId> = Vec::new();
    let mut receiving: Option<Receiving> = None;
    let mut messages = 0u64;
    // A session that starts during shutdown is told so at once.
    if *phase.borrow() != Phase::Running {
        session.handle_shutdown();
    }

    loop {
        while let Some(event) = session.poll_event() {
            match event {
                Event::Mail { from, params } => {
                    rcpts.clear();
                    info!(session = %id, %from, size = ?params.size, "mail");
                    session.answer(Decision::Accept);
                }
                Event::Rcpt { to } => match shared.policy.rcpt(&shared.store, &to) {
                    RcptVerdict::Local(mbox) => {
                        info!(session = %id, %to, mailbox = %mbox.address(), "rcpt accepted");
                        rcpts.push(mbox);
                        session.answer(Decision::Accept);
                    }
                    RcptVerdict::Refused(reply) => {
                        info!(session = %id, %to, reply = %reply, "rcpt refused");
                        session.answer(Decision::Reply(reply));
                    }
                },
                Event::DataStart => {
                    let decision = match begin(&shared, &session, &id, peer) {
                        Ok(r) => {
                            receiving = Some(r);
                            Decision::Accept
                        }
                        Err(e) => {
                            warn!(session = %id, error = %e, "cannot open message file");
                            Decision::Reply(storage_failure(&e))
                        }
                    };
                    session.answer(decision);
                }
                Event::Data(chunk) => {
                    if let Some(r) = receiving.as_mut().filter(|r| r.failed.is_none()) {
                        r.scratch.clear();
                        r.lf.convert(&chunk, &mut r.scratch);
                        if let Err(e) = r.incoming.write(&r.scratch) {
                            r.failed = Some(e);
                        }
                    }
                }
                Event::DataEnd => {
                    let reply = match receiving.take() {
                        Some(r) => finish(r, &rcpts, &id).await,
                        None => Reply::new(451, Enhanced(4, 3, 0), "Message lost, try again"),
                    };
                    if reply.code == 250 {
                        messages += 1;
                    }
                    session.answer(Decision::Reply(reply));
                }
                Event::DataAborted(reason) => {
                    receiving = None; // dropping the Incoming removes its file
                    info!(session = %id, ?reason, "message refused");
                }
                Event::Close => {}
            }
        }
        if let Some(out) = session.poll_transmit() {
            if let Err(e) = stream.write_all(&out).await {
                info!(session = %id, error = %e, "write failed");
                session.handle_eof();
                break;
            }
        }
        if session.is_closed() {
            let _ = stream.shutdown().await;
            break;
        }
        if session.is_waiting() {
            // Every pending event is answered synchronously above; this cannot happen, but never spin.
            warn!(session = %id, "session waiting with no event");
            break;
        }
        let deadline = session.poll_timeout().map(tokio::time::Instant::from_std);
        let phase_now = *phase.borrow();
        tokio::select! {
            r = stream.read(&mut buf), if session.wants_input() => match r {
                Ok(0) | Err(_) => { session.handle_eof(); }
                Ok(n) => session.handle_input(&buf[..n], Instant::now()),
            },
            _ = sleep_until(deadline) => {
                info!(session = %id, "timeout");
                session.handle_timeout(Instant::now());
            }
            changed = phase.changed(), if phase_now != Phase::Abort => {
                match (changed, *phase.borrow()) {
                    (Ok(()), Phase::Draining) => session.handle_shutdown(),
                    _ => session.handle_shutdown_deadline(),
                }
            }
        }
    }
    info!(session = %id, messages, "disconnect");
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Opens the message file and writes the trace headers.
fn begin(
    shared: &Shared,
    session: &Session,
    id: &str,
    peer: SocketAddr,
) -> Result<Receiving, StoreError> {
    let mut incoming = shared.store.begin()?;
    let tx = session.transaction().expect("DATA has a transaction");
    let headers = trace_headers(&TraceInfo {
        helo: session.helo().map_or("unknown", |h| h.name.as_str()),
        peer: peer.ip(),
        hostname: &session.config().hostname,
        protocol: session.protocol(),
        id: incoming.id(),
        from: &tx.from,
        rcpts: &tx.rcpts,
        now: SystemTime::now(),
    });
    incoming.write(headers.as_bytes())?;
    let _ = id;
    Ok(Receiving {
        incoming,
        lf: ToLf::default(),
        scratch: Vec::with_capacity(READ_BUFFER),
        failed: None,
    })
}

/// Makes the message durable in every recipient's mailbox, then says 250; or 451/452 and nothing stored.
async fn finish(mut r: Receiving, rcpts: &[MailboxId], id: &str) -> Reply {
    if r.failed.is_none() {
        r.scratch.clear();
        r.lf.finish(&mut r.scratch);
        if !r.scratch.is_empty() {
            if let Err(e) = r.incoming.write(&r.scratch) {
                r.failed = Some(e);
            }
        }
    }
    if let Some(e) = r.failed {
        warn!(session = %id, error = %e, "message write failed");
        return storage_failure(&e);
    }
    match r.incoming.commit(rcpts).await {
        Ok(d) => {
            info!(session = %id, id = %d.id, size = d.size, mailboxes = d.mailboxes, "message stored");
            Reply::new(250, Enhanced(2, 0, 0), format!("Ok: stored as {}", d.id))
        }
        Err(e) => {
            warn!(session = %id, error = %e, "message commit failed");
            storage_failure(&e)
        }
    }
}

/// 452 4.3.1 when the disk is full (RFC 3463: mail system full), else 451 4.3.0.
fn storage_failure(e: &StoreError) -> Reply {
    if e.is_no_space() {
        Reply::new(
            452,
            Enhanced(4, 3, 1),
            "Insufficient system storage, try again later",
        )
    } else {
        Reply::new(
            451,
            Enhanced(4, 3, 0),
            "Local error in processing, try again later",
        )
    }
}
