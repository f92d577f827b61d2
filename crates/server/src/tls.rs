//! TLS for the server (rustls with the ring provider; TLS 1.2 and 1.3 only): certificate loading, a
//! self-signed certificate made with rcgen when none is configured, and reload on SIGHUP.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tracing::info;

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
}

/// The certificate and key in force; swapped whole on reload, so a handshake never sees half of a change.
pub struct TlsHandle {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<TlsAcceptor>,
}

impl TlsHandle {
    /// Loads `cert` and `key` (PEM).
    pub fn load(cert: &Path, key: &Path) -> Result<TlsHandle, TlsError> {
        let acceptor = acceptor(cert, key)?;
        Ok(TlsHandle { cert: cert.to_owned(), key: key.to_owned(), current: RwLock::new(acceptor) })
    }

    /// Uses the configured files, or `<data-dir>/tls/{cert,key}.pem`, making a self-signed pair there first
    /// if there is none.
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
        if !c.exists() || !k.exists() {
            generate_self_signed(&dir, &c, &k, hostname)?;
            info!(cert = %c.display(), "made a self-signed TLS certificate (set tls.cert and tls.key for a real one)");
        }
        TlsHandle::load(&c, &k)
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reads the files again; on error the old certificate stays in force.
    pub fn reload(&self) -> Result<(), TlsError> {
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
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Read(key.to_owned(), e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A self-signed certificate for the host name, localhost, 127.0.0.1 and ::1; the key readable only by us.
fn generate_self_signed(dir: &Path, cert: &Path, key: &Path, hostname: &str) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut names = vec![hostname.to_owned(), "localhost".into(), "127.0.0.1".into(), "::1".into()];
    names.dedup();
    let certified = rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    // Fsynced into its parent, like every directory mailroom creates (it must survive a power cut).
    mailroom_store::fsync::create_dir_all_synced(dir).map_err(|e| TlsError::Write(dir.to_owned(), e))?;
    let write = |path: &Path, text: String, mode: u32| -> Result<(), TlsError> {
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| TlsError::Write(tmp.clone(), e))?;
        f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(|e| TlsError::Write(tmp.clone(), e))?;
        std::fs::rename(&tmp, path).map_err(|e| TlsError::Write(path.to_owned(), e))
    };
    write(key, certified.signing_key.serialize_pem(), 0o600)?;
    write(cert, certified.cert.pem(), 0o644)?;
    Ok(())
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
