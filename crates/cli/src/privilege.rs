//! Running as root only as long as needed: `[server] user`/`group`.
//!
//! Started as root with `user` set, `mailroom serve` binds every listener, reads the TLS key and opens
//! the data directory as root, hands the data directory to the user ([`hand_over_data_dir`]), then
//! drops for good ([`drop_to`]): `setgroups([])` (no supplementary group is kept), `setgid`, `setuid`, in
//! that order (after setuid, setgid would no longer be allowed), and checks that it cannot be undone and
//! that no capability is left before the first connection is served. Started as root without `user`, it
//! runs as root and says so once. Under systemd none of this is used: the unit starts it as its user
//! with only CAP_NET_BIND_SERVICE.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{bail, Context};
use mailroom_server::config_store::RunAs;
use mailroom_store::Modes;
use nix::unistd::{getgid, getgroups, getuid, Gid, Uid};

/// Once every listener is bound and the store is open: as root with `[server] user`, hands the data
/// directory over and drops to the user; as root without it, warns (once: this runs once per start);
/// as the configured user already (systemd's `User=`), nothing; as another user, refuses.
pub fn after_bind(cfg: &mailroom_server::Config) -> anyhow::Result<()> {
    use mailroom_server::config_store;
    let run_as =
        config_store::run_as(cfg.server.user.as_deref(), cfg.server.group.as_deref()).map_err(anyhow::Error::msg)?;
    let modes = config_store::modes(&cfg.store).map_err(anyhow::Error::msg)?;
    match run_as {
        Some(to) if is_root() && to.uid != 0 => {
            let data_dir = &cfg.server.data_dir;
            hand_over_data_dir(data_dir, &to, &modes)?;
            drop_to(&to)?;
            // The data directory's parents must let the user through: say so now, not at the first message.
            std::fs::read_dir(data_dir.join("tmp")).map(drop).with_context(|| {
                format!("user {} cannot reach {} (is a parent directory closed to it?)", to.user, data_dir.display())
            })
        }
        Some(to) if getuid().as_raw() != to.uid && !is_root() => {
            bail!("server.user is {:?} (uid {}), but this process runs as uid {} and cannot switch: start it as root or as that user", to.user, to.uid, getuid())
        }
        Some(_) => Ok(()),
        None if is_root() => {
            tracing::warn!(
                "running as root: set [server] user to serve as an unprivileged user once the ports are bound"
            );
            Ok(())
        }
        None => Ok(()),
    }
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The permission bits new files may get at most: group bits only when mailboxes are shared with a
/// group (their directories and files are created with explicit modes; this keeps a permissive
/// inherited umask from widening anything else, and a strict one from taking the group's bits away).
pub fn set_umask(modes: &Modes) {
    let mask = if modes.group.is_some() { 0o027 } else { 0o077 };
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
}

/// Gives the data directory to `to` (still root): every entry not owned by the user becomes its, with
/// its group (the store group stays where the store put it). A data directory owned by someone else
/// (first start as this user, or one run as root before) is walked whole; otherwise the mailboxes'
/// message directories are not descended into (what start-up created as root is elsewhere), so a
/// restart does not stat every message.
pub fn hand_over_data_dir(data_dir: &Path, to: &RunAs, modes: &Modes) -> anyhow::Result<()> {
    let meta = std::fs::symlink_metadata(data_dir).with_context(|| format!("cannot stat {}", data_dir.display()))?;
    let whole = meta.uid() != to.uid;
    let mut changed = 0usize;
    let mailboxes = data_dir.join("mailboxes");
    walk(data_dir, &mailboxes, &mut |path, meta, in_maildir| {
        if meta.uid() != to.uid || (meta.gid() != to.gid && Some(meta.gid()) != modes.group) {
            let gid = if Some(meta.gid()) == modes.group { None } else { Some(to.gid) };
            std::os::unix::fs::lchown(path, Some(to.uid), gid)
                .with_context(|| format!("cannot give {} to user {}", path.display(), to.user))?;
            changed += 1;
        }
        Ok(whole || !in_maildir)
    })?;
    if changed > 0 {
        tracing::info!(user = %to.user, entries = changed, "data directory handed over to the server's user");
    }
    Ok(())
}

/// Visits `dir` and what is below it (symlinks are not followed). `visit(path, meta, is_message_dir)`
/// returns whether to descend into a directory; `is_message_dir` is true for a Maildir's tmp/new/cur
/// (below `mailboxes`).
fn walk(
    dir: &Path,
    mailboxes: &Path,
    visit: &mut dyn FnMut(&Path, &std::fs::Metadata, bool) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let meta = std::fs::symlink_metadata(dir).with_context(|| format!("cannot stat {}", dir.display()))?;
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let is_message_dir = matches!(name, "tmp" | "new" | "cur") && dir.starts_with(mailboxes);
    let descend = visit(dir, &meta, is_message_dir)?;
    if !meta.is_dir() || !descend {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        walk(&entry?.path(), mailboxes, visit)?;
    }
    Ok(())
}

/// Drops root for good: no supplementary groups, then the group, then the user; then checks.
pub fn drop_to(to: &RunAs) -> anyhow::Result<()> {
    switch_to(to)?;
    tracing::info!(user = %to.user, uid = to.uid, gid = to.gid, "dropped root privileges");
    Ok(())
}

fn switch_to(to: &RunAs) -> anyhow::Result<()> {
    let (uid, gid) = (Uid::from_raw(to.uid), Gid::from_raw(to.gid));
    nix::unistd::setgroups(&[]).context("setgroups([]) failed")?;
    nix::unistd::setgid(gid).with_context(|| format!("setgid({gid}) failed"))?;
    nix::unistd::setuid(uid).with_context(|| format!("setuid({uid}) failed"))?;
    check_dropped(to)
}

/// The admin commands (`user`, `alias`, `vacation`, `mailbox`, `queue`, `dkim`, `token`) started as
/// root on a data directory that belongs to another user (the server's: the package's
/// `/var/lib/mailroom`, or one handed over by `[server] user`) become that user before they touch it,
/// for good, as the server does: what they write stays the server's. Run as root, `user add` would
/// otherwise replace `users.toml` with a root-owned 0600 file that the server can no longer read. The
/// user's primary group comes from the user database (the directory's group when the uid has no
/// entry). A root-owned or missing data directory changes nothing. Input files named on the command
/// line are read before this (see `vacation set --body-file`).
pub fn act_as_data_dir_owner(data_dir: &Path) -> anyhow::Result<()> {
    if !is_root() {
        return Ok(());
    }
    let Ok(meta) = std::fs::metadata(data_dir) else { return Ok(()) };
    if meta.uid() == 0 {
        return Ok(());
    }
    let to = match nix::unistd::User::from_uid(Uid::from_raw(meta.uid())) {
        Ok(Some(u)) => RunAs { user: u.name, uid: meta.uid(), gid: u.gid.as_raw() },
        _ => RunAs { user: meta.uid().to_string(), uid: meta.uid(), gid: meta.gid() },
    };
    switch_to(&to)
        .with_context(|| format!("cannot act as {} (uid {}), the owner of {}", to.user, to.uid, data_dir.display()))
}

/// The drop holds: real, effective and saved ids are the user's, no supplementary group, no
/// capability left, and setuid(0) is refused.
fn check_dropped(to: &RunAs) -> anyhow::Result<()> {
    if to.uid != 0 && nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        bail!("privilege drop failed: setuid(0) still succeeds");
    }
    if getuid().as_raw() != to.uid || getgid().as_raw() != to.gid {
        bail!("privilege drop failed: running as uid {} gid {}", getuid(), getgid());
    }
    let groups = getgroups().context("getgroups")?;
    if groups.iter().any(|g| g.as_raw() != to.gid) {
        bail!("privilege drop failed: supplementary groups remain: {groups:?}");
    }
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    check_status(&status, to)
}

/// Checks /proc/self/status: every uid and gid (real, effective, saved, fs) is the target's and the
/// permitted, effective and ambient capability sets are empty (a non-root user keeps none, unless
/// something like SECBIT_KEEP_CAPS was set).
fn check_status(status: &str, to: &RunAs) -> anyhow::Result<()> {
    for line in status.lines() {
        let Some((key, value)) = line.split_once(':') else { continue };
        let fields: Vec<&str> = value.split_whitespace().collect();
        let ok = match key {
            "Uid" => fields.iter().all(|f| *f == to.uid.to_string()),
            "Gid" => fields.iter().all(|f| *f == to.gid.to_string()),
            "CapPrm" | "CapEff" | "CapAmb" if to.uid != 0 => fields.iter().all(|f| u64::from_str_radix(f, 16) == Ok(0)),
            _ => true,
        };
        if !ok {
            bail!("privilege drop failed: {key}:{value}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to() -> RunAs {
        RunAs { user: "u".into(), uid: 1000, gid: 1000 }
    }

    #[test]
    fn walk_marks_only_maildir_message_dirs_and_can_skip_them() {
        let d = tempfile::tempdir().unwrap();
        // A data directory whose own path has a "mailboxes" component: only its mailboxes/ counts.
        let data = d.path().join("mailboxes").join("data");
        for p in ["tmp/x", "queue/msg", "mailboxes/ex.test/bob/new", "mailboxes/ex.test/bob/.Junk/cur"] {
            std::fs::create_dir_all(data.join(p)).unwrap();
        }
        std::fs::write(data.join("mailboxes/ex.test/bob/new/m1"), b"").unwrap();
        let mut seen = Vec::new();
        walk(&data, &data.join("mailboxes"), &mut |path, _, is_message_dir| {
            let rel = path.strip_prefix(&data).unwrap().to_string_lossy().into_owned();
            seen.push((rel, is_message_dir));
            Ok(!is_message_dir)
        })
        .unwrap();
        let marked: Vec<&str> = seen.iter().filter(|(_, m)| *m).map(|(p, _)| p.as_str()).collect();
        assert_eq!(marked.len(), 2, "{seen:?}");
        assert!(marked.contains(&"mailboxes/ex.test/bob/new") && marked.contains(&"mailboxes/ex.test/bob/.Junk/cur"));
        assert!(seen.iter().any(|(p, _)| p == "tmp/x"), "the data dir's tmp/ is walked: {seen:?}");
        assert!(!seen.iter().any(|(p, _)| p.ends_with("m1")), "a skipped message dir was descended: {seen:?}");
    }

    #[test]
    fn status_with_capabilities_left_is_refused() {
        let good = "Uid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapAmb:\t0000000000000000\n";
        check_status(good, &to()).unwrap();
        let caps = good.replace("CapEff:\t0000000000000000", "CapEff:\t0000000000000400");
        assert!(check_status(&caps, &to()).unwrap_err().to_string().contains("CapEff"));
        let saved_root = good.replace("Uid:\t1000\t1000\t1000\t1000", "Uid:\t1000\t1000\t0\t1000");
        assert!(check_status(&saved_root, &to()).unwrap_err().to_string().contains("Uid"));
    }
}
