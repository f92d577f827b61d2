//! The `mailroom` binary: serve, send, sendmail, user, mailbox, queue (and `mailq`), check-config.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod mailbox;
mod queue;
mod quota;
mod send;
mod sendmail;
mod serve;
mod token;
mod user;
mod vacation;
mod web;

#[derive(Debug, Parser)]
#[command(name = "mailroom", version, about = "Receive, store, relay and send mail")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the SMTP server.
    Serve(serve::ServeArgs),
    /// Manage users (and so mailboxes).
    User {
        #[command(subcommand)]
        cmd: user::UserCommand,
        #[command(flatten)]
        dirs: user::DataDirArgs,
    },
    /// Vacation auto-replies (RFC 3834).
    Vacation {
        #[command(subcommand)]
        cmd: vacation::VacationCommand,
        #[command(flatten)]
        dirs: user::DataDirArgs,
    },
    /// Read delivered mail.
    Mailbox {
        #[command(subcommand)]
        cmd: mailbox::MailboxCommand,
        #[command(flatten)]
        dirs: user::DataDirArgs,
    },
    /// Look at and operate the outbound queue.
    Queue {
        #[command(subcommand)]
        cmd: queue::QueueCommand,
        #[command(flatten)]
        dirs: user::DataDirArgs,
    },
    /// Manage API tokens (bearer tokens for the web API).
    Token {
        #[command(subcommand)]
        cmd: token::TokenCommand,
        #[command(flatten)]
        dirs: user::DataDirArgs,
    },
    /// Validate a config file and print the settings in force.
    CheckConfig {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Load an SMTP server and measure it (like Postfix's smtp-source).
    Bench(bench::BenchArgs),
    /// Send a message through an SMTP server.
    Send(send::SendArgs),
    /// Read a message on stdin and send it, like /usr/sbin/sendmail.
    Sendmail {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

fn main() -> ExitCode {
    // sendmail has its own flag syntax (-oi, -f addr, -t): hand it the raw arguments, and answer to the
    // name `sendmail` too, so a symlink /usr/sbin/sendmail -> mailroom works.
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let invoked_as_sendmail =
        argv.first().and_then(|a| std::path::Path::new(a).file_name().map(|n| n == "sendmail")).unwrap_or(false);
    if invoked_as_sendmail {
        return sendmail::main(argv.split_off(1));
    }
    if argv.get(1).is_some_and(|a| a == "sendmail") {
        return sendmail::main(argv.split_off(2));
    }
    // `mailq` (a symlink to the binary) is `mailroom queue list`, with its options.
    let invoked_as_mailq =
        argv.first().and_then(|a| std::path::Path::new(a).file_name().map(|n| n == "mailq")).unwrap_or(false);
    if invoked_as_mailq {
        let rest = argv.split_off(1);
        argv = ["mailroom", "queue", "list"].iter().map(std::ffi::OsString::from).chain(rest).collect();
    }
    let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| {
        let _ = e.print();
        std::process::exit(if e.use_stderr() { 64 } else { 0 })
    }); // EX_USAGE
    let result = match cli.command {
        Command::Serve(args) => {
            // Kept until the end, so that every line is written before exit.
            let _log = init_logging();
            serve::run(args)
        }
        Command::User { cmd, dirs } => user::run(cmd, dirs),
        Command::Vacation { cmd, dirs } => vacation::run(cmd, dirs),
        Command::Mailbox { cmd, dirs } => mailbox::run(cmd, dirs),
        Command::Queue { cmd, dirs } => queue::run(cmd, dirs),
        Command::Token { cmd, dirs } => token::run(cmd, dirs),
        Command::CheckConfig { config } => check_config(config),
        Command::Send(args) => return send::run(args),
        Command::Bench(args) => return bench::run(args),
        Command::Sendmail { args } => return sendmail::main(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mailroom: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(config: Option<PathBuf>) -> anyhow::Result<()> {
    let cfg = serve::load_config(config.as_ref(), None)?;
    cfg.validate()?;
    serve::check_delivery_files(&cfg)?;
    println!("config ok");
    println!("{cfg:#?}");
    Ok(())
}

/// Logs to stderr; `RUST_LOG` (or `MAILROOM_LOG`) picks the level, `info` by default. Lines are written
/// by a background thread, so a session never waits on the terminal or the log file; it is lossless
/// (a full queue slows sessions down rather than dropping lines).
fn init_logging() -> tracing_appender::non_blocking::WorkerGuard {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("MAILROOM_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("mailroom-log")
        .finish(std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    guard
}
