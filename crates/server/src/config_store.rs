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
use serde::{Deserialize, Serialize};

/// `[store]`: how the data directory is shared.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
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
/// Takes `[server] user`, `[server] group` and `[store]`; the message names the key.
pub fn validate(user: Option<&str>, group: Option<&str>, store: &StoreSection) -> Result<(), String> {
    if group.is_some() && user.is_none() {
        return Err("server.group is set without server.user".into());
    }
    run_as(user, group)?;
    modes(store)?;
    Ok(())
}

/// `[server] user`/`group` resolved; None when no user is set.
pub fn run_as(user: Option<&str>, group: Option<&str>) -> Result<Option<RunAs>, String> {
    let Some(name) = user else { return Ok(None) };
    let user = match User::from_name(name) {
        Ok(Some(u)) => u,
        Ok(None) => return Err(format!("server.user: no user {name:?} on this system")),
        Err(e) => return Err(format!("server.user: cannot look up {name:?}: {e}")),
    };
    let gid = match group {
        Some(g) => group_id("server.group", g)?,
        None => user.gid.as_raw(),
    };
    Ok(Some(RunAs { user: user.name, uid: user.uid.as_raw(), gid }))
}

/// The store's file modes from `[store] group`.
pub fn modes(store: &StoreSection) -> Result<Modes, String> {
    Ok(match &store.group {
        Some(g) => Modes::shared(group_id("store.group", g)?),
        None => Modes::private(),
    })
}

/// A group's id by name (a number is taken as a gid only if it names no group, as chgrp does).
fn group_id(key: &str, name: &str) -> Result<u32, String> {
    match Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => name.parse::<u32>().map_err(|_| format!("{key}: no group {name:?} on this system")),
        Err(e) => Err(format!("{key}: cannot look up {name:?}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_resolves_and_unknown_names_are_refused() {
        assert_eq!(run_as(Some("root"), None).unwrap(), Some(RunAs { user: "root".into(), uid: 0, gid: 0 }));
        let e = validate(Some("no-such-user-mailroom-test"), None, &StoreSection::default()).unwrap_err();
        assert!(e.contains("server.user") && e.contains("no-such-user-mailroom-test"), "{e}");
        let store = StoreSection { group: Some("no-such-group-mailroom-test".into()) };
        assert!(validate(None, None, &store).unwrap_err().contains("store.group"));
        let store = StoreSection { group: Some("root".into()) };
        assert_eq!(modes(&store).unwrap(), Modes::shared(0));
    }

    #[test]
    fn group_without_user_is_refused() {
        assert!(validate(None, Some("root"), &StoreSection::default()).unwrap_err().contains("server.group"));
    }
}
