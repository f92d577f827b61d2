//! DKIM end to end (issue 12): `mailroom dkim keygen` writes private key files and prints the TXT
//! record; a real DNS server (knotd on loopback) serves exactly those printed lines; mail submitted by
//! authenticated users and `[delivery] relay_networks` is signed before it is stored or queued and
//! dkimpy verifies it through that DNS server; inbound mail and mail from domains without a key is not
//! signed; DSNs carry the host name's domain signature; keys made while the server runs sign after
//! SIGHUP; messages signed by dkimpy pass mailroom's verifier over the same DNS, a changed body octet
//! fails, and opendkim's rsa-sha1 signatures fail (RFC 8301).
//!
//! Run: `cargo test -p mailroom --test dkim`. Needs `knot`, `python3-dkim` and `opendkim-tools` from
//! Debian; a missing tool fails the test unless `MAILROOM_SKIP_DKIM=1` is set.

mod common;

#[path = "dkim/support.rs"]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{free_port, mailroom, poll, user_add, user_add_password, Opts, Server, Smtp};
use support::{dkimpy_verify_file, have, have_all, keygen, Dns, PYTHON};

const PASSWORD: &str = "dkim-test-pw";
const WAIT: Duration = Duration::from_secs(20);

fn message(from: &str, to: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nDate: Mon, 30 Nov 2026 18:00:00 +0000\r\n\
         Message-ID: <{}@dkim.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n\
         Hello,\r\n\r\nsigned   text with  spaces \r\n \r\n\t\r\n",
        subject.replace(' ', "-")
    )
    .into_bytes()
}

/// One transaction on S (after EHLO and, maybe, AUTH); asserts the 250 after the data.
fn transaction(s: &mut Smtp, from: &str, to: &str, body: &[u8]) {
    s.expect(&format!("MAIL FROM:<{from}>"), 250);
    s.expect(&format!("RCPT TO:<{to}>"), 250);
    let r = s.data(body);
    assert_eq!(r.code, 250, "{r:?}");
    let _ = s.cmd("QUIT");
}

/// Alice submits on the submission port (AUTH PLAIN; plaintext allowed on loopback by the config).
fn submit(server: &Server, to: &str, subject: &str) {
    let mut s = Smtp::connect(server.submission_port.expect("submission"));
    assert_eq!(s.read_reply().code, 220);
    s.ehlo();
    let blob = mailroom_proto::base64::encode(format!("\0alice@example.test\0{PASSWORD}").as_bytes());
    s.expect(&format!("AUTH PLAIN {blob}"), 235);
    transaction(&mut s, "alice@example.test", to, &message("alice@example.test", to, subject));
}

/// An unauthenticated client from SRC on the smtp listener sends FROM -> TO.
fn deliver_from(server: &Server, src: [u8; 4], from: &str, to: &str, subject: &str) {
    let mut s = Smtp::try_connect_from(src.into(), server.port).expect("connect");
    assert_eq!(s.read_reply().code, 220);
    s.ehlo();
    transaction(&mut s, from, to, &message(from, to, subject));
}

/// The stored message of ADDR whose Subject is SUBJECT (waiting for it, bounded).
fn stored(server: &Server, addr: &str, subject: &str) -> PathBuf {
    poll(WAIT, Duration::from_millis(50), || {
        server.new_files(addr).into_iter().find(|f| {
            String::from_utf8_lossy(&std::fs::read(f).unwrap_or_default()).contains(&format!("Subject: {subject}\n"))
        })
    })
    .unwrap_or_else(|| panic!("{addr} never got {subject:?}:\n{}", server.log_text()))
}

fn text(p: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned()
}

/// A data directory with alice (password) and bob, and keys: ed25519 and rsa for example.test, ed25519
/// for e2e.test (the domain of the test host name mx.e2e.test). Returns the printed record lines.
fn data_dir_with_keys(root: &Path) -> (PathBuf, Vec<String>) {
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    user_add_password(&data, "alice@example.test", PASSWORD);
    user_add(&data, "bob@example.test");
    let records = vec![
        keygen(&data, "example.test", "ed", "ed25519"),
        keygen(&data, "example.test", "rsa", "rsa"),
        keygen(&data, "e2e.test", "host", "ed25519"),
    ];
    (data, records)
}

/// The server under test: relay_networks 127.0.0.1/32, DNS at DNS, delivery to a port nobody listens
/// on (remote mail stays queued), `dead.test` an MX on 127.0.0.9.
fn server(data: PathBuf, dns: &Dns) -> Server {
    let config = format!(
        "[auth]\nallow_plaintext_auth = true\n\n[delivery]\nrelay_networks = [\"127.0.0.1/32\"]\nport = {}\n\
         min_backoff = \"60s\"\n\n[dns]\nservers = [\"{}\"]\n",
        free_port(),
        dns.server()
    );
    Server::spawn(Opts::example().with_submission().with_config(&config), data, free_port())
}

fn dead_mx() -> Vec<String> {
    vec!["dead MX 10 mx.dead.test.".into(), "mx.dead A 127.0.0.9".into()]
}

#[test]
fn keygen_writes_private_keys_and_prints_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ed = keygen(&data, "Example.TEST", "s1", "ed25519");
    let re = r#"s1._domainkey.example.test. IN TXT "v=DKIM1; k=ed25519; p="#;
    assert!(ed.starts_with(re) && ed.ends_with('"'), "{ed}");
    let rsa = keygen(&data, "example.test", "s2", "rsa");
    assert!(rsa.starts_with(r#"s2._domainkey.example.test. IN TXT "v=DKIM1; k=rsa; p=MIIB"#), "{rsa}");
    let strings: Vec<&str> = rsa.split('"').skip(1).step_by(2).collect();
    assert!(strings.len() >= 2 && strings.iter().all(|s| s.len() <= 255), "{rsa}");
    let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(data.join("dkim/example.test/s1.key")), 0o600);
    assert_eq!(mode(data.join("dkim/example.test/s2.key")), 0o600);
    assert_eq!(mode(data.join("dkim/example.test")), 0o700);
    assert_eq!(mode(data.join("dkim")), 0o700);
    // The default selector: the algorithm and the month.
    let out = mailroom(&data, &["dkim", "keygen", "example.test"]);
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains("IN TXT \"v=DKIM1; k=ed25519;") && printed.contains("ed25519-20"), "{printed}");
    // An existing selector is never replaced.
    let before = std::fs::read(data.join("dkim/example.test/s1.key")).unwrap();
    let again = mailroom(&data, &["dkim", "keygen", "example.test", "--selector", "s1"]);
    assert!(!again.status.success());
    assert_eq!(std::fs::read(data.join("dkim/example.test/s1.key")).unwrap(), before);
    // list: domain, selector, algorithm, record.
    let out = mailroom(&data, &["dkim", "list"]);
    let list = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(list.contains(&format!("example.test\ts1\ted25519\t{ed}")), "{list}");
    assert!(list.contains(&format!("example.test\ts2\trsa\t{rsa}")), "{list}");
    assert_eq!(list.lines().count(), 3, "{list}");
}

#[test]
fn submitted_mail_is_signed_and_verifies_with_dkimpy_over_dns() {
    if !have_all() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (data, mut records) = data_dir_with_keys(dir.path());
    records.extend(dead_mx());
    let dns = Dns::start(&records);
    let server = server(data, &dns);

    // Authenticated submission to a local user: the stored copy carries both signatures, which verify.
    submit(&server, "bob@example.test", "local one");
    let file = stored(&server, "bob@example.test", "local one");
    let (ok, said) = dkimpy_verify_file(&file, &dns);
    assert!(ok, "dkimpy: {said}\n{}", text(&file));
    assert!(
        said.contains("example.test ed25519-sha256 True") && said.contains("example.test rsa-sha256 True"),
        "{said}"
    );
    // Below mailroom's trace headers, above the message's own.
    let t = text(&file);
    let (received, signature, from) =
        (t.find("\nReceived:").unwrap(), t.find("DKIM-Signature:").unwrap(), t.find("\nFrom:").unwrap());
    assert!(received < signature && signature < from, "{t}");

    // Authenticated submission to a remote domain: the queued copy verifies (what the relay sends).
    submit(&server, "carol@dead.test", "remote one");
    let queued = poll(WAIT, Duration::from_millis(50), || {
        common::files_in(&server.data.join("queue/msg")).into_iter().find(|f| text(f).contains("Subject: remote one"))
    })
    .unwrap_or_else(|| panic!("not queued:\n{}", server.log_text()));
    let (ok, said) = dkimpy_verify_file(&queued, &dns);
    assert!(ok, "dkimpy on the queued copy: {said}\n{}", text(&queued));

    // A relay_networks client without AUTH is signed too.
    deliver_from(&server, [127, 0, 0, 1], "alice@example.test", "bob@example.test", "relay net");
    let (ok, said) = dkimpy_verify_file(&stored(&server, "bob@example.test", "relay net"), &dns);
    assert!(ok, "dkimpy: {said}");

    // Inbound mail (a client outside relay_networks) and a From domain without a key: not signed.
    deliver_from(&server, [127, 0, 0, 2], "alice@example.test", "bob@example.test", "inbound");
    assert!(!text(&stored(&server, "bob@example.test", "inbound")).contains("DKIM-Signature:"));
    deliver_from(&server, [127, 0, 0, 1], "someone@nokey.test", "bob@example.test", "no key");
    assert!(!text(&stored(&server, "bob@example.test", "no key")).contains("DKIM-Signature:"));
}

#[test]
fn dsns_are_signed_with_the_host_name_domain_key() {
    if !have_all() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (data, records) = data_dir_with_keys(dir.path());
    let dns = Dns::start(&records);
    let server = server(data, &dns);
    // nx.test does not exist: the relay bounces at once, and alice gets the report in her Maildir.
    submit(&server, "nobody@nx.test", "will bounce");
    let dsn = poll(WAIT, Duration::from_millis(100), || {
        server.new_files("alice@example.test").into_iter().find(|f| text(f).contains("multipart/report"))
    })
    .unwrap_or_else(|| panic!("no DSN:\n{}", server.log_text()));
    let t = text(&dsn);
    assert!(t.contains("d=e2e.test;"), "{t}");
    let (ok, said) = dkimpy_verify_file(&dsn, &dns);
    assert!(ok, "dkimpy on the DSN: {said}\n{t}");
}

#[test]
fn keys_made_while_running_sign_after_sighup() {
    if !have_all() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    user_add_password(&data, "alice@example.test", PASSWORD);
    user_add(&data, "bob@example.test");
    // The server starts without keys (its DNS serves nothing yet).
    let placeholder = Dns::start(&[]);
    let server = server(data.clone(), &placeholder);
    submit(&server, "bob@example.test", "before");
    assert!(!text(&stored(&server, "bob@example.test", "before")).contains("DKIM-Signature:"));
    let record = keygen(&data, "example.test", "later", "ed25519");
    let dns = Dns::start(&[record]);
    let kill = Command::new("kill").arg("-HUP").arg(server.pid().to_string()).status().unwrap();
    assert!(kill.success());
    poll(WAIT, Duration::from_millis(50), || server.log_text().contains("DKIM signing keys loaded").then_some(()))
        .unwrap_or_else(|| panic!("no reload:\n{}", server.log_text()));
    submit(&server, "bob@example.test", "after");
    let (ok, said) = dkimpy_verify_file(&stored(&server, "bob@example.test", "after"), &dns);
    assert!(ok, "dkimpy: {said}");
}

/// Verifies MESSAGE with mailroom's streaming verifier, keys from DNS at DNS, fed in 7-octet pieces.
fn our_verdict(message: &[u8], dns: &Dns) -> Vec<mailroom_auth::dkim::DkimResult> {
    use mailroom_auth::mail_auth::hickory_resolver::config::{
        ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts,
    };
    let mut config = ResolverConfig::default();
    let (mut udp, mut tcp) = (ConnectionConfig::udp(), ConnectionConfig::tcp());
    udp.port = dns.port;
    tcp.port = dns.port;
    config.add_name_server(NameServerConfig::new(dns.server().ip(), true, vec![udp, tcp]));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let auth = mailroom_auth::mail_auth::MessageAuthenticator::new(config, ResolverOpts::default()).unwrap();
        let mut v = mailroom_auth::dkim::DkimVerifier::new();
        for piece in message.chunks(7) {
            v.handle_chunk(piece);
        }
        v.finish(&auth).await
    })
}

/// dkimpy signs MESSAGE with the key file (RSA PEM, or an ed25519 seed in base64).
fn dkimpy_sign(message: &[u8], selector: &str, key: &Path, algorithm: &str) -> Vec<u8> {
    let script = "import sys, dkim\n\
        msg = sys.stdin.buffer.read()\n\
        sig = dkim.sign(msg, sys.argv[1].encode(), b'example.test', open(sys.argv[2], 'rb').read(),\n\
        \x20   canonicalize=(b'relaxed', b'relaxed'), signature_algorithm=sys.argv[3].encode())\n\
        sys.stdout.buffer.write(sig + msg)";
    run_with_stdin(Command::new(PYTHON).arg("-c").arg(script).arg(selector).arg(key).arg(algorithm), message)
}

fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// The 32-octet seed of a PKCS#8 ed25519 key file as dkimpy takes it (base64).
fn ed25519_seed(pem_file: &Path) -> Vec<u8> {
    let pem = std::fs::read_to_string(pem_file).unwrap();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = mailroom_proto::base64::decode(&b64).unwrap();
    // RFC 8410 §7: ... OCTET STRING { OCTET STRING (32) seed } at offset 16.
    mailroom_proto::base64::encode(&der[16..48]).into_bytes()
}

#[test]
fn dkimpy_signatures_pass_our_verifier_over_dns_and_opendkim_sha1_fails() {
    if !have_all() || !have("test", &["-x", "/usr/sbin/opendkim-testmsg"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (data, records) = data_dir_with_keys(dir.path());
    let dns = Dns::start(&records);
    let msg = message("alice@example.test", "bob@example.net", "interop");
    let rsa_key = data.join("dkim/example.test/rsa.key");
    let seed = dir.path().join("ed.seed");
    std::fs::write(&seed, ed25519_seed(&data.join("dkim/example.test/ed.key"))).unwrap();
    let signed = [
        ("dkimpy rsa", dkimpy_sign(&msg, "rsa", &rsa_key, "rsa-sha256")),
        ("dkimpy ed25519", dkimpy_sign(&msg, "ed", &seed, "ed25519-sha256")),
    ];
    for (who, message) in &signed {
        let results = our_verdict(message, &dns);
        assert_eq!(results.len(), 1, "{who}: {results:?}");
        assert_eq!(results[0].status.as_str(), "pass", "{who}: {results:?}\n{}", String::from_utf8_lossy(message));
        // One octet of the body changed: fail (not neutral).
        let mut changed = message.clone();
        let at = changed.windows(6).position(|w| w == b"signed").unwrap();
        changed[at] = b'S';
        let results = our_verdict(&changed, &dns);
        assert_eq!(results[0].status.as_str(), "fail", "{who}: {results:?}");
    }
    // opendkim-testmsg signs with rsa-sha1 (it has no option for sha256): refused (RFC 8301 §3.1).
    let opendkim = run_with_stdin(
        Command::new("/usr/sbin/opendkim-testmsg").args(["-C", "-d", "example.test", "-s", "rsa", "-k"]).arg(&rsa_key),
        &msg,
    );
    assert!(String::from_utf8_lossy(&opendkim).contains("a=rsa-sha1;"));
    let results = our_verdict(&opendkim, &dns);
    assert_eq!(results[0].status.as_str(), "fail", "{results:?}");
    assert!(results[0].reason.as_deref().unwrap_or("").contains("rsa-sha1"), "{results:?}");
}
