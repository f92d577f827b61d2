//! The checks of one inbound message after SPF: its header section and body are fed in as they stream
//! past (never the whole message in memory: the DKIM verifier keeps the header section and hashes the
//! body), then [`MessageCheck::finish`] runs DKIM, ARC and DMARC and writes the Authentication-Results
//! field ([`Verdict`]).

use std::sync::Arc;

use mail_auth::SpfResult;

use crate::arc::{check_arc, ArcCheck};
use crate::dkim::{DkimResult, DkimStatus, DkimVerifier};
use crate::dmarc::{check_dmarc, DmarcCheck};
use crate::resolver::{Budget, Resolver};
use crate::results::{AuthResults, MethodResult};
pub use crate::spf::spf_name;
use crate::spf::{Identity, SpfCheck};

/// Everything checked about one message.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub spf: SpfCheck,
    pub dkim: Vec<DkimResult>,
    pub arc: ArcCheck,
    pub dmarc: DmarcCheck,
    /// The Authentication-Results field recording all of it.
    pub results: AuthResults,
}

impl Verdict {
    /// True when a check could not finish for want of DNS in a way that matters for the decision: SPF or
    /// DMARC `temperror` (RFC 7208 §8.6, RFC 7489 §6.6.2 allow deferring).
    pub fn is_temperror(&self) -> bool {
        self.spf.result() == SpfResult::TempError || self.dmarc.result == "temperror"
    }
}

/// The checks of one message under way.
pub struct MessageCheck {
    resolver: Arc<Resolver>,
    authserv_id: String,
    dkim: DkimVerifier,
}

impl MessageCheck {
    /// `authserv_id` is this server's host name; a header section over `max_header` octets is not
    /// verified (DKIM `permerror`; the session refuses such messages anyway).
    pub fn new(resolver: Arc<Resolver>, authserv_id: &str, max_header: usize) -> MessageCheck {
        MessageCheck { resolver, authserv_id: authserv_id.to_string(), dkim: DkimVerifier::with_max_header(max_header) }
    }

    /// The message as stored (our own Authentication-Results fields already removed), CRLF line
    /// endings, the header section first, in chunks of any size.
    pub fn handle_data(&mut self, chunk: &[u8]) {
        self.dkim.handle_chunk(chunk);
    }

    /// DKIM, ARC, DMARC, and the Authentication-Results field. `spf` was checked at MAIL and spent part
    /// of the message's `budget`.
    pub async fn finish(self, spf: SpfCheck, mut budget: Budget) -> Verdict {
        let MessageCheck { resolver, authserv_id, dkim } = self;
        let input = dkim.finish_body();
        let prepared = input.prepare();
        let lookups = resolver.lookups();
        let caches = lookups.caches();
        let had_time = !budget.is_spent();
        let verified = budget.run(prepared.verify_dkim(resolver.authenticator(), Some(caches.txt()))).await;
        let (outputs, dkim) = match verified {
            Some(v) => v,
            None => {
                if had_time {
                    lookups.remember_failure();
                }
                (Vec::new(), timed_out(prepared.message.as_ref()))
            }
        };
        let (arc, dmarc) = match &prepared.message {
            Some(m) => {
                let arc = check_arc(&resolver, &mut budget, m).await;
                budget.reserve_for_policy();
                let dmarc = check_dmarc(&resolver, &mut budget, m, &outputs, &spf).await;
                (arc, dmarc)
            }
            None => (
                ArcCheck { result: "none", reason: None },
                DmarcCheck { result: "none", policy: mail_auth::dmarc::Policy::None, header_from: String::new() },
            ),
        };
        let results = auth_results(&authserv_id, &spf, &dkim, &arc, &dmarc);
        Verdict { spf, dkim, arc, dmarc, results }
    }
}

/// Every signature `temperror`: the DNS budget ran out before the keys came.
fn timed_out(message: Option<&mail_auth::AuthenticatedMessage<'_>>) -> Vec<DkimResult> {
    let headers = message.map_or(&[][..], |m| &m.dkim_headers[..]);
    if headers.is_empty() {
        return vec![DkimResult::none()];
    }
    headers
        .iter()
        .map(|h| DkimResult {
            status: DkimStatus::TempError,
            domain: Some(h.header.d.clone()),
            selector: Some(h.header.s.clone()),
            identity: None,
            algorithm: Some(h.header.a),
            b: None,
            reason: Some("DNS lookup timed out".into()),
        })
        .collect()
}

/// The field: spf, one dkim per signature (or `dkim=none`), dmarc, arc.
pub fn auth_results(
    authserv_id: &str,
    spf: &SpfCheck,
    dkim: &[DkimResult],
    arc: &ArcCheck,
    dmarc: &DmarcCheck,
) -> AuthResults {
    let mut results = Vec::with_capacity(dkim.len() + 3);
    let spf_result = MethodResult::new("spf", spf_name(spf.result()));
    results.push(match &spf.identity {
        Identity::MailFrom(_) => spf_result.with("smtp.mailfrom", spf.domain()),
        Identity::Helo(helo) => spf_result.with("smtp.helo", helo.as_str()),
    });
    for d in dkim {
        let mut r = MethodResult::new("dkim", d.status.as_str());
        if let Some(reason) = &d.reason {
            r = r.with_reason(reason.as_str());
        }
        let properties =
            [("header.d", &d.domain), ("header.i", &d.identity), ("header.s", &d.selector), ("header.b", &d.b)];
        for (name, value) in properties {
            if let Some(v) = value {
                r = r.with(name, v.as_str());
            }
        }
        results.push(r);
    }
    if dkim.is_empty() {
        results.push(MethodResult::new("dkim", "none"));
    }
    let mut r = MethodResult::new("dmarc", dmarc.result);
    if !dmarc.header_from.is_empty() {
        r = r.with("header.from", dmarc.header_from.as_str());
    }
    results.push(r);
    let mut r = MethodResult::new("arc", arc.result);
    if let Some(reason) = &arc.reason {
        r = r.with_reason(reason.as_str());
    }
    results.push(r);
    AuthResults { authserv_id: authserv_id.to_string(), results }
}
