//! MX selection against a real DNS server (knotd on 127.0.0.1): preference order, shuffling of equal
//! preferences, implicit MX, null MX, NXDOMAIN, and a resolver that does not answer.

mod common;

use mailroom_relay::dns::{DnsError, Resolver};

const ZONE: &str = "\
$ORIGIN test.
$TTL 60
@ SOA ns.test. admin.test. 1 60 60 600 60
@ NS ns.test.
ns A 127.0.0.1
multi MX 20 mx2.multi.test.
multi MX 10 mx1a.multi.test.
multi MX 10 mx1b.multi.test.
mx1a.multi A 127.0.0.2
mx1b.multi A 127.0.0.3
mx2.multi AAAA ::1
mx2.multi A 127.0.0.4
aonly A 127.0.0.5
nullmx MX 0 .
txtonly TXT \"no mail here\"
xn--bcher-kva MX 10 mx1a.multi.test.
";

fn resolver() -> Option<(common::knot::Knot, Resolver)> {
    let knot = common::knot::start("test.", ZONE)?;
    let r = Resolver::new(&[knot.addr]).unwrap();
    Some((knot, r))
}

#[tokio::test]
async fn mx_sorted_by_preference_equal_ones_shuffled() {
    let Some((_knot, r)) = resolver() else { return };
    let mut firsts = std::collections::HashSet::new();
    for _ in 0..40 {
        let hosts = r.mx_hosts("multi.test").await.unwrap();
        let names: Vec<_> = hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(names[2], "mx2.multi.test", "{names:?}");
        assert!(names[..2].contains(&"mx1a.multi.test") && names[..2].contains(&"mx1b.multi.test"));
        assert!(hosts.iter().all(|h| !h.implicit));
        firsts.insert(names[0].to_string());
    }
    assert_eq!(firsts.len(), 2, "the two preference-10 hosts never swapped places");
    let mut addrs = r.addresses("mx2.multi.test").await.unwrap();
    addrs.sort();
    assert_eq!(addrs, ["127.0.0.4".parse::<std::net::IpAddr>().unwrap(), "::1".parse().unwrap()]);
}

#[tokio::test]
async fn implicit_mx_when_there_is_no_mx() {
    let Some((_knot, r)) = resolver() else { return };
    let hosts = r.mx_hosts("aonly.test").await.unwrap();
    assert_eq!(hosts.len(), 1);
    assert_eq!((hosts[0].name.as_str(), hosts[0].implicit), ("aonly.test", true));
    assert_eq!(r.addresses("aonly.test").await.unwrap(), ["127.0.0.5".parse::<std::net::IpAddr>().unwrap()]);
    // A name that exists with neither MX nor address: an implicit MX with nowhere to go.
    assert!(r.mx_hosts("txtonly.test").await.unwrap()[0].implicit);
    assert!(r.addresses("txtonly.test").await.unwrap().is_empty());
}

#[tokio::test]
async fn null_mx_and_nxdomain_are_permanent() {
    let Some((_knot, r)) = resolver() else { return };
    let e = r.mx_hosts("nullmx.test").await.unwrap_err();
    assert_eq!((e.status(), e.is_permanent()), ("5.1.10", true), "{e:?}");
    assert!(r.null_mx("nullmx.test").await);
    assert!(!r.null_mx("multi.test").await);
    let e = r.mx_hosts("nosuch.test").await.unwrap_err();
    assert!(matches!(e, DnsError::NoSuchDomain(_)), "{e:?}");
    assert_eq!(e.status(), "5.1.2");
}

#[tokio::test]
async fn idn_domain_is_looked_up_as_its_a_label() {
    let Some((_knot, r)) = resolver() else { return };
    let hosts = r.mx_hosts("bücher.test").await.unwrap();
    assert_eq!(hosts[0].name, "mx1a.multi.test");
}

#[tokio::test]
async fn unreachable_resolver_is_temporary() {
    // A UDP port nobody listens on: the queries are refused or time out.
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let r = Resolver::new(&[format!("127.0.0.1:{port}").parse().unwrap()]).unwrap();
    let e = r.mx_hosts("multi.test").await.unwrap_err();
    assert!(matches!(e, DnsError::Temporary { .. }), "{e:?}");
    assert!(!e.is_permanent());
    assert!(!r.null_mx("multi.test").await);
    // The failure is remembered: the next RCPT to that domain is not held up by the same dead resolver
    // (the lookup above took seconds; one that is not sent takes none).
    let again = std::time::Instant::now();
    assert!(!r.null_mx("MULTI.test").await);
    assert!(
        again.elapsed() < std::time::Duration::from_secs(1),
        "asked the dead resolver again: {:?}",
        again.elapsed()
    );
}

/// RFC 5321 §5.1 with real DNS: the preferred MX greets with 421, so the next one gets the message.
#[tokio::test]
async fn next_mx_after_a_4xx_greeting() {
    use std::sync::Arc;
    use std::time::Duration;

    use common::receiver::{self, Behaviour};
    use mailroom_proto::params::RcptParams;
    use mailroom_proto::{Address, ForwardPath, ReversePath};
    use mailroom_relay::connect::{Connector, Destination};
    use mailroom_relay::deliver::{Job, JobRcpt, Verdict};
    use mailroom_relay::message::Outgoing;
    use mailroom_relay::pool::Pool;
    use mailroom_relay::settings::Settings;

    let zone = "$ORIGIN test.\n$TTL 60\n@ SOA ns.test. admin.test. 1 60 60 600 60\n@ NS ns.test.\nns A 127.0.0.1\n\
                two MX 10 busy.test.\ntwo MX 20 good.test.\nbusy A 127.0.0.3\ngood A 127.0.0.2\n";
    let Some(knot) = common::knot::start("test.", zone) else { return };
    let good = receiver::start("127.0.0.2", Behaviour::default()).await;
    let busy_behaviour = Behaviour { greeting: Some("421 4.3.2 too busy".into()), ..Behaviour::default() };
    let busy = receiver::start_on("127.0.0.3", good.port, busy_behaviour).await;
    let settings = Settings {
        port: good.port,
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(5),
        ..Settings::default()
    };
    let resolver = Resolver::new(&[knot.addr]).unwrap();
    let pool = Pool::new(Connector { settings: Arc::new(settings), resolver });
    let job = Job {
        id: "X1".into(),
        from: ReversePath::Mailbox(Address::parse("a@example.org").unwrap()),
        ret: None,
        envid: None,
        rcpts: vec![JobRcpt {
            index: 0,
            to: ForwardPath::Mailbox(Address::parse("bob@two.test").unwrap()),
            params: RcptParams::default(),
        }],
        message: Arc::new(Outgoing::from_spool(b"Subject: x\n\nhi\n".to_vec())),
    };
    let out = pool.run(&Destination::Domain("two.test".into()), vec![job]).await;
    assert_eq!(out[0].results[0].verdict, Verdict::Sent, "{:?}", out[0].results);
    assert_eq!(out[0].relay.as_deref(), Some(format!("good.test[127.0.0.2]:{}", good.port).as_str()));
    assert_eq!(busy.connections(), 1, "the preferred MX was tried first");
    assert_eq!(good.messages().len(), 1);
}

/// What DNS says decides the result without any connection: null MX 5.1.10, NXDOMAIN 5.1.2, a name
/// with neither MX nor address 5.1.2, an unanswered query deferred.
#[tokio::test]
async fn dns_verdicts_through_the_pool() {
    use std::sync::Arc;
    use std::time::Duration;

    use mailroom_proto::params::RcptParams;
    use mailroom_proto::{Address, ForwardPath, ReversePath};
    use mailroom_relay::connect::{Connector, Destination};
    use mailroom_relay::deliver::{Job, JobRcpt, Verdict};
    use mailroom_relay::message::Outgoing;
    use mailroom_relay::pool::Pool;
    use mailroom_relay::settings::Settings;

    let Some(knot) = common::knot::start("test.", ZONE) else { return };
    let settings = Settings { connect_timeout: Duration::from_secs(2), ..Settings::default() };
    let pool = Pool::new(Connector { settings: Arc::new(settings), resolver: Resolver::new(&[knot.addr]).unwrap() });
    let job = |domain: &str| Job {
        id: format!("D-{domain}"),
        from: ReversePath::Mailbox(Address::parse("a@example.org").unwrap()),
        ret: None,
        envid: None,
        rcpts: vec![JobRcpt {
            index: 0,
            to: ForwardPath::Mailbox(Address::parse(&format!("bob@{domain}")).unwrap()),
            params: RcptParams::default(),
        }],
        message: Arc::new(Outgoing::from_spool(b"Subject: x\n\nhi\n".to_vec())),
    };
    for (domain, verdict, status) in [
        ("nullmx.test", Verdict::Bounced, "5.1.10"),
        ("nosuch.test", Verdict::Bounced, "5.1.2"),
        ("txtonly.test", Verdict::Bounced, "5.1.2"),
    ] {
        let out = pool.run(&Destination::Domain(domain.into()), vec![job(domain)]).await;
        let r = &out[0].results[0];
        assert_eq!((r.verdict, r.status.as_str()), (verdict, status), "{domain}: {r:?}");
    }
}
