//! The client half of TLS and AUTH end to end: `mailroom send` and `mailroom sendmail` against a real
//! `mailroom serve` with smtp, submission (STARTTLS) and submissions (implicit TLS) listeners and its
//! self-signed certificate at `<data-dir>/tls/cert.pem`; and `--starttls` against a scripted plain server
//! that does not offer STARTTLS.

mod send_support;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use send_support::run_with;

const PASSWORD: &str = "sekret horse";
const LIMIT: Duration = Duration::from_secs(60);

struct Server {
    child: Child,
    /// smtp, submission, submissions.
    ports: [u16; 3],
    data: PathBuf,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let out = run_with(
        &["user", "add", "alice@example.test", "--password-stdin", "--data-dir", d],
        format!("{PASSWORD}\n").as_bytes(),
        &[],
        LIMIT,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(run_with(&["user", "add", "bob@example.test", "--data-dir", d], b"", &[], LIMIT).status.success());
    let ports = [free_port(), free_port(), free_port()];
    let cfg = dir.path().join("server.toml");
    std::fs::write(&cfg, "[auth]\nfailure_delay = \"100ms\"\n").unwrap();
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(["serve", "--domain", "example.test", "--hostname", "localhost", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", &format!("127.0.0.1:{}", ports[0])])
        .args(["--submission", &format!("127.0.0.1:{}", ports[1])])
        .args(["--submissions", &format!("127.0.0.1:{}", ports[2])])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let s = Server { child, ports, data, dir };
    let end = Instant::now() + Duration::from_secs(20);
    for p in ports {
        while TcpStream::connect(("127.0.0.1", p)).is_err() {
            assert!(Instant::now() < end, "server did not start listening on {p}: {}", s.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert!(s.cafile().exists(), "self-signed certificate at {}", s.cafile().display());
    s
}

impl Server {
    fn cafile(&self) -> PathBuf {
        self.data.join("tls/cert.pem")
    }
    fn cafile_str(&self) -> String {
        self.cafile().to_str().unwrap().to_string()
    }
    fn addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.ports[i])
    }
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
    /// The messages in bob's new/.
    /// Bob's messages, once none is in flight (a 250 means durable in the store's journal and named
    /// in new/; its tmp name goes a moment later, when the file is durable there).
    fn bob(&self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_dir(self.data.join("tmp")).is_ok_and(|mut d| d.next().is_some())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        let dir = self.data.join("mailboxes/example.test/bob/new");
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|d| d.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// `mailroom send` from alice to bob through `server` with the extra `flags`, the password on stdin.
fn send(server: &str, subject: &str, flags: &[&str], stdin: &str) -> Output {
    let mut args = vec![
        "send",
        "--server",
        server,
        "--from",
        "alice@example.test",
        "--to",
        "bob@example.test",
        "--subject",
        subject,
        "--body",
        "hello over TLS",
        "--timeout",
        "20s",
    ];
    args.extend_from_slice(flags);
    run_with(&args, stdin.as_bytes(), &[], LIMIT)
}

fn text(out: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The forms in which the password could leak: itself and the base64 of PLAIN and LOGIN responses.
fn leaks(text: &str) -> Option<String> {
    let blobs = [
        PASSWORD.to_string(),
        mailroom_proto::base64::encode(format!("\0alice@example.test\0{PASSWORD}").as_bytes()),
        mailroom_proto::base64::encode(PASSWORD.as_bytes()),
    ];
    blobs.into_iter().find(|b| text.contains(b.as_str()))
}

#[test]
fn send_starttls_with_the_servers_cert_and_auth_delivers_with_esmtpsa() {
    let s = start();
    let ca = s.cafile_str();
    let out = send(
        &s.addr(1),
        "via starttls",
        &["--starttls", "--cafile", &ca, "--user", "alice@example.test", "--password-stdin", "-v"],
        &format!("{PASSWORD}\n"),
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}\n{}", s.log());
    let msgs = s.bob();
    assert_eq!(msgs.len(), 1, "{t}");
    assert!(msgs[0].contains("Subject: via starttls"), "{}", msgs[0]);
    assert!(msgs[0].contains("with ESMTPSA"), "RFC 3848: TLS and AUTH: {}", msgs[0]);
    // The transcript: STARTTLS, the handshake, EHLO again, AUTH masked; the password nowhere.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let starttls = stdout.find("C: STARTTLS").expect("STARTTLS in the transcript");
    let tls = stdout.find("(TLS established:").expect("TLS noted");
    let ehlo2 = stdout.rfind("C: EHLO ").unwrap();
    let auth = stdout.find("C: AUTH PLAIN ********").expect("masked AUTH");
    assert!(starttls < tls && tls < ehlo2 && ehlo2 < auth, "{stdout}");
    assert!(stdout.contains("S: 235 2.7.0"), "{stdout}");
    assert_eq!(leaks(&t), None, "{t}");
}

#[test]
fn send_implicit_tls_to_submissions_delivers() {
    let s = start();
    let ca = s.cafile_str();
    let out = send(
        &s.addr(2),
        "via smtps",
        &["--tls", "--cafile", &ca, "--user", "alice@example.test", "--password-stdin", "-v"],
        &format!("{PASSWORD}\n"),
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}\n{}", s.log());
    let msgs = s.bob();
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].contains("Subject: via smtps") && msgs[0].contains("with ESMTPSA"), "{}", msgs[0]);
    // TLS from the first byte: no STARTTLS in the transcript.
    assert!(!t.contains("C: STARTTLS"), "{t}");
    assert_eq!(leaks(&t), None, "{t}");
}

#[test]
fn a_wrong_password_is_exit_69_with_the_535() {
    let s = start();
    let ca = s.cafile_str();
    let out = send(
        &s.addr(1),
        "wrong",
        &["--starttls", "--cafile", &ca, "--user", "alice@example.test", "--password-stdin", "-v"],
        "not the password\n",
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(69), "{t}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("535 5.7.8"), "{t}");
    assert!(!t.contains("not the password"), "{t}");
    // Nothing was sent after the refused AUTH but QUIT.
    assert!(!t.contains("C: MAIL"), "{t}");
    assert!(s.bob().is_empty());
}

#[test]
fn the_self_signed_cert_is_refused_without_cafile_and_taken_with_insecure() {
    let s = start();
    // Verified against the system roots, which do not know it: exit 69 (permanent), with a hint.
    let out = send(
        &s.addr(1),
        "untrusted",
        &["--starttls", "--user", "alice@example.test", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(69), "{t}");
    assert!(t.contains("not trusted") && t.contains("--cafile"), "{t}");
    assert!(s.bob().is_empty());

    // --insecure: delivered, with a loud warning.
    let out = send(
        &s.addr(2),
        "insecure",
        &["--tls", "--insecure", "--user", "alice@example.test", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("WARNING") && stderr.contains("verification is OFF"), "{t}");
    assert_eq!(s.bob().len(), 1);
}

#[test]
fn auth_in_plain_text_is_refused_before_connecting() {
    let s = start();
    // The submission port without STARTTLS: credentials would go in the clear, so the client refuses
    // before it connects (usage error 64) and says how to fix it; the server sees nothing.
    let out = send(
        &s.addr(1),
        "plain auth",
        &["--user", "alice@example.test", "--password-stdin", "-v"],
        &format!("{PASSWORD}\n"),
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(64), "{t}");
    assert!(t.contains("without TLS") && t.contains("--starttls"), "{t}");
    assert!(!t.contains("C: EHLO"), "nothing was sent: {t}");
    assert_eq!(leaks(&t), None, "{t}");
    assert!(s.bob().is_empty());
}

#[test]
fn password_command_is_not_run_when_the_server_offers_no_auth() {
    let s = start();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let cfg = dir.path().join("mailroom.toml");
    // The smtp listener: STARTTLS, and no AUTH before or after it.
    std::fs::write(
        &cfg,
        format!(
            "[client]\nserver = \"{}\"\ntls = \"starttls\"\ncafile = \"{}\"\nuser = \"alice@example.test\"\n\
             password_command = \"touch '{}'; echo pw\"\n",
            s.addr(0),
            s.cafile_str(),
            marker.display()
        ),
    )
    .unwrap();
    let out = run_with(
        &["sendmail", "--config", cfg.to_str().unwrap(), "bob@example.test"],
        b"Subject: s\n\nhi\n",
        &[],
        LIMIT,
    );
    let t = text(&out);
    assert!(!marker.exists(), "password_command ran though the server offers no AUTH: {t}");
    assert_eq!(out.status.code(), Some(69), "{t}");
    assert!(t.contains("does not offer AUTH"), "{t}");
    assert!(s.bob().is_empty());
}

#[test]
fn usage_errors() {
    let cases: &[(&[&str], &str)] = &[
        (&["--user", "a@x.test", "--password-stdin"], "--body or --message"),
        (&["--user", "a@x.test"], "--password-stdin"),
        (&["--cafile", "/nonexistent.pem"], "need --starttls or --tls"),
        (&["--insecure"], "need --starttls or --tls"),
    ];
    for (flags, want) in cases {
        let mut args = vec!["send", "--server", "127.0.0.1:9", "--from", "a@x.test", "--to", "b@x.test"];
        args.extend_from_slice(flags);
        let out = run_with(&args, b"pw\nbody\n", &[], LIMIT);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(64), "{flags:?}: {t}");
        assert!(t.contains(want), "{flags:?}: {t}");
    }
    // An unreadable CA file is a configuration error (78), found before connecting.
    let out = run_with(
        &[
            "send",
            "--server",
            "127.0.0.1:9",
            "--from",
            "a@x.test",
            "--to",
            "b@x.test",
            "--body",
            "x",
            "--tls",
            "--cafile",
            "/nonexistent.pem",
        ],
        b"",
        &[],
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    assert!(text(&out).contains("/nonexistent.pem"));
}

/// A plain server that offers no STARTTLS, answers everything 250 and keeps every line it gets.
fn plain_server() -> (String, std::thread::JoinHandle<Vec<String>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let h = std::thread::spawn(move || {
        let (sock, _) = l.accept().unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut w = sock.try_clone().unwrap();
        let mut r = BufReader::new(sock);
        let mut seen = Vec::new();
        let _ = w.write_all(b"220 plain.test ESMTP\r\n");
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            let cmd = line.trim_end().to_string();
            let reply: &[u8] = if cmd.to_ascii_uppercase().starts_with("EHLO") {
                b"250-plain.test\r\n250-PIPELINING\r\n250 AUTH PLAIN LOGIN\r\n"
            } else if cmd.eq_ignore_ascii_case("QUIT") {
                b"221 bye\r\n"
            } else if cmd.eq_ignore_ascii_case("DATA") {
                b"354 go\r\n"
            } else {
                b"250 ok\r\n"
            };
            seen.push(cmd);
            let _ = w.write_all(reply);
        }
        seen
    });
    (addr, h)
}

#[test]
fn starttls_without_the_offer_fails_and_sends_nothing_in_plain_text() {
    let (addr, server) = plain_server();
    let out = send(
        &addr,
        "must not leave",
        &["--starttls", "--insecure", "--user", "alice@example.test", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(69), "{t}");
    assert!(t.contains("does not offer STARTTLS"), "{t}");
    let seen = server.join().unwrap();
    assert!(seen.len() == 2 && seen[0].starts_with("EHLO") && seen[1] == "QUIT", "only EHLO and QUIT: {seen:?}");
}

fn write_mode(path: &Path, content: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn sendmail_starttls_with_a_password_file_delivers_and_a_readable_one_is_refused() {
    let s = start();
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("password");
    write_mode(&pw, &format!("{PASSWORD}\n"), 0o600);
    let cfg = dir.path().join("mailroom.toml");
    std::fs::write(
        &cfg,
        format!(
            "[client]\nserver = \"{}\"\ntls = \"starttls\"\ncafile = \"{}\"\nuser = \"alice@example.test\"\n\
             password_file = \"password\"\ntimeout = \"20s\"\n",
            s.addr(1),
            s.cafile_str()
        ),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let msg = b"From: alice@example.test\nTo: bob@example.test\nSubject: via sendmail\n\nhello\n";
    let out = run_with(&["sendmail", "--config", c, "-t", "-v"], msg, &[], LIMIT);
    let t = text(&out);
    assert!(out.status.success(), "{t}\n{}", s.log());
    let msgs = s.bob();
    assert_eq!(msgs.len(), 1, "{t}");
    assert!(msgs[0].contains("Subject: via sendmail") && msgs[0].contains("with ESMTPSA"), "{}", msgs[0]);
    assert!(t.contains("C: AUTH PLAIN ********"), "{t}");
    assert_eq!(leaks(&t), None, "{t}");

    // The same file readable by everyone: refused before anything is sent, and said why.
    write_mode(&pw, &format!("{PASSWORD}\n"), 0o644);
    let out = run_with(&["sendmail", "--config", c, "-t"], msg, &[], LIMIT);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(78), "{t}");
    assert!(t.contains("readable by its group or others") && t.contains("0644") && t.contains("chmod 600"), "{t}");
    assert_eq!(s.bob().len(), 1, "nothing more delivered");
}

#[test]
fn sendmail_implicit_tls_with_a_password_command() {
    let s = start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("mailroom.toml");
    std::fs::write(
        &cfg,
        format!(
            "[client]\nserver = \"{}\"\ntls = \"tls\"\ncafile = \"{}\"\nuser = \"alice@example.test\"\n\
             password_command = \"printf '%s\\\\n' '{PASSWORD}'\"\n",
            s.addr(2),
            s.cafile_str()
        ),
    )
    .unwrap();
    let out = run_with(
        &["sendmail", "--config", cfg.to_str().unwrap(), "bob@example.test"],
        b"From: alice@example.test\nSubject: cmd\n\nhi\n",
        &[],
        LIMIT,
    );
    assert!(out.status.success(), "{}", text(&out));
    let msgs = s.bob();
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].contains("Subject: cmd") && msgs[0].contains("with ESMTPSA"));
}

#[test]
fn interactive_send_over_starttls_with_the_password_as_first_line() {
    let s = start();
    let ca = s.cafile_str();
    let addr = s.addr(1);
    let out = run_with(
        &[
            "send",
            "--interactive",
            "--server",
            &addr,
            "--helo",
            "client.test",
            "--starttls",
            "--cafile",
            &ca,
            "--user",
            "alice@example.test",
            "--password-stdin",
            "--from",
            "alice@example.test",
            "--to",
            "bob@example.test",
            "--subject",
            "guided",
            "--body",
            "hello",
        ],
        format!("{PASSWORD}\n").as_bytes(),
        &[],
        LIMIT,
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}\n{}", s.log());
    assert!(t.contains("C: AUTH PLAIN ********") && t.contains("(hidden)"), "{t}");
    assert_eq!(leaks(&t), None, "{t}");
    let msgs = s.bob();
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].contains("Subject: guided") && msgs[0].contains("with ESMTPSA"));
}
