//! The `[client]` section of mailroom.toml, as `mailroom sendmail` reads it. The same file may hold the
//! server's sections; they are none of sendmail's business and are skipped.
//!
//! ```toml
//! [client]
//! server = "mail.example.org:587"   # default 127.0.0.1:2525
//! tls = "none"                      # "none", "starttls" or "tls"
//! user = "alice@example.org"        # SMTP AUTH user (AUTH arrives with the TLS work)
//! helo = "laptop.example.org"       # name for EHLO, default this host's name
//! from = "alice@example.org"        # envelope sender when neither -f nor a From header gives one
//! timeout = "60s"                   # bound on each step
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use mailroom_client::{Client, ClientBuilder, Tls};
use serde::Deserialize;

use crate::send::util::{parse_duration, DEFAULT_SERVER, DEFAULT_TIMEOUT};

#[derive(Debug, Default, Deserialize)]
struct File {
    #[serde(default)]
    client: Section,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    server: Option<String>,
    tls: Option<String>,
    user: Option<String>,
    helo: Option<String>,
    from: Option<String>,
    timeout: Option<String>,
}

/// The settings in force.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientConfig {
    pub server: String,
    pub tls: Tls,
    pub user: Option<String>,
    pub helo: Option<String>,
    pub from: Option<String>,
    pub timeout: Duration,
}

/// Which file to read: `--config`, else `$MAILROOM_CONFIG`, else the user's file when it exists.
fn locate(explicit: Option<&Path>) -> Option<(PathBuf, bool)> {
    if let Some(p) = explicit {
        return Some((p.to_path_buf(), true));
    }
    if let Some(p) = std::env::var_os("MAILROOM_CONFIG").filter(|p| !p.is_empty()) {
        return Some((PathBuf::from(p), true));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|p| !p.is_empty()).map(|h| PathBuf::from(h).join(".config")))?;
    Some((base.join("mailroom").join("mailroom.toml"), false))
}

/// Loads the config. A file named by flag or environment must exist; the user's default file may not.
pub fn load(explicit: Option<&Path>) -> Result<ClientConfig, String> {
    let text = match locate(explicit) {
        Some((path, required)) => match std::fs::read_to_string(&path) {
            Ok(t) => Some((path, t)),
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("cannot read config {}: {e}", path.display())),
        },
        None => None,
    };
    match text {
        Some((path, t)) => parse(&t).map_err(|e| format!("config {}: {e}", path.display())),
        None => parse(""),
    }
}

pub fn parse(text: &str) -> Result<ClientConfig, String> {
    let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
    let c = file.client;
    let tls = match c.tls.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("none") | Some("off") | Some("plain") | Some("no") => Tls::None,
        Some("starttls") => Tls::StartTls,
        Some("tls") | Some("implicit") | Some("smtps") => Tls::Implicit,
        Some(other) => return Err(format!("[client] tls = {other:?}: use \"none\", \"starttls\" or \"tls\"")),
    };
    let timeout = match c.timeout.as_deref() {
        Some(t) => parse_duration(t).map_err(|e| format!("[client] timeout: {e}"))?,
        None => DEFAULT_TIMEOUT,
    };
    Ok(ClientConfig {
        server: c.server.unwrap_or_else(|| DEFAULT_SERVER.to_string()),
        tls,
        user: c.user,
        helo: c.helo,
        from: c.from,
        timeout,
    })
}

impl ClientConfig {
    /// A client builder for these settings, or why they cannot be honoured yet.
    pub fn builder(&self) -> Result<ClientBuilder, String> {
        if self.tls != Tls::None {
            return Err(format!("[client] tls = {:?} is not supported yet", self.tls));
        }
        if self.user.is_some() {
            return Err("[client] user: SMTP AUTH is not supported yet".into());
        }
        let mut b = Client::builder(self.server.clone()).timeout(self.timeout).tls(self.tls);
        if let Some(h) = &self.helo {
            b = b.helo_name(h.clone());
        }
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_other_sections() {
        let c = parse("").unwrap();
        assert_eq!((c.server.as_str(), c.tls), ("127.0.0.1:2525", Tls::None));
        let c = parse("[server]\ndomains = [\"x\"]\n[limits]\nmax_message_size = 10\n[client]\nserver = \"mx:587\"\ntls = \"starttls\"\nuser = \"u\"\n")
            .unwrap();
        assert_eq!((c.server.as_str(), c.tls, c.user.as_deref()), ("mx:587", Tls::StartTls, Some("u")));
        assert!(parse("[client]\nsever = \"typo\"\n").is_err());
        assert!(parse("[client]\ntls = \"maybe\"\n").is_err());
    }
}
