//! The relay's metrics inside one process: the recorder `mailroom serve` installs, a real store and
//! queue, the relay task, and an in-test SMTP receiver on 127.0.0.2 (an address literal: no DNS) that
//! defers the first RCPT and accepts the next. The attempts are counted by result and the queue gauges
//! follow the entry from deferred to gone. One test in this binary: the recorder is per process.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::receiver::{self, Behaviour};
use mailroom_queue::{Envelope, Queue};
use mailroom_relay::dns::Resolver;
use mailroom_relay::settings::Settings;
use mailroom_relay::Relay;
use mailroom_store::{Store, UserDirectory};

const RX: &str = "127.0.0.2";
/// The longest the test waits for something to happen.
const PATIENCE: Duration = Duration::from_secs(15);

/// The value of the series `series` (name and labels as rendered), 0 when absent.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().expect("a number"))
}

/// Waits (bounded) until every `(series, value)` reads as given.
async fn wait_for_values(h: &mailroom_metrics::Handle, want: &[(&str, f64)]) {
    let start = Instant::now();
    loop {
        let text = h.render();
        if want.iter().all(|(s, v)| value(&text, s) == *v) {
            return;
        }
        assert!(start.elapsed() < PATIENCE, "never {want:?}:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn attempts_are_counted_by_result_and_the_queue_gauges_follow_the_entry() {
    let h = mailroom_metrics::install();
    let tries = Arc::new(AtomicUsize::new(0));
    let t = tries.clone();
    let behaviour = Behaviour {
        rcpt_reply: Arc::new(move |_| (t.fetch_add(1, Ordering::SeqCst) == 0).then(|| "451 4.3.0 try later".into())),
        ..Behaviour::default()
    };
    let rx = receiver::start(RX, behaviour).await;

    let dir = tempfile::tempdir().unwrap();
    UserDirectory::new(dir.path()).add("alice@example.org", None).unwrap();
    let store = Store::open(dir.path()).unwrap();
    let queue = Queue::open(dir.path()).unwrap();
    let settings = Settings {
        hostname: "relay.test".into(),
        port: rx.port,
        // Long enough for the gauges (refreshed once a second) to show the deferral before the retry.
        min_backoff: Duration::from_secs(3),
        max_backoff: Duration::from_secs(3),
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(5),
        postmaster: "postmaster@example.org".into(),
        ..Settings::default()
    };
    let resolver = Resolver::new(&["127.0.0.1:9".parse().unwrap()]).unwrap();
    let relay = Relay::new(queue.clone(), store.clone(), settings, resolver);
    let waker = relay.waker();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(relay.run(async move {
        let _ = stopped.await;
    }));

    let before = h.render();
    let deferred_attempts = r#"mailroom_delivery_attempts_total{result="deferred"}"#;
    let delivered_attempts = r#"mailroom_delivery_attempts_total{result="delivered"}"#;
    let mut incoming = store.begin().unwrap();
    let text = "Return-Path: <alice@example.org>\nFrom: alice@example.org\nSubject: metrics\n\nhello\n";
    incoming.write(text.as_bytes()).unwrap();
    let to = format!("bob@[{RX}]");
    let env = Envelope::new(incoming.id(), "alice@example.org", SystemTime::now(), text.len() as u64, &[&to]);
    incoming.commit_with(&[], Some(queue.spool_for(&env))).await.unwrap();
    queue.add_committed(env);
    waker.notify_one();

    wait_for_values(
        &h,
        &[
            (deferred_attempts, value(&before, deferred_attempts) + 1.0),
            (r#"mailroom_queue_recipients{state="deferred"}"#, 1.0),
            (r#"mailroom_queue_recipients{state="pending"}"#, 0.0),
            ("mailroom_queue_messages", 1.0),
        ],
    )
    .await;
    wait_for_values(
        &h,
        &[
            (delivered_attempts, value(&before, delivered_attempts) + 1.0),
            (r#"mailroom_queue_recipients{state="deferred"}"#, 0.0),
            ("mailroom_queue_messages", 0.0),
            ("mailroom_queue_oldest_message_age_seconds", 0.0),
        ],
    )
    .await;
    assert_eq!(tries.load(Ordering::SeqCst), 2, "one deferral, one delivery");
    assert_eq!(value(&h.render(), r#"mailroom_delivery_attempts_total{result="bounced"}"#), 0.0);
    let _ = stop.send(());
    tokio::time::timeout(PATIENCE, task).await.expect("the relay stops").unwrap();
}
