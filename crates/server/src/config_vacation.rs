//! `[vacation]`: how often one sender may get a user's vacation reply (RFC 3834 §2).
//!
//! ```toml
//! [vacation]
//! interval = "7d"     # at most one reply per sender per user within this time; "1d" to "365d"
//! ```

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// RFC 3834 §2: no more than one response to a sender "within a period of several days"; 7 days is the
/// RECOMMENDED default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(7 * 86_400);
/// Shortest interval: one day, the minimum Sieve's vacation extension allows (RFC 5230 §4.1, `:days`).
pub const MIN_INTERVAL: Duration = Duration::from_secs(86_400);
/// Longest interval: a year (the record of who was answered is kept that long at most).
pub const MAX_INTERVAL: Duration = Duration::from_secs(365 * 86_400);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VacationSection {
    /// At most one reply per sender per user within this time.
    #[serde(deserialize_with = "days")]
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

/// `"7d"`, `"36h"`, `"90m"`, `"3600s"` or a number of seconds.
fn days<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    let text = match Raw::deserialize(d)? {
        Raw::Secs(s) => return Ok(Duration::from_secs(s)),
        Raw::Text(t) => t,
    };
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 =
        num.parse().map_err(|_| serde::de::Error::custom(format!("{text:?} is not a duration like \"7d\"")))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(serde::de::Error::custom(format!("{text:?}: the unit is one of s, m, h, d"))),
    };
    Ok(Duration::from_secs(n.saturating_mul(scale)))
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
