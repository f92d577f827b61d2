//! `mailroom alias add|list|remove`: the alias directory (`<data-dir>/aliases.toml`). A running server
//! picks changes up within a second.

use mailroom_store::AliasDirectory;

use crate::user::DataDirArgs;

#[derive(Debug, clap::Subcommand)]
pub enum AliasCommand {
    /// Make ADDRESS (or `@domain`, a catch-all for unknown local parts) deliver to TARGETs: local users,
    /// other aliases, external addresses (forwarded through the queue with SRS). Adds to an existing
    /// alias.
    Add {
        /// The alias: an address of a served domain, or `@domain` for the domain's catch-all.
        address: String,
        /// Where its mail goes: local users, other aliases, external addresses.
        #[arg(required = true)]
        targets: Vec<String>,
    },
    /// List the aliases and their targets.
    List,
    /// Remove TARGETs from ADDRESS, or the whole alias when none are given.
    Remove {
        /// The alias (or `@domain`).
        address: String,
        /// The targets to take out; none: the whole alias.
        targets: Vec<String>,
    },
}

pub fn run(cmd: AliasCommand, dirs: DataDirArgs) -> anyhow::Result<()> {
    let data_dir = dirs.resolve()?;
    // Fsynced into its parent: the data directory must survive a power cut like everything in it.
    mailroom_store::fsync::create_dir_all_synced(&data_dir)?;
    let dir = AliasDirectory::new(&data_dir);
    match cmd {
        AliasCommand::Add { address, targets } => {
            let a = dir.add(&address, &targets)?;
            println!("{} -> {}", a.address, a.targets.join(", "));
        }
        AliasCommand::List => {
            for a in dir.list()? {
                println!("{} -> {}", a.address, a.targets.join(", "));
            }
        }
        AliasCommand::Remove { address, targets } => {
            dir.remove(&address, &targets)?;
            if targets.is_empty() {
                println!("removed {address}");
            } else {
                println!("removed {} from {address}", targets.join(", "));
            }
        }
    }
    Ok(())
}
