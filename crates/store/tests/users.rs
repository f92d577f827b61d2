//! The user directory on disk: round trips, locking under concurrency, reload by a running store.

use std::fs;
use std::sync::Arc;
use std::time::Duration;

use mailroom_store::{Store, UserDirectory, UserError};

#[test]
fn add_list_remove_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let users = UserDirectory::new(dir.path());
    assert!(users.list().unwrap().is_empty(), "missing file means no users");

    let alice = users.add("Alice@Example.TEST", None).unwrap();
    assert_eq!(alice.address, "alice@example.test");
    users.add("bob@example.test", Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into())).unwrap();

    let listed = users.list().unwrap();
    let addresses: Vec<_> = listed.iter().map(|u| u.address.as_str()).collect();
    assert_eq!(addresses, ["alice@example.test", "bob@example.test"]);
    assert!(listed[1].password_hash.as_deref().unwrap().starts_with("$argon2id$"));

    // The file is human-readable TOML in the documented shape.
    let text = fs::read_to_string(dir.path().join("users.toml")).unwrap();
    assert!(text.contains("[[user]]"), "{text}");
    assert!(text.contains("address = \"alice@example.test\""), "{text}");

    assert!(matches!(users.add("ALICE@example.test", None), Err(UserError::Exists(_))));
    users.set_password("alice@example.test", Some("x".into())).unwrap();
    assert_eq!(users.load().unwrap().get("alice@example.test").unwrap().password_hash.as_deref(), Some("x"));

    users.remove("alice@EXAMPLE.test").unwrap();
    assert!(matches!(users.remove("alice@example.test"), Err(UserError::NotFound(_))));
    assert!(matches!(users.set_password("nobody@example.test", None), Err(UserError::NotFound(_))));
    assert_eq!(users.list().unwrap().len(), 1);

    // No temporary or lock files are left behind.
    let mut names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["users.toml"]);
}

#[test]
fn invalid_addresses_are_refused_and_file_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let users = UserDirectory::new(dir.path());
    for bad in ["../x@d", "a/b@d", "a@[1.2.3.4]", "x"] {
        assert!(matches!(users.add(bad, None), Err(UserError::InvalidAddress { .. })), "{bad}");
    }
    assert!(!dir.path().join("users.toml").exists());
}

#[test]
fn hand_written_file_is_read_and_bad_entries_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.toml");
    fs::write(&path, "# mine\n[[user]]\naddress = \"Carol@Example.test\"\n\n[[user]]\naddress = \"dave@example.test\"\npassword = \"h\"\n").unwrap();
    let users = UserDirectory::new(dir.path()).load().unwrap();
    assert_eq!(users.len(), 2);
    assert_eq!(users.lookup("CAROL", "example.TEST").unwrap().address(), "carol@example.test");

    fs::write(&path, "[[user]]\naddress = \"../etc@example.test\"\n").unwrap();
    assert!(UserDirectory::new(dir.path()).load().is_err());
    fs::write(&path, "[[user]]\naddress = \"a@d\"\n[[user]]\naddress = \"A@D\"\n").unwrap();
    assert!(matches!(UserDirectory::new(dir.path()).load(), Err(UserError::Duplicate { .. })));
    fs::write(&path, "[[user]\n").unwrap();
    assert!(matches!(UserDirectory::new(dir.path()).load(), Err(UserError::Parse { .. })));
}

#[test]
fn concurrent_adds_all_survive() {
    let dir = tempfile::tempdir().unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let data_dir = dir.path().to_path_buf();
            std::thread::spawn(move || {
                // A directory per thread, as separate `mailroom user add` processes would have.
                let users = UserDirectory::new(&data_dir);
                for i in 0..10 {
                    users.add(&format!("u{t}-{i}@example.test"), None).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(UserDirectory::new(dir.path()).list().unwrap().len(), 80);
}

#[test]
fn stale_lock_is_broken_fresh_lock_waits() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("users.toml.lock");
    let f = fs::File::create(&lock).unwrap();
    f.set_modified(std::time::SystemTime::now() - Duration::from_secs(60)).unwrap();
    drop(f);
    UserDirectory::new(dir.path()).add("a@d", None).unwrap();
    assert!(!lock.exists());

    // A fresh lock held by "someone else" for a moment: the add waits, then succeeds.
    fs::File::create(&lock).unwrap();
    let releaser = {
        let lock = lock.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            fs::remove_file(lock).unwrap();
        })
    };
    UserDirectory::new(dir.path()).add("b@d", None).unwrap();
    releaser.join().unwrap();
    assert_eq!(UserDirectory::new(dir.path()).list().unwrap().len(), 2);
}

#[test]
fn running_store_sees_user_changes() {
    let dir = tempfile::tempdir().unwrap();
    let users = UserDirectory::new(dir.path());
    users.add("alice@example.test", None).unwrap();
    let store = Store::open(dir.path()).unwrap().with_reload_interval(Duration::from_millis(50));
    let before = store.users();
    assert!(before.lookup("alice", "example.test").is_some());
    assert!(before.lookup("bob", "example.test").is_none());

    users.add("bob@example.test", None).unwrap();
    users.remove("alice@example.test").unwrap();
    std::thread::sleep(Duration::from_millis(120));
    let after = store.users();
    assert!(after.lookup("bob", "example.test").is_some());
    assert!(after.lookup("alice", "example.test").is_none());
    // The old snapshot is immutable.
    assert!(before.lookup("alice", "example.test").is_some());

    // A broken file keeps the last good snapshot.
    fs::write(users.path(), "this is not toml [[[").unwrap();
    std::thread::sleep(Duration::from_millis(120));
    assert!(store.users().lookup("bob", "example.test").is_some());

    // Unchanged file between checks: the same snapshot is handed out (no reparse).
    let a = store.users();
    let b = store.users();
    assert!(Arc::ptr_eq(&a, &b));
}

#[test]
fn default_interval_reloads_within_two_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(store.users().is_empty());
    UserDirectory::new(dir.path()).add("late@example.test", None).unwrap();
    let start = std::time::Instant::now();
    while store.users().lookup("late", "example.test").is_none() {
        assert!(start.elapsed() < Duration::from_secs(2), "not reloaded within 2 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(start.elapsed() < Duration::from_millis(1500));
}

/// Issue 9: `Store::users()` is called at every RCPT and AUTH on the async worker threads, so it must
/// never wait for users.toml to be read. Here the file becomes a FIFO, whose read blocks until someone
/// writes it: a reload stuck on it must not hold up `users()` callers, who keep the last snapshot.
#[test]
fn users_lookups_never_wait_for_a_file_read() {
    let dir = tempfile::tempdir().unwrap();
    let users = UserDirectory::new(dir.path());
    users.add("alice@example.test", None).unwrap();
    let store = Store::open(dir.path()).unwrap().with_reload_interval(Duration::from_millis(20));
    assert!(store.users().lookup("alice", "example.test").is_some());

    let fifo = dir.path().join("users.toml");
    fs::remove_file(&fifo).unwrap();
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("run mkfifo");
    assert!(made.success(), "mkfifo failed");
    std::thread::sleep(Duration::from_millis(100)); // a reload has noticed the change by now

    let (tx, rx) = std::sync::mpsc::channel();
    let caller = {
        let store = store.clone();
        std::thread::spawn(move || {
            for _ in 0..10 {
                let found = store.users().lookup("alice", "example.test").is_some();
                tx.send(found).unwrap();
                std::thread::sleep(Duration::from_millis(30));
            }
        })
    };
    let answer = rx.recv_timeout(Duration::from_secs(2));
    // Release whatever is blocked on the FIFO (the reload, or before the fix the caller itself).
    let writer = std::thread::spawn(move || {
        let _ = fs::write(&fifo, "[[user]]\naddress = \"alice@example.test\"\n");
    });
    assert_eq!(answer, Ok(true), "users() waited for a blocked read of users.toml");
    for _ in 0..9 {
        assert!(rx.recv_timeout(Duration::from_secs(2)).unwrap(), "the last snapshot is kept meanwhile");
    }
    caller.join().unwrap();
    writer.join().unwrap();
}
