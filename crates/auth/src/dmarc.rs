//! DMARC (RFC 7489): the policy record of the RFC 5322.From domain, found as mail-auth 0.13 finds it (a
//! DNS tree walk up to `_dmarc.<tld>`; NXDOMAIN or no record is `none`), and identifier alignment of the
//! SPF-authenticated MAIL FROM (or HELO) domain and of every passing DKIM `d=`, relaxed or strict as the
//! record's `aspf=`/`adkim=` say.

use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::dmarc::Policy;
use mail_auth::{AuthenticatedMessage, DkimOutput, DmarcOutput, DmarcResult};
use tracing::debug;

use crate::resolver::{Budget, Resolver};
use crate::spf::SpfCheck;

/// The DMARC verdict for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmarcCheck {
    /// `pass`, `fail`, `none`, `temperror` or `permerror` (RFC 7489 §11.2).
    pub result: &'static str,
    /// The policy the domain owner asked for (`none` without a record), `sp=`/`np=` and `t=y` applied.
    pub policy: Policy,
    /// The RFC 5322.From domain (empty when the message has none, or several From domains).
    pub header_from: String,
}

impl DmarcCheck {
    /// A failure the domain owner asked to reject (`p=reject`).
    pub fn is_reject(&self) -> bool {
        self.result == "fail" && self.policy == Policy::Reject
    }

    /// A failure the domain owner asked to quarantine (`p=quarantine`).
    pub fn is_quarantine(&self) -> bool {
        self.result == "fail" && self.policy == Policy::Quarantine
    }
}

/// Runs DMARC within `budget` for `message` (its header section is enough), given the DKIM results and
/// the SPF check; a lookup that fails or does not answer in time is `temperror`.
pub async fn check_dmarc(
    resolver: &Resolver,
    budget: &mut Budget,
    message: &AuthenticatedMessage<'_>,
    dkim: &[DkimOutput<'_>],
    spf: &SpfCheck,
) -> DmarcCheck {
    let header_from = header_from(message);
    if budget.is_spent() {
        return DmarcCheck { result: "temperror", policy: Policy::None, header_from };
    }
    let lookups = resolver.lookups();
    let caches = lookups.caches();
    let params = DmarcParameters::new(message, dkim, spf.domain(), &spf.output);
    let Some(output) = budget.run(resolver.authenticator().verify_dmarc(caches.params(params))).await else {
        lookups.remember_failure();
        return DmarcCheck { result: "temperror", policy: Policy::None, header_from };
    };
    let result = name(&output);
    if result == "temperror" {
        lookups.remember_failure();
    } else {
        lookups.remember_voids();
    }
    let policy = if output.dmarc_record().is_some() { output.policy() } else { Policy::None };
    debug!(domain = output.domain(), result, %policy, "dmarc");
    DmarcCheck {
        result,
        policy,
        header_from: if output.domain().is_empty() { header_from } else { output.domain().to_string() },
    }
}

/// The From domain as DMARC sees it: one domain, or none.
fn header_from(message: &AuthenticatedMessage<'_>) -> String {
    let mut domains = message.from.iter().filter_map(|f| f.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()));
    match domains.next() {
        Some(d) if domains.all(|o| o == d) => d,
        _ => String::new(),
    }
}

/// The RFC 7489 §11.2 result name.
fn name(output: &DmarcOutput) -> &'static str {
    match output.result() {
        DmarcResult::Pass => "pass",
        DmarcResult::Fail(_) => "fail",
        DmarcResult::TempError(_) => "temperror",
        DmarcResult::PermError(_) => "permerror",
        DmarcResult::None => "none",
    }
}
