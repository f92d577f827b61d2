//! `mailroom sendmail`: a drop-in for /usr/sbin/sendmail as cron, git send-email and PHP call it.
//!
//! Reads a message on stdin and relays it to the server of the `[client]` section of the config
//! (`--config FILE`, else `$MAILROOM_CONFIG`, else `~/.config/mailroom/mailroom.toml`), or to
//! 127.0.0.1:2525, with the TLS and AUTH settings of that section (see [`config`]). Config problems,
//! a password file others may read among them, are exit 78 before the message is read; a password
//! command runs only when a server offers AUTH. Recipients come from the arguments and, with `-t`, from
//! To/Cc/Bcc, also in RFC 5322's obsolete syntax (`Bcc :`); Bcc headers never leave. A leading mbox
//! `From ` line is skipped; a message that starts with a continuation line is exit 65. Date, Message-ID and From are added when missing. Flags are sendmail's, parsed by hand
//! (getopt style: `-ti`, `-f addr`, `-faddr`); the `-o` options and the flags sendmail accepts but that
//! mean nothing here are ignored as sendmail ignores what it does not know.

#[path = "sendmail_config.rs"]
pub(crate) mod config;
#[path = "sendmail_message.rs"]
mod message;

use std::ffi::OsString;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use mailroom_client::Envelope;
use mailroom_proto::{Address, ForwardPath, ReversePath};

use crate::send::util::*;

const PROG: &str = "sendmail";

#[derive(Debug, Default, PartialEq)]
struct Args {
    config: Option<PathBuf>,
    extract: bool,
    ignore_dots: bool,
    from: Option<String>,
    full_name: Option<String>,
    verbose: bool,
    recipients: Vec<String>,
}

const USAGE: &str = "\
usage: mailroom sendmail [--config FILE] [-t] [-i] [-f FROM] [-F NAME] [-v] [RECIPIENT...] < message

Reads a message on stdin and sends it through the server of the [client] section of the config.

Options:
  --config FILE   config file with a [client] section [default: $MAILROOM_CONFIG, then
                  ~/.config/mailroom/mailroom.toml; without one: 127.0.0.1:2525]
  -t              also send to the To, Cc and Bcc recipients of the message (Bcc is removed)
  -i, -oi         a line holding a single \".\" does not end the message
  -f FROM         envelope sender [default: [client] from, then the AUTH user, then the From header,
                  then $USER@domain]; -f '<>' is the null sender
  -F NAME         full name for a From header that is added
  -v              print the SMTP transcript
  --help          print this help

RECIPIENT is an address, or a bare local name (root) completed with [client] domain (default: this
host's name). Exit codes: 0 sent, 64 usage, 65 bad message, 69 refused, 75 try again, 78 config.";

/// Parses sendmail's flags. Errors are usage messages.
fn parse_args(args: Vec<OsString>) -> Result<Option<Args>, String> {
    let mut out = Args::default();
    let mut it = args.into_iter().map(|a| a.into_string().map_err(|a| format!("argument is not UTF-8: {a:?}")));
    let mut only_recipients = false;
    while let Some(arg) = it.next() {
        let arg = arg?;
        if only_recipients || !arg.starts_with('-') || arg == "-" {
            out.recipients.push(arg);
            continue;
        }
        if arg == "--" {
            only_recipients = true;
            continue;
        }
        if let Some(long) = arg.strip_prefix("--") {
            match long.split_once('=') {
                Some(("config", v)) => out.config = Some(v.into()),
                None if long == "config" => out.config = Some(it.next().ok_or("--config needs a FILE")??.into()),
                None if long == "help" => return Ok(None),
                _ => return Err(format!("unknown option {arg}")),
            }
            continue;
        }
        // A cluster of one-letter flags; a flag with a value takes the rest of the cluster or the next arg.
        let chars: Vec<char> = arg[1..].chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let rest: String = chars[i + 1..].iter().collect();
            let mut value = |name: char| -> Result<String, String> {
                if !rest.is_empty() {
                    Ok(rest.clone())
                } else {
                    it.next().ok_or_else(|| format!("-{name} needs a value"))?
                }
            };
            match c {
                't' => out.extract = true,
                'i' => out.ignore_dots = true,
                'v' => out.verbose = true,
                // Accepted and meaningless here: me-too, no aliasing, initial submission, deliver modes.
                'm' | 'n' | 'U' | 'G' => {}
                'f' | 'r' => {
                    out.from = Some(value(c)?);
                    break;
                }
                'F' => {
                    out.full_name = Some(value(c)?);
                    break;
                }
                // -oi is -i; every other -oX option (-oem, -odb, -oQ/dir ...) is sendmail tuning.
                'o' => {
                    if rest == "i" {
                        out.ignore_dots = true;
                    }
                    break;
                }
                'b' => match rest.as_str() {
                    "m" | "" => break,
                    mode => return Err(format!("-b{mode} is not supported; only sending (-bm) is")),
                },
                'q' => return Err("-q (queue runs) is not supported".into()),
                // Options with a value that do not change what is sent: DSN notify and return, envelope
                // id, hop count, body type, log tag, config file, log file, -A mode, -e error mode, -d debug.
                'N' | 'R' | 'V' | 'h' | 'B' | 'L' | 'C' | 'X' | 'A' => {
                    value(c)?;
                    break;
                }
                'e' | 'd' | 'O' => break,
                other => {
                    eprintln!("{PROG}: ignoring unknown flag -{other}");
                    break;
                }
            }
            i += 1;
        }
    }
    Ok(Some(out))
}

pub fn main(args: Vec<OsString>) -> ExitCode {
    let args = match parse_args(args) {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!(
                "{PROG}: {e}\n{}\n(mailroom sendmail --help lists the options)",
                USAGE.lines().next().unwrap_or("")
            );
            return ExitCode::from(EX_USAGE);
        }
    };
    let elevated = config::is_elevated(config::process_ids());
    if elevated {
        eprintln!("{PROG}: {}", config::IGNORED_WHEN_ELEVATED);
    }
    // Config problems (a password file others may read among them) stop us before the message is taken.
    // A password command is not run here: only once a server offers AUTH.
    let (cfg, builder) = match config::load(args.config.as_deref(), elevated).and_then(|c| Ok((c.builder()?, c))) {
        Ok((b, c)) => (c, b),
        Err(e) => {
            eprintln!("{PROG}: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    if cfg.insecure {
        warn_insecure(PROG);
    }
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().lock().read_to_end(&mut input) {
        eprintln!("{PROG}: reading the message: {e}");
        return ExitCode::from(EX_NOINPUT);
    }
    if !args.ignore_dots {
        message::cut_at_lone_dot(&mut input);
    }
    let (message, envelope) = match prepare(&args, &cfg, &input) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let builder = if args.verbose { builder.transcript(stdout_transcript()) } else { builder };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{PROG}: {e}");
            return ExitCode::from(EX_SOFTWARE);
        }
    };
    rt.block_on(send_one(PROG, Settings::ConfigFile, builder, envelope, &message))
}

/// Prints `msg` and gives `code`, for the `Err` of the steps below.
fn stop(msg: impl std::fmt::Display, code: u8) -> ExitCode {
    eprintln!("{PROG}: {msg}");
    ExitCode::from(code)
}

/// The message to send and its envelope, from the input, the flags and the config.
fn prepare(args: &Args, cfg: &config::ClientConfig, input: &[u8]) -> Result<(Vec<u8>, Envelope), ExitCode> {
    let parsed = message::Incoming::parse(input).map_err(|e| stop(e, EX_DATAERR))?;
    let from = envelope_sender(args, cfg, parsed.from.as_deref())?;
    let mut recipients: Vec<Address> = Vec::new();
    let mut listed: Vec<String> = args.recipients.iter().flat_map(|r| split_list(r)).collect();
    if args.extract {
        listed.extend(parsed.recipients.iter().cloned());
    }
    for r in listed {
        let (_, a) = parse_recipient(&r, &cfg.domain).map_err(|e| stop(e, EX_DATAERR))?;
        if !recipients.contains(&a) {
            recipients.push(a);
        }
    }
    if recipients.is_empty() {
        return Err(stop("no recipients (give them as arguments, or use -t)", EX_USAGE));
    }
    let message = parsed.finish(&from, args.full_name.as_deref());
    Ok((message, Envelope::new(from, recipients.into_iter().map(ForwardPath::Mailbox).collect())))
}

/// The envelope sender: `-f`; else `[client] from`; else the AUTH user when it is an address (an
/// authenticated server takes only that one); else the From header; else `$USER@` the `[client] domain`,
/// as sendmail makes it.
fn envelope_sender(args: &Args, cfg: &config::ClientConfig, header: Option<&str>) -> Result<ReversePath, ExitCode> {
    match args.from.as_deref().map(str::trim) {
        Some("<>") | Some("") => return Ok(ReversePath::Null),
        Some(f) => {
            let (_, a) = parse_recipient(f, &cfg.domain).map_err(|e| stop(format!("-f: {e}"), EX_USAGE))?;
            return Ok(ReversePath::Mailbox(a));
        }
        None => {}
    }
    // `from` was checked when the config was read.
    if let Some(Ok((_, a))) = cfg.from.as_deref().map(parse_mailbox) {
        return Ok(ReversePath::Mailbox(a));
    }
    if let Some(Ok((_, a))) = cfg.user.as_deref().filter(|u| u.contains('@')).map(parse_mailbox) {
        return Ok(ReversePath::Mailbox(a));
    }
    if let Some(Ok((_, a))) = header.map(parse_mailbox) {
        return Ok(ReversePath::Mailbox(a));
    }
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "root".into());
    let made = Address::parse(&format!("{user}@{}", cfg.domain))
        .map_err(|e| stop(format!("cannot make a sender from {user}@{}: {e}; use -f", cfg.domain), EX_USAGE))?;
    Ok(ReversePath::Mailbox(made))
}

/// A recipient as Postfix and msmtp take it: an address, or a bare local name (`root`, cron's
/// `MAILTO=root`) completed with `domain`.
fn parse_recipient(text: &str, domain: &str) -> Result<(Option<String>, Address), String> {
    let t = text.trim();
    let bare = !t.is_empty() && !t.contains(['@', '<', '>', ' ', '"', ',', '(']);
    if bare {
        return parse_mailbox(&format!("{t}@{domain}"));
    }
    parse_mailbox(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Args>, String> {
        parse_args(args.iter().map(OsString::from).collect())
    }

    #[test]
    fn flags() {
        let a = parse(&["-t", "-oi", "-f", "me@x", "-FMy Name", "a@b", "c@d"]).unwrap().unwrap();
        assert!(a.extract && a.ignore_dots);
        assert_eq!(a.from.as_deref(), Some("me@x"));
        assert_eq!(a.full_name.as_deref(), Some("My Name"));
        assert_eq!(a.recipients, vec!["a@b", "c@d"]);
        let a = parse(&["-ti", "-fme@x", "-oem", "-odb", "-N", "never", "--", "-odd@x"]).unwrap().unwrap();
        assert!(a.extract && a.ignore_dots);
        assert_eq!(a.from.as_deref(), Some("me@x"));
        assert_eq!(a.recipients, vec!["-odd@x"]);
        let a = parse(&["--config", "/x.toml", "-i", "a@b"]).unwrap().unwrap();
        assert_eq!(a.config, Some("/x.toml".into()));
        assert!(parse(&["-bp"]).is_err());
        assert!(parse(&["-f"]).is_err());
        assert!(parse(&["--help"]).unwrap().is_none());
    }

    #[test]
    fn bare_local_names_take_the_configured_domain() {
        let a = |s: &str| parse_recipient(s, "example.test").unwrap().1.to_string();
        assert_eq!(a("root"), "root@example.test");
        assert_eq!(a("alice@other.test"), "alice@other.test");
        assert_eq!(a("Alice <alice@other.test>"), "alice@other.test");
        assert!(parse_recipient("bad name", "example.test").is_err());
    }

    #[test]
    fn the_envelope_sender_is_f_then_from_then_the_auth_user_then_the_header() {
        let sender = |args: &Args, cfg: &config::ClientConfig, header| match envelope_sender(args, cfg, header) {
            Ok(ReversePath::Mailbox(a)) => a.to_string(),
            Ok(ReversePath::Null) => "<>".into(),
            Err(_) => panic!("no sender"),
        };
        let mut cfg = config::parse("[client]\ndomain = \"example.test\"\n").unwrap();
        let none = Args::default();
        let f = Args { from: Some("flag@x.test".into()), ..Args::default() };
        let header = Some("Header <header@x.test>");
        std::env::set_var("USER", "someone");
        assert_eq!(sender(&none, &cfg, None), "someone@example.test");
        assert_eq!(sender(&none, &cfg, header), "header@x.test");
        cfg.user = Some("auth@x.test".into());
        assert_eq!(sender(&none, &cfg, header), "auth@x.test");
        cfg.from = Some("configured@x.test".into());
        assert_eq!(sender(&none, &cfg, header), "configured@x.test");
        assert_eq!(sender(&f, &cfg, header), "flag@x.test");
        let bare = Args { from: Some("cron".into()), ..Args::default() };
        assert_eq!(sender(&bare, &cfg, header), "cron@example.test");
    }
}
