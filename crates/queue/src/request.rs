//! Requests from `mailroom queue flush|delete|bounce` to the running server: empty files
//! `queue/requests/<id>.<what>`, picked up by [`crate::Queue::take_requests`] (the server polls about
//! once a second). A file is a request because it works whether or not a server runs, and survives a
//! restart: a request left while the server is down is acted on when it starts.

use std::fmt;
use std::str::FromStr;

/// The id that a flush of the whole queue is filed under (`all.flush`); no message id looks like it
/// (they start with digits).
pub const ALL: &str = "all";

/// Most request files handled per [`crate::Queue::take_requests`] call, so that a flood of them cannot
/// stall the scheduler; the rest wait for the next call.
pub const MAX_REQUESTS_PER_POLL: usize = 1000;

/// What the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Request {
    /// Attempt the deferred recipients now.
    Flush,
    /// Remove the entry without a bounce.
    Delete,
    /// Bounce every recipient not yet final, now (the relay builds the DSN).
    Bounce,
}

impl Request {
    /// The file name extension.
    pub fn as_str(self) -> &'static str {
        match self {
            Request::Flush => "flush",
            Request::Delete => "delete",
            Request::Bounce => "bounce",
        }
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Request {
    type Err = ();

    fn from_str(s: &str) -> Result<Request, ()> {
        match s {
            "flush" => Ok(Request::Flush),
            "delete" => Ok(Request::Delete),
            "bounce" => Ok(Request::Bounce),
            _ => Err(()),
        }
    }
}

/// `<id>.<what>` back into its parts (the id is everything before the last dot).
pub(crate) fn parse_file_name(name: &str) -> Option<(String, Request)> {
    let (id, what) = name.rsplit_once('.')?;
    if id.is_empty() {
        return None;
    }
    Some((id.to_string(), what.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_parse() {
        assert_eq!(parse_file_name("1.M1P2Q3.host.flush"), Some(("1.M1P2Q3.host".into(), Request::Flush)));
        assert_eq!(parse_file_name("all.flush"), Some((ALL.into(), Request::Flush)));
        assert_eq!(parse_file_name("x.bounce"), Some(("x".into(), Request::Bounce)));
        assert_eq!(parse_file_name("x.delete"), Some(("x".into(), Request::Delete)));
        assert_eq!(parse_file_name("x.other"), None);
        assert_eq!(parse_file_name(".flush"), None);
        assert_eq!(parse_file_name("flush"), None);
    }
}
