//! Reading mailboxes back for `mailroom mailbox list/show`.

use std::fs;

use mailroom_store::{Store, StoreError, UserDirectory};

async fn deliver(store: &Store, to: &str, bytes: &[u8]) -> String {
    let (l, d) = to.split_once('@').unwrap();
    let id = store.users().lookup(l, d).unwrap_or_else(|| store.postmaster(d).unwrap());
    let mut m = store.begin().unwrap();
    m.write(bytes).unwrap();
    let id = m.commit(&[id]).await.unwrap().id;
    // The answer means durable in the journal; the file reaches new/ a moment later.
    assert!(store.settle(std::time::Duration::from_secs(20)));
    id
}

#[tokio::test]
async fn list_and_show() {
    let dir = tempfile::tempdir().unwrap();
    UserDirectory::new(dir.path()).add("alice@example.test", None).unwrap();
    let store = Store::open(dir.path()).unwrap();

    let first = b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nFrom: Bob Example <bob@example.test>\r\n\
Subject: =?UTF-8?B?R3LDvMOfZQ==?= aus =?ISO-8859-1?Q?K=F6ln?=\r\n\r\nHallo\r\n";
    let second = b"From: carol@example.test\r\nSubject: plain\r\n\r\nsecond\r\n";
    let id1 = deliver(&store, "alice@example.test", first).await;
    std::thread::sleep(std::time::Duration::from_millis(20));
    let id2 = deliver(&store, "alice@example.test", second).await;

    let mbox = store.mailbox("Alice@Example.test").unwrap();
    let list = mbox.list().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].id, id1, "oldest first");
    assert_eq!(list[0].date.as_deref(), Some("Mon, 1 Jan 2024 10:00:00 +0000"));
    assert_eq!(list[0].from.as_deref(), Some("Bob Example <bob@example.test>"));
    assert_eq!(list[0].subject.as_deref(), Some("Grüße aus Köln"));
    assert_eq!(list[0].size, first.len() as u64);
    assert!(list[0].is_new);
    assert_eq!(list[1].id, id2);
    assert_eq!(list[1].date, None);
    assert_eq!(list[1].from.as_deref(), Some("carol@example.test"));

    assert_eq!(mbox.get(&id1).unwrap(), first);
    // The full file name works too.
    let name = list[1].path.file_name().unwrap().to_str().unwrap().to_string();
    assert_eq!(mbox.get(&name).unwrap(), second);

    // A message a reader moved to cur/ with flags is still listed and found.
    let moved = list[1].path.parent().unwrap().with_file_name("cur").join(format!("{name}:2,S"));
    fs::rename(&list[1].path, &moved).unwrap();
    let list = mbox.list().unwrap();
    assert!(!list[1].is_new);
    assert_eq!(list[1].id, id2);
    assert_eq!(mbox.get(&id2).unwrap(), second);

    // Ids are compared with directory entries, never used as paths.
    for bad in ["../../../users.toml", "", "nope", "..", "new"] {
        assert!(matches!(mbox.get(bad), Err(StoreError::NoSuchMessage(_))), "{bad}");
    }
}

#[tokio::test]
async fn mailbox_resolution() {
    let dir = tempfile::tempdir().unwrap();
    UserDirectory::new(dir.path()).add("alice@example.test", None).unwrap();
    let store = Store::open(dir.path()).unwrap();

    // A user without mail yet has an empty mailbox.
    assert!(store.mailbox("alice@example.test").unwrap().list().unwrap().is_empty());
    // Unknown users and bad addresses are errors.
    assert!(matches!(store.mailbox("bob@example.test"), Err(StoreError::NoSuchMailbox(_))));
    assert!(matches!(store.mailbox("../x@example.test"), Err(StoreError::Users(_))));
    // postmaster@ is found once its mailbox exists.
    assert!(store.mailbox("postmaster@example.test").is_err());
    deliver(&store, "postmaster@example.test", b"Subject: x\r\n\r\n").await;
    let pm = store.mailbox("POSTMASTER@example.test").unwrap();
    assert_eq!(pm.list().unwrap().len(), 1);
}
