//! Relaying in-process: `Server::bind(..).with_outbound(fake)` on 127.0.0.1:0 with a fake [`Outbound`]
//! that records wake-ups and answers null MX for chosen domains. Checks who may relay, what lands in
//! `<data>/queue/{env,msg}` by the time of the 250, the mixed local + remote commit, null MX (556) and
//! the loop limit (554). Every wait is bounded by [`WAIT`].

use std::collections::HashSet;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mailroom_server::{Config, Outbound, Server};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The longest any single step may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);

const ALICE: &str = "alice@example.test";
const PASSWORD: &str = "a good password";

/// A fake relay: counts wake-ups, says "null MX" for the domains it was given.
#[derive(Default)]
struct FakeOutbound {
    null_mx: HashSet<String>,
    /// The lookup never answers (a resolver that hangs).
    hang: bool,
    wakes: AtomicUsize,
    lookups: AtomicUsize,
}

impl Outbound for FakeOutbound {
    fn null_mx(&self, domain: &str) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let (hit, hang) = (self.null_mx.contains(domain), self.hang);
        Box::pin(async move {
            if hang {
                std::future::pending::<()>().await;
            }
            hit
        })
    }

    fn wake(&self) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
    }
}

struct Running {
    smtp: SocketAddr,
    submission: SocketAddr,
    data: tempfile::TempDir,
    outbound: Arc<FakeOutbound>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(WAIT, self.task).await.expect("run returns after shutdown").unwrap();
    }

    fn queue_dir(&self, sub: &str) -> PathBuf {
        self.data.path().join("queue").join(sub)
    }

    /// Names of the files in `queue/<sub>` (temporary `.tmp` files would show up too).
    fn queue_files(&self, sub: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.queue_dir(sub))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn maildir_messages(&self, addr: &str) -> Vec<Vec<u8>> {
        let (local, domain) = addr.split_once('@').unwrap();
        let dir = self.data.path().join("mailboxes").join(domain).join(local).join("new");
        std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| std::fs::read(e.path()).unwrap()).collect()
    }

    fn wakes(&self) -> usize {
        self.outbound.wakes.load(Ordering::SeqCst)
    }
}

/// A server for example.test with user alice (password [`PASSWORD`]), one smtp and one submission
/// listener (plaintext AUTH allowed: loopback only), `tune` applied to the config; with the fake relay
/// attached when `outbound` is Some.
async fn start(tune: impl FnOnce(&mut Config), outbound: Option<FakeOutbound>) -> Running {
    let data = tempfile::tempdir().unwrap();
    let hash = mailroom_store::password::hash_password(PASSWORD).unwrap();
    mailroom_store::users::UserDirectory::new(data.path()).add(ALICE, Some(hash)).unwrap();
    let mut cfg = Config::default();
    cfg.server.hostname = "mx.test".into();
    cfg.server.data_dir = data.path().to_owned();
    cfg.server.listen = vec!["127.0.0.1:0".parse().unwrap()];
    cfg.server.submission = vec!["127.0.0.1:0".parse().unwrap()];
    cfg.server.domains = vec!["example.test".into()];
    cfg.auth.allow_plaintext_auth = true;
    cfg.auth.failure_delay = Duration::ZERO;
    tune(&mut cfg);
    let mut server = Server::bind(cfg).await.expect("bind");
    let addrs = server.local_addrs();
    let attach = outbound.is_some();
    let fake = Arc::new(outbound.unwrap_or_default());
    if attach {
        server = server.with_outbound(fake.clone());
    }
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    Running { smtp: addrs[0], submission: addrs[1], data, outbound: fake, stop: Some(stop), task }
}

fn relay() -> Option<FakeOutbound> {
    Some(FakeOutbound::default())
}

struct Client {
    io: BufReader<TcpStream>,
}

impl Client {
    async fn reply(&mut self) -> (u16, String) {
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(WAIT, self.io.read_line(&mut line)).await.expect("reply in time").unwrap();
            assert!(n > 0, "connection closed while waiting for a reply");
            if line.as_bytes().get(3) != Some(&b'-') {
                return (line[..3].parse().expect("reply code"), line.trim_end().to_owned());
            }
        }
    }

    async fn cmd(&mut self, line: &str, code: u16) -> String {
        self.io.get_mut().write_all(format!("{line}\r\n").as_bytes()).await.unwrap();
        let (got, text) = self.reply().await;
        assert_eq!(got, code, "{line} -> {text}");
        text
    }

    /// DATA, the body (CRLF lines, no final dot), the end; the final reply.
    async fn data(&mut self, body: &str) -> (u16, String) {
        self.cmd("DATA", 354).await;
        self.io.get_mut().write_all(format!("{body}.\r\n").as_bytes()).await.unwrap();
        self.reply().await
    }
}

/// Connects from `src` (a loopback address) and says EHLO.
async fn connect_from(src: Ipv4Addr, addr: SocketAddr) -> Client {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(src.into(), 0)).unwrap();
    let tcp = tokio::time::timeout(WAIT, socket.connect(addr)).await.unwrap().unwrap();
    let mut c = Client { io: BufReader::new(tcp) };
    let (code, text) = c.reply().await;
    assert_eq!(code, 220, "greeting: {text}");
    c.cmd("EHLO client.test", 250).await;
    c
}

async fn connect(addr: SocketAddr) -> Client {
    connect_from(Ipv4Addr::LOCALHOST, addr).await
}

/// A submission session authenticated as alice.
async fn submission(r: &Running) -> Client {
    let mut c = connect(r.submission).await;
    let creds = base64(format!("\0{ALICE}\0{PASSWORD}").as_bytes());
    c.cmd(&format!("AUTH PLAIN {creds}"), 235).await;
    c
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The queue id of a `250 2.0.0 Ok: queued as <id>` reply.
fn queued_id(reply: &str) -> String {
    let id = reply.split("Ok: queued as ").nth(1).unwrap_or_else(|| panic!("not a queued reply: {reply}"));
    id.trim().to_owned()
}

fn read(path: &Path) -> String {
    String::from_utf8(std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

#[tokio::test]
async fn authenticated_remote_recipient_is_queued_durably_before_the_250() {
    let r = start(|_| {}, relay()).await;
    let mut c = submission(&r).await;
    c.cmd(&format!("MAIL FROM:<{ALICE}>"), 250).await;
    c.cmd("RCPT TO:<bob@remote.example>", 250).await;
    let (code, text) = c.data("Subject: out\r\n\r\nto the world\r\n").await;
    assert_eq!(code, 250, "{text}");
    assert!(text.contains("2.0.0 Ok: queued as "), "{text}");
    let id = queued_id(&text);
    // Read right after the 250, before anything else happens: both files are there already.
    let env = read(&r.queue_dir("env").join(&id));
    let msg = read(&r.queue_dir("msg").join(&id));
    assert!(env.contains("bob@remote.example"), "envelope names the recipient:\n{env}");
    assert!(env.contains(ALICE), "envelope names the sender:\n{env}");
    assert!(env.contains(&format!("auth = \"{ALICE}\"")), "envelope names the submitter:\n{env}");
    assert!(env.contains("client = \"127.0.0.1\""), "envelope names the client:\n{env}");
    assert!(msg.starts_with(&format!("Return-Path: <{ALICE}>\n")), "{msg}");
    assert!(msg.contains("Received: from client.test") && msg.contains(&id), "{msg}");
    assert!(msg.contains("to the world"), "{msg}");
    assert_eq!(r.queue_files("env"), vec![id.clone()], "one entry, no temporary files left");
    assert_eq!(r.wakes(), 1, "the relay is woken once after the commit");
    assert!(r.maildir_messages(ALICE).is_empty(), "nothing delivered locally");
    c.cmd("QUIT", 221).await;
    r.shutdown().await;
}

#[tokio::test]
async fn mixed_local_and_remote_transaction_stores_and_queues_one_message() {
    let r = start(|_| {}, relay()).await;
    let mut c = submission(&r).await;
    c.cmd(&format!("MAIL FROM:<{ALICE}>"), 250).await;
    c.cmd("RCPT TO:<bob@remote.example>", 250).await;
    c.cmd(&format!("RCPT TO:<{ALICE}>"), 250).await;
    c.cmd("RCPT TO:<carol@other.example>", 250).await;
    let (code, text) = c.data("Subject: mixed\r\n\r\nboth ways\r\n").await;
    assert_eq!(code, 250, "{text}");
    let id = queued_id(&text);
    let local = r.maildir_messages(ALICE);
    assert_eq!(local.len(), 1, "the local copy is in alice's Maildir");
    assert!(String::from_utf8_lossy(&local[0]).contains(&id), "the local copy carries the same id");
    let env = read(&r.queue_dir("env").join(&id));
    assert!(env.contains("bob@remote.example") && env.contains("carol@other.example"), "{env}");
    assert!(!env.contains("address = \"alice@example.test\""), "the local recipient is not queued:\n{env}");
    assert!(r.queue_dir("msg").join(&id).exists());
    assert_eq!(r.wakes(), 1);
    c.cmd("QUIT", 221).await;
    r.shutdown().await;
}

#[tokio::test]
async fn local_only_mail_is_stored_not_queued() {
    let r = start(|_| {}, relay()).await;
    let mut c = connect(r.smtp).await;
    c.cmd("MAIL FROM:<bob@remote.example>", 250).await;
    c.cmd(&format!("RCPT TO:<{ALICE}>"), 250).await;
    let (code, text) = c.data("Subject: in\r\n\r\nhello\r\n").await;
    assert!(code == 250 && text.contains("Ok: stored as "), "{text}");
    assert!(r.queue_files("env").is_empty() && r.queue_files("msg").is_empty(), "nothing queued");
    assert_eq!(r.wakes(), 0, "no wake-up for local mail");
    r.shutdown().await;
}

#[tokio::test]
async fn unauthenticated_client_outside_relay_networks_is_refused() {
    let r = start(|c| c.delivery.relay_networks = vec!["192.0.2.0/24".into()], relay()).await;
    let mut c = connect(r.smtp).await;
    c.cmd(&format!("MAIL FROM:<{ALICE}>"), 250).await;
    let text = c.cmd("RCPT TO:<bob@remote.example>", 550).await;
    assert!(text.contains("5.7.1"), "{text}");
    c.cmd(&format!("RCPT TO:<{ALICE}>"), 250).await;
    let (code, text) = c.data("Subject: x\r\n\r\nx\r\n").await;
    assert!(code == 250 && text.contains("stored as"), "{text}");
    assert!(r.queue_files("env").is_empty(), "nothing queued");
    assert_eq!(r.outbound.lookups.load(Ordering::SeqCst), 0, "no DNS lookup for a refused relay attempt");
    r.shutdown().await;
}

#[tokio::test]
async fn relay_networks_may_relay_without_auth_and_others_may_not() {
    let r = start(|c| c.delivery.relay_networks = vec!["127.0.0.1/32".into()], relay()).await;
    let mut inside = connect_from(Ipv4Addr::new(127, 0, 0, 1), r.smtp).await;
    inside.cmd("MAIL FROM:<cron@example.test>", 250).await;
    inside.cmd("RCPT TO:<bob@remote.example>", 250).await;
    let (code, text) = inside.data("Subject: cron\r\n\r\nreport\r\n").await;
    assert_eq!(code, 250, "{text}");
    let id = queued_id(&text);
    let env = read(&r.queue_dir("env").join(&id));
    assert!(!env.contains("auth ="), "no submitter for an unauthenticated relay:\n{env}");
    let mut outside = connect_from(Ipv4Addr::new(127, 0, 0, 2), r.smtp).await;
    outside.cmd("MAIL FROM:<cron@example.test>", 250).await;
    let text = outside.cmd("RCPT TO:<bob@remote.example>", 550).await;
    assert!(text.contains("5.7.1"), "{text}");
    assert_eq!(r.queue_files("env"), vec![id]);
    // Sessions in a transaction would hold the shutdown for its grace period.
    inside.cmd("QUIT", 221).await;
    outside.cmd("QUIT", 221).await;
    r.shutdown().await;
}

#[tokio::test]
async fn without_a_relay_even_authenticated_users_and_relay_networks_are_refused() {
    let r = start(|c| c.delivery.relay_networks = vec!["127.0.0.0/8".into()], None).await;
    let mut c = submission(&r).await;
    c.cmd(&format!("MAIL FROM:<{ALICE}>"), 250).await;
    let text = c.cmd("RCPT TO:<bob@remote.example>", 550).await;
    assert!(text.contains("5.7.1 Relaying is not configured"), "{text}");
    c.cmd("QUIT", 221).await;
    let mut c = connect(r.smtp).await;
    c.cmd("MAIL FROM:<cron@example.test>", 250).await;
    c.cmd("RCPT TO:<bob@remote.example>", 550).await;
    c.cmd("QUIT", 221).await;
    assert!(r.queue_files("env").is_empty());
    r.shutdown().await;
}

#[tokio::test]
async fn null_mx_domain_is_refused_at_rcpt_with_556() {
    let fake = FakeOutbound { null_mx: ["nomail.example".to_owned()].into(), ..Default::default() };
    let r = start(|_| {}, Some(fake)).await;
    let mut c = submission(&r).await;
    c.cmd(&format!("MAIL FROM:<{ALICE}>"), 250).await;
    let text = c.cmd("RCPT TO:<bob@nomail.example>", 556).await;
    assert!(text.contains("5.1.10"), "{text}");
    c.cmd("RCPT TO:<bob@remote.example>", 250).await;
    let (code, text) = c.data("Subject: x\r\n\r\nx\r\n").await;
    assert_eq!(code, 250, "{text}");
    let env = read(&r.queue_dir("env").join(queued_id(&text)));
    assert!(!env.contains("nomail.example"), "{env}");
    r.shutdown().await;
}

/// The loop limit: with max_hops = 3, a message that arrives with 2 Received fields (3 with ours) is
/// taken; one with 3 (4 with ours) gets 554 5.4.6 and is stored nowhere.
#[tokio::test]
async fn too_many_received_headers_get_554_and_nothing_is_stored() {
    let r = start(|c| c.delivery.max_hops = 3, relay()).await;
    let mut c = submission(&r).await;
    for (hops, code) in [(2, 250), (3, 554)] {
        c.cmd(&format!("MAIL FROM:<{ALICE}>"), 250).await;
        c.cmd("RCPT TO:<bob@remote.example>", 250).await;
        c.cmd(&format!("RCPT TO:<{ALICE}>"), 250).await;
        let received: String = (0..hops).map(|i| format!("Received: from hop{i}\r\n\tby x; date\r\n")).collect();
        let (got, text) =
            c.data(&format!("{received}Subject: hops\r\n\r\nReceived: body lines do not count\r\n")).await;
        assert_eq!(got, code, "{hops} Received fields: {text}");
        if code == 554 {
            assert!(text.contains("5.4.6"), "{text}");
        }
    }
    assert_eq!(r.maildir_messages(ALICE).len(), 1, "only the first message was stored");
    assert_eq!(r.queue_files("env").len(), 1, "only the first message was queued");
    assert_eq!(r.wakes(), 1);
    r.shutdown().await;
}

/// The envelope carries what the relay and its DSNs need: RET and ENVID from MAIL, NOTIFY and ORCPT per
/// recipient (RFC 3461), the size of the queued file and the arrival time.
#[tokio::test]
async fn envelope_carries_dsn_parameters_size_and_arrival() {
    let r = start(|_| {}, relay()).await;
    let mut c = submission(&r).await;
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    c.cmd(&format!("MAIL FROM:<{ALICE}> RET=HDRS ENVID=QQ+2Bx"), 250).await;
    c.cmd("RCPT TO:<bob@remote.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Bob@remote.example", 250).await;
    c.cmd("RCPT TO:<carol@remote.example> NOTIFY=NEVER", 250).await;
    c.cmd("RCPT TO:<dave@remote.example>", 250).await;
    let (code, text) = c.data("Subject: dsn\r\n\r\nparams\r\n").await;
    assert_eq!(code, 250, "{text}");
    let id = queued_id(&text);
    let env = read(&r.queue_dir("env").join(&id));
    let msg_len = std::fs::metadata(r.queue_dir("msg").join(&id)).unwrap().len();
    assert!(env.contains("ret = \"hdrs\""), "{env}");
    assert!(env.contains("envid = \"QQ+x\""), "ENVID is stored xtext-decoded:\n{env}");
    assert!(env.contains(&format!("size = {msg_len}\n")), "size is the queued file's ({msg_len}):\n{env}");
    assert!(env.contains("orcpt = \"rfc822;Bob@remote.example\""), "{env}");
    assert!(env.contains("notify = [\"success\", \"failure\"]"), "{env}");
    assert!(env.contains("notify = [\"never\"]"), "{env}");
    assert_eq!(env.matches("notify =").count(), 2, "no NOTIFY: the default, absent:\n{env}");
    let arrival: u64 = env
        .lines()
        .find_map(|l| l.strip_prefix("arrival = "))
        .unwrap_or_else(|| panic!("no arrival:\n{env}"))
        .parse()
        .unwrap();
    assert!(arrival >= before && arrival <= before + 60, "arrival {arrival}, test began at {before}");
    assert_eq!(
        env.matches(&format!("next_attempt = {arrival}\n")).count(),
        3,
        "every recipient due at arrival:\n{env}"
    );
    assert_eq!(env.matches("state = \"pending\"").count(), 3, "{env}");
    r.shutdown().await;
}

/// An authenticated user may relay to domains, not to address literals (the relay looks up MX records
/// of domains only): 550 5.7.1, and nothing queued.
#[tokio::test]
async fn address_literals_are_not_relayed_even_for_authenticated_users() {
    let r = start(|_| {}, relay()).await;
    let mut c = submission(&r).await;
    c.cmd(&format!("MAIL FROM:<{ALICE}>"), 250).await;
    let text = c.cmd("RCPT TO:<bob@[192.0.2.1]>", 550).await;
    assert!(text.contains("5.7.1") && text.contains("address literals"), "{text}");
    c.cmd("QUIT", 221).await;
    assert!(r.queue_files("env").is_empty());
    r.shutdown().await;
}

/// A null-MX lookup that never answers holds RCPT only for NULL_MX_TIMEOUT; then the recipient is
/// accepted (the relay decides later) and the session goes on.
#[tokio::test]
async fn hanging_null_mx_lookup_is_bounded_and_accepts() {
    let fake = FakeOutbound { hang: true, null_mx: ["remote.example".to_owned()].into(), ..Default::default() };
    let r = start(|_| {}, Some(fake)).await;
    let mut c = submission(&r).await;
    c.cmd(&format!("MAIL FROM:<{ALICE}>"), 250).await;
    let began = std::time::Instant::now();
    c.cmd("RCPT TO:<bob@remote.example>", 250).await;
    let took = began.elapsed();
    let bound = mailroom_server::outbound::NULL_MX_TIMEOUT;
    assert!(took >= bound && took < bound + Duration::from_secs(3), "RCPT took {took:?}");
    let (code, text) = c.data("Subject: x\r\n\r\nx\r\n").await;
    assert_eq!(code, 250, "{text}");
    c.cmd("QUIT", 221).await;
    r.shutdown().await;
}
