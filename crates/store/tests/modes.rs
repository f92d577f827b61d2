//! File modes through the store's API ([`Store::open_with`], [`Modes`]): a message delivered to the
//! inbox and to a folder, with headers inserted after the body, is 0600 in private directories by
//! default and 0640 in set-group-ID 2750 directories with the store group.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use mailroom_store::{Modes, Store, UserDirectory};

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Delivers one message with an inserted header to alice's inbox and .Junk; the two message files.
async fn deliver(data: &Path, modes: Modes) -> (std::path::PathBuf, std::path::PathBuf) {
    UserDirectory::new(data).add("alice@example.test", None).unwrap();
    let store = Store::open_with(data, modes).unwrap();
    let alice = store.users().lookup("alice", "example.test").unwrap();
    let mut incoming = store.begin().unwrap();
    incoming.write(b"Subject: x\r\n\r\nbody\r\n").unwrap();
    incoming.insert(0, b"X-Inserted: yes\r\n").unwrap();
    let junk = store.junk(&alice);
    incoming.commit(&[alice, junk]).await.unwrap();
    assert!(store.settle(std::time::Duration::from_secs(20)));
    let inbox = data.join("mailboxes/example.test/alice");
    let one = |d: &Path| fs::read_dir(d).unwrap().next().unwrap().unwrap().path();
    (one(&inbox.join("new")), one(&inbox.join(".Junk/new")))
}

#[tokio::test]
async fn private_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let (inbox_msg, junk_msg) = deliver(dir.path(), Modes::private()).await;
    assert_eq!((mode(&inbox_msg), mode(&junk_msg)), (0o600, 0o600));
    let inbox = dir.path().join("mailboxes/example.test/alice");
    for d in ["", "new", "cur", "tmp", ".Junk", ".Junk/new"] {
        assert_eq!(mode(&inbox.join(d)), 0o700, "{d}");
    }
    for d in ["mailboxes", "mailboxes/example.test", "tmp", "journal"] {
        assert_eq!(mode(&dir.path().join(d)), 0o700, "{d}");
    }
}

#[tokio::test]
async fn shared_with_the_store_group() {
    let dir = tempfile::tempdir().unwrap();
    // Our own group: giving a directory to it needs no privilege.
    let gid = fs::metadata(dir.path()).unwrap().gid();
    let (inbox_msg, junk_msg) = deliver(dir.path(), Modes::shared(gid)).await;
    for m in [&inbox_msg, &junk_msg] {
        assert_eq!((mode(m), fs::metadata(m).unwrap().gid()), (0o640, gid), "{}", m.display());
    }
    assert!(fs::read_to_string(&inbox_msg).unwrap().starts_with("X-Inserted: yes\r\n"));
    let inbox = dir.path().join("mailboxes/example.test/alice");
    for d in ["", "new", "cur", ".Junk", ".Junk/new"] {
        assert_eq!(mode(&inbox.join(d)), 0o2750, "{d}");
    }
    for d in ["", "mailboxes", "mailboxes/example.test"] {
        assert_eq!(mode(&dir.path().join(d)), 0o2710, "{d}");
    }
    assert_eq!(mode(&dir.path().join("tmp")), 0o2700);
    assert_eq!(mode(&dir.path().join("journal")), 0o700);
}
