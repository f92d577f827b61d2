//! A real DNS server for tests: Debian's knotd, serving one zone from a temp dir on 127.0.0.1:<free port>.
//! It is stopped (by its PID, through the child handle) when the value is dropped.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Knot {
    pub addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long knotd gets to load its zone and answer.
const STARTUP: Duration = Duration::from_secs(10);

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
    let dir = tempfile::tempdir().unwrap();
    // A free port: bound and released; knotd takes it a moment later.
    let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let d = dir.path().display();
    std::fs::write(dir.path().join("zone"), zone).unwrap();
    let conf = format!(
        "server:\n    listen: 127.0.0.1@{port}\n    rundir: {d}\n\
         database:\n    storage: {d}/db\n\
         log:\n  - target: stderr\n    any: warning\n\
         zone:\n  - domain: {origin}\n    storage: {d}\n    file: zone\n    zonefile-load: whole\n    journal-content: none\n"
    );
    std::fs::write(dir.path().join("knot.conf"), conf).unwrap();
    let child = Command::new(knotd)
        .arg("-c")
        .arg(dir.path().join("knot.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start knotd");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let knot = Knot { addr, child, _dir: dir };
    wait_answering(addr);
    Some(knot)
}

/// Sends a bare SOA query for the root until anything answers, within [`STARTUP`].
fn wait_answering(addr: SocketAddr) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    // Header: id 1, RD, one question: "." SOA IN.
    let query = [0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 1];
    let deadline = Instant::now() + STARTUP;
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        let _ = sock.send_to(&query, addr);
        if sock.recv_from(&mut buf).is_ok() {
            return;
        }
    }
    panic!("knotd did not answer on {addr} within {STARTUP:?}");
}
