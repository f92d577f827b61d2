//! `mailroom send`: build a message (or take a ready one) and send it through an SMTP server.
//!
//! The message is built with mail-builder: Date, Message-ID, From, To, Cc, a Subject encoded by RFC 2047
//! when it is not ASCII, a text body from `--body` or stdin, and each `--attach FILE` as a MIME part with a
//! content type guessed from its name. `--message FILE` sends a file as it is. Exit codes follow
//! sysexits: 0 when every recipient has the message, 75 on a 4xx or a network failure, 69 on a 5xx,
//! 64 on bad usage. `--interactive` runs the guided session of [`interactive`].
//!
//! TLS: `--starttls` (never falls back to plain text: a server without STARTTLS is exit 69) or `--tls`
//! (RFC 8314, port 465). The certificate is verified against the system's CA store, or against `--cafile
//! FILE` (a private CA or a self-signed certificate such as `mailroom serve` makes); one that does not
//! verify is exit 69, since trying again meets the same certificate. `--insecure` skips the check, with a
//! warning. Bad TLS settings (an unreadable CA file) are exit 78. `--user U --password-stdin` authenticates
//! (AUTH PLAIN or LOGIN) with the first line of stdin as the password; the body must then come from
//! `--body` or `--message`. A refused AUTH (535) is exit 69, and `-v` shows AUTH lines masked.

#[path = "interactive.rs"]
mod interactive;
#[path = "send_util.rs"]
pub(crate) mod util;

use std::io::{BufRead, IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use mail_builder::headers::address::Address as MbAddress;
use mail_builder::MessageBuilder;
use mailroom_client::{Client, Envelope, Message, Tls};
use mailroom_proto::{Address, ForwardPath, ReversePath};

use util::*;

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

const PROG: &str = "mailroom send";

fn usage(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("{PROG}: {msg}");
    ExitCode::from(EX_USAGE)
}

pub fn run(args: SendArgs) -> ExitCode {
    let timeout = match args.timeout.as_deref().map(parse_duration).transpose() {
        Ok(t) => t.unwrap_or(DEFAULT_TIMEOUT),
        Err(e) => return usage(e),
    };
    let tls = match tls_mode(&args) {
        Ok(t) => t,
        Err(e) => return usage(e),
    };
    if args.user.is_some() && !args.password_stdin {
        return usage("--user needs --password-stdin (the password is the first line of stdin)");
    }
    if args.password_stdin && !args.interactive && args.body.is_none() && args.message.is_none() {
        return usage(
            "--password-stdin takes the first line of stdin for the password: give the body with --body or --message",
        );
    }
    if args.user.is_some() && tls == Tls::None {
        eprintln!(
            "{PROG}: warning: --user without --starttls or --tls: servers refuse AUTH in plain text (538), \
             and one that did not would see the password unencrypted"
        );
    }
    if args.insecure {
        warn_insecure(PROG);
    }
    // The password first: stdin holds nothing else (the body comes from --body or --message).
    let password = if args.password_stdin && !args.interactive {
        match read_password_line() {
            Ok(p) => Some(p),
            Err(e) => return usage(e),
        }
    } else {
        None
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{PROG}: {e}");
            return ExitCode::from(EX_SOFTWARE);
        }
    };
    if args.interactive {
        return rt.block_on(interactive::run(&args, timeout, tls));
    }
    let Some(from) = args.from.as_deref() else { return usage("--from ADDRESS is required") };
    let (from_name, from) = match parse_mailbox(from) {
        Ok(f) => f,
        Err(e) => return usage(e),
    };
    let parse_all = |list: &[String]| -> Result<Vec<(Option<String>, Address)>, String> {
        list.iter().flat_map(|s| split_list(s)).map(|s| parse_mailbox(&s)).collect()
    };
    let (to, cc, bcc) = match (parse_all(&args.to), parse_all(&args.cc), parse_all(&args.bcc)) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return usage(e),
    };
    if to.is_empty() && cc.is_empty() && bcc.is_empty() {
        return usage("at least one --to ADDRESS is required");
    }
    let message = match &args.message {
        Some(path) => match std::fs::read(path) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("{PROG}: cannot read {}: {e}", path.display());
                return ExitCode::from(EX_NOINPUT);
            }
        },
        None => {
            let body = match &args.body {
                Some(b) => b.clone(),
                None => match read_stdin_body() {
                    Ok(b) => b,
                    Err(e) => {
                        eprintln!("{PROG}: reading the body from stdin: {e}");
                        return ExitCode::from(EX_NOINPUT);
                    }
                },
            };
            let mut attachments = Vec::new();
            for path in &args.attach {
                match std::fs::read(path) {
                    Ok(bytes) => attachments.push((path.clone(), bytes)),
                    Err(e) => {
                        eprintln!("{PROG}: cannot read {}: {e}", path.display());
                        return ExitCode::from(EX_NOINPUT);
                    }
                }
            }
            let draft = Draft {
                from: (from_name, from.clone()),
                to: to.clone(),
                cc: cc.clone(),
                subject: args.subject.clone(),
                body,
                attachments,
            };
            match draft.build() {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("{PROG}: building the message: {e}");
                    return ExitCode::from(EX_SOFTWARE);
                }
            }
        }
    };
    let envelope = Envelope::new(
        ReversePath::Mailbox(from),
        to.into_iter().chain(cc).chain(bcc).map(|(_, a)| ForwardPath::Mailbox(a)).collect(),
    );
    let server = args.server.clone().unwrap_or_else(|| DEFAULT_SERVER.to_string());
    let mut builder = tls_builder(&args, server, tls).timeout(timeout);
    if let (Some(user), Some(password)) = (&args.user, password) {
        builder = builder.credentials(user.clone(), password);
    }
    if let Some(h) = &args.helo {
        builder = builder.helo_name(h.clone());
    }
    if args.verbose {
        builder = builder.transcript(stdout_transcript());
    }
    rt.block_on(send_one(builder, envelope, &message))
}

/// Connects, sends, quits; reports as `mailroom send` does.
pub(crate) async fn send_one(builder: mailroom_client::ClientBuilder, envelope: Envelope, message: &[u8]) -> ExitCode {
    send_one_as(PROG, builder, envelope, message).await
}

pub(crate) async fn send_one_as(
    prog: &str,
    builder: mailroom_client::ClientBuilder,
    envelope: Envelope,
    message: &[u8],
) -> ExitCode {
    let mut client = match builder.connect().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{prog}: {e}");
            if let Some(hint) = error_hint(prog, &e) {
                eprintln!("{prog}: {hint}");
            }
            return ExitCode::from(exit_for_error(&e));
        }
    };
    let outcome = match client.send(&envelope, Message::from_bytes(message)).await {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{prog}: {e}");
            return ExitCode::from(exit_for_error(&e));
        }
    };
    let code = report_outcome(prog, &outcome);
    // The message is settled; a server that fumbles QUIT changes nothing for it.
    if let Err(e) = client.quit().await {
        eprintln!("{prog}: after sending: {e}");
    }
    code
}

/// `--starttls` / `--tls` / neither, and the TLS flags that only mean something with one of them.
fn tls_mode(args: &SendArgs) -> Result<Tls, String> {
    let tls = match (args.starttls, args.tls) {
        (true, _) => Tls::StartTls,
        (_, true) => Tls::Implicit,
        _ => Tls::None,
    };
    if tls == Tls::None && (args.cafile.is_some() || args.insecure) {
        // Someone who gives a CA file expects TLS: saying so beats sending in plain text unnoticed.
        return Err("--cafile and --insecure need --starttls or --tls".into());
    }
    Ok(tls)
}

/// A client builder for the server with the TLS settings of the flags.
pub(crate) fn tls_builder(args: &SendArgs, server: String, tls: Tls) -> mailroom_client::ClientBuilder {
    let mut b = Client::builder(server).tls(tls).insecure(args.insecure);
    if let Some(ca) = &args.cafile {
        b = b.cafile(ca.clone());
    }
    b
}

/// The first line of stdin, without its line end.
fn read_password_line() -> Result<String, String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        // Not hidden: --password-stdin is for pipes and scripts.
        eprintln!("{PROG}: reading the password from stdin (it will be shown as typed)");
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line).map_err(|e| format!("reading the password from stdin: {e}"))?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err("--password-stdin: stdin gave no password (empty first line)".into());
    }
    Ok(password.to_string())
}

fn read_stdin_body() -> std::io::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("{PROG}: reading the body from stdin; end it with Ctrl-D");
    }
    let mut bytes = Vec::new();
    stdin.lock().read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The parts of a message `mailroom send` builds.
pub(crate) struct Draft {
    pub from: (Option<String>, Address),
    pub to: Vec<(Option<String>, Address)>,
    pub cc: Vec<(Option<String>, Address)>,
    pub subject: Option<String>,
    pub body: String,
    pub attachments: Vec<(PathBuf, Vec<u8>)>,
}

fn mb_address(a: &(Option<String>, Address)) -> MbAddress<'static> {
    match &a.0 {
        Some(name) => MbAddress::new_address(Some(name.clone()), a.1.to_string()),
        None => MbAddress::new_address(None::<String>, a.1.to_string()),
    }
}

impl Draft {
    /// The RFC 5322 message, CRLF line ends; mail-builder does the MIME structure and RFC 2047 encoding.
    pub fn build(self) -> std::io::Result<Vec<u8>> {
        let mut b = MessageBuilder::new()
            .from(mb_address(&self.from))
            .message_id(make_message_id(&id_domain(&self.from.1)))
            .date(mail_builder::headers::date::Date::now());
        if !self.to.is_empty() {
            b = b.to(MbAddress::new_list(self.to.iter().map(mb_address).collect()));
        }
        if !self.cc.is_empty() {
            b = b.cc(MbAddress::new_list(self.cc.iter().map(mb_address).collect()));
        }
        if let Some(s) = self.subject {
            b = b.subject(s);
        }
        b = b.text_body(self.body);
        for (path, bytes) in self.attachments {
            let name =
                path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "attachment".into());
            b = b.attachment(guess_content_type(&path), name, bytes);
        }
        b.write_to_vec()
    }
}
