//! The `mailroom` binary: serve, send, sendmail, user, mailbox, check-config.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod send;
mod sendmail;

#[derive(Debug, Parser)]
#[command(name = "mailroom", version, about = "Receive, store, relay and send mail")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    let invoked_as_sendmail = argv
        .first()
        .and_then(|a| std::path::Path::new(a).file_name().map(|n| n == "sendmail"))
        .unwrap_or(false);
    if invoked_as_sendmail {
        return sendmail::main(argv.split_off(1));
    }
    if argv.get(1).is_some_and(|a| a == "sendmail") {
        return sendmail::main(argv.split_off(2));
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Send(args) => send::run(args),
        Command::Sendmail { args } => sendmail::main(args),
    }
}
