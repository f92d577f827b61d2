//! Maildir++ folders as delivery targets ([`Store::existing_folder`], [`Store::junk`]) and headers
//! inserted into a message after its body ([`mailroom_store::Incoming::insert`]).

use std::fs;
use std::path::{Path, PathBuf};

use mailroom_store::{MailboxId, Store, UserDirectory};

fn setup(addresses: &[&str]) -> (tempfile::TempDir, Store, Vec<MailboxId>) {
    let dir = tempfile::tempdir().unwrap();
    let users = UserDirectory::new(dir.path());
    for a in addresses {
        users.add(a, None).unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let snapshot = store.users();
    let ids = addresses
        .iter()
        .map(|a| {
            let (l, d) = a.split_once('@').unwrap();
            snapshot.lookup(l, d).unwrap()
        })
        .collect();
    (dir, store, ids)
}

fn inbox(data: &Path, id: &MailboxId) -> PathBuf {
    data.join("mailboxes").join(id.domain()).join(id.local())
}

fn files(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir).map(|e| e.map(|e| e.unwrap().path()).collect()).unwrap_or_default()
}

#[tokio::test]
async fn junk_is_created_with_its_maildirfolder_file_and_the_inbox_stays_empty() {
    let (dir, store, ids) = setup(&["alice@example.test"]);
    let junk = store.junk(&ids[0]);
    assert_eq!(junk.folder(), Some("Junk"));
    let mut incoming = store.begin().unwrap();
    incoming.write(b"Subject: x\n\nbody\n").unwrap();
    incoming.commit(&[junk]).await.unwrap();
    assert!(store.settle(std::time::Duration::from_secs(20)), "placed in the Maildir");
    let folder = inbox(dir.path(), &ids[0]).join(".Junk");
    assert_eq!(files(&folder.join("new")).len(), 1);
    assert!(folder.join("maildirfolder").is_file());
    assert!(folder.join("cur").is_dir() && folder.join("tmp").is_dir());
    assert_eq!(files(&inbox(dir.path(), &ids[0]).join("new")).len(), 0, "nothing in the inbox");
}

#[tokio::test]
async fn an_existing_folder_is_found_only_by_its_exact_listed_name() {
    let (dir, store, ids) = setup(&["alice@example.test", "bob@example.test"]);
    let alice = inbox(dir.path(), &ids[0]);
    for sub in ["new", "cur", "tmp", ".shop/new", ".shop/cur", ".shop/tmp"] {
        fs::create_dir_all(alice.join(sub)).unwrap();
    }
    fs::create_dir_all(inbox(dir.path(), &ids[1]).join("new")).unwrap();
    fs::write(alice.join(".notadir"), b"").unwrap();
    assert_eq!(
        store.existing_folder(&ids[0], "shop").map(|m| m.folder().map(str::to_owned)),
        Some(Some("shop".into()))
    );
    for hostile in ["Shop", ".shop", "./bob", "../bob", "..", ".", "", "shop/", "shop/../..", "notadir", "x\0"] {
        assert_eq!(store.existing_folder(&ids[0], hostile), None, "{hostile:?}");
    }
    // A folder id of Alice never names Bob's mailbox, whatever the name.
    let shop = store.existing_folder(&ids[0], "shop").unwrap();
    let mut incoming = store.begin().unwrap();
    incoming.write(b"Subject: x\n\nbody\n").unwrap();
    incoming.commit(&[shop.clone(), ids[0].clone()]).await.unwrap();
    assert!(store.settle(std::time::Duration::from_secs(20)), "placed in the Maildir");
    assert_eq!(files(&alice.join(".shop/new")).len(), 1, "one copy in the folder");
    assert_eq!(files(&alice.join("new")).len(), 1, "one in the inbox: a folder is another target");
    assert_eq!(files(&inbox(dir.path(), &ids[1]).join("new")).len(), 0);
    assert_eq!(shop.inbox(), ids[0]);
}

#[tokio::test]
async fn insert_puts_bytes_at_the_offset_and_writing_goes_on_after_them() {
    let (dir, store, ids) = setup(&["alice@example.test"]);
    let mut incoming = store.begin().unwrap();
    let trace = b"Return-Path: <a@b>\n";
    incoming.write(trace).unwrap();
    incoming.write(b"Subject: x\n\nbody").unwrap();
    incoming.insert(trace.len() as u64, b"Authentication-Results: h; none\n").unwrap();
    incoming.insert(0, b"DKIM-Signature: v=1\n").unwrap();
    incoming.write(b" more\n").unwrap();
    let expected: &[u8] =
        b"DKIM-Signature: v=1\nReturn-Path: <a@b>\nAuthentication-Results: h; none\nSubject: x\n\nbody more\n";
    assert_eq!(incoming.len(), expected.len() as u64);
    let d = incoming.commit(&ids).await.unwrap();
    assert!(store.settle(std::time::Duration::from_secs(20)), "placed in the Maildir");
    assert_eq!(d.size, expected.len() as u64);
    let new = files(&inbox(dir.path(), &ids[0]).join("new"));
    assert_eq!(fs::read(&new[0]).unwrap(), expected);
    assert!(new[0].to_str().unwrap().ends_with(&format!(",S={}", expected.len())));
    assert_eq!(files(&dir.path().join("tmp")).len(), 0, "no copy left behind in tmp/");
}

#[test]
fn insert_past_the_end_fails_and_the_dropped_message_leaves_nothing() {
    let (dir, store, _) = setup(&["alice@example.test"]);
    let mut incoming = store.begin().unwrap();
    incoming.write(b"abc").unwrap();
    assert!(incoming.insert(4, b"x").is_err());
    assert!(incoming.write(b"d").is_err(), "a failed insert fails the message");
    drop(incoming);
    assert_eq!(files(&dir.path().join("tmp")).len(), 0);
}

#[tokio::test]
async fn insert_moves_a_tail_longer_than_one_piece() {
    let (dir, store, ids) = setup(&["alice@example.test"]);
    let mut incoming = store.begin().unwrap();
    let head = b"Return-Path: <a@b>\n".to_vec();
    // A body of several shift pieces, each byte telling its position, so a misplaced piece shows.
    let body: Vec<u8> =
        (0..(3 * mailroom_store::incoming::SHIFT_CHUNK as usize + 12_345)).map(|i| (i % 251) as u8).collect();
    incoming.write(&head).unwrap();
    incoming.write(&body).unwrap();
    let field = b"Authentication-Results: h; none\n";
    incoming.insert(head.len() as u64, field).unwrap();
    incoming.commit(&ids).await.unwrap();
    assert!(store.settle(std::time::Duration::from_secs(20)), "placed in the Maildir");
    let stored = fs::read(&files(&inbox(dir.path(), &ids[0]).join("new"))[0]).unwrap();
    assert_eq!(stored.len(), head.len() + field.len() + body.len());
    assert_eq!(&stored[..head.len()], &head[..]);
    assert_eq!(&stored[head.len()..head.len() + field.len()], field);
    assert!(stored[head.len() + field.len()..] == body[..], "the body moved intact");
}
