//! `mailroom serve`: the SMTP server with its config file and flag overrides, and the relay (outbound
//! delivery) running in the same process.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context;
use mailroom_relay::dns::Resolver;
use mailroom_relay::settings::Settings;
use mailroom_relay::Relay;
use mailroom_server::{Config, DeliveredNotice, Outbound, Server};
use tracing::info;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Config file (TOML); every key has a default.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where users, mailboxes and spool live [default: ./mailroom-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to accept SMTP on, IP:PORT or HOST:PORT (every address of HOST), repeatable [default: 127.0.0.1:2525].
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<String>,
    /// Domain to receive mail for, repeatable [default: localhost].
    #[arg(long, value_name = "NAME")]
    pub domain: Vec<String>,
    /// Host name for the greeting and trace headers [default: the machine's host name].
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// Submission listener (port-587 style: STARTTLS, then AUTH before MAIL), repeatable.
    #[arg(long, value_name = "ADDR")]
    pub submission: Vec<String>,
    /// Submissions listener (port-465 style: TLS from the first byte, AUTH before MAIL), repeatable.
    #[arg(long, value_name = "ADDR")]
    pub submissions: Vec<String>,
    /// TLS certificate chain (PEM) [default: a self-signed one made in <data-dir>/tls/].
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Log line format on stderr (the level: MAILROOM_LOG or RUST_LOG, e.g. `debug`).
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = crate::logging::LogFormat::Text)]
    pub log_format: crate::logging::LogFormat,
    /// Web interface and API address [default: 127.0.0.1:8025; if busy, no HTTP and a warning].
    #[arg(long, value_name = "ADDR", conflicts_with = "no_http")]
    pub http: Option<SocketAddr>,
    /// Serve no web interface or API.
    #[arg(long)]
    pub no_http: bool,
}

/// Every address of each `--listen`-style flag (host names resolved).
fn resolve_all(flags: &[String]) -> anyhow::Result<Vec<SocketAddr>> {
    let mut out = Vec::new();
    for f in flags {
        out.extend(mailroom_server::config::resolve_listen(f)?);
    }
    Ok(out)
}

/// The config file, then the flags on top.
pub fn load_config(config: Option<&PathBuf>, data_dir: Option<&PathBuf>) -> anyhow::Result<Config> {
    let mut cfg = match config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(d) = data_dir {
        cfg.server.data_dir = d.clone();
    }
    Ok(cfg)
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut cfg = load_config(args.config.as_ref(), args.data_dir.as_ref())?;
    if !args.listen.is_empty() {
        cfg.server.listen = resolve_all(&args.listen)?;
    }
    if !args.submission.is_empty() {
        cfg.server.submission = resolve_all(&args.submission)?;
    }
    if !args.submissions.is_empty() {
        cfg.server.submissions = resolve_all(&args.submissions)?;
    }
    if args.tls_cert.is_some() {
        cfg.tls.cert = args.tls_cert;
        cfg.tls.key = args.tls_key;
    }
    if !args.domain.is_empty() {
        cfg.server.domains = args.domain;
    }
    if let Some(h) = args.hostname {
        cfg.server.hostname = h;
    }
    if args.http.is_some() {
        cfg.http.listen = args.http;
    }
    cfg.http.enabled &= !args.no_http;
    cfg.validate()?;
    check_delivery_files(&cfg)?;
    // Before anything records; the web listener's /metrics renders it (install again: the same handle).
    mailroom_server::metrics::install();
    crate::privilege::set_umask(&mailroom_server::config_store::modes(&cfg.store).map_err(anyhow::Error::msg)?);
    // Connected now, while the socket is surely reachable (before any privilege drop).
    let notify = Arc::new(crate::notify::Notifier::from_env());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    rt.block_on(async move {
        // The handlers first: a SIGTERM, SIGINT or SIGHUP during start-up (a service manager or a test that
        // signals as soon as the port answers, before READY=1) is acted on once serving, never fatal (the
        // default action would end the process without the log flushed).
        use tokio::signal::unix::{signal, SignalKind};
        let hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        let stop = StopSignals::install()?;
        let data_dir = cfg.server.data_dir.clone();
        // One server per data directory, before anything is opened: a second one exits at once, naming the
        // first. The lock (flock) goes with the process, so a crash leaves none behind; `mailroom queue`
        // leaves the entries to the server that holds it.
        let _queue_lock = mailroom_queue::lock::ServerLock::acquire(&data_dir)
            .with_context(|| format!("cannot serve {}", data_dir.display()))?;
        let server = Server::bind(cfg.clone()).await?;
        // Listeners bound, TLS key read, store open: root is no longer needed.
        crate::privilege::after_bind(&cfg)?;
        let (stop_relay, relay_stopped) = tokio::sync::watch::channel(false);
        let (server, relay) = start_relay(server, &cfg, relay_stopped)?;
        let (stop_web, web_stopped) = tokio::sync::watch::channel(false);
        let web = crate::web::start(&server, &cfg, web_stopped).await?;
        info!(data_dir = %data_dir.display(), "mailroom serving");
        tokio::spawn(reload_on_hup_and_timer(hup, server.tls(), server.signing(), notify.clone()));
        notify.ready();
        server
            .run(async {
                stop.recv().await;
                notify.stopping();
            })
            .await;
        let _ = stop_web.send(true);
        if let Some(task) = web {
            let _ = tokio::time::timeout(RELAY_STOP_WAIT, task).await;
        }
        // Sessions are over: nothing more is queued. The relay ends its attempts under way and stops.
        let _ = stop_relay.send(true);
        if let Some(task) = relay {
            if tokio::time::timeout(RELAY_STOP_WAIT, task).await.is_err() {
                tracing::warn!("the relay did not stop in time; deliveries in flight are retried at the next start");
            }
        }
        Ok(())
    })
}

/// SIGHUP (through `hup`, installed by the caller) reloads the certificate (renewing a self-signed one
/// that is due) and the DKIM keys, between RELOADING=1 and READY=1 to the service manager; the timer
/// renews a self-signed certificate once fewer than 30 days remain, so a server left running never serves
/// an expired one.
async fn reload_on_hup_and_timer(
    mut hup: tokio::signal::unix::Signal,
    tls: Arc<mailroom_server::tls::TlsHandle>,
    signing: Arc<mailroom_server::signing::Signing>,
    notify: Arc<crate::notify::Notifier>,
) {
    let mut timer = tokio::time::interval(mailroom_server::tls::RENEW_CHECK_INTERVAL);
    timer.tick().await; // the first tick is now: the start has just checked
    loop {
        tokio::select! {
            got = hup.recv() => {
                if got.is_none() {
                    return;
                }
                notify.reloading();
                if let Err(e) = tls.reload() {
                    tracing::warn!(error = %e, "TLS reload failed; the old certificate stays in force");
                }
                signing.reload();
                notify.ready();
            }
            _ = timer.tick() => {
                if let Err(e) = tls.renew_if_due() {
                    tracing::warn!(error = %e, "renewing the self-signed certificate failed; the old one stays in force");
                }
            }
        }
    }
}

/// How long the relay gets to finish the attempts under way once the server has stopped; an attempt cut
/// off is retried at the next start (at-least-once delivery).
const RELAY_STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Starts the relay (the outbound delivery agent, crate `mailroom-relay`) in this process on the
/// server's own queue and store, and attaches it to the server ([`Server::with_outbound`]), which then
/// lets authenticated clients and `[delivery] relay_networks` send to other domains. The relay stops when
/// `stop` turns true. Returns the server and the relay's task (None, and no relaying, when no DNS
/// resolver can be set up).
fn start_relay(
    server: Server,
    cfg: &Config,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<(Server, Option<tokio::task::JoinHandle<()>>)> {
    let resolver = match Resolver::new(&cfg.dns.servers) {
        Ok(r) => r,
        Err(e) => {
            // Local delivery needs no DNS: serve it, and say loudly why nothing is relayed.
            tracing::error!(error = %e, "no DNS resolver: outbound delivery is off, mail to other domains is refused");
            return Ok((server, None));
        }
    };
    let settings = relay_settings(cfg)?;
    let reports = Reports {
        store: server.store(),
        queue: server.queue(),
        hostname: settings.hostname.clone(),
        postmaster: settings.postmaster.clone(),
    };
    let relay = Relay::new(server.queue(), server.store(), settings, resolver.clone());
    // With a relayhost all outbound mail goes there and it judges the destination: no MX is looked up here,
    // at RCPT or later (as Postfix does).
    let check_null_mx = cfg.delivery.relayhost.is_none();
    let outbound =
        Arc::new(RelayOutbound { resolver, check_null_mx, waker: relay.waker(), reports: Arc::new(reports) });
    let task = tokio::spawn(relay.run(async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    }));
    Ok((server.with_outbound(outbound), Some(task)))
}

/// `[delivery]` (already validated) as the relay's settings.
fn relay_settings(cfg: &Config) -> anyhow::Result<Settings> {
    use mailroom_relay::settings::{Relayhost, RelayhostTls, TlsPolicy};
    use mailroom_server::config;
    let d = &cfg.delivery;
    let relayhost = d.relayhost()?.map(|r| Relayhost { host: r.host, port: r.port, mx_lookup: r.mx_lookup });
    Ok(Settings {
        hostname: cfg.server.hostname.clone(),
        port: d.port,
        tls: match d.tls {
            config::TlsPolicy::Opportunistic => TlsPolicy::Opportunistic,
            config::TlsPolicy::Required => TlsPolicy::Required,
        },
        relayhost,
        relayhost_tls: match d.relayhost_tls {
            config::RelayhostTls::None => RelayhostTls::None,
            config::RelayhostTls::Starttls => RelayhostTls::StartTls,
            config::RelayhostTls::Tls => RelayhostTls::Tls,
        },
        relayhost_cafile: d.relayhost_cafile.clone(),
        relayhost_user: d.relayhost_user.clone(),
        relayhost_password_file: d.relayhost_password_file.clone(),
        min_backoff: d.min_backoff,
        max_backoff: d.max_backoff,
        max_queue_lifetime: d.max_queue_lifetime,
        delay_warning: d.delay_warning,
        max_connections_per_destination: d.max_connections_per_destination,
        max_connections: d.max_connections,
        max_hops: d.max_hops,
        // Double bounces go to the postmaster of the first served domain.
        postmaster: format!("postmaster@{}", cfg.domains().first().map_or("localhost", String::as_str)),
        ..Settings::default()
    })
}

/// The server's [`Outbound`] on top of the relay: null MX through the relay's resolver, wake-ups
/// through its waker (the server does not depend on the relay crate; this is the bridge).
struct RelayOutbound {
    resolver: Resolver,
    /// False with a relayhost: the smarthost decides about destinations.
    check_null_mx: bool,
    waker: Arc<tokio::sync::Notify>,
    reports: Arc<Reports>,
}

/// What sending a "delivered" DSN needs: where reports go and who signs them.
struct Reports {
    store: mailroom_store::Store,
    queue: mailroom_queue::Queue,
    hostname: String,
    postmaster: String,
}

impl Reports {
    /// RFC 3464 "delivered" report for a local delivery with NOTIFY=SUCCESS; best effort after the 250
    /// (a crash before it is sent loses the notice, never the message).
    async fn delivered(&self, notice: DeliveredNotice) {
        use mailroom_relay::dsn::{Action, RecipientReport, Report, Ret};
        let now = std::time::SystemTime::now();
        let recipients = notice
            .recipients
            .iter()
            .map(|(to, orcpt)| RecipientReport {
                recipient: to.clone(),
                original_recipient: orcpt.clone(),
                action: Action::Delivered,
                status: "2.0.0".into(),
                remote_mta: None,
                diagnostic: Some("delivered to the mailbox".into()),
                last_attempt: Some(now),
                will_retry_until: None,
            })
            .collect();
        let report = Report {
            hostname: self.hostname.clone(),
            id: notice.id.clone(),
            sender: notice.from.clone(),
            envid: notice.envid.clone(),
            ret: Some(if notice.ret_full { Ret::Full } else { Ret::Hdrs }),
            arrival: notice.arrival,
            date: now,
            recipients,
        };
        // The stored copy may be gone already (read and moved by its owner): the report then carries no
        // original headers.
        let original = tokio::fs::read(&notice.message).await.unwrap_or_default();
        let sent = mailroom_relay::notify::send_report(&self.store, &self.queue, &self.postmaster, &report, &original);
        if let Err(e) = sent.await {
            tracing::error!(id = %notice.id, error = %e, "cannot send the delivered DSN");
        }
    }
}

impl Outbound for RelayOutbound {
    fn null_mx(&self, domain: &str) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        let domain = domain.to_owned();
        Box::pin(async move { self.check_null_mx && self.resolver.null_mx(&domain).await })
    }

    fn wake(&self) {
        self.waker.notify_one();
    }

    fn delivered(&self, notice: DeliveredNotice) {
        let reports = self.reports.clone();
        tokio::spawn(async move { reports.delivered(notice).await });
    }
}

/// The files `[delivery]` names must be readable now, not at the first relayhost connection hours later:
/// `check-config` and `serve` both say so at once. The password itself is not kept or shown. The password
/// file must not be readable by others (its group may read it: a root-owned 0640 file in the server's
/// group is the usual way to hand a daemon a secret).
pub fn check_delivery_files(cfg: &Config) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let d = &cfg.delivery;
    if let Some(path) = &d.relayhost_password_file {
        let mode = std::fs::metadata(path)
            .with_context(|| format!("delivery.relayhost_password_file: cannot read {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o007 != 0 {
            anyhow::bail!(
                "delivery.relayhost_password_file: {} is readable by others (mode {:04o}): chmod 600 (or 640) it",
                path.display(),
                mode & 0o7777
            );
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("delivery.relayhost_password_file: cannot read {}", path.display()))?;
        if text.lines().next().is_none_or(|l| l.is_empty()) {
            anyhow::bail!("delivery.relayhost_password_file: {} has no password on its first line", path.display());
        }
    }
    if let Some(path) = &d.relayhost_cafile {
        std::fs::metadata(path)
            .with_context(|| format!("delivery.relayhost_cafile: cannot read {}", path.display()))?;
    }
    Ok(())
}

/// SIGTERM and SIGINT, caught from the moment they are installed.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> anyhow::Result<StopSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        Ok(StopSignals { term, int })
    }

    async fn recv(mut self) {
        tokio::select! {
            _ = self.term.recv() => info!("SIGTERM received"),
            _ = self.int.recv() => info!("interrupt received"),
        }
    }
}
