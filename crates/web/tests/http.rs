//! In-process HTTP tests of the web crate: listener binding, health, login and sessions, CSRF,
//! tokens and Basic, authorization between users, path safety, flags, admin routes.

mod common;

use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn health_readiness_and_security_headers() {
    let web = start().await;
    let c = client();
    let r = c.get(web.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    for h in ["content-security-policy", "x-content-type-options", "referrer-policy"] {
        assert!(r.headers().contains_key(h), "{h} missing");
    }
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"), "{csp}");
    assert_eq!(c.get(web.url("/readyz")).send().await.unwrap().status(), 200);
    let login = c.get(web.url("/login")).send().await.unwrap();
    assert_eq!(login.status(), 200);
    assert!(login.headers().contains_key("content-security-policy"));
    // Loopback: /metrics needs no token.
    let m = c.get(web.url("/metrics")).send().await.unwrap();
    assert_eq!(m.status(), 200);
    assert!(m.text().await.unwrap().contains("test_metric 1"));
}

#[tokio::test]
async fn a_busy_default_address_is_skipped_an_explicit_one_is_fatal() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ctx = |listen: Option<std::net::SocketAddr>| {
        let mut config = mailroom_server::Config::default();
        config.server.data_dir = dir.path().to_path_buf();
        config.http.listen = listen;
        let tls = mailroom_server::tls::TlsHandle::load_or_generate(None, None, dir.path(), "h").unwrap();
        mailroom_web::WebContext {
            config,
            store: mailroom_store::Store::open(dir.path()).unwrap(),
            queue: mailroom_queue::Queue::open(dir.path()).unwrap(),
            tls: std::sync::Arc::new(tls),
            smtp_listeners: Vec::new(),
            metrics: None,
            submitter: None,
        }
    };
    let err = mailroom_web::bind(ctx(Some(port))).await.err().expect("explicit busy address is an error");
    assert!(err.to_string().contains(&port.to_string()), "{err}");
    // The default address (127.0.0.1:8025): held here if free, so that it is busy either way.
    let _default = std::net::TcpListener::bind("127.0.0.1:8025");
    assert!(mailroom_web::bind(ctx(None)).await.unwrap().is_none(), "busy default: no HTTP, no error");
}

#[tokio::test]
async fn login_cookie_flags_logout_and_wrong_password() {
    let web = start().await;
    let c = client();
    let bad =
        c.post(web.url("/login")).form(&[("address", "a@example.test"), ("password", "nope")]).send().await.unwrap();
    assert_eq!(bad.status(), 401);
    assert!(bad.headers().get("set-cookie").is_none());
    let r =
        c.post(web.url("/login")).form(&[("address", "A@example.test"), ("password", PASSWORD)]).send().await.unwrap();
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    for flag in ["HttpOnly", "SameSite=Strict", "Max-Age=", "Path=/"] {
        assert!(cookie.contains(flag), "{flag} missing in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: no Secure flag");
    let login = login(&web, "a@example.test").await;
    let me: Value =
        c.get(web.url("/api/v1/me")).header("cookie", &login.cookie).send().await.unwrap().json().await.unwrap();
    assert_eq!(me, json!({ "address": "a@example.test", "admin": true }));
    let out =
        c.post(web.url("/logout")).header("cookie", &login.cookie).form(&[("csrf", &login.csrf)]).send().await.unwrap();
    assert_eq!(out.status(), 303);
    let after = c.get(web.url("/api/v1/me")).header("cookie", &login.cookie).send().await.unwrap();
    assert_eq!(after.status(), 401, "the session ended at logout");
    let page = c.get(web.url("/folders/INBOX")).header("cookie", &login.cookie).send().await.unwrap();
    assert_eq!(page.headers()["location"], "/login");
}

#[tokio::test]
async fn state_changes_need_the_csrf_token_and_same_origin() {
    let web = start().await;
    let id = web.deliver("b", None, "1700000000.M1P1.host", &message("hello", "body"));
    let s = login(&web, "b@example.test").await;
    let c = client();
    let url = web.url(&format!("/folders/INBOX/messages/{id}/delete"));
    let no_token = c.post(&url).header("cookie", &s.cookie).form(&[("x", "1")]).send().await.unwrap();
    assert_eq!(no_token.status(), 403);
    assert_eq!(no_token.json::<Value>().await.unwrap()["error"]["code"], "csrf");
    let wrong = c.post(&url).header("cookie", &s.cookie).form(&[("csrf", "0".repeat(64))]).send().await.unwrap();
    assert_eq!(wrong.status(), 403);
    let cross = c
        .post(&url)
        .header("cookie", &s.cookie)
        .header("origin", "http://evil.example")
        .form(&[("csrf", &s.csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403, "cross-site POST refused even with the token");
    let fetch_site = c
        .post(&url)
        .header("cookie", &s.cookie)
        .header("sec-fetch-site", "cross-site")
        .form(&[("csrf", &s.csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(fetch_site.status(), 403, "Sec-Fetch-Site: cross-site refused");
    let api = web.url(&format!("/api/v1/folders/INBOX/messages/{id}"));
    assert_eq!(
        c.delete(&api).header("cookie", &s.cookie).send().await.unwrap().status(),
        403,
        "API with cookie, no token"
    );
    assert_eq!(files(&web.maildir("b").join("new")).len(), 1, "nothing was deleted");
    let ok = c.post(&url).header("cookie", &s.cookie).form(&[("csrf", &s.csrf)]).send().await.unwrap();
    assert_eq!(ok.status(), 303);
    assert!(files(&web.maildir("b").join("new")).is_empty(), "deleted with the token");
}

#[tokio::test]
async fn user_a_cannot_reach_user_b_messages_through_any_route() {
    let web = start().await;
    let b_id = web.deliver("b", None, "1700000000.M2P2.host", &message("secret", "for b only"));
    web.deliver("b", Some("Archive"), "1700000001.M3P3.host", &message("archived", "b's folder"));
    let before = files(&web.maildir("b").join("new"));
    let a = login(&web, "a@example.test").await;
    let c = client();
    let with_a =
        |r: reqwest::RequestBuilder| r.header("cookie", a.cookie.clone()).header("x-csrf-token", a.csrf.clone());
    let base = format!("/api/v1/folders/INBOX/messages/{b_id}");
    let attempts = [
        with_a(c.get(web.url(&base))),
        with_a(c.get(web.url(&format!("{base}/raw")))),
        with_a(c.get(web.url(&format!("{base}/attachments/0")))),
        with_a(c.put(web.url(&format!("{base}/flags"))).json(&json!({ "seen": true }))),
        with_a(c.post(web.url(&format!("{base}/move"))).json(&json!({ "folder": "Archive" }))),
        with_a(c.delete(web.url(&base))),
        with_a(c.get(web.url("/api/v1/folders/Archive/messages"))),
        with_a(c.get(web.url(&format!("/folders/INBOX/messages/{b_id}")))),
        with_a(c.post(web.url(&format!("/folders/INBOX/messages/{b_id}/delete"))).form(&[("csrf", &a.csrf)])),
        // Traversal attempts: ids and folders that name paths.
        with_a(c.get(web.url("/api/v1/folders/INBOX/messages/..%2F..%2Fb%2Fnew"))),
        with_a(c.get(web.url("/api/v1/folders/..%2Fb/messages"))),
        with_a(c.get(web.url("/api/v1/folders/.%2F..%2F..%2Fb/messages"))),
    ];
    for req in attempts {
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        assert!(status == 404 || status == 400, "{} gave {status}", r.url());
    }
    let list: Value =
        with_a(c.get(web.url("/api/v1/folders/INBOX/messages"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["total"], 0, "a's inbox shows none of b's mail");
    assert_eq!(files(&web.maildir("b").join("new")), before, "b's files untouched");
    assert_eq!(files(&web.maildir("b").join(".Archive/new")).len(), 1);
    // b sees it all.
    let b = login(&web, "b@example.test").await;
    let got = c.get(web.url(&base)).header("cookie", &b.cookie).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.json::<Value>().await.unwrap()["subject"], "secret");
}

#[tokio::test]
async fn mark_read_moves_to_cur_with_s_and_move_and_list() {
    let web = start().await;
    let id = web.deliver("c", None, "1700000000.M4P4.host", &message("flag me", "x"));
    web.deliver("c", Some("Archive"), "1700000002.M5P5.host", &message("old", "y"));
    let s = login(&web, "c@example.test").await;
    let c = client();
    let auth = |r: reqwest::RequestBuilder| r.header("cookie", s.cookie.clone()).header("x-csrf-token", s.csrf.clone());
    let folders: Value = auth(c.get(web.url("/api/v1/folders"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(folders["folders"][0], json!({ "name": "INBOX", "total": 1, "unread": 1 }));
    assert_eq!(folders["folders"][1]["name"], "Archive");
    let r = auth(c.put(web.url(&format!("/api/v1/folders/INBOX/messages/{id}/flags")))).json(&json!({ "seen": true }));
    let summary: Value = r.send().await.unwrap().json().await.unwrap();
    assert_eq!(summary["seen"], true);
    assert!(files(&web.maildir("c").join("new")).is_empty());
    assert_eq!(
        files(&web.maildir("c").join("cur")),
        vec![format!("{id},S=100:2,S").replace("100", &message("flag me", "x").len().to_string())]
    );
    let r = auth(c.put(web.url(&format!("/api/v1/folders/INBOX/messages/{id}/flags")))).json(&json!({ "seen": false }));
    assert_eq!(r.send().await.unwrap().json::<Value>().await.unwrap()["seen"], false);
    assert!(files(&web.maildir("c").join("cur"))[0].ends_with(":2,"));
    let r = auth(c.post(web.url(&format!("/api/v1/folders/INBOX/messages/{id}/move"))))
        .json(&json!({ "folder": "Archive" }));
    assert_eq!(r.send().await.unwrap().json::<Value>().await.unwrap()["folder"], "Archive");
    let archive: Value =
        auth(c.get(web.url("/api/v1/folders/Archive/messages?per_page=1"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(archive["total"], 2);
    assert_eq!(archive["messages"].as_array().unwrap().len(), 1, "page size honoured");
    let found: Value = auth(c.get(web.url("/api/v1/folders/Archive/messages?subject=FLAG")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(found["total"], 1);
    assert_eq!(found["messages"][0]["id"], id);
    let bad = auth(c.get(web.url("/api/v1/folders/Archive/messages?per_page=100000"))).send().await.unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.json::<Value>().await.unwrap()["error"]["code"], "bad_request");
}

#[tokio::test]
async fn bearer_tokens_and_basic_auth() {
    let web = start().await;
    let tokens = mailroom_web::tokens::TokenFile::new(web.dir.path());
    let (entry, token) = tokens.create("b@example.test").unwrap();
    let c = client();
    let me = c.get(web.url("/api/v1/me")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(me.json::<Value>().await.unwrap()["address"], "b@example.test");
    // Tokens need no CSRF token (no cookie rides along).
    let made = c.post(web.url("/api/v1/tokens")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(made.status(), 201);
    tokens.revoke(&entry.id).unwrap();
    assert_eq!(c.get(web.url("/api/v1/me")).bearer_auth(&token).send().await.unwrap().status(), 401);
    let basic = c.get(web.url("/api/v1/me")).basic_auth("c@example.test", Some(PASSWORD)).send().await.unwrap();
    assert_eq!(basic.json::<Value>().await.unwrap()["address"], "c@example.test", "Basic from loopback");
    let wrong = c.get(web.url("/api/v1/me")).basic_auth("c@example.test", Some("x")).send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(wrong.json::<Value>().await.unwrap()["error"]["code"], "unauthorized");
}

#[tokio::test]
async fn admin_routes_are_for_admins_only() {
    let web = start().await;
    let c = client();
    for path in ["/api/v1/queue", "/api/v1/users", "/api/v1/status"] {
        let r = c.get(web.url(path)).basic_auth("b@example.test", Some(PASSWORD)).send().await.unwrap();
        assert_eq!(r.status(), 403, "{path} for a non-admin");
        let r = c.get(web.url(path)).basic_auth("a@example.test", Some(PASSWORD)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path} for an admin");
    }
    let users: Value = c
        .get(web.url("/api/v1/users"))
        .basic_auth("a@example.test", Some(PASSWORD))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(users["users"].as_array().unwrap().len(), 3);
    let add = c
        .post(web.url("/api/v1/users"))
        .basic_auth("a@example.test", Some(PASSWORD))
        .json(&json!({ "address": "d@example.test", "password": "long enough pw" }))
        .send()
        .await
        .unwrap();
    assert_eq!(add.status(), 201);
    assert!(mailroom_store::UserDirectory::new(web.dir.path()).load().unwrap().get("d@example.test").is_some());
    let quota = c
        .put(web.url("/api/v1/users/b@example.test/quota"))
        .basic_auth("a@example.test", Some(PASSWORD))
        .json(&json!({ "bytes": 1000000, "messages": 10 }))
        .send()
        .await
        .unwrap();
    assert_eq!(quota.status(), 200);
    let b = mailroom_store::UserDirectory::new(web.dir.path()).load().unwrap().get("b@example.test").unwrap().quota;
    assert_eq!((b.bytes, b.messages), (1_000_000, 10));
    let denied = c
        .put(web.url("/api/v1/users/b@example.test/quota"))
        .basic_auth("b@example.test", Some(PASSWORD))
        .json(&json!({ "bytes": 0 }))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403, "b cannot lift their own quota");
}

/// One HTTP/1.1 request over TLS to the test server, trusting its self-signed certificate; returns the
/// response head and body as text.
async fn https_request(web: &TestWeb, request: &str) -> String {
    use rustls_pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(web.dir.path().join("tls/cert.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(web.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("mail.example.test").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), tls.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn https_with_the_server_certificate_and_secure_cookies() {
    let web = start_with(|c| c.http.tls = true).await;
    let health = https_request(&web, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(health.starts_with("HTTP/1.1 200") && health.ends_with("ok\n"), "{health}");
    let form = format!("address=a%40example.test&password={}", PASSWORD.replace(' ', "+"));
    let login = https_request(
        &web,
        &format!(
            "POST /login HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\n\r\n{form}",
            form.len()
        ),
    )
    .await;
    let cookie = login.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie:")).expect(&login).to_owned();
    assert!(cookie.contains("; Secure") && cookie.contains("HttpOnly"), "{cookie}");
    // Plain HTTP to the TLS port gets no page.
    assert!(client().get(web.url("/healthz")).send().await.is_err());
}
