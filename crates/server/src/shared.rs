//! What every connection of a server shares (the session settings per role, the store, the policy,
//! TLS, the limits), the listener roles, and the server's phase (running, draining, aborting).

use std::sync::Arc;
use std::time::Duration;

use mailroom_store::Store;
use tokio::sync::Semaphore;

use crate::config::{self, Config, ConfigError};
use crate::outbound::Outbound;
use crate::{limits, policy, tls};

/// Where the server is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
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

pub struct Shared {
    pub smtp: Arc<mailroom_proto::server::Config>,
    pub submission: Arc<mailroom_proto::server::Config>,
    pub store: Store,
    pub policy: policy::Policy,
    pub tls: Arc<tls::TlsHandle>,
    pub tls_handshake_timeout: Duration,
    pub auth: config::AuthSection,
    pub per_ip: Arc<limits::PerIp>,
    /// Password checks running at once: argon2 takes ~19 MiB and tens of ms each, so a burst of AUTH
    /// attempts must queue rather than take memory and every core.
    pub auth_slots: tokio::sync::Semaphore,
    /// The outbound queue; remote recipients are committed into it.
    pub queue: mailroom_queue::Queue,
    /// The relay, once attached ([`crate::Server::with_outbound`]): woken after each queued message.
    pub outbound: Option<Arc<dyn Outbound>>,
    /// `[delivery] max_hops`: more Received fields is a loop (554 5.4.6 at the end of data).
    pub max_hops: usize,
    /// Vacation replies (RFC 3834).
    pub(crate) vacation: Arc<crate::vacation::Responder>,
}

impl Shared {
    /// Everything sessions share, from a validated config.
    pub fn new(
        config: &Config,
        store: Store,
        tls: tls::TlsHandle,
        queue: mailroom_queue::Queue,
    ) -> Result<Shared, ConfigError> {
        let per_ip = limits::PerIp::new(ip_limits(&config.limits)?);
        let proto = proto_config(config);
        let submission = mailroom_proto::server::Config { auth: true, auth_required: true, ..proto.clone() };
        let vacation = crate::vacation::Responder::new(
            store.clone(),
            queue.clone(),
            config.server.hostname.clone(),
            config.vacation.interval,
            config.limits.max_header_size,
        )
        .map_err(|e| ConfigError::Invalid(format!("vacation: {e}")))?;
        Ok(Shared {
            smtp: Arc::new(proto),
            submission: Arc::new(submission),
            policy: policy::Policy::new(config.domains(), store.clone(), per_ip.clone()),
            store,
            tls: Arc::new(tls),
            tls_handshake_timeout: config.limits.tls_handshake_timeout,
            auth: config.auth.clone(),
            per_ip,
            auth_slots: Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())),
            queue,
            outbound: None,
            max_hops: config.delivery.max_hops,
            vacation: Arc::new(vacation),
        })
    }

    pub fn proto(&self, role: Role) -> Arc<mailroom_proto::server::Config> {
        match role {
            Role::Smtp => self.smtp.clone(),
            Role::Submission | Role::Submissions => self.submission.clone(),
        }
    }
}

/// The session settings of an smtp listener (submission listeners add AUTH on top).
fn proto_config(config: &Config) -> mailroom_proto::server::Config {
    let l = &config.limits;
    mailroom_proto::server::Config {
        hostname: config.server.hostname.clone(),
        max_message_size: l.max_message_size,
        max_recipients: l.max_recipients,
        max_errors: l.max_errors,
        command_timeout: l.command_timeout,
        data_timeout: l.data_timeout,
        starttls: true,
        auth: false,
        auth_required: false,
        allow_plaintext_auth: config.auth.allow_plaintext_auth,
        max_auth_failures: l.max_auth_failures,
        max_header_lines: l.max_header_lines,
        max_header_size: l.max_header_size,
        min_data_rate: l.min_data_rate,
        error_delay: l.error_delay,
        dsn: true,
    }
}

/// The per-address limits; an unparsable trusted network is an error, never silently dropped.
fn ip_limits(l: &config::Limits) -> Result<limits::IpLimits, ConfigError> {
    let trusted_networks = l
        .trusted_networks
        .iter()
        .map(|n| n.parse().map_err(|e| ConfigError::Invalid(format!("limits.trusted_networks: {e}"))))
        .collect::<Result<_, _>>()?;
    Ok(limits::IpLimits {
        max_connections_per_ip: l.max_connections_per_ip,
        max_connection_rate_per_ip: l.max_connection_rate_per_ip,
        max_message_rate_per_ip: l.max_message_rate_per_ip,
        trusted_networks,
    })
}
