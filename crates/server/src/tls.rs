//! TLS for the server (rustls with the ring provider; TLS 1.2 and 1.3 only): certificate loading, a
//! self-signed certificate made with rcgen when none is configured, reload on SIGHUP, and the server
//! side of the handshake ([`accept`]: the ClientHello is read and inspected first).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::info;

use crate::stream::Rewound;

pub mod cert;
pub use cert::{RENEW_BEFORE, RENEW_CHECK_INTERVAL, SELF_SIGNED_VALIDITY};

/// The most of a ClientHello read before rustls takes over: one whole record (RFC 8446 §5.1: a record
/// holds at most 2^14 octets) and its 5-octet header. A hello spread over more records is not inspected.
const MAX_INSPECTED_HELLO: usize = 5 + 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {0}: {1}")]
    Read(PathBuf, String),
    #[error("no certificate in {0}")]
    NoCertificate(PathBuf),
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("making a self-signed certificate: {0}")]
    Generate(String),
    #[error("writing {0}: {1}")]
    Write(PathBuf, std::io::Error),
    #[error("the key in {key} does not belong to the certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
}

/// Checks that `cert` and `key` can be read and that the key belongs to the certificate (rustls compares
/// the key's public key with the certificate's SubjectPublicKeyInfo), as `serve` would load them.
pub fn check_pair(cert: &Path, key: &Path) -> Result<(), TlsError> {
    acceptor(cert, key).map(|_| ())
}

/// The certificate and key in force; swapped whole on reload, so a handshake never sees half of a change.
pub struct TlsHandle {
    cert: PathBuf,
    key: PathBuf,
    /// The host name of a self-signed pair made by us (None: configured files, never replaced).
    self_signed: Option<String>,
    current: RwLock<TlsAcceptor>,
}

impl TlsHandle {
    /// Loads `cert` and `key` (PEM).
    pub fn load(cert: &Path, key: &Path) -> Result<TlsHandle, TlsError> {
        let acceptor = acceptor(cert, key)?;
        Ok(TlsHandle { cert: cert.to_owned(), key: key.to_owned(), self_signed: None, current: RwLock::new(acceptor) })
    }

    /// Uses the configured files, or `<data-dir>/tls/{cert,key}.pem`, making a self-signed pair there first
    /// if there is none or the one there expires within [`RENEW_BEFORE`].
    pub fn load_or_generate(
        cert: Option<&Path>,
        key: Option<&Path>,
        data_dir: &Path,
        hostname: &str,
    ) -> Result<TlsHandle, TlsError> {
        if let (Some(c), Some(k)) = (cert, key) {
            return TlsHandle::load(c, k);
        }
        let dir = data_dir.join("tls");
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        if !k.exists() || cert::is_due(&c, std::time::SystemTime::now()) {
            cert::generate_self_signed(&dir, &c, &k, hostname)?;
            info!(cert = %c.display(), "made a self-signed TLS certificate (set tls.cert and tls.key for a real one)");
        }
        let mut handle = TlsHandle::load(&c, &k)?;
        handle.self_signed = Some(hostname.to_owned());
        Ok(handle)
    }

    /// For a self-signed pair of ours: makes a new one when fewer than [`RENEW_BEFORE`] remain, and loads
    /// it. True when it renewed. Configured files are never touched (false).
    pub fn renew_if_due(&self) -> Result<bool, TlsError> {
        let Some(hostname) = &self.self_signed else { return Ok(false) };
        if !cert::is_due(&self.cert, std::time::SystemTime::now()) {
            return Ok(false);
        }
        let dir = self.cert.parent().unwrap_or(Path::new("."));
        cert::generate_self_signed(dir, &self.cert, &self.key, hostname)?;
        let fresh = acceptor(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        info!(cert = %self.cert.display(), "renewed the self-signed TLS certificate (it was about to expire)");
        Ok(true)
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reads the files again (renewing a self-signed pair that is due first); on error the old
    /// certificate stays in force.
    pub fn reload(&self) -> Result<(), TlsError> {
        if self.renew_if_due()? {
            return Ok(());
        }
        let fresh = acceptor(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        info!(cert = %self.cert.display(), "TLS certificate reloaded");
        Ok(())
    }
}

fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| TlsError::Read(cert.to_owned(), e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Read(cert.to_owned(), e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_owned()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Read(key.to_owned(), e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        // rustls compares the key's public key with the certificate's (SubjectPublicKeyInfo).
        .with_single_cert(certs, key_der)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                TlsError::KeyMismatch { cert: cert.to_owned(), key: key.to_owned() }
            }
            other => TlsError::Rustls(other),
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The server side of a TLS handshake on `tcp`. The first record is read (not peeked: waiting for more
/// bytes is a wait for readiness, and EOF is seen at once) and inspected, so that a client offering only
/// TLS 1.1 or older gets a protocol_version alert; then the bytes read are replayed to rustls. The caller
/// bounds the whole with its handshake timeout.
pub(crate) async fn accept(mut tcp: TcpStream, acceptor: TlsAcceptor) -> std::io::Result<TlsStream<Rewound>> {
    let mut head = Vec::with_capacity(512);
    loop {
        match inspect_client_hello(&head) {
            Hello::Incomplete if head.len() < MAX_INSPECTED_HELLO => {}
            Hello::TooOld => {
                let _ = tcp.write_all(&PROTOCOL_VERSION_ALERT).await;
                return Err(std::io::Error::other("client offers only TLS 1.1 or older"));
            }
            _ => break,
        }
        let want = MAX_INSPECTED_HELLO - head.len();
        let n = (&mut tcp).take(want as u64).read_buf(&mut head).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "client closed the connection during the TLS handshake",
            ));
        }
    }
    acceptor.accept(Rewound::new(head, tcp)).await
}

/// TLS 1.2 as it appears on the wire (RFC 5246 §6.2.1).
const TLS12: u16 = 0x0303;
/// The alert rustls would not send for a pre-1.2 client: `protocol_version` (70), fatal, in a TLS 1.0
/// record so that any old client can read it (RFC 8446 §6.2, RFC 5246 §7.2.2).
pub(crate) const PROTOCOL_VERSION_ALERT: [u8; 7] = [0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x46];

/// What a ClientHello says about versions, read before rustls sees it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Hello {
    /// Not all of the ClientHello record has arrived yet.
    Incomplete,
    /// Not a ClientHello we can read: let rustls deal with it.
    Unknown,
    /// The client offers TLS 1.2 or later.
    Modern,
    /// The client offers nothing newer than TLS 1.1: answer with a protocol_version alert.
    TooOld,
}

/// Reads the highest version a ClientHello offers (RFC 8446 §4.1.2, §4.2.1; RFC 5246 §7.4.1.2).
/// rustls refuses such clients too, but with a handshake_failure alert that says less.
pub(crate) fn inspect_client_hello(buf: &[u8]) -> Hello {
    let Some(header) = buf.get(..5) else { return Hello::Incomplete };
    if header[0] != 0x16 {
        return Hello::Unknown;
    }
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    let Some(body) = buf.get(5..5 + len) else { return Hello::Incomplete };
    parse_hello(body).unwrap_or(Hello::Unknown)
}

fn parse_hello(b: &[u8]) -> Option<Hello> {
    let mut r = Reader(b);
    if r.u8()? != 1 {
        return None; // not a ClientHello
    }
    r.take(3)?; // handshake length (the hello may span records; we read what the first one holds)
    let legacy_version = r.u16()?;
    r.take(32)?; // random
    let sid = r.u8()?;
    r.take(sid.into())?;
    let suites = r.u16()?;
    r.take(suites.into())?;
    let comp = r.u8()?;
    r.take(comp.into())?;
    let mut best = legacy_version;
    if let Some(ext_len) = r.u16() {
        let mut ext = Reader(r.take(ext_len.into())?);
        while let (Some(ty), Some(len)) = (ext.u16(), ext.u16()) {
            let data = ext.take(len.into())?;
            if ty == 43 {
                // supported_versions: the list replaces legacy_version (RFC 8446 §4.2.1).
                let mut v = Reader(data);
                let n = v.u8()?;
                let list = v.take(n.into())?;
                // GREASE values (RFC 8701, 0x?a?a) and drafts are not 0x03xx: skip them.
                best = list.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).filter(|v| v >> 8 == 3).max()?;
            }
        }
    }
    Some(if best >= TLS12 { Hello::Modern } else { Hello::TooOld })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello record with the given legacy version and, optionally, a supported_versions list.
    fn hello(legacy: u16, versions: Option<&[u16]>) -> Vec<u8> {
        let mut body = vec![1, 0, 0, 0];
        body.extend_from_slice(&legacy.to_be_bytes());
        body.extend_from_slice(&[0; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one suite
        body.extend_from_slice(&[1, 0]); // null compression
        if let Some(vs) = versions {
            let mut list = vec![(vs.len() * 2) as u8];
            for v in vs {
                list.extend_from_slice(&v.to_be_bytes());
            }
            let mut ext = vec![0, 43];
            ext.extend_from_slice(&(list.len() as u16).to_be_bytes());
            ext.extend_from_slice(&list);
            body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
            body.extend_from_slice(&ext);
        }
        let n = body.len() - 4;
        body[1..4].copy_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8]);
        let mut rec = vec![0x16, 3, 1];
        rec.extend_from_slice(&(body.len() as u16).to_be_bytes());
        rec.extend_from_slice(&body);
        rec
    }

    #[test]
    fn client_hello_versions() {
        assert_eq!(inspect_client_hello(&hello(0x0302, None)), Hello::TooOld, "TLS 1.1");
        assert_eq!(inspect_client_hello(&hello(0x0301, None)), Hello::TooOld, "TLS 1.0");
        assert_eq!(inspect_client_hello(&hello(0x0303, None)), Hello::Modern, "TLS 1.2 without the extension");
        assert_eq!(inspect_client_hello(&hello(0x0303, Some(&[0x0304, 0x0303]))), Hello::Modern, "TLS 1.3");
        assert_eq!(inspect_client_hello(&hello(0x0303, Some(&[0x0302, 0x0301]))), Hello::TooOld);
        assert_eq!(inspect_client_hello(&hello(0x0303, Some(&[0x0a0a, 0x0304]))), Hello::Modern, "GREASE ignored");
        let full = hello(0x0302, None);
        for cut in 0..full.len() {
            assert_eq!(inspect_client_hello(&full[..cut]), Hello::Incomplete, "cut {cut}");
        }
        assert_eq!(inspect_client_hello(b"EHLO x\r\n"), Hello::Unknown);
    }
}
