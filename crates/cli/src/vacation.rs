//! `mailroom vacation set|off|show`: a user's vacation auto-reply (RFC 3834), kept in
//! `<data-dir>/vacation/`; a running server picks changes up within a second.

use std::path::PathBuf;

use mailroom_store::vacation::{Vacation, VacationDirectory, MAX_BODY};
use mailroom_store::UserDirectory;

use crate::user::DataDirArgs;

#[derive(Debug, clap::Subcommand)]
pub enum VacationCommand {
    /// Turn the auto-reply on (or replace it) for ADDRESS, a user of this server.
    Set {
        /// The user's mail address.
        address: String,
        /// The reply's subject.
        #[arg(long)]
        subject: String,
        /// The reply's text (UTF-8; "-" for stdin).
        #[arg(long, value_name = "FILE")]
        body_file: PathBuf,
        /// The last day replies are sent (YYYY-MM-DD, UTC).
        #[arg(long, value_name = "DATE")]
        until: Option<String>,
    },
    /// Turn the auto-reply off (and forget who was answered).
    Off {
        /// The user's mail address.
        address: String,
    },
    /// Show the auto-reply of ADDRESS.
    Show {
        /// The user's mail address.
        address: String,
    },
}

pub fn run(cmd: VacationCommand, dirs: DataDirArgs) -> anyhow::Result<()> {
    // Read as the caller, before the data directory's owner is taken on.
    let body = match &cmd {
        VacationCommand::Set { body_file, .. } => Some(read_body(body_file)?),
        _ => None,
    };
    let data_dir = dirs.resolve()?;
    let vacations = VacationDirectory::new(&data_dir);
    match cmd {
        VacationCommand::Set { address, subject, body_file: _, until } => {
            if UserDirectory::new(&data_dir).load()?.get(&address).is_none() {
                anyhow::bail!("no such user: {address}");
            }
            let body = body.unwrap_or_default();
            let v = Vacation { subject, body, until };
            v.validate().map_err(|e| anyhow::anyhow!(e))?;
            vacations.set(&address, &v)?;
            match &v.until {
                Some(day) => println!("vacation reply on for {address} until {day}"),
                None => println!("vacation reply on for {address}"),
            }
        }
        VacationCommand::Off { address } => {
            if vacations.remove(&address)? {
                println!("vacation reply off for {address}");
            } else {
                println!("{address} had no vacation reply");
            }
        }
        VacationCommand::Show { address } => match vacations.get(&address)? {
            Some(v) => {
                println!("subject: {}", v.subject);
                println!("until: {}", v.until.as_deref().unwrap_or("(until turned off)"));
                print!("\n{}", v.body);
            }
            None => println!("{address} has no vacation reply"),
        },
    }
    Ok(())
}

fn read_body(path: &PathBuf) -> anyhow::Result<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    let limit = MAX_BODY as u64 + 1;
    if path.as_os_str() == "-" {
        std::io::stdin().lock().take(limit).read_to_end(&mut bytes)?;
    } else {
        std::fs::File::open(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            .take(limit)
            .read_to_end(&mut bytes)?;
    }
    String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{}: the body is not UTF-8", path.display()))
}
