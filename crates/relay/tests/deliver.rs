//! Delivery sessions against an in-test SMTP receiver on 127.0.0.2: per-recipient results (2xx sent, 4xx
//! deferred, 5xx bounced), one connection for several messages, the 452 split, the SIZE bounce without
//! sending, SMTPUTF8 checks, and the Return-Path line left out with CRLF line ends on the wire.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::receiver::{self, Behaviour};
use mailroom_proto::params::RcptParams;
use mailroom_proto::{Address, ForwardPath, ReversePath};
use mailroom_relay::connect::{Connector, Destination};
use mailroom_relay::deliver::{Job, JobRcpt, Verdict};
use mailroom_relay::dns::Resolver;
use mailroom_relay::message::Outgoing;
use mailroom_relay::pool::{JobResult, Pool};
use mailroom_relay::settings::{Relayhost, RelayhostTls, Settings, TlsPolicy};

const RX: &str = "127.0.0.2";

fn pool(port: u16) -> Pool {
    pool_with(port, |_| {})
}

fn pool_with(port: u16, tweak: impl FnOnce(&mut Settings)) -> Pool {
    let mut settings = Settings {
        hostname: "relay.test".into(),
        port,
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(5),
        ..Settings::default()
    };
    tweak(&mut settings);
    // Literal destinations need no DNS; the resolver points at a port nobody asks.
    let resolver = Resolver::new(&["127.0.0.1:9".parse().unwrap()]).unwrap();
    Pool::new(Connector { settings: Arc::new(settings), resolver })
}

fn job(id: &str, rcpts: &[&str], body: &str) -> Job {
    Job {
        id: id.into(),
        from: ReversePath::Mailbox(Address::parse("alice@example.org").unwrap()),
        ret: None,
        envid: None,
        rcpts: rcpts
            .iter()
            .enumerate()
            .map(|(index, a)| JobRcpt {
                index,
                to: ForwardPath::Mailbox(Address::parse(a).unwrap()),
                params: RcptParams::default(),
            })
            .collect(),
        message: Arc::new(Outgoing::from_spool(body.as_bytes().to_vec())),
    }
}

fn dest() -> Destination {
    Destination::Literal(RX.parse().unwrap())
}

fn verdicts(r: &JobResult) -> Vec<(usize, Verdict, String)> {
    let mut v: Vec<_> = r.results.iter().map(|x| (x.index, x.verdict, x.status.clone())).collect();
    v.sort_by_key(|x| x.0);
    v
}

const MSG: &str = "Return-Path: <alice@example.org>\nReceived: from x by y\nSubject: hi\n\nline one\nline two\n";

#[tokio::test]
async fn per_recipient_results_and_crlf_on_the_wire() {
    let b = Behaviour {
        rcpt_reply: Arc::new(|a: &str| match a {
            a if a.starts_with("temp") => Some("451 4.3.0 try later".into()),
            a if a.starts_with("perm") => Some("550 5.1.1 no such user".into()),
            _ => None,
        }),
        ..Behaviour::default()
    };
    let rx = receiver::start(RX, b).await;
    let out = pool(rx.port).run(&dest(), vec![job("Q1", &["ok@d.test", "temp@d.test", "perm@d.test"], MSG)]).await;
    assert_eq!(out.len(), 1);
    assert_eq!(
        verdicts(&out[0]),
        [
            (0, Verdict::Sent, "2.0.0".into()),
            (1, Verdict::Deferred, "4.3.0".into()),
            (2, Verdict::Bounced, "5.1.1".into())
        ]
    );
    let bounced = out[0].results.iter().find(|r| r.index == 2).unwrap();
    assert!(bounced.reply.contains("550 5.1.1 no such user"), "{}", bounced.reply);
    assert_eq!(bounced.remote_mta.as_deref(), Some(RX));
    assert_eq!(out[0].relay.as_deref(), Some(format!("{RX}[{RX}]:{}", rx.port).as_str()));
    let msgs = rx.messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].rcpts, ["ok@d.test"]);
    assert_eq!(msgs[0].data, "Received: from x by y\r\nSubject: hi\r\n\r\nline one\r\nline two\r\n");
    assert!(!msgs[0].data.contains("Return-Path"));
}

#[tokio::test]
async fn one_connection_for_many_messages() {
    let rx = receiver::start(RX, Behaviour::default()).await;
    let p = pool(rx.port);
    let jobs: Vec<_> = (0..10).map(|i| job(&format!("M{i}"), &["bob@d.test"], MSG)).collect();
    let out = p.run(&dest(), jobs).await;
    assert_eq!(out.len(), 10);
    assert!(out.iter().all(|r| r.results[0].verdict == Verdict::Sent));
    // Ten jobs at once may use up to ten connections; later rounds reuse the idle ones.
    let first = rx.connections();
    for i in 0..10 {
        let out = p.run(&dest(), vec![job(&format!("N{i}"), &["bob@d.test"], MSG)]).await;
        assert_eq!(out[0].results[0].verdict, Verdict::Sent);
    }
    assert_eq!(rx.messages().len(), 20);
    assert_eq!(rx.connections(), first, "messages sent one by one opened new connections");
}

#[tokio::test]
async fn too_many_recipients_are_split_into_further_transactions() {
    let rx = receiver::start(RX, Behaviour { max_rcpts: 2, ..Behaviour::default() }).await;
    let rcpts = ["a@d.test", "b@d.test", "c@d.test", "d@d.test", "e@d.test"];
    let out = pool(rx.port).run(&dest(), vec![job("S1", &rcpts, MSG)]).await;
    assert!(out[0].results.iter().all(|r| r.verdict == Verdict::Sent), "{:?}", out[0].results);
    assert_eq!(out[0].results.len(), 5);
    let msgs = rx.messages();
    let sizes: Vec<_> = msgs.iter().map(|m| m.rcpts.len()).collect();
    assert_eq!(sizes, [2, 2, 1]);
    assert_eq!(rx.connections(), 1);
}

#[tokio::test]
async fn too_big_for_the_server_bounces_without_sending() {
    let b = Behaviour { extensions: vec!["PIPELINING".into(), "SIZE 50".into()], ..Behaviour::default() };
    let rx = receiver::start(RX, b).await;
    let big = format!("Subject: big\n\n{}\n", "x".repeat(200));
    let out = pool(rx.port).run(&dest(), vec![job("B1", &["bob@d.test"], &big)]).await;
    assert_eq!(verdicts(&out[0]), [(0, Verdict::Bounced, "5.3.4".into())]);
    assert!(rx.messages().is_empty());
}

#[tokio::test]
async fn utf8_without_smtputf8_bounces() {
    let rx = receiver::start(RX, Behaviour::default()).await;
    let p = pool(rx.port);
    let out = p.run(&dest(), vec![job("U1", &["jörg@d.test"], MSG)]).await;
    assert_eq!(verdicts(&out[0]), [(0, Verdict::Bounced, "5.6.7".into())]);
    let out = p.run(&dest(), vec![job("U2", &["bob@d.test"], "Subject: grüße\n\nhi\n")]).await;
    assert_eq!(verdicts(&out[0]), [(0, Verdict::Bounced, "5.6.9".into())]);
    // An IDN domain alone goes as its A-label, no SMTPUTF8 needed.
    let out = p.run(&dest(), vec![job("U3", &["bob@bücher.test"], MSG)]).await;
    assert_eq!(verdicts(&out[0]), [(0, Verdict::Sent, "2.0.0".into())]);
    assert_eq!(rx.messages()[0].rcpts, ["bob@xn--bcher-kva.test"]);
}

#[tokio::test]
async fn nobody_listening_defers() {
    let port = std::net::TcpListener::bind((RX, 0)).unwrap().local_addr().unwrap().port();
    let out = pool(port).run(&dest(), vec![job("D1", &["a@d.test"], MSG), job("D2", &["b@d.test"], MSG)]).await;
    assert_eq!(out.len(), 2);
    for r in &out {
        assert_eq!(r.results[0].verdict, Verdict::Deferred, "{:?}", r.results);
        assert!(r.results[0].status.starts_with('4'));
    }
}

#[tokio::test]
async fn end_of_data_refusal_applies_to_every_accepted_recipient() {
    let b = Behaviour { data_reply: Some("554 5.7.1 content refused".into()), ..Behaviour::default() };
    let rx = receiver::start(RX, b).await;
    let out = pool(rx.port).run(&dest(), vec![job("E1", &["a@d.test", "b@d.test"], MSG)]).await;
    assert_eq!(verdicts(&out[0]), [(0, Verdict::Bounced, "5.7.1".into()), (1, Verdict::Bounced, "5.7.1".into())]);
}

#[tokio::test]
async fn connections_per_destination_are_limited() {
    let rx = receiver::start(RX, Behaviour::default()).await;
    let p = pool_with(rx.port, |s| s.max_connections_per_destination = 1);
    let jobs: Vec<_> = (0..8).map(|i| job(&format!("L{i}"), &["bob@d.test"], MSG)).collect();
    let out = p.run(&dest(), jobs).await;
    assert!(out.iter().all(|r| r.results[0].verdict == Verdict::Sent));
    assert_eq!(rx.messages().len(), 8);
    assert_eq!(rx.connections(), 1, "a limit of one connection per destination");
}

#[tokio::test]
async fn broken_opportunistic_starttls_is_retried_in_plain_text() {
    let rx = receiver::start(RX, Behaviour { broken_starttls: true, ..Behaviour::default() }).await;
    let out = pool(rx.port).run(&dest(), vec![job("T1", &["bob@d.test"], MSG)]).await;
    assert_eq!(verdicts(&out[0]), [(0, Verdict::Sent, "2.0.0".into())]);
    assert_eq!(rx.connections(), 2, "one connection with the failed STARTTLS, one in plain text");
    assert_eq!(rx.messages().len(), 1);
}

#[tokio::test]
async fn required_tls_never_sends_in_plain_text() {
    for broken in [false, true] {
        let rx = receiver::start(RX, Behaviour { broken_starttls: broken, ..Behaviour::default() }).await;
        let p = pool_with(rx.port, |s| s.tls = TlsPolicy::Required);
        let out = p.run(&dest(), vec![job("R1", &["bob@d.test"], MSG)]).await;
        assert_eq!(out[0].results[0].verdict, Verdict::Deferred, "{:?}", out[0].results);
        assert!(rx.messages().is_empty());
        assert_eq!(rx.connections(), 1, "no plain-text retry when TLS is required");
    }
}

#[tokio::test]
async fn relayhost_in_brackets_takes_everything_without_dns() {
    let rx = receiver::start(RX, Behaviour::default()).await;
    let p = pool_with(0, |s| {
        s.relayhost = Some(Relayhost::parse(&format!("[{RX}]:{}", rx.port)).unwrap());
        s.relayhost_tls = RelayhostTls::None;
    });
    let out =
        p.run(&Destination::Relayhost, vec![job("H1", &["bob@anywhere.invalid", "carol@else.invalid"], MSG)]).await;
    assert!(out[0].results.iter().all(|r| r.verdict == Verdict::Sent), "{:?}", out[0].results);
    assert_eq!(rx.messages()[0].rcpts, ["bob@anywhere.invalid", "carol@else.invalid"]);
}

#[tokio::test]
async fn eight_bit_content_without_8bitmime_bounces() {
    let rx = receiver::start(RX, Behaviour { extensions: vec!["PIPELINING".into()], ..Behaviour::default() }).await;
    let out = pool(rx.port).run(&dest(), vec![job("8B", &["bob@d.test"], "Subject: x\n\nbödy\n")]).await;
    assert_eq!(verdicts(&out[0]), [(0, Verdict::Bounced, "5.6.3".into())]);
    assert!(rx.messages().is_empty());
}

#[tokio::test]
async fn relayhost_auth_with_the_password_file() {
    let rx = receiver::start(RX, Behaviour { auth: true, ..Behaviour::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let p = pool_with(0, |s| {
        s.relayhost = Some(Relayhost::parse(&format!("[{RX}]:{}", rx.port)).unwrap());
        s.relayhost_tls = RelayhostTls::None;
        s.relayhost_user = Some("relayuser".into());
        s.relayhost_password_file = Some(pw.clone());
    });
    let out = p.run(&Destination::Relayhost, vec![job("A1", &["bob@anywhere.invalid"], MSG)]).await;
    assert_eq!(out[0].results[0].verdict, Verdict::Sent, "{:?}", out[0].results);
    assert_eq!(rx.auth.lock().unwrap().clone(), ["|relayuser|s3cret"]);
}

#[tokio::test]
async fn starttls_is_used_with_a_certificate_nobody_can_verify() {
    for policy in [TlsPolicy::Opportunistic, TlsPolicy::Required] {
        let b = Behaviour { tls: Some(receiver::self_signed_acceptor()), ..Behaviour::default() };
        let rx = receiver::start(RX, b).await;
        let p = pool_with(rx.port, |s| s.tls = policy);
        let out = p.run(&dest(), vec![job("T2", &["bob@d.test"], MSG), job("T3", &["carol@d.test"], MSG)]).await;
        assert!(out.iter().all(|r| r.results[0].verdict == Verdict::Sent), "{policy:?}: {out:?}");
        let msgs = rx.messages();
        assert_eq!(msgs.len(), 2);
        assert!(msgs.iter().all(|m| m.tls), "{policy:?}: sent in plain text");
    }
}

#[tokio::test]
async fn total_connections_are_limited_across_destinations() {
    let active = Arc::new(receiver::Active::default());
    let b = Behaviour { active: Some(active.clone()), ..Behaviour::default() };
    let rx_a = receiver::start(RX, b.clone()).await;
    let rx_b = receiver::start_on("127.0.0.3", rx_a.port, b).await;
    let p = pool_with(rx_a.port, |s| s.max_connections = 1);
    let jobs = |n: &str| (0..4).map(|i| job(&format!("{n}{i}"), &["bob@d.test"], MSG)).collect::<Vec<_>>();
    let (to_a, to_b) = (dest(), Destination::Literal("127.0.0.3".parse().unwrap()));
    let (ra, rb) = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(p.run(&to_a, jobs("A")), p.run(&to_b, jobs("B")))
    })
    .await
    .expect("the two destinations waited for each other's idle connections");
    assert!(ra.iter().chain(&rb).all(|r| r.results[0].verdict == Verdict::Sent));
    assert_eq!((rx_a.messages().len(), rx_b.messages().len()), (4, 4));
    assert_eq!(active.max.load(std::sync::atomic::Ordering::SeqCst), 1, "more than one connection at once");
}
