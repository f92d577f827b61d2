//! End-to-end over TCP: what happens around sessions rather than in them. Users added and removed
//! while the server runs, SIGTERM with idle and busy sessions, the connection cap, the command and
//! data timeouts.

use crate::common::*;
use std::time::{Duration, Instant};

/// One short session asking whether RCPT TO:<addr> is accepted now; returns the RCPT reply.
fn probe_rcpt(server: &Server, addr: &str) -> Reply {
    let mut c = server.connect();
    c.ehlo();
    c.expect("MAIL FROM:<probe@client.e2e.test>", 250);
    let r = c.cmd(&format!("RCPT TO:<{addr}>"));
    c.expect("QUIT", 221);
    r
}

/// "A running server sees changes within 5 seconds without a restart": add, then remove.
#[test]
fn users_added_and_removed_while_running() {
    let server = Server::start_with_users(Opts::example(), &["keep@example.test"]);
    let user = "late@example.test";
    let r = probe_rcpt(&server, user);
    assert!(r.is(550, "5.1.1"), "{r:?}");

    user_add(&server.data, user);
    let added = Instant::now();
    let took = poll(Duration::from_secs(6), Duration::from_millis(100), || {
        let r = probe_rcpt(&server, user);
        (r.code == 250).then(|| added.elapsed())
    })
    .unwrap_or_else(|| panic!("{user} not accepted within 6 s\n{}", server.log_text()));
    eprintln!("user add seen by the server after {took:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");

    user_remove(&server.data, user);
    let removed = Instant::now();
    let took = poll(Duration::from_secs(6), Duration::from_millis(100), || {
        let r = probe_rcpt(&server, user);
        r.is(550, "5.1.1").then(|| removed.elapsed())
    })
    .unwrap_or_else(|| panic!("{user} still accepted 6 s after removal"));
    eprintln!("user remove seen by the server after {took:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // Others are untouched.
    assert_eq!(probe_rcpt(&server, "keep@example.test").code, 250);
}

/// SIGTERM with an idle session: it gets 421 4.3.2 and is closed, new connections are not served,
/// and the server exits 0.
#[test]
fn sigterm_closes_idle_sessions_and_exits_zero() {
    let mut server = Server::start_with_users(Opts::example(), &["a@example.test"]);
    let mut idle = server.connect();
    idle.ehlo();
    let mut fresh = server.connect(); // never sent a command
    server.sigterm();
    for c in [&mut idle, &mut fresh] {
        let r = c.read_reply();
        assert!(r.is(421, "4.3.2"), "{r:?}");
        assert!(c.wait_eof(), "closed after 421");
    }
    let st = server.wait_exit(Duration::from_secs(5)).expect("server exits within 5 s of SIGTERM");
    assert!(st.success(), "exit status {st}\n{}", server.log_text());
    assert!(Smtp::try_connect(server.port).is_err(), "nothing listens after exit");
}

/// SIGTERM in the middle of a transaction (after RCPT): the client may still send DATA and gets 250
/// with the message on disk; then 421 4.3.2 and the server exits 0. Meanwhile no new session starts.
#[test]
fn sigterm_lets_a_transaction_in_flight_finish() {
    let user = "busy@example.test";
    let mut server =
        Server::start_with_users(Opts::example().with_config("[server]\nshutdown_grace = \"5s\"\n"), &[user]);
    let mut c = server.connect();
    c.ehlo();
    c.expect("MAIL FROM:<s@client.e2e.test>", 250);
    c.expect(&format!("RCPT TO:<{user}>"), 250);
    server.sigterm();
    // Give the server time to see the signal and stop accepting before the transaction goes on.
    let draining = poll(Duration::from_secs(3), Duration::from_millis(20), || {
        server.log_text().contains("shutting down").then_some(())
    });
    assert!(draining.is_some(), "{}", server.log_text());
    std::thread::sleep(Duration::from_millis(100));
    // A new connection during the drain is not served: refused, or closed without a 220.
    if let Ok(mut late) = Smtp::try_connect(server.port) {
        late.set_read_timeout(Duration::from_secs(2));
        if let Ok(r) = late.try_read_reply() {
            assert_ne!(r.code, 220, "a new session started during shutdown: {r:?}");
        }
    }
    let r = c.data(b"Subject: in flight\r\n\r\nfinished during shutdown\r\n");
    assert!(r.is(250, "2.0.0"), "{r:?}");
    let r = c.read_reply();
    assert!(r.is(421, "4.3.2"), "after the transaction: {r:?}");
    assert!(c.wait_eof());
    let st = server.wait_exit(Duration::from_secs(5)).expect("server exits once the transaction is done");
    assert!(st.success(), "exit status {st}\n{}", server.log_text());
    let f = server.expect_new(user, 1);
    let stored = std::fs::read(&f[0]).unwrap();
    assert_eq!(strip_trace(&stored), b"Subject: in flight\n\nfinished during shutdown\n");
}

/// max_connections = 2: the third concurrent connection gets 421 4.7.0 at connect and is closed;
/// a slot freed by QUIT is usable again.
#[test]
fn connection_cap() {
    let server = Server::start(Opts::example().with_config("[limits]\nmax_connections = 2\n"));
    let mut one = server.connect();
    let mut two = server.connect();
    let mut three = Smtp::connect(server.port);
    let r = three.read_reply();
    assert!(r.is(421, "4.7.0"), "{r:?}");
    assert!(three.wait_eof(), "closed after 421");
    one.ehlo();
    two.ehlo();
    one.expect("QUIT", 221);
    assert!(one.wait_eof());
    // The slot comes back once the first session has ended (bounded wait: it is released just after
    // the close).
    let again = poll(Duration::from_secs(3), Duration::from_millis(20), || {
        let mut c = Smtp::connect(server.port);
        let r = c.read_reply();
        (r.code == 220).then_some(c)
    });
    let mut again = again.expect("a freed slot is reused");
    again.ehlo();
    two.expect("NOOP", 250);
}

/// command_timeout = 1s: an idle session gets 421 4.4.2 after about a second and is closed.
/// data_timeout = 1s: a stalled DATA gets the same, and its partial message is removed.
#[test]
fn command_and_data_timeouts() {
    let user = "slow@example.test";
    let server = Server::start_with_users(
        Opts::example().with_config("[limits]\ncommand_timeout = \"1s\"\ndata_timeout = \"1s\"\n"),
        &[user],
    );
    let mut c = server.connect();
    let start = Instant::now();
    let r = c.read_reply();
    let waited = start.elapsed();
    assert!(r.is(421, "4.4.2"), "{r:?}");
    assert!(waited >= Duration::from_millis(800) && waited < Duration::from_secs(3), "timed out after {waited:?}");
    assert!(c.wait_eof(), "closed after the timeout");

    // Activity resets the timer: commands every 0.5 s keep a session alive past 1 s.
    let mut c = server.connect();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(500));
        c.expect("NOOP", 250);
    }
    c.ehlo();
    c.expect("MAIL FROM:<s@client.e2e.test>", 250);
    c.expect(&format!("RCPT TO:<{user}>"), 250);
    c.expect("DATA", 354);
    c.send(b"Subject: stalled\r\n\r\npart of a body\r\n");
    let start = Instant::now();
    let r = c.read_reply();
    assert!(r.is(421, "4.4.2"), "{r:?}");
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(c.wait_eof());
    // The partial message is gone from tmp/ and never reached new/.
    let left = poll(Duration::from_secs(2), Duration::from_millis(20), || {
        files_under(&server.data.join("tmp")).is_empty().then_some(())
    });
    assert!(left.is_some(), "tmp/: {:?}", files_under(&server.data.join("tmp")));
    server.expect_new(user, 0);
}

/// SIGTERM with a transaction that does not finish within `shutdown_grace`: once the grace period is
/// over the session is closed with 421 4.3.2, its partial message is dropped, and the server exits 0.
#[test]
fn sigterm_grace_period_ends_a_stalled_transaction() {
    let user = "stall@example.test";
    let mut server =
        Server::start_with_users(Opts::example().with_config("[server]\nshutdown_grace = \"1s\"\n"), &[user]);
    let mut c = server.connect();
    c.ehlo();
    c.expect("MAIL FROM:<s@client.e2e.test>", 250);
    c.expect(&format!("RCPT TO:<{user}>"), 250);
    c.expect("DATA", 354);
    c.send(b"Subject: never finished\r\n\r\nhalf a body\r\n");
    let start = Instant::now();
    server.sigterm();
    let r = c.read_reply();
    let waited = start.elapsed();
    assert!(r.is(421, "4.3.2"), "{r:?}");
    assert!(waited >= Duration::from_millis(800) && waited < Duration::from_secs(4), "closed after {waited:?}");
    assert!(c.wait_eof());
    let st = server.wait_exit(Duration::from_secs(5)).expect("server exits after the grace period");
    assert!(st.success(), "exit status {st}\n{}", server.log_text());
    server.expect_new(user, 0);
    let tmp = files_under(&server.data.join("tmp"));
    assert!(tmp.is_empty(), "partial message left in tmp/: {tmp:?}");
}

/// One server per data directory: a second `mailroom serve` on it exits at once, non-zero, naming the
/// running one; after the first is SIGKILLed (no clean exit, its lock file left behind) a new one starts.
#[test]
fn a_second_server_on_the_same_data_directory_is_refused_and_a_crash_leaves_no_lock() {
    let mut server = Server::start(Opts::example());
    let started = Instant::now();
    let out = std::process::Command::new(bin())
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port()), "--data-dir"])
        .arg(&server.data)
        .output()
        .expect("run a second mailroom serve");
    assert!(!out.status.success(), "the second server must not run");
    assert!(started.elapsed() < WAIT, "it exits at once");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("process {}", server.pid())), "names the running server: {err}");
    server.restart(); // SIGKILL, then a new server on the same data directory and port
    let mut c = server.connect();
    assert_eq!(c.cmd("NOOP").code, 250);
}

/// `mailroom bench --connect-only`: each round is a whole connection (greeting, EHLO, QUIT, and the
/// server's close, which a plain connection does by dropping its socket): every round is counted, none
/// sends mail, and the server logs each session's end.
#[test]
fn bench_connect_only_counts_whole_connections() {
    let server = Server::start(Opts::example());
    let out = std::process::Command::new(bin())
        .args(["bench", "--server", &server.addr(), "--connections", "2", "--messages", "6"])
        .args(["--connect-only", "--timeout", "10s", "--json", "--quiet"])
        .output()
        .expect("run mailroom bench");
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), server.log_text());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["delivered"], 6, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    assert_eq!(v["connect_only"], true, "{v}");
    let ended = poll(Duration::from_secs(5), Duration::from_millis(50), || {
        let log = server.log_text();
        (log.matches("disconnect").count() >= 6).then_some(log)
    })
    .unwrap_or_else(|| panic!("six sessions not ended\n{}", server.log_text()));
    assert!(!ended.contains("message stored"), "{ended}");
    assert!(server.new_files("postmaster@example.test").is_empty());
}
