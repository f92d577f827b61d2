//! mailroom-server: the tokio shell around the SMTP server session of mailroom-proto.
//!
//! Listeners, the per-connection driver, timeouts, the connection cap, policy (which recipients are
//! ours) and the hand-off to the store. Graceful shutdown: stop accepting, let transactions under way
//! finish within a grace period, 421 4.3.2 to idle sessions.
#![forbid(unsafe_code)]

pub mod config;
mod connection;
pub mod limits;
pub mod policy;
mod stream;
pub mod tls;
pub mod trace;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use mailroom_proto::server::Session;
use mailroom_proto::{Enhanced, Reply};
use mailroom_store::Store;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tracing::{info, warn};

pub use config::{Config, ConfigError};

/// Where the server is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Running,
    /// Shutdown asked: idle sessions close, transactions may finish.
    Draining,
    /// Grace period over: everything closes.
    Abort,
}

/// What a listener is for (the smtp / submission / submissions roles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Port-25 style: anyone may deliver to local users; STARTTLS offered; no AUTH, no relay.
    Smtp,
    /// Port-587 style (RFC 6409): STARTTLS, then AUTH required before MAIL.
    Submission,
    /// Port-465 style (RFC 8314): TLS from the first byte, AUTH required before MAIL.
    Submissions,
}

pub(crate) struct Shared {
    pub smtp: Arc<mailroom_proto::server::Config>,
    pub submission: Arc<mailroom_proto::server::Config>,
    pub store: Store,
    pub policy: policy::Policy,
    pub tls: Arc<tls::TlsHandle>,
    pub auth: config::AuthSection,
    pub per_ip: Arc<limits::PerIp>,
    /// Password checks running at once: argon2 takes ~19 MiB and tens of ms each, so a burst of AUTH
    /// attempts must queue rather than take memory and every core.
    pub auth_slots: tokio::sync::Semaphore,
}

impl Shared {
    pub fn proto(&self, role: Role) -> Arc<mailroom_proto::server::Config> {
        match role {
            Role::Smtp => self.smtp.clone(),
            Role::Submission | Role::Submissions => self.submission.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("cannot open the data directory: {0}")]
    Store(#[from] mailroom_store::StoreError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// A server with its listeners bound, ready to run.
pub struct Server {
    config: Config,
    listeners: Vec<(TcpListener, Role)>,
    shared: Arc<Shared>,
}

impl Server {
    /// Opens the store and binds every listener (so a port clash is reported before anything runs).
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        let store = Store::open(&config.server.data_dir)?;
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
        let tls = tls::TlsHandle::load_or_generate(
            config.tls.cert.as_deref(),
            config.tls.key.as_deref(),
            &config.server.data_dir,
            &config.server.hostname,
        )?;
        let domains = config.domains();
        let users = store.users();
        for d in users.domains() {
            if !domains.iter().any(|x| mailroom_store::domain::is_same_domain(x, d)) {
                warn!(domain = d, "users exist for a domain this server does not serve; add it with --domain");
            }
        }
        let proto = mailroom_proto::server::Config {
            hostname: config.server.hostname.clone(),
            max_message_size: config.limits.max_message_size,
            max_recipients: config.limits.max_recipients,
            max_errors: config.limits.max_errors,
            command_timeout: config.limits.command_timeout,
            data_timeout: config.limits.data_timeout,
            starttls: true,
            auth: false,
            auth_required: false,
            allow_plaintext_auth: config.auth.allow_plaintext_auth,
            max_auth_failures: config.limits.max_auth_failures,
            max_header_lines: config.limits.max_header_lines,
            max_header_size: config.limits.max_header_size,
            min_data_rate: config.limits.min_data_rate,
            error_delay: config.limits.error_delay,
        };
        let per_ip = limits::PerIp::new(limits::IpLimits {
            max_connections_per_ip: config.limits.max_connections_per_ip,
            max_connection_rate_per_ip: config.limits.max_connection_rate_per_ip,
            max_message_rate_per_ip: config.limits.max_message_rate_per_ip,
            trusted_networks: config.limits.trusted_networks.iter().filter_map(|n| n.parse().ok()).collect(),
        });
        let submission = mailroom_proto::server::Config { auth: true, auth_required: true, ..proto.clone() };
        let shared = Arc::new(Shared {
            smtp: Arc::new(proto),
            submission: Arc::new(submission),
            store,
            policy: policy::Policy::new(domains),
            tls: Arc::new(tls),
            auth: config.auth.clone(),
            per_ip,
            auth_slots: tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())),
        });
        Ok(Server { config, listeners, shared })
    }

    /// The addresses actually bound (useful with port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().filter_map(|(l, _)| l.local_addr().ok()).collect()
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
            info!(listen = ?addr, ?role, domains = ?self.shared.policy.domains, hostname = %self.shared.smtp.hostname, "listening");
            accept_tasks.push(tokio::spawn(accept_loop(
                listener,
                role,
                self.shared.clone(),
                slots.clone(),
                phase_rx.clone(),
            )));
        }
        shutdown.await;
        info!(grace = ?self.config.server.shutdown_grace, "shutting down: no new connections, draining sessions");
        for t in &accept_tasks {
            t.abort();
        }
        let _ = phase_tx.send(Phase::Draining);
        let all = u32::try_from(max).unwrap_or(u32::MAX);
        let drained = tokio::time::timeout(self.config.server.shutdown_grace, slots.acquire_many(all)).await;
        if drained.is_err() {
            warn!("grace period over: closing the remaining sessions");
            let _ = phase_tx.send(Phase::Abort);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), slots.acquire_many(all)).await;
        }
        info!("stopped");
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
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let slot = match shared.per_ip.connect(peer.ip(), Instant::now()) {
            Ok(slot) => slot,
            Err(why) => {
                info!(%peer, ?why, "refused: per-address limit");
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
                    connection::serve(stream, peer, role, shared, phase).await;
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
    tokio::spawn(async move {
        let mut s = Session::refuse(proto, Instant::now(), Reply::new(421, Enhanced(4, 7, 0), text));
        if let Some(out) = s.poll_transmit() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), stream.write_all(&out)).await;
        }
        let _ = stream.shutdown().await;
    });
}
