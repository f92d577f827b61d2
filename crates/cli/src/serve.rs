//! `mailroom serve`: the SMTP server with its config file and flag overrides.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use mailroom_server::{Config, Server};
use tracing::info;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Config file (TOML); every key has a default.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where users, mailboxes and spool live [default: ./mailroom-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to accept SMTP on, repeatable [default: 127.0.0.1:2525].
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<SocketAddr>,
    /// Domain to receive mail for, repeatable [default: localhost].
    #[arg(long, value_name = "NAME")]
    pub domain: Vec<String>,
    /// Host name for the greeting and trace headers [default: the machine's host name].
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// Submission listener (port-587 style: STARTTLS, then AUTH before MAIL), repeatable.
    #[arg(long, value_name = "ADDR")]
    pub submission: Vec<SocketAddr>,
    /// Submissions listener (port-465 style: TLS from the first byte, AUTH before MAIL), repeatable.
    #[arg(long, value_name = "ADDR")]
    pub submissions: Vec<SocketAddr>,
    /// TLS certificate chain (PEM) [default: a self-signed one made in <data-dir>/tls/].
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
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
        cfg.server.listen = args.listen;
    }
    if !args.submission.is_empty() {
        cfg.server.submission = args.submission;
    }
    if !args.submissions.is_empty() {
        cfg.server.submissions = args.submissions;
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
    cfg.validate()?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    rt.block_on(async move {
        let data_dir = cfg.server.data_dir.clone();
        let server = Server::bind(cfg).await?;
        info!(data_dir = %data_dir.display(), "mailroom serving");
        let tls = server.tls();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
            while hup.recv().await.is_some() {
                if let Err(e) = tls.reload() {
                    tracing::warn!(error = %e, "TLS reload failed; the old certificate stays in force");
                }
            }
        });
        server.run(shutdown_signal()).await;
        Ok(())
    })
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => info!("interrupt received"),
    }
}
