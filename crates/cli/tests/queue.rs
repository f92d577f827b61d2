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

// ---- Power cut: queue entries acknowledged by the commit path survive it ----------------------------
//
// Uses the power-cut file system of the store's tests (`tests/powercut/fs.py`, FUSE): unmounting it
// rebuilds the backing directory to what a strict POSIX file system would have made durable (file data
// at its last fsync, a directory's names at its last fsync). Needs /dev/fuse, python3-fusepy and
// fusermount3; fails without them unless MAILROOM_SKIP_POWERCUT=1.

mod power {
    use std::io::{BufRead, BufReader};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    const SKIP_ENV: &str = "MAILROOM_SKIP_POWERCUT";
    const PYTHON: &str = "/usr/bin/python3";
    /// Bound on mounting and on the power cut's rebuild.
    const WAIT: Duration = Duration::from_secs(20);

    pub fn is_available() -> bool {
        let fusepy = Command::new(PYTHON).args(["-c", "import fusepy"]).stderr(Stdio::null()).status();
        let ok = Path::new("/dev/fuse").exists() && fusepy.is_ok_and(|s| s.success()) && has_tool("fusermount3");
        if !ok && std::env::var(SKIP_ENV).is_ok_and(|v| v == "1") {
            eprintln!("power-cut test skipped ({SKIP_ENV}=1)");
            return false;
        }
        assert!(ok, "needs /dev/fuse, python3-fusepy and fusermount3 ({SKIP_ENV}=1 skips)");
        true
    }

    fn has_tool(t: &str) -> bool {
        std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(t).is_file()))
    }

    /// One power-on period of `fs.py BACKING MNT`; [`Fs::cut`] unmounts it (the power cut).
    pub struct Fs {
        child: Option<Child>,
        mnt: PathBuf,
    }

    impl Fs {
        pub fn mount(backing: &Path, mnt: &Path) -> Fs {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/powercut/fs.py");
            let mut child = Command::new(PYTHON)
                .arg(script)
                .arg(backing)
                .arg(mnt)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn fs.py");
            let stdout = child.stdout.take().unwrap();
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
            let fs = Fs { child: Some(child), mnt: mnt.to_path_buf() };
            let start = Instant::now();
            loop {
                match rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(line) if line.contains("powercut-fs: mounted") => return fs,
                    Err(mpsc::RecvTimeoutError::Disconnected) => panic!("fs.py exited before mounting"),
                    _ => assert!(start.elapsed() < WAIT, "fs.py did not mount within {WAIT:?}"),
                }
            }
        }

        fn unmount(&self) -> bool {
            Command::new("fusermount3")
                .arg("-u")
                .arg(&self.mnt)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        }

        /// Unmounts (nothing may use the mount any more) and waits for the rebuild.
        pub fn cut(mut self) {
            let start = Instant::now();
            while !self.unmount() {
                assert!(start.elapsed() < WAIT, "cannot unmount {:?}", self.mnt);
                std::thread::sleep(Duration::from_millis(50));
            }
            let mut child = self.child.take().unwrap();
            while child.try_wait().unwrap().is_none() {
                assert!(start.elapsed() < WAIT, "fs.py did not finish the power cut");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    impl Drop for Fs {
        fn drop(&mut self) {
            let Some(mut child) = self.child.take() else { return };
            let _ = self.unmount();
            std::thread::sleep(Duration::from_millis(200));
            let _ = child.kill();
            let _ = child.wait();
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
    }
}

#[test]
fn acknowledged_queue_entries_survive_a_power_cut() {
    if !power::is_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (disk, mnt) = (dir.path().join("disk"), dir.path().join("mnt"));
    fs::create_dir(&disk).unwrap();
    fs::create_dir(&mnt).unwrap();
    let fs = power::Fs::mount(&disk, &mnt);
    let data = mnt.join("data");
    mailroom_store::fsync::create_dir_all_synced(&data).unwrap(); // the data directory itself must be durable
    mailroom_store::UserDirectory::new(&data).add("alice@power.test", None).unwrap();
    let (mut local, mut remote_only, mut deferred_ids) = (Vec::new(), Vec::new(), Vec::new());
    let finished = {
        let store = Store::open(&data).unwrap();
        let queue = Queue::open(&data).unwrap();
        let alice = store.users().lookup("alice", "power.test").unwrap();
        let mut commits = Vec::new();
        for i in 0..16 {
            let mut incoming = store.begin().unwrap();
            incoming.write(MESSAGE).unwrap();
            let env = Envelope::new(
                incoming.id(),
                "alice@power.test",
                SystemTime::now(),
                MESSAGE.len() as u64,
                &["bob@remote.example"],
            );
            let locals = if i % 2 == 0 { vec![alice.clone()] } else { Vec::new() };
            if i % 2 == 0 {
                local.push(env.id.clone())
            } else {
                remote_only.push(env.id.clone())
            }
            commits.push((incoming.commit_with(&locals, Some(queue.spool_for(&env))), env));
        }
        for (commit, env) in commits {
            commit.wait().unwrap(); // acknowledged from here on
            queue.add_committed(env);
        }
        // A rewrite (deferred) and a removal (delivered) must be as durable as the enqueue.
        for id in local.iter().take(3) {
            let claim = queue.claim(id, &[0]).unwrap();
            let retry_at = SystemTime::now() + Duration::from_secs(600);
            let outcome =
                Outcome::Deferred { reply: "451 later".into(), status: "4.0.0".into(), remote_mta: None, retry_at };
            queue.record(claim, vec![(0, outcome)]).unwrap();
            deferred_ids.push(id.clone());
        }
        let id = remote_only[0].clone();
        let claim = queue.claim(&id, &[0]).unwrap();
        queue.record(claim, vec![(0, Outcome::Delivered { reply: "250 ok".into(), remote_mta: "mx".into() })]).unwrap();
        id
    };
    // Let the store's syncer threads close their files, then cut the power.
    std::thread::sleep(Duration::from_millis(300));
    fs.cut();

    let data = disk.join("data");
    let queue = Queue::open(&data).unwrap();
    let listed: Vec<Envelope> = queue.list().unwrap();
    for id in local.iter().chain(&remote_only).filter(|id| **id != finished) {
        let env = listed.iter().find(|e| &e.id == id).unwrap_or_else(|| panic!("acknowledged entry {id} lost"));
        let want =
            if deferred_ids.contains(id) { mailroom_queue::State::Deferred } else { mailroom_queue::State::Pending };
        assert_eq!(env.rcpts[0].state, want, "{id}: the recorded state was not durable");
        assert_eq!(fs::read(queue.message_path(id)).unwrap(), MESSAGE, "{id}: message");
    }
    assert!(listed.iter().all(|e| e.id != finished), "a delivered entry came back after the power cut");
    assert_eq!(fs::read_dir(data.join("queue/corrupt")).unwrap().count(), 0, "nothing partial");
    let new = data.join("mailboxes/power.test/alice/new");
    let in_mailbox: Vec<String> =
        fs::read_dir(&new).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    for id in &local {
        assert!(in_mailbox.iter().any(|n| n.starts_with(id.as_str())), "{id}: the local copy was lost");
    }
}
