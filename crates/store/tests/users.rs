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

    // No temporary files are left behind; the lock file stays (only its flock counts) and holds no lock.
    let mut names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["users.toml", "users.toml.lock"]);
    let lock = fs::File::open(dir.path().join("users.toml.lock")).unwrap();
    lock.try_lock().expect("nobody holds the lock once the writes are done");
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

/// A lock file left by a crash (or a power cut that undid its removal) holds nothing: only a live writer's
/// lock makes others wait, and they go on as soon as it is released.
#[test]
fn a_left_lock_file_holds_nothing_a_held_lock_waits() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("users.toml.lock");
    fs::write(&lock, "12345\n").unwrap(); // what a crashed writer leaves
    let started = std::time::Instant::now();
    UserDirectory::new(dir.path()).add("a@d", None).unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "waited for a dead writer: {:?}", started.elapsed());

    // A lock held by "someone else" for a moment: the add waits, then succeeds.
    let holder = fs::File::open(&lock).unwrap();
    holder.lock().unwrap();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(holder);
    });
    let started = std::time::Instant::now();
    UserDirectory::new(dir.path()).add("b@d", None).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(250), "did not wait for the held lock");
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

/// Issue 10 finding 7: a user is found by its domain in either IDN form, and keeps the mailbox path the
/// directory gives it.
#[test]
fn idn_users_are_found_in_either_form() {
    let dir = tempfile::tempdir().unwrap();
    let users = UserDirectory::new(dir.path());
    users.add("joerg@bücher.example", None).unwrap();
    users.add("anna@xn--mnchen-3ya.example", None).unwrap();
    // The same user in the other form is a duplicate.
    assert!(users.add("joerg@xn--bcher-kva.example", None).is_err());
    let snapshot = users.load().unwrap();
    for domain in ["bücher.example", "xn--bcher-kva.example", "XN--BCHER-KVA.Example", "BÜCHER.example"] {
        let id = snapshot.lookup("Joerg", domain).unwrap_or_else(|| panic!("joerg@{domain}"));
        assert_eq!(id.domain(), "bücher.example", "the path keeps the directory's form");
    }
    for domain in ["münchen.example", "xn--mnchen-3ya.example"] {
        assert_eq!(snapshot.lookup("anna", domain).unwrap().domain(), "xn--mnchen-3ya.example");
    }
    assert!(snapshot.get("joerg@xn--bcher-kva.example").is_some());
    assert!(snapshot.lookup("joerg", "bucher.example").is_none());
}

/// Issue 10 finding 6 at the store: an empty or missing users.toml keeps the previous snapshot; a store
/// that opens on an empty file has none and says so (`resolve` is `Unavailable`, not "no such user").
#[test]
fn empty_or_missing_users_file_keeps_the_previous_directory() {
    let dir = tempfile::tempdir().unwrap();
    let users = UserDirectory::new(dir.path());
    users.add("alice@example.test", None).unwrap();
    let store = Store::open(dir.path()).unwrap().with_reload_interval(Duration::from_millis(20));
    fs::write(users.path(), "").unwrap();
    std::thread::sleep(Duration::from_millis(150));
    assert!(store.users().resolve("alice", "example.test").unwrap().is_some(), "kept while empty");
    fs::remove_file(users.path()).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    assert!(store.users().resolve("alice", "example.test").unwrap().is_some(), "kept while missing");
    drop(store);

    fs::write(users.path(), "\n").unwrap();
    let store = Store::open(dir.path()).unwrap().with_reload_interval(Duration::from_millis(20));
    assert!(matches!(store.users().resolve("alice", "example.test"), Err(UserError::Unavailable { .. })));
    assert!(!store.users().is_available());
    users.add("alice@example.test", None).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    assert!(store.users().resolve("alice", "example.test").unwrap().is_some(), "back once the file is");
    assert!(store.users().resolve("bob", "example.test").unwrap().is_none());
}

/// A new data directory gets an empty users.toml (so "no users" is a real answer there), while a store
/// whose data directory already has mailboxes/ does not invent one.
#[test]
fn a_new_data_directory_gets_an_empty_users_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(dir.path().join("users.toml").exists());
    assert!(store.users().resolve("bob", "example.test").unwrap().is_none());
    drop(store);
    fs::remove_file(dir.path().join("users.toml")).unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(!dir.path().join("users.toml").exists());
    assert!(!store.users().is_available());
}
