//! `mailroom send`: build or read a message and send it through an SMTP server.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// Server to send through, HOST:PORT.
    #[arg(long)]
    pub server: String,
}

pub fn run(_args: SendArgs) -> ExitCode {
    eprintln!("mailroom send: not built yet");
    ExitCode::from(70)
}
