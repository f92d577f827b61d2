//! What every attack case shares: a server with two users, the "still serves" check, and the checks that
//! hostile input reached no file name and no log line.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;

/// The user normal mail goes to.
pub const ALICE: &str = "alice@example.test";
/// The victim of smuggled and injected transactions: it must never receive anything in these tests.
pub const BOB: &str = "bob@example.test";

/// `[limits]` for cases that send many bad commands: the error tarpit (1 s per error past half of
/// `max_errors`) would otherwise make them slow. One case in `exhaustion.rs` shows the real delay.
pub const FAST_ERRORS: &str = "[limits]\nerror_delay = \"10ms\"\n";

/// A server for `example.test` with users alice and bob and this config file (TOML; may be empty).
pub fn server_with(config: &str) -> Server {
    let opts = if config.is_empty() { Opts::example() } else { Opts::example().with_config(config) };
    Server::start_with_users(opts, &[ALICE, BOB])
}

/// [`server_with`] with only [`FAST_ERRORS`].
pub fn server() -> Server {
    server_with(FAST_ERRORS)
}

/// `[limits]` holding [`FAST_ERRORS`]'s error delay and EXTRA (more `key = value` lines).
pub fn limits(extra: &str) -> String {
    format!("[limits]\nerror_delay = \"10ms\"\n{extra}\n")
}

/// A connection that said EHLO.
pub fn ehlo(server: &Server) -> Smtp {
    let mut c = server.connect();
    c.ehlo();
    c
}

/// Asserts code and enhanced code of a reply, with the command in the message.
#[track_caller]
pub fn assert_reply(r: &Reply, code: u16, enhanced: &str, what: &str) {
    assert!(r.is(code, enhanced), "{what}: expected {code} {enhanced}, got {r:?}");
}

/// Sends LINE and asserts the exact reply.
#[track_caller]
pub fn expect_reply(c: &mut Smtp, line: &str, code: u16, enhanced: &str) -> Reply {
    let r = c.cmd(line);
    assert_reply(&r, code, enhanced, line);
    r
}

/// The last lines of the server's log, for failure messages.
pub fn log_tail(server: &Server) -> String {
    let text = server.log_text();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

static PROBE: AtomicU64 = AtomicU64::new(0);

/// The end of every case: a normal client still gets a normal message delivered to alice, promptly.
#[track_caller]
pub fn assert_still_serves(server: &Server) {
    let c = Smtp::try_connect(server.port)
        .unwrap_or_else(|e| panic!("server no longer accepts: {e}\n{}", log_tail(server)));
    still_serves_over(server, c);
}

/// [`assert_still_serves`] from another loopback address (when the case used up 127.0.0.1's limits).
#[track_caller]
pub fn assert_still_serves_from(server: &Server, src: Ipv4Addr) {
    let c = Smtp::try_connect_from(src, server.port)
        .unwrap_or_else(|e| panic!("server no longer accepts: {e}\n{}", log_tail(server)));
    still_serves_over(server, c);
}

#[track_caller]
fn still_serves_over(server: &Server, mut c: Smtp) {
    let start = Instant::now();
    let marker = format!("still-serves-{}-{}", std::process::id(), PROBE.fetch_add(1, Ordering::Relaxed));
    let g = c.read_reply();
    assert_eq!(g.code, 220, "greeting after the attack: {g:?}\n{}", server.log_text());
    c.ehlo();
    expect_reply(&mut c, "MAIL FROM:<normal@client.example>", 250, "2.1.0");
    expect_reply(&mut c, &format!("RCPT TO:<{ALICE}>"), 250, "2.1.5");
    let r = c.data(format!("Subject: {marker}\r\n\r\nAn ordinary message after the attack.\r\n").as_bytes());
    assert_reply(&r, 250, "2.0.0", "an ordinary message after the attack");
    expect_reply(&mut c, "QUIT", 221, "2.0.0");
    // A 250 means durable in the store's journal and named in new/ (the poll is a safety margin).
    let count = || messages(server, ALICE).iter().filter(|(_, m)| contains(m, marker.as_bytes())).count();
    let found = poll(Duration::from_secs(5), Duration::from_millis(5), || Some(count()).filter(|&n| n > 0));
    assert_eq!(found.unwrap_or_else(count), 1, "the ordinary message is in alice's new/ once");
    assert!(start.elapsed() < Duration::from_secs(5), "served, but slowly: {:?}", start.elapsed());
}

/// Waits (at most 5 s) until no message is in flight in `<data>/tmp/`: a 250 means durable in the
/// store's journal and named in new/; it is gone from tmp/ once durable there, a moment later.
pub fn settle(server: &Server) {
    let is_settled = || files_under(&server.data.join("tmp")).is_empty();
    poll(Duration::from_secs(5), Duration::from_millis(5), || is_settled().then_some(()));
}

/// Every stored message of ADDR (new/ and cur/), with its bytes, once none is in flight.
pub fn messages(server: &Server, addr: &str) -> Vec<(PathBuf, Vec<u8>)> {
    settle(server);
    let dir = server.maildir(addr);
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        for f in files_in(&dir.join(sub)) {
            let bytes = std::fs::read(&f).unwrap();
            out.push((f, bytes));
        }
    }
    out
}

/// Every message file anywhere under `<data>/mailboxes` (whatever the mailbox).
pub fn all_messages(server: &Server) -> Vec<(PathBuf, Vec<u8>)> {
    files_under(&server.data.join("mailboxes")).into_iter().map(|f| (f.clone(), std::fs::read(&f).unwrap())).collect()
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// No message file anywhere holds NEEDLE.
#[track_caller]
pub fn assert_nowhere(server: &Server, needle: &str) {
    for (f, m) in all_messages(server) {
        assert!(!contains(&m, needle.as_bytes()), "{needle:?} was stored in {f:?}");
    }
}

/// The victim mailbox received nothing at all.
#[track_caller]
pub fn assert_bob_untouched(server: &Server) {
    let got = messages(server, BOB);
    assert!(
        got.is_empty(),
        "bob received {} message(s): {:?}",
        got.len(),
        got.iter().map(|(f, _)| f).collect::<Vec<_>>()
    );
}

/// Every path under the data directory is one the server is meant to make: `users.toml`, `users.toml.lock`, `tls/`,
/// `tmp/` (empty once no session is receiving), `intent/<unique name>`, `mailboxes/<served domain>/<known user>/{tmp,new,cur}`
/// holding Maildir unique names, and the outbound queue (`queue/{msg,env,corrupt,requests}`, entries
/// named by message id, and the running server's `queue/server.pid`). Anything else means client input
/// reached a file name.
#[track_caller]
pub fn assert_no_unexpected_paths(server: &Server, users: &[&str]) {
    let known: Vec<(String, String)> = users
        .iter()
        .chain(["postmaster@example.test"].iter())
        .map(|u| {
            let (l, d) = u.rsplit_once('@').unwrap();
            (l.to_owned(), d.to_owned())
        })
        .collect();
    settle(server);
    let mut stack = vec![server.data.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(&server.data).unwrap();
            let parts: Vec<&str> = rel.iter().map(|s| s.to_str().expect("UTF-8 path")).collect();
            let is_dir = e.file_type().unwrap().is_dir();
            let ok = match parts.as_slice() {
                ["users.toml"] | ["users.toml.lock"] => !is_dir,
                // The SRS key (made at the first start) and the alias directory.
                ["srs.secret"] | ["aliases.toml"] | ["aliases.toml.lock"] => !is_dir,
                ["tls"] | ["tmp"] | ["mailboxes"] | ["journal"] => is_dir,
                // The store's commit journal: segments named by a sequence number.
                ["journal", name] => !is_dir && is_journal_segment(name),
                ["tls", "cert.pem" | "key.pem"] => !is_dir,
                ["mailboxes", dom] => is_dir && known.iter().any(|(_, d)| d == dom),
                ["mailboxes", dom, local] => is_dir && known.iter().any(|(l, d)| d == dom && l == local),
                ["mailboxes", _, _, "tmp" | "new" | "cur"] => is_dir,
                ["mailboxes", _, _, "new" | "cur", name] => !is_dir && is_unique_name(name),
                ["queue"] | ["queue", "msg" | "env" | "corrupt" | "requests"] => is_dir,
                ["queue", "server.pid"] => !is_dir,
                // A queue entry is named by the message id: a unique name without a size.
                ["queue", "msg" | "env", name] => !is_dir && is_unique_name(&format!("{name},S=0")),
                _ => false,
            };
            assert!(ok, "unexpected path in the data directory: {rel:?}");
            if is_dir {
                stack.push(p);
            }
        }
    }
    let tmp = files_under(&server.data.join("tmp"));
    assert!(tmp.is_empty(), "left in <data>/tmp: {tmp:?}");
}

/// `<secs>.M<usecs>P<pid>Q<n>.<host>,S=<size>` (maildir(5), see mailroom-store).
fn is_unique_name(name: &str) -> bool {
    let Some((head, size)) = name.rsplit_once(",S=") else { return false };
    let size = size.split(':').next().unwrap_or("");
    let mut it = head.splitn(3, '.');
    let secs = it.next().unwrap_or("");
    let mid = it.next().unwrap_or("");
    !secs.is_empty()
        && secs.bytes().all(|b| b.is_ascii_digit())
        && mid.starts_with('M')
        && mid.contains('P')
        && mid.contains('Q')
        && it.next().is_some()
        && !size.is_empty()
        && size.bytes().all(|b| b.is_ascii_digit())
}

/// The log holds no raw NUL or CR from client input, and every line is one of the server's own (starts
/// with a timestamp): a CR/LF smuggled into a logged value would start a line of its own.
#[track_caller]
pub fn assert_log_clean(server: &Server, smuggled: &[&str]) {
    // Sessions log their disconnect asynchronously: give them a moment.
    std::thread::sleep(Duration::from_millis(50));
    let bytes = std::fs::read(&server.log).unwrap();
    assert!(!bytes.contains(&0), "NUL in the server log");
    assert!(!bytes.contains(&b'\r'), "CR in the server log");
    let text = String::from_utf8_lossy(&bytes);
    for line in text.lines() {
        let ts = line.as_bytes();
        let stamped = ts.len() > 20 && ts[..4].iter().all(u8::is_ascii_digit) && ts[4] == b'-' && ts[10] == b'T';
        assert!(stamped, "a log line that is not the server's own: {line:?}");
        for s in smuggled {
            assert!(!line.starts_with(s), "a smuggled command starts a log line: {line:?}");
        }
    }
}

/// `VmRSS` of PID in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// After a 354: sends BODY (CRLF text, dot-stuffed here) and the end of data; returns the final reply.
pub fn send_body(c: &mut Smtp, body: &[u8]) -> Reply {
    c.send(&dot_stuff(body));
    c.send(b".\r\n");
    c.read_reply()
}

/// A server as [`server_with`] plus a `submissions` (implicit TLS) listener; returns it and that port.
pub fn server_with_implicit_tls(limits_extra: &str) -> (Server, u16) {
    let port = free_port();
    let cfg = format!("[server]\nsubmissions = [\"127.0.0.1:{port}\"]\n{}", limits(limits_extra));
    (server_with(&cfg), port)
}

/// `mailroom check-config --config FILE` with this TOML.
pub fn check_config(toml: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mailroom.toml");
    std::fs::write(&path, toml).unwrap();
    std::process::Command::new(bin())
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run mailroom check-config")
}

/// CPU time (user + system) PID has used so far, in clock ticks (1/100 s on Linux).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // Fields after the command name (which is in parentheses and may hold spaces): utime is the 14th
    // field of the line, stime the 15th.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// `<16 lowercase hex digits>.jnl`: a segment of the store's commit journal.
fn is_journal_segment(name: &str) -> bool {
    name.strip_suffix(".jnl")
        .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}
