//! The envelope of a queue entry and the state of each recipient: the TOML file `queue/env/<id>`.
//!
//! ```toml
//! id = "1796...M1P2Q3.host"
//! from = "alice@example.org"        # "" for the null reverse path
//! arrival = 1796000000              # unix seconds
//! size = 1234
//! ret = "full"                      # RFC 3461 RET, absent if none
//! envid = "xyz"                     # RFC 3461 ENVID (xtext-decoded), absent if none
//! auth = "alice@example.org"        # the authenticated submitter, if any
//! client = "127.0.0.1"
//! [[rcpt]]
//! address = "bob@remote.example"
//! orcpt = "rfc822;bob@remote.example"
//! notify = ["failure", "delay"]     # absent = the default (failure, delay)
//! state = "deferred"
//! attempts = 1
//! next_attempt = 1796000300
//! last_reply = "451 4.3.0 try later"
//! remote_mta = "mx1.remote.example"
//! status = "4.3.0"
//! delay_warned = false
//! [[history]]                       # the last attempts, oldest first (at most MAX_HISTORY)
//! rcpt = 0
//! at = 1796000000
//! state = "deferred"
//! reply = "451 4.3.0 try later"
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::QueueError;

/// Attempts kept in an envelope's history (older ones are dropped): enough for `mailroom queue show`
/// to tell a story, bounded so a long-deferred entry's file stays small.
pub const MAX_HISTORY: usize = 32;

/// RFC 3461 §4.3 RET: what a DSN returns of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ret {
    Full,
    Hdrs,
}

/// RFC 3461 §4.1 NOTIFY: which DSNs the sender wants for a recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Notify {
    Never,
    Success,
    Failure,
    Delay,
}

/// Where a recipient stands. See the crate docs for the transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Not attempted yet: due at once.
    Pending,
    /// Failed temporarily: due again at `next_attempt`.
    Deferred,
    /// Accepted by the next hop.
    Delivered,
    /// Failed permanently (or expired); the caller built its DSN before recording it.
    Bounced,
    /// Accepted by a next hop that does not offer DSN (RFC 3461 §4.4 "relayed").
    Relayed,
}

impl State {
    /// Delivered, bounced or relayed: nothing more will happen to the recipient.
    pub fn is_final(self) -> bool {
        matches!(self, State::Delivered | State::Bounced | State::Relayed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Deferred => "deferred",
            State::Delivered => "delivered",
            State::Bounced => "bounced",
            State::Relayed => "relayed",
        }
    }
}

/// One recipient of an entry and its delivery state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub address: String,
    /// RFC 3461 ORCPT (`addr-type;address`, xtext-decoded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orcpt: Option<String>,
    /// RFC 3461 NOTIFY; `None` = the default (failure and delay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Vec<Notify>>,
    pub state: State,
    #[serde(default)]
    pub attempts: u32,
    /// Unix seconds; when a deferred recipient is due again.
    #[serde(default)]
    pub next_attempt: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reply: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_mta: Option<String>,
    /// RFC 3463 status of the last result (e.g. "4.3.0").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Whether a "delayed" DSN was sent (it is sent once).
    #[serde(default)]
    pub delay_warned: bool,
}

impl Recipient {
    /// A pending recipient without DSN parameters.
    pub fn new(address: impl Into<String>) -> Recipient {
        Recipient {
            address: address.into(),
            orcpt: None,
            notify: None,
            state: State::Pending,
            attempts: 0,
            next_attempt: 0,
            last_reply: None,
            remote_mta: None,
            status: None,
            delay_warned: false,
        }
    }

    /// Whether the sender wants a DSN of this kind (RFC 3461 §4.1: without NOTIFY, failure and delay).
    pub fn wants(&self, kind: Notify) -> bool {
        match &self.notify {
            None => matches!(kind, Notify::Failure | Notify::Delay),
            Some(list) => !list.contains(&Notify::Never) && list.contains(&kind),
        }
    }

    /// Whether an attempt is due at `now`: pending, or deferred and its time has come.
    pub fn is_due(&self, now: SystemTime) -> bool {
        match self.state {
            State::Pending => true,
            State::Deferred => self.next_attempt <= unix_secs(now),
            _ => false,
        }
    }

    /// When it is due next (`None` when final).
    pub fn due_at(&self) -> Option<SystemTime> {
        match self.state {
            State::Pending => Some(UNIX_EPOCH),
            State::Deferred => Some(from_unix(self.next_attempt)),
            _ => None,
        }
    }
}

/// One recorded attempt (for `mailroom queue show`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// Index of the recipient in `rcpt`.
    pub rcpt: usize,
    /// Unix seconds.
    pub at: u64,
    pub state: State,
    #[serde(default)]
    pub reply: String,
}

/// A queue entry's envelope and per-recipient state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The store's message id: the file name in `queue/msg/` and `queue/env/`.
    pub id: String,
    /// The reverse path; "" for the null sender (a DSN).
    pub from: String,
    /// Unix seconds.
    pub arrival: u64,
    /// Bytes of the message file.
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<Ret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envid: Option<String>,
    /// The authenticated submitter, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    /// Where it came from (an IP address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    #[serde(rename = "rcpt")]
    pub rcpts: Vec<Recipient>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Attempt>,
}

impl Envelope {
    /// An envelope with pending recipients (their `next_attempt` is the arrival) and no DSN
    /// parameters (set the fields for those).
    pub fn new(
        id: impl Into<String>,
        from: impl Into<String>,
        arrival: SystemTime,
        size: u64,
        rcpts: &[&str],
    ) -> Envelope {
        let rcpts =
            rcpts.iter().map(|r| Recipient { next_attempt: unix_secs(arrival), ..Recipient::new(*r) }).collect();
        Envelope {
            id: id.into(),
            from: from.into(),
            arrival: unix_secs(arrival),
            size,
            ret: None,
            envid: None,
            auth: None,
            client: None,
            rcpts,
            history: Vec::new(),
        }
    }

    pub fn arrival_time(&self) -> SystemTime {
        from_unix(self.arrival)
    }

    /// Whether every recipient is final (the entry is then removed).
    pub fn is_done(&self) -> bool {
        self.rcpts.iter().all(|r| r.state.is_final())
    }

    /// The file's content.
    pub fn to_toml(&self) -> Result<Vec<u8>, QueueError> {
        toml::to_string(self)
            .map(String::into_bytes)
            .map_err(|e| QueueError::Encode { id: self.id.clone(), reason: e.to_string() })
    }

    /// Parses a file's content; `Err(reason)` if it is not a valid envelope.
    pub fn from_toml(bytes: &[u8]) -> Result<Envelope, String> {
        let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
        let env: Envelope = toml::from_str(text).map_err(|e| e.to_string())?;
        if env.rcpts.is_empty() {
            return Err("no recipients".into());
        }
        if let Some(bad) = env.history.iter().find(|a| a.rcpt >= env.rcpts.len()) {
            return Err(format!("history names recipient {} of {}", bad.rcpt, env.rcpts.len()));
        }
        Ok(env)
    }
}

/// Unix seconds of a time (0 before the epoch).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

pub fn from_unix(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        let mut env = Envelope::new(
            "1.M1P2Q3.h",
            "alice@example.org",
            from_unix(1_796_000_000),
            1234,
            &["bob@remote.example", "carol@remote.example"],
        );
        env.ret = Some(Ret::Hdrs);
        env.envid = Some("xyz".into());
        env.auth = Some("alice@example.org".into());
        env.client = Some("127.0.0.1".into());
        env.rcpts[0].orcpt = Some("rfc822;bob@remote.example".into());
        env.rcpts[0].notify = Some(vec![Notify::Success, Notify::Failure]);
        env.rcpts[1].state = State::Deferred;
        env.rcpts[1].attempts = 2;
        env.rcpts[1].next_attempt = 1_796_000_600;
        env.rcpts[1].last_reply = Some("451 4.3.0 later".into());
        env.rcpts[1].status = Some("4.3.0".into());
        env.history.push(Attempt {
            rcpt: 1,
            at: 1_796_000_000,
            state: State::Deferred,
            reply: "451 4.3.0 later".into(),
        });
        env
    }

    #[test]
    fn envelope_round_trips_through_toml() {
        let env = sample();
        let text = env.to_toml().unwrap();
        assert_eq!(Envelope::from_toml(&text).unwrap(), env);
        let s = String::from_utf8(text).unwrap();
        assert!(s.contains("[[rcpt]]") && s.contains("state = \"deferred\"") && s.contains("ret = \"hdrs\""), "{s}");
    }

    #[test]
    fn the_designs_example_file_parses() {
        let text = r#"
id = "1796.M1P2Q3.host"
from = ""
arrival = 1796000000
size = 1234
[[rcpt]]
address = "bob@remote.example"
notify = ["never"]
state = "pending"
attempts = 0
next_attempt = 1796000000
delay_warned = false
"#;
        let env = Envelope::from_toml(text.as_bytes()).unwrap();
        assert_eq!(env.from, "");
        assert!(!env.rcpts[0].wants(Notify::Failure), "NOTIFY=NEVER");
        assert!(Recipient::new("x@y").wants(Notify::Delay), "default");
        assert!(!Recipient::new("x@y").wants(Notify::Success), "default");
    }

    #[test]
    fn invalid_files_are_refused() {
        for bad in
            [&b"garbage = ["[..], b"id = \"x\"\n", b"\xff\xfe", b"id=\"x\"\nfrom=\"\"\narrival=1\nsize=1\nrcpt=[]\n"]
        {
            assert!(Envelope::from_toml(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut env = sample();
        env.history[0].rcpt = 9;
        assert!(Envelope::from_toml(&env.to_toml().unwrap()).is_err(), "history out of range");
    }

    #[test]
    fn due_and_final() {
        let now = from_unix(1_796_000_300);
        let env = sample();
        assert!(env.rcpts[0].is_due(now), "pending is due");
        assert!(!env.rcpts[1].is_due(now), "deferred until 600");
        assert!(env.rcpts[1].is_due(from_unix(1_796_000_600)));
        let mut done = env.clone();
        done.rcpts[0].state = State::Delivered;
        done.rcpts[1].state = State::Bounced;
        assert!(done.is_done() && !done.rcpts[0].is_due(now) && done.rcpts[0].due_at().is_none());
    }
}
