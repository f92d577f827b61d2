//! The API against its own OpenAPI document with schemathesis (PyPI; CI installs a pinned version into
//! a venv and names it in MAILROOM_SCHEMATHESIS): generated requests with an admin's bearer token; no
//! 5xx, every status code, content type and body as documented. A missing schemathesis fails the
//! test unless MAILROOM_SKIP_SCHEMATHESIS=1.

mod common;

use std::process::Command;

use common::*;

fn schemathesis() -> Option<String> {
    if std::env::var("MAILROOM_SKIP_SCHEMATHESIS").is_ok_and(|v| v == "1") {
        eprintln!("MAILROOM_SKIP_SCHEMATHESIS=1: skipped");
        return None;
    }
    // $MAILROOM_SCHEMATHESIS, else the venv scripts/install-test-deps makes, else the PATH.
    let cache = std::env::var("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| std::path::Path::new(&h).join(".cache")));
    let venv = cache.map(|c| c.join("mailroom/schemathesis/bin/schemathesis")).ok().filter(|p| p.exists());
    let bin = std::env::var("MAILROOM_SCHEMATHESIS")
        .ok()
        .or_else(|| venv.map(|p| p.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "schemathesis".into());
    let found = Command::new(&bin).arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{bin} not found: scripts/install-test-deps installs schemathesis==3.39.16, or MAILROOM_SKIP_SCHEMATHESIS=1"
    );
    Some(bin)
}

#[test]
fn the_api_matches_its_openapi_document() {
    let Some(bin) = schemathesis() else { return };
    let port = free_port();
    let config = format!("[http]\nlisten = \"127.0.0.1:{port}\"\n");
    let server = Server::start_prepared(Opts::example().with_config(&config), |data| {
        assert!(mailroom(data, &["user", "add", "schema-admin-7f3@example.test", "--admin"]).status.success());
    });
    let mut s = server.connect();
    s.ehlo();
    s.expect("MAIL FROM:<a@example.org>", 250);
    s.expect("RCPT TO:<schema-admin-7f3@example.test>", 250);
    assert_eq!(s.data(b"Subject: for the schema\r\n\r\nbody\r\n").code, 250);
    let out = mailroom(&server.data, &["token", "create", "schema-admin-7f3@example.test"]);
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let base = format!("http://127.0.0.1:{port}/api/v1");
    // The token works, so the generated requests reach the handlers (not just the 401 path).
    let me = reqwest::blocking::Client::new().get(format!("{base}/me")).bearer_auth(&token).send().unwrap();
    assert_eq!(me.status(), 200);
    // In the server's temporary directory: schemathesis leaves its .hypothesis/ database in its cwd.
    let out = Command::new(bin)
        .current_dir(&server.data)
        .args(["run", &format!("{base}/openapi.json"), "--base-url", &base])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--checks", "all", "--hypothesis-max-examples", "25", "--hypothesis-seed", "15"])
        .args(["--hypothesis-deadline", "none", "--request-timeout", "20000", "--no-color"])
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .output()
        .expect("run schemathesis");
    let report = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "schemathesis found problems:\n{report}");
}
