//! Why a client session cannot go on, or refused a call; `is_transient()` tells a queue whether to retry.

use super::reply::ReplyError;
use super::step::Step;
use crate::reply::Reply;

/// Why the session cannot go on (or refused a call).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("malformed reply from the server: {0}")]
    Malformed(#[from] ReplyError),
    #[error("server refused {step}: {reply}")]
    Rejected { step: Step, reply: Reply },
    #[error("server sent a reply that does not fit {}: {reply}", step.map(|s| s.to_string()).unwrap_or_else(|| "any command sent".into()))]
    Unexpected { step: Option<Step>, reply: Reply },
    #[error("the message needs {extension} ({reason}), which the server does not offer")]
    MissingExtension { extension: &'static str, reason: &'static str },
    #[error("message of {size} octets is larger than the server's limit of {limit} (SIZE, RFC 1870)")]
    TooBig { size: u64, limit: u64 },
    #[error("not possible now: {0}")]
    NotReady(&'static str),
    #[error("cannot authenticate: {0}")]
    InvalidCredentials(&'static str),
}

impl Error {
    /// The server's reply behind the error, if there is one.
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            Error::Rejected { reply, .. } | Error::Unexpected { reply, .. } => Some(reply),
            _ => None,
        }
    }

    /// Worth trying again later: a 4xx, or a server that misbehaved in a way that may pass.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Malformed(_) => true,
            Error::Rejected { reply, .. } | Error::Unexpected { reply, .. } => reply.code < 500,
            Error::MissingExtension { .. }
            | Error::TooBig { .. }
            | Error::NotReady(_)
            | Error::InvalidCredentials(_) => false,
        }
    }

    /// Trying again will fail the same way: the server refused for good (5xx), or the message cannot go to
    /// this server as it is (too big, needs an extension it lacks).
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::Rejected { reply, .. } | Error::Unexpected { reply, .. } => reply.code >= 500,
            Error::MissingExtension { .. } | Error::TooBig { .. } => true,
            Error::Malformed(_) | Error::NotReady(_) | Error::InvalidCredentials(_) => false,
        }
    }

    /// The caller's own mistake (a call out of order, credentials that cannot be encoded): neither
    /// transient nor permanent, since no server said anything about the message.
    pub fn is_local(&self) -> bool {
        matches!(self, Error::NotReady(_) | Error::InvalidCredentials(_))
    }
}
