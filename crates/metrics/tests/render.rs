//! The installed recorder renders every family with HELP and TYPE, and each record function moves the
//! series it names (by exactly what it recorded). One test process, one recorder: each test reads
//! values before and after, so tests running in parallel cannot disturb one another's assertions as
//! long as each uses its own series.

use std::time::Duration;

use mailroom_metrics::names::{self, Kind, FAMILIES};
use mailroom_metrics::record;
use mailroom_metrics::{AuthMethod, AuthResult, DeliveryResult, Listener, QueueState, RefusalReason, TlsVersion};

/// The value of the series `name{labels}` (labels as rendered, e.g. `listener="smtp"`), 0 when absent.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().expect("a number"))
}

#[test]
fn every_family_has_help_and_type() {
    let text = mailroom_metrics::install().render();
    for f in FAMILIES {
        let kind = match f.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        assert!(text.contains(&format!("# HELP {} {}\n", f.name, f.help)), "HELP of {} in:\n{text}", f.name);
        assert!(text.contains(&format!("# TYPE {} {kind}\n", f.name)), "TYPE of {} in:\n{text}", f.name);
    }
}

#[test]
fn install_is_idempotent() {
    let a = mailroom_metrics::install();
    let b = mailroom_metrics::install();
    record::tls_handshake_failed();
    let (ta, tb) = (a.render(), b.render());
    let v = value(&ta, names::TLS_HANDSHAKE_FAILURES);
    assert!(v >= 1.0);
    assert_eq!(v, value(&tb, names::TLS_HANDSHAKE_FAILURES), "one recorder behind both handles");
}

#[test]
fn sessions_are_active_until_the_guard_drops() {
    let h = mailroom_metrics::install();
    let total = r#"mailroom_sessions_total{listener="submissions"}"#;
    let active = r#"mailroom_sessions_active{listener="submissions"}"#;
    let before = h.render();
    let guard = record::session_opened(Listener::Submissions);
    let during = h.render();
    assert_eq!(value(&during, total), value(&before, total) + 1.0);
    assert_eq!(value(&during, active), value(&before, active) + 1.0);
    drop(guard);
    let after = h.render();
    assert_eq!(value(&after, active), value(&before, active));
    assert_eq!(value(&after, total), value(&before, total) + 1.0);
}

#[test]
fn replies_count_each_reply_once_by_class() {
    let h = mailroom_metrics::install();
    let series = |c: &str| format!(r#"mailroom_smtp_replies_total{{class="{c}"}}"#);
    let before = h.render();
    // A multiline EHLO reply is one reply; a bare code line is a reply too; junk is not.
    record::replies(
        b"250-mx.test\r\n250-PIPELINING\r\n250 SMTPUTF8\r\n354 go ahead\r\n421\r\n550 5.1.1 no\r\nxyz nope\r\n",
    );
    let after = h.render();
    for (class, n) in [("2xx", 1.0), ("3xx", 1.0), ("4xx", 1.0), ("5xx", 1.0)] {
        assert_eq!(value(&after, &series(class)), value(&before, &series(class)) + n, "{class}");
    }
}

#[test]
fn counters_move_by_what_was_recorded() {
    let h = mailroom_metrics::install();
    let before = h.render();
    record::message_received(1000);
    record::message_received(234);
    record::refusal(RefusalReason::MailLoop);
    record::delivery_attempt(DeliveryResult::Bounced);
    record::smtp_auth_failure();
    record::tls_handshake(TlsVersion::Tls13);
    record::auth_result(AuthMethod::Dmarc, AuthResult::from_keyword("PermError"));
    let after = h.render();
    let delta = |s: &str| value(&after, s) - value(&before, s);
    assert_eq!(delta("mailroom_messages_received_total"), 2.0);
    assert_eq!(delta("mailroom_received_bytes_total"), 1234.0);
    assert_eq!(delta(r#"mailroom_refusals_total{reason="mail_loop"}"#), 1.0);
    assert_eq!(delta(r#"mailroom_delivery_attempts_total{result="bounced"}"#), 1.0);
    assert_eq!(delta("mailroom_smtp_auth_failures_total"), 1.0);
    assert_eq!(delta(r#"mailroom_tls_handshakes_total{version="1.3"}"#), 1.0);
    assert_eq!(delta(r#"mailroom_auth_results_total{method="dmarc",result="permerror"}"#), 1.0);
    assert_eq!(delta(r#"mailroom_auth_results_total{method="dmarc",result="fail"}"#), 0.0);
}

#[test]
fn queue_gauges_are_set_not_added() {
    let h = mailroom_metrics::install();
    let mut g = record::QueueGauges { messages: 2, oldest_age: Duration::from_secs(90), ..Default::default() };
    g.add(QueueState::Pending);
    g.add(QueueState::Deferred);
    g.add(QueueState::Deferred);
    record::queue(&g);
    record::queue(&g);
    let text = h.render();
    assert_eq!(value(&text, r#"mailroom_queue_recipients{state="deferred"}"#), 2.0);
    assert_eq!(value(&text, r#"mailroom_queue_recipients{state="pending"}"#), 1.0);
    assert_eq!(value(&text, r#"mailroom_queue_recipients{state="in_flight"}"#), 0.0);
    assert_eq!(value(&text, "mailroom_queue_messages"), 2.0);
    assert_eq!(value(&text, "mailroom_queue_oldest_message_age_seconds"), 90.0);
}

#[test]
fn commit_latency_lands_in_its_bucket() {
    let h = mailroom_metrics::install();
    let bucket = r#"mailroom_store_commit_duration_seconds_bucket{le="0.005"}"#;
    let below = r#"mailroom_store_commit_duration_seconds_bucket{le="0.0025"}"#;
    let before = h.render();
    record::commit_duration(Duration::from_millis(4));
    let after = h.render();
    assert_eq!(value(&after, bucket) - value(&before, bucket), 1.0, "in:\n{after}");
    assert_eq!(value(&after, below) - value(&before, below), 0.0);
    assert!(after.contains(r#"mailroom_store_commit_duration_seconds_bucket{le="0.0001"}"#));
    assert!(after.contains(r#"mailroom_store_commit_duration_seconds_bucket{le="1"}"#));
}
