//! The scheduler end to end inside one process: a real store and queue in a temp dir, the relay task,
//! and an in-test SMTP receiver on 127.0.0.2 reached through an address literal (no DNS). Retry on 4xx
//! with backoff, bounce on 5xx with a DSN in the local sender's Maildir, NOTIFY=NEVER and
//! NOTIFY=SUCCESS ("relayed"), the first attempt within a second, and the CLI's bounce request.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::receiver::{self, Behaviour, Receiver};
use mailroom_queue::{Envelope, Notify, Queue, Request, State};
use mailroom_relay::dns::Resolver;
use mailroom_relay::settings::Settings;
use mailroom_relay::Relay;
use mailroom_store::{Store, UserDirectory};

const RX: &str = "127.0.0.2";
/// The longest any test waits for something to happen.
const PATIENCE: Duration = Duration::from_secs(15);

struct Setup {
    _dir: tempfile::TempDir,
    store: Store,
    queue: Queue,
    waker: Arc<tokio::sync::Notify>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Setup {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let _ = self.task.take().unwrap().await;
    }
}

async fn setup(port: u16, tweak: impl FnOnce(&mut Settings)) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    UserDirectory::new(dir.path()).add("alice@example.org", None).unwrap();
    UserDirectory::new(dir.path()).add("postmaster@example.org", None).unwrap();
    let store = Store::open(dir.path()).unwrap();
    let queue = Queue::open(dir.path()).unwrap();
    let mut settings = Settings {
        hostname: "relay.test".into(),
        port,
        min_backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(5),
        postmaster: "postmaster@example.org".into(),
        ..Settings::default()
    };
    tweak(&mut settings);
    let resolver = Resolver::new(&["127.0.0.1:9".parse().unwrap()]).unwrap();
    let relay = Relay::new(queue.clone(), store.clone(), settings, resolver);
    let waker = relay.waker();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(relay.run(async move {
        let _ = rx.await;
    }));
    Setup { _dir: dir, store, queue, waker, stop: Some(tx), task: Some(task) }
}

/// Queues a message as the server does: through the store's commit with the queue's spool.
async fn enqueue(s: &Setup, from: &str, rcpts: &[&str], notify: Option<Vec<Notify>>) -> String {
    let mut incoming = s.store.begin().unwrap();
    let id = incoming.id().to_string();
    let text = format!(
        "Return-Path: <{from}>\nReceived: from client by relay.test with ESMTP id {id}\nFrom: {from}\nSubject: test {id}\n\nhello\n"
    );
    incoming.write(text.as_bytes()).unwrap();
    let mut env = Envelope::new(id.clone(), from, SystemTime::now(), text.len() as u64, rcpts);
    for r in &mut env.rcpts {
        r.notify = notify.clone();
    }
    let spool = s.queue.spool_for(&env);
    incoming.commit_with(&[], Some(spool)).await.unwrap();
    s.queue.add_committed(env);
    s.waker.notify_one();
    id
}

async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn mails(store: &Store, address: &str) -> Vec<String> {
    let Ok(mb) = store.mailbox(address) else { return Vec::new() };
    let list = mb.list().unwrap_or_default();
    list.iter().map(|m| String::from_utf8_lossy(&mb.get(&m.id).unwrap()).into_owned()).collect()
}

fn rcpt(port_rx: &Receiver) -> String {
    let _ = port_rx;
    format!("bob@[{RX}]")
}

#[tokio::test]
async fn first_attempt_within_a_second_and_queue_emptied() {
    let rx = receiver::start(RX, Behaviour::default()).await;
    let s = setup(rx.port, |_| {}).await;
    let t0 = Instant::now();
    let id = enqueue(&s, "alice@example.org", &[&rcpt(&rx)], None).await;
    wait_for("the message at the receiver", || (!rx.messages().is_empty()).then_some(())).await;
    assert!(t0.elapsed() < Duration::from_secs(1), "first attempt after {:?}", t0.elapsed());
    let m = &rx.messages()[0];
    assert_eq!(m.from, "<alice@example.org>");
    assert!(m.data.starts_with("Received: from client by relay.test"), "{}", m.data);
    assert!(m.data.contains(&format!("Subject: test {id}\r\n")));
    wait_for("the entry to leave the queue", || s.queue.get(&id).is_err().then_some(())).await;
    assert!(mails(&s.store, "alice@example.org").is_empty(), "no DSN without NOTIFY=SUCCESS");
    s.stop().await;
}

#[tokio::test]
async fn temporary_failure_is_retried_after_the_backoff() {
    let tries = Arc::new(AtomicUsize::new(0));
    let t = tries.clone();
    let b = Behaviour {
        rcpt_reply: Arc::new(move |_| (t.fetch_add(1, Ordering::SeqCst) == 0).then(|| "451 4.3.0 try later".into())),
        ..Behaviour::default()
    };
    let rx = receiver::start(RX, b).await;
    let s = setup(rx.port, |_| {}).await;
    let id = enqueue(&s, "alice@example.org", &[&rcpt(&rx)], None).await;
    let env = wait_for("the deferral", || s.queue.get(&id).ok().filter(|e| e.rcpts[0].state == State::Deferred)).await;
    assert_eq!(env.rcpts[0].status.as_deref(), Some("4.3.0"));
    assert!(env.rcpts[0].last_reply.as_deref().unwrap().contains("451 4.3.0 try later"));
    let deferred_at = Instant::now();
    wait_for("the retry to deliver", || (!rx.messages().is_empty()).then_some(())).await;
    assert!(deferred_at.elapsed() >= Duration::from_millis(300), "retried without waiting for the backoff");
    assert_eq!(tries.load(Ordering::SeqCst), 2);
    wait_for("the entry to leave the queue", || s.queue.get(&id).is_err().then_some(())).await;
    s.stop().await;
}

#[tokio::test]
async fn permanent_failure_bounces_to_the_local_sender() {
    let b = Behaviour {
        rcpt_reply: Arc::new(|_| Some("550 5.1.1 <bob> no such user here".into())),
        ..Behaviour::default()
    };
    let rx = receiver::start(RX, b).await;
    let s = setup(rx.port, |_| {}).await;
    let id = enqueue(&s, "alice@example.org", &[&rcpt(&rx)], None).await;
    let dsn = wait_for("the DSN", || mails(&s.store, "alice@example.org").pop()).await;
    assert!(dsn.starts_with("Return-Path: <>\nReceived: by relay.test (mailroom) id "), "{dsn}");
    assert!(dsn.contains("report-type=delivery-status"), "{dsn}");
    assert!(dsn.contains("Action: failed"), "{dsn}");
    assert!(dsn.contains("Status: 5.1.1"), "{dsn}");
    assert!(dsn.contains(&format!("Final-Recipient: rfc822; bob@[{RX}]")), "{dsn}");
    assert!(dsn.contains("no such user here"), "{dsn}");
    assert!(!dsn.contains('\r'), "the Maildir copy has LF line ends");
    wait_for("the entry to leave the queue", || s.queue.get(&id).is_err().then_some(())).await;
    s.stop().await;
}

#[tokio::test]
async fn notify_never_gets_no_dsn() {
    let b = Behaviour { rcpt_reply: Arc::new(|_| Some("550 5.1.1 no".into())), ..Behaviour::default() };
    let rx = receiver::start(RX, b).await;
    let s = setup(rx.port, |_| {}).await;
    let id = enqueue(&s, "alice@example.org", &[&rcpt(&rx)], Some(vec![Notify::Never])).await;
    wait_for("the entry to leave the queue", || s.queue.get(&id).is_err().then_some(())).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(mails(&s.store, "alice@example.org").is_empty());
    s.stop().await;
}

#[tokio::test]
async fn notify_success_to_a_server_without_dsn_is_relayed() {
    let rx = receiver::start(RX, Behaviour::default()).await;
    let s = setup(rx.port, |_| {}).await;
    enqueue(&s, "alice@example.org", &[&rcpt(&rx)], Some(vec![Notify::Success, Notify::Failure])).await;
    let dsn = wait_for("the relayed DSN", || mails(&s.store, "alice@example.org").pop()).await;
    assert!(dsn.contains("Action: relayed"), "{dsn}");
    assert!(dsn.contains("Status: 2."), "{dsn}");
    assert_eq!(rx.messages().len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn null_sender_failure_goes_to_the_postmaster() {
    let b = Behaviour { rcpt_reply: Arc::new(|_| Some("550 5.1.1 no".into())), ..Behaviour::default() };
    let rx = receiver::start(RX, b).await;
    let s = setup(rx.port, |_| {}).await;
    let id = enqueue(&s, "", &[&rcpt(&rx)], None).await;
    let dsn = wait_for("the double bounce", || mails(&s.store, "postmaster@example.org").pop()).await;
    assert!(dsn.contains("Action: failed"), "{dsn}");
    wait_for("the entry to leave the queue", || s.queue.get(&id).is_err().then_some(())).await;
    // Nothing was queued to send it anywhere.
    assert!(s.queue.list().unwrap().is_empty());
    s.stop().await;
}

#[tokio::test]
async fn bounce_request_is_acted_on_within_a_second() {
    // Nobody listens: the recipient stays deferred with a long backoff.
    let port = std::net::TcpListener::bind((RX, 0)).unwrap().local_addr().unwrap().port();
    let s = setup(port, |st| st.min_backoff = Duration::from_secs(3600)).await;
    let id = enqueue(&s, "alice@example.org", &[&format!("bob@[{RX}]")], None).await;
    wait_for("the deferral", || s.queue.get(&id).ok().filter(|e| e.rcpts[0].state == State::Deferred)).await;
    let t0 = Instant::now();
    s.queue.request(&id, Request::Bounce).unwrap();
    let dsn = wait_for("the DSN", || mails(&s.store, "alice@example.org").pop()).await;
    assert!(t0.elapsed() < Duration::from_millis(1500), "picked up after {:?}", t0.elapsed());
    assert!(dsn.contains("Action: failed"), "{dsn}");
    wait_for("the entry to leave the queue", || s.queue.get(&id).is_err().then_some(())).await;
    s.stop().await;
}

#[tokio::test]
async fn expired_message_bounces() {
    let port = std::net::TcpListener::bind((RX, 0)).unwrap().local_addr().unwrap().port();
    let s = setup(port, |st| st.max_queue_lifetime = Duration::from_secs(1)).await;
    let id = enqueue(&s, "alice@example.org", &[&format!("bob@[{RX}]")], None).await;
    let dsn = wait_for("the expiry DSN", || mails(&s.store, "alice@example.org").pop()).await;
    assert!(dsn.contains("Action: failed") && dsn.contains("Status: 5.4.7"), "{dsn}");
    wait_for("the entry to leave the queue", || s.queue.get(&id).is_err().then_some(())).await;
    s.stop().await;
}

#[tokio::test]
async fn remote_sender_gets_its_bounce_through_the_queue_with_a_null_sender() {
    let b = Behaviour {
        rcpt_reply: Arc::new(|a: &str| a.starts_with("bob").then(|| "550 5.1.1 no bob".into())),
        ..Behaviour::default()
    };
    let rx = receiver::start(RX, b).await;
    let s = setup(rx.port, |_| {}).await;
    let sender = format!("carol@[{RX}]");
    enqueue(&s, &sender, &[&rcpt(&rx)], None).await;
    let m = wait_for("the bounce at carol's server", || rx.messages().pop()).await;
    assert_eq!(m.from, "<>");
    assert_eq!(m.rcpts, std::slice::from_ref(&sender));
    assert!(m.data.starts_with("Received: by relay.test (mailroom) id "), "{}", m.data);
    assert!(!m.data.contains("Return-Path"), "{}", m.data);
    assert!(m.data.contains("Action: failed") && m.data.contains("no bob"), "{}", m.data);
    wait_for("the queue to empty", || s.queue.list().unwrap().is_empty().then_some(())).await;
    s.stop().await;
}

#[tokio::test]
async fn delay_warning_is_sent_once() {
    let port = std::net::TcpListener::bind((RX, 0)).unwrap().local_addr().unwrap().port();
    let s = setup(port, |st| st.delay_warning = Some(Duration::ZERO)).await;
    let id = enqueue(&s, "alice@example.org", &[&format!("bob@[{RX}]")], None).await;
    wait_for("three attempts", || s.queue.get(&id).ok().filter(|e| e.rcpts[0].attempts >= 3)).await;
    let dsns = mails(&s.store, "alice@example.org");
    assert_eq!(dsns.len(), 1, "{dsns:?}");
    assert!(dsns[0].contains("Action: delayed"), "{}", dsns[0]);
    assert!(s.queue.get(&id).unwrap().rcpts[0].delay_warned);
    s.stop().await;
}

#[tokio::test]
async fn too_many_hops_bounce_without_an_attempt() {
    let rx = receiver::start(RX, Behaviour::default()).await;
    // The test message carries one Received header.
    let s = setup(rx.port, |st| st.max_hops = 0).await;
    enqueue(&s, "alice@example.org", &[&rcpt(&rx)], None).await;
    let dsn = wait_for("the loop DSN", || mails(&s.store, "alice@example.org").pop()).await;
    assert!(dsn.contains("Status: 5.4.6"), "{dsn}");
    assert_eq!(rx.connections(), 0);
    s.stop().await;
}

#[tokio::test]
async fn flush_request_retries_a_deferred_recipient_at_once() {
    let tries = Arc::new(AtomicUsize::new(0));
    let t = tries.clone();
    let b = Behaviour {
        rcpt_reply: Arc::new(move |_| (t.fetch_add(1, Ordering::SeqCst) == 0).then(|| "451 4.3.0 later".into())),
        ..Behaviour::default()
    };
    let rx = receiver::start(RX, b).await;
    let s = setup(rx.port, |st| st.min_backoff = Duration::from_secs(3600)).await;
    let id = enqueue(&s, "alice@example.org", &[&rcpt(&rx)], None).await;
    wait_for("the deferral", || s.queue.get(&id).ok().filter(|e| e.rcpts[0].state == State::Deferred)).await;
    let t0 = Instant::now();
    s.queue.request(&id, Request::Flush).unwrap();
    wait_for("the flushed delivery", || (!rx.messages().is_empty()).then_some(())).await;
    assert!(t0.elapsed() < Duration::from_millis(1500), "flushed after {:?}", t0.elapsed());
    s.stop().await;
}

#[tokio::test]
async fn messages_queued_one_after_another_reuse_one_connection() {
    let rx = receiver::start(RX, Behaviour::default()).await;
    let s = setup(rx.port, |_| {}).await;
    for i in 1..=10 {
        enqueue(&s, "alice@example.org", &[&rcpt(&rx)], None).await;
        wait_for("the message", || (rx.messages().len() == i).then_some(())).await;
    }
    assert_eq!(rx.connections(), 1, "each message after the first should reuse the idle connection (RSET)");
    s.stop().await;
}

#[tokio::test]
async fn a_burst_stays_within_the_destination_limit() {
    let active = Arc::new(receiver::Active::default());
    let rx = receiver::start(RX, Behaviour { active: Some(active.clone()), ..Behaviour::default() }).await;
    let s = setup(rx.port, |st| st.max_connections_per_destination = 3).await;
    for _ in 0..30 {
        enqueue(&s, "alice@example.org", &[&rcpt(&rx)], None).await;
    }
    wait_for("all 30 messages", || (rx.messages().len() == 30).then_some(())).await;
    let (n, most) = (rx.connections(), active.max.load(Ordering::SeqCst));
    eprintln!("30 messages in a burst used {n} connection(s), at most {most} at once");
    assert!(most <= 3, "{most} connections at once");
    assert!(n <= 3, "{n} connections for 30 messages: idle ones were not reused");
    s.stop().await;
}

#[tokio::test]
async fn delete_request_removes_the_entry_without_a_bounce() {
    let port = std::net::TcpListener::bind((RX, 0)).unwrap().local_addr().unwrap().port();
    let s = setup(port, |st| st.min_backoff = Duration::from_secs(3600)).await;
    let id = enqueue(&s, "alice@example.org", &[&format!("bob@[{RX}]")], None).await;
    wait_for("the deferral", || s.queue.get(&id).ok().filter(|e| e.rcpts[0].state == State::Deferred)).await;
    let t0 = Instant::now();
    s.queue.request(&id, Request::Delete).unwrap();
    wait_for("the entry to go", || s.queue.get(&id).is_err().then_some(())).await;
    assert!(t0.elapsed() < Duration::from_millis(1500), "deleted after {:?}", t0.elapsed());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(mails(&s.store, "alice@example.org").is_empty());
    s.stop().await;
}
