//! The commit journal under power cuts (issue 16).
//!
//! A 250 now stands on the journal: the batch's records in `<data-dir>/journal/*.jnl` fdatasynced once;
//! the message files are made durable in the background and the records retired after that, and every
//! live record is replayed at the next start. These scenarios cut power at the journal's own moments,
//! with fs.py's freeze (from the freeze on nothing more becomes durable and every sync fails, so no 250
//! can rest on a later sync; the unmount afterwards rebuilds the frozen state):
//!
//! - mid-batch: after the k-th journal sync (or the k-th sync of any file, which lands inside the
//!   background stage) under load, several times over;
//! - between the journal's sync and the message files' sync: the store's test-only
//!   `MAILROOM_TEST_JOURNAL_HOLD_MS` holds the background stage, so every acknowledged message is only
//!   in the journal at the cut, and the next start must replay it (`journal replayed records=N`, N > 0);
//! - during replay: the same, then a start with `MAILROOM_TEST_REPLAY_PAUSE_MS` cut after a few of the
//!   replay's syncs, then a normal start.
//!
//! Each checks that no file in any new/ or cur/ is partial, even right after the cut, and that once the
//! server has started again every acknowledged message is in every recipient's mailbox byte for byte
//! and every message in all of its mailboxes or none, and still is after one more cut (replay made it
//! durable). The random choices come from the printed seed (`MAILROOM_POWERCUT_SEED` replays them).

use super::*;

/// The store's test-only hold of the background stage after each journal sync.
const HOLD_ENV: &str = "MAILROOM_TEST_JOURNAL_HOLD_MS";
/// The store's test-only pause after each record replayed at open.
const REPLAY_PAUSE_ENV: &str = "MAILROOM_TEST_REPLAY_PAUSE_MS";
/// Longer than any scenario: the background stage never touches a message file before the cut.
const HOLD_MS: &str = "600000";
const REPLAY_PAUSE_MS: &str = "50";
/// A sync of a journal segment as fs.py names it (the data directory is the mount's root).
const JOURNAL_SYNC: &str = r"^/journal/[0-9a-f]{16}\.jnl$";
/// A sync of a message file, by the background stage or by replay (Maildirs, the store's tmp/, the queue).
const MESSAGE_SYNC: &str = r"^/(mailboxes|tmp|queue)/";
/// A sync of any file.
const ANY_SYNC: &str = "^/";
/// Power cuts in the mid-batch scenario.
const MID_BATCH_CUTS: usize = 6;
/// How long a sender waits for a reply here (see [`Rig::new`]).
const QUEUED_REPLY_WAIT: Duration = Duration::from_secs(2);
/// After the freeze, how long the senders go on, so that 250s of the last durable batch still on
/// their way are read (and so checked).
const AFTER_FREEZE: Duration = Duration::from_millis(300);

/// The count of the last `journal replayed records=N` line in a server log.
fn replayed(log: &str) -> Option<u64> {
    log.lines().rev().find_map(|l| l.split("journal replayed records=").nth(1)?.split_whitespace().next()?.parse().ok())
}

/// A DNS server on 127.0.0.1 that answers every query SERVFAIL (a temporary failure: the relay defers),
/// until LOAD says stop. Returns its address.
fn servfail_dns(load: Arc<Load>) -> std::net::SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port for the test DNS");
    socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while !load.stop.load(Ordering::Relaxed) {
            let Ok((n, from)) = socket.recv_from(&mut buf) else { continue };
            if n < 12 {
                continue;
            }
            // The query itself, made a response (QR) with RCODE 2, SERVFAIL (RFC 1035 §4.1.1).
            buf[2] |= 0x80;
            buf[3] = (buf[3] & 0xf0) | 2;
            let _ = socket.send_to(&buf[..n], from);
        }
    });
    addr
}

/// A data directory on the power-cut file system, its users, and SMTP senders (held off while the
/// server is down or the disk is looked at).
struct Rig {
    // Dropped in this order on a failure: unmount before the temporary directory goes.
    fs: Option<PowerCutFs>,
    _stop: StopOnDrop,
    senders: Vec<std::thread::JoinHandle<()>>,
    load: Arc<Load>,
    rng: Rng,
    starts: usize,
    /// Extra environment for every start (the store's test switches).
    env: Vec<(&'static str, &'static str)>,
    /// For the timings printed at each step.
    born: Instant,
    bench: Bench,
}

impl Rig {
    fn new() -> Rig {
        let rng = Rng::new();
        let mut bench = Bench::new();
        let fs = bench.mount();
        for u in USERS {
            user_add(&bench.mnt(), u);
        }
        // The store answers a message with a queue entry only once the entry is in place, after the
        // background stage (which the hold scenarios stop): a sender gives up on it soon and goes on.
        let reply_timeout = Some(QUEUED_REPLY_WAIT);
        let load = Arc::new(Load { remote: true, reply_timeout, ..Load::default() });
        let dns = servfail_dns(load.clone());
        // The senders may relay (every fourth message also goes to REMOTE, through the queue); REMOTE's
        // domain gets SERVFAIL, so its entries stay queued (deferred) and can be checked.
        let config = bench.dir.path().join("mailroom.toml");
        let text = format!("[delivery]\nrelay_networks = [\"127.0.0.1/32\"]\n\n[dns]\nservers = [\"{dns}\"]\n");
        std::fs::write(&config, text).unwrap();
        bench.config = Some(config);
        load.port.store(free_port(), Ordering::Relaxed);
        load.paused.store(true, Ordering::Relaxed);
        let senders = spawn_senders(&load);
        Rig {
            fs: Some(fs),
            _stop: StopOnDrop(load.clone()),
            senders,
            load,
            rng,
            starts: 0,
            env: Vec::new(),
            born: Instant::now(),
            bench,
        }
    }

    fn fs(&self) -> &PowerCutFs {
        self.fs.as_ref().expect("the power is on")
    }

    fn freeze(&self, request: &str) {
        self.fs().freeze(request).unwrap_or_else(|e| panic!("freeze {request:?}: {e}"));
    }

    /// Starts the server with ENV and waits until it listens (its replay done).
    /// Prints a step with the time since the rig was made (where the seconds of a slow run went).
    fn step(&self, what: &str) {
        eprintln!("  {:>7.2}s {what}", self.born.elapsed().as_secs_f64());
    }

    fn start(&mut self, env: &[(&str, &str)]) -> Serve {
        self.step(&format!("start {}", self.starts + 1));
        self.starts += 1;
        let env: Vec<(&str, &str)> = self.env.iter().chain(env).copied().collect();
        start_server_env(&self.bench, &self.load, &format!("start {}", self.starts), &env)
    }

    /// Starts the server with ENV without waiting for it (a start that a freeze cuts short).
    fn spawn(&mut self, env: &[(&str, &str)]) -> Serve {
        self.starts += 1;
        let log = self.bench.dir.path().join(format!("serve-start-{}.log", self.starts));
        let port = self.load.port.load(Ordering::Relaxed);
        let env: Vec<(&str, &str)> = self.env.iter().chain(env).copied().collect();
        Serve::spawn(&self.bench.mnt(), port, log, &env, self.bench.config.as_deref())
    }

    /// Lets the senders go and arms the freeze (REQUEST) once a message has been acknowledged.
    fn arm_under_load(&self, request: &str) {
        let before = self.acked();
        self.load.paused.store(false, Ordering::Relaxed);
        let start = Instant::now();
        while self.acked() == before {
            assert!(start.elapsed() < WAIT, "no message acknowledged within {WAIT:?} of load");
            std::thread::sleep(Duration::from_millis(5));
        }
        self.step(&format!("{} acknowledged; armed {request}", self.acked()));
        self.freeze(request);
    }

    /// Lets the senders go until the armed freeze happens; returns fs.py's notice.
    fn load_until_frozen(&self, server: &Serve) -> String {
        self.load.paused.store(false, Ordering::Relaxed);
        let notice = self.fs().wait_frozen(WAIT);
        std::thread::sleep(AFTER_FREEZE);
        self.load.paused.store(true, Ordering::Relaxed);
        notice.unwrap_or_else(|| {
            // (No lock held across the panic: the senders would find it poisoned.)
            let (state, acked) = (self.fs().state(), self.acked());
            let log = server.log_text();
            panic!(
                "the armed freeze did not happen within {WAIT:?} of load ({state}; {acked} acknowledged); log:\n{log}"
            )
        })
    }

    /// Kills the server and cuts the power.
    fn cut(&mut self, mut server: Serve) {
        self.step("cut");
        server.kill();
        self.fs.take().expect("the power is on").cut();
        self.step("cut done");
    }

    fn power_on(&mut self) {
        assert!(self.fs.is_none());
        self.fs = Some(self.bench.mount());
    }

    fn check(&self) -> Verdict {
        check_disk(&self.bench.disk(), &self.load)
    }

    fn acked(&self) -> usize {
        self.load.acked.lock().unwrap().len()
    }

    /// Right after a cut: an acknowledged message may be only in the journal, but nothing partial is
    /// in any new/ or cur/.
    fn assert_nothing_partial(&self, when: &str) -> Verdict {
        let v = self.check();
        assert!(v.damaged.is_empty(), "{when}: {}", show(&v));
        v
    }

    /// A normal start after a cut: its replay count, and the disk whole while it runs and after one
    /// more cut right away (what replay wrote is durable). Leaves the power off.
    fn start_and_check_whole(&mut self, when: &str) -> u64 {
        self.try_start_and_check_whole(when).unwrap_or_else(|e| panic!("{}", e.0))
    }

    /// [`Rig::start_and_check_whole`], with the failure and what the disk showed returned.
    fn try_start_and_check_whole(&mut self, when: &str) -> Result<u64, Box<(String, Verdict)>> {
        self.power_on();
        let server = self.start(&[]);
        let log = server.log_text();
        let Some(n) = replayed(&log) else {
            self.cut(server);
            return Err(Box::new((format!("{when}: no `journal replayed records=` line:\n{log}"), Verdict::default())));
        };
        let v = self.check();
        if !v.is_whole() {
            self.cut(server);
            return Err(Box::new((format!("{when}, after the start (replayed {n}): {}", show(&v)), v)));
        }
        self.cut(server);
        let v = self.check();
        if !v.is_whole() {
            let text = format!("{when}, after one more cut right after the start (replayed {n}): {}", show(&v));
            return Err(Box::new((text, v)));
        }
        Ok(n)
    }

    /// Scenario b's first half: a server whose background stage is held, load until right after the
    /// k-th journal sync, the cut. Every acknowledged message is then only in the journal. Returns the
    /// number acknowledged.
    fn cut_between_journal_sync_and_file_sync(&mut self) -> usize {
        let server = self.start(&[(HOLD_ENV, HOLD_MS)]);
        let k = 1 + self.rng.below(4);
        // Armed once the journal is taking batches (its first segment may be made at the first commit).
        self.arm_under_load(&format!("after {k} {JOURNAL_SYNC}"));
        let notice = self.load_until_frozen(&server);
        self.cut(server);
        let acked = self.acked();
        eprintln!("{notice} (journal sync {k}); {acked} acknowledged");
        assert!(acked > 0, "no message was acknowledged before the journal sync the freeze followed");
        let v = self.assert_nothing_partial("right after the cut between journal sync and file sync");
        // Not vacuous: the cut did fall before the message files were durable.
        assert!(!v.lost.is_empty(), "every acknowledged message was already in its mailboxes at the cut: {}", show(&v));
        acked
    }

    fn finish(self) {
        self.load.stop.store(true, Ordering::Relaxed);
        for s in self.senders {
            s.join().expect("sender thread");
        }
    }
}

#[test]
fn power_cut_journal_mid_batch() {
    if !fuse_available() {
        return;
    }
    let _one = LOAD_TESTS.lock().unwrap_or_else(|p| p.into_inner());
    let started = Instant::now();
    let mut rig = Rig::new();
    let mut replays = Vec::new();
    for cut in 0..MID_BATCH_CUTS {
        let server = rig.start(&[]);
        let log = server.log_text();
        replays.push(replayed(&log).unwrap_or_else(|| panic!("no `journal replayed records=` line:\n{log}")));
        let v = rig.check();
        assert!(v.is_whole(), "after cut {cut} and a start (replayed {replays:?}): {}", show(&v));
        // Alternately after the k-th journal sync (the next batch half written), and after the k-th sync
        // of any file (which lands inside the background stage: some files synced, some linked).
        let (k, pattern) =
            if cut % 2 == 0 { (1 + rig.rng.below(30), JOURNAL_SYNC) } else { (1 + rig.rng.below(120), ANY_SYNC) };
        rig.freeze(&format!("after {k} {pattern}"));
        let notice = rig.load_until_frozen(&server);
        rig.cut(server);
        eprintln!("cut {}: {notice} (sync {k} of {pattern}); {} acknowledged so far", cut + 1, rig.acked());
        rig.assert_nothing_partial(&format!("right after cut {}", cut + 1));
        if cut + 1 < MID_BATCH_CUTS {
            rig.power_on();
        }
    }
    let last = rig.start_and_check_whole("after the last mid-batch cut");
    replays.push(last);
    let acked = rig.acked();
    let queued = rig.load.acked.lock().unwrap().iter().filter(|a| a.rcpts.contains(&REMOTE)).count();
    eprintln!(
        "journal mid-batch: {acked} acknowledged ({queued} also queued), replayed {replays:?} at the starts, {:?}",
        started.elapsed()
    );
    assert!(acked >= 20, "too little load to mean anything: {acked} acknowledged");
    assert!(queued > 0, "no acknowledged message went through the queue");
    rig.finish();
}

#[test]
fn power_cut_journal_between_journal_sync_and_file_sync() {
    if !fuse_available() {
        return;
    }
    let _one = LOAD_TESTS.lock().unwrap_or_else(|p| p.into_inner());
    let mut rig = Rig::new();
    let acked = rig.cut_between_journal_sync_and_file_sync();
    let n = rig.start_and_check_whole("after the cut between journal sync and file sync");
    // The replay path ran, for every acknowledged message at least.
    assert!(n >= acked as u64, "replayed {n} records for {acked} acknowledged messages");
    rig.finish();
}

#[test]
fn power_cut_journal_during_replay() {
    if !fuse_available() {
        return;
    }
    let _one = LOAD_TESTS.lock().unwrap_or_else(|p| p.into_inner());
    let mut rig = Rig::new();
    let acked = rig.cut_between_journal_sync_and_file_sync();
    // Every record replayed writes at least one message file: a freeze after the m-th such sync, m at
    // most the records, falls inside replay.
    rig.power_on();
    let m = 1 + rig.rng.below(acked.min(6) as u64);
    rig.freeze(&format!("after {m} {MESSAGE_SYNC}"));
    let server = rig.spawn(&[(REPLAY_PAUSE_ENV, REPLAY_PAUSE_MS)]);
    let notice = rig.fs().wait_frozen(WAIT);
    let log = server.log_text();
    let notice = notice.unwrap_or_else(|| panic!("replay made no {m} message syncs within {WAIT:?}:\n{log}"));
    rig.cut(server);
    eprintln!("{notice} (message sync {m} of replay)");
    rig.assert_nothing_partial("right after the cut during replay");
    let n = rig.start_and_check_whole("after the cut during replay");
    // The cut did fall during replay: records were still live at the next start.
    assert!(n > 0, "nothing left to replay after the cut during replay");
    rig.finish();
}

/// The scenario's teeth, committed: with the store's test switch that skips every directory fsync, the
/// journal's segment never durably gets its name, and the check after the next start reports the
/// acknowledged messages lost.
#[test]
fn power_cut_journal_catches_a_skipped_directory_fsync() {
    if !fuse_available() {
        return;
    }
    let _one = LOAD_TESTS.lock().unwrap_or_else(|p| p.into_inner());
    let mut rig = Rig::new();
    rig.env.push((SKIP_DIR_FSYNC_ENV, "1"));
    let acked = rig.cut_between_journal_sync_and_file_sync();
    let failure = rig.try_start_and_check_whole("without directory fsyncs");
    let (text, v) = *failure.expect_err("with every directory fsync skipped the journal scenario found nothing wrong");
    eprintln!("as expected, {acked} acknowledged and: {text}");
    assert!(!v.lost.is_empty(), "expected lost acknowledged messages, got: {text}");
    rig.finish();
}
