//! An in-process web server on 127.0.0.1:0 over a fresh data directory, and helpers to log in and to
//! put messages into Maildirs.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mailroom_server::Config;
use mailroom_store::{Store, UserDirectory};

pub const PASSWORD: &str = "correct horse battery";

pub struct TestWeb {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub store: Store,
    pub queue: mailroom_queue::Queue,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for TestWeb {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Users a (admin), b and c, each with [`PASSWORD`].
pub async fn start() -> TestWeb {
    start_with(|_| {}).await
}

pub async fn start_with(edit: impl FnOnce(&mut Config)) -> TestWeb {
    let dir = tempfile::tempdir().unwrap();
    let users = UserDirectory::new(dir.path());
    let hash = mailroom_store::password::hash_password(PASSWORD).unwrap();
    for u in ["a@example.test", "b@example.test", "c@example.test"] {
        users.add(u, Some(hash.clone())).unwrap();
    }
    users.set_admin("a@example.test", true).unwrap();
    let mut config = Config::default();
    config.server.data_dir = dir.path().to_path_buf();
    config.http.listen = Some("127.0.0.1:0".parse().unwrap());
    config.auth.failure_delay = std::time::Duration::from_millis(50);
    edit(&mut config);
    let store = Store::open(dir.path()).unwrap();
    let queue = mailroom_queue::Queue::open(dir.path()).unwrap();
    let tls = mailroom_server::tls::TlsHandle::load_or_generate(None, None, dir.path(), "mail.example.test").unwrap();
    let ctx = mailroom_web::WebContext {
        config,
        store: store.clone(),
        queue: queue.clone(),
        tls: Arc::new(tls),
        smtp_listeners: Vec::new(),
        metrics: Some(Arc::new(|| "# TYPE test_metric counter\ntest_metric 1\n".to_string())),
        submitter: None,
    };
    let web = mailroom_web::bind(ctx).await.unwrap().expect("bound");
    let addr = web.local_addr();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(web.run(async move {
        let _ = rx.await;
    }));
    TestWeb { addr, dir, store, queue, stop: Some(tx) }
}

impl TestWeb {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The Maildir of `address` (local@example.test).
    pub fn maildir(&self, local: &str) -> PathBuf {
        self.dir.path().join("mailboxes/example.test").join(local)
    }

    /// Puts a message into `new/` of `local`'s inbox (or a folder); returns its id.
    pub fn deliver(&self, local: &str, folder: Option<&str>, id: &str, message: &str) -> String {
        let mut dir = self.maildir(local);
        if let Some(f) = folder {
            dir = dir.join(format!(".{f}"));
        }
        for sub in ["tmp", "new", "cur"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        std::fs::write(dir.join("new").join(format!("{id},S={}", message.len())), message).unwrap();
        id.to_owned()
    }
}

/// A client that follows no redirects and keeps no cookies (tests handle them by hand).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// A logged-in session: the cookie header value and the CSRF token (read from a page's form).
pub struct Login {
    pub cookie: String,
    pub csrf: String,
}

pub async fn login(web: &TestWeb, address: &str) -> Login {
    let c = client();
    let r = c.post(web.url("/login")).form(&[("address", address), ("password", PASSWORD)]).send().await.unwrap();
    assert_eq!(r.status(), 303, "login of {address}");
    let set = r.headers().get("set-cookie").unwrap().to_str().unwrap().to_owned();
    let cookie = set.split(';').next().unwrap().to_owned();
    let page = c.get(web.url("/folders/INBOX")).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    Login { cookie, csrf }
}

pub fn message(subject: &str, body: &str) -> String {
    format!(
        "From: Sender <sender@example.org>\r\nTo: someone@example.test\r\nSubject: {subject}\r\n\
         Date: Mon, 30 Nov 2026 12:00:00 +0000\r\nMessage-ID: <{subject}@example.org>\r\n\r\n{body}\r\n"
    )
}

pub fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().into_string().unwrap()).collect())
        .unwrap_or_default();
    v.sort();
    v
}
