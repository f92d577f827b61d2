//! The connection under the session: plain TCP, or TLS over it (implicit from the first byte, or after
//! STARTTLS). Nothing above this file needs to know which one it talks through.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tls {
    /// Plain text, as swaks and msmtp default to.
    #[default]
    None,
    /// Plain text, then STARTTLS (RFC 3207) before anything else; never falls back to plain text.
    StartTls,
    /// TLS from the first byte (RFC 8314 §3.3, port 465).
    Implicit,
    /// STARTTLS when the server offers it, plain text when it does not, and the certificate not checked
    /// (RFC 7435 opportunistic security, as MTAs deliver to MX hosts). A STARTTLS that fails is reported
    /// as [`crate::Error::OpportunisticTls`]: the caller may connect again in plain text.
    Opportunistic,
}

#[derive(Debug)]
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// The TCP stream was taken for a TLS handshake that did not finish.
    Gone,
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the connection was lost in the TLS handshake")
}

impl Stream {
    /// Takes the TCP stream out for a TLS handshake (STARTTLS), leaving `Gone` behind.
    pub(crate) fn take_plain(&mut self) -> Option<TcpStream> {
        match std::mem::replace(self, Stream::Gone) {
            Stream::Plain(s) => Some(s),
            other => {
                *self = other;
                None
            }
        }
    }

    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// The TLS version and cipher suite in use, for transcripts.
    pub(crate) fn tls_summary(&self) -> Option<String> {
        let Stream::Tls(s) = self else { return None };
        let conn = s.get_ref().1;
        let version = conn.protocol_version().map(|v| format!("{v:?}")).unwrap_or_default();
        let suite = conn.negotiated_cipher_suite().map(|s| format!("{:?}", s.suite())).unwrap_or_default();
        Some(format!("{version} {suite}"))
    }

    pub(crate) async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf).await,
            Stream::Tls(s) => s.read(buf).await,
            Stream::Gone => Err(gone()),
        }
    }

    pub(crate) async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(s) => {
                s.write_all(buf).await?;
                s.flush().await
            }
            // rustls buffers records: flush pushes them onto the socket.
            Stream::Tls(s) => {
                s.write_all(buf).await?;
                s.flush().await
            }
            Stream::Gone => Err(gone()),
        }
    }

    /// Ends the connection; over TLS with a close_notify alert first (RFC 8446 §6.1).
    pub(crate) async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.shutdown().await,
            Stream::Tls(s) => s.shutdown().await,
            Stream::Gone => Ok(()),
        }
    }
}
