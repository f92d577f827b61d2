//! Operating the queue over a running server: `mailroom queue list [--json] / show / flush / delete /
//! bounce`, the `mailq` symlink, and a corrupt queue file quarantined while the rest is delivered.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::common::{bin, files_in, mailroom as run_mailroom, poll};
use crate::support::{
    mailroom, parse_dsn, queued, send, wait_deferred, wait_mailbox, wait_queue_empty, Rig, ALICE, DELIVERY_WAIT,
};

fn ok(out: Output, what: &str) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{what} failed ({}):\n{text}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    text
}

fn queue(data: &Path, args: &[&str]) -> String {
    let mut all = vec!["queue"];
    all.extend_from_slice(args);
    ok(run_mailroom(data, &all), &format!("mailroom queue {args:?}"))
}

/// `mailq --data-dir DATA` through a symlink named mailq.
fn mailq(data: &Path) -> String {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("mailq");
    std::os::unix::fs::symlink(bin(), &link).unwrap();
    let out = Command::new(&link).arg("--data-dir").arg(data).stdin(Stdio::null()).output().expect("run mailq");
    ok(out, "mailq")
}

#[test]
fn queue_list_show_flush_delete_bounce_and_mailq() {
    let Some(rig) = Rig::new() else { return };
    // Nothing listens for one.test yet; a long backoff, so only a flush makes the server try again.
    let server = mailroom(rig.config("min_backoff = \"1h\"\nmax_backoff = \"1h\"", ""), &[]);
    let ids: Vec<String> = (1..=3).map(|i| send(&server, &["bob@one.test"], &format!("queued {i}"))).collect();
    for id in &ids {
        wait_deferred(&server, id);
    }

    let list = queue(&server.data, &["list"]);
    eprintln!("mailroom queue list:\n{list}");
    for id in &ids {
        assert!(list.contains(id.as_str()), "{id} listed:\n{list}");
    }
    assert!(list.contains("bob@one.test") && list.contains(ALICE), "{list}");
    assert!(list.contains("deferred"), "each recipient's state:\n{list}");
    let json: serde_json::Value =
        serde_json::from_str(&queue(&server.data, &["list", "--json"])).expect("--json is JSON");
    let text = json.to_string();
    assert_eq!(json.as_array().map(|a| a.len()), Some(3), "{json:#}");
    for id in &ids {
        assert!(text.contains(id.as_str()), "{id} in {json:#}");
    }
    let q = mailq(&server.data);
    for id in &ids {
        assert!(q.contains(id.as_str()), "mailq lists {id}:\n{q}");
    }

    let show = queue(&server.data, &["show", &ids[0]]);
    eprintln!("mailroom queue show:\n{show}");
    for want in ["Subject: queued 1", "bob@one.test", ALICE, "deferred"] {
        assert!(show.contains(want), "{want} in:\n{show}");
    }

    // flush: the MX is back; the running server tries the first message within about a second.
    let rx = rig.receiver("rx", &["127.0.0.2"], &[]);
    queue(&server.data, &["flush", &ids[0]]);
    let got = rx.wait_messages(1, Duration::from_secs(10));
    assert!(got[0].text().contains("Subject: queued 1"), "{}", got[0].text());
    let gone = poll(DELIVERY_WAIT, Duration::from_millis(100), || {
        let l = queue(&server.data, &["list"]);
        (!l.contains(ids[0].as_str())).then_some(l)
    });
    let list = gone.expect("the flushed message left the queue");
    assert!(list.contains(ids[1].as_str()) && list.contains(ids[2].as_str()), "the others wait:\n{list}");

    // delete: gone, no bounce, never delivered.
    queue(&server.data, &["delete", &ids[1]]);
    poll(DELIVERY_WAIT, Duration::from_millis(100), || {
        (!queue(&server.data, &["list"]).contains(ids[1].as_str())).then_some(())
    })
    .expect("deleted message left the queue");

    // bounce: a DSN to Alice now.
    queue(&server.data, &["bounce", &ids[2]]);
    let files = wait_mailbox(&server, ALICE, 1, DELIVERY_WAIT);
    let dsn = parse_dsn(&files[0]);
    assert_eq!(dsn["content_type"], "multipart/report");
    let r = &dsn["recipients"][0];
    let action = r.as_object().unwrap().iter().find(|(k, _)| k.eq_ignore_ascii_case("Action")).map(|(_, v)| v);
    assert_eq!(action.and_then(|v| v.as_str()), Some("failed"), "{dsn:#}");
    assert!(dsn["original"].as_str().unwrap().contains("Subject: queued 3"), "{dsn:#}");
    wait_queue_empty(&server, DELIVERY_WAIT);

    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(rx.messages().len(), 1, "only the flushed message was delivered");
    assert_eq!(server.new_files(ALICE).len(), 1, "one bounce (for the bounced message, none for the deleted one)");
    assert!(queue(&server.data, &["list"]).lines().all(|l| !ids.iter().any(|id| l.contains(id.as_str()))));
}

#[test]
fn corrupt_queue_file_is_quarantined_and_the_rest_delivered() {
    let Some(rig) = Rig::new() else { return };
    let mut server = mailroom(rig.config("", ""), &[]);
    let ids: Vec<String> = (1..=3).map(|i| send(&server, &["bob@one.test"], &format!("corrupt {i}"))).collect();
    for id in &ids {
        wait_deferred(&server, id);
    }
    server.kill();
    let env = server.data.join("queue/env").join(&ids[1]);
    assert!(env.exists(), "envelope file {} (queue: {:?})", env.display(), queued(&server));
    std::fs::write(&env, b"\x00\xffthis is not an envelope [[[\n").unwrap();

    let rx = rig.receiver("rx", &["127.0.0.2"], &[]);
    server.restart();
    let got = rx.wait_messages(2, DELIVERY_WAIT);
    let subjects: Vec<String> = got.iter().map(|g| g.header("Subject").unwrap_or_default()).collect();
    assert!(subjects.contains(&"corrupt 1".into()) && subjects.contains(&"corrupt 3".into()), "{subjects:?}");
    wait_queue_empty(&server, DELIVERY_WAIT);
    let corrupt = files_in(&server.data.join("queue/corrupt"));
    assert!(
        corrupt.iter().any(|p| p.file_name().unwrap().to_string_lossy().contains(ids[1].as_str())),
        "{} quarantined: {corrupt:?}",
        ids[1]
    );
    let log = server.log_text();
    assert!(log.contains(ids[1].as_str()), "the quarantine is logged with the id:\n{log}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rx.messages().len(), 2, "the corrupt one is not delivered");
    // The server is still serving.
    send(&server, &["bob@one.test"], "after corrupt");
    rx.wait_messages(3, DELIVERY_WAIT);
}
