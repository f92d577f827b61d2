//! What `mailroom send` and `mailroom sendmail` share: sysexits codes, address and duration parsing,
//! Message-IDs, the transcript printer, one connect-send-quit, and turning its result into an exit code
//! and messages: transient errors are 75, permanent ones 69, and local ones (our settings or input) 64
//! when they came from flags and 78 when they came from a config file.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mailroom_client::{ClientBuilder, Direction, Envelope, Error, ErrorKind, Message, Outcome, Transcript};
use mailroom_proto::client::Error as ProtoError;
use mailroom_proto::{Address, Domain};

/// sysexits.h: the exit codes that sendmail's callers (cron, git send-email, PHP) understand.
pub const EX_USAGE: u8 = 64;
pub const EX_DATAERR: u8 = 65;
pub const EX_NOINPUT: u8 = 66;
pub const EX_UNAVAILABLE: u8 = 69;
pub const EX_SOFTWARE: u8 = 70;
pub const EX_TEMPFAIL: u8 = 75;
pub const EX_CONFIG: u8 = 78;

/// Where `mailroom send` and `sendmail` relay when nothing else is said: `mailroom serve`'s default.
pub const DEFAULT_SERVER: &str = "127.0.0.1:2525";

/// The step timeout when `--timeout` is not given: long enough for a slow server, short for a person.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Parses `30s`, `2m`, `1h`, `500ms` or a bare number of seconds (the config file's parser), above zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = mailroom_server::config::parse_duration(s).map_err(|e| format!("invalid duration: {e}"))?;
    if d.is_zero() {
        return Err(format!("invalid duration {s:?}: must be above 0"));
    }
    Ok(d)
}

/// A mailbox as people write it: `a@b`, `<a@b>` or `Name <a@b>`. Returns the display name and the address.
pub fn parse_mailbox(s: &str) -> Result<(Option<String>, Address), String> {
    let s = s.trim();
    let (name, addr) = match (s.rfind('<'), s.ends_with('>')) {
        (Some(i), true) => {
            let name = s[..i].trim().trim_matches('"').trim();
            (Some(name).filter(|n| !n.is_empty()).map(str::to_owned), &s[i + 1..s.len() - 1])
        }
        _ => (None, s),
    };
    let a = Address::parse(addr.trim()).map_err(|e| format!("invalid address {s:?}: {e}"))?;
    Ok((name, a))
}

/// A list of mailboxes separated by commas (outside quotes and angle brackets).
pub fn split_list(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut angle) = (false, false);
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()
}

/// A new Message-ID (RFC 5322 §3.6.4) under `domain`: time, process and a counter make it unique.
pub fn make_message_id(domain: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let domain = if domain.is_empty() || domain.starts_with('[') { "localhost" } else { domain };
    format!("{:x}.{:x}.{:x}.{n}@{domain}", t.as_secs(), t.subsec_nanos(), std::process::id())
}

/// The domain for a Message-ID: the sender's, when it is a name.
pub fn id_domain(a: &Address) -> String {
    match a.domain() {
        Domain::Name(n) => n.clone(),
        Domain::Literal(_) => "localhost".into(),
    }
}

/// Prints `C:` / `S:` lines to stdout as they happen.
pub fn stdout_transcript() -> Transcript {
    Arc::new(|dir: Direction, line: &str| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{dir} {line}");
        let _ = out.flush();
    })
}

/// Where the settings of a send came from: a local error is bad usage (64) with flags, a configuration
/// error (78) with a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settings {
    Flags,
    ConfigFile,
}

/// sysexits code for a failed connection or session, by the error's kind: transient 75 (a 4xx, a
/// timeout, a refused or lost connection), permanent 69 (a 5xx, an untrusted certificate, a server
/// without STARTTLS or AUTH when they were needed), local 64 or 78 (see [`Settings`]); unusable TLS
/// settings or password are always 78, an unreadable message 66.
pub fn exit_for_error(e: &Error, settings: Settings) -> u8 {
    match e.kind() {
        ErrorKind::Transient => EX_TEMPFAIL,
        ErrorKind::Permanent => EX_UNAVAILABLE,
        ErrorKind::Local => match e {
            Error::Message(_) => EX_NOINPUT,
            Error::TlsConfig(_) | Error::Password(_) => EX_CONFIG,
            Error::Protocol(ProtoError::NotReady(_)) => EX_SOFTWARE,
            _ if settings == Settings::ConfigFile => EX_CONFIG,
            _ => EX_USAGE,
        },
    }
}

/// What to do about an error, when the error alone does not say it.
pub fn error_hint(settings: Settings, e: &Error) -> Option<&'static str> {
    let file = settings == Settings::ConfigFile;
    match e {
        Error::Certificate { .. } if file => {
            Some("set cafile = \"FILE\" in [client] to trust a private CA or self-signed certificate")
        }
        Error::Certificate { .. } => {
            Some("use --cafile FILE to trust a private CA or self-signed certificate (or --insecure to skip the check)")
        }
        Error::PlaintextAuth { .. } if file => Some(
            "set tls = \"starttls\" or \"tls\" in [client]; for a test server on this machine only, \
             allow_plaintext_auth = true",
        ),
        Error::PlaintextAuth { .. } => {
            Some("use --starttls or --tls; for a test server on this machine only, --allow-plaintext-auth")
        }
        Error::AuthNotOffered(_) => {
            Some("is it the submission port (587 or 465)? Many servers offer AUTH only there, and only after STARTTLS")
        }
        _ => None,
    }
}

/// Prints an error with its hint and gives its exit code.
pub fn fail(prog: &str, settings: Settings, e: &Error) -> ExitCode {
    eprintln!("{prog}: {e}");
    if let Some(hint) = error_hint(settings, e) {
        eprintln!("{prog}: {hint}");
    }
    ExitCode::from(exit_for_error(e, settings))
}

/// Connects, sends, quits; reports refused recipients and errors on stderr and gives the exit code.
pub async fn send_one(
    prog: &str,
    settings: Settings,
    builder: ClientBuilder,
    envelope: Envelope,
    message: &[u8],
) -> ExitCode {
    let mut client = match builder.connect().await {
        Ok(c) => c,
        Err(e) => return fail(prog, settings, &e),
    };
    let outcome = match client.send(&envelope, Message::from_bytes(message)).await {
        Ok(o) => o,
        Err(e) => return fail(prog, settings, &e),
    };
    let code = report_outcome(prog, &outcome);
    // The message is settled; a server that fumbles QUIT changes nothing for it.
    if let Err(e) = client.quit().await {
        eprintln!("{prog}: after sending: {e}");
    }
    code
}

/// The loud warning for a session whose certificate is not checked.
pub fn warn_insecure(prog: &str) {
    eprintln!(
        "{prog}: WARNING: TLS certificate verification is OFF (insecure): the connection is encrypted, but to \
         whoever answers; anyone on the path can read and change it, password included"
    );
}

/// Reports refused recipients on stderr and picks the exit code: 0 when all have the message, 69 when a
/// refusal was permanent, 75 when every refusal was temporary.
pub fn report_outcome(prog: &str, outcome: &Outcome) -> ExitCode {
    // A refused MAIL FROM is the sender's problem: the recipients were never tried (or were answered
    // only to a transaction that did not exist), so they are not named as refused.
    if !outcome.mail.is_positive() {
        eprintln!("{prog}: sender refused (MAIL FROM): {}", outcome.mail);
        let code = if outcome.mail.is_transient() { EX_TEMPFAIL } else { EX_UNAVAILABLE };
        return ExitCode::from(code);
    }
    let mut permanent = false;
    let mut refused = 0;
    for r in outcome.refused() {
        let reply = r.result.as_ref().unwrap_err();
        refused += 1;
        permanent |= reply.is_permanent() || !reply.is_transient();
        eprintln!("{prog}: recipient {} refused: {reply}", r.recipient);
    }
    if refused == 0 {
        return ExitCode::SUCCESS;
    }
    let accepted = outcome.accepted().count();
    if accepted > 0 {
        eprintln!("{prog}: delivered to {accepted} of {} recipients", accepted + refused);
    } else {
        eprintln!("{prog}: no recipient accepted the message");
    }
    ExitCode::from(if permanent { EX_UNAVAILABLE } else { EX_TEMPFAIL })
}

/// A single-threaded runtime: a send is one connection, and stdin is read in between.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

/// A content type from the file name's extension; `application/octet-stream` when unknown.
pub fn guess_content_type(path: &Path) -> &'static str {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "txt" | "text" | "log" | "md" => "text/plain",
        "csv" => "text/csv",
        "htm" | "html" => "text/html",
        "css" => "text/css",
        "xml" => "application/xml",
        "json" => "application/json",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" | "tgz" => "application/gzip",
        "tar" => "application/x-tar",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "webp" => "image/webp",
        "ics" => "text/calendar",
        "eml" => "message/rfc822",
        "mp3" => "audio/mpeg",
        "mp4" => "video/mp4",
        "doc" => "application/msword",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "odt" => "application/vnd.oasis.opendocument.text",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        for bad in ["", "s", "10x", "-1s", "0s", "1e400"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mailboxes() {
        let (n, a) = parse_mailbox("Alice Example <alice@example.org>").unwrap();
        assert_eq!((n.as_deref(), a.to_string().as_str()), (Some("Alice Example"), "alice@example.org"));
        let (n, a) = parse_mailbox("<b@x>").unwrap();
        assert_eq!((n, a.to_string()), (None, "b@x".into()));
        assert!(parse_mailbox("nobody").is_err());
        assert_eq!(split_list("a@x, \"B, b\" <b@y>,c@z"), vec!["a@x", "\"B, b\" <b@y>", "c@z"]);
    }

    #[test]
    fn exit_codes_follow_the_kind_of_error() {
        use std::io;
        let refused = Error::Connect { server: "s".into(), source: io::Error::from(io::ErrorKind::ConnectionRefused) };
        let cert = Error::Certificate { server: "s".into(), reason: "r".into() };
        let plain = Error::PlaintextAuth { server: "s".into(), reason: "r" };
        let bad_ca = Error::TlsConfig("CA file".into());
        for settings in [Settings::Flags, Settings::ConfigFile] {
            assert_eq!(exit_for_error(&refused, settings), EX_TEMPFAIL);
            assert_eq!(exit_for_error(&cert, settings), EX_UNAVAILABLE);
            assert_eq!(exit_for_error(&Error::AuthNotOffered("s".into()), settings), EX_UNAVAILABLE);
            assert_eq!(exit_for_error(&bad_ca, settings), EX_CONFIG);
            assert_eq!(exit_for_error(&Error::Password("failed".into()), settings), EX_CONFIG);
        }
        assert_eq!(exit_for_error(&plain, Settings::Flags), EX_USAGE);
        assert_eq!(exit_for_error(&plain, Settings::ConfigFile), EX_CONFIG);
        assert_eq!(exit_for_error(&Error::BadServer("x".into()), Settings::ConfigFile), EX_CONFIG);
    }

    #[test]
    fn content_types() {
        assert_eq!(guess_content_type(Path::new("a/b.PDF")), "application/pdf");
        assert_eq!(guess_content_type(Path::new("noext")), "application/octet-stream");
    }
}
