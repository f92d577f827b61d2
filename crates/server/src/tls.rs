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
    std::fs::create_dir_all(dir).map_err(|e| TlsError::Write(dir.to_owned(), e))?;
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
