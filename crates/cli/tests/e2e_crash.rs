//! Durability under SIGKILL (DESIGN.md "Durability"): a crash after 250 loses nothing, a crash before it
//! may duplicate, never lose, and no partial file ever shows up in new/.
//!
//! Eight client threads send messages in a loop over raw SMTP (std::net, no Python start-up cost),
//! each with a unique marker, and record every marker that got 250 after end of data. The server is
//! killed with SIGKILL three times under that load and restarted on the same data directory.

mod common;

use common::*;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const USER: &str = "crash@example.test";
const THREADS: usize = 8;
const KILLS: usize = 3;
/// Load before each SIGKILL.
const RUN_BEFORE_KILL: Duration = Duration::from_millis(1500);
/// Body lines per message: a few kB, so a kill often lands mid-message.
const BODY_LINES: usize = 60;

fn trailer(marker: &str) -> String {
    format!("END-OF-MESSAGE {marker}")
}

fn body(marker: &str) -> String {
    let mut b = format!(
        "From: load@client.e2e.test\r\nTo: {USER}\r\nSubject: crash load {marker}\r\n\
         Message-ID: <{marker}@client.e2e.test>\r\nX-Marker: {marker}\r\n\r\n"
    );
    for i in 0..BODY_LINES {
        b.push_str(&format!("{marker} line {i:03} the quick brown fox jumps over the lazy dog\r\n"));
    }
    b.push_str(&trailer(marker));
    b.push_str("\r\n");
    b
}

/// One SMTP session attempt; sends until `stop` or an I/O error. Acknowledged markers go to `acked`.
fn session(
    port: u16,
    thread: usize,
    seq: &AtomicU64,
    stop: &AtomicBool,
    acked: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut c = Smtp::try_connect(port)?;
    c.set_read_timeout(Duration::from_secs(5));
    let expect = |c: &mut Smtp, line: &str, code: u16| -> std::io::Result<Reply> {
        c.try_send(format!("{line}\r\n").as_bytes())?;
        let r = c.try_read_reply()?;
        if r.code != code {
            return Err(std::io::Error::other(format!("{line} -> {r:?}")));
        }
        Ok(r)
    };
    let g = c.try_read_reply()?;
    if g.code != 220 {
        return Err(std::io::Error::other(format!("greeting {g:?}")));
    }
    expect(&mut c, "EHLO load.e2e.test", 250)?;
    while !stop.load(Ordering::Relaxed) {
        let n = seq.fetch_add(1, Ordering::Relaxed);
        let marker = format!("T{thread}N{n}");
        expect(&mut c, "MAIL FROM:<load@client.e2e.test>", 250)?;
        expect(&mut c, &format!("RCPT TO:<{USER}>"), 250)?;
        expect(&mut c, "DATA", 354)?;
        let data = dot_stuff(body(&marker).as_bytes());
        // Two writes, so that a kill can fall between them.
        let (one, two) = data.split_at(data.len() / 2);
        c.try_send(one)?;
        c.try_send(two)?;
        c.try_send(b".\r\n")?;
        let r = c.try_read_reply()?;
        if r.code == 250 {
            acked.lock().unwrap().push(marker);
        } else {
            return Err(std::io::Error::other(format!("end of data -> {r:?}")));
        }
    }
    let _ = expect(&mut c, "QUIT", 221);
    Ok(())
}

/// Checks every file in new/: complete (ends with its own trailer), size matching `S=`; returns how
/// many files hold each marker.
fn check_new(server: &Server) -> HashMap<String, usize> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for f in server.new_files(USER) {
        let bytes = std::fs::read(&f).unwrap();
        let size = size_from_name(&f).unwrap_or_else(|| panic!("{f:?} has no S= size"));
        assert_eq!(bytes.len() as u64, size, "{f:?}: size differs from S=");
        let text = String::from_utf8(bytes).unwrap();
        let marker = text
            .lines()
            .find_map(|l| l.strip_prefix("X-Marker: "))
            .unwrap_or_else(|| panic!("{f:?} has no marker:\n{text}"))
            .to_owned();
        assert!(text.ends_with(&format!("{}\n", trailer(&marker))), "{f:?} is not a complete message (no trailer)");
        assert_eq!(strip_trace(text.as_bytes()), to_lf(body(&marker).as_bytes()).as_slice(), "{f:?}: content");
        *seen.entry(marker).or_default() += 1;
    }
    seen
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_message() {
    let test_start = Instant::now();
    let mut server = Server::start_with_users(Opts::example(), &[USER]);
    let port = server.port;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let seq = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (stop, acked, seq, errors) = (stop.clone(), acked.clone(), seq.clone(), errors.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if session(port, t, &seq, &stop, &acked).is_err() {
                        errors.fetch_add(1, Ordering::Relaxed);
                        // Server down: retry soon.
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            })
        })
        .collect();

    let mut acked_per_round = Vec::new();
    for round in 0..KILLS {
        let before = acked.lock().unwrap().len();
        std::thread::sleep(RUN_BEFORE_KILL);
        server.kill(); // SIGKILL
        let after = acked.lock().unwrap().len();
        acked_per_round.push(after - before);
        assert!(after > before, "round {round}: no message acknowledged under load\n{}", server.log_text());
        // Every message acknowledged so far is on disk right now, before any restart.
        let seen = check_new(&server);
        for m in acked.lock().unwrap().iter() {
            assert!(seen.contains_key(m), "round {round}: {m} got 250 but is not in new/");
        }
        server.restart();
    }
    // A little load on the last server, then stop the clients and let them finish cleanly.
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("worker thread");
    }

    let acked = acked.lock().unwrap().clone();
    let seen = check_new(&server);
    let unique: HashSet<&String> = acked.iter().collect();
    assert_eq!(unique.len(), acked.len(), "markers are unique");
    let lost: Vec<&String> = acked.iter().filter(|m| !seen.contains_key(*m)).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    let duplicated = seen.values().filter(|&&n| n > 1).count();
    let unacked_stored = seen.keys().filter(|m| !unique.contains(m)).count();
    // Restarting removed what the killed servers left half-written in tmp/ (their pids are gone).
    let tmp = files_under(&server.data.join("tmp"));
    assert!(tmp.is_empty(), "left in data-dir tmp/: {tmp:?}");
    let mbox_tmp = files_in(&server.maildir(USER).join("tmp"));
    assert!(mbox_tmp.is_empty(), "left in the mailbox's tmp/: {mbox_tmp:?}");
    eprintln!(
        "crash test: {} acknowledged ({acked_per_round:?} before each of {KILLS} kills), {} files in new/, \
         {unacked_stored} stored without 250, {duplicated} duplicated, {} client reconnects, {:?}",
        acked.len(),
        seen.values().sum::<usize>(),
        errors.load(Ordering::Relaxed),
        test_start.elapsed()
    );
}
