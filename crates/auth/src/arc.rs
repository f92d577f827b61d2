//! ARC (RFC 8617): verification of the chain a message arrived with, through mail-auth's `verify_arc`.
//! The caller parses the header section and fills in the body hashes the newest ARC-Message-Signature
//! asks for (computed while the body streamed), as for DKIM. mailroom records the result; it does not
//! seal.

use mail_auth::arc::ArcError;
use mail_auth::{AuthenticatedMessage, DkimResult, Error};
use tracing::debug;

use crate::resolver::{Budget, Resolver};

/// The ARC verdict: `none` (no chain), `pass` or `fail` (RFC 8617 §4.4, the IANA "arc" method results).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArcCheck {
    pub result: &'static str,
    /// Why it failed, for the header's `reason=`.
    pub reason: Option<String>,
}

/// Verifies the chain within `budget`. A chain that cannot be checked for want of DNS is `fail` with the
/// reason saying so (ARC has no `temperror`).
pub async fn check_arc(resolver: &Resolver, budget: &mut Budget, message: &AuthenticatedMessage<'_>) -> ArcCheck {
    if message.ams_headers.is_empty() && message.as_headers.is_empty() && message.aar_headers.is_empty() {
        return ArcCheck { result: "none", reason: None };
    }
    if budget.is_spent() {
        return ArcCheck { result: "fail", reason: Some("no time left for DNS".into()) };
    }
    let lookups = resolver.lookups();
    let caches = lookups.caches();
    let Some(output) = budget.run(resolver.authenticator().verify_arc(caches.params(message))).await else {
        lookups.remember_failure();
        return ArcCheck { result: "fail", reason: Some("DNS lookup timed out".into()) };
    };
    let check = match output.result() {
        DkimResult::Pass => ArcCheck { result: "pass", reason: None },
        DkimResult::None => ArcCheck { result: "none", reason: None },
        // mail-auth says neutral for a body hash mismatch: that is a broken chain (RFC 8617 §5.2).
        DkimResult::Neutral(Error::Arc(ArcError::FailedBodyHashMatch)) => {
            ArcCheck { result: "fail", reason: Some("body hash mismatch".into()) }
        }
        DkimResult::TempError(e) => {
            lookups.remember_failure();
            ArcCheck { result: "fail", reason: Some(format!("temporary DNS failure: {e}")) }
        }
        DkimResult::Neutral(e) | DkimResult::Fail(e) | DkimResult::PermError(e) => {
            ArcCheck { result: "fail", reason: Some(e.to_string()) }
        }
    };
    debug!(result = check.result, "arc");
    check
}
