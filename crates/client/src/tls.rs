//! TLS for the client: rustls with the ring provider, TLS 1.2 and 1.3 only (RFC 8996 retired the older
//! ones), and the choice of whom to trust.
//!
//! By default the server's certificate must chain to the system's CA store (rustls-native-certs: on Debian
//! the bundle under /etc/ssl/certs), loaded once per process. [`crate::ClientBuilder::cafile`] makes the
//! certificates of one PEM file the trust anchors instead, for a private CA or a self-signed server
//! certificate (as `mailroom serve` makes). [`crate::ClientBuilder::insecure`] checks nothing about who the
//! server is: the handshake signatures are still verified, so the connection is encrypted, but to whoever
//! answered.
//!
//! The name checked is the host part of the server address; an IP address is matched against the
//! certificate's IP address names (RFC 6125 §1.7.2, rustls/webpki), and is not sent as SNI (RFC 6066 §3).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::error::Error;

/// Whom to trust, as the builder was told.
#[derive(Clone, Default)]
pub(crate) struct TlsOptions {
    pub(crate) cafile: Option<PathBuf>,
    pub(crate) insecure: bool,
    /// A ready configuration from the caller, used as it is.
    pub(crate) config: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("cafile", &self.cafile)
            .field("insecure", &self.insecure)
            .field("custom_config", &self.config.is_some())
            .finish()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The system's trust anchors, read once: a relay opens many connections.
fn system_roots() -> Result<Arc<RootCertStore>, Error> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found.errors.first().map(|e| format!(": {e}")).unwrap_or_default();
                return Err(format!(
                    "no trusted CA certificates found on this system{why} (install ca-certificates, or give a CA file)"
                ));
            }
            tracing::debug!(added, "loaded the system's CA certificates");
            Ok(Arc::new(roots))
        })
        .clone()
        .map_err(Error::TlsConfig)
}

/// The certificates of a PEM file as trust anchors.
fn file_roots(path: &Path) -> Result<RootCertStore, Error> {
    let bad = |why: String| Error::TlsConfig(format!("CA file {}: {why}", path.display()));
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    for cert in iter {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(format!("not a usable certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(bad("holds no PEM certificate".into()));
    }
    Ok(roots)
}

impl TlsOptions {
    /// The rustls configuration these options call for.
    pub(crate) fn client_config(&self) -> Result<Arc<ClientConfig>, Error> {
        if let Some(c) = &self.config {
            return Ok(c.clone());
        }
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| Error::TlsConfig(e.to_string()))?;
        let config = if self.insecure {
            tracing::warn!("TLS certificate verification is OFF: the server's identity is not checked");
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
                .with_no_client_auth()
        } else {
            let roots = match &self.cafile {
                Some(path) => Arc::new(file_roots(path)?),
                None => system_roots()?,
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        Ok(Arc::new(config))
    }
}

/// The configuration of [`crate::Tls::Opportunistic`]: encryption without verification (RFC 7435 §1.1),
/// built once, since a relay opens many connections and a warning per connection would be noise. A relay
/// that requires TLS to MX hosts without checking certificates passes it to
/// [`crate::ClientBuilder::tls_config`].
pub fn opportunistic_config() -> Result<Arc<ClientConfig>, Error> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = provider();
            let builder = ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .map_err(|e| e.to_string())?;
            Ok(Arc::new(
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
                    .with_no_client_auth(),
            ))
        })
        .clone()
        .map_err(Error::TlsConfig)
}

/// The name to verify the certificate against: the host of `HOST:PORT` (a DNS name or an IP address).
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, Error> {
    ServerName::try_from(host.to_string()).map_err(|_| {
        Error::TlsConfig(format!("{host:?} is neither a DNS name nor an IP address to check a certificate against"))
    })
}

/// `--insecure`: any certificate, any name. Handshake signatures are still checked with the provider's
/// algorithms, so the peer must at least hold the key of the certificate it shows.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Sorts a failed handshake: a certificate that is not trusted (permanent, needs a CA file or a fixed
/// server), another TLS failure (the peer's alert, no common version: permanent), or the network
/// (transient).
pub(crate) fn handshake_error(server: &str, e: std::io::Error) -> Error {
    let tls = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()).cloned();
    match tls {
        Some(rustls::Error::InvalidCertificate(c)) => {
            Error::Certificate { server: server.to_string(), reason: c.to_string() }
        }
        Some(other) => Error::Tls { server: server.to_string(), reason: other.to_string(), permanent: true },
        None => Error::Tls { server: server.to_string(), reason: e.to_string(), permanent: false },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(matches!(server_name("127.0.0.1").unwrap(), ServerName::IpAddress(_)));
        assert!(matches!(server_name("::1").unwrap(), ServerName::IpAddress(_)));
        assert!(matches!(server_name("mail.example.org").unwrap(), ServerName::DnsName(_)));
        assert!(server_name("bad name").is_err());
    }

    #[test]
    fn cafile_problems_are_config_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = TlsOptions { cafile: Some(dir.path().join("nope.pem")), ..Default::default() };
        assert!(matches!(missing.client_config(), Err(Error::TlsConfig(_))));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificates here\n").unwrap();
        let e = TlsOptions { cafile: Some(empty), ..Default::default() }.client_config().unwrap_err();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
        assert!(TlsOptions { insecure: true, ..Default::default() }.client_config().is_ok());
    }
}
