//! `[store]` (the file modes of the data directory) and `[server] user`/`group` (the privilege drop):
//! the config keys, their checks, and resolving the names against the system's user database.
//!
//! ```toml
//! [server]
//! user = "mailroom"     # started as root: bind, read the TLS key, then run as this user
//! group = "mailroom"    # default: the user's primary group
//!
//! [store]
//! group = "mail"        # mailboxes 2750/0640 with this group (an IMAP server in it reads them)
//! ```

use mailroom_store::Modes;
use nix::unistd::{Group, User};
use serde::Deserialize;

use crate::config::{Config, ConfigError};

/// `[store]`: how the data directory is shared.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// Group that may read the mailboxes (directories 2750, messages 0640); unset: everything private
    /// (directories 0700, files 0600).
    pub group: Option<String>,
}

/// The user and group `[server] user`/`group` name, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
}

/// Checks that the users and groups named exist (so `check-config` says so, not the start-up as root).
pub fn validate(cfg: &Config) -> Result<(), ConfigError> {
    run_as(cfg)?;
    modes(cfg)?;
    if cfg.server.group.is_some() && cfg.server.user.is_none() {
        return Err(ConfigError::Invalid("server.group is set without server.user".into()));
    }
    Ok(())
}

/// `[server] user`/`group` resolved; None when no user is set.
pub fn run_as(cfg: &Config) -> Result<Option<RunAs>, ConfigError> {
    let Some(name) = &cfg.server.user else { return Ok(None) };
    let user = match User::from_name(name) {
        Ok(Some(u)) => u,
        Ok(None) => return Err(ConfigError::Invalid(format!("server.user: no user {name:?} on this system"))),
        Err(e) => return Err(ConfigError::Invalid(format!("server.user: cannot look up {name:?}: {e}"))),
    };
    let gid = match &cfg.server.group {
        Some(g) => group_id("server.group", g)?,
        None => user.gid.as_raw(),
    };
    Ok(Some(RunAs { user: user.name, uid: user.uid.as_raw(), gid }))
}

/// The store's file modes from `[store] group`.
pub fn modes(cfg: &Config) -> Result<Modes, ConfigError> {
    Ok(match &cfg.store.group {
        Some(g) => Modes::shared(group_id("store.group", g)?),
        None => Modes::private(),
    })
}

/// A group's id by name (a number is taken as a gid only if it names no group, as chgrp does).
fn group_id(key: &str, name: &str) -> Result<u32, ConfigError> {
    match Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => {
            name.parse::<u32>().map_err(|_| ConfigError::Invalid(format!("{key}: no group {name:?} on this system")))
        }
        Err(e) => Err(ConfigError::Invalid(format!("{key}: cannot look up {name:?}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_resolves_and_unknown_names_are_refused() {
        let mut cfg = Config::default();
        cfg.server.user = Some("root".into());
        assert_eq!(run_as(&cfg).unwrap(), Some(RunAs { user: "root".into(), uid: 0, gid: 0 }));
        cfg.server.user = Some("no-such-user-mailroom-test".into());
        let e = validate(&cfg).unwrap_err().to_string();
        assert!(e.contains("server.user") && e.contains("no-such-user-mailroom-test"), "{e}");
        cfg.server.user = None;
        cfg.store.group = Some("no-such-group-mailroom-test".into());
        assert!(validate(&cfg).unwrap_err().to_string().contains("store.group"));
        cfg.store.group = Some("root".into());
        assert_eq!(modes(&cfg).unwrap(), Modes::shared(0));
    }

    #[test]
    fn group_without_user_is_refused() {
        let mut cfg = Config::default();
        cfg.server.group = Some("root".into());
        assert!(validate(&cfg).unwrap_err().to_string().contains("server.group"));
    }
}
