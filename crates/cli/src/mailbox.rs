//! `mailroom mailbox list|show`: read what was delivered.

use std::io::Write;

use mailroom_store::Store;

use crate::user::DataDirArgs;

#[derive(Debug, clap::Subcommand)]
pub enum MailboxCommand {
    /// List the messages of a mailbox: id, date, from, subject, size.
    List { address: String },
    /// Print one message as stored.
    Show { address: String, id: String },
}

pub fn run(cmd: MailboxCommand, dirs: DataDirArgs) -> anyhow::Result<()> {
    let data_dir = dirs.resolve()?;
    if !data_dir.is_dir() {
        anyhow::bail!("no data directory at {}", data_dir.display());
    }
    let store = Store::open(&data_dir)?;
    match cmd {
        MailboxCommand::List { address } => {
            let mbox = store.mailbox(&address)?;
            let list = mbox.list()?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{:<40}  {:<31}  {:<30}  {:>9}  SUBJECT", "ID", "DATE", "FROM", "SIZE")?;
            for m in &list {
                writeln!(
                    out,
                    "{:<40}  {:<31}  {:<30}  {:>9}  {}",
                    m.id,
                    clean(m.date.as_deref()),
                    clean(m.from.as_deref()),
                    m.size,
                    clean(m.subject.as_deref())
                )?;
            }
            writeln!(out, "{} message(s)", list.len())?;
        }
        MailboxCommand::Show { address, id } => {
            let bytes = store.mailbox(&address)?.get(&id)?;
            std::io::stdout().lock().write_all(&bytes)?;
        }
    }
    Ok(())
}

/// Header values shown on a terminal: control characters (escape sequences) replaced.
fn clean(s: Option<&str>) -> String {
    s.unwrap_or("-").chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}
