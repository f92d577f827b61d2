//! `mailroom user add|list|remove`: the user directory in the data dir. A running server picks changes
//! up within seconds.

use std::path::PathBuf;

use mailroom_store::UserDirectory;

#[derive(Debug, clap::Args)]
pub struct DataDirArgs {
    /// Config file, for its [server] data_dir.
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Data directory [default: ./mailroom-data].
    #[arg(long, value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,
}

impl DataDirArgs {
    pub fn resolve(&self) -> anyhow::Result<PathBuf> {
        Ok(crate::serve::load_config(self.config.as_ref(), self.data_dir.as_ref())?.server.data_dir)
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Add a user (and so a mailbox) for ADDRESS.
    Add {
        address: String,
        /// Read a password from stdin (the first line), for AUTH on the submission ports.
        #[arg(long)]
        password_stdin: bool,
        /// Make the user an admin of the web interface and API (queue, users, status; not others' mail).
        #[arg(long)]
        admin: bool,
    },
    /// Set or change a user's password (read from stdin; asked for when stdin is a terminal).
    Passwd { address: String },
    /// List the users.
    List,
    /// Remove a user; its mailbox and mail stay on disk.
    Remove { address: String },
    /// Set a user's quota: SIZE in octets or with K/M/G (100M, 1G); 0 is no limit.
    Quota {
        address: String,
        size: String,
        /// The most messages the mailbox may hold (0: no limit).
        #[arg(long, value_name = "N", default_value_t = 0)]
        messages: u64,
    },
    /// Grant (on) or take away (off) a user's admin rights in the web interface and API.
    Admin { address: String, state: OnOff },
}

/// `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

pub fn run(cmd: UserCommand, dirs: DataDirArgs) -> anyhow::Result<()> {
    let data_dir = dirs.resolve()?;
    // Fsynced into its parent: the data directory must survive a power cut like everything in it.
    mailroom_store::fsync::create_dir_all_synced(&data_dir)?;
    let dir = UserDirectory::new(&data_dir);
    match cmd {
        UserCommand::Add { address, password_stdin, admin } => {
            let hash = if password_stdin { Some(hash(&read_password()?)?) } else { None };
            let u = dir.add(&address, hash)?;
            if admin {
                dir.set_admin(&u.address, true)?;
            }
            println!("added {}{}", u.address, if admin { " (admin)" } else { "" });
        }
        UserCommand::Admin { address, state } => {
            dir.set_admin(&address, state == OnOff::On)?;
            println!("{address}: admin {}", if state == OnOff::On { "on" } else { "off" });
        }
        UserCommand::List => crate::quota::list(&data_dir, &dir)?,
        UserCommand::Quota { address, size, messages } => crate::quota::set(&dir, &address, &size, messages)?,
        UserCommand::Passwd { address } => {
            let h = hash(&read_password()?)?;
            dir.set_password(&address, Some(h))?;
            println!("password set for {address}");
        }
        UserCommand::Remove { address } => {
            dir.remove(&address)?;
            println!("removed {address} (its mailbox stays on disk)");
        }
    }
    Ok(())
}

/// The first line of stdin, without its line ending. Prompts when stdin is a terminal (the password is
/// echoed there: use a pipe or `read -s` for anything but a test box).
fn read_password() -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal};
    if std::io::stdin().is_terminal() {
        eprint!("password: ");
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let pw = line.trim_end_matches(['\r', '\n']).to_owned();
    if pw.is_empty() {
        anyhow::bail!("empty password");
    }
    Ok(pw)
}

fn hash(password: &str) -> anyhow::Result<String> {
    mailroom_store::password::hash_password(password).map_err(|e| anyhow::anyhow!("hashing the password: {e}"))
}
