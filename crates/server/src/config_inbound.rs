//! `[inbound]`: the checks of mail arriving on the smtp listener (SPF, DKIM, DMARC, ARC, recorded in an
//! Authentication-Results header) and what their results do.
//!
//! ```toml
//! [inbound]
//! checks = true            # false: no checks, no header, incoming headers untouched
//! dmarc = "enforce"        # or "report-only": the header only
//! spf_fail = "tag"         # or "reject": 550 5.7.23 at MAIL
//! temperror = "accept"     # or "defer": 451 4.4.3
//! dns_budget = "2s"        # all DNS lookups of one message together
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The shortest `dns_budget`: below it even a loopback resolver's answers may not fit.
pub const MIN_DNS_BUDGET: Duration = Duration::from_millis(100);
/// The longest `dns_budget`: the client waits for it at MAIL (with `spf_fail = "reject"`) and after the
/// end of data, and RFC 5321 §4.5.3.2.6 gives it 10 minutes for the whole end of data; a few seconds is
/// what a sender's MTA will wait without trouble.
pub const MAX_DNS_BUDGET: Duration = Duration::from_secs(30);

/// What a DMARC failure does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DmarcMode {
    /// The domain owner's policy applies: `p=reject` is refused with 550 5.7.1 after the end of data,
    /// `p=quarantine` is delivered into the recipient's `.Junk/` folder.
    #[default]
    Enforce,
    /// Only the Authentication-Results header says so.
    ReportOnly,
}

/// What an SPF `fail` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SpfFail {
    /// Recorded in the header only (a forwarded message fails SPF; DMARC decides with DKIM).
    #[default]
    Tag,
    /// 550 5.7.23 at MAIL (RFC 7372 §3.2; RFC 7208 §8.4).
    Reject,
}

/// What a DNS failure (SPF or DMARC `temperror`) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TempError {
    /// The message is accepted and the header says `temperror`.
    #[default]
    Accept,
    /// 451 4.4.3 (RFC 7208 §8.6): the sender tries again later.
    Defer,
}

/// `[inbound]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Inbound {
    /// False turns every inbound check off.
    pub checks: bool,
    pub dmarc: DmarcMode,
    pub spf_fail: SpfFail,
    pub temperror: TempError,
    /// The time all DNS lookups of one message may take together; past it, `temperror`.
    #[serde(deserialize_with = "crate::config::duration", serialize_with = "crate::config::write_duration")]
    pub dns_budget: Duration,
}

impl Default for Inbound {
    fn default() -> Self {
        Inbound {
            checks: true,
            dmarc: DmarcMode::default(),
            spf_fail: SpfFail::default(),
            temperror: TempError::default(),
            dns_budget: mailroom_auth::resolver::DEFAULT_BUDGET,
        }
    }
}

impl Inbound {
    /// The ranges serde cannot check; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if !(MIN_DNS_BUDGET..=MAX_DNS_BUDGET).contains(&self.dns_budget) {
            return Err(format!(
                "inbound.dns_budget: {:?} is outside {MIN_DNS_BUDGET:?} to {MAX_DNS_BUDGET:?}",
                self.dns_budget
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    fn parse(s: &str) -> Result<Config, String> {
        let c: Config = toml::from_str(s).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn defaults() {
        let c = parse("").unwrap().inbound;
        assert!(c.checks);
        assert_eq!((c.dmarc, c.spf_fail, c.temperror), (DmarcMode::Enforce, SpfFail::Tag, TempError::Accept));
        assert_eq!(c.dns_budget, Duration::from_secs(2));
    }

    #[test]
    fn keys_are_read() {
        let c = parse(
            "[inbound]\nchecks = false\ndmarc = \"report-only\"\nspf_fail = \"reject\"\ntemperror = \"defer\"\n\
             dns_budget = \"500ms\"\n",
        )
        .unwrap()
        .inbound;
        assert!(!c.checks);
        assert_eq!((c.dmarc, c.spf_fail, c.temperror), (DmarcMode::ReportOnly, SpfFail::Reject, TempError::Defer));
        assert_eq!(c.dns_budget, Duration::from_millis(500));
    }

    #[test]
    fn bad_values_are_errors() {
        for bad in [
            "[inbound]\ndmarc = \"enforced\"\n",
            "[inbound]\nspf_fail = \"drop\"\n",
            "[inbound]\ntemperror = \"retry\"\n",
            "[inbound]\ndns_budget = \"10ms\"\n",
            "[inbound]\ndns_budget = \"1m\"\n",
            "[inbound]\ncheck = true\n",
            "[inbound]\ndns_budget = \"2 minutes\"\n",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let e = parse("[inbound]\ndns_budget = \"60s\"\n").unwrap_err();
        assert!(e.contains("inbound.dns_budget"), "{e}");
    }
}
