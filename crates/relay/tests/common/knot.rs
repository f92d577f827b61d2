//! A real DNS server for tests: Debian's knotd, serving one zone from a temp dir on 127.0.0.1:<free port>.
//! It is stopped (by its PID, through the child handle) when the value is dropped.
//!
//! The port is picked free for both UDP and TCP (knotd binds both) a moment before knotd starts; another
//! test may still take it in between, so a knotd that exits or does not answer is stopped and started again
//! on another port, a bounded number of times, with its log shown.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Knot {
    pub addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long one knotd gets to load its zone and answer.
const STARTUP: Duration = Duration::from_secs(10);
/// How many knotd processes (each on a fresh port) are tried before the test fails.
const ATTEMPTS: usize = 5;

/// Starts knotd serving `zone` (the text of a zone file) for `origin` (e.g. "test."). A missing knotd fails
/// the test unless MAILROOM_SKIP_KNOT=1 is set, in which case `None` is returned.
pub fn start(origin: &str, zone: &str) -> Option<Knot> {
    let knotd = ["/usr/sbin/knotd", "/usr/bin/knotd"].into_iter().find(|p| std::path::Path::new(p).exists());
    let Some(knotd) = knotd else {
        if std::env::var("MAILROOM_SKIP_KNOT").as_deref() == Ok("1") {
            eprintln!("knotd not installed; skipped (MAILROOM_SKIP_KNOT=1)");
            return None;
        }
        panic!("knotd not found (apt-get install knot), or set MAILROOM_SKIP_KNOT=1 to skip");
    };
    for attempt in 1..=ATTEMPTS {
        let dir = tempfile::tempdir().unwrap();
        let port = free_udp_tcp_port();
        let d = dir.path().display();
        std::fs::write(dir.path().join("zone"), zone).unwrap();
        std::fs::create_dir(dir.path().join("db")).unwrap();
        let conf = format!(
            "server:\n    listen: 127.0.0.1@{port}\n    rundir: {d}\n\
             database:\n    storage: {d}/db\n\
             log:\n  - target: stderr\n    any: warning\n\
             zone:\n  - domain: {origin}\n    storage: {d}\n    file: zone\n    zonefile-load: whole\n    journal-content: none\n"
        );
        std::fs::write(dir.path().join("knot.conf"), conf).unwrap();
        let log = std::fs::File::create(dir.path().join("knot.log")).unwrap();
        let child = Command::new(knotd)
            .arg("-c")
            .arg(dir.path().join("knot.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start knotd");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut knot = Knot { addr, child, dir };
        if knot.wait_answering() {
            return Some(knot);
        }
        let log = std::fs::read_to_string(knot.dir.path().join("knot.log")).unwrap_or_default();
        eprintln!("knotd (attempt {attempt}) did not answer on {addr} within {STARTUP:?}; its log:\n{log}");
    }
    panic!("knotd did not answer after {ATTEMPTS} attempts, each on a fresh port");
}

impl Knot {
    /// Sends a bare SOA query for the root until anything answers, within [`STARTUP`]; false when knotd
    /// exits first or the time runs out.
    fn wait_answering(&mut self) -> bool {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        // Header: id 1, RD, one question: "." SOA IN.
        let query = [0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 1];
        let deadline = Instant::now() + STARTUP;
        let mut buf = [0u8; 512];
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            let _ = sock.send_to(&query, self.addr);
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                // A response to our query (same id, QR set).
                if n >= 12 && buf[..2] == query[..2] && buf[2] & 0x80 != 0 {
                    return true;
                }
            }
        }
        false
    }
}

/// A port free for both UDP and TCP on 127.0.0.1 a moment ago.
fn free_udp_tcp_port() -> u16 {
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
