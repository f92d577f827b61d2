//! The checks of one inbound message after SPF: its header section and body are fed in as they stream
//! past (never the whole message in memory), then [`MessageCheck::finish`] runs DKIM, ARC and DMARC and
//! writes the Authentication-Results field ([`Verdict`]).
//!
//! DKIM verification is a [`DkimSource`]: it sees the same header section and body chunks and gives one
//! [`DkimCheck`] per signature. [`NoDkim`] stands in where no verifier is given (every message then
//! reads `dkim=none`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use mail_auth::dkim::Signature;
use mail_auth::{AuthenticatedMessage, DkimOutput, SpfResult};

use crate::arc::{check_arc, ArcCheck};
use crate::dmarc::{check_dmarc, DmarcCheck};
use crate::resolver::{Budget, Resolver};
use crate::results::{AuthResults, MethodResult};
use crate::spf::{Identity, SpfCheck};

/// One DKIM signature's result (RFC 8601 §2.7.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimCheck {
    /// `pass`, `fail`, `neutral`, `temperror`, `permerror` (a body-hash mismatch is `fail`).
    pub result: &'static str,
    pub reason: Option<String>,
    /// The signature as parsed (`d=`, `s=`, `b=`): DMARC aligns its `d=`.
    pub signature: Signature,
}

/// A future a [`DkimSource`] finishes with.
pub type DkimFuture<'a> = Pin<Box<dyn Future<Output = Vec<DkimCheck>> + Send + 'a>>;

/// Streaming DKIM verification: the header section, then the body in chunks (CRLF line endings, as on
/// the wire after dot-unstuffing), then the results.
pub trait DkimSource: Send {
    /// The whole header section, with the empty line that ends it.
    fn handle_header_section(&mut self, section: &[u8]);
    fn handle_body(&mut self, chunk: &[u8]);
    /// The result per signature, looked up through `resolver` within `budget`.
    fn finish<'a>(self: Box<Self>, resolver: &'a Resolver, budget: &'a mut Budget) -> DkimFuture<'a>;
}

/// No DKIM verifier: no results.
#[derive(Debug, Default)]
pub struct NoDkim;

impl DkimSource for NoDkim {
    fn handle_header_section(&mut self, _: &[u8]) {}
    fn handle_body(&mut self, _: &[u8]) {}
    fn finish<'a>(self: Box<Self>, _: &'a Resolver, _: &'a mut Budget) -> DkimFuture<'a> {
        Box::pin(async { Vec::new() })
    }
}

/// Everything checked about one message.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub spf: SpfCheck,
    pub dkim: Vec<DkimCheck>,
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
    /// The header section (bounded by the session's header size limit), for DMARC and ARC.
    header: Vec<u8>,
    dkim: Box<dyn DkimSource>,
}

impl MessageCheck {
    /// `authserv_id` is this server's host name.
    pub fn new(resolver: Arc<Resolver>, authserv_id: &str, dkim: Box<dyn DkimSource>) -> MessageCheck {
        MessageCheck { resolver, authserv_id: authserv_id.to_string(), header: Vec::new(), dkim }
    }

    /// The header section as stored (our own Authentication-Results fields already removed), with the
    /// empty line that ends it when there is one.
    pub fn handle_header_section(&mut self, section: &[u8]) {
        self.header.clear();
        self.header.extend_from_slice(section);
        self.dkim.handle_header_section(section);
    }

    pub fn handle_body(&mut self, chunk: &[u8]) {
        self.dkim.handle_body(chunk);
    }

    /// DKIM, ARC, DMARC, and the Authentication-Results field. `spf` was checked at MAIL and spent part
    /// of the message's `budget`.
    pub async fn finish(self, spf: SpfCheck, mut budget: Budget) -> Verdict {
        let MessageCheck { resolver, authserv_id, mut header, dkim } = self;
        let dkim = dkim.finish(&resolver, &mut budget).await;
        if !header.ends_with(b"\r\n\r\n") {
            header.extend_from_slice(b"\r\n");
        }
        let message = AuthenticatedMessage::parse(&header);
        let (arc, dmarc) = match &message {
            Some(m) => {
                let arc = check_arc(&resolver, &mut budget, m).await;
                let outputs = dkim_outputs(&dkim);
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

/// DKIM results as mail-auth's DMARC takes them: passes and temperrors with their signature.
fn dkim_outputs(dkim: &[DkimCheck]) -> Vec<DkimOutput<'_>> {
    dkim.iter()
        .filter_map(|d| match d.result {
            "pass" => Some(DkimOutput::pass().with_signature(&d.signature)),
            "temperror" => Some(
                DkimOutput::temp_err(mail_auth::Error::Dns(mail_auth::DnsError::Resolver(String::new())))
                    .with_signature(&d.signature),
            ),
            _ => None,
        })
        .collect()
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

/// The field: spf, one dkim per signature (or `dkim=none`), dmarc, arc.
pub fn auth_results(
    authserv_id: &str,
    spf: &SpfCheck,
    dkim: &[DkimCheck],
    arc: &ArcCheck,
    dmarc: &DmarcCheck,
) -> AuthResults {
    let mut results = Vec::with_capacity(dkim.len() + 3);
    let spf_result = MethodResult::new("spf", spf_name(spf.result()));
    results.push(match &spf.identity {
        Identity::MailFrom(_) => spf_result.with("smtp.mailfrom", spf.domain()),
        Identity::Helo(helo) => spf_result.with("smtp.helo", helo.as_str()),
    });
    if dkim.is_empty() {
        results.push(MethodResult::new("dkim", "none"));
    }
    for d in dkim {
        let mut r = MethodResult::new("dkim", d.result);
        if let Some(reason) = &d.reason {
            r = r.with_reason(reason.as_str());
        }
        let b = mail_auth_b64_prefix(&d.signature.b);
        results.push(r.with("header.d", d.signature.d.as_str()).with("header.s", d.signature.s.as_str()).with("header.b", b));
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

/// The first 8 characters of the signature's base64 `b=` (RFC 6008 §4: enough to tell signatures apart).
fn mail_auth_b64_prefix(b: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(8);
    for chunk in b.chunks(3).take(2) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &c)| n | u32::from(c) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
        }
    }
    out
}
