//! `mailroom queue list|show|flush|delete|bounce` and `mailq`, on a queue made through the library (as
//! the server makes it: the store's commit path with a spool). No server runs; where a running server
//! matters, the test holds the server marker itself.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use mailroom_queue::lock::ServerLock;
use mailroom_queue::{Envelope, Outcome, Queue};
use mailroom_store::Store;

const MESSAGE: &[u8] = b"Return-Path: <alice@example.org>\nReceived: from client by mailroom\nSubject: queued one\nFrom: alice@example.org\n\nthe body is not shown\n";

/// A data directory with two queued messages (the second has a deferred recipient). Returns their ids.
fn queued(dir: &Path) -> (String, String) {
    let store = Store::open(dir).unwrap();
    let queue = Queue::open(dir).unwrap();
    let mut ids = Vec::new();
    for rcpts in [&["bob@remote.example"][..], &["carol@remote.example", "dave@other.example"]] {
        let mut incoming = store.begin().unwrap();
        incoming.write(MESSAGE).unwrap();
        let mut env = Envelope::new(incoming.id(), "alice@example.org", SystemTime::now(), MESSAGE.len() as u64, rcpts);
        env.auth = Some("alice@example.org".into());
        incoming.commit_with(&[], Some(queue.spool_for(&env))).wait().unwrap();
        queue.add_committed(env.clone());
        ids.push(env.id);
    }
    let claim = queue.claim(&ids[1], &[0]).unwrap();
    let deferred = Outcome::Deferred {
        reply: "451 4.7.1 greylisted, come back later".into(),
        status: "4.7.1".into(),
        remote_mta: Some("mx1.remote.example".into()),
        retry_at: SystemTime::now() + Duration::from_secs(600),
    };
    queue.record(claim, vec![(0, deferred)]).unwrap();
    (ids[0].clone(), ids[1].clone())
}

fn mailroom(dir: &Path, args: &[&str]) -> Output {
    run(Command::new(env!("CARGO_BIN_EXE_mailroom")), dir, args)
}

fn run(mut cmd: Command, dir: &Path, args: &[&str]) -> Output {
    let out = cmd.args(args).arg("--data-dir").arg(dir).output().unwrap();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn requests(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir.join("queue/requests"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn list_shows_each_entry_and_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = queued(dir.path());
    let text = stdout(&mailroom(dir.path(), &["queue", "list"]));
    for needle in [&a, &b, "alice@example.org", "bob@remote.example", "carol@remote.example", "dave@other.example"] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    assert!(text.contains("deferred") && text.contains("next: in 9m"), "{text}");
    assert!(text.contains("451 4.7.1 greylisted"), "the last reply: {text}");
    assert!(text.contains(&format!("{:>9}", MESSAGE.len())), "the size: {text}");
    assert!(text.contains("2 message(s)"), "{text}");
}

#[test]
fn list_json_is_the_envelopes() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = queued(dir.path());
    let text = stdout(&mailroom(dir.path(), &["queue", "list", "--json"]));
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let list = value.as_array().unwrap();
    assert_eq!(list.len(), 2);
    let ids: Vec<&str> = list.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&a.as_str()) && ids.contains(&b.as_str()));
    let second = list.iter().find(|e| e["id"] == b.as_str()).unwrap();
    assert_eq!(second["rcpt"][0]["state"], "deferred");
    assert_eq!(second["rcpt"][0]["last_reply"], "451 4.7.1 greylisted, come back later");
    assert_eq!(second["rcpt"][1]["state"], "pending");
    assert_eq!(second["size"], MESSAGE.len());
}

#[test]
fn an_empty_queue_says_so() {
    let dir = tempfile::tempdir().unwrap();
    Store::open(dir.path()).unwrap();
    assert_eq!(stdout(&mailroom(dir.path(), &["queue", "list"])), "Mail queue is empty\n");
    assert_eq!(stdout(&mailroom(dir.path(), &["queue", "list", "--json"])).trim(), "[]");
}

#[test]
fn show_prints_envelope_state_history_and_headers() {
    let dir = tempfile::tempdir().unwrap();
    let (_, b) = queued(dir.path());
    let text = stdout(&mailroom(dir.path(), &["queue", "show", &b]));
    for needle in [
        format!("id:       {b}"),
        "auth:     alice@example.org".into(),
        "carol@remote.example deferred (attempts 1".into(),
        "remote: mx1.remote.example".into(),
        "status: 4.7.1".into(),
        "history:".into(),
        "Subject: queued one".into(),
        "Received: from client by mailroom".into(),
    ] {
        assert!(text.contains(&needle), "{needle:?} missing from:\n{text}");
    }
    assert!(!text.contains("the body is not shown"), "only the headers: {text}");
    let missing = mailroom(dir.path(), &["queue", "show", "no-such-id"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no such queue entry"));
}

#[test]
fn mailq_is_queue_list() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = queued(dir.path());
    let link = dir.path().join("mailq");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_mailroom"), &link).unwrap();
    let via_mailq = stdout(&run(Command::new(&link), dir.path(), &[]));
    assert!(via_mailq.contains(&a) && via_mailq.contains("bob@remote.example"), "{via_mailq}");
    let json = stdout(&run(Command::new(&link), dir.path(), &["--json"]));
    assert_eq!(serde_json::from_str::<serde_json::Value>(&json).unwrap().as_array().unwrap().len(), 2);
}

fn queue_files(dir: &Path, id: &str) -> [PathBuf; 2] {
    [dir.join("queue/env").join(id), dir.join("queue/msg").join(id)]
}

#[test]
fn delete_without_a_server_removes_the_entry_itself() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = queued(dir.path());
    let text = stdout(&mailroom(dir.path(), &["queue", "delete", &a]));
    assert!(text.contains(&format!("{a}: deleted")), "{text}");
    assert!(queue_files(dir.path(), &a).iter().all(|p| !p.exists()), "files removed");
    assert!(queue_files(dir.path(), &b).iter().all(|p| p.exists()), "the other entry stays");
    assert!(requests(dir.path()).is_empty(), "no request needed");
}

#[test]
fn with_a_server_running_delete_flush_and_bounce_leave_requests() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = queued(dir.path());
    let _server = ServerLock::acquire(dir.path()).unwrap(); // this test process plays the server
    let text = stdout(&mailroom(dir.path(), &["queue", "delete", &a]));
    assert!(text.contains("delete requested; the server acts"), "{text}");
    assert!(queue_files(dir.path(), &a).iter().all(|p| p.exists()), "the server deletes, not the CLI");
    stdout(&mailroom(dir.path(), &["queue", "bounce", &b]));
    stdout(&mailroom(dir.path(), &["queue", "flush", &b]));
    stdout(&mailroom(dir.path(), &["queue", "flush"]));
    let mut expected =
        vec![format!("{a}.delete"), format!("{b}.bounce"), format!("{b}.flush"), "all.flush".to_string()];
    expected.sort();
    assert_eq!(requests(dir.path()), expected);
    let taken = Queue::open(dir.path()).unwrap().take_requests();
    assert_eq!(taken.len(), 4, "the server's pick-up reads them: {taken:?}");
}

#[test]
fn without_a_server_flush_and_bounce_wait_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = queued(dir.path());
    let text = stdout(&mailroom(dir.path(), &["queue", "bounce", &a]));
    assert!(text.contains("no server is running"), "{text}");
    assert_eq!(requests(dir.path()), [format!("{a}.bounce")]);
    assert!(queue_files(dir.path(), &a).iter().all(|p| p.exists()));
}

#[test]
fn an_unknown_id_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = queued(dir.path());
    for cmd in ["delete", "bounce", "flush"] {
        let out = mailroom(dir.path(), &["queue", cmd, &a, "no-such-id"]);
        assert!(!out.status.success(), "{cmd} with an unknown id succeeded");
        assert!(String::from_utf8_lossy(&out.stderr).contains("no such queue entry"), "{cmd}");
    }
    assert!(queue_files(dir.path(), &a).iter().all(|p| p.exists()), "the known id was not deleted");
    assert!(requests(dir.path()).is_empty());
}

#[test]
fn a_corrupt_entry_is_quarantined_and_the_rest_listed() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = queued(dir.path());
    fs::write(dir.path().join("queue/env").join(&a), b"\x00\x01 not an envelope").unwrap();
    let text = stdout(&mailroom(dir.path(), &["queue", "list"]));
    assert!(!text.contains(&a) && text.contains(&b), "{text}");
    assert!(dir.path().join("queue/corrupt").join(format!("{a}.env")).exists());
}
