//! Done-when: "A 20 MiB message keeps the server's peak RSS under 64 MiB (report the figure)".
//! The message streams from the client in 64 KiB writes; after the 250 the server's VmHWM (peak
//! resident set, /proc/<pid>/status) is read. Run with `--nocapture` to see the figure.

use crate::common::*;
use std::time::Instant;

const USER: &str = "big@example.test";
const MESSAGE_SIZE: usize = 20 * 1024 * 1024;
const LIMIT_KIB: u64 = 64 * 1024;

/// `VmHWM` / `VmRSS` of PID in KiB.
fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim_start_matches(':').trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// A 20 MiB message of 78-octet lines (deterministic, no line starts with a dot).
fn big_message() -> Vec<u8> {
    let mut m = Vec::with_capacity(MESSAGE_SIZE + 100);
    m.extend_from_slice(b"From: big@client.e2e.test\r\nSubject: twenty MiB\r\n\r\n");
    let mut i = 0u64;
    while m.len() < MESSAGE_SIZE {
        let line = format!("{i:010} abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789-\r\n");
        m.extend_from_slice(line.as_bytes());
        i += 1;
    }
    m
}

#[test]
fn twenty_mib_message_peak_rss() {
    let server = Server::start_with_users(Opts::example(), &[USER]);
    let msg = big_message();
    let mut c = server.connect();
    c.ehlo();
    let baseline = proc_kib(server.pid(), "VmHWM");
    c.expect(&format!("MAIL FROM:<big@client.e2e.test> SIZE={}", msg.len()), 250);
    c.expect(&format!("RCPT TO:<{USER}>"), 250);
    c.expect("DATA", 354);
    let start = Instant::now();
    for piece in msg.chunks(64 * 1024) {
        c.send(piece);
    }
    c.send(b".\r\n");
    let r = c.read_reply();
    let took = start.elapsed();
    assert!(r.is(250, "2.0.0"), "{r:?}");
    let peak = proc_kib(server.pid(), "VmHWM");
    c.expect("QUIT", 221);
    eprintln!(
        "20 MiB message: server peak RSS (VmHWM) {peak} KiB = {:.1} MiB (before the message {baseline} KiB); \
         sent and stored in {took:?}",
        peak as f64 / 1024.0
    );
    assert!(peak < LIMIT_KIB, "peak RSS {peak} KiB is over {LIMIT_KIB} KiB");

    let files = server.expect_new(USER, 1);
    let stored = std::fs::read(&files[0]).unwrap();
    assert_eq!(size_from_name(&files[0]), Some(stored.len() as u64));
    let expect = to_lf(&msg);
    let content = strip_trace(&stored);
    assert_eq!(content.len(), expect.len(), "stored size (LF form, without trace headers)");
    assert!(content == expect.as_slice(), "stored bytes differ from what was sent");
}
