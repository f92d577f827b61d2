//! `mailroom send`: build a message (or take a ready one) and send it through an SMTP server.
//!
//! The message is built with mail-builder ([`draft`]): Date, Message-ID, From, To, Cc, a Subject encoded by
//! RFC 2047 when it is not ASCII, a text body from `--body` or stdin, and each `--attach FILE` as a MIME
//! part with a content type guessed from its name. `--message FILE` sends a file as it is. Exit codes
//! follow sysexits ([`util::exit_for_error`]): 0 when every recipient has the message, 75 on a 4xx or a
//! network failure, 69 on a 5xx, 64 on bad usage. `--interactive` runs the guided session of
//! [`interactive`].
//!
//! TLS: `--starttls` (never falls back to plain text: a server without STARTTLS is exit 69) or `--tls`
//! (RFC 8314, port 465). The certificate is verified against the system's CA store, or against `--cafile
//! FILE` (a private CA or a self-signed certificate such as `mailroom serve` makes); one that does not
//! verify is exit 69, since trying again meets the same certificate. `--insecure` skips the check, with a
//! warning. Bad TLS settings (an unreadable CA file) are exit 78. `--user U --password-stdin` authenticates
//! (AUTH PLAIN or LOGIN) with the first line of stdin as the password; the body must then come from
//! `--body` or `--message`. The password is never sent without TLS (exit 64) unless
//! `--allow-plaintext-auth` is given and the server is on a loopback address, and never to a server that
//! does not offer AUTH (exit 69). A refused AUTH (535) is exit 69, and `-v` shows AUTH lines masked.

#[path = "send_args.rs"]
mod args;
#[path = "send_draft.rs"]
mod draft;
#[path = "interactive.rs"]
mod interactive;
#[path = "send_util.rs"]
pub(crate) mod util;

use std::io::{BufRead, IsTerminal, Read};
use std::process::ExitCode;

use mailroom_client::{Envelope, Tls};
use mailroom_proto::{Address, ForwardPath, ReversePath};

pub use args::SendArgs;
use draft::Draft;
use util::*;

const PROG: &str = "mailroom send";

fn usage(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("{PROG}: {msg}");
    ExitCode::from(EX_USAGE)
}

/// A mailbox with its display name, as the flags give them.
type Mailbox = (Option<String>, Address);

pub fn run(args: SendArgs) -> ExitCode {
    let (timeout, tls) = match check_flags(&args) {
        Ok(x) => x,
        Err(code) => return code,
    };
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
    let (from, to, cc, bcc) = match parse_addresses(&args) {
        Ok(x) => x,
        Err(e) => return usage(e),
    };
    let message = match read_or_build(&args, &from, &to, &cc) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let envelope = Envelope::new(
        ReversePath::Mailbox(from.1),
        to.into_iter().chain(cc).chain(bcc).map(|(_, a)| ForwardPath::Mailbox(a)).collect(),
    );
    let server = args.server.clone().unwrap_or_else(|| DEFAULT_SERVER.to_string());
    let mut builder = args.builder(server, tls).timeout(timeout);
    if let (Some(user), Some(password)) = (&args.user, password) {
        builder = builder.credentials(user.clone(), password);
    }
    if let Some(h) = &args.helo {
        builder = builder.helo_name(h.clone());
    }
    if args.verbose {
        builder = builder.transcript(stdout_transcript());
    }
    rt.block_on(send_one(PROG, Settings::Flags, builder, envelope, &message))
}

/// The checks that need nothing but the flags; gives the timeout and the TLS mode.
fn check_flags(args: &SendArgs) -> Result<(std::time::Duration, Tls), ExitCode> {
    let timeout = match args.timeout.as_deref().map(parse_duration).transpose() {
        Ok(t) => t.unwrap_or(DEFAULT_TIMEOUT),
        Err(e) => return Err(usage(e)),
    };
    if args.user.is_some() && !args.password_stdin {
        return Err(usage("--user needs --password-stdin (the password is the first line of stdin)"));
    }
    if args.password_stdin && !args.interactive && args.body.is_none() && args.message.is_none() {
        return Err(usage(
            "--password-stdin takes the first line of stdin for the password: give the body with --body or --message",
        ));
    }
    let tls = args.tls_mode().map_err(usage)?;
    Ok((timeout, tls))
}

/// `--from`, then `--to`, `--cc` and `--bcc` (each repeatable and comma-separated).
#[allow(clippy::type_complexity)]
fn parse_addresses(args: &SendArgs) -> Result<(Mailbox, Vec<Mailbox>, Vec<Mailbox>, Vec<Mailbox>), String> {
    let from = parse_mailbox(args.from.as_deref().ok_or("--from ADDRESS is required")?)?;
    let parse_all = |list: &[String]| -> Result<Vec<Mailbox>, String> {
        list.iter().flat_map(|s| split_list(s)).map(|s| parse_mailbox(&s)).collect()
    };
    let (to, cc, bcc) = (parse_all(&args.to)?, parse_all(&args.cc)?, parse_all(&args.bcc)?);
    if to.is_empty() && cc.is_empty() && bcc.is_empty() {
        return Err("at least one --to ADDRESS is required".into());
    }
    Ok((from, to, cc, bcc))
}

/// The message: `--message FILE` as it is, or one built from the flags and the body.
fn read_or_build(args: &SendArgs, from: &Mailbox, to: &[Mailbox], cc: &[Mailbox]) -> Result<Vec<u8>, ExitCode> {
    let cannot_read = |path: &std::path::Path, e: std::io::Error| {
        eprintln!("{PROG}: cannot read {}: {e}", path.display());
        ExitCode::from(EX_NOINPUT)
    };
    if let Some(path) = &args.message {
        return std::fs::read(path).map_err(|e| cannot_read(path, e));
    }
    let body = match &args.body {
        Some(b) => b.clone(),
        None => read_stdin_body().map_err(|e| {
            eprintln!("{PROG}: reading the body from stdin: {e}");
            ExitCode::from(EX_NOINPUT)
        })?,
    };
    let mut attachments = Vec::new();
    for path in &args.attach {
        attachments.push((path.clone(), std::fs::read(path).map_err(|e| cannot_read(path, e))?));
    }
    let draft = Draft {
        from: from.clone(),
        to: to.to_vec(),
        cc: cc.to_vec(),
        subject: args.subject.clone(),
        body,
        attachments,
    };
    draft.build().map_err(|e| {
        eprintln!("{PROG}: building the message: {e}");
        ExitCode::from(EX_SOFTWARE)
    })
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
