//! Helpers for the send / sendmail / interop tests: run the `mailroom` binary with stdin, and start
//! Python's aiosmtpd (tests/peers/aiosmtpd_server.py) as a capturing foreign server.
//!
//! aiosmtpd comes from Debian's python3-aiosmtpd (scripts/install-test-deps installs it). It is looked
//! for in `$MAILROOM_PYTHON`, then /usr/bin/python3 (Debian's modules), then `python3` on PATH. When none
//! has it the tests fail with a hint, unless `MAILROOM_SKIP_INTEROP=1` asks to skip them.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The longest wait for the helper to start or a message to land.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mailroom")
}

/// Runs `mailroom ARGS` with `stdin` fed in, killed if it outlives `limit`.
pub fn run_with(args: &[&str], stdin: &[u8], envs: &[(&str, &str)], limit: Duration) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // Keep the user's own config out of the tests.
    cmd.env_remove("MAILROOM_CONFIG").env("HOME", std::env::temp_dir()).env("XDG_CONFIG_HOME", "/nonexistent");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn mailroom");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = tx.send(());
        out
    });
    if rx.recv_timeout(limit).is_err() {
        // Outlived its limit: end it (by its own pid) so the test reports instead of hanging.
        let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        panic!("mailroom {args:?} did not finish within {limit:?}");
    }
    let _ = writer.join();
    waiter.join().unwrap().expect("wait for mailroom")
}

pub fn run(args: &[&str], stdin: &[u8]) -> Output {
    run_with(args, stdin, &[], Duration::from_secs(60))
}

/// A Python interpreter that can import aiosmtpd, or None.
pub fn python_with_aiosmtpd() -> Option<String> {
    let mut candidates = vec![];
    if let Ok(p) = std::env::var("MAILROOM_PYTHON") {
        candidates.push(p);
    }
    candidates.push("/usr/bin/python3".into());
    candidates.push("python3".into());
    candidates.into_iter().find(|py| {
        Command::new(py)
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// A running aiosmtpd that saves what it receives; stopped (stdin closed, then killed) on drop.
pub struct Aiosmtpd {
    child: Child,
    stdin: Option<ChildStdin>,
    pub port: u16,
    pub out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Aiosmtpd {
    /// Starts the helper, or returns None when told to skip interop tests and aiosmtpd is missing.
    pub fn start() -> Option<Aiosmtpd> {
        let Some(py) = python_with_aiosmtpd() else {
            if std::env::var_os("MAILROOM_SKIP_INTEROP").is_some() {
                eprintln!("skipping: no python with aiosmtpd (MAILROOM_SKIP_INTEROP is set)");
                return None;
            }
            panic!("no python3 with aiosmtpd: apt-get install python3-aiosmtpd (or set MAILROOM_SKIP_INTEROP=1)");
        };
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers/aiosmtpd_server.py");
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("received");
        let mut child = Command::new(py)
            .arg(&script)
            .arg(&out)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start aiosmtpd helper");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let stdin = child.stdin.take();
        let line = match rx.recv_timeout(WAIT) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("aiosmtpd helper did not start");
            }
        };
        let port = match line.trim().strip_prefix("PORT ").and_then(|p| p.parse().ok()) {
            Some(p) => p,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("aiosmtpd helper said {line:?}");
            }
        };
        Some(Aiosmtpd { child, stdin, port, out, _dir: dir })
    }

    pub fn server(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Waits for message number `n` (from 1) and returns its bytes and its envelope JSON.
    pub fn message(&self, n: usize) -> (Vec<u8>, String) {
        let eml = self.out.join(format!("{n}.eml"));
        let end = Instant::now() + WAIT;
        while !eml.exists() {
            assert!(Instant::now() < end, "message {n} never arrived in {}", self.out.display());
            std::thread::sleep(Duration::from_millis(50));
        }
        let json = std::fs::read_to_string(self.out.join(format!("{n}.json"))).unwrap();
        (std::fs::read(eml).unwrap(), json)
    }

    /// How many messages arrived so far.
    pub fn count(&self) -> usize {
        std::fs::read_dir(&self.out)
            .map(|d| d.filter_map(|e| e.ok()).filter(|e| e.path().extension().is_some_and(|x| x == "eml")).count())
            .unwrap_or(0)
    }
}

impl Drop for Aiosmtpd {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `"key": [...]` or `"key": "..."` in the helper's small JSON, crudely (no serde_json here).
pub fn json_list(json: &str, key: &str) -> Vec<String> {
    let pat = format!("\"{key}\": [");
    let Some(start) = json.find(&pat).map(|i| i + pat.len()) else { return vec![] };
    let end = json[start..].find(']').map(|i| start + i).unwrap_or(json.len());
    json[start..end].split(',').map(|s| s.trim().trim_matches('"').to_string()).filter(|s| !s.is_empty()).collect()
}

pub fn json_str(json: &str, key: &str) -> String {
    let pat = format!("\"{key}\": \"");
    let Some(start) = json.find(&pat).map(|i| i + pat.len()) else { return String::new() };
    let end = json[start..].find('"').map(|i| start + i).unwrap_or(json.len());
    json[start..end].to_string()
}

/// Deterministic pseudo-random bytes (xorshift), so an attachment covers every octet value.
pub fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.extend_from_slice(&seed.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// A scripted SMTP server on 127.0.0.1 that keeps every line it is sent: EHLO gets `caps`, AUTH gets 334
/// (or 235 with an initial response), any other line outside a message (a SASL response) 235, and
/// messages are kept whole. It says 334 to AUTH even when `caps` offers none, as the hostile server of
/// issue 10 (finding 4) does. Serves connections one after the other until [`Recorder::finish`].
pub struct Recorder {
    pub addr: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Recorded>,
}

/// What a [`Recorder`] was sent: every command and response line, and each message's data.
#[derive(Debug, Default, Clone)]
pub struct Recorded {
    pub lines: Vec<String>,
    pub messages: Vec<Vec<u8>>,
}

impl Recorded {
    /// True when an AUTH command or anything carrying `password` (in base64, alone or in PLAIN) arrived.
    pub fn saw_auth(&self, password: &str) -> bool {
        let login = mailroom_proto::base64::encode(password.as_bytes());
        self.lines.iter().any(|l| {
            let plain = l.split_whitespace().nth(2).and_then(mailroom_proto::base64::decode);
            l.to_ascii_uppercase().starts_with("AUTH")
                || l.contains(&login)
                || plain.is_some_and(|p| p.ends_with(password.as_bytes()))
                || mailroom_proto::base64::decode(l).is_some_and(|p| p.ends_with(password.as_bytes()))
        })
    }
}

impl Recorder {
    pub fn start(caps: &'static str) -> Recorder {
        use std::sync::atomic::{AtomicBool, Ordering};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut rec = Recorded::default();
            let end = Instant::now() + Duration::from_secs(60);
            while !stopped.load(Ordering::SeqCst) && Instant::now() < end {
                match l.accept() {
                    Ok((sock, _)) => serve_recorded(sock, caps, &mut rec),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            rec
        });
        Recorder { addr, stop, thread }
    }

    /// Stops serving (after the connection under way) and returns what arrived.
    pub fn finish(self) -> Recorded {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

fn serve_recorded(sock: std::net::TcpStream, caps: &str, rec: &mut Recorded) {
    let _ = sock.set_nonblocking(false);
    let _ = sock.set_read_timeout(Some(WAIT));
    let mut w = sock.try_clone().unwrap();
    let mut r = BufReader::new(sock);
    let _ = w.write_all(b"220 recorder.test ESMTP\r\n");
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let cmd = line.trim_end().to_string();
        rec.lines.push(cmd.clone());
        let up = cmd.to_ascii_uppercase();
        let reply = if up.starts_with("EHLO") {
            let mut ehlo = String::from("250-recorder.test\r\n");
            for c in caps.split(',').filter(|c| !c.is_empty()) {
                ehlo.push_str(&format!("250-{c}\r\n"));
            }
            ehlo.push_str("250 8BITMIME\r\n");
            ehlo
        } else if up.starts_with("AUTH") && cmd.split_whitespace().count() == 2 {
            "334 \r\n".into()
        } else if up == "QUIT" {
            let _ = w.write_all(b"221 bye\r\n");
            return;
        } else if up == "DATA" {
            let _ = w.write_all(b"354 go\r\n");
            let mut msg = Vec::new();
            loop {
                let mut l = Vec::new();
                if r.read_until(b'\n', &mut l).unwrap_or(0) == 0 || l == b".\r\n" {
                    break;
                }
                msg.extend_from_slice(&l);
            }
            rec.messages.push(msg);
            "250 2.0.0 kept\r\n".into()
        } else if ["HELO", "MAIL", "RCPT", "RSET", "NOOP"].iter().any(|c| up.starts_with(c)) {
            "250 ok\r\n".into()
        } else {
            "235 2.7.0 ok\r\n".into()
        };
        let _ = w.write_all(reply.as_bytes());
    }
}
