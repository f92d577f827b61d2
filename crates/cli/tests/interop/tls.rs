//! TLS, AUTH and submission with real clients: Python's smtplib and ssl, and swaks (Debian package).
//! One server with smtp, submission and submissions listeners and its self-signed certificate.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{free_port, user_add, user_add_password, Opts, Server};

/// One server with smtp, submission and submissions listeners and its self-signed certificate; alice has
/// a password, bob does not.
fn start() -> Tls {
    let opts = Opts { hostname: Some("localhost".into()), ..Opts::example() }
        .with_submission()
        // DNS to a closed loopback port: the relayed test message never causes a lookup off the machine.
        .with_config("[auth]\nfailure_delay = \"100ms\"\n[dns]\nservers = [\"127.0.0.1:9\"]\n");
    let server = Server::start_prepared(opts, |data| {
        user_add_password(data, "alice@example.test", "sekret");
        user_add(data, "bob@example.test");
    });
    Tls { server }
}

struct Tls {
    server: Server,
}

impl Tls {
    fn ports(&self) -> [u16; 3] {
        let s = &self.server;
        [s.port, s.submission_port.expect("submission"), s.submissions_port.expect("submissions")]
    }

    fn cafile(&self) -> PathBuf {
        self.server.data.join("tls/cert.pem")
    }

    fn python(&self, case: &str) -> String {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/interop/tls_clients.py");
        let out = Command::new("python3")
            .arg(script)
            .arg(case)
            .args(self.ports().map(|p| p.to_string()))
            .arg(self.cafile())
            .output()
            .expect("python3");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "case {case}:\n{text}");
        text
    }

    fn bob_subjects(&self) -> Vec<String> {
        let dir = self.server.data.join("mailboxes/example.test/bob/new");
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|d| d.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

#[test]
fn smtplib_starttls_login_on_submission_and_the_refusals() {
    let s = start();
    s.python("submission");
    let msgs = s.bob_subjects();
    assert_eq!(msgs.len(), 1, "exactly the one allowed message arrived");
    assert!(msgs[0].contains("Subject: via submission"));
    assert!(msgs[0].contains("with ESMTPSA"), "RFC 3848 keyword for TLS + AUTH: {}", msgs[0]);
    // No password and no AUTH blob in the server's log, for the right and the wrong password alike.
    let log = s.server.log_text();
    assert!(log.contains("authenticated") && log.contains("authentication failed"), "{log}");
    for secret in ["sekret", "wrong", "AGFsaWNlQGV4YW1wbGUudGVzdABzZWtyZXQ=", "c2VrcmV0", "d3Jvbmc="] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
}

#[test]
fn smtplib_smtp_ssl_on_submissions() {
    let s = start();
    s.python("submissions");
    let msgs = s.bob_subjects();
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].contains("with ESMTPSA"));
}

#[test]
fn tls_1_1_is_refused() {
    let s = start();
    let out = s.python("tls11");
    eprintln!("{out}");
}

#[test]
fn commands_injected_behind_starttls_are_never_answered() {
    let s = start();
    s.python("injection");
    assert!(s.bob_subjects().is_empty(), "nothing injected was delivered");
}

#[test]
fn swaks_tls_auth_plain_delivers() {
    let s = start();
    let out = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{}", s.ports()[1])])
        .args(["--tls", "--auth", "PLAIN", "--auth-user", "alice@example.test", "--auth-password", "sekret"])
        .args(["--from", "alice@example.test", "--to", "bob@example.test", "--header", "Subject: via swaks"])
        .args(["--tls-verify", "--tls-ca-path"])
        .arg(s.cafile())
        .args(["--timeout", "20"])
        .output()
        .expect("swaks is installed (scripts/install-test-deps)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "swaks failed:\n{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("235 2.7.0"), "{text}");
    let msgs = s.bob_subjects();
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].contains("Subject: via swaks") && msgs[0].contains("with ESMTPSA"));
}

#[test]
fn swaks_tls_on_the_smtp_port_without_auth_delivers_with_esmtps() {
    let s = start();
    let out = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{}", s.ports()[0])])
        .args(["--tls", "--from", "x@elsewhere.example", "--to", "bob@example.test", "--timeout", "20"])
        .output()
        .expect("swaks");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let msgs = s.bob_subjects();
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].contains("with ESMTPS "), "{}", msgs[0]);
}

/// A self-signed pair from the openssl command line, for the given common name.
fn openssl_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", &format!("/CN={name}"), "-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}

/// The common name of the certificate a TLS server presents (through Python's ssl).
fn presented_cn(port: u16) -> String {
    let code = format!(
        "import ssl\nc=ssl.get_server_certificate(('127.0.0.1',{port}))\nimport subprocess\n\
         print(subprocess.run(['openssl','x509','-noout','-subject'],input=c.encode(),capture_output=True).stdout.decode())"
    );
    let out = Command::new("python3").args(["-c", &code]).output().expect("python3");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn given_certificate_is_used_and_reloaded_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let (c1, k1) = openssl_pair(dir.path(), "first.example");
    let (c2, k2) = openssl_pair(dir.path(), "second.example");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::copy(&c1, &cert).unwrap();
    std::fs::copy(&k1, &key).unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--submissions", &format!("127.0.0.1:{port}"), "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(presented_cn(port).contains("first.example"), "{}", presented_cn(port));
    assert!(!dir.path().join("data/tls/cert.pem").exists(), "no self-signed certificate when one is given");
    std::fs::copy(&c2, &cert).unwrap();
    std::fs::copy(&k2, &key).unwrap();
    let hup = Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap();
    assert!(hup.success());
    let mut seen = String::new();
    while Instant::now() < end {
        seen = presented_cn(port);
        if seen.contains("second.example") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.contains("second.example"), "after SIGHUP the new certificate is served: {seen}");
}
