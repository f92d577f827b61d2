//! File modes and group of what the store creates: private (directories 0700, files 0600) by default;
//! with a store group (`[store] group`), mailboxes are shared read-only with that group (directories
//! 2750, message files 0640), so that an IMAP server such as Dovecot running as another user in the
//! group can read them.
//!
//! How the group reaches every new file without the server being a member of it (a server that dropped
//! root has no supplementary groups): the shared directories and `<data-dir>/tmp/` carry the group and
//! the set-group-ID bit, so the kernel gives every entry created in them that group (and every
//! directory created in them the bit). `<data-dir>/tmp/` stays 2700: the group gets the files' group,
//! not a look at messages being received. Setting a directory's group needs root or membership;
//! [`Modes::apply_at_open`] does it when the store opens (as root before a privilege drop, or as a
//! member of the group).
//!
//! Shared with the group: the data directory and `mailboxes/` (g+x only: enter, not list), each domain
//! directory (g+x) and each mailbox with its Maildir subdirectories and folders (g+rx). Never shared:
//! `tmp/`, `intent/`, `queue/`, `tls/`, `users.toml` (password hashes).

use std::fs::{self, DirBuilder, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

/// Mode of a private directory.
pub const PRIVATE_DIR: u32 = 0o700;
/// Mode of a private file.
pub const PRIVATE_FILE: u32 = 0o600;
/// Set-group-ID on a directory: entries created in it get its group.
const SETGID: u32 = 0o2000;

/// Which directories a store path is, for its mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirKind {
    /// Never shared (tmp/ aside, see [`DirKind::Staging`]): intent/, queue/, tls/.
    Private,
    /// Entered by the group, not listed: the data directory, `mailboxes/`, the domain directories.
    Traverse,
    /// Read by the group: a mailbox, its tmp/new/cur and its folders.
    Mailbox,
    /// `<data-dir>/tmp/`: carries the group (for the files received there) but stays closed to it.
    Staging,
}

/// The store's file-mode setting, given when it opens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Modes {
    /// The group mailboxes are shared with (a gid); None: everything private.
    pub group: Option<u32>,
}

impl Modes {
    /// Everything private (0700/0600).
    pub fn private() -> Modes {
        Modes { group: None }
    }

    /// Mailboxes shared read-only with group `gid`.
    pub fn shared(gid: u32) -> Modes {
        Modes { group: Some(gid) }
    }

    /// The mode a directory of `kind` gets (permission bits and set-group-ID).
    pub fn dir_mode(&self, kind: DirKind) -> u32 {
        if self.group.is_none() {
            return PRIVATE_DIR;
        }
        match kind {
            DirKind::Private => PRIVATE_DIR,
            DirKind::Traverse => 0o710 | SETGID,
            DirKind::Mailbox => 0o750 | SETGID,
            DirKind::Staging => PRIVATE_DIR | SETGID,
        }
    }

    /// The mode of a message file (created in `<data-dir>/tmp/` and linked into mailboxes).
    pub fn message_mode(&self) -> u32 {
        if self.group.is_some() {
            0o640
        } else {
            PRIVATE_FILE
        }
    }

    /// Creates directory `dir` (its parent exists) with the mode of `kind`, or leaves an existing one
    /// as it is. Returns whether it was created. The mode is set explicitly after mkdir, so a umask
    /// cannot take the group's bits away.
    pub fn create_dir(&self, dir: &Path, kind: DirKind) -> io::Result<bool> {
        match DirBuilder::new().mode(self.dir_mode(kind) & 0o777).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(e),
        }
        if self.group.is_some() {
            self.set_dir(dir, kind)?;
        }
        Ok(true)
    }

    /// Gives an existing directory the group (when shared) and mode of `kind`. Changes nothing that is
    /// already right, so a server that is not the owner of an already-right directory is fine.
    pub fn set_dir(&self, dir: &Path, kind: DirKind) -> io::Result<()> {
        let meta = fs::metadata(dir)?;
        let want_group = self.group.filter(|_| kind != DirKind::Private);
        if let Some(gid) = want_group {
            if meta.gid() != gid {
                std::os::unix::fs::chown(dir, None, Some(gid)).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot give {} the store group (gid {gid}; the server's user must be root or in that group): {e}", dir.display()),
                    )
                })?;
            }
        }
        let want = self.dir_mode(kind);
        if meta.mode() & 0o7777 != want {
            fs::set_permissions(dir, Permissions::from_mode(want))?;
        }
        Ok(())
    }

    /// At open: the data directory's own directories (the store adds its private ones, `intent/`) get
    /// their modes (and group), so a data directory
    /// made by an older version (0755), or before the group was configured, is brought in line. Only
    /// directories, never message files: existing messages keep their modes (README: `chmod -R g+rX`
    /// the mailboxes to share what was delivered before).
    pub fn apply_at_open(&self, data_dir: &Path) -> io::Result<()> {
        self.set_dir(data_dir, DirKind::Traverse)?;
        self.set_dir(&data_dir.join("tmp"), DirKind::Staging)?;
        let mailboxes = data_dir.join("mailboxes");
        self.set_dir(&mailboxes, DirKind::Traverse)?;
        for domain in subdirs(&mailboxes)? {
            self.set_dir(&domain, DirKind::Traverse)?;
            if self.group.is_none() {
                continue;
            }
            // The group reads mailboxes: each one and its Maildir directories (folders included).
            for mbox in subdirs(&domain)? {
                self.set_mailbox_tree(&mbox)?;
            }
        }
        Ok(())
    }

    /// A mailbox directory and the directories below it (tmp/new/cur, Maildir++ folders).
    fn set_mailbox_tree(&self, mbox: &Path) -> io::Result<()> {
        self.set_dir(mbox, DirKind::Mailbox)?;
        for sub in subdirs(mbox)? {
            let name = sub.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if matches!(name, "tmp" | "new" | "cur") {
                self.set_dir(&sub, DirKind::Mailbox)?;
            } else if name.starts_with('.') {
                self.set_mailbox_tree(&sub)?;
            }
        }
        Ok(())
    }
}

/// The subdirectories of `dir` (not following symlinks); none if it does not exist.
fn subdirs(dir: &Path) -> io::Result<Vec<std::path::PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            out.push(entry.path());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn private_dirs_are_0700_whatever_the_umask_allows() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("x");
        assert!(Modes::private().create_dir(&dir, DirKind::Mailbox).unwrap());
        assert_eq!(mode(&dir), 0o700);
        assert!(!Modes::private().create_dir(&dir, DirKind::Mailbox).unwrap(), "exists: not created again");
    }

    #[test]
    fn shared_mailboxes_get_the_group_bits_and_setgid() {
        let d = tempfile::tempdir().unwrap();
        // Our own primary group: chown to it needs no privilege.
        let gid = fs::metadata(d.path()).unwrap().gid();
        let modes = Modes::shared(gid);
        let mbox = d.path().join("m");
        modes.create_dir(&mbox, DirKind::Mailbox).unwrap();
        assert_eq!(mode(&mbox), 0o2750);
        let dom = d.path().join("dom");
        modes.create_dir(&dom, DirKind::Traverse).unwrap();
        assert_eq!(mode(&dom), 0o2710);
        let tmp = d.path().join("tmp");
        modes.create_dir(&tmp, DirKind::Staging).unwrap();
        assert_eq!(mode(&tmp), 0o2700);
        assert_eq!(modes.message_mode(), 0o640);
        assert_eq!(Modes::private().message_mode(), 0o600);
    }

    #[test]
    fn apply_at_open_tightens_an_old_0755_data_dir() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        for p in ["tmp", "mailboxes/example.org/bob/new"] {
            fs::create_dir_all(root.join(p)).unwrap();
        }
        for p in ["", "tmp", "mailboxes", "mailboxes/example.org"] {
            fs::set_permissions(root.join(p), Permissions::from_mode(0o755)).unwrap();
        }
        Modes::private().apply_at_open(root).unwrap();
        for p in ["", "tmp", "mailboxes", "mailboxes/example.org"] {
            assert_eq!(mode(&root.join(p)), 0o700, "{p}");
        }
    }
}
