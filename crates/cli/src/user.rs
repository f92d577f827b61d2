//! `mailroom user add|list|remove|passwd`: the user directory in the data dir. A running server picks
//! changes up within seconds. Passwords shorter than [`MIN_PASSWORD_LEN`] are refused unless
//! `--allow-weak`; every command but `add` needs the data directory to exist (a typo in `--data-dir` is
//! an error, not an empty list).

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
    /// The configured data directory; as root, the process becomes its owner from here on (see
    /// [`crate::privilege::act_as_data_dir_owner`]).
    pub fn resolve(&self) -> anyhow::Result<PathBuf> {
        let dir = crate::serve::load_config(self.config.as_ref(), self.data_dir.as_ref())?.server.data_dir;
        crate::privilege::act_as_data_dir_owner(&dir)?;
        Ok(dir)
    }

    /// The data directory, which must exist: reading from one that does not is a mistake (a typo in
    /// `--data-dir`, the wrong working directory), not an empty result.
    pub fn existing(&self) -> anyhow::Result<PathBuf> {
        let dir = self.resolve()?;
        if !dir.is_dir() {
            anyhow::bail!(
                "no data directory at {} (give --data-dir DIR or --config FILE; `mailroom user add` creates it)",
                dir.display()
            );
        }
        Ok(dir)
    }
}

/// The shortest password `user add` and `user passwd` take without `--allow-weak` (NIST SP 800-63B
/// §5.1.1.2 asks for at least 8 characters).
pub const MIN_PASSWORD_LEN: usize = 8;

#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Add a user (and so a mailbox) for ADDRESS.
    Add {
        /// The user's mail address (local-part@domain).
        address: String,
        /// Read a password from stdin (the first line), for AUTH on the submission ports.
        #[arg(long)]
        password_stdin: bool,
        /// Accept a password shorter than 8 characters.
        #[arg(long)]
        allow_weak: bool,
        /// Make the user an admin of the web interface and API (queue, users, status; not others' mail).
        #[arg(long)]
        admin: bool,
    },
    /// Set or change a user's password (read from stdin; asked for when stdin is a terminal).
    Passwd {
        /// The user's mail address.
        address: String,
        /// Read the password from stdin (the first line) without a prompt.
        #[arg(long)]
        password_stdin: bool,
        /// Accept a password shorter than 8 characters.
        #[arg(long)]
        allow_weak: bool,
    },
    /// List the users.
    List,
    /// Remove a user; its mailbox and mail stay on disk.
    Remove {
        /// The user's mail address.
        address: String,
    },
    /// Set a user's quota: SIZE in octets or with K/M/G (100M, 1G); 0 is no limit.
    Quota {
        /// The user's mail address.
        address: String,
        /// The most octets the mailbox may hold: 100M, 1G, 0 for no limit.
        size: String,
        /// The most messages the mailbox may hold (0: no limit).
        #[arg(long, value_name = "N", default_value_t = 0)]
        messages: u64,
    },
    /// Grant (on) or take away (off) a user's admin rights in the web interface and API.
    Admin {
        /// The user's mail address.
        address: String,
        /// `on` or `off`.
        state: OnOff,
    },
}

/// `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

pub fn run(cmd: UserCommand, dirs: DataDirArgs) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Add { address, password_stdin, allow_weak, admin } => {
            add(&dirs, &address, password_stdin, allow_weak, admin)
        }
        UserCommand::List => {
            let data_dir = dirs.existing()?;
            crate::quota::list(&data_dir, &UserDirectory::new(&data_dir))
        }
        UserCommand::Admin { address, state } => {
            UserDirectory::new(&dirs.existing()?).set_admin(&address, state == OnOff::On)?;
            println!("{address}: admin {}", if state == OnOff::On { "on" } else { "off" });
            Ok(())
        }
        UserCommand::Quota { address, size, messages } => {
            crate::quota::set(&UserDirectory::new(&dirs.existing()?), &address, &size, messages)
        }
        UserCommand::Passwd { address, password_stdin, allow_weak } => {
            let dir = UserDirectory::new(&dirs.existing()?);
            // Known before the password is asked for (compared in the directory's canonical form).
            let target = mailroom_store::User::parse(&address, None)?.address;
            if !dir.list()?.iter().any(|u| u.address == target) {
                anyhow::bail!("no user {address}");
            }
            let h = hash(&read_password(password_stdin, allow_weak)?)?;
            dir.set_password(&address, Some(h))?;
            println!("password set for {address}");
            Ok(())
        }
        UserCommand::Remove { address } => remove(&dirs, &address),
    }
}

fn add(dirs: &DataDirArgs, address: &str, password_stdin: bool, allow_weak: bool, admin: bool) -> anyhow::Result<()> {
    let cfg = crate::serve::load_config(dirs.config.as_ref(), dirs.data_dir.as_ref())?;
    let data_dir = cfg.server.data_dir.clone();
    let hash = if password_stdin { Some(hash(&read_password(true, allow_weak)?)?) } else { None };
    crate::privilege::act_as_data_dir_owner(&data_dir)?;
    // Fsynced into its parent: the data directory must survive a power cut like everything in it.
    mailroom_store::fsync::create_dir_all_synced(&data_dir)?;
    let dir = UserDirectory::new(&data_dir);
    let u = dir.add(address, hash)?;
    if admin {
        dir.set_admin(&u.address, true)?;
    }
    println!("added {}{}", u.address, if admin { " (admin)" } else { "" });
    let domain = u.mailbox().domain().to_owned();
    let served = cfg.domains();
    if !served.iter().any(|d| mailroom_store::users::validate_domain(d).is_ok_and(|d| d == domain)) {
        let source = match &dirs.config {
            Some(path) => format!("server.domains of {}", path.display()),
            None => "the default domains (no --config)".to_owned(),
        };
        eprintln!(
            "mailroom: warning: {domain} is not served ({source}: {}): mail to {} is refused until the server \
             serves it (`serve --domain {domain}` or domains in [server])",
            served.join(", "),
            u.address
        );
    }
    Ok(())
}

/// Removes the user and says what became of its mailbox (kept, with how many messages, or none).
fn remove(dirs: &DataDirArgs, address: &str) -> anyhow::Result<()> {
    let data_dir = dirs.existing()?;
    UserDirectory::new(&data_dir).remove(address)?;
    let mailbox = mailroom_store::Store::open(&data_dir).ok().and_then(|s| s.mailbox(address).ok());
    match mailbox.filter(|m| m.path().is_dir()) {
        Some(m) => {
            let n = m.list().map(|l| l.len()).unwrap_or(0);
            println!(
                "removed user {address}; its mailbox {} is kept ({n} message(s)); delete that directory to drop the mail",
                m.path().display()
            );
        }
        None => println!("removed user {address}; it had no mailbox on disk"),
    }
    Ok(())
}

/// The first line of stdin, without its line ending, at least [`MIN_PASSWORD_LEN`] characters unless
/// `allow_weak`. Prompts when stdin is a terminal and `--password-stdin` was not given (the password is
/// echoed there: use a pipe or `read -s` for anything but a test box).
fn read_password(from_stdin: bool, allow_weak: bool) -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal};
    if !from_stdin && std::io::stdin().is_terminal() {
        eprint!("password: ");
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let pw = line.trim_end_matches(['\r', '\n']).to_owned();
    if pw.is_empty() {
        anyhow::bail!("empty password");
    }
    if pw.chars().count() < MIN_PASSWORD_LEN && !allow_weak {
        anyhow::bail!("the password is shorter than {MIN_PASSWORD_LEN} characters (--allow-weak takes it anyway)");
    }
    Ok(pw)
}

fn hash(password: &str) -> anyhow::Result<String> {
    mailroom_store::password::hash_password(password).map_err(|e| anyhow::anyhow!("hashing the password: {e}"))
}
