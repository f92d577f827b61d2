//! `[routing]`: how addresses of served domains expand (the rules live in `mailroom_store::routing`).
//!
//! ```toml
//! [routing]
//! postmaster = ["admin@example.org"]   # where postmaster@ and abuse@ go; default: the postmaster mailbox
//! recipient_delimiter = "+"            # alice+shop@ is alice (folder .shop when it exists); "" is off
//! max_alias_depth = 10                 # aliases of aliases nested deeper are refused (550 5.4.6)
//! srs_max_age = "21d"                  # how long an SRS return address stays valid (days)
//! ```
//! Kept apart from `config.rs` (which holds one field of this type) so that the two never import each
//! other: validation answers a plain message, which `Config::validate` wraps.

use std::time::Duration;

use mailroom_store::routing::{RoutingSettings, DEFAULT_MAX_ALIAS_DEPTH, DEFAULT_RECIPIENT_DELIMITER};
use serde::{Deserialize, Deserializer, Serialize};

/// The deepest alias nesting `max_alias_depth` accepts: deeper is a configuration mistake, and every
/// level is a step of every RCPT's expansion.
pub const MAX_ALIAS_DEPTH: usize = 100;
/// The longest `srs_max_age`: the SRS timestamp counts days modulo 1024, so older addresses could not
/// be told from new ones; a year is far more than any queue lifetime.
pub const MAX_SRS_MAX_AGE_DAYS: u64 = 365;
/// Bytes of `recipient_delimiter`.
pub const MAX_DELIMITER_LEN: usize = 4;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingSection {
    /// Where postmaster@ and abuse@ of every served domain go when no alias or user says otherwise
    /// (RFC 5321 §4.5.1, RFC 2142 §2); empty: the domain's postmaster mailbox.
    pub postmaster: Vec<String>,
    /// Separates a local part from its detail; empty turns subaddressing off.
    pub recipient_delimiter: String,
    /// Longest chain of aliases; deeper is refused at RCPT with 550 5.4.6.
    pub max_alias_depth: usize,
    /// How long an SRS address we wrote is accepted back (bounces to forwarded mail), in whole days.
    #[serde(deserialize_with = "days", serialize_with = "crate::config::write_duration")]
    pub srs_max_age: Duration,
}

impl Default for RoutingSection {
    fn default() -> Self {
        RoutingSection {
            postmaster: Vec::new(),
            recipient_delimiter: DEFAULT_RECIPIENT_DELIMITER.into(),
            max_alias_depth: DEFAULT_MAX_ALIAS_DEPTH,
            srs_max_age: mailroom_store::srs::DEFAULT_MAX_AGE,
        }
    }
}

impl RoutingSection {
    /// The store's settings (call after [`RoutingSection::validate`]).
    pub fn settings(&self) -> RoutingSettings {
        let postmaster =
            self.postmaster.iter().filter_map(|a| mailroom_store::aliases::normalize_target(a).ok()).collect();
        RoutingSettings { delimiter: self.recipient_delimiter.clone(), max_depth: self.max_alias_depth, postmaster }
    }

    /// What serde cannot check; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        for a in &self.postmaster {
            mailroom_store::aliases::normalize_target(a).map_err(|e| format!("routing.postmaster: {e}"))?;
        }
        let d = &self.recipient_delimiter;
        if d.len() > MAX_DELIMITER_LEN
            || d.chars().any(|c| c == '@' || c == '.' || c == '/' || c == '\\' || !c.is_ascii_graphic())
        {
            return Err(format!(
                "routing.recipient_delimiter: {d:?} must be at most {MAX_DELIMITER_LEN} printable ASCII characters, \
                 none of '@', '.', '/', '\\'"
            ));
        }
        if !(1..=MAX_ALIAS_DEPTH).contains(&self.max_alias_depth) {
            return Err(format!("routing.max_alias_depth: must be 1..={MAX_ALIAS_DEPTH}"));
        }
        let days = self.srs_max_age.as_secs() / 86_400;
        if !(1..=MAX_SRS_MAX_AGE_DAYS).contains(&days) {
            return Err(format!("routing.srs_max_age: must be 1..={MAX_SRS_MAX_AGE_DAYS} days"));
        }
        Ok(())
    }
}

/// Whole days: a number, or a string like `"21d"`.
fn days<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Days(u64),
        Text(String),
    }
    let n = match Raw::deserialize(d)? {
        Raw::Days(n) => n,
        Raw::Text(s) => s
            .trim()
            .trim_end_matches('d')
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a number of days (e.g. 21 or \"21d\")")))?,
    };
    // Bounded before multiplying; validate() gives the real range.
    Ok(Duration::from_secs(n.min(100_000) * 86_400))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RoutingSection, String> {
        let r: RoutingSection = toml::from_str(text).map_err(|e| e.to_string())?;
        r.validate().map(|()| r)
    }

    #[test]
    fn defaults_and_ranges() {
        let r = parse("").unwrap();
        assert_eq!(r.recipient_delimiter, "+");
        assert_eq!(r.srs_max_age, Duration::from_secs(21 * 86_400));
        assert_eq!(parse("srs_max_age = \"30d\"").unwrap().srs_max_age, Duration::from_secs(30 * 86_400));
        assert_eq!(parse("srs_max_age = 7").unwrap().srs_max_age, Duration::from_secs(7 * 86_400));
        assert!(parse("recipient_delimiter = \"\"").is_ok(), "empty is off");
        for bad in [
            "srs_max_age = 0",
            "srs_max_age = 4000",
            "srs_max_age = \"soon\"",
            "max_alias_depth = 0",
            "max_alias_depth = 1000",
            "recipient_delimiter = \"@\"",
            "recipient_delimiter = \".\"",
            "recipient_delimiter = \"+-+-+\"",
            "postmaster = [\"not an address\"]",
            "unknown = 1",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let r = parse("postmaster = [\"Admin@Example.TEST\", \"ops@remote.test\"]").unwrap();
        assert_eq!(r.settings().postmaster, ["admin@example.test", "ops@remote.test"]);
    }
}
