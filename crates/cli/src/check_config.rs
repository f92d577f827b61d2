//! `mailroom check-config`: everything `serve` and `sendmail` would refuse later, refused now — every
//! section's keys and values ([`Config::load`]), the `[client]` section as sendmail reads it, the
//! certificate and key (readable, and the key belongs to the certificate), password files (readable, and
//! their modes), CA files, listener addresses (host names resolved) and the log filter variables — then
//! the effective configuration on stdout as TOML that reads back to the same (`# ` comments and stderr
//! carry everything else).
//!
//! The printing is generic: [`Config::to_toml`] serialises every section, so a section added to
//! `Config` prints once it derives `Serialize`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use mailroom_server::Config;

use crate::sendmail::config as client;

/// Checks the file (or the defaults without one) and prints the settings in force.
pub fn run(path: Option<PathBuf>) -> anyhow::Result<()> {
    let mut cfg = crate::serve::load_config(path.as_ref(), None)?;
    crate::serve::check_delivery_files(&cfg)?;
    check_tls(&cfg)?;
    let text = match &path {
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        None => String::new(),
    };
    let base = path.as_deref().and_then(Path::parent);
    let client = client::parse_in(&text, base).map_err(|e| anyhow::anyhow!("{e}"))?;
    client.check_files().map_err(|e| anyhow::anyhow!("{e}"))?;
    cfg.client = Some(client.to_toml_value().map_err(|e| anyhow::anyhow!("[client]: {e}"))?);
    if let (_, Some(warning)) = crate::logging::filter_from_env() {
        eprintln!("mailroom: warning: {warning}");
    }
    let toml = cfg.to_toml()?;
    // The same header whatever the file: the output of a run on its own output is the same, byte for byte.
    println!("# mailroom check-config: valid; the settings in force (every default filled in):");
    if cfg.tls.cert.is_none() {
        println!("# [tls] unset: a self-signed certificate in {}", cfg.server.data_dir.join("tls").display());
    }
    print!("{toml}");
    eprintln!("config ok");
    Ok(())
}

/// `[tls] cert` and `key` as `serve` loads them: both readable, and the key the certificate's.
fn check_tls(cfg: &Config) -> anyhow::Result<()> {
    if let (Some(cert), Some(key)) = (&cfg.tls.cert, &cfg.tls.key) {
        mailroom_server::tls::check_pair(cert, key).context("[tls] cert/key")?;
    }
    Ok(())
}
