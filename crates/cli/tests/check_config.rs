//! `mailroom check-config` and the log settings: the effective configuration printed as TOML that reads
//! back to itself, everything `serve` and `sendmail` would refuse later refused now (naming the key), host
//! names as listener addresses, invalid log filters reported, `--log-format json`, and log lines with
//! plain values. Certificates for the TLS checks are made with `openssl` (Debian's `openssl` package).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{bin, free_port};

fn check_config(path: &Path) -> Output {
    Command::new(bin())
        .args(["check-config", "--config"])
        .arg(path)
        .env_remove("RUST_LOG")
        .env_remove("MAILROOM_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run mailroom check-config")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A self-signed certificate and its key in `dir` (openssl), named `NAME.crt` and `NAME.key`.
fn openssl_pair(dir: &Path, name: &str, days: u32) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .args(["-days", &days.to_string(), "-subj", "/CN=old.example.test", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl must be installed (Debian package openssl)");
    assert!(out.status.success(), "openssl req: {}", text(&out.stderr));
    (cert, key)
}

fn write_private(path: &Path, contents: &str, mode: u32) {
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A config that sets keys in every section, each away from its default.
fn full_config(dir: &Path) -> String {
    let (cert, key) = openssl_pair(dir, "server", 365);
    write_private(&dir.join("relay-pw"), "relay secret\n", 0o600);
    write_private(&dir.join("client-pw"), "client secret\n", 0o600);
    format!(
        "[server]\nhostname = \"mx.example.test\"\ndata_dir = \"{data}\"\nlisten = [\"localhost:2525\"]\n\
         submission = [\"127.0.0.1:5587\"]\nsubmissions = [\"[::1]:5465\"]\ndomains = [\"example.test\", \"Other.Example\"]\n\
         shutdown_grace = \"45s\"\n\
         [limits]\nmax_message_size = 1048576\nmax_recipients = 50\ncommand_timeout = \"2m\"\ndata_timeout = \"90s\"\n\
         error_delay = \"250ms\"\ntrusted_networks = [\"127.0.0.0/8\"]\n\
         [tls]\ncert = \"{cert}\"\nkey = \"{key}\"\n\
         [auth]\nallow_plaintext_auth = true\nfailure_delay = \"2s\"\n\
         [delivery]\nrelay_networks = [\"127.0.0.1/32\"]\nport = 2526\ntls = \"required\"\n\
         relayhost = \"[smart.example.test]:587\"\nrelayhost_tls = \"tls\"\nrelayhost_user = \"relay@example.test\"\n\
         relayhost_password_file = \"{relay_pw}\"\nmin_backoff = \"1s\"\nmax_backoff = \"2h\"\nmax_queue_lifetime = \"3d\"\n\
         delay_warning = \"4h\"\nmax_hops = 50\n\
         [dns]\nservers = [\"127.0.0.1:5353\"]\n\
         [client]\nserver = \"mail.example.test:587\"\ntls = \"starttls\"\nuser = \"alice@example.test\"\n\
         password_file = \"client-pw\"\nhelo = \"laptop.example.test\"\nfrom = \"alice@example.test\"\n\
         domain = \"example.test\"\ntimeout = \"20s\"\n",
        data = dir.join("data").display(),
        cert = cert.display(),
        key = key.display(),
        relay_pw = dir.join("relay-pw").display(),
    )
}

#[test]
fn check_config_prints_toml_that_reads_back_to_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("mailroom.toml");
    std::fs::write(&first, full_config(dir.path())).unwrap();
    let out = check_config(&first);
    assert!(out.status.success(), "check-config: {}", text(&out.stderr));
    let printed = text(&out.stdout);
    let value: toml::Table = toml::from_str(&printed).unwrap_or_else(|e| panic!("stdout is not TOML: {e}\n{printed}"));
    for section in ["server", "limits", "tls", "auth", "delivery", "dns", "client"] {
        assert!(value.contains_key(section), "[{section}] printed:\n{printed}");
    }
    for line in [
        "shutdown_grace = \"45s\"",
        "command_timeout = \"2m\"",
        "data_timeout = \"90s\"",
        "error_delay = \"250ms\"",
        "delay_warning = \"4h\"",
        "max_queue_lifetime = \"3d\"",
        "listen = [\"127.0.0.1:2525\"]",
        "submissions = [\"[::1]:5465\"]",
        "timeout = \"20s\"",
        "domain = \"example.test\"",
    ] {
        assert!(printed.lines().any(|l| l == line), "{line} in:\n{printed}");
    }
    // The client's relative password file is printed resolved, so the output works from anywhere.
    assert!(printed.contains(&format!("password_file = \"{}\"", dir.path().join("client-pw").display())), "{printed}");
    assert!(!printed.contains("secret"), "no password is printed");
    // Run again on its own output: the same, byte for byte.
    let second = dir.path().join("printed.toml");
    std::fs::write(&second, &printed).unwrap();
    let again = check_config(&second);
    assert!(again.status.success(), "check-config on its own output: {}", text(&again.stderr));
    assert_eq!(text(&again.stdout), printed);
}

#[test]
fn check_config_without_a_file_prints_the_defaults_as_toml() {
    let out = Command::new(bin()).arg("check-config").stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(toml::from_str::<toml::Table>(&printed).is_ok(), "{printed}");
    assert!(printed.contains("listen = [\"127.0.0.1:2525\"]") && printed.contains("[client]"), "{printed}");
    assert!(printed.lines().all(|l| !l.contains("config ok")), "messages go to stderr");
}

/// Each broken config exits non-zero and names what is wrong.
#[test]
fn check_config_refuses_what_serve_or_sendmail_would_refuse_later() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (cert, key) = openssl_pair(d, "a", 365);
    let (_, other_key) = openssl_pair(d, "b", 365);
    write_private(&d.join("open-pw"), "pw\n", 0o644);
    write_private(&d.join("world-relay-pw"), "pw\n", 0o604);
    let p = |p: &Path| p.display().to_string();
    let cases: Vec<(String, &str)> = vec![
        ("[client]\nsever = \"typo:25\"\n".into(), "sever"),
        ("[client]\ntls = \"sometimes\"\n".into(), "tls"),
        ("[client]\nserver = \"no port here\"\n".into(), "server"),
        ("[client]\nserver = \"mail.example.test\"\n".into(), "server"),
        ("[client]\nfrom = \"not an address\"\n".into(), "from"),
        ("[client]\nhelo = \"bad helo\"\n".into(), "helo"),
        ("[client]\ndomain = \"../etc\"\n".into(), "domain"),
        ("[client]\ntimeout = \"soon\"\n".into(), "timeout"),
        ("[client]\nuser = \"a@x.test\"\npassword_file = \"/pw\"\n".into(), "user"),
        (format!("[client]\ntls = \"starttls\"\nuser = \"a@x.test\"\npassword_file = \"{}\"\n", p(&d.join("open-pw"))), "readable by its group or others"),
        (format!("[client]\ntls = \"starttls\"\nuser = \"a@x.test\"\npassword_file = \"{}\"\n", p(&d.join("missing"))), "password_file"),
        (format!("[client]\ntls = \"starttls\"\ncafile = \"{}\"\n", p(&d.join("missing-ca.pem"))), "cafile"),
        (format!("[tls]\ncert = \"{}\"\nkey = \"{}\"\n", p(&cert), p(&other_key)), "does not belong to the certificate"),
        (format!("[tls]\ncert = \"{}\"\nkey = \"{}\"\n", p(&d.join("missing.crt")), p(&key)), "missing.crt"),
        (format!("[tls]\ncert = \"{}\"\n", p(&cert)), "tls.cert and tls.key"),
        (
            format!(
                "[delivery]\nrelayhost = \"[smart.example.test]\"\nrelayhost_user = \"u\"\nrelayhost_password_file = \"{}\"\n",
                p(&d.join("world-relay-pw"))
            ),
            "readable by others",
        ),
        ("[server]\nlisten = [\"no-such-host.invalid:25\"]\n".into(), "no-such-host.invalid"),
        ("[server]\nlisten = [\"localhost\"]\n".into(), "localhost"),
        ("[server]\nsubmission = [\"127.0.0.1:99999\"]\n".into(), "99999"),
    ];
    for (toml, named) in cases {
        let path = d.join("case.toml");
        std::fs::write(&path, &toml).unwrap();
        let out = check_config(&path);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "passed check-config:\n{toml}");
        assert!(err.contains(named), "the error for\n{toml}names {named:?}: {err}");
        assert!(out.stdout.is_empty(), "nothing on stdout for a refused config: {}", text(&out.stdout));
    }
    // The matching pair passes.
    std::fs::write(d.join("good.toml"), format!("[tls]\ncert = \"{}\"\nkey = \"{}\"\n", p(&cert), p(&key))).unwrap();
    let out = check_config(&d.join("good.toml"));
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Waits until something accepts on 127.0.0.1:PORT.
fn wait_listening(port: u16, child: &mut std::process::Child, log: &Path) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("serve exited ({st}):\n{}", std::fs::read_to_string(log).unwrap_or_default());
        }
        assert!(start.elapsed() < Duration::from_secs(20), "serve did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `serve` with these flags and environment, logging to a file; stopped with SIGTERM by the caller.
fn serve(dir: &Path, port: u16, listen: &str, extra: &[&str], env: &[(&str, &str)]) -> (std::process::Child, PathBuf) {
    let log = dir.join(format!("serve-{port}.log"));
    let mut cmd = Command::new(bin());
    cmd.arg("serve").arg("--data-dir").arg(dir.join("data")).args(["--listen", listen, "--domain", "example.test"]);
    cmd.args(extra).env_remove("RUST_LOG").env_remove("MAILROOM_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap()).spawn();
    (child.expect("spawn serve"), log)
}

fn stop(mut child: std::process::Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One SMTP session (EHLO, MAIL with SIZE, RCPT, QUIT) so that the log has session lines.
fn smtp_session(port: u16) {
    use std::io::{BufRead, BufReader, Write};
    let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let mut line = String::new();
    let mut read_reply = |r: &mut BufReader<std::net::TcpStream>| loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            break;
        }
    };
    read_reply(&mut r);
    for cmd in ["EHLO client.test", "MAIL FROM:<a@example.org> SIZE=100", "RCPT TO:<nobody@example.test>", "QUIT"] {
        w.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        read_reply(&mut r);
    }
}

#[test]
fn serve_listens_on_a_host_name() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (mut child, log) = serve(dir.path(), port, &format!("localhost:{port}"), &[], &[]);
    wait_listening(port, &mut child, &log);
    stop(child);
}

/// A bad filter in MAILROOM_LOG or RUST_LOG is reported on stderr (the server still starts, at info).
#[test]
fn invalid_log_filters_are_reported() {
    for var in ["MAILROOM_LOG", "RUST_LOG"] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let (mut child, log) = serve(dir.path(), port, &format!("127.0.0.1:{port}"), &[], &[(var, "debgu")]);
        wait_listening(port, &mut child, &log);
        stop(child);
        let text = std::fs::read_to_string(&log).unwrap();
        let first = text.lines().next().unwrap_or("");
        assert!(first.contains(var) && first.contains("debgu") && first.contains("not a valid log filter"), "{text}");
        assert!(text.contains("listening"), "logging went on at info: {text}");
    }
}

/// Log lines carry plain values: no `Some(...)`, no Rust enum names (`role=Smtp`), in text and JSON.
#[test]
fn log_lines_carry_plain_values_and_json_is_one_object_per_line() {
    for format in ["text", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let env = [("MAILROOM_LOG", "debug")];
        let (mut child, log) = serve(dir.path(), port, &format!("127.0.0.1:{port}"), &["--log-format", format], &env);
        wait_listening(port, &mut child, &log);
        smtp_session(port);
        std::thread::sleep(Duration::from_millis(300));
        stop(child);
        let text = std::fs::read_to_string(&log).unwrap();
        for bad in ["Some(", "None", "Smtp", "Submission"] {
            assert!(!text.contains(bad), "{format}: {bad:?} in the log:\n{text}");
        }
        assert!(text.contains("smtp") && text.contains("connect"), "{format}: {text}");
        if format == "json" {
            for line in text.lines() {
                let v: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                assert!(v.get("level").is_some() && v.get("timestamp").is_some(), "{line}");
            }
        }
    }
}
