//! Compose and send through the web API (`POST /api/v1/messages/send`) of a real `mailroom serve`:
//! the message goes through the same submission as SMTP AUTH (sender binding, routing, limits, DKIM,
//! the commit), Bcc only in the envelope, foreign recipients into the queue, a copy kept in the
//! sender's Sent folder (read) unless asked not to; the CSRF token and a login are required.

mod common;

use common::*;
use serde_json::{json, Value};

const PASSWORD: &str = "compose test password";

/// A server for example.test with alice, bob and carol (passwords), a DKIM key for example.test, HTTP
/// on a free port, and a relayhost that refuses connections (relayed mail stays queued). `extra`: more
/// config lines (e.g. `[limits]`).
fn server(extra: &str) -> (Server, String) {
    let http = free_port();
    let dead = free_port();
    let config = format!(
        "[http]\nlisten = \"127.0.0.1:{http}\"\n\n[delivery]\nrelayhost = \"[127.0.0.1]:{dead}\"\n\
         min_backoff = \"1h\"\nmax_backoff = \"2h\"\n{extra}"
    );
    let server = Server::start_prepared(Opts::example().with_config(&config), |data| {
        for u in ["alice@example.test", "bob@example.test", "carol@example.test"] {
            user_add_password(data, u, PASSWORD);
        }
        let out = mailroom(data, &["dkim", "keygen", "example.test"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    });
    (server, format!("http://127.0.0.1:{http}"))
}

/// A logged-in browser-like client (its session cookie sent with every request) and the session's CSRF
/// token (read from the compose form).
fn login(base: &str, address: &str) -> (reqwest::blocking::Client, String) {
    let plain =
        reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).timeout(WAIT).build().unwrap();
    let r = plain.post(format!("{base}/login")).form(&[("address", address), ("password", PASSWORD)]).send().unwrap();
    assert!(r.status().is_redirection(), "login: {}", r.status());
    let cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("cookie", cookie.parse().unwrap());
    let c = reqwest::blocking::Client::builder().default_headers(headers).timeout(WAIT).build().unwrap();
    let page = c.get(format!("{base}/compose")).send().unwrap().text().unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the compose form carries the CSRF token")
        .to_owned();
    (c, csrf)
}

fn send(c: &reqwest::blocking::Client, base: &str, csrf: &str, body: &Value) -> (u16, Value) {
    let r = c.post(format!("{base}/api/v1/messages/send")).header("x-csrf-token", csrf).json(body).send().unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn header_section(message: &str) -> &str {
    message.split("\n\n").next().unwrap()
}

#[test]
fn a_message_sent_over_the_api_arrives_with_its_headers_and_bcc_stays_out() {
    let (server, base) = server("");
    let (c, csrf) = login(&base, "alice@example.test");
    let (status, sent) = send(
        &c,
        &base,
        &csrf,
        &json!({
            "to": ["Bob <bob@example.test>"], "bcc": ["carol@example.test"],
            "subject": "Lunch at noon? — café", "text": "See you there.\nAlice\n",
            "in_reply_to": "<earlier@example.org>", "references": ["<first@example.org>", "<earlier@example.org>"],
        }),
    );
    assert_eq!(status, 200, "{sent}");
    assert_eq!(sent["local"], 2, "bob and carol: {sent}");
    assert_eq!(sent["queued"], 0);
    let bob = std::fs::read_to_string(&server.expect_new("bob@example.test", 1)[0]).unwrap();
    let head = header_section(&bob);
    assert!(head.starts_with("Return-Path: <alice@example.test>\n"), "{head}");
    assert!(
        head.contains("Received: from web ([127.0.0.1])\n\tby mx.e2e.test (mailroom) with HTTP (web interface, user alice@example.test) id "),
        "the trace says it came over the web, from alice: {head}"
    );
    assert!(head.contains("DKIM-Signature: ") && head.contains("d=example.test"), "signed as submissions are: {head}");
    assert!(head.contains("From: <alice@example.test>") || head.contains("From: alice@example.test"), "{head}");
    assert!(head.contains("To: \"Bob\" <bob@example.test>") || head.contains("To: Bob <bob@example.test>"), "{head}");
    assert!(head.contains("Subject: =?utf-8?"), "a non-ASCII subject is encoded: {head}");
    assert!(head.contains(&format!("Message-ID: {}", sent["message_id"].as_str().unwrap())), "{head}");
    assert!(head.contains("\nDate: "), "{head}");
    assert!(head.contains("In-Reply-To: <earlier@example.org>"), "{head}");
    assert!(head.contains("References: <first@example.org>") && head.contains("<earlier@example.org>"), "{head}");
    assert!(bob.contains("See you there."));
    let lower = head.to_lowercase();
    assert!(!lower.contains("bcc") && !lower.contains("carol"), "Bcc is not in the stored copy: {head}");
    // Carol got it (the Bcc) without seeing herself named.
    let carol = std::fs::read_to_string(&server.expect_new("carol@example.test", 1)[0]).unwrap();
    assert!(carol.contains("See you there.") && !header_section(&carol).to_lowercase().contains("carol"));
    assert!(server.new_files("alice@example.test").is_empty(), "no copy for the sender");
}

#[test]
fn sending_as_someone_else_and_bad_recipients_are_refused_with_stable_codes() {
    let (server, base) = server("\n[limits]\nmax_recipients = 3\nmax_message_size = 4096\n");
    let (c, csrf) = login(&base, "alice@example.test");
    let cases = [
        (json!({"from": "bob@example.test", "to": ["carol@example.test"], "text": "x"}), 403, "sender_not_allowed"),
        (json!({"from": "Alice <alice@elsewhere.test>", "to": ["carol@example.test"]}), 403, "sender_not_allowed"),
        (json!({"to": ["not an address"]}), 400, "invalid_recipient"),
        (json!({"to": []}), 400, "invalid_recipient"),
        (json!({"to": ["nobody@example.test"]}), 422, "recipient_refused"),
        (json!({"to": ["a@x.test", "b@x.test"], "cc": ["c@x.test", "d@x.test"]}), 400, "too_many_recipients"),
        (json!({"to": ["bob@example.test"], "text": "y".repeat(5000)}), 413, "message_too_large"),
        (json!({"to": ["bob@example.test"], "subject": "two\r\nBcc: lines"}), 400, "bad_request"),
        (json!({"to": ["bob@example.test"], "attachments": []}), 400, "bad_request"),
    ];
    for (body, status, code) in cases {
        let (got, answer) = send(&c, &base, &csrf, &body);
        assert_eq!((got, answer["error"]["code"].as_str()), (status, Some(code)), "{body} -> {answer}");
    }
    for u in ["alice@example.test", "bob@example.test", "carol@example.test"] {
        assert!(server.new_files(u).is_empty(), "nothing was delivered to {u}");
    }
    // Within the limits it goes (the addresses compare case-insensitively, as SMTP AUTH's binding does).
    let (got, answer) = send(&c, &base, &csrf, &json!({"from": "ALICE@Example.Test", "to": ["bob@example.test"]}));
    assert_eq!(got, 200, "{answer}");
    server.expect_new("bob@example.test", 1);
}

#[test]
fn a_foreign_recipient_goes_to_the_queue_an_idn_one_as_its_a_label() {
    let (server, base) = server("");
    let (c, csrf) = login(&base, "alice@example.test");
    // An internationalized domain goes out as its A-label, in the envelope and in the header.
    let (status, sent) = send(
        &c,
        &base,
        &csrf,
        &json!({"to": ["dave@elsewhere.test", "Jörg <joerg@Bücher.test>", "bob@example.test"], "subject": "out"}),
    );
    assert_eq!(status, 200, "{sent}");
    assert_eq!((sent["local"].as_u64(), sent["queued"].as_u64()), (Some(1), Some(2)), "{sent}");
    let bob = std::fs::read_to_string(&server.expect_new("bob@example.test", 1)[0]).unwrap();
    assert!(header_section(&bob).contains("<joerg@xn--bcher-kva.test>"), "{bob}");
    let out = mailroom(&server.data, &["queue", "list", "--json"]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let entry = &list[0];
    assert_eq!(entry["from"], "alice@example.test", "{list}");
    let rcpts: Vec<&str> = entry["rcpt"].as_array().unwrap().iter().map(|r| r["address"].as_str().unwrap()).collect();
    assert_eq!(rcpts, ["dave@elsewhere.test", "joerg@xn--bcher-kva.test"], "{list}");
    assert_eq!(list.as_array().unwrap().len(), 1);
    // A non-ASCII local part would need SMTPUTF8: refused with the stable code.
    let (status, answer) = send(&c, &base, &csrf, &json!({"to": ["jörg@example.test"]}));
    assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("invalid_recipient")), "{answer}");
}

#[test]
fn sending_needs_the_csrf_token_and_a_login() {
    let (server, base) = server("");
    let (c, _csrf) = login(&base, "alice@example.test");
    let body = json!({"to": ["bob@example.test"], "subject": "forged"});
    let r = c.post(format!("{base}/api/v1/messages/send")).json(&body).send().unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().unwrap()["error"]["code"], "csrf");
    let r = c.post(format!("{base}/api/v1/messages/send")).header("x-csrf-token", "0".repeat(64)).json(&body).send();
    assert_eq!(r.unwrap().status(), 403, "a wrong token is refused too");
    let anonymous = reqwest::blocking::Client::builder().timeout(WAIT).build().unwrap();
    let r = anonymous.post(format!("{base}/api/v1/messages/send")).json(&body).send().unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().unwrap()["error"]["code"], "unauthorized");
    assert!(server.new_files("bob@example.test").is_empty(), "nothing sent");
    // A bearer token needs no CSRF token (no cookie rides along).
    let out = mailroom(&server.data, &["token", "create", "alice@example.test"]);
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let r = anonymous.post(format!("{base}/api/v1/messages/send")).bearer_auth(token).json(&body).send().unwrap();
    assert_eq!(r.status(), 200);
    server.expect_new("bob@example.test", 1);
}

#[test]
fn the_compose_page_sends_and_reply_prefills_the_answer() {
    let (server, base) = server("");
    let mut s = server.connect();
    s.ehlo();
    s.expect("MAIL FROM:<carol@example.test>", 250);
    s.expect("RCPT TO:<alice@example.test>", 250);
    let original =
        "From: Carol <carol@example.test>\r\nSubject: Plans\r\nMessage-ID: <plans-1@example.test>\r\n\r\nShall we?\r\n";
    assert_eq!(s.data(original.as_bytes()).code, 250);
    let (c, csrf) = login(&base, "alice@example.test");
    let id = server.expect_new("alice@example.test", 1)[0].file_name().unwrap().to_string_lossy().into_owned();
    let id = id.split([',', ':']).next().unwrap().to_owned();
    let page = c.get(format!("{base}/compose?folder=INBOX&reply={id}")).send().unwrap().text().unwrap();
    assert!(page.contains("value=\"Carol &lt;carol@example.test&gt;\""), "To is the sender: {page}");
    assert!(page.contains("value=\"Re: Plans\""), "{page}");
    assert!(page.contains("value=\"&lt;plans-1@example.test&gt;\""), "In-Reply-To: {page}");
    assert!(page.contains("&gt; Shall we?"), "the text is quoted: {page}");
    let form = [
        ("csrf", csrf.as_str()),
        ("from", ""),
        ("to", "Carol <carol@example.test>"),
        ("cc", ""),
        ("bcc", ""),
        ("subject", "Re: Plans"),
        ("text", "Yes.\r\n"),
        ("in_reply_to", "<plans-1@example.test>"),
        ("references", "<plans-1@example.test>"),
    ];
    let r = c.post(format!("{base}/compose")).form(&form).send().unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.url().as_str().contains("/folders/INBOX?sent="), "back to the inbox: {}", r.url());
    let answer = std::fs::read_to_string(&server.expect_new("carol@example.test", 1)[0]).unwrap();
    assert!(answer.contains("In-Reply-To: <plans-1@example.test>") && answer.contains("Yes."), "{answer}");
    // A refusal shows the form again with what was typed.
    let bad = [("csrf", csrf.as_str()), ("to", "nobody@example.test"), ("subject", "kept"), ("text", "typed")];
    let r = c.post(format!("{base}/compose")).form(&bad).send().unwrap();
    assert_eq!(r.status(), 422);
    let page = r.text().unwrap();
    assert!(page.contains("recipient_refused") && page.contains("value=\"kept\"") && page.contains("typed"), "{page}");
}

#[test]
fn the_sender_keeps_a_read_copy_in_sent_unless_asked_not_to() {
    let (server, base) = server("");
    let (c, csrf) = login(&base, "alice@example.test");
    let sent_dir = server.maildir("alice@example.test").join(".Sent");
    // A refused message leaves no copy either: the copy is part of the same commit.
    let (status, _) = send(&c, &base, &csrf, &json!({"to": ["nobody@example.test"], "subject": "refused"}));
    assert_eq!(status, 422);
    assert!(!sent_dir.exists(), "no Sent folder for a refused message");

    let (status, sent) = send(&c, &base, &csrf, &json!({"to": ["bob@example.test"], "subject": "kept", "text": "hi"}));
    assert_eq!(status, 200, "{sent}");
    assert_eq!(sent["saved"], true, "{sent}");
    assert_eq!(sent["local"], 1, "the copy is not counted as a recipient: {sent}");
    let bob = std::fs::read(&server.expect_new("bob@example.test", 1)[0]).unwrap();
    let kept = files_in(&sent_dir.join("cur"));
    assert_eq!(kept.len(), 1, "{kept:?}");
    let name = kept[0].file_name().unwrap().to_string_lossy().into_owned();
    let id = sent["id"].as_str().unwrap();
    assert!(name.starts_with(&format!("{id},S=")) && name.ends_with(":2,S"), "read, under the id: {name}");
    assert_eq!(std::fs::read(&kept[0]).unwrap(), bob, "the same message as the recipient's");
    assert!(files_in(&sent_dir.join("new")).is_empty());
    assert!(server.new_files("alice@example.test").is_empty(), "nothing in the sender's inbox");
    // The folder shows in the API, nothing unread.
    let folders: Value = c.get(format!("{base}/api/v1/folders")).send().unwrap().json().unwrap();
    let entry = folders["folders"].as_array().unwrap().iter().find(|f| f["name"] == "Sent").cloned();
    assert_eq!(entry, Some(json!({"name": "Sent", "total": 1, "unread": 0})), "{folders}");

    let (status, sent) =
        send(&c, &base, &csrf, &json!({"to": ["bob@example.test"], "subject": "not kept", "save_copy": false}));
    assert_eq!((status, &sent["saved"]), (200, &json!(false)), "{sent}");
    server.expect_new("bob@example.test", 2);
    assert_eq!(files_in(&sent_dir.join("cur")).len() + files_in(&sent_dir.join("new")).len(), 1, "no second copy");
}
