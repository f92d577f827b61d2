//! Running as a service (issue 14), without root: the systemd notify protocol (READY, RELOADING, READY,
//! STOPPING through `NOTIFY_SOCKET`), one server per data directory (a second one refused naming the
//! first, a new one fine after SIGKILL), the default file modes (0700/0600) of a data directory, and
//! `systemd-analyze verify` on the unit in packaging/.
//!
//! `systemd-analyze` missing fails the unit test, unless `MAILROOM_SKIP_SYSTEMD=1` (CI never sets it).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Opts, Server, WAIT};

/// Reads notify datagrams until `want` ones have come (bounded by [`WAIT`]).
fn recv_states(sock: &UnixDatagram, want: usize) -> Vec<String> {
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < want {
        match sock.recv(&mut buf) {
            Ok(n) => got.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) => panic!("no notify message after {got:?}: {e}"),
        }
    }
    got
}

/// The first line of each datagram (the state; STATUS= follows).
fn first_lines(states: &[String]) -> Vec<&str> {
    states.iter().map(|s| s.lines().next().unwrap_or("")).collect()
}

fn kill(pid: u32, sig: &str) {
    let st = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().expect("run kill");
    assert!(st.success(), "kill -{sig} {pid}");
}

#[test]
fn notify_socket_sees_ready_reloading_ready_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let data = dir.path().join("data");
    let port = common::free_port();
    let mut child = Command::new(common::bin())
        .args(["serve", "--domain", "example.test", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(&data)
        .env("NOTIFY_SOCKET", &sock_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let ready = recv_states(&sock, 1);
    assert_eq!(first_lines(&ready), ["READY=1"]);
    // READY means listening: a client gets its greeting.
    let mut smtp = common::Smtp::connect(port);
    assert_eq!(smtp.read_reply().code, 220);
    drop(smtp);
    kill(pid, "HUP");
    let reload = recv_states(&sock, 2);
    assert_eq!(first_lines(&reload), ["RELOADING=1", "READY=1"]);
    kill(pid, "TERM");
    let stop = recv_states(&sock, 1);
    assert_eq!(first_lines(&stop), ["STOPPING=1"]);
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(40), "server did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn abstract_notify_socket_gets_ready() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("mailroom-service-test-{}", std::process::id());
    let sock =
        UnixDatagram::bind_addr(&std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut child = Command::new(common::bin())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.path().join("data"))
        .env("NOTIFY_SOCKET", format!("@{name}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let got = recv_states(&sock, 1);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(first_lines(&got), ["READY=1"]);
}

#[test]
fn second_server_is_refused_naming_the_first_and_a_server_after_sigkill_starts() {
    let mut first = Server::start(Opts::example());
    let port = common::free_port();
    let out = Command::new(common::bin())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(&first.data)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a second server on the same data dir started: {err}");
    assert!(
        err.contains(&format!("process {}", first.pid())) && err.contains("already serves"),
        "the refusal does not name the running server (pid {}): {err}",
        first.pid()
    );
    // SIGKILL: no chance to release anything; the kernel drops the lock with the process.
    first.restart();
    let mut s = first.connect();
    s.ehlo();
}

/// Mode bits of `p` (permission, setuid/setgid, sticky).
fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn data_directory_is_private_by_default() {
    let server = Server::start_with_users(Opts::example(), &["bob@example.test"]);
    let mut s = server.connect();
    s.ehlo();
    s.expect("MAIL FROM:<a@b.test>", 250);
    s.expect("RCPT TO:<bob@example.test>", 250);
    assert_eq!(s.data(b"Subject: modes\r\n\r\nhi\r\n").code, 250);
    let msg = server.expect_new("bob@example.test", 1).remove(0);
    assert_eq!(mode(&msg), 0o600, "{}", msg.display());
    let mbox = server.maildir("bob@example.test");
    let mut dirs: Vec<PathBuf> = ["", "mailboxes", "mailboxes/example.test", "tmp", "journal", "queue", "tls"]
        .iter()
        .map(|p| server.data.join(p))
        .collect();
    dirs.extend(["", "new", "cur", "tmp"].iter().map(|p| mbox.join(p)));
    for d in &dirs {
        assert_eq!(mode(d), 0o700, "{}", d.display());
    }
    for f in ["users.toml", "queue/server.pid", "tls/key.pem"] {
        let p = server.data.join(f);
        if p.exists() {
            assert_eq!(mode(&p) & 0o077, 0, "{} is readable by others", p.display());
        }
    }
}

/// The repository's packaging/ directory.
fn packaging() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging")
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        let msg = "systemd-analyze is not installed (apt-get install systemd)";
        if std::env::var("MAILROOM_SKIP_SYSTEMD").is_ok_and(|v| v == "1") {
            eprintln!("NOTICE: {msg}; skipped because MAILROOM_SKIP_SYSTEMD=1");
            return;
        }
        panic!("{msg} (set MAILROOM_SKIP_SYSTEMD=1 to skip)");
    }
    let unit = std::fs::read_to_string(packaging().join("mailroom.service")).unwrap();
    // verify wants ExecStart's binary to exist: check a copy naming the binary just built.
    assert!(unit.contains("ExecStart=/usr/bin/mailroom serve"), "the unit runs /usr/bin/mailroom serve");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("mailroom.service");
    std::fs::write(&copy, unit.replace("/usr/bin/mailroom", common::bin())).unwrap();
    // --man=no: the man pages Documentation= names are installed by the package (whose test verifies the
    // installed unit with them), not here.
    let out = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&copy).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "systemd-analyze verify failed:\n{text}");
    // verify exits 0 on some warnings: none may mention the unit.
    let ours: Vec<&str> = text.lines().filter(|l| l.contains("mailroom.service")).collect();
    assert!(ours.is_empty(), "systemd-analyze verify warns about the unit:\n{text}");
    for key in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "User=mailroom",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=mailroom",
        "PrivateTmp=yes",
    ] {
        assert!(unit.lines().any(|l| l == key), "the unit lacks {key}");
    }
}

#[test]
fn completions_for_bash_zsh_fish_and_man_pages_come_from_the_cli_definition() {
    for (shell, marker) in
        [("bash", "complete -F _mailroom"), ("zsh", "#compdef mailroom"), ("fish", "complete -c mailroom")]
    {
        let out = Command::new(common::bin()).args(["completions", shell]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains(marker), "{shell}: {text}");
        // Subcommands and their flags are in it.
        // fish writes long flags as `-l data-dir`.
        let has_flag = text.contains("--data-dir") || text.contains("-l data-dir");
        assert!(text.contains("check-config") && has_flag, "{shell} lacks commands or flags");
    }
    let bad = Command::new(common::bin()).args(["completions", "tcsh"]).output().unwrap();
    assert!(!bad.status.success(), "an unknown shell is refused");
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(common::bin()).arg("man").arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for page in ["mailroom.1", "mailroom-serve.1", "mailroom-user-add.1", "mailroom-completions.1"] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap_or_default();
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{page} is not a man page: {text:.100}");
    }
    let serve = std::fs::read_to_string(dir.path().join("mailroom-serve.1")).unwrap();
    assert!(serve.contains("data\\-dir") && serve.contains("submissions"), "serve's page lacks its options");
    // The man generator is hidden: --help lists only what users run.
    let help = Command::new(common::bin()).arg("--help").output().unwrap();
    assert!(!String::from_utf8_lossy(&help.stdout).lines().any(|l| l.trim_start().starts_with("man ")));
}
