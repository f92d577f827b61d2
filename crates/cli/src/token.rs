//! `mailroom token create|list|revoke`: bearer tokens for the web API, kept hashed in
//! `<data-dir>/api-tokens.toml` (see `mailroom_web::tokens`). A running server sees changes at the next
//! request.

use mailroom_web::tokens::TokenFile;

use crate::user::DataDirArgs;

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Make a token that acts as ADDRESS (an existing user); it is printed once and not stored.
    Create {
        /// The user the token acts as.
        address: String,
    },
    /// List the tokens (ids and owners, never the tokens).
    List,
    /// Revoke the token with this id.
    Revoke {
        /// The token's id, as `token create` and `token list` show it.
        id: String,
    },
}

pub fn run(cmd: TokenCommand, dirs: DataDirArgs) -> anyhow::Result<()> {
    let data_dir = dirs.resolve()?;
    if !data_dir.is_dir() {
        anyhow::bail!("no data directory at {}", data_dir.display());
    }
    let tokens = TokenFile::new(&data_dir);
    match cmd {
        TokenCommand::Create { address } => {
            let users = mailroom_store::UserDirectory::new(&data_dir).load()?;
            let user = users.get(&address).ok_or_else(|| anyhow::anyhow!("no such user: {address}"))?;
            let (entry, token) = tokens.create(&user.address)?;
            eprintln!("token {} for {} (shown once; keep it secret):", entry.id, entry.address);
            println!("{token}");
        }
        TokenCommand::List => {
            for t in tokens.list()? {
                println!("{}  {}  created {}", t.id, t.address, t.created);
            }
        }
        TokenCommand::Revoke { id } => {
            if !tokens.revoke(&id)? {
                anyhow::bail!("no token with id {id}");
            }
            println!("revoked {id}");
        }
    }
    Ok(())
}
