//! A small SMTP receiver for tests, on 127.0.0.2:<free port>: it speaks just enough ESMTP (pipelined
//! commands answered in order), counts connections and keeps every message it accepted.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// Chooses the reply to a RCPT for an address (`None`: the default).
pub type RcptReply = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// How the receiver behaves.
#[derive(Clone)]
pub struct Behaviour {
    /// Extension lines after the EHLO greeting line (e.g. "PIPELINING", "SIZE 1000").
    pub extensions: Vec<String>,
    /// RCPTs accepted per transaction; the next get 452 4.5.3.
    pub max_rcpts: usize,
    /// The reply to a RCPT for this address, when not the default 250.
    pub rcpt_reply: RcptReply,
    /// The reply after the data, when not the default 250.
    pub data_reply: Option<String>,
    /// Offers STARTTLS, answers it 220, then sends garbage instead of a TLS handshake and hangs up.
    pub broken_starttls: bool,
    /// The greeting line (default `220 rx.test ESMTP`); a 4xx or 5xx one is followed by hanging up.
    pub greeting: Option<String>,
    /// Offers AUTH PLAIN and keeps what each AUTH sent (decoded) in `Receiver::auth`.
    pub auth: bool,
    /// Offers STARTTLS with this certificate.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Open connections now and at most, shared between receivers to count across them. A
    /// connection stops counting when QUIT arrives (before the 221, so the client cannot be faster).
    pub active: Option<Arc<Active>>,
}

/// See [`Behaviour::active`].
#[derive(Default)]
pub struct Active {
    pub now: AtomicUsize,
    pub max: AtomicUsize,
}

/// One connection's share of [`Active`], given back once.
struct Open(Option<Arc<Active>>);

impl Open {
    fn new(a: Option<Arc<Active>>) -> Open {
        if let Some(a) = &a {
            let n = a.now.fetch_add(1, Ordering::SeqCst) + 1;
            a.max.fetch_max(n, Ordering::SeqCst);
        }
        Open(a)
    }
    fn close(&mut self) {
        if let Some(a) = self.0.take() {
            a.now.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.close();
    }
}

impl Default for Behaviour {
    fn default() -> Behaviour {
        Behaviour {
            extensions: vec!["PIPELINING".into(), "8BITMIME".into()],
            max_rcpts: 100,
            rcpt_reply: Arc::new(|_| None),
            data_reply: None,
            broken_starttls: false,
            greeting: None,
            auth: false,
            tls: None,
            active: None,
        }
    }
}

/// One accepted message.
#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub rcpts: Vec<String>,
    pub data: String,
    /// It came over TLS.
    pub tls: bool,
}

pub struct Receiver {
    pub port: u16,
    pub connections: Arc<AtomicUsize>,
    pub messages: Arc<Mutex<Vec<Received>>>,
    pub auth: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
    pub fn messages(&self) -> Vec<Received> {
        self.messages.lock().unwrap().clone()
    }
}

/// The most lines one connection may send (a bound on a test that goes wrong).
const MAX_LINES: usize = 100_000;
/// How long a connection may stay silent before the receiver hangs up.
const IDLE: Duration = Duration::from_secs(30);

pub async fn start(ip: &str, behaviour: Behaviour) -> Receiver {
    start_on(ip, 0, behaviour).await
}

/// Like [`start`], on a given port (0: any free one).
pub async fn start_on(ip: &str, port: u16, behaviour: Behaviour) -> Receiver {
    let listener = TcpListener::bind((ip, port)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let messages = Arc::new(Mutex::new(Vec::new()));
    let auth = Arc::new(Mutex::new(Vec::new()));
    let (c, m, a) = (connections.clone(), messages.clone(), auth.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else { return };
            c.fetch_add(1, Ordering::SeqCst);
            let open = Open::new(behaviour.active.clone());
            tokio::spawn(session(open, sock, behaviour.clone(), m.clone(), a.clone()));
        }
    });
    Receiver { port, connections, messages, auth, task }
}

/// The connection under the session: plain TCP, then TLS after STARTTLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

async fn session(
    mut open: Open,
    sock: tokio::net::TcpStream,
    b: Behaviour,
    messages: Arc<Mutex<Vec<Received>>>,
    auth: Arc<Mutex<Vec<String>>>,
) {
    let mut r: BufReader<Box<dyn Io>> = BufReader::new(Box::new(sock));
    let mut tls = false;
    let greeting = b.greeting.clone().unwrap_or_else(|| "220 rx.test ESMTP".into());
    let _ = r.get_mut().write_all(format!("{greeting}\r\n").as_bytes()).await;
    if !greeting.starts_with("220") {
        return;
    }
    let mut from = None;
    let mut rcpts: Vec<String> = Vec::new();
    for _ in 0..MAX_LINES {
        let mut line = String::new();
        match tokio::time::timeout(IDLE, r.read_line(&mut line)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
        let cmd = line.trim_end().to_string();
        let upper = cmd.to_ascii_uppercase();
        let reply = if upper.starts_with("EHLO") {
            let mut ext = b.extensions.clone();
            if (b.broken_starttls || b.tls.is_some()) && !tls {
                ext.push("STARTTLS".into());
            }
            if b.auth {
                ext.push("AUTH PLAIN".into());
            }
            let mut s = String::from("250-rx.test\r\n");
            for (i, e) in ext.iter().enumerate() {
                let sep = if i + 1 == ext.len() { ' ' } else { '-' };
                s.push_str(&format!("250{sep}{e}\r\n"));
            }
            if ext.is_empty() {
                s = "250 rx.test\r\n".into();
            }
            s
        } else if upper.starts_with("AUTH PLAIN ") && b.auth {
            let blob = mailroom_proto::base64::decode(cmd[11..].trim()).unwrap_or_default();
            auth.lock().unwrap().push(String::from_utf8_lossy(&blob).replace('\0', "|"));
            "235 2.7.0 ok\r\n".into()
        } else if upper == "STARTTLS" && b.broken_starttls {
            let _ = r.get_mut().write_all(b"220 2.0.0 go ahead\r\nthis is no TLS record\r\n").await;
            return;
        } else if upper == "STARTTLS" && b.tls.is_some() && !tls {
            let _ = r.get_mut().write_all(b"220 2.0.0 go ahead\r\n").await;
            let acceptor = b.tls.clone().unwrap();
            let Ok(stream) = acceptor.accept(r.into_inner()).await else { return };
            r = BufReader::new(Box::new(stream));
            tls = true;
            from = None;
            rcpts.clear();
            continue;
        } else if upper.starts_with("MAIL FROM:") {
            from = Some(cmd[10..].to_string());
            rcpts.clear();
            "250 2.1.0 ok\r\n".into()
        } else if upper.starts_with("RCPT TO:") {
            let addr = cmd[8..].split_whitespace().next().unwrap_or("").trim_matches(['<', '>']).to_string();
            match (b.rcpt_reply)(&addr) {
                Some(r) => format!("{r}\r\n"),
                None if rcpts.len() >= b.max_rcpts => "452 4.5.3 too many recipients\r\n".into(),
                None => {
                    rcpts.push(addr);
                    "250 2.1.5 ok\r\n".into()
                }
            }
        } else if upper == "DATA" {
            if rcpts.is_empty() {
                "554 5.5.1 no valid recipients\r\n".into()
            } else {
                let _ = r.get_mut().write_all(b"354 go ahead\r\n").await;
                let mut data = String::new();
                loop {
                    let mut l = String::new();
                    match r.read_line(&mut l).await {
                        Ok(n) if n > 0 => {}
                        _ => return,
                    }
                    if l == ".\r\n" {
                        break;
                    }
                    data.push_str(&l);
                }
                match &b.data_reply {
                    Some(r) => format!("{r}\r\n"),
                    None => {
                        let m = Received { from: from.clone().unwrap_or_default(), rcpts: rcpts.clone(), data, tls };
                        messages.lock().unwrap().push(m);
                        "250 2.0.0 queued\r\n".into()
                    }
                }
            }
        } else if upper == "RSET" {
            from = None;
            rcpts.clear();
            "250 2.0.0 ok\r\n".into()
        } else if upper == "NOOP" {
            "250 2.0.0 ok\r\n".into()
        } else if upper == "QUIT" {
            open.close();
            let _ = r.get_mut().write_all(b"221 2.0.0 bye\r\n").await;
            return;
        } else {
            "502 5.5.2 unknown\r\n".into()
        };
        if r.get_mut().write_all(reply.as_bytes()).await.is_err() {
            return;
        }
        let _ = r.get_mut().flush().await;
    }
}

/// A TLS acceptor with a throw-away self-signed certificate (nobody can verify it).
pub fn self_signed_acceptor() -> tokio_rustls::TlsAcceptor {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let c = rcgen::generate_simple_self_signed(vec!["rx.test".into()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.signing_key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(c.cert.der().to_vec())], key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}
