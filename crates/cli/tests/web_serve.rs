//! `mailroom serve` with its HTTP listener: `--http`, `--no-http`, /healthz, /metrics from the
//! server's own registry (the received counter moves after mail is sent), `mailroom token
//! create|list|revoke` against the API, and `mailroom user add --admin` / `user admin on|off`.

mod common;

use common::*;

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(WAIT).build().unwrap()
}

fn counter(text: &str, series: &str) -> f64 {
    text.lines().filter(|l| l.starts_with(series)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

#[test]
fn serve_answers_http_and_metrics_move_with_mail() {
    let port = free_port();
    let config = format!("[http]\nlisten = \"127.0.0.1:{port}\"\n");
    let server = Server::start_with_users(Opts::example().with_config(&config), &["alice@example.test"]);
    let base = format!("http://127.0.0.1:{port}");
    let c = http();
    assert_eq!(c.get(format!("{base}/healthz")).send().unwrap().text().unwrap(), "ok\n");
    let before = c.get(format!("{base}/metrics")).send().unwrap();
    assert_eq!(before.status(), 200);
    assert!(before.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let before = counter(&before.text().unwrap(), "mailroom_messages_received_total");
    let mut s = server.connect();
    s.ehlo();
    s.expect("MAIL FROM:<a@example.org>", 250);
    s.expect("RCPT TO:<alice@example.test>", 250);
    assert_eq!(s.data(b"Subject: m\r\n\r\nx\r\n").code, 250);
    let after =
        counter(&c.get(format!("{base}/metrics")).send().unwrap().text().unwrap(), "mailroom_messages_received_total");
    assert_eq!(after, before + 1.0, "the received counter moved");
}

#[test]
fn no_http_binds_nothing_and_an_explicit_busy_address_is_fatal() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = busy.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = std::process::Command::new(bin())
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port()), "--http", &taken.to_string()])
        .arg("--data-dir")
        .arg(&data)
        .env("MAILROOM_LOG", "info")
        .output()
        .unwrap();
    assert!(!out.status.success(), "an explicit address that cannot be bound is fatal");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&taken.to_string()));
    // `--no-http` sets this same switch.
    let port = free_port();
    let off = Server::start(
        Opts::example().with_config(&format!("[http]\nlisten = \"127.0.0.1:{port}\"\nenabled = false\n")),
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "[http] enabled = false binds nothing");
    drop(off);
}

#[test]
fn token_and_admin_commands_work_against_the_api() {
    let port = free_port();
    let config = format!("[http]\nlisten = \"127.0.0.1:{port}\"\n");
    let server = Server::start_prepared(Opts::example().with_config(&config), |data| {
        let out = mailroom(data, &["user", "add", "root@example.test", "--admin"]);
        assert!(out.status.success());
        user_add(data, "bob@example.test");
    });
    let base = format!("http://127.0.0.1:{port}");
    let out = mailroom(&server.data, &["token", "create", "root@example.test"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let c = http();
    let me: serde_json::Value = c.get(format!("{base}/api/v1/me")).bearer_auth(&token).send().unwrap().json().unwrap();
    assert_eq!(me, serde_json::json!({ "address": "root@example.test", "admin": true }));
    // Admin off: the users route is refused (the store rereads users.toml within about a second).
    assert!(mailroom(&server.data, &["user", "admin", "root@example.test", "off"]).status.success());
    let deadline = std::time::Instant::now() + WAIT;
    while c.get(format!("{base}/api/v1/users")).bearer_auth(&token).send().unwrap().status() != 403 {
        assert!(std::time::Instant::now() < deadline, "admin off never applied");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let list = String::from_utf8(mailroom(&server.data, &["token", "list"]).stdout).unwrap();
    let id = list.split_whitespace().next().unwrap().to_owned();
    assert!(list.contains("root@example.test") && !list.contains(&token), "{list}");
    assert!(mailroom(&server.data, &["token", "revoke", &id]).status.success());
    assert_eq!(c.get(format!("{base}/api/v1/me")).bearer_auth(&token).send().unwrap().status(), 401);
    assert!(!mailroom(&server.data, &["token", "create", "nobody@example.test"]).status.success());
}

#[test]
fn no_http_flag_overrides_the_config() {
    let (smtp, http) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, format!("[http]\nlisten = \"127.0.0.1:{http}\"\n")).unwrap();
    let mut child = std::process::Command::new(bin())
        .args(["serve", "--no-http", "--listen", &format!("127.0.0.1:{smtp}")])
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The greeting comes once the server runs, which is after the HTTP listener would have been bound.
    let deadline = std::time::Instant::now() + WAIT;
    let greeted = || {
        use std::io::Read;
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", smtp)) else { return false };
        let _ = s.set_read_timeout(Some(WAIT));
        let mut buf = [0u8; 3];
        s.read_exact(&mut buf).is_ok() && &buf == b"220"
    };
    while !greeted() {
        assert!(std::time::Instant::now() < deadline, "the server did not start");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let http_open = std::net::TcpStream::connect(("127.0.0.1", http)).is_ok();
    let _ = child.kill();
    let _ = child.wait();
    assert!(!http_open, "--no-http: nothing listens on the configured HTTP address");
}
