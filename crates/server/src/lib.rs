//! mailroom-server: the tokio shell around the SMTP server session of mailroom-proto.
//!
//! Listeners and the connection cap (here), the per-connection driver (`connection`), the policy that
//! decides about senders and routes recipients (`policy`), per-address limits (`limits`), the hand-off
//! to the store and the outbound queue (`delivery`), the window on the relay (`outbound`), AUTH (`auth`)
//! TLS (`tls`), DKIM signing of submitted mail (`signing`) and in-process submission for the web
//! interface (`submit`). Graceful shutdown: stop accepting, let transactions under way finish within a
//! grace period, 421 4.3.2 to idle sessions.
#![forbid(unsafe_code)]

mod auth;
pub mod config;
pub mod config_http;
pub mod config_inbound;
pub mod config_routing;
pub mod config_store;
pub mod config_vacation;
mod connection;
mod delivery;
mod inbound;
pub mod limits;
pub mod metrics;
pub mod outbound;
pub mod policy;
mod quota;
mod shared;
pub mod signing;
mod stream;
pub mod submit;
pub mod tls;
pub mod trace;
mod vacation;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mailroom_proto::server::Session;
use mailroom_proto::{Enhanced, Reply};
use mailroom_store::Store;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tracing::{info, warn};

pub use config::{Config, ConfigError};
pub use outbound::{DeliveredNotice, Outbound};
pub use shared::Role;
use shared::{Phase, Shared};

/// How long sessions still open when the shutdown grace period ends get to close.
const ABORT_WAIT: Duration = Duration::from_secs(5);
/// How long a client refused at connect gets to take its 421.
const REFUSE_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed accept (EMFILE and friends), instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("cannot open the data directory: {0}")]
    Store(#[from] mailroom_store::StoreError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot open the queue: {0}")]
    Queue(#[from] mailroom_queue::QueueError),
}

/// A server with its listeners bound, ready to run.
pub struct Server {
    config: Config,
    listeners: Vec<(TcpListener, Role)>,
    shared: Arc<Shared>,
}

impl Server {
    /// Checks the config (the same checks as `mailroom check-config`), opens the store and binds every
    /// listener (so a port clash is reported before anything runs).
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        config.validate()?;
        let modes = config_store::modes(&config.store).map_err(ConfigError::Invalid)?;
        let store = Store::open_with(&config.server.data_dir, modes)?;
        // The certificate before the listeners: once a port accepts connections, TLS is ready (and a
        // self-signed certificate is on disk for clients to trust).
        let tls = tls::TlsHandle::load_or_generate(
            config.tls.cert.as_deref(),
            config.tls.key.as_deref(),
            &config.server.data_dir,
            &config.server.hostname,
        )?;
        let queue = mailroom_queue::Queue::open(&config.server.data_dir)?;
        let listeners = bind_listeners(&config).await?;
        warn_unserved_domains(&config, &store);
        let shared = Arc::new(Shared::new(&config, store, tls, queue)?);
        Ok(Server { config, listeners, shared })
    }

    /// Enables relaying: authenticated clients and clients in `[delivery] relay_networks` may send to
    /// other domains; those recipients are queued and `outbound` is woken. Without it (plain
    /// [`Server::bind`]) other domains are refused with 550 5.7.1.
    pub fn with_outbound(mut self, outbound: Arc<dyn Outbound>) -> Server {
        let relay_networks = self.config.delivery.relay_networks().expect("checked by Config::validate in bind");
        let shared = Arc::get_mut(&mut self.shared).expect("no session runs before Server::run");
        shared.policy.set_outbound(outbound.clone(), relay_networks);
        shared.outbound = Some(outbound);
        self
    }

    /// The outbound queue (`<data-dir>/queue`), for the relay: the server adds what it commits to this
    /// same handle, so the relay sees new entries at once.
    pub fn queue(&self) -> mailroom_queue::Queue {
        self.shared.queue.clone()
    }

    /// The store the server delivers into (the relay puts bounces to local senders there).
    pub fn store(&self) -> Store {
        self.shared.store.clone()
    }

    /// The addresses actually bound (useful with port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().filter_map(|(l, _)| l.local_addr().ok()).collect()
    }

    /// The DKIM signing keys, to reload on SIGHUP.
    pub fn signing(&self) -> Arc<signing::Signing> {
        self.shared.signing.clone()
    }

    /// In-process submission for users authenticated elsewhere (the web interface's compose): the same
    /// sender binding, routing, limits, signing and commit as SMTP AUTH submission. Take it after
    /// [`Server::with_outbound`] (which needs the server's state unshared) so it sees the relay.
    pub fn submitter(&self) -> submit::Submitter {
        submit::Submitter::new(self.shared.clone())
    }

    /// A handle to reload the TLS certificate and key (on SIGHUP).
    pub fn tls(&self) -> Arc<tls::TlsHandle> {
        self.shared.tls.clone()
    }

    /// Serves until `shutdown` resolves, then drains: returns once every session has ended.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let max = self.config.limits.max_connections;
        let slots = Arc::new(Semaphore::new(max));
        let (phase_tx, phase_rx) = watch::channel(Phase::Running);
        let mut accept_tasks = Vec::new();
        for (listener, role) in self.listeners {
            let addr = listener.local_addr().ok();
            info!(listen = addr.map(tracing::field::display), %role, domains = %self.shared.policy.domains().join(","), hostname = %self.shared.smtp.hostname, "listening");
            accept_tasks.push(tokio::spawn(accept_loop(
                listener,
                role,
                self.shared.clone(),
                slots.clone(),
                phase_rx.clone(),
            )));
        }
        shutdown.await;
        info!(grace = %config::format_duration(self.config.server.shutdown_grace), "shutting down: no new connections, draining sessions");
        for t in &accept_tasks {
            t.abort();
        }
        let _ = phase_tx.send(Phase::Draining);
        let all = u32::try_from(max).unwrap_or(u32::MAX);
        let drained = tokio::time::timeout(self.config.server.shutdown_grace, slots.acquire_many(all)).await;
        if drained.is_err() {
            warn!("grace period over: closing the remaining sessions");
            let _ = phase_tx.send(Phase::Abort);
            let _ = tokio::time::timeout(ABORT_WAIT, slots.acquire_many(all)).await;
        }
        info!("stopped");
    }
}

/// Binds every listener of every role.
async fn bind_listeners(config: &Config) -> Result<Vec<(TcpListener, Role)>, ServerError> {
    let mut listeners = Vec::new();
    let roles = [
        (&config.server.listen, Role::Smtp),
        (&config.server.submission, Role::Submission),
        (&config.server.submissions, Role::Submissions),
    ];
    for (addrs, role) in roles {
        for addr in addrs {
            listeners.push((TcpListener::bind(addr).await.map_err(|e| ServerError::Bind(*addr, e))?, role));
        }
    }
    Ok(listeners)
}

/// Users whose domain is not served can never receive mail: say so at start-up.
fn warn_unserved_domains(config: &Config, store: &Store) {
    let domains = config.domains();
    let users = store.users();
    for d in users.domains() {
        if !domains.iter().any(|x| mailroom_store::domain::is_same_domain(x, d)) {
            warn!(domain = d, "users exist for a domain this server does not serve; add it with --domain");
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    role: Role,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    phase: watch::Receiver<Phase>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let slot = match shared.per_ip.connect(peer.ip(), Instant::now()) {
            Ok(slot) => slot,
            Err(why) => {
                info!(%peer, why = why.as_str(), "refused: per-address limit");
                let text = match why {
                    limits::Refused::TooManyConnections => "Too many connections from your address, try again later",
                    limits::Refused::ConnectionRate => {
                        "Too many connections per minute from your address, try again later"
                    }
                };
                refuse(stream, shared.proto(role), text);
                continue;
            }
        };
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let shared = shared.clone();
                let phase = phase.clone();
                tokio::spawn(async move {
                    // Boxed: tokio moves a task's future at spawn and as the task starts and ends; a
                    // pointer moves cheaply, the session's state (kilobytes) once.
                    Box::pin(connection::serve(stream, peer, role, shared, phase)).await;
                    drop(slot);
                    drop(permit);
                });
            }
            Err(_) => {
                info!(%peer, "refused: too many connections");
                refuse(stream, shared.proto(role), "Too many connections, try again later");
            }
        }
    }
}

/// Says `421 4.7.0 <text>` and closes, without holding up the accept loop. 421 rather than 554 (RFC 5321
/// §3.1) because the condition is temporary: the client should come back later.
fn refuse(mut stream: tokio::net::TcpStream, proto: Arc<mailroom_proto::server::Config>, text: &'static str) {
    metrics::record::refusal(metrics::RefusalReason::ConnectionLimit);
    tokio::spawn(async move {
        let mut s = Session::refuse(proto, Instant::now(), Reply::new(421, Enhanced(4, 7, 0), text));
        if let Some(out) = s.poll_transmit() {
            metrics::record::replies(&out);
            let _ = tokio::time::timeout(REFUSE_WRITE_TIMEOUT, stream.write_all(&out)).await;
        }
        let _ = stream.shutdown().await;
    });
}
