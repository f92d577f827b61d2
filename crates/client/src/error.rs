//! The client's error: what went wrong, whose fault it is ([`ErrorKind`]: worth trying again later,
//! bound to fail the same way, or our own settings), and the server's reply when there is one.

use std::io;
use std::time::Duration;

use mailroom_proto::client::Error as ProtoError;
use mailroom_proto::Reply;

/// Whose problem an error is, so that a queue knows whether to retry and a command which exit code to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Trying again later may work: a 4xx reply (RFC 5321 §4.2.1), a timeout, a refused, reset or lost
    /// connection, a name that did not resolve now.
    Transient,
    /// The server refused for good: a 5xx reply, a certificate that does not verify, a server without
    /// STARTTLS or AUTH when they were required. Trying again meets the same answer.
    Permanent,
    /// Our side is wrong and no server was asked or at fault: the settings (a bad server address, an
    /// unusable CA file, credentials that may not be sent), the message input, or the order of calls.
    /// Neither transient nor permanent: fix the settings, then try again.
    Local,
}

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
    /// Credentials were given for a connection without TLS, and plaintext AUTH was not allowed for it
    /// (it is allowed only when asked for, and only to a loopback server). Nothing secret was sent.
    #[error("not sending the password to {server} without TLS: {reason}")]
    PlaintextAuth { server: String, reason: &'static str },
    /// Credentials were given and the server does not offer AUTH (RFC 4954 §3): no AUTH command is
    /// sent to a server that did not advertise it.
    #[error("{0} does not offer AUTH; not sending credentials to it")]
    AuthNotOffered(String),
    /// [`crate::Tls::Opportunistic`]: the server offered STARTTLS and it failed (refused, or the handshake
    /// broke). The connection is gone; RFC 7435 §4 lets the caller try that server again without TLS.
    #[error("opportunistic STARTTLS with {server} failed: {source}")]
    OpportunisticTls { server: String, source: Box<Error> },
    /// The password could not be had (its file or command failed) when the server asked for AUTH.
    #[error("the password: {0}")]
    Password(String),
}

impl Error {
    /// The server's reply behind the error, when there is one.
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            Error::Protocol(e) => e.reply(),
            _ => None,
        }
    }

    /// Transient, permanent or local; see [`ErrorKind`].
    pub fn kind(&self) -> ErrorKind {
        use ErrorKind::*;
        match self {
            Error::Resolve { .. } | Error::Connect { .. } | Error::Timeout { .. } | Error::Closed(_) | Error::Io(_) => {
                Transient
            }
            Error::Protocol(e) => protocol_kind(e),
            Error::Tls { permanent: true, .. } => Permanent,
            Error::OpportunisticTls { .. } => Transient,
            Error::Tls { permanent: false, .. } => Transient,
            Error::StartTlsNotOffered(_) | Error::Certificate { .. } | Error::AuthNotOffered(_) => Permanent,
            Error::BadServer(_)
            | Error::Message(_)
            | Error::Unsupported(_)
            | Error::TlsConfig(_)
            | Error::PlaintextAuth { .. }
            | Error::Password(_) => Local,
        }
    }

    /// Worth trying again later: a 4xx reply, a timeout, a network failure.
    pub fn is_transient(&self) -> bool {
        self.kind() == ErrorKind::Transient
    }

    /// Trying again will fail the same way: a 5xx reply, a certificate that does not verify, a server
    /// without what was required of it.
    pub fn is_permanent(&self) -> bool {
        self.kind() == ErrorKind::Permanent
    }

    /// True when opportunistic STARTTLS failed: the same server may be tried again in plain text.
    pub fn is_opportunistic_tls_failure(&self) -> bool {
        matches!(self, Error::OpportunisticTls { .. })
    }

    /// Our own settings, input or calls are wrong: neither transient nor permanent.
    pub fn is_local(&self) -> bool {
        self.kind() == ErrorKind::Local
    }
}

/// The session's errors, sorted here rather than by `is_transient` of proto's error, which calls every
/// error that is not transient permanent: a call out of order (`NotReady`) or credentials that cannot be
/// encoded (`InvalidCredentials`) are ours, not the server's.
fn protocol_kind(e: &ProtoError) -> ErrorKind {
    match e {
        ProtoError::NotReady(_) | ProtoError::InvalidCredentials(_) => ErrorKind::Local,
        ProtoError::MissingExtension { .. } | ProtoError::TooBig { .. } => ErrorKind::Permanent,
        e if e.is_transient() => ErrorKind::Transient,
        _ => ErrorKind::Permanent,
    }
}
