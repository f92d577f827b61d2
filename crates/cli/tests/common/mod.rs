//! Shared helpers for the end-to-end tests (`e2e_*.rs`): run the real `mailroom` binary on a free
//! port with a temporary data directory, talk raw SMTP to it over TCP, run the Python helpers in
//! `tests/e2e/`, and read what landed in the Maildirs.
//!
//! Every wait is bounded; the server is killed when its guard drops, so a failing test never leaves
//! a process behind.
#![allow(dead_code)] // each e2e file uses a different subset

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mailroom")
}

/// How long any single wait on the server may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A port that was free a moment ago (bind to port 0, read it, release it).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// Runs `mailroom ARGS... --data-dir DATA` to completion (bounded by the tool itself: these commands
/// do not wait on anything).
pub fn mailroom(data: &Path, args: &[&str]) -> Output {
    Command::new(bin()).args(args).arg("--data-dir").arg(data).stdin(Stdio::null()).output().expect("run mailroom")
}

/// `mailroom user add ADDR`, which must succeed.
pub fn user_add(data: &Path, addr: &str) {
    let out = mailroom(data, &["user", "add", addr]);
    assert!(out.status.success(), "user add {addr}: {}", String::from_utf8_lossy(&out.stderr));
}

/// `mailroom user remove ADDR`, which must succeed.
pub fn user_remove(data: &Path, addr: &str) {
    let out = mailroom(data, &["user", "remove", addr]);
    assert!(out.status.success(), "user remove {addr}: {}", String::from_utf8_lossy(&out.stderr));
}

/// `mailroom user add ADDR --password-stdin --allow-weak` with PASSWORD (fixtures may use short ones), which
/// must succeed.
pub fn user_add_password(data: &Path, addr: &str, password: &str) {
    let mut child = Command::new(bin())
        .args(["user", "add", addr, "--password-stdin", "--allow-weak", "--data-dir"])
        .arg(data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mailroom user add");
    child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "user add {addr}: {}", String::from_utf8_lossy(&out.stderr));
}

/// How to start a server.
#[derive(Default, Clone)]
pub struct Opts {
    /// `--domain` flags; none means the default (`localhost`).
    pub domains: Vec<String>,
    /// `--hostname`; none means the machine's name.
    pub hostname: Option<String>,
    /// Contents of a config file passed with `--config`.
    pub config: Option<String>,
    /// Also listen with the submission (STARTTLS + AUTH) and submissions (implicit TLS) roles.
    pub submission: bool,
}

impl Opts {
    /// The usual test setup: domain `example.test`, host name `mx.e2e.test`.
    pub fn example() -> Opts {
        Opts { domains: vec!["example.test".into()], hostname: Some("mx.e2e.test".into()), ..Opts::default() }
    }

    /// Adds the submission and submissions listeners (each on its own free port).
    pub fn with_submission(mut self) -> Opts {
        self.submission = true;
        self
    }

    pub fn with_config(mut self, toml: &str) -> Opts {
        self.config = Some(toml.into());
        self
    }
}

/// A running `mailroom serve`, killed (SIGKILL) and reaped on drop.
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    /// The submission and submissions ports, with [`Opts::with_submission`].
    pub submission_port: Option<u16>,
    pub submissions_port: Option<u16>,
    pub data: PathBuf,
    pub log: PathBuf,
    opts: Opts,
    /// Keeps the temporary directory alive as long as the server (None when the caller owns it).
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    /// A server on a fresh temporary data directory.
    pub fn start(opts: Opts) -> Server {
        Server::start_with_users(opts, &[])
    }

    /// A server on a fresh temporary data directory holding these users (added before it starts).
    pub fn start_with_users(opts: Opts, users: &[&str]) -> Server {
        Server::start_prepared(opts, |data| {
            for u in users {
                user_add(data, u);
            }
        })
    }

    /// A server on a fresh temporary data directory that `prepare` sets up first (users with passwords,
    /// odd mailbox directories...).
    pub fn start_prepared(opts: Opts, prepare: impl FnOnce(&Path)) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        prepare(&data);
        // The port was free when picked but another test may take it before the server binds: try a
        // few ports before giving up.
        let mut attempt = 0;
        let mut s = loop {
            match Server::try_spawn(opts.clone(), data.clone(), free_port()) {
                Ok(s) => break s,
                Err(log) if attempt < 3 && log.contains("cannot listen") => attempt += 1,
                Err(log) => panic!("server did not start:\n{log}"),
            }
        };
        s._dir = Some(dir);
        s
    }

    /// Starts a server on DATA and PORT and waits until it listens.
    pub fn spawn(opts: Opts, data: PathBuf, port: u16) -> Server {
        Server::try_spawn(opts, data, port).unwrap_or_else(|log| panic!("server did not start:\n{log}"))
    }

    /// Like [`Server::spawn`]; a server that exits before it listens is an `Err` with its log.
    pub fn try_spawn(opts: Opts, data: PathBuf, port: u16) -> Result<Server, String> {
        let parent = data.parent().expect("data dir has a parent").to_path_buf();
        // A fresh log per start, so a restart's log does not hide the first one.
        let mut n = 0;
        let log = loop {
            let p = parent.join(format!("server-{port}-{n}.log"));
            if !p.exists() {
                break p;
            }
            n += 1;
        };
        let mut cmd = Command::new(bin());
        cmd.arg("serve").arg("--data-dir").arg(&data).arg("--listen").arg(format!("127.0.0.1:{port}"));
        for d in &opts.domains {
            cmd.arg("--domain").arg(d);
        }
        if let Some(h) = &opts.hostname {
            cmd.arg("--hostname").arg(h);
        }
        let (submission_port, submissions_port) =
            if opts.submission { (Some(free_port()), Some(free_port())) } else { (None, None) };
        if let (Some(p), Some(q)) = (submission_port, submissions_port) {
            cmd.arg("--submission").arg(format!("127.0.0.1:{p}")).arg("--submissions").arg(format!("127.0.0.1:{q}"));
        }
        if let Some(text) = &opts.config {
            let path = parent.join(format!("config-{port}.toml"));
            std::fs::write(&path, text).unwrap();
            cmd.arg("--config").arg(path);
        }
        // No test server takes the default HTTP address (127.0.0.1:8025) by chance: one that wants HTTP
        // says where in its `[http]` section.
        if !opts.config.as_deref().is_some_and(|c| c.contains("[http]")) {
            cmd.arg("--no-http");
        }
        let log_file = std::fs::File::create(&log).unwrap();
        cmd.env("MAILROOM_LOG", "info")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        let child = cmd.spawn().expect("spawn mailroom serve");
        let mut s = Server { child: Some(child), port, submission_port, submissions_port, data, log, opts, _dir: None };
        s.wait_listening()?;
        Ok(s)
    }

    /// Starts another server on the same data directory and port (after a crash or stop).
    pub fn restart(&mut self) {
        self.kill();
        let opts = self.opts.clone();
        let mut fresh = Server::spawn(opts, self.data.clone(), self.port);
        self.child = fresh.child.take();
        self.log = fresh.log.clone();
        // The submission listeners get fresh ports at each start.
        self.submission_port = fresh.submission_port;
        self.submissions_port = fresh.submissions_port;
    }

    /// Waits for the "listening" log line: the socket is bound by then (it is bound before the line
    /// is written), and unlike a probe connection it takes no session slot.
    fn wait_listening(&mut self) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if text.contains("listening") {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let text = std::fs::read_to_string(&self.log).unwrap_or_default();
                return Err(format!("server exited early ({status}):\n{text}"));
            }
            assert!(start.elapsed() < WAIT, "server did not start listening within {WAIT:?}:\n{text}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Opens an SMTP session and reads the 220 greeting.
    pub fn connect(&self) -> Smtp {
        let mut s = Smtp::connect(self.port);
        let g = s.read_reply();
        assert_eq!(g.code, 220, "greeting: {g:?}");
        s
    }

    /// The server's stderr so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM (std has no signal API and libc is not a dependency: use kill(1)).
    pub fn sigterm(&self) {
        let st = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status().expect("run kill");
        assert!(st.success(), "kill -TERM failed");
    }

    /// Waits up to `limit` for the server to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Some(st);
            }
            if start.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `<data>/mailboxes/<domain>/<local>`.
    pub fn maildir(&self, addr: &str) -> PathBuf {
        maildir(&self.data, addr)
    }

    /// Files in new/ of ADDR's mailbox.
    pub fn new_files(&self, addr: &str) -> Vec<PathBuf> {
        files_in(&self.maildir(addr).join("new"))
    }

    /// Waits (bounded) for ADDR's new/ to hold exactly `n` files and returns them.
    /// (A 250 means durable in the store's journal and named in new/; the wait is a safety margin.)
    pub fn expect_new(&self, addr: &str, n: usize) -> Vec<PathBuf> {
        let settled = poll(Duration::from_secs(10), Duration::from_millis(5), || {
            Some(self.new_files(addr)).filter(|f| f.len() == n)
        });
        let files = settled.unwrap_or_else(|| self.new_files(addr));
        assert_eq!(files.len(), n, "{addr}: expected {n} message(s) in new/, found {files:?}");
        files
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `<data>/mailboxes/<domain>/<local>`.
pub fn maildir(data: &Path, addr: &str) -> PathBuf {
    let (local, domain) = addr.rsplit_once('@').expect("address with @");
    data.join("mailboxes").join(domain).join(local)
}

/// Waits (at most 5 s) until no message is in flight in `<data>/tmp/`: a 250 means durable in the
/// store's journal and named in new/; the tmp name goes once the file is durable there, a moment later.
pub fn settle_data(data: &Path) {
    poll(Duration::from_secs(5), Duration::from_millis(5), || files_under(&data.join("tmp")).is_empty().then_some(()));
}

/// Regular files in DIR, sorted; empty if DIR does not exist.
pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_file())).map(|e| e.path()).collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// Every regular file anywhere under DIR.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// The `S=` size in a Maildir file name (`<unique>,S=<size>[:2,...]`).
pub fn size_from_name(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let s = name.split(',').find_map(|f| f.strip_prefix("S="))?;
    s.split(':').next()?.parse().ok()
}

/// The message without the trace block the server prepends: the `Return-Path:` line, the
/// `Delivered-To:` line (one recipient of ours only), the `Received:` header with its continuation
/// lines, and the `Authentication-Results:` field of the inbound checks right below them when there is one.
pub fn strip_trace(msg: &[u8]) -> &[u8] {
    let rest = trace_fields(msg);
    if rest.starts_with(b"Authentication-Results:") {
        return strip_fields(rest, &[b"Authentication-Results:"]);
    }
    rest
}

/// `msg` after Return-Path, Delivered-To (if any) and Received.
fn trace_fields(msg: &[u8]) -> &[u8] {
    let mut rest = strip_fields(msg, &[b"Return-Path:"]);
    if rest.starts_with(b"Delivered-To:") {
        rest = strip_fields(rest, &[b"Delivered-To:"]);
    }
    strip_fields(rest, &[b"Received:"])
}

/// `msg` without its first fields, which must be `names` in this order (continuation lines included).
fn strip_fields<'a>(msg: &'a [u8], names: &[&[u8]]) -> &'a [u8] {
    let mut rest = msg;
    for name in names {
        assert!(
            rest.starts_with(name),
            "expected {} at {:?}",
            String::from_utf8_lossy(name),
            String::from_utf8_lossy(&rest[..rest.len().min(80)])
        );
        loop {
            let nl = rest.iter().position(|&b| b == b'\n').expect("header line ends");
            rest = &rest[nl + 1..];
            if !rest.starts_with(b"\t") && !rest.starts_with(b" ") {
                break;
            }
        }
    }
    rest
}

/// The trace block (Return-Path, Delivered-To if any, Received with continuations) as text.
pub fn trace_block(msg: &[u8]) -> String {
    let body = trace_fields(msg);
    String::from_utf8_lossy(&msg[..msg.len() - body.len()]).into_owned()
}

/// CRLF -> LF, as the server stores messages.
pub fn to_lf(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\r' && b.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// One SMTP reply: its code and every line's text (after `NNN-`/`NNN `).
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// The first line's text, e.g. `5.1.1 No such user here`.
    pub fn text(&self) -> &str {
        &self.lines[0]
    }

    /// `code` and the enhanced status code at the start of the first line.
    pub fn is(&self, code: u16, enhanced: &str) -> bool {
        self.code == code && self.lines[0].split_whitespace().next().is_some_and(|e| e == enhanced)
    }
}

/// A raw SMTP client over std::net with bounded reads.
pub struct Smtp {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Smtp {
    pub fn connect(port: u16) -> Smtp {
        Smtp::try_connect(port).expect("connect to the server")
    }

    /// Wraps a connected stream (bounded reads and writes, as [`Smtp::try_connect`]).
    pub fn from_stream(s: TcpStream) -> std::io::Result<Smtp> {
        s.set_read_timeout(Some(WAIT))?;
        s.set_write_timeout(Some(WAIT))?;
        s.set_nodelay(true)?;
        Ok(Smtp { w: s.try_clone()?, r: BufReader::with_capacity(64 * 1024, s) })
    }

    /// Connects to 127.0.0.1:PORT from the loopback address SRC (e.g. 127.0.0.2), so that one test can
    /// look like several clients to the per-address limits. std cannot bind before connecting; tokio's
    /// TcpSocket can, on a throwaway runtime.
    pub fn try_connect_from(src: std::net::Ipv4Addr, port: u16) -> std::io::Result<Smtp> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let std_stream = rt.block_on(async {
            let sock = tokio::net::TcpSocket::new_v4()?;
            sock.bind((src, 0).into())?;
            let s = tokio::time::timeout(WAIT, sock.connect(([127, 0, 0, 1], port).into()))
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
            s.into_std()
        })?;
        std_stream.set_nonblocking(false)?;
        Smtp::from_stream(std_stream)
    }

    /// The local (client) side of the connection.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.w.local_addr().unwrap()
    }

    pub fn set_write_timeout(&self, t: Duration) {
        self.w.set_write_timeout(Some(t)).unwrap();
    }

    pub fn try_connect(port: u16) -> std::io::Result<Smtp> {
        let s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), WAIT)?;
        s.set_read_timeout(Some(WAIT))?;
        s.set_write_timeout(Some(WAIT))?;
        s.set_nodelay(true)?;
        Ok(Smtp { w: s.try_clone()?, r: BufReader::with_capacity(64 * 1024, s) })
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.w.set_read_timeout(Some(t)).unwrap();
    }

    /// Writes raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).expect("write to the server");
    }

    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.w.write_all(bytes)
    }

    /// Reads one (possibly multi-line) reply; panics on EOF, timeout or garbage.
    pub fn read_reply(&mut self) -> Reply {
        self.try_read_reply().unwrap_or_else(|e| panic!("reading a reply: {e}"))
    }

    pub fn try_read_reply(&mut self) -> std::io::Result<Reply> {
        let mut lines = Vec::new();
        let mut code = None;
        loop {
            let mut line = Vec::new();
            let n = (&mut self.r).take(4096).read_until(b'\n', &mut line)?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("connection closed after {lines:?}"),
                ));
            }
            let text = String::from_utf8_lossy(&line).into_owned();
            let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, text.clone());
            if !text.ends_with("\r\n") || text.len() < 5 {
                return Err(bad());
            }
            let c: u16 = text[..3].parse().map_err(|_| bad())?;
            if code.is_some_and(|x| x != c) {
                return Err(bad());
            }
            code = Some(c);
            lines.push(text[4..text.len() - 2].to_string());
            match text.as_bytes()[3] {
                b' ' => break,
                b'-' => continue,
                _ => return Err(bad()),
            }
        }
        Ok(Reply { code: code.unwrap(), lines })
    }

    /// Sends one command line (CRLF added) and reads its reply.
    pub fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes());
        self.read_reply()
    }

    /// Sends a command and asserts the reply code.
    pub fn expect(&mut self, line: &str, code: u16) -> Reply {
        let r = self.cmd(line);
        assert_eq!(r.code, code, "{line:?} -> {r:?}");
        r
    }

    /// EHLO, asserting 250; returns the extension lines.
    pub fn ehlo(&mut self) -> Reply {
        self.expect("EHLO client.e2e.test", 250)
    }

    /// Sends a whole message with DATA (the body is CRLF text; dot-stuffing is done here) and returns
    /// the final reply.
    pub fn data(&mut self, body: &[u8]) -> Reply {
        self.expect("DATA", 354);
        self.send(&dot_stuff(body));
        self.send(b".\r\n");
        self.read_reply()
    }

    /// True if the server closed the connection (EOF within the read timeout).
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.r.read(&mut b), Ok(0) | Err(_))
    }

    /// Waits (bounded by the read timeout) for EOF; false if data or a timeout came instead.
    pub fn wait_eof(&mut self) -> bool {
        let mut b = [0u8; 256];
        match self.r.read(&mut b) {
            Ok(0) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        }
    }

    pub fn shutdown_write(&self) {
        let _ = self.w.shutdown(Shutdown::Write);
    }
}

/// Dot-stuffs CRLF text and makes sure it ends with CRLF (RFC 5321 §4.5.2).
pub fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 16);
    let mut at_line_start = true;
    for &b in body {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// `tests/e2e/NAME` in the repository.
pub fn e2e_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/e2e").join(name)
}

/// Runs `python3 tests/e2e/SCRIPT ARGS...`, with a hard time limit; returns stdout, panicking with
/// stderr if it fails.
pub fn python(script: &str, args: &[&str]) -> String {
    let mut child = Command::new("python3")
        .arg(e2e_script(script))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 on PATH");
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("python3 {script} timed out");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python3 {script} {args:?} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Polls `f` every `every` until it returns Some or `limit` passes.
pub fn poll<T>(limit: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(every);
    }
}
