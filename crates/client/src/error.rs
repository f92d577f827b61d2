//! The client's error: what went wrong, whether trying again later may help, and the server's reply.

use std::io;
use std::time::Duration;

use mailroom_proto::client::Error as ProtoError;
use mailroom_proto::Reply;

/// Why a connection or a send failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid server address {0:?} (want HOST:PORT)")]
    BadServer(String),
    #[error("cannot resolve {server}: {source}")]
    Resolve { server: String, source: io::Error },
    #[error("cannot connect to {server}: {source}")]
    Connect { server: String, source: io::Error },
    #[error("timed out after {after:?} waiting for {waiting}")]
    Timeout { waiting: String, after: Duration },
    #[error("the server closed the connection while we waited for {0}")]
    Closed(String),
    #[error("network error: {0}")]
    Io(#[from] io::Error),
    #[error("reading the message: {0}")]
    Message(io::Error),
    #[error(transparent)]
    Protocol(#[from] ProtoError),
    #[error("{0} is not supported yet")]
    Unsupported(&'static str),
    /// The TLS settings cannot be used: an unreadable or empty CA file, no system CA store, a server
    /// name that cannot be checked.
    #[error("TLS setup: {0}")]
    TlsConfig(String),
    /// `Tls::StartTls` was asked for and the server does not offer it: nothing was sent in plain text
    /// beyond EHLO (and QUIT).
    #[error("{0} does not offer STARTTLS; not continuing without TLS")]
    StartTlsNotOffered(String),
    /// The server's certificate did not verify (unknown issuer, wrong name, expired ...). Permanent: trying
    /// again meets the same certificate; it takes a CA file that trusts it, or a fixed server.
    #[error("the TLS certificate of {server} is not trusted: {reason}")]
    Certificate { server: String, reason: String },
    /// The TLS handshake failed otherwise: `permanent` when the peer refused us (an alert, no common
    /// version or cipher), not when the network failed under it.
    #[error("TLS handshake with {server} failed: {reason}")]
    Tls { server: String, reason: String, permanent: bool },
}

impl Error {
    /// The server's reply behind the error, when there is one.
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            Error::Protocol(e) => e.reply(),
            _ => None,
        }
    }

    /// Worth trying again later: a 4xx reply, a timeout, a network failure.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Resolve { .. } | Error::Connect { .. } | Error::Timeout { .. } | Error::Closed(_) | Error::Io(_) => {
                true
            }
            Error::Protocol(e) => e.is_transient(),
            Error::Tls { permanent, .. } => !permanent,
            Error::BadServer(_)
            | Error::Message(_)
            | Error::Unsupported(_)
            | Error::TlsConfig(_)
            | Error::StartTlsNotOffered(_)
            | Error::Certificate { .. } => false,
        }
    }

    /// Trying again will fail the same way: a 5xx reply, a message the server cannot take, bad input.
    pub fn is_permanent(&self) -> bool {
        !self.is_transient()
    }
}
