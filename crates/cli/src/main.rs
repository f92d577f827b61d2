//! The `mailroom` binary: serve, send, sendmail, user, mailbox, queue (and `mailq`), dkim, check-config.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

mod alias;
mod bench;
mod check_config;
mod completions;
mod dkim;
mod logging;
mod mailbox;
mod notify;
mod privilege;
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
    /// Manage aliases, catch-alls and forwarding.
    Alias {
        #[command(subcommand)]
        cmd: alias::AliasCommand,
        #[command(flatten)]
        dirs: user::DataDirArgs,
    },
    /// Read (and delete) delivered mail.
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
    /// DKIM signing keys: make one (and print its DNS record), list them.
    Dkim {
        #[command(subcommand)]
        cmd: dkim::DkimCommand,
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
    /// Validate a config file and print the settings in force (as TOML).
    CheckConfig {
        /// Config file to check [default: none, the defaults are shown].
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Load an SMTP server and measure it (like Postfix's smtp-source).
    Bench(bench::BenchArgs),
    /// Send a message through an SMTP server.
    Send(send::SendArgs),
    /// Read a message on stdin and send it, like /usr/sbin/sendmail (`mailroom sendmail --help`).
    Sendmail {
        /// sendmail's own flags and the recipients (see `mailroom sendmail --help`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Write the man pages (one per command) into DIR; used to build the package.
    #[command(hide = true)]
    Man {
        /// Directory to write mailroom.1, mailroom-serve.1, ... into.
        dir: PathBuf,
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
            let _log = logging::init(args.log_format);
            serve::run(args)
        }
        Command::User { cmd, dirs } => user::run(cmd, dirs),
        Command::Vacation { cmd, dirs } => vacation::run(cmd, dirs),
        Command::Alias { cmd, dirs } => alias::run(cmd, dirs),
        Command::Mailbox { cmd, dirs } => mailbox::run(cmd, dirs),
        Command::Queue { cmd, dirs } => queue::run(cmd, dirs),
        Command::Dkim { cmd, dirs } => dkim::run(cmd, dirs),
        Command::Token { cmd, dirs } => token::run(cmd, dirs),
        Command::CheckConfig { config } => check_config::run(config),
        Command::Send(args) => return send::run(args),
        Command::Bench(args) => return bench::run(args),
        Command::Sendmail { args } => return sendmail::main(args),
        Command::Completions { shell } => completions::run_completions(shell, Cli::command()),
        Command::Man { dir } => completions::run_man(&dir, Cli::command()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mailroom: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every subcommand says what it does and every argument has a description, all the way down
    /// (`--help` and `--version`, which clap writes itself, aside).
    #[test]
    fn every_subcommand_and_argument_has_help_text() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} <{id}>"));
                }
            }
            for sub in cmd.get_subcommands() {
                let sub_path = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() && sub.get_long_about().is_none() && sub.get_name() != "help" {
                    missing.push(sub_path.clone());
                }
                walk(sub, &sub_path, missing);
            }
        }
        let cmd = super::Cli::command();
        cmd.clone().debug_assert();
        let mut missing = Vec::new();
        walk(&cmd, "mailroom", &mut missing);
        assert!(missing.is_empty(), "without help text:\n{}", missing.join("\n"));
    }
}
