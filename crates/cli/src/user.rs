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
        Ok(
            crate::serve::load_config(self.config.as_ref(), self.data_dir.as_ref())?
                .server
                .data_dir,
        )
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Add a user (and so a mailbox) for ADDRESS.
    Add {
        address: String,
        /// Read a password from stdin (for AUTH on submission, once TLS is available).
        #[arg(long)]
        password_stdin: bool,
    },
    /// List the users.
    List,
    /// Remove a user; its mailbox and mail stay on disk.
    Remove { address: String },
}

pub fn run(cmd: UserCommand, dirs: DataDirArgs) -> anyhow::Result<()> {
    let data_dir = dirs.resolve()?;
    std::fs::create_dir_all(&data_dir)?;
    let dir = UserDirectory::new(&data_dir);
    match cmd {
        UserCommand::Add {
            address,
            password_stdin,
        } => {
            if password_stdin {
                anyhow::bail!("passwords come with the TLS and AUTH support, which is not in this version yet");
            }
            let u = dir.add(&address, None)?;
            println!("added {}", u.address);
        }
        UserCommand::List => {
            for u in dir.list()? {
                println!("{}", u.address);
            }
        }
        UserCommand::Remove { address } => {
            dir.remove(&address)?;
            println!("removed {address} (its mailbox stays on disk)");
        }
    }
    Ok(())
}
