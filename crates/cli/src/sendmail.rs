//! `mailroom sendmail`: a drop-in for /usr/sbin/sendmail.

use std::ffi::OsString;
use std::process::ExitCode;

/// Runs with the arguments after `sendmail` (sendmail's own flag syntax, parsed by hand).
pub fn main(_args: Vec<OsString>) -> ExitCode {
    eprintln!("mailroom sendmail: not built yet");
    ExitCode::from(70)
}
