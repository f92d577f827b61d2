//! The flags of `mailroom send`, and what follows from them alone: the TLS mode, the check that a
//! password is never sent without TLS unless allowed, and the client builder they describe.

use std::path::PathBuf;

use mailroom_client::{Client, ClientBuilder, Tls};

#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// Server to send through, HOST:PORT (default 127.0.0.1:2525).
    #[arg(long, value_name = "HOST:PORT")]
    pub server: Option<String>,
    /// Sender: an address, or "Name <address>".
    #[arg(long, value_name = "ADDRESS")]
    pub from: Option<String>,
    /// Recipient (repeat, or separate with commas).
    #[arg(long, value_name = "ADDRESS")]
    pub to: Vec<String>,
    /// Recipient shown in a Cc header (repeat, or separate with commas).
    #[arg(long, value_name = "ADDRESS")]
    pub cc: Vec<String>,
    /// Recipient left out of the headers (repeat, or separate with commas).
    #[arg(long, value_name = "ADDRESS")]
    pub bcc: Vec<String>,
    /// Subject (non-ASCII is encoded per RFC 2047).
    #[arg(long)]
    pub subject: Option<String>,
    /// Text body; without it the body is read from stdin.
    #[arg(long, value_name = "TEXT")]
    pub body: Option<String>,
    /// Attach a file as a MIME part (repeatable).
    #[arg(long, value_name = "FILE")]
    pub attach: Vec<PathBuf>,
    /// Send this RFC 5322 message file as it is instead of building one.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["subject", "body", "attach", "cc"])]
    pub message: Option<PathBuf>,
    /// Name to give in EHLO/HELO (default: this host's name).
    #[arg(long, value_name = "NAME")]
    pub helo: Option<String>,
    /// Upgrade the connection with STARTTLS (RFC 3207) before sending.
    #[arg(long, conflicts_with = "tls")]
    pub starttls: bool,
    /// Use TLS from the first byte (RFC 8314, port 465).
    #[arg(long)]
    pub tls: bool,
    /// Trust the certificates in this PEM file (a private CA, or a self-signed server certificate) instead
    /// of the system's CA store.
    #[arg(long, value_name = "FILE")]
    pub cafile: Option<PathBuf>,
    /// Do not check the server's TLS certificate (encrypted, but to whoever answers).
    #[arg(long, conflicts_with = "cafile")]
    pub insecure: bool,
    /// Authenticate as this user (AUTH, RFC 4954).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Read the AUTH password from the first line of stdin.
    #[arg(long, requires = "user")]
    pub password_stdin: bool,
    /// Allow AUTH without TLS, to a server on a loopback address only (a test server on this machine).
    #[arg(long, requires = "user")]
    pub allow_plaintext_auth: bool,
    /// Bound on each step: connecting and every reply ("30s", "2m", "500ms").
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Guided session: asks for the server, HELO name, sender, recipients, subject and body.
    #[arg(long)]
    pub interactive: bool,
    /// Print the SMTP transcript (C: / S: lines).
    #[arg(short, long)]
    pub verbose: bool,
}

impl SendArgs {
    /// `--starttls` / `--tls` / neither, checked against the flags that only mean something with TLS, and
    /// against `--user` without TLS: the password would go unencrypted, so that takes
    /// `--allow-plaintext-auth` (which the client honours for a loopback server only).
    pub fn tls_mode(&self) -> Result<Tls, String> {
        let tls = match (self.starttls, self.tls) {
            (true, _) => Tls::StartTls,
            (_, true) => Tls::Implicit,
            _ => Tls::None,
        };
        if tls == Tls::None && (self.cafile.is_some() || self.insecure) {
            // Someone who gives a CA file expects TLS: saying so beats sending in plain text unnoticed.
            return Err("--cafile and --insecure need --starttls or --tls".into());
        }
        if tls == Tls::None && self.user.is_some() && !self.allow_plaintext_auth {
            return Err("--user without --starttls or --tls: not sending the password without TLS \
                        (--allow-plaintext-auth allows it, for a server on a loopback address only)"
                .into());
        }
        Ok(tls)
    }

    /// A client builder for `server` with the TLS settings of the flags.
    pub fn builder(&self, server: String, tls: Tls) -> ClientBuilder {
        let mut b = Client::builder(server).tls(tls).insecure(self.insecure);
        if let Some(ca) = &self.cafile {
            b = b.cafile(ca.clone());
        }
        b.allow_plaintext_auth(self.allow_plaintext_auth)
    }
}
