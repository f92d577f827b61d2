//! `mailroom send --interactive`: the classroom client done well. It asks for the server, the HELO name,
//! the sender, the recipients (one per line, an empty line ends the list), the subject and the body (ended
//! by a line holding a single `.`), shows every server reply as it comes, and lets the person try a refused
//! step again. Values given as flags are not asked for. It reads stdin line by line, so a script can pipe
//! the answers in; the end of input gives up cleanly. The TLS flags apply as in a plain `send`; with
//! `--user U --password-stdin` the first line of input is the password, never echoed.
//!
//! Without TLS flags it copes with a submission port by asking: a server that offers STARTTLS is offered
//! to the person (and the session starts again over TLS), a certificate that does not verify asks for a
//! CA file to trust, and a server that requires AUTH (530 to MAIL) asks for a user and a password.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use mailroom_client::{default_helo_name, Client, Error, Message, MessageInfo, Secret, Tls};
use mailroom_proto::client::{Error as ProtoError, Step};
use mailroom_proto::{Address, ForwardPath, ReversePath};

use super::args::SendArgs;
use super::draft::Draft;
use super::util::*;

const PROG: &str = "mailroom send";

struct Prompter {
    lines: std::io::Lines<std::io::StdinLock<'static>>,
    echo: bool,
}

impl Prompter {
    fn new() -> Prompter {
        let stdin = std::io::stdin();
        // A script's answers do not appear on the screen by themselves: echo them so the output reads well.
        let echo = !stdin.is_terminal();
        Prompter { lines: stdin.lock().lines(), echo }
    }

    /// Shows `question` and reads one line (`None` at the end of input).
    fn ask(&mut self, question: &str) -> Option<String> {
        print!("{question}");
        let _ = std::io::stdout().flush();
        let line = match self.lines.next() {
            Some(Ok(l)) => l.trim_end_matches('\r').to_string(),
            _ => {
                println!();
                return None;
            }
        };
        if self.echo {
            println!("{line}");
        }
        Some(line)
    }

    /// Reads one line that is never echoed (the password).
    fn ask_secret(&mut self, question: &str) -> Option<String> {
        print!("{question}");
        let _ = std::io::stdout().flush();
        let line = match self.lines.next() {
            Some(Ok(l)) => l.trim_end_matches('\r').to_string(),
            _ => {
                println!();
                return None;
            }
        };
        // A script's answer is not echoed like the others; a terminal shows what was typed by itself.
        if self.echo {
            println!("(hidden)");
        }
        Some(line)
    }

    /// Like `ask`, with a default taken on an empty answer.
    fn ask_or(&mut self, question: &str, default: &str) -> Option<String> {
        let a = self.ask(&format!("{question} [{default}]: "))?;
        let a = a.trim();
        Some(if a.is_empty() { default.to_string() } else { a.to_string() })
    }
}

fn gave_up() -> ExitCode {
    println!("End of input: nothing was sent.");
    ExitCode::from(EX_TEMPFAIL)
}

fn fail_with(e: &Error) -> ExitCode {
    eprintln!("{PROG}: {e}");
    ExitCode::from(exit_for_error(e, Settings::Flags))
}

fn looks_like_server(s: &str) -> bool {
    s.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
}

/// How a step of the session ended early.
enum End {
    /// Say QUIT, then exit with this code.
    Quit(ExitCode),
    /// The session is unusable: exit with this code at once.
    Now(ExitCode),
}

/// A mailbox with its display name.
type Mailbox = (Option<String>, Address);

pub async fn run(args: &SendArgs, timeout: Duration, tls: Tls) -> ExitCode {
    let mut p = Prompter::new();
    println!("Guided SMTP session. Replies from the server are shown as S: lines, our commands as C: lines.");
    // --password-stdin: the first line of input, before any question.
    let credentials = match &args.user {
        Some(user) => match p.ask_secret(&format!("Password for {user}: ")) {
            Some(pw) if !pw.is_empty() => Some((user.clone(), pw)),
            Some(_) => {
                eprintln!("{PROG}: empty password");
                return ExitCode::from(EX_USAGE);
            }
            None => return gave_up(),
        },
        None => None,
    };
    let mut client = match connect(&mut p, args, timeout, tls, &credentials).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    match transaction(&mut p, &mut client, args).await {
        Ok(code) | Err(End::Quit(code)) => quit_after(client, code).await,
        Err(End::Now(code)) => code,
    }
}

/// The server and the HELO name, then the connection (asked again if it fails).
async fn connect(
    p: &mut Prompter,
    args: &SendArgs,
    timeout: Duration,
    tls: Tls,
    credentials: &Option<(String, String)>,
) -> Result<Client, ExitCode> {
    let mut server = args.server.clone();
    loop {
        let srv = match server.take() {
            Some(s) => {
                println!("Server: {s}");
                s
            }
            None => p.ask_or("SMTP server (host:port)", DEFAULT_SERVER).ok_or_else(gave_up)?,
        };
        let helo = match &args.helo {
            Some(h) => h.clone(),
            None => ask_helo(p, args, &srv).ok_or_else(gave_up)?,
        };
        println!("Connecting to {srv} ...");
        match open(p, args, &srv, &helo, (timeout, tls), credentials).await {
            Ok(c) => return Ok(c),
            Err(e) => {
                println!("Could not open a session: {e}");
                if let Some(hint) = error_hint(Settings::Flags, &e) {
                    println!("{hint}");
                }
                // Asking for another server does not help with our own settings, a refused AUTH or TLS.
                let auth_refused = matches!(&e, Error::Protocol(ProtoError::Rejected { step: Step::Auth, .. }));
                let tls_failed = matches!(e, Error::Certificate { .. } | Error::StartTlsNotOffered(_));
                let bad_server = matches!(e, Error::BadServer(_));
                let another_may_help = bad_server || e.is_transient() || e.reply().is_some();
                if auth_refused || tls_failed || (e.is_local() && !bad_server) || !another_may_help {
                    return Err(fail_with(&e));
                }
                println!("Try another server, or end the input to give up.");
            }
        }
    }
}

/// One session with `srv`, TLS as the person wants it: without TLS flags, a server that offers STARTTLS
/// is offered to the person and the session starts again over TLS; a certificate that does not verify
/// (a self-signed one, a private CA) asks for a CA file to trust, unless one was given.
async fn open(
    p: &mut Prompter,
    args: &SendArgs,
    srv: &str,
    helo: &str,
    (timeout, mut tls): (Duration, Tls),
    credentials: &Option<(String, String)>,
) -> Result<Client, Error> {
    let mut cafile: Option<String> = None;
    loop {
        let mut builder =
            args.builder(srv.to_owned(), tls).timeout(timeout).helo_name(helo).transcript(stdout_transcript());
        if let Some(ca) = &cafile {
            builder = builder.cafile(ca.clone());
        }
        if let Some((user, pw)) = credentials {
            builder = builder.credentials(user.clone(), pw.clone());
        }
        let client = match builder.connect().await {
            Ok(c) => c,
            Err(e @ Error::Certificate { .. }) if cafile.is_none() && args.cafile.is_none() && !args.insecure => {
                println!("The server's certificate does not verify: {e}");
                let answer = p.ask("CA file to trust (for mailroom: <data-dir>/tls/cert.pem; empty to give up): ");
                match answer.map(|a| a.trim().to_owned()).filter(|a| !a.is_empty()) {
                    Some(path) => cafile = Some(path),
                    None => return Err(e),
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        if tls == Tls::None && !client.is_tls() && client.capabilities().starttls {
            let answer = p.ask("The server offers STARTTLS (encryption). Use it? [Y/n]: ");
            if !matches!(answer.as_deref().map(str::trim), Some("n" | "N" | "no") | None) {
                let _ = client.quit().await;
                println!("Connecting to {srv} again, with STARTTLS ...");
                tls = Tls::StartTls;
                continue;
            }
        }
        return Ok(client);
    }
}

/// AUTH after the server required it (530 to MAIL): a user (the sender by default) and a password. A
/// refused password is reported, and the sender step asks again; other errors end the session.
async fn login(p: &mut Prompter, client: &mut Client, sender: &str) -> Result<(), End> {
    println!("The server requires authentication (AUTH) before it takes mail.");
    let user = p.ask_or("User", sender).ok_or_else(|| End::Quit(gave_up()))?;
    let password = p.ask_secret(&format!("Password for {user}: ")).ok_or_else(|| End::Quit(gave_up()))?;
    match client.authenticate(&user, &Secret::new(password)).await {
        Ok(m) => {
            println!("Authenticated as {user} ({m}).");
            Ok(())
        }
        Err(Error::Protocol(ProtoError::Rejected { reply, .. })) => {
            println!("Authentication failed: {reply}");
            Ok(())
        }
        Err(e) => {
            if let Some(hint) = error_hint(Settings::Flags, &e) {
                println!("{hint}");
            }
            Err(End::Now(fail_with(&e)))
        }
    }
}

/// The HELO name, when `--helo` did not give it.
fn ask_helo(p: &mut Prompter, args: &SendArgs, server: &str) -> Option<String> {
    let default = default_helo_name();
    let answer = p.ask_or("Your host name for HELO", &default)?;
    // A script that also answers the server question (given as a flag) is one line ahead.
    if args.server.is_some() && answer == server && looks_like_server(&answer) {
        return p.ask_or("Your host name for HELO", &default);
    }
    Some(answer)
}

/// Sender, recipients, subject, body, then DATA; the exit code when the session may be quit.
async fn transaction(p: &mut Prompter, client: &mut Client, args: &SendArgs) -> Result<ExitCode, End> {
    let from = ask_sender(p, client, args).await?;
    let accepted = ask_recipients(p, client, args).await?;
    let (subject, body) = ask_content(p, args).ok_or_else(|| End::Quit(gave_up()))?;
    let draft = Draft {
        from: from.clone(),
        to: accepted.clone(),
        cc: vec![],
        subject: Some(subject),
        body,
        attachments: vec![],
    };
    let message = draft.build().map_err(|e| {
        eprintln!("{PROG}: building the message: {e}");
        End::Now(ExitCode::from(EX_SOFTWARE))
    })?;
    send_data(p, client, &from.1, &accepted, &message).await
}

/// The sender, until the server takes one.
async fn ask_sender(p: &mut Prompter, client: &mut Client, args: &SendArgs) -> Result<Mailbox, End> {
    let mut from_flag = args.from.clone();
    loop {
        let answer = match from_flag.take() {
            Some(f) => {
                println!("Sender: {f}");
                f
            }
            None => p.ask("Sender address (MAIL FROM): ").ok_or_else(|| End::Quit(gave_up()))?,
        };
        let (name, addr) = match parse_mailbox(&answer) {
            Ok(x) => x,
            Err(e) => {
                println!("{e}; try again.");
                continue;
            }
        };
        match client.mail(&ReversePath::Mailbox(addr.clone()), &MessageInfo::unknown(None)).await {
            Ok(r) if r.is_positive() => return Ok((name, addr)),
            // 530 5.7.0: authentication required (RFC 4954 §6); then the same sender again.
            Ok(r) if r.code == 530 && client.authenticated().is_none() => {
                login(p, client, &addr.to_string()).await?;
                from_flag = Some(answer);
            }
            Ok(_) => println!("The server refused this sender; enter another."),
            Err(e) => return Err(End::Now(fail_with(&e))),
        }
    }
}

/// The recipients, one per line; refused ones are reported and others may follow.
async fn ask_recipients(p: &mut Prompter, client: &mut Client, args: &SendArgs) -> Result<Vec<Mailbox>, End> {
    let mut accepted: Vec<Mailbox> = Vec::new();
    let mut flagged: Vec<String> = args.to.iter().flat_map(|s| split_list(s)).collect();
    flagged.reverse();
    let from_flags = !flagged.is_empty();
    if !from_flags {
        println!("Recipients (RCPT TO), one per line; an empty line ends the list.");
    }
    loop {
        let answer = match flagged.pop() {
            Some(t) => {
                println!("Recipient: {t}");
                t
            }
            None if from_flags && !accepted.is_empty() => return Ok(accepted),
            None => match p.ask("Recipient: ") {
                Some(a) => a,
                None if !accepted.is_empty() => return Ok(accepted),
                None => return Err(End::Quit(gave_up())),
            },
        };
        if answer.trim().is_empty() {
            if accepted.is_empty() {
                println!("No recipient has been accepted yet; enter one (end the input to give up).");
                continue;
            }
            return Ok(accepted);
        }
        let rcpt = match parse_mailbox(&answer) {
            Ok(x) => x,
            Err(e) => {
                println!("{e}; try again.");
                continue;
            }
        };
        match client.rcpt(&ForwardPath::Mailbox(rcpt.1.clone())).await {
            Ok(r) if r.is_positive() => accepted.push(rcpt),
            Ok(_) => println!("The server refused this recipient; enter another, or an empty line to go on."),
            Err(e) => return Err(End::Now(fail_with(&e))),
        }
    }
}

/// Subject and body (the body ends at a line holding a single `.`, or at the end of input).
fn ask_content(p: &mut Prompter, args: &SendArgs) -> Option<(String, String)> {
    let subject = match &args.subject {
        Some(s) => s.clone(),
        None => p.ask("Subject: ")?,
    };
    if let Some(b) = &args.body {
        return Some((subject, b.clone()));
    }
    println!("Message body; end it with a line holding a single \".\".");
    let mut body = String::new();
    while let Some(l) = p.ask("") {
        if l == "." {
            break;
        }
        body.push_str(&l);
        body.push('\n');
    }
    Some((subject, body))
}

/// DATA, with a retry when the server refuses it for now.
async fn send_data(
    p: &mut Prompter,
    client: &mut Client,
    from: &Address,
    accepted: &[Mailbox],
    message: &[u8],
) -> Result<ExitCode, End> {
    loop {
        match client.data(Message::from_bytes(message)).await {
            Ok(r) if r.is_positive() => {
                println!("Message accepted for {} recipient(s).", accepted.len());
                return Ok(ExitCode::SUCCESS);
            }
            Ok(r) => {
                println!("The server refused the message: {r}");
                let again = r.is_transient()
                    && matches!(p.ask("Try again? [y/N]: ").as_deref().map(str::trim), Some("y" | "Y" | "yes"));
                if !again {
                    return Ok(ExitCode::from(if r.is_transient() { EX_TEMPFAIL } else { EX_UNAVAILABLE }));
                }
                // A refused DATA leaves the transaction open on most servers; start it again to be sure.
                if let Err(e) = retry_transaction(client, from, accepted).await {
                    return Err(End::Now(fail_with(&e)));
                }
            }
            Err(e) => return Err(End::Now(fail_with(&e))),
        }
    }
}

async fn retry_transaction(client: &mut Client, from: &Address, to: &[Mailbox]) -> Result<(), Error> {
    client.rset().await?;
    client.mail(&ReversePath::Mailbox(from.clone()), &MessageInfo::unknown(None)).await?;
    for (_, a) in to {
        client.rcpt(&ForwardPath::Mailbox(a.clone())).await?;
    }
    Ok(())
}

async fn quit_after(client: Client, code: ExitCode) -> ExitCode {
    if let Err(e) = client.quit().await {
        eprintln!("{PROG}: {e}");
    }
    code
}
