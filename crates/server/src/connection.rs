//! One client connection: moves bytes between the socket and the proto session, answers its events
//! with the policy and the store, and keeps its timers. One tokio task per connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use mailroom_proto::data::ToLf;
use mailroom_proto::server::{Credentials, Decision, Event, Session};
use mailroom_proto::{Enhanced, Reply};
use mailroom_store::{Incoming, MailboxId, StoreError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{debug, info, warn, Instrument};

use crate::policy::{self, RcptVerdict};
use crate::stream::Stream;
use crate::tls::Hello;
use crate::trace::{trace_headers, TraceInfo};
use crate::{Phase, Role, Shared};

/// Socket read buffer at its largest; also the largest body chunk handed to the store in one write.
const READ_BUFFER: usize = 64 * 1024;
/// Input given to the session at a time; its replies are written before the next slice.
const FEED_SLICE: usize = 4 * 1024;
/// Socket read buffer of a new session: enough for any command line.
const INITIAL_READ_BUFFER: usize = 2 * 1024;

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// A message being received: the store's open file and where it goes.
struct Receiving {
    incoming: Incoming,
    lf: ToLf,
    scratch: Vec<u8>,
    failed: Option<StoreError>,
}

/// Serves one connection; every log line of it carries the session id and the peer (a tracing span).
pub(crate) async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    role: Role,
    shared: Arc<Shared>,
    phase: watch::Receiver<Phase>,
) {
    let id = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("session", id = %format_args!("{id:08X}"), %peer);
    drive(tcp, peer, role, shared, phase).instrument(span).await
}

async fn drive(tcp: TcpStream, peer: SocketAddr, role: Role, shared: Arc<Shared>, mut phase: watch::Receiver<Phase>) {
    info!(?role, "connect");
    let config = shared.proto(role);
    let mut stream = Stream::Plain(tcp);
    if role == Role::Submissions {
        // RFC 8314: TLS from the first byte, before the greeting.
        match handshake(&mut stream, &shared, config.command_timeout).await {
            Ok(()) => {}
            Err(e) => return info!(error = %e, "TLS handshake failed"),
        }
    }
    let mut session: Session<MailboxId> = Session::with_routes(config, Instant::now());
    session.set_tls(matches!(stream, Stream::Tls(_)));
    // Small while idle (thousands of idle sessions must stay cheap); grows when reads fill it.
    let mut buf = vec![0u8; INITIAL_READ_BUFFER];
    // buf[fed..filled] was read but not yet given to the session: input is fed a slice at a time, with the
    // replies written in between, so that a burst of cheap commands (HELP is answered with 20 times its
    // size) can never queue more than a slice's worth of replies.
    let (mut fed, mut filled) = (0usize, 0usize);
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
                    if let Some(user) = session.authenticated().filter(|u| !policy::sender_allowed(u, &from)) {
                        info!(%from, user, "sender refused: not the authenticated user's address");
                        session.answer(Decision::Reply(Reply::new(
                            553,
                            Enhanced(5, 7, 1),
                            "Sender address not owned by the authenticated user",
                        )));
                        continue;
                    }
                    if !shared.per_ip.message(peer.ip(), Instant::now()) {
                        info!(%from, "refused: message rate");
                        session.answer(Decision::Reply(Reply::new(
                            450,
                            Enhanced(4, 7, 1),
                            "Too much mail from your address, try again later",
                        )));
                        continue;
                    }
                    debug!(%from, size = ?params.size, "mail");
                    session.answer(Decision::Accept);
                }
                Event::StartTls => {
                    // Plaintext read behind STARTTLS must never reach the session (CVE-2011-0411).
                    fed = filled;
                    if let Some(out) = session.poll_transmit() {
                        let limit = session.config().command_timeout;
                        if !matches!(tokio::time::timeout(limit, stream.write_all(&out)).await, Ok(Ok(()))) {
                            session.handle_eof();
                            continue;
                        }
                    }
                    match handshake(&mut stream, &shared, session.config().command_timeout).await {
                        Ok(()) => session.handle_tls_established(Instant::now()),
                        Err(e) => {
                            info!(error = %e, "STARTTLS handshake failed");
                            session.handle_eof();
                        }
                    }
                }
                Event::Auth(creds) => {
                    let decision = authenticate(&shared, creds).await;
                    session.answer(decision);
                }
                Event::Rcpt { to } => match shared.policy.rcpt(&shared.store, &to, session.authenticated().is_some()) {
                    RcptVerdict::Local(mbox) => {
                        debug!(%to, mailbox = %mbox.address(), "rcpt accepted");
                        session.answer(Decision::AcceptRcpt(mbox));
                    }
                    RcptVerdict::Refused(reply) => {
                        info!(%to, reply = %reply, "rcpt refused");
                        session.answer(Decision::Reply(reply));
                    }
                },
                Event::DataStart => {
                    let decision = match begin(&shared, &session, peer) {
                        Ok(r) => {
                            receiving = Some(r);
                            Decision::Accept
                        }
                        Err(e) => {
                            warn!(error = %e, "cannot open message file");
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
                        Some(r) => {
                            let tx = session.transaction();
                            let from = tx.map(|t| t.from.to_string()).unwrap_or_default();
                            finish(r, tx.map_or(&[], |t| t.routes()), &from).await
                        }
                        None => Reply::new(451, Enhanced(4, 3, 0), "Message lost, try again"),
                    };
                    if reply.code == 250 {
                        messages += 1;
                    }
                    session.answer(Decision::Reply(reply));
                }
                Event::DataAborted(reason) => {
                    receiving = None; // dropping the Incoming removes its file
                    info!(?reason, "message refused");
                }
                Event::Close => {}
            }
        }
        let delayed = session.poll_delay();
        if let Some(delay) = delayed {
            tokio::time::sleep(delay).await;
        }
        if let Some(out) = session.poll_transmit() {
            // A client that never reads its replies fills the socket buffer; it gets command_timeout to
            // drain it, not forever (it would hold a connection slot).
            let limit = session.config().command_timeout;
            match tokio::time::timeout(limit, stream.write_all(&out)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    info!(error = %e, "write failed");
                    session.handle_eof();
                    break;
                }
                Err(_) => {
                    info!("client does not read its replies: closing");
                    session.handle_eof();
                    break;
                }
            }
        }
        if delayed.is_some() {
            // The delayed reply is out: the session goes on with the input it holds (more events, replies
            // and delays, handled from the top).
            session.handle_delay_elapsed(Instant::now());
            continue;
        }
        if session.is_closed() {
            // Bounded: under TLS this sends close_notify, which a client that never reads could block.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), stream.shutdown()).await;
            break;
        }
        if session.is_waiting() {
            // Every pending event is answered synchronously above; this cannot happen, but never spin.
            warn!("session waiting with no event");
            break;
        }
        if fed < filled && session.wants_input() {
            let end = filled.min(fed + FEED_SLICE);
            session.handle_input(&buf[fed..end], Instant::now());
            fed = end;
            continue;
        }
        let deadline = session.poll_timeout().map(tokio::time::Instant::from_std);
        let phase_now = *phase.borrow();
        tokio::select! {
            r = stream.read(&mut buf), if session.wants_input() && fed == filled => match r {
                Ok(0) | Err(_) => { session.handle_eof(); }
                Ok(n) => {
                    (fed, filled) = (0, n);
                    if n == buf.len() && buf.len() < READ_BUFFER {
                        buf.resize(READ_BUFFER, 0);
                    }
                }
            },
            _ = sleep_until(deadline) => {
                info!("timeout");
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
    info!(messages, "disconnect");
}

/// Replaces the plaintext stream with a TLS one (implicit TLS, or after STARTTLS's 220).
async fn handshake(stream: &mut Stream, shared: &Shared, timeout: std::time::Duration) -> std::io::Result<()> {
    let Stream::Plain(tcp) = std::mem::replace(stream, Stream::Gone) else {
        return Err(std::io::Error::other("already under TLS"));
    };
    let tls = tokio::time::timeout(timeout, async {
        refuse_old_tls(&tcp).await?;
        shared.tls.acceptor().accept(tcp).await
    })
    .await
    .map_err(|_| std::io::Error::other("handshake timed out"))??;
    let (_, conn) = tls.get_ref();
    info!(version = ?conn.protocol_version(), cipher = ?conn.negotiated_cipher_suite().map(|c| c.suite()), "TLS established");
    *stream = Stream::Tls(Box::new(tls));
    Ok(())
}

/// Looks at the ClientHello before rustls does: a client offering nothing newer than TLS 1.1 gets a
/// protocol_version alert (rustls would answer handshake_failure, which tells the client less).
async fn refuse_old_tls(tcp: &TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; 5 + 16 * 1024];
    loop {
        let n = tcp.peek(&mut buf).await?;
        match crate::tls::inspect_client_hello(&buf[..n]) {
            Hello::Incomplete if n > 0 && n < buf.len() => {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await
            }
            Hello::TooOld => {
                let _ = tcp.try_write(&crate::tls::PROTOCOL_VERSION_ALERT);
                return Err(std::io::Error::other("client offers only TLS 1.1 or older"));
            }
            _ => return Ok(()),
        }
    }
}

/// Checks a user name and password against the directory, off the async threads (argon2 is slow on
/// purpose). A failure waits `failure_delay` before the 535 to slow guessing down. Never logs the password.
async fn authenticate(shared: &Shared, creds: Credentials) -> Decision<MailboxId> {
    let users = shared.store.users();
    let username = creds.username.clone();
    // Held until the check is done (the blocking task cannot be cancelled anyway).
    let slot = shared.auth_slots.acquire().await;
    let ok =
        tokio::task::spawn_blocking(move || match users.get(&creds.username).and_then(|u| u.password_hash.clone()) {
            Some(hash) => mailroom_store::password::verify_password(&hash, creds.password.expose()),
            None => {
                mailroom_store::password::dummy_verify(creds.password.expose());
                false
            }
        })
        .await
        .unwrap_or(false);
    // Free the slot before any failure delay: a guesser must not hold up other users' logins.
    drop(slot);
    if ok {
        info!(user = %username, mechanism = ?creds.mechanism, "authenticated");
        Decision::Accept
    } else {
        info!(user = %username, "authentication failed");
        tokio::time::sleep(shared.auth.failure_delay).await;
        Decision::Reply(Reply::new(535, Enhanced(5, 7, 8), "Authentication credentials invalid"))
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Opens the message file and writes the trace headers.
fn begin(shared: &Shared, session: &Session<MailboxId>, peer: SocketAddr) -> Result<Receiving, StoreError> {
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
    Ok(Receiving { incoming, lf: ToLf::default(), scratch: Vec::with_capacity(READ_BUFFER), failed: None })
}

/// Makes the message durable in every recipient's mailbox, then says 250; or 451/452 and nothing stored.
/// Logs one line per stored message (sender, recipients, size), as the accepted MAIL and RCPT are
/// logged at debug level only.
async fn finish(mut r: Receiving, rcpts: &[MailboxId], from: &str) -> Reply {
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
        warn!(error = %e, "message write failed");
        return storage_failure(&e);
    }
    match r.incoming.commit(rcpts).await {
        Ok(d) => {
            let to: Vec<String> = rcpts.iter().map(|m| m.address()).collect();
            info!(id = %d.id, from, to = %to.join(","), size = d.size, "message stored");
            Reply::new(250, Enhanced(2, 0, 0), format!("Ok: stored as {}", d.id))
        }
        Err(e) => {
            warn!(error = %e, "message commit failed");
            storage_failure(&e)
        }
    }
}

/// 452 4.3.1 when the disk is full (RFC 3463: mail system full), else 451 4.3.0.
fn storage_failure(e: &StoreError) -> Reply {
    if e.is_no_space() {
        Reply::new(452, Enhanced(4, 3, 1), "Insufficient system storage, try again later")
    } else {
        Reply::new(451, Enhanced(4, 3, 0), "Local error in processing, try again later")
    }
}
