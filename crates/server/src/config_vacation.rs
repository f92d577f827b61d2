//! `[vacation]`: how often one sender may get a user's vacation reply (RFC 3834 §2).
//!
//! ```toml
//! [vacation]
//! interval = "7d"     # at most one reply per sender per user within this time; "1d" to "365d"
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// RFC 3834 §2: no more than one response to a sender "within a period of several days"; 7 days is the
/// RECOMMENDED default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(7 * 86_400);
/// Shortest interval: one day, the minimum Sieve's vacation extension allows (RFC 5230 §4.1, `:days`).
pub const MIN_INTERVAL: Duration = Duration::from_secs(86_400);
/// Longest interval: a year (the record of who was answered is kept that long at most).
pub const MAX_INTERVAL: Duration = Duration::from_secs(365 * 86_400);

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VacationSection {
    /// At most one reply per sender per user within this time.
    #[serde(deserialize_with = "crate::config::duration", serialize_with = "crate::config::write_duration")]
    pub interval: Duration,
}

impl Default for VacationSection {
    fn default() -> VacationSection {
        VacationSection { interval: DEFAULT_INTERVAL }
    }
}

impl VacationSection {
    /// The range check; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.interval < MIN_INTERVAL || self.interval > MAX_INTERVAL {
            return Err(format!(
                "vacation.interval = {:?} is out of range ({MIN_INTERVAL:?} to {MAX_INTERVAL:?})",
                self.interval
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        let parse = |t: &str| toml::from_str::<VacationSection>(t).map(|s| s.interval);
        assert_eq!(parse("").unwrap(), DEFAULT_INTERVAL);
        assert_eq!(parse("interval = \"2d\"").unwrap(), Duration::from_secs(2 * 86_400));
        assert_eq!(parse("interval = 86400").unwrap(), MIN_INTERVAL);
        assert!(parse("interval = \"2w\"").is_err());
        assert!(VacationSection { interval: Duration::from_secs(60) }.validate().is_err());
        assert!(VacationSection::default().validate().is_ok());
    }
}
