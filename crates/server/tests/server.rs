//! The server in-process: `Server::bind` on 127.0.0.1:0 and `Server::run` on the test's runtime, with a
//! tokio TcpStream client. Every wait is bounded by [`WAIT`].

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mailroom_server::{Config, Server};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The longest any single step may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);

const ALICE: &str = "alice@example.test";

/// A config for a temporary data directory: one smtp listener on a free port, domain example.test.
fn config(data: &Path) -> Config {
    let mut c = Config::default();
    c.server.hostname = "mx.test".into();
    c.server.data_dir = data.to_owned();
    c.server.listen = vec!["127.0.0.1:0".parse().unwrap()];
    c.server.domains = vec!["example.test".into()];
    c
}

/// A running server: its smtp address, the way to stop it and its task.
struct Running {
    addr: SocketAddr,
    data: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    /// Stops the server and waits (bounded) for `run` to return.
    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(WAIT, self.task).await.expect("run returns after shutdown").unwrap();
    }

    /// The messages in ADDR's new/, once there are any (bounded wait; a 250 means durable in the
    /// store's journal and already named in new/, so the wait is a safety margin).
    fn new_messages(&self, addr: &str) -> Vec<Vec<u8>> {
        let (local, domain) = addr.split_once('@').unwrap();
        let dir = self.data.path().join("mailboxes").join(domain).join(local).join("new");
        let read = || -> Vec<Vec<u8>> {
            std::fs::read_dir(&dir).into_iter().flatten().flatten().map(|e| std::fs::read(e.path()).unwrap()).collect()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let got = read();
            if !got.is_empty() || std::time::Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

/// Binds and runs a server with user alice; `tune` adjusts the config first.
async fn start(tune: impl FnOnce(&mut Config)) -> Running {
    let data = tempfile::tempdir().unwrap();
    mailroom_store::users::UserDirectory::new(data.path()).add(ALICE, None).unwrap();
    let mut cfg = config(data.path());
    tune(&mut cfg);
    let server = Server::bind(cfg).await.expect("bind");
    let addr = server.local_addrs()[0];
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    Running { addr, data, stop: Some(stop), task }
}

/// A line-oriented SMTP client over any stream.
struct Client<S> {
    io: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Reads one reply (all its lines); returns the code and the last line.
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

    async fn send(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.unwrap();
    }

    /// Sends LINE and asserts the reply code; returns the reply's last line.
    async fn cmd(&mut self, line: &str, code: u16) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        let (got, text) = self.reply().await;
        assert_eq!(got, code, "{line} -> {text}");
        text
    }

    /// True once the server closed the connection (EOF within WAIT).
    async fn is_closed(&mut self) -> bool {
        let mut line = String::new();
        matches!(tokio::time::timeout(WAIT, self.io.read_line(&mut line)).await, Ok(Ok(0)) | Ok(Err(_)))
    }
}

async fn connect(addr: SocketAddr) -> Client<TcpStream> {
    let tcp = tokio::time::timeout(WAIT, TcpStream::connect(addr)).await.unwrap().unwrap();
    Client { io: BufReader::new(tcp) }
}

/// Connects and expects the 220 greeting.
async fn greeted(addr: SocketAddr) -> Client<TcpStream> {
    let mut c = connect(addr).await;
    let (code, text) = c.reply().await;
    assert_eq!(code, 220, "greeting: {text}");
    c
}

async fn transaction<S: AsyncRead + AsyncWrite + Unpin>(c: &mut Client<S>, subject: &str) {
    c.cmd("MAIL FROM:<bob@client.example>", 250).await;
    c.cmd(&format!("RCPT TO:<{ALICE}>"), 250).await;
    c.cmd("DATA", 354).await;
    let text = c.cmd(&format!("Subject: {subject}\r\n\r\nhello\r\n."), 250).await;
    assert!(text.contains("2.0.0"), "{text}");
}

#[tokio::test]
async fn whole_transaction_is_stored() {
    let s = start(|_| {}).await;
    let mut c = greeted(s.addr).await;
    c.cmd("EHLO client.example", 250).await;
    transaction(&mut c, "in-process").await;
    c.cmd("QUIT", 221).await;
    let got = s.new_messages(ALICE);
    assert_eq!(got.len(), 1);
    let text = String::from_utf8_lossy(&got[0]);
    assert!(text.starts_with("Return-Path: <bob@client.example>\n"), "{text}");
    assert!(text.contains("Subject: in-process\n\nhello\n"), "{text}");
    s.shutdown().await;
}

#[tokio::test]
async fn refused_recipient_gets_550_and_the_transaction_goes_on() {
    let s = start(|_| {}).await;
    let mut c = greeted(s.addr).await;
    c.cmd("EHLO client.example", 250).await;
    c.cmd("MAIL FROM:<bob@client.example>", 250).await;
    assert!(c.cmd("RCPT TO:<nobody@example.test>", 550).await.contains("5.1.1"));
    assert!(c.cmd("RCPT TO:<someone@elsewhere.example>", 550).await.contains("5.7.1"));
    c.cmd(&format!("RCPT TO:<{ALICE}>"), 250).await;
    c.cmd("DATA", 354).await;
    c.cmd("Subject: one of three\r\n\r\nhi\r\n.", 250).await;
    assert_eq!(s.new_messages(ALICE).len(), 1);
    s.shutdown().await;
}

/// A TLS client trusting the server's self-signed certificate.
fn tls_connector(data: &Path) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(data.join("tls/cert.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

#[tokio::test]
async fn starttls_then_a_transaction_under_tls() {
    let s = start(|_| {}).await;
    let mut c = greeted(s.addr).await;
    assert!(c.cmd("EHLO client.example", 250).await.contains("250 "));
    c.cmd("STARTTLS", 220).await;
    let tcp = c.io.into_inner();
    let tls = tokio::time::timeout(
        WAIT,
        tls_connector(s.data.path()).connect(ServerName::try_from("localhost").unwrap(), tcp),
    )
    .await
    .unwrap()
    .expect("TLS handshake");
    let mut c = Client { io: BufReader::new(tls) };
    c.cmd("EHLO client.example", 250).await;
    transaction(&mut c, "under TLS").await;
    c.cmd("QUIT", 221).await;
    let got = s.new_messages(ALICE);
    assert_eq!(got.len(), 1);
    assert!(String::from_utf8_lossy(&got[0]).contains("with ESMTPS"), "the Received header says TLS");
    s.shutdown().await;
}

#[tokio::test]
async fn shutdown_tells_idle_sessions_421_and_run_returns() {
    let s = start(|_| {}).await;
    let mut c = greeted(s.addr).await;
    c.cmd("EHLO client.example", 250).await;
    let addr = s.addr;
    s.shutdown().await;
    let (code, text) = c.reply().await;
    assert_eq!(code, 421, "{text}");
    assert!(text.contains("4.3.2"), "{text}");
    assert!(c.is_closed().await);
    assert!(TcpStream::connect(addr).await.is_err(), "the listener is closed");
}

/// Issue 9: `Server::bind` with no served domain used to succeed, and `RCPT TO:<postmaster>` then
/// panicked the connection task (the policy indexed the first domain). `bind` validates the config.
#[tokio::test]
async fn bind_refuses_an_empty_domain_list() {
    let data = tempfile::tempdir().unwrap();
    let mut cfg = config(data.path());
    cfg.server.domains.clear();
    match Server::bind(cfg).await {
        Err(e) => assert!(e.to_string().contains("server.domains"), "refused, but not for the setting: {e}"),
        Ok(_) => panic!("bind accepted an empty domain list"),
    }
}

/// Issue 9: an unparsable `trusted_networks` entry was silently dropped by `bind` (and so the network
/// was not trusted). `bind` refuses it, naming the key.
#[tokio::test]
async fn bind_refuses_an_unparsable_trusted_network() {
    let data = tempfile::tempdir().unwrap();
    let mut cfg = config(data.path());
    cfg.limits.trusted_networks = vec!["127.0.0.0/8".into(), "10.0.0.0/33".into()];
    match Server::bind(cfg).await {
        Err(e) => assert!(e.to_string().contains("limits.trusted_networks"), "refused, but not for the setting: {e}"),
        Ok(_) => panic!("bind accepted an unparsable trusted network"),
    }
}

/// Issue 9 / issue 10 finding 2: a client that says STARTTLS, sends half a ClientHello and closes freed
/// its connection slot only at `command_timeout` (the handshake polled the socket every 5 ms and never
/// saw the EOF). With `max_connections = 1` the next client is served at once.
#[tokio::test]
async fn half_client_hello_then_close_frees_the_slot_at_once() {
    let s = start(|c| c.limits.max_connections = 1).await;
    let mut c = greeted(s.addr).await;
    c.cmd("STARTTLS", 220).await;
    c.send(&[0x16, 0x03, 0x01]).await;
    drop(c);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        let mut c = connect(s.addr).await;
        let (code, text) = c.reply().await;
        if code == 220 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the slot is still held: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.shutdown().await;
}

/// A ClientHello record offering nothing newer than TLS 1.0 (legacy_version 0x0301, no
/// supported_versions extension), as an old client sends it.
fn tls10_client_hello() -> Vec<u8> {
    let mut body = vec![1, 0, 0, 0, 0x03, 0x01];
    body.extend_from_slice(&[7; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0, 2, 0x00, 0x2f]); // TLS_RSA_WITH_AES_128_CBC_SHA
    body.extend_from_slice(&[1, 0]); // null compression
    let n = body.len() - 4;
    body[1..4].copy_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8]);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(body.len() as u16).to_be_bytes());
    record.extend_from_slice(&body);
    record
}

/// A TLS 1.0 client after STARTTLS gets a protocol_version alert (not rustls's handshake_failure), also
/// when its ClientHello arrives in two pieces (the server reads until the record is whole), and then the
/// connection closes.
#[tokio::test]
async fn old_tls_client_gets_a_protocol_version_alert() {
    use tokio::io::AsyncReadExt;
    let s = start(|_| {}).await;
    let mut c = greeted(s.addr).await;
    c.cmd("STARTTLS", 220).await;
    let hello = tls10_client_hello();
    c.send(&hello[..20]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.send(&hello[20..]).await;
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, c.io.read_to_end(&mut got)).await.expect("closed in time").unwrap();
    assert_eq!(got, [0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x46], "a fatal protocol_version alert, then EOF");
    s.shutdown().await;
}
