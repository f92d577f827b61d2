//! SPF (RFC 7208) at MAIL: `check_host()` for the MAIL FROM domain, or for the HELO name when the reverse
//! path is null (§2.4), through mail-auth with mailroom's resolver and the message's DNS budget.
//!
//! Limits (§4.6.4): mail-auth counts DNS-querying terms and answers `permerror` past
//! [`MAX_DNS_TERMS`]; it does not count void lookups, so they are counted here from the lookup journal
//! and more than [`MAX_VOID_LOOKUPS`] turns the result into `permerror`.

use std::net::IpAddr;

use mail_auth::spf::verify::SpfParameters;
use mail_auth::{SpfOutput, SpfResult};
use tracing::debug;

use crate::resolver::{Budget, Resolver};

/// RFC 7208 §4.6.4: at most 10 mechanisms and modifiers that query DNS (include, a, mx, ptr, exists,
/// redirect); mail-auth enforces it (its `LookupLimit`).
pub const MAX_DNS_TERMS: usize = 10;
/// RFC 7208 §4.6.4: more than 2 lookups that return NXDOMAIN or no answers is `permerror`.
pub const MAX_VOID_LOOKUPS: usize = 2;

/// Which identity was checked (RFC 7208 §2.3, §2.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// The MAIL FROM address (`local@domain`).
    MailFrom(String),
    /// The HELO/EHLO name, for the null reverse path.
    Helo(String),
}

/// The outcome of SPF for one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpfCheck {
    /// mail-auth's output, kept whole: DMARC takes it.
    pub output: SpfOutput,
    pub identity: Identity,
}

impl SpfCheck {
    pub fn result(&self) -> SpfResult {
        self.output.result()
    }

    /// The domain that was checked (the MAIL FROM domain, or the HELO name).
    pub fn domain(&self) -> &str {
        self.output.domain()
    }
}

/// What SPF needs to know about the transaction.
#[derive(Debug, Clone, Copy)]
pub struct SpfInput<'a> {
    /// The client's address.
    pub ip: IpAddr,
    /// The HELO/EHLO name as given.
    pub helo: &'a str,
    /// The MAIL FROM address (`local@domain`); None for the null reverse path.
    pub mail_from: Option<&'a str>,
    /// This server's host name (the `%{r}` macro).
    pub hostname: &'a str,
}

/// Runs SPF within `budget`; a lookup that fails or does not answer in time is `temperror`.
pub async fn check_spf(resolver: &Resolver, budget: &mut Budget, input: SpfInput<'_>) -> SpfCheck {
    let (params, identity, domain) = match input.mail_from {
        Some(from) => (
            SpfParameters::verify_mail_from(input.ip, input.helo, input.hostname, from),
            Identity::MailFrom(from.to_string()),
            from.rsplit_once('@').map_or(input.helo, |(_, d)| d),
        ),
        None => (
            SpfParameters::verify_ehlo(input.ip, input.helo, input.hostname),
            Identity::Helo(input.helo.to_string()),
            input.helo,
        ),
    };
    if budget.is_spent() {
        let output = SpfOutput::new(domain.to_ascii_lowercase()).with_result(SpfResult::TempError);
        return SpfCheck { output, identity };
    }
    let lookups = resolver.lookups();
    let caches = lookups.caches();
    let output = match budget.run(resolver.authenticator().verify_spf(caches.params(params))).await {
        Some(out) => out,
        None => SpfOutput::new(domain.to_ascii_lowercase()).with_result(SpfResult::TempError),
    };
    let output = if output.result() == SpfResult::TempError {
        lookups.remember_failure();
        output
    } else {
        lookups.remember_voids();
        // A void lookup past the limit ended evaluation with permerror before any later term matched:
        // mail-auth stops at the first match, so every void lookup it made came before it.
        if lookups.unanswered() > MAX_VOID_LOOKUPS {
            SpfOutput::new(output.domain().to_string()).with_result(SpfResult::PermError)
        } else {
            output
        }
    };
    debug!(domain = output.domain(), result = spf_name(output.result()), "spf");
    SpfCheck { output, identity }
}

/// The RFC 8601 result name of an SPF result (RFC 7208 §2.6).
pub fn spf_name(r: SpfResult) -> &'static str {
    match r {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}
