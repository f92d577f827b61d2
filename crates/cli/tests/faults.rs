//! Faults (issue 5): a full disk, an unwritable mailbox, SIGKILL at random moments under load, and 5,000
//! idle connections. The server answers 452 4.3.1 / 451 4.3.0 and leaves no partial file, loses nothing
//! it acknowledged, and keeps serving everyone else.
//!
//! The disk-full cases mount a small tmpfs (tests run as root here and in CI). A test that cannot do its
//! check (no privilege to mount, no `chattr`, no `strace`, RLIMIT_NOFILE too low) FAILS, unless
//! `MAILROOM_SKIP_PRIVILEGED=1` is set (CI never sets it); then it prints a notice and returns.
//! Run with `-- --nocapture` to see the figures (memory per idle connection, crash rounds).

mod common;

#[path = "attacks/support.rs"]
#[allow(dead_code)]
mod support;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use support::*;

/// Set to 1 to let tests that need root, a tmpfs mount, `chattr` or `strace` pass without running.
const SKIP_PRIVILEGED_ENV: &str = "MAILROOM_SKIP_PRIVILEGED";

/// A test cannot do its check here: a failure, unless the opt-out variable is set.
fn cannot_check(what: &str) {
    if std::env::var(SKIP_PRIVILEGED_ENV).is_ok_and(|v| v == "1") {
        eprintln!("NOTICE: {what}; skipped because {SKIP_PRIVILEGED_ENV}=1");
    } else {
        panic!("{what} (set {SKIP_PRIVILEGED_ENV}=1 to skip this test where that is expected)");
    }
}

// ---------------------------------------------------------------------------------------------------
// Disk full

/// A tmpfs mounted for one test; unmounted on drop (lazily if something still holds it).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of SIZE (e.g. "2m") on DIR; None (after [`cannot_check`]) when mounting is not
    /// permitted here.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir).output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir: dir.to_owned() }),
            Ok(o) => {
                cannot_check(&format!("cannot mount a tmpfs ({})", String::from_utf8_lossy(&o.stderr).trim()));
                None
            }
            Err(e) => {
                cannot_check(&format!("cannot run mount ({e})"));
                None
            }
        }
    }

    /// Writes a file until the filesystem is full (ENOSPC); returns its path.
    fn fill(&self) -> PathBuf {
        let path = self.dir.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0x5a_u8; 64 * 1024];
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(28), "filling the tmpfs: {e}");
                    break;
                }
            }
        }
        // Top up the last partial page.
        while f.write(&[0x5a]).is_ok_and(|n| n == 1) {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.dir).status().is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

const FULL: &str = "full@example.test";

/// One message from a fresh session to RCPTS; returns the final reply (or the first refusal).
fn send_to(server: &Server, rcpts: &[&str], subject: &str) -> Reply {
    let mut c = server.connect();
    c.ehlo();
    expect_reply(&mut c, "MAIL FROM:<sender@client.example>", 250, "2.1.0");
    for r in rcpts {
        expect_reply(&mut c, &format!("RCPT TO:<{r}>"), 250, "2.1.5");
    }
    let r = c.data(format!("Subject: {subject}\r\n\r\n{subject} body\r\n").as_bytes());
    c.expect("QUIT", 221);
    r
}

fn count_subject(server: &Server, addr: &str, subject: &str) -> usize {
    messages(server, addr).iter().filter(|(_, m)| contains(m, format!("Subject: {subject}\n").as_bytes())).count()
}

/// [`count_subject`] once the message got there: a 250 means durable in the store's journal, and the
/// file lands in new/ a moment later (bounded wait).
fn count_landed(server: &Server, addr: &str, subject: &str) -> usize {
    poll(Duration::from_secs(10), Duration::from_millis(5), || {
        Some(count_subject(server, addr, subject)).filter(|&n| n > 0)
    })
    .unwrap_or(0)
}

/// Files in ADDR's tmp/ (a partial copy would be left there).
fn mbox_tmp(server: &Server, addr: &str) -> Vec<PathBuf> {
    files_in(&server.maildir(addr).join("tmp"))
}

/// One mailbox lives on a full filesystem: `<data>/mailboxes/example.test/full` is a symlink to a 2 MiB
/// tmpfs, so delivery there takes the store's cross-device path (copy into the mailbox's tmp/, fsync,
/// link). Full: 452 4.3.1 (RFC 3463 "mail system full"), no partial copy, and a message for full and
/// alice together reaches neither (all or none). Alice is served meanwhile; once space is freed, full is
/// served again without a restart.
#[test]
fn disk_full_mailbox_on_a_full_tmpfs() {
    let outer = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&outer.path().join("fs"), "2m") else { return };
    let target = fs.dir.join("full-maildir");
    std::fs::create_dir(&target).unwrap();
    let server = Server::start_prepared(Opts::example().with_config(FAST_ERRORS), |data| {
        for u in [ALICE, BOB, FULL] {
            user_add(data, u);
        }
        let dom = data.join("mailboxes/example.test");
        std::fs::create_dir_all(&dom).unwrap();
        std::os::unix::fs::symlink(&target, dom.join("full")).unwrap();
    });
    assert_reply(&send_to(&server, &[FULL], "before"), 250, "2.0.0", "delivery across devices while there is room");
    // The 250 means durable in the journal: the copy onto the other file system lands a moment later
    // (and would wait for room, retried, if the disk filled up first).
    assert_eq!(count_landed(&server, FULL, "before"), 1);
    let filler = fs.fill();

    assert_reply(&send_to(&server, &[FULL], "no-room"), 452, "4.3.1", "delivery to the full filesystem");
    assert_reply(&send_to(&server, &[ALICE, FULL], "both"), 452, "4.3.1", "a message for alice and full");
    assert_eq!(count_subject(&server, FULL, "before"), 1);
    assert_eq!(messages(&server, FULL).len(), 1, "nothing new in full's mailbox");
    assert_eq!(count_subject(&server, ALICE, "both"), 0, "all or none: alice did not get it either");
    assert!(mbox_tmp(&server, FULL).is_empty(), "a partial copy in full's tmp/: {:?}", mbox_tmp(&server, FULL));
    assert!(files_under(&server.data.join("tmp")).is_empty(), "left in <data>/tmp");
    assert_still_serves(&server);

    std::fs::remove_file(filler).unwrap();
    assert_reply(&send_to(&server, &[FULL], "after"), 250, "2.0.0", "delivery once space is back");
    assert_eq!(count_landed(&server, FULL, "after"), 1);
    drop(server);
    drop(fs);
}

/// The whole data directory on a full filesystem (the spool and every mailbox): 452 4.3.1 for every
/// message, no partial file, sessions stay usable, and delivery resumes once space is freed.
#[test]
fn disk_full_data_directory() {
    let outer = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&outer.path().join("data"), "2m") else { return };
    let data = fs.dir.clone();
    for u in [ALICE, BOB] {
        user_add(&data, u);
    }
    let server = Server::spawn(Opts::example().with_config(FAST_ERRORS), data.clone(), free_port());
    assert_reply(&send_to(&server, &[BOB], "room"), 250, "2.0.0", "a message while there is room");
    let filler = fs.fill();

    let big = format!(
        "Subject: big\r\n\r\n{}",
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\r\n".repeat(2000)
    );
    let mut c = server.connect();
    c.ehlo();
    for body in [b"Subject: small\r\n\r\nsmall\r\n".to_vec(), big.into_bytes()] {
        expect_reply(&mut c, "MAIL FROM:<sender@client.example>", 250, "2.1.0");
        expect_reply(&mut c, &format!("RCPT TO:<{ALICE}>"), 250, "2.1.5");
        let r = c.data(&body);
        assert_reply(&r, 452, "4.3.1", "a message on a full disk");
    }
    assert_reply(&c.cmd("NOOP"), 250, "2.0.0", "the session goes on");
    c.expect("QUIT", 221);
    assert!(messages(&server, ALICE).is_empty(), "nothing stored for alice");
    assert!(files_under(&data.join("tmp")).is_empty(), "a partial file in <data>/tmp");
    assert!(mbox_tmp(&server, ALICE).is_empty());

    std::fs::remove_file(filler).unwrap();
    assert_still_serves(&server);
    assert_eq!(count_landed(&server, BOB, "room"), 1);
    drop(server);
    drop(fs);
}

// ---------------------------------------------------------------------------------------------------
// Unwritable mailbox

/// Bob's `new` is a regular file, not a directory (root ignores permission bits, so this is the
/// portable way to make a Maildir unwritable): 451 4.3.0, nothing partial, a message for alice and bob
/// reaches neither, alice alone is served.
#[test]
fn unwritable_mailbox_new_is_a_file() {
    let server = Server::start_prepared(Opts::example().with_config(FAST_ERRORS), |data| {
        for u in [ALICE, BOB] {
            user_add(data, u);
        }
        let bob = maildir(data, BOB);
        std::fs::create_dir_all(bob.join("tmp")).unwrap();
        std::fs::create_dir_all(bob.join("cur")).unwrap();
        std::fs::write(bob.join("new"), b"not a directory").unwrap();
    });
    assert_reply(&send_to(&server, &[BOB], "to-bob"), 451, "4.3.0", "delivery to an unwritable mailbox");
    assert_reply(&send_to(&server, &[ALICE, BOB], "to-both"), 451, "4.3.0", "a message for alice and bob");
    assert_eq!(count_subject(&server, ALICE, "to-both"), 0, "all or none");
    assert!(mbox_tmp(&server, BOB).is_empty());
    assert!(files_under(&server.data.join("tmp")).is_empty(), "left in <data>/tmp");
    assert_eq!(std::fs::read(server.maildir(BOB).join("new")).unwrap(), b"not a directory");
    assert_still_serves(&server);
}

/// Bob's `new/` is immutable (`chattr +i`, which binds root too): 451 4.3.0, the same guarantees. Fails
/// where the filesystem has no immutable flag (unless `MAILROOM_SKIP_PRIVILEGED=1`).
#[test]
fn unwritable_mailbox_immutable_directory() {
    struct Immutable(PathBuf);
    impl Drop for Immutable {
        fn drop(&mut self) {
            let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
        }
    }
    let server = Server::start_with_users(Opts::example().with_config(FAST_ERRORS), &[ALICE, BOB]);
    assert_reply(&send_to(&server, &[BOB], "first"), 250, "2.0.0", "bob's mailbox is made on first delivery");
    let new = server.maildir(BOB).join("new");
    let ok = Command::new("chattr").arg("+i").arg(&new).output().is_ok_and(|o| o.status.success());
    if !ok {
        cannot_check("chattr +i is not available here");
        return;
    }
    let _guard = Immutable(new.clone());
    assert_reply(&send_to(&server, &[BOB], "frozen"), 451, "4.3.0", "delivery into an immutable new/");
    assert_reply(&send_to(&server, &[ALICE, BOB], "both"), 451, "4.3.0", "a message for alice and bob");
    assert_eq!(count_subject(&server, ALICE, "both"), 0, "all or none");
    let landed = poll(Duration::from_secs(10), Duration::from_millis(5), || {
        Some(messages(&server, BOB)).filter(|m| !m.is_empty())
    });
    assert_eq!(landed.map_or(0, |m| m.len()), 1, "only the first message");
    assert!(mbox_tmp(&server, BOB).is_empty());
    assert!(files_under(&server.data.join("tmp")).is_empty(), "left in <data>/tmp");
    assert_still_serves(&server);
}

// ---------------------------------------------------------------------------------------------------
// SIGKILL at random moments

const CRASH_USER: &str = "crash@example.test";
const CRASH_THREADS: usize = 4;
const CRASH_ROUNDS: usize = 10;

/// xorshift64*: random kill moments without a dependency; the seed is printed for reruns.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn crash_body(marker: &str, lines: usize) -> String {
    let mut b = format!("Subject: crash {marker}\r\nX-Marker: {marker}\r\n\r\n");
    for i in 0..lines {
        b.push_str(&format!("{marker} line {i:04} the quick brown fox jumps over the lazy dog\r\n"));
    }
    b.push_str(&format!("END {marker}\r\n"));
    b
}

/// Sends messages until `stop` or an I/O error; markers that got 250 go to `acked`.
fn crash_client(
    port: u16,
    t: usize,
    seq: &AtomicU64,
    stop: &AtomicBool,
    acked: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut c = Smtp::try_connect(port)?;
    c.set_read_timeout(Duration::from_secs(3));
    let step = |c: &mut Smtp, line: &str, code: u16| -> std::io::Result<()> {
        c.try_send(format!("{line}\r\n").as_bytes())?;
        let r = c.try_read_reply()?;
        if r.code == code {
            Ok(())
        } else {
            Err(std::io::Error::other(format!("{line} -> {r:?}")))
        }
    };
    if c.try_read_reply()?.code != 220 {
        return Err(std::io::Error::other("greeting"));
    }
    step(&mut c, "EHLO crash.client.example", 250)?;
    while !stop.load(Ordering::Relaxed) {
        let n = seq.fetch_add(1, Ordering::Relaxed);
        let marker = format!("T{t}N{n}");
        step(&mut c, "MAIL FROM:<load@client.example>", 250)?;
        step(&mut c, &format!("RCPT TO:<{CRASH_USER}>"), 250)?;
        step(&mut c, "DATA", 354)?;
        // Sizes vary (1-40 KB), and the body goes in pieces, so kills land everywhere.
        let data = dot_stuff(crash_body(&marker, 10 + (n as usize * 37) % 500).as_bytes());
        for piece in data.chunks(8 * 1024) {
            c.try_send(piece)?;
        }
        c.try_send(b".\r\n")?;
        let r = c.try_read_reply()?;
        if r.code != 250 {
            return Err(std::io::Error::other(format!("end of data -> {r:?}")));
        }
        acked.lock().unwrap().push(marker);
    }
    Ok(())
}

/// Every file in new/ is complete (its own END line, size as in `S=`); returns the count per marker.
fn check_crash_mailbox(server: &Server) -> HashMap<String, usize> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for f in server.new_files(CRASH_USER) {
        let bytes = std::fs::read(&f).unwrap();
        assert_eq!(Some(bytes.len() as u64), size_from_name(&f), "{f:?}: size differs from S=");
        let text = String::from_utf8(bytes).unwrap();
        let marker = text
            .lines()
            .find_map(|l| l.strip_prefix("X-Marker: "))
            .unwrap_or_else(|| panic!("{f:?}: no marker"))
            .to_owned();
        assert!(text.ends_with(&format!("END {marker}\n")), "{f:?} is partial");
        *seen.entry(marker).or_default() += 1;
    }
    seen
}

/// SIGKILL at random moments (50-800 ms apart) under load from four clients, ten times in a row, with a
/// restart on the same data directory after each: every message that got 250 is in new/ right after the
/// kill, nothing partial is ever visible in new/, and the restarted server cleans up what the killed one
/// left in tmp/. (Extends `e2e_crash.rs` from fixed to random kill moments.)
#[test]
fn sigkill_at_random_moments_under_load() {
    let seed = std::env::var("MAILROOM_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64 | 1);
    let mut rng = Rng(seed);
    let start = Instant::now();
    let mut server = Server::start_with_users(Opts::example(), &[CRASH_USER]);
    let port = server.port;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let seq = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..CRASH_THREADS)
        .map(|t| {
            let (stop, acked, seq) = (stop.clone(), acked.clone(), seq.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if crash_client(port, t, &seq, &stop, &acked).is_err() {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            })
        })
        .collect();
    let mut delays = Vec::new();
    for round in 0..CRASH_ROUNDS {
        let delay = rng.between(50, 800);
        delays.push(delay);
        std::thread::sleep(Duration::from_millis(delay));
        server.kill();
        // Acknowledged means in the store's journal: the restarted server replays it into new/ before
        // it listens.
        let acked_at_kill = acked.lock().unwrap().clone();
        server.restart();
        let seen = check_crash_mailbox(&server);
        for m in &acked_at_kill {
            assert!(
                seen.contains_key(m),
                "round {round} (seed {seed}): {m} got 250 but is not in new/ after the restart"
            );
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    // The last answers are durable in the journal; their files land in new/ a moment later.
    let settled = poll(Duration::from_secs(10), Duration::from_millis(20), || {
        Some(check_crash_mailbox(&server)).filter(|seen| acked.iter().all(|m| seen.contains_key(m)))
    });
    let seen = settled.unwrap_or_else(|| check_crash_mailbox(&server));
    let unique: HashSet<&String> = acked.iter().collect();
    assert_eq!(unique.len(), acked.len());
    let lost: Vec<_> = acked.iter().filter(|m| !seen.contains_key(*m)).collect();
    assert!(lost.is_empty(), "seed {seed}: acknowledged but lost: {lost:?}");
    assert!(acked.len() >= CRASH_ROUNDS, "seed {seed}: too little load ({} messages)", acked.len());
    let tmp = files_under(&server.data.join("tmp"));
    assert!(tmp.is_empty(), "left in <data>/tmp after restart: {tmp:?}");
    assert!(mbox_tmp(&server, CRASH_USER).is_empty());
    eprintln!(
        "random SIGKILL: seed {seed}, kill delays {delays:?} ms, {} acknowledged, {} in new/ ({} stored without 250), {:?}",
        acked.len(),
        seen.values().sum::<usize>(),
        seen.keys().filter(|m| !unique.contains(m)).count(),
        start.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------------
// 5,000 idle connections

const IDLE: usize = 5000;

/// The soft RLIMIT_NOFILE of this process, raised towards the hard limit (with prlimit(1): no unsafe
/// code, no extra crate) when it is below what 5,000 sockets need. The server, spawned later, inherits it.
fn ensure_nofile(need: u64) -> bool {
    let read = || -> (u64, u64) {
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
        let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
        let v: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
        (v[0], v[1])
    };
    let (soft, hard) = read();
    if soft >= need {
        return true;
    }
    let target = hard.max(need);
    let _ = Command::new("prlimit")
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg(format!("--nofile={target}:{target}"))
        .status();
    read().0 >= need
}

/// 5,000 concurrent idle connections (each has had its greeting and says nothing): a new client still
/// gets its 220 and a message delivered within 2 s, and the server's memory per idle connection (VmRSS
/// with them minus before, over 5,000) stays under 64 KiB. The figure is printed for BENCHMARKS.md.
#[test]
fn five_thousand_idle_connections() {
    if !ensure_nofile(IDLE as u64 + 1000) {
        cannot_check(&format!("cannot raise RLIMIT_NOFILE to {} here", IDLE + 1000));
        return;
    }
    let server = server_with("[limits]\nmax_connections = 6000\nmax_connections_per_ip = 0\n");
    // Warm up: the first session allocates the runtime's lazily made parts.
    assert_still_serves(&server);
    std::thread::sleep(Duration::from_millis(200));
    let before = rss_kib(server.pid());
    let start = Instant::now();
    let mut idle: Vec<TcpStream> = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap_or_else(|e| panic!("connection {i}: {e}"));
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut g = [0u8; 128];
        let n = s.read(&mut g).unwrap_or_else(|e| panic!("greeting {i}: {e}"));
        assert!(g[..n].starts_with(b"220 "), "connection {i}: {:?}", String::from_utf8_lossy(&g[..n]));
        idle.push(s);
    }
    let opened = start.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let with = rss_kib(server.pid());

    let t = Instant::now();
    assert_still_serves(&server);
    let fresh = t.elapsed();
    assert!(fresh < Duration::from_secs(2), "a new client took {fresh:?} with {IDLE} idle connections");

    // The idle sessions are alive, not dropped.
    for s in idle.iter_mut().step_by(997) {
        s.write_all(b"NOOP\r\n").unwrap();
        let mut r = [0u8; 64];
        let n = s.read(&mut r).unwrap();
        assert!(r[..n].starts_with(b"250 "), "an idle session: {:?}", String::from_utf8_lossy(&r[..n]));
    }
    let per_conn = (with.saturating_sub(before)) as f64 / IDLE as f64;
    eprintln!(
        "{IDLE} idle connections: opened in {opened:?}; server VmRSS {before} KiB before, {with} KiB with them: \
         {per_conn:.1} KiB per idle connection; a new client was served in {fresh:?}"
    );
    assert!(per_conn < 64.0, "{per_conn:.1} KiB per idle connection");
    drop(idle);
}

// ---------------------------------------------------------------------------------------------------
// The user directory mid-edit (issue 10, finding 6)

/// How long a test waits for the server to have looked at users.toml again (its interval is 1 s).
const RELOAD_WAIT: Duration = Duration::from_millis(2500);

fn rcpt_reply(server: &Server, rcpt: &str) -> Reply {
    let mut c = server.connect();
    c.ehlo();
    expect_reply(&mut c, "MAIL FROM:<sender@client.example>", 250, "2.1.0");
    let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
    c.expect("QUIT", 221);
    r
}

/// Finding 6, "an empty users.toml mid-edit drops every user": an editor truncating the file, or
/// renaming it away for a moment, must not turn mail for real users into a permanent 550 5.1.1. The
/// server keeps the directory it had; with no directory at all it answers 451 4.3.0 (try later).
#[test]
fn empty_users_toml_mid_edit_drops_no_user() {
    let server = Server::start_with_users(Opts::example(), &[ALICE]);
    let users = server.data.join("users.toml");
    let saved = std::fs::read(&users).unwrap();
    assert_reply(&rcpt_reply(&server, ALICE), 250, "2.1.5", "alice before the edit");

    std::fs::write(&users, b"").unwrap(); // an editor truncated it, not yet rewritten
    std::thread::sleep(RELOAD_WAIT);
    assert_reply(&rcpt_reply(&server, ALICE), 250, "2.1.5", "alice while users.toml is empty");
    assert_reply(&rcpt_reply(&server, BOB), 550, "5.1.1", "an unknown user is still unknown");

    std::fs::rename(&users, server.data.join("users.toml.away")).unwrap(); // renamed away for a moment
    std::thread::sleep(RELOAD_WAIT);
    assert_reply(&rcpt_reply(&server, ALICE), 250, "2.1.5", "alice while users.toml is missing");

    std::fs::write(&users, &saved).unwrap();
    user_add(&server.data, BOB);
    std::thread::sleep(RELOAD_WAIT);
    assert_reply(&rcpt_reply(&server, BOB), 250, "2.1.5", "bob, added after the edit");
    assert!(server.log_text().contains("users.toml"), "the suspicious file is logged:\n{}", server.log_text());
}

/// Finding 6, the other half: a server that starts while users.toml is empty has no directory to keep,
/// so it cannot know whether a user exists: 451 4.3.0, never 550. Once the file is back, 250.
#[test]
fn empty_users_toml_at_start_answers_451_not_550() {
    let server = Server::start_prepared(Opts::example(), |data| std::fs::write(data.join("users.toml"), b"").unwrap());
    assert_reply(&rcpt_reply(&server, ALICE), 451, "4.3.0", "no user directory yet");
    assert_reply(&rcpt_reply(&server, "postmaster@example.test"), 250, "2.1.5", "postmaster needs no directory");
    user_add(&server.data, ALICE);
    std::thread::sleep(RELOAD_WAIT);
    assert_reply(&rcpt_reply(&server, ALICE), 250, "2.1.5", "alice once the directory is back");
    assert_reply(&rcpt_reply(&server, BOB), 550, "5.1.1", "an unknown user, now that there is a directory");
}

// ---------------------------------------------------------------------------------------------------
// IDN (issue 10, finding 7)

/// Finding 7, "IDN": with `--domain bücher.example`, `RCPT TO:<joerg@xn--bcher-kva.example>` (the form a
/// sender without SMTPUTF8 must use) reaches the user added as `joerg@bücher.example`, and the UTF-8
/// form reaches a user added in the ASCII form; both land in the Maildir the directory names.
#[test]
fn idn_domain_in_ascii_form_is_not_refused_as_relay() {
    let server = Server::start_with_users(
        Opts { domains: vec!["bücher.example".into(), "xn--mnchen-3ya.example".into()], ..Opts::example() },
        &["joerg@bücher.example", "anna@xn--mnchen-3ya.example"],
    );
    let mut c = server.connect();
    c.ehlo();
    expect_reply(&mut c, "MAIL FROM:<sender@client.example>", 250, "2.1.0");
    expect_reply(&mut c, "RCPT TO:<joerg@xn--bcher-kva.example>", 250, "2.1.5");
    expect_reply(&mut c, "RCPT TO:<joerg@XN--BCHER-KVA.example>", 250, "2.1.5");
    expect_reply(&mut c, "RCPT TO:<postmaster@xn--bcher-kva.example>", 250, "2.1.5");
    assert_reply(&c.data(b"Subject: ascii form\r\n\r\nhi\r\n"), 250, "2.0.0", "the message");
    expect_reply(&mut c, "MAIL FROM:<sender@client.example> SMTPUTF8", 250, "2.1.0");
    expect_reply(&mut c, "RCPT TO:<anna@münchen.example>", 250, "2.1.5");
    expect_reply(&mut c, "RCPT TO:<joerg@bücher.example>", 250, "2.1.5");
    assert_reply(&c.data(b"Subject: utf8 form\r\n\r\nhi\r\n"), 250, "2.0.0", "the message");
    c.expect("QUIT", 221);
    assert_eq!(count_landed(&server, "joerg@bücher.example", "ascii form"), 1, "one copy per mailbox");
    assert_eq!(count_landed(&server, "joerg@bücher.example", "utf8 form"), 1);
    assert_eq!(count_landed(&server, "anna@xn--mnchen-3ya.example", "utf8 form"), 1);
    assert_eq!(count_landed(&server, "postmaster@bücher.example", "ascii form"), 1, "the served domain's form");
    assert!(!server.data.join("mailboxes/xn--bcher-kva.example").exists(), "no second directory");
}

// ---------------------------------------------------------------------------------------------------
// A partial copy in a mailbox's tmp/ (issue 10, finding 8)

/// The host part of the unique names this machine's server makes (maildir(5) escapes as the store does).
fn unique_host() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let raw = raw.trim();
    let mut out = String::new();
    for c in raw.chars() {
        match c {
            '/' => out.push_str("\\057"),
            ':' => out.push_str("\\072"),
            ',' => out.push_str("\\054"),
            c if c.is_ascii_graphic() => out.push(c),
            _ => {}
        }
    }
    if out.is_empty() {
        "localhost".into()
    } else if out.starts_with('.') {
        format!("localhost{out}")
    } else {
        out
    }
}

/// Finding 8, "a partial copy stays in a mailbox's tmp/ after a crash": the copy staged in a
/// recipient's own tmp/ (its Maildir is on another file system) by a process that died is removed at
/// start-up, like the store-wide tmp/ cleanup does; a file of a live process and a foreign file stay.
#[test]
fn partial_copy_in_a_mailbox_tmp_is_removed_at_start_up() {
    let host = unique_host();
    let dead = format!("1700000000.M1P4194305Q3.{host}"); // above any pid_max: surely not running
    let live = format!("1700000000.M1P1Q3.{host}"); // pid 1 always runs
    let server = Server::start_prepared(Opts::example(), |data| {
        user_add(data, ALICE);
        let tmp = maildir(data, ALICE).join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        for name in [&dead, &live, &"a-mail-reader-file".to_string()] {
            std::fs::write(tmp.join(name), b"Subject: partial\n\nhalf a mess").unwrap();
        }
    });
    let left: Vec<String> =
        mbox_tmp(&server, ALICE).iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert!(!left.contains(&dead), "the dead process's partial copy is still in alice's tmp/: {left:?}");
    assert!(left.contains(&live), "a live process's file was removed: {left:?}");
    assert!(left.iter().any(|n| n == "a-mail-reader-file"), "a file that is not ours was removed: {left:?}");
}

// ---------------------------------------------------------------------------------------------------
// Directory entries made durable (issue 10, finding 11)

/// One traced system call: `mkdir` of a path, an `open` of a path giving a descriptor, an fsync of a
/// descriptor, or the 250 reply to end of data.
#[derive(Debug)]
enum Traced {
    Mkdir(PathBuf),
    Open(u32, PathBuf),
    Fsync(u32),
    Acked,
}

/// Parses `strace -f -o` output (lines `PID syscall(args) = result`) into the calls we check.
fn parse_strace(text: &str) -> Vec<Traced> {
    let quoted = |line: &str| -> Option<PathBuf> {
        let start = line.find('"')? + 1;
        let end = start + line[start..].find('"')?;
        Some(PathBuf::from(&line[start..end]))
    };
    let result = |line: &str| -> Option<i64> { line.rsplit_once(" = ")?.1.split_whitespace().next()?.parse().ok() };
    let mut out = Vec::new();
    for line in text.lines() {
        let call = line.split_once(' ').map_or(line, |(_, rest)| rest.trim_start());
        if call.starts_with("mkdir") && result(line) == Some(0) {
            out.extend(quoted(call).map(Traced::Mkdir));
        } else if call.starts_with("open") {
            if let (Some(p), Some(fd)) = (quoted(call), result(line).filter(|&fd| fd >= 0)) {
                out.push(Traced::Open(fd as u32, p));
            }
        } else if call.starts_with("fsync(") || call.starts_with("fdatasync(") {
            let fd = call.split_once('(').and_then(|(_, r)| r.split([')', ',']).next()?.parse().ok());
            out.extend(fd.map(Traced::Fsync));
        } else if (call.starts_with("write(") || call.starts_with("sendto(")) && call.contains("\"250 2.0.0") {
            out.push(Traced::Acked);
        }
    }
    out
}

/// `strace -f mailroom serve`, stopped by the server's PID (from `queue/server.pid`): killing strace
/// alone would detach the server and leave it running. Stopped on drop too, when a check panics.
struct TracedServer {
    strace: std::process::Child,
    data: PathBuf,
}

impl TracedServer {
    fn stop(&mut self) {
        let pid = std::fs::read_to_string(self.data.join("queue").join("server.pid"))
            .ok()
            .and_then(|text| text.split_whitespace().next()?.parse::<u32>().ok());
        if let Some(pid) = pid {
            // Only a process strace started (it is traced by our strace child) is ours to kill.
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let tracer = status.lines().find_map(|l| l.strip_prefix("TracerPid:")).map(str::trim);
            if tracer == Some(self.strace.id().to_string().as_str()) {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
        }
        // strace exits once its tracee is gone; bounded, then it goes too.
        let started = Instant::now();
        while started.elapsed() < WAIT {
            if let Ok(Some(_)) = self.strace.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.strace.kill();
        let _ = self.strace.wait();
    }
}

impl Drop for TracedServer {
    fn drop(&mut self) {
        if let Ok(None) = self.strace.try_wait() {
            self.stop();
        }
    }
}

/// The data directory, each directory created with whether its parent was fsynced, the server's log.
type FirstDelivery = (PathBuf, Vec<(PathBuf, bool)>, String);

/// What a first delivery on a fresh data directory did, from strace(1): every directory created before
/// the first 250 to end of data, with whether its parent was fsynced after the mkdir and before that
/// 250; and the server's log. `skip_dir_fsync` sets the test-only switch. None if strace is missing.
fn trace_first_delivery(skip_dir_fsync: bool) -> Option<FirstDelivery> {
    if Command::new("strace").arg("-V").output().map(|o| !o.status.success()).unwrap_or(true) {
        cannot_check("strace is not installed");
        return None;
    }
    let outer = tempfile::tempdir().unwrap();
    let data = outer.path().join("fresh").join("data"); // not there yet: the server creates both
    let trace = outer.path().join("strace.out");
    let port = free_port();
    let log_path = outer.path().join("server.log");
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-s", "16", "-e", "trace=mkdir,mkdirat,open,openat,fsync,fdatasync,write,sendto", "-o"])
        .arg(&trace)
        .arg(common::bin())
        .args(["serve", "--domain", "example.test", "--hostname", "mx.e2e.test", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(&data)
        .env("MAILROOM_LOG", "info")
        .env_remove(SKIP_DIR_FSYNC_ENV)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap());
    if skip_dir_fsync {
        cmd.env(SKIP_DIR_FSYNC_ENV, "1");
    }
    let mut child = TracedServer { strace: cmd.spawn().expect("spawn strace"), data: data.clone() };
    let started = Instant::now();
    let mut c = loop {
        match Smtp::try_connect(port) {
            Ok(c) => break c,
            Err(_) if started.elapsed() < WAIT * 3 => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("the traced server did not listen: {e}"),
        }
    };
    assert_eq!(c.read_reply().code, 220);
    c.ehlo();
    expect_reply(&mut c, "MAIL FROM:<sender@client.example>", 250, "2.1.0");
    expect_reply(&mut c, "RCPT TO:<postmaster@example.test>", 250, "2.1.5");
    assert_reply(&c.data(b"Subject: first\r\n\r\nfirst\r\n"), 250, "2.0.0", "the first message");
    c.expect("QUIT", 221);
    child.stop();

    let calls = parse_strace(&std::fs::read_to_string(&trace).unwrap());
    let acked_at = calls.iter().position(|c| matches!(c, Traced::Acked)).expect("the 250 is in the trace");
    let mut fds: HashMap<u32, PathBuf> = HashMap::new();
    let mut created: Vec<(PathBuf, bool)> = Vec::new(); // (directory, parent fsynced since)
    for call in &calls[..acked_at] {
        match call {
            Traced::Mkdir(p) => created.push((p.clone(), false)),
            Traced::Open(fd, p) => {
                fds.insert(*fd, p.clone());
            }
            Traced::Fsync(fd) => {
                if let Some(p) = fds.get(fd) {
                    for (dir, synced) in created.iter_mut() {
                        if dir.parent() == Some(p.as_path()) {
                            *synced = true;
                        }
                    }
                }
            }
            Traced::Acked => {}
        }
    }
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    Some((data, created, log))
}

/// Finding 11, "the data directory's own entries are never made durable": on a fresh data directory,
/// every directory the server creates (the data directory itself, mailboxes/, tmp/, tls/, the domain
/// and user Maildir directories and their tmp/new/cur) is fsynced into its parent before the first 250
/// to end of data. Checked on the system calls, with strace(1).
#[test]
fn every_created_directory_is_fsynced_before_the_first_250() {
    let Some((data, created, _)) = trace_first_delivery(false) else { return };
    let created_names: Vec<&PathBuf> = created.iter().map(|(d, _)| d).collect();
    for expected in [&data, &data.join("mailboxes"), &data.join("tmp"), &maildir(&data, "postmaster@example.test")] {
        assert!(created_names.contains(&expected), "{expected:?} was not created by the server: {created_names:?}");
    }
    let unsynced: Vec<&PathBuf> = created.iter().filter(|(_, s)| !s).map(|(d, _)| d).collect();
    assert!(unsynced.is_empty(), "created but never fsynced into the parent before the 250: {unsynced:?}");
}

/// The test-only switch `MAILROOM_TEST_UNSAFE_SKIP_DIR_FSYNC=1` (for a power-cut test to prove it has
/// teeth) really skips the directory fsyncs, and the server says so loudly in its log.
#[test]
fn the_unsafe_test_switch_skips_directory_fsyncs_and_says_so() {
    let Some((_, created, log)) = trace_first_delivery(true) else { return };
    assert!(!created.is_empty());
    let synced: Vec<&PathBuf> = created.iter().filter(|(_, s)| *s).map(|(d, _)| d).collect();
    assert!(synced.is_empty(), "fsynced although the switch is set: {synced:?}");
    assert!(log.contains(SKIP_DIR_FSYNC_ENV) && log.contains("tests only"), "no warning in the log:\n{log}");
}

/// The store's test-only switch that skips directory fsyncs.
const SKIP_DIR_FSYNC_ENV: &str = "MAILROOM_TEST_UNSAFE_SKIP_DIR_FSYNC";
