//! STARTTLS, implicit TLS and AUTH over real sockets on 127.0.0.1, against scripted servers that speak TLS
//! with a throw-away rcgen certificate: who is trusted (CA file, system roots, insecure), that STARTTLS never
//! falls back to plain text, that bytes injected behind the 220 are refused, and what AUTH sends.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailroom_client::{Client, Direction, Envelope, Error, Mechanism, Message, Tls};
use mailroom_proto::{base64, Address, ForwardPath, ReversePath};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

const LIFETIME: Duration = Duration::from_secs(20);
const TIMEOUT: Duration = Duration::from_secs(5);

/// A self-signed certificate for localhost and 127.0.0.1, its PEM file, and an acceptor that serves it.
struct Cert {
    acceptor: TlsAcceptor,
    pem: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn cert() -> Cert {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("cert.pem");
    std::fs::write(&pem, c.cert.pem()).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.signing_key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(c.cert.der().to_vec())], key)
        .unwrap();
    Cert { acceptor: TlsAcceptor::from(Arc::new(config)), pem, _dir: dir }
}

/// The server's side of a connection, plain or TLS. Every line read is kept in `seen`.
struct Peer<S> {
    s: BufReader<S>,
    seen: Vec<String>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Peer<S> {
    async fn send(&mut self, b: &[u8]) {
        let _ = self.s.get_mut().write_all(b).await;
        let _ = self.s.get_mut().flush().await;
    }
    async fn line(&mut self) -> String {
        let mut buf = Vec::new();
        let _ = self.s.read_until(b'\n', &mut buf).await;
        let l = String::from_utf8_lossy(&buf).into_owned();
        if !l.is_empty() {
            self.seen.push(l.trim_end().to_string());
        }
        l
    }
    async fn expect(&mut self, prefix: &str) -> String {
        let l = self.line().await;
        assert!(l.to_ascii_uppercase().starts_with(&prefix.to_ascii_uppercase()), "wanted {prefix:?}, got {l:?}");
        l
    }
    /// Reads until the client closes, keeping the lines.
    async fn drain(&mut self) {
        while !self.line().await.is_empty() {}
    }
    /// A whole transaction after EHLO: MAIL, RCPT, DATA, the message, QUIT.
    async fn take_mail(&mut self) -> String {
        self.expect("MAIL FROM:").await;
        self.send(b"250 2.1.0 ok\r\n").await;
        self.expect("RCPT TO:").await;
        self.send(b"250 2.1.5 ok\r\n").await;
        self.expect("DATA").await;
        self.send(b"354 go\r\n").await;
        let mut msg = String::new();
        loop {
            let l = self.line().await;
            if l.is_empty() || l == ".\r\n" {
                break;
            }
            msg.push_str(&l);
        }
        self.send(b"250 2.0.0 queued\r\n").await;
        self.expect("QUIT").await;
        self.send(b"221 bye\r\n").await;
        msg
    }
}

async fn listen() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    (l, addr)
}

async fn accept(l: TcpListener) -> Peer<TcpStream> {
    let (sock, _) = tokio::time::timeout(LIFETIME, l.accept()).await.unwrap().unwrap();
    Peer { s: BufReader::new(sock), seen: vec![] }
}

/// Runs a server script with a lifetime; its result is everything it saw (or a panic message).
fn spawn<F, T>(f: F) -> JoinHandle<Option<T>>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    tokio::spawn(async move { tokio::time::timeout(LIFETIME, f).await.ok() })
}

/// STARTTLS from the plain side, then the handshake; returns the TLS peer and the plain-text lines seen.
async fn plain_then_tls(
    l: TcpListener,
    acceptor: TlsAcceptor,
) -> Option<(Peer<tokio_rustls::server::TlsStream<TcpStream>>, Vec<String>)> {
    let mut p = accept(l).await;
    p.send(b"220 mx.test ESMTP\r\n").await;
    p.expect("EHLO ").await;
    p.send(b"250-mx.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n").await;
    p.expect("STARTTLS").await;
    p.send(b"220 2.0.0 ready\r\n").await;
    let seen = p.seen.clone();
    let tls = acceptor.accept(p.s.into_inner()).await.ok()?;
    Some((Peer { s: BufReader::new(tls), seen: vec![] }, seen))
}

fn envelope() -> Envelope {
    Envelope::new(
        ReversePath::Mailbox(Address::parse("alice@example.test").unwrap()),
        vec![ForwardPath::Mailbox(Address::parse("bob@example.test").unwrap())],
    )
}

fn collecting() -> (mailroom_client::Transcript, Arc<Mutex<Vec<String>>>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l2 = lines.clone();
    let t: mailroom_client::Transcript =
        Arc::new(move |d: Direction, s: &str| l2.lock().unwrap().push(format!("{d} {s}")));
    (t, lines)
}

#[tokio::test]
async fn starttls_with_cafile_then_auth_plain_then_mail() {
    let c = cert();
    let (l, addr) = listen().await;
    let acceptor = c.acceptor.clone();
    let server = spawn(async move {
        let (mut p, plain) = plain_then_tls(l, acceptor).await.expect("handshake");
        // New EHLO over TLS; AUTH offered only here.
        p.expect("EHLO ").await;
        p.send(b"250-mx.test\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n").await;
        let auth = p.expect("AUTH PLAIN ").await;
        p.send(b"235 2.7.0 ok\r\n").await;
        let msg = p.take_mail().await;
        (plain, auth, msg)
    });
    let (t, lines) = collecting();
    let mut client = Client::builder(addr)
        .timeout(TIMEOUT)
        .tls(Tls::StartTls)
        .cafile(&c.pem)
        .credentials("alice@example.test", "s3cret pass")
        .transcript(t)
        .connect()
        .await
        .unwrap();
    assert!(client.is_tls());
    assert_eq!(client.authenticated(), Some(Mechanism::Plain));
    assert!(client.capabilities().has_auth("PLAIN"), "capabilities are the ones said over TLS");
    let out = client.send(&envelope(), Message::from_bytes(b"Subject: x\r\n\r\nhi\r\n")).await.unwrap();
    assert!(out.is_complete());
    client.quit().await.unwrap();
    let (plain, auth, msg) = server.await.unwrap().unwrap();
    // Nothing but EHLO and STARTTLS went in the clear.
    assert_eq!(plain.len(), 2, "{plain:?}");
    let blob = auth.trim_end().strip_prefix("AUTH PLAIN ").unwrap();
    assert_eq!(base64::decode(blob).unwrap(), b"\0alice@example.test\0s3cret pass");
    assert!(msg.contains("Subject: x"));
    let lines = lines.lock().unwrap().join("\n");
    assert!(lines.contains("C: AUTH PLAIN ********"), "{lines}");
    assert!(lines.contains("(TLS established: TLSv1_3"), "{lines}");
    assert!(!lines.contains(blob) && !lines.contains("s3cret"), "{lines}");
}

#[tokio::test]
async fn implicit_tls_with_auth_login() {
    let c = cert();
    let (l, addr) = listen().await;
    let acceptor = c.acceptor.clone();
    let server = spawn(async move {
        let (sock, _) = l.accept().await.unwrap();
        let tls = acceptor.accept(sock).await.ok()?;
        let mut p = Peer { s: BufReader::new(tls), seen: vec![] };
        p.send(b"220 mx.test ESMTP\r\n").await;
        p.expect("EHLO ").await;
        p.send(b"250-mx.test\r\n250 AUTH LOGIN\r\n").await;
        p.expect("AUTH LOGIN").await;
        p.send(b"334 VXNlcm5hbWU6\r\n").await;
        let user = p.line().await;
        p.send(b"334 UGFzc3dvcmQ6\r\n").await;
        let pass = p.line().await;
        p.send(b"235 2.7.0 ok\r\n").await;
        p.take_mail().await;
        Some((user, pass))
    });
    let (t, lines) = collecting();
    let mut client = Client::builder(addr)
        .timeout(TIMEOUT)
        .tls(Tls::Implicit)
        .cafile(&c.pem)
        .credentials("alice@example.test", "pw")
        .transcript(t)
        .connect()
        .await
        .unwrap();
    assert_eq!(client.authenticated(), Some(Mechanism::Login));
    let shown = lines.lock().unwrap().join("\n");
    assert!(
        shown.contains("C: AUTH LOGIN\nS: 334 VXNlcm5hbWU6\nC: ********\nS: 334 UGFzc3dvcmQ6\nC: ********"),
        "{shown}"
    );
    assert!(!shown.contains(&base64::encode(b"pw")), "{shown}");
    client.send(&envelope(), Message::from_bytes(b"Subject: x\r\n\r\nhi\r\n")).await.unwrap();
    client.quit().await.unwrap();
    let (user, pass) = server.await.unwrap().unwrap().unwrap();
    assert_eq!(base64::decode(user.trim_end()).unwrap(), b"alice@example.test");
    assert_eq!(base64::decode(pass.trim_end()).unwrap(), b"pw");
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused_and_insecure_takes_it() {
    let c = cert();
    // System roots (the default) do not know the self-signed certificate.
    let (l, addr) = listen().await;
    let acceptor = c.acceptor.clone();
    let server = spawn(async move {
        let (sock, _) = l.accept().await.unwrap();
        // The client aborts the handshake.
        acceptor.accept(sock).await.is_err()
    });
    let e = Client::builder(addr).timeout(TIMEOUT).tls(Tls::Implicit).connect().await.unwrap_err();
    if let Error::TlsConfig(why) = &e {
        // A machine without a CA store refuses before the handshake; that is a refusal too.
        eprintln!("no system CA store here: {why}");
    } else {
        assert!(matches!(e, Error::Certificate { .. }), "{e:?}");
        assert!(server.await.unwrap().unwrap());
    }
    assert!(e.is_permanent(), "retrying meets the same certificate");

    // A CA file that holds another certificate is no better.
    let other = cert();
    let (l, addr) = listen().await;
    let acceptor = c.acceptor.clone();
    spawn(async move {
        let (sock, _) = l.accept().await.unwrap();
        let _ = acceptor.accept(sock).await;
    });
    let e = Client::builder(addr).timeout(TIMEOUT).tls(Tls::Implicit).cafile(&other.pem).connect().await.unwrap_err();
    assert!(matches!(e, Error::Certificate { .. }), "{e:?}");

    // --insecure: the same self-signed certificate is taken.
    let (l, addr) = listen().await;
    let acceptor = c.acceptor.clone();
    let server = spawn(async move {
        let (sock, _) = l.accept().await.unwrap();
        let tls = acceptor.accept(sock).await.ok()?;
        let mut p = Peer { s: BufReader::new(tls), seen: vec![] };
        p.send(b"220 mx.test ESMTP\r\n").await;
        p.expect("EHLO ").await;
        p.send(b"250 mx.test\r\n").await;
        p.expect("QUIT").await;
        p.send(b"221 bye\r\n").await;
        Some(())
    });
    let client = Client::builder(addr).timeout(TIMEOUT).tls(Tls::Implicit).insecure(true).connect().await.unwrap();
    assert!(client.is_tls());
    client.quit().await.unwrap();
    server.await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused() {
    // A certificate for mx.other.test only, served on 127.0.0.1: the CA file trusts it, the name does not
    // match the IP address asked for.
    let cc = rcgen::generate_simple_self_signed(vec!["mx.other.test".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("other.pem");
    std::fs::write(&pem, cc.cert.pem()).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cc.signing_key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(cc.cert.der().to_vec())], key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let (l, addr) = listen().await;
    spawn(async move {
        let (sock, _) = l.accept().await.unwrap();
        let _ = acceptor.accept(sock).await;
    });
    let e = Client::builder(addr).timeout(TIMEOUT).tls(Tls::Implicit).cafile(&pem).connect().await.unwrap_err();
    assert!(
        matches!(&e, Error::Certificate { reason, .. } if reason.contains("127.0.0.1") || reason.to_lowercase().contains("name")),
        "{e:?}"
    );
}

#[tokio::test]
async fn starttls_not_offered_fails_and_sends_nothing_else_in_the_clear() {
    let (l, addr) = listen().await;
    let server = spawn(async move {
        let mut p = accept(l).await;
        p.send(b"220 mx.test ESMTP\r\n").await;
        p.expect("EHLO ").await;
        p.send(b"250-mx.test\r\n250-AUTH PLAIN LOGIN\r\n250 PIPELINING\r\n").await;
        // Answer whatever comes until the client hangs up.
        loop {
            let l = p.line().await;
            if l.is_empty() {
                break;
            }
            if l.starts_with("QUIT") {
                p.send(b"221 bye\r\n").await;
            } else {
                p.send(b"250 ok\r\n").await;
            }
        }
        p.seen
    });
    let e = Client::builder(addr)
        .timeout(TIMEOUT)
        .tls(Tls::StartTls)
        .insecure(true)
        .credentials("alice@example.test", "pw")
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::StartTlsNotOffered(_)), "{e:?}");
    assert!(e.is_permanent());
    let seen = server.await.unwrap().unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[0].starts_with("EHLO ") && seen[1] == "QUIT", "{seen:?}");
}

#[tokio::test]
async fn starttls_refused_is_an_error_not_a_fallback() {
    let (l, addr) = listen().await;
    let server = spawn(async move {
        let mut p = accept(l).await;
        p.send(b"220 mx.test ESMTP\r\n").await;
        p.expect("EHLO ").await;
        p.send(b"250-mx.test\r\n250 STARTTLS\r\n").await;
        p.expect("STARTTLS").await;
        p.send(b"454 4.7.0 TLS not available\r\n").await;
        p.drain().await;
        p.seen
    });
    let e = Client::builder(addr).timeout(TIMEOUT).tls(Tls::StartTls).insecure(true).connect().await.unwrap_err();
    assert!(e.reply().is_some_and(|r| r.code == 454), "{e:?}");
    assert!(e.is_transient());
    let seen = server.await.unwrap().unwrap();
    assert!(!seen.iter().any(|l| l.starts_with("MAIL") || l.starts_with("AUTH")), "{seen:?}");
}

/// The mirror of the server's injection test: the 220 to STARTTLS and a forged reply in one write. The
/// client refuses at once; `250 injected` is never taken as the answer to anything.
#[tokio::test]
async fn bytes_behind_the_starttls_220_are_refused() {
    let (l, addr) = listen().await;
    let server = spawn(async move {
        let mut p = accept(l).await;
        p.send(b"220 mx.test ESMTP\r\n").await;
        p.expect("EHLO ").await;
        p.send(b"250-mx.test\r\n250 STARTTLS\r\n").await;
        p.expect("STARTTLS").await;
        p.send(b"220 ready\r\n250 injected\r\n").await;
        p.drain().await;
        p.seen
    });
    let (t, lines) = collecting();
    let e = Client::builder(addr)
        .timeout(TIMEOUT)
        .tls(Tls::StartTls)
        .insecure(true)
        .transcript(t)
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(&e, Error::Protocol(mailroom_proto::client::Error::Unexpected { .. })), "{e:?}");
    let seen = server.await.unwrap().unwrap();
    // No TLS handshake was started and nothing else was sent: the connection was dropped.
    assert_eq!(seen.len(), 2, "{seen:?}");
    let lines = lines.lock().unwrap().join("\n");
    assert!(!lines.contains("injected"), "the forged reply is never shown as one: {lines}");
}

/// The same forged reply arriving just after the 220, in a later packet: it lands in the TLS handshake,
/// which fails; it is not read as SMTP either.
#[tokio::test]
async fn plaintext_after_the_220_breaks_the_handshake() {
    let (l, addr) = listen().await;
    spawn(async move {
        let mut p = accept(l).await;
        p.send(b"220 mx.test ESMTP\r\n").await;
        p.expect("EHLO ").await;
        p.send(b"250-mx.test\r\n250 STARTTLS\r\n").await;
        p.expect("STARTTLS").await;
        p.send(b"220 ready\r\n").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        p.send(b"250 injected\r\n").await;
        // Keep the connection open: the client must fail on the bytes, not on a close.
        let mut sink = [0u8; 512];
        let _ = tokio::time::timeout(Duration::from_secs(3), p.s.read(&mut sink)).await;
    });
    let e = Client::builder(addr).timeout(TIMEOUT).tls(Tls::StartTls).insecure(true).connect().await.unwrap_err();
    assert!(matches!(e, Error::Tls { .. }), "{e:?}");
}

#[tokio::test]
async fn a_wrong_password_gives_the_535_and_quits() {
    let c = cert();
    let (l, addr) = listen().await;
    let acceptor = c.acceptor.clone();
    let server = spawn(async move {
        let (mut p, _) = plain_then_tls(l, acceptor).await?;
        p.expect("EHLO ").await;
        p.send(b"250-mx.test\r\n250 AUTH PLAIN\r\n").await;
        p.expect("AUTH PLAIN ").await;
        p.send(b"535 5.7.8 Authentication credentials invalid\r\n").await;
        p.expect("QUIT").await;
        p.send(b"221 bye\r\n").await;
        Some(())
    });
    let e = Client::builder(addr)
        .timeout(TIMEOUT)
        .tls(Tls::StartTls)
        .cafile(&c.pem)
        .credentials("alice@example.test", "wrong")
        .connect()
        .await
        .unwrap_err();
    assert_eq!(e.reply().map(|r| r.code), Some(535), "{e:?}");
    assert!(e.is_permanent());
    assert!(e.to_string().contains("535 5.7.8"), "{e}");
    server.await.unwrap().unwrap().unwrap();
}

/// Issue 10, finding 4 ("the client sends passwords in plaintext"): a server that answers anything,
/// 334 to every AUTH and 235 to every response, keeping each line it gets in `seen`. `caps` is its EHLO
/// reply after the greeting (and, with `acceptor`, after STARTTLS over TLS).
fn greedy_server(
    l: TcpListener,
    caps: &'static [u8],
    acceptor: Option<TlsAcceptor>,
) -> (Arc<Mutex<Vec<String>>>, JoinHandle<Option<()>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let keep = seen.clone();
    let task = spawn(async move {
        match acceptor {
            None => {
                let mut p = accept(l).await;
                p.send(b"220 mx.test ESMTP\r\n").await;
                p.expect("EHLO ").await;
                p.send(caps).await;
                answer_everything(&mut p, &keep).await;
            }
            Some(acceptor) => {
                let (mut p, plain) = plain_then_tls(l, acceptor).await.expect("handshake");
                keep.lock().unwrap().extend(plain);
                p.expect("EHLO ").await;
                p.send(caps).await;
                answer_everything(&mut p, &keep).await;
            }
        }
    });
    (seen, task)
}

async fn answer_everything<S: AsyncRead + AsyncWrite + Unpin>(p: &mut Peer<S>, seen: &Mutex<Vec<String>>) {
    loop {
        let l = p.line().await;
        if l.is_empty() {
            return;
        }
        seen.lock().unwrap().push(l.trim_end().to_string());
        let up = l.to_ascii_uppercase();
        let reply: &[u8] = if up.starts_with("AUTH") && l.split_whitespace().count() == 2 {
            b"334 \r\n"
        } else if up.starts_with("QUIT") {
            b"221 bye\r\n"
        } else if up.starts_with("DATA") {
            b"354 go\r\n"
        } else if up.starts_with("MAIL") || up.starts_with("RCPT") || up.starts_with("EHLO") || l == ".\r\n" {
            b"250 ok\r\n"
        } else {
            // A SASL response, or message data.
            b"235 2.7.0 ok\r\n"
        };
        if !up.starts_with("SUBJECT") {
            p.send(reply).await;
        }
    }
}

/// True when a line the server saw is an AUTH command or carries the password (base64 of PLAIN or LOGIN).
fn leaked(seen: &[String], user: &str, password: &str) -> bool {
    let plain = base64::encode(format!("\0{user}\0{password}").as_bytes());
    let login = base64::encode(password.as_bytes());
    seen.iter().any(|l| l.to_ascii_uppercase().starts_with("AUTH") || l.contains(&plain) || l.contains(&login))
}

#[tokio::test]
async fn passwords_in_plaintext_are_not_sent_without_tls() {
    let (l, addr) = listen().await;
    let (seen, server) = greedy_server(l, b"250-mx.test\r\n250 AUTH PLAIN LOGIN\r\n", None);
    let result = Client::builder(addr).timeout(TIMEOUT).credentials("alice@example.test", "pw").connect().await;
    server.abort();
    let seen = seen.lock().unwrap().clone();
    assert!(!leaked(&seen, "alice@example.test", "pw"), "AUTH went out in plain text: {seen:?}");
    let e = result.expect_err("credentials without TLS");
    assert!(matches!(e, Error::PlaintextAuth { .. }) && e.is_local(), "{e:?}");
    assert!(e.to_string().contains("without TLS"), "{e}");
}

#[tokio::test]
async fn passwords_in_plaintext_no_auth_to_a_server_that_did_not_advertise_it() {
    let c = cert();
    let (l, addr) = listen().await;
    // TLS is up, but the EHLO over it offers no AUTH: the server would still say 334 to anything.
    let (seen, server) = greedy_server(l, b"250-mx.test\r\n250 8BITMIME\r\n", Some(c.acceptor.clone()));
    let result = Client::builder(addr)
        .timeout(TIMEOUT)
        .tls(Tls::StartTls)
        .cafile(&c.pem)
        .credentials("alice@example.test", "pw")
        .connect()
        .await;
    let _ = tokio::time::timeout(TIMEOUT, server).await;
    let seen = seen.lock().unwrap().clone();
    assert!(!leaked(&seen, "alice@example.test", "pw"), "AUTH sent to a server that did not offer it: {seen:?}");
    let e = result.expect_err("AUTH not offered");
    assert!(matches!(e, Error::AuthNotOffered(_)) && e.is_permanent(), "{e:?}");
}

#[tokio::test]
async fn passwords_in_plaintext_only_when_allowed_for_a_loopback_server() {
    let (l, addr) = listen().await;
    let (seen, server) = greedy_server(l, b"250-mx.test\r\n250 AUTH LOGIN\r\n", None);
    let client = Client::builder(addr)
        .timeout(TIMEOUT)
        .allow_plaintext_auth(true)
        .credentials("alice@example.test", "pw")
        .connect()
        .await
        .unwrap();
    assert_eq!(client.authenticated(), Some(Mechanism::Login));
    client.quit().await.unwrap();
    let _ = tokio::time::timeout(TIMEOUT, server).await;
    assert!(seen.lock().unwrap().iter().any(|l| l == "AUTH LOGIN"), "{:?}", seen.lock().unwrap());
}

#[tokio::test]
async fn password_command_is_asked_only_when_the_server_offers_auth() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    for (caps, offered) in [(&b"250 mx.test\r\n"[..], false), (&b"250-mx.test\r\n250 AUTH PLAIN\r\n"[..], true)] {
        let (l, addr) = listen().await;
        let (_seen, server) = greedy_server(l, caps, None);
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let source: mailroom_client::PasswordSource = Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok("pw".to_string())
        });
        let result = Client::builder(addr)
            .timeout(TIMEOUT)
            .allow_plaintext_auth(true)
            .credentials_with("alice@example.test", source)
            .connect()
            .await;
        let _ = tokio::time::timeout(TIMEOUT, server).await;
        assert_eq!(calls.load(Ordering::SeqCst), usize::from(offered), "offered: {offered}");
        assert_eq!(result.is_ok(), offered, "{:?}", result.err());
    }
}

#[tokio::test]
async fn bad_cafile_fails_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let (l, addr) = listen().await;
    let e = Client::builder(addr)
        .timeout(TIMEOUT)
        .tls(Tls::StartTls)
        .cafile(dir.path().join("missing.pem"))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::TlsConfig(_)), "{e:?}");
    // Nobody connected.
    assert!(tokio::time::timeout(Duration::from_millis(200), l.accept()).await.is_err());
}

/// RFC 7435: opportunistic STARTTLS takes a certificate nobody can verify (self-signed, no CA file given).
#[tokio::test]
async fn opportunistic_starttls_accepts_an_unverifiable_certificate() {
    let c = cert();
    let (l, addr) = listen().await;
    let acceptor = c.acceptor.clone();
    let server = spawn(async move {
        let (mut p, _plain) = plain_then_tls(l, acceptor).await.expect("handshake");
        p.expect("EHLO ").await;
        p.send(b"250-mx.test\r\n250 8BITMIME\r\n").await;
        p.take_mail().await
    });
    let mut client = Client::builder(addr).timeout(TIMEOUT).tls(Tls::Opportunistic).connect().await.unwrap();
    assert!(client.is_tls());
    let out = client.send(&envelope(), Message::from_bytes(b"Subject: o\n\nhi\n")).await.unwrap();
    assert!(out.is_complete());
    client.quit().await.unwrap();
    assert!(server.await.unwrap().unwrap().contains("Subject: o\r\n"));
}

/// Opportunistic mode goes on in plain text with a server that does not offer STARTTLS.
#[tokio::test]
async fn opportunistic_without_starttls_offered_stays_plain() {
    let (l, addr) = listen().await;
    let server = spawn(async move {
        let mut p = accept(l).await;
        p.send(b"220 mx.test ESMTP\r\n").await;
        p.expect("EHLO ").await;
        p.send(b"250-mx.test\r\n250 PIPELINING\r\n").await;
        p.take_mail().await
    });
    let mut client = Client::builder(addr).timeout(TIMEOUT).tls(Tls::Opportunistic).connect().await.unwrap();
    assert!(!client.is_tls());
    assert!(client.send(&envelope(), Message::from_bytes(b"Subject: p\n\nhi\n")).await.unwrap().is_complete());
    client.quit().await.unwrap();
    assert!(server.await.unwrap().unwrap().contains("Subject: p"));
}

/// A broken handshake after an offered STARTTLS is reported as such, so the caller can retry in plain text.
#[tokio::test]
async fn opportunistic_handshake_failure_is_reported() {
    let (l, addr) = listen().await;
    let server = spawn(async move {
        let mut p = accept(l).await;
        p.send(b"220 mx.test ESMTP\r\n").await;
        p.expect("EHLO ").await;
        p.send(b"250-mx.test\r\n250 STARTTLS\r\n").await;
        p.expect("STARTTLS").await;
        p.send(b"220 2.0.0 ready\r\n").await;
        // Not TLS at all: garbage where the ServerHello should be.
        p.send(b"this is not a TLS record\r\n").await;
        p.drain().await;
    });
    let e = Client::builder(addr).timeout(TIMEOUT).tls(Tls::Opportunistic).connect().await.unwrap_err();
    assert!(e.is_opportunistic_tls_failure(), "{e:?}");
    assert!(e.is_transient(), "{e:?}");
    server.await.unwrap();
}

/// `address` connects where it is told, without resolving the server's name (which need not resolve), and
/// that name is still the one the certificate is checked against.
#[tokio::test]
async fn address_overrides_the_lookup_but_not_the_tls_name() {
    let c = cert();
    let (l, addr) = listen().await;
    let acceptor = c.acceptor.clone();
    let server = spawn(async move {
        let (mut p, _plain) = plain_then_tls(l, acceptor).await.expect("handshake");
        p.expect("EHLO ").await;
        p.send(b"250 mx.test\r\n").await;
        p.expect("QUIT").await;
        p.send(b"221 bye\r\n").await;
    });
    let client = Client::builder("localhost:1")
        .address(addr.parse().unwrap())
        .timeout(TIMEOUT)
        .tls(Tls::StartTls)
        .cafile(&c.pem)
        .connect()
        .await
        .unwrap();
    assert!(client.is_tls());
    client.quit().await.unwrap();
    server.await.unwrap().unwrap();
    // The same address under a name the certificate does not hold: refused.
    let (l, addr) = listen().await;
    let acceptor = c.acceptor.clone();
    let server = spawn(async move { plain_then_tls(l, acceptor).await.map(|_| ()) });
    let e = Client::builder("wrong.invalid:1")
        .address(addr.parse().unwrap())
        .timeout(TIMEOUT)
        .tls(Tls::StartTls)
        .cafile(&c.pem)
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Certificate { .. }), "{e:?}");
    let _ = server.await;
}
