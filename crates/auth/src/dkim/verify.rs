//! Streaming DKIM verification (RFC 6376 §6): the header section is kept, the body is only hashed as it
//! streams by, and mail-auth verifies the signatures from the header section and those body hashes.
//!
//! mail-auth's own body canonicalisation is not used (it keeps trailing white-space-only lines in
//! relaxed); its `body_hashes` requests are computed with [`BodyHasher`] and filled in before
//! `verify_dkim` runs. Its quirks are mapped here: a body-hash mismatch is `fail` (RFC 6376 §6.1.3), not
//! `neutral`; rsa-sha1 fails (RFC 8301 §3.1); DNS failures other than "no such key" are `temperror`.

use mail_auth::common::crypto::{Algorithm, HashAlgorithm};
use mail_auth::common::headers::Header;
use mail_auth::common::verify::DomainKey;
use mail_auth::dkim::{Canonicalization, DkimError, Signature};
use mail_auth::hickory_resolver::proto::op::ResponseCode;
use mail_auth::{
    AuthenticatedMessage, DkimOutput, DkimResult as MailAuthResult, DnsError, Error, MessageAuthenticator, Parameters,
    ResolverCache, Txt,
};

use super::body::BodyHasher;
use super::split::{Splitter, DEFAULT_MAX_HEADER_SECTION};

/// The most DKIM signatures verified per message (RFC 6376 §6.1: "Verifiers MAY limit the number of
/// signatures they attempt to verify"); the rest are reported as `policy`, without a DNS lookup.
pub const MAX_SIGNATURES: usize = 8;

/// The most distinct body hashes (canonicalisation, hash, `l=`) computed per message: each one hashes the
/// whole body once more, so a header section full of odd signatures must not multiply the work. Requests
/// past it get no digest: their signatures fail.
pub const MAX_BODY_HASHES: usize = 2 * MAX_SIGNATURES;

/// The least characters of `b=` given as `header.b` (RFC 6008 §4: at least eight); more are taken when
/// two signatures of the message would otherwise look alike.
pub const HEADER_B_LEN: usize = 8;

/// The result of one signature, as Authentication-Results names it (RFC 8601 §2.7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DkimStatus {
    Pass,
    Fail,
    Neutral,
    Policy,
    TempError,
    PermError,
    /// The message carries no signature.
    None,
}

impl DkimStatus {
    /// The RFC 8601 result keyword: `pass`, `fail`, `neutral`, `policy`, `temperror`, `permerror`, `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            DkimStatus::Pass => "pass",
            DkimStatus::Fail => "fail",
            DkimStatus::Neutral => "neutral",
            DkimStatus::Policy => "policy",
            DkimStatus::TempError => "temperror",
            DkimStatus::PermError => "permerror",
            DkimStatus::None => "none",
        }
    }
}

impl std::fmt::Display for DkimStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One signature's verdict, with what Authentication-Results shows of it (RFC 6008: header.d, header.s,
/// header.b).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimResult {
    pub status: DkimStatus,
    /// `d=` (None when the signature could not be parsed, or for `none`).
    pub domain: Option<String>,
    /// `s=`.
    pub selector: Option<String>,
    /// `i=` when the signature has one.
    pub identity: Option<String>,
    /// `a=`.
    pub algorithm: Option<Algorithm>,
    /// The first characters of `b=` (base64, at least [`HEADER_B_LEN`]).
    pub b: Option<String>,
    /// Why, in a few words, when it is not a pass.
    pub reason: Option<String>,
}

impl DkimResult {
    fn new(status: DkimStatus, signature: Option<&Signature>, reason: Option<String>) -> DkimResult {
        DkimResult {
            status,
            domain: signature.map(|s| s.d.clone()),
            selector: signature.map(|s| s.s.clone()),
            identity: signature.map(|s| s.i.clone()).filter(|i| !i.is_empty()),
            algorithm: signature.map(|s| s.a),
            b: signature.map(|s| mailroom_proto::base64::encode(&s.b)),
            reason,
        }
    }

    /// The result for a message without any DKIM-Signature.
    pub fn none() -> DkimResult {
        DkimResult::new(DkimStatus::None, None, None)
    }
}

/// Verifies the DKIM signatures of a message as it streams in: feed the message as received (CRLF line
/// ends, dot-unstuffed; the header section first) in chunks of any size with
/// [`DkimVerifier::handle_chunk`], then [`DkimVerifier::finish`].
pub struct DkimVerifier {
    split: Splitter,
    /// One hasher per (canonicalisation, hash, l=) the signatures ask for (DKIM and ARC alike).
    hashers: Vec<(Canonicalization, HashAlgorithm, u64, BodyHasher)>,
}

impl Default for DkimVerifier {
    fn default() -> Self {
        DkimVerifier::new()
    }
}

impl DkimVerifier {
    /// A verifier keeping at most [`DEFAULT_MAX_HEADER_SECTION`] octets of header section.
    pub fn new() -> DkimVerifier {
        DkimVerifier::with_max_header(DEFAULT_MAX_HEADER_SECTION)
    }

    /// A verifier keeping at most `max` octets of header section; a larger one is `permerror`.
    pub fn with_max_header(max: usize) -> DkimVerifier {
        DkimVerifier { split: Splitter::new(max), hashers: Vec::new() }
    }

    /// The next piece of the message.
    pub fn handle_chunk(&mut self, chunk: &[u8]) {
        let was_header = self.split.is_in_header();
        let body = self.split.handle_chunk(chunk);
        if was_header && !self.split.is_in_header() && !self.split.is_too_large() {
            self.start_body();
        }
        for (_, _, _, h) in &mut self.hashers {
            h.handle_chunk(body);
        }
    }

    /// The header section is complete: one body hasher per distinct request of its signatures.
    fn start_body(&mut self) {
        let Some(header) = self.split.header() else { return };
        if let Some(message) = parse(header) {
            self.hashers = message
                .body_hashes
                .iter()
                .take(MAX_BODY_HASHES)
                .map(|(c, h, l, _)| (*c, *h, *l, BodyHasher::new(*c, *h, Some(*l))))
                .collect();
        }
    }

    /// The end of the message: the header section and the computed body hashes, ready for mail-auth
    /// (DKIM here, ARC and DMARC in the other checks).
    pub fn finish_body(mut self) -> VerifiedInput {
        if self.split.is_in_header() {
            // No blank line: the body is empty, the hashers start (and end) now.
            let header = std::mem::replace(&mut self.split, Splitter::new(0)).finish();
            let mut input = VerifiedInput { header, body_hashes: Vec::new() };
            if let Some(h) = &input.header {
                input.body_hashes = parse(h).map(|m| empty_body_hashes(&m)).unwrap_or_default();
            }
            return input;
        }
        let body_hashes = self.hashers.into_iter().map(|(c, h, l, hasher)| (c, h, l, hasher.finish().digest)).collect();
        VerifiedInput { header: self.split.finish(), body_hashes }
    }

    /// The end of the message: verifies every signature (up to [`MAX_SIGNATURES`]), one result each, in
    /// the order of the header section; a single `none` when there is no signature.
    pub async fn finish(self, authenticator: &MessageAuthenticator) -> Vec<DkimResult> {
        let input = self.finish_body();
        let prepared = input.prepare();
        prepared.verify_dkim::<mail_auth::common::cache::NoCache<Box<str>, Txt>>(authenticator, None).await.1
    }
}

/// mail-auth's parse of a header section (with its blank line), lenient about `l=` (RFC 6376 §3.5
/// allows it; the hash honours it).
fn parse(header: &[u8]) -> Option<AuthenticatedMessage<'_>> {
    AuthenticatedMessage::parse_with_opts(header, None, false)
}

fn empty_body_hashes(m: &AuthenticatedMessage<'_>) -> Vec<(Canonicalization, HashAlgorithm, u64, Vec<u8>)> {
    m.body_hashes
        .iter()
        .take(MAX_BODY_HASHES)
        .map(|(c, h, l, _)| (*c, *h, *l, BodyHasher::new(*c, *h, Some(*l)).finish().digest))
        .collect()
}

/// A received message reduced to what the checks need: its header section and the hashes of its body
/// that the signatures in it asked for.
#[derive(Debug, Clone)]
pub struct VerifiedInput {
    /// None when the header section was over the bound.
    header: Option<Vec<u8>>,
    body_hashes: Vec<(Canonicalization, HashAlgorithm, u64, Vec<u8>)>,
}

impl VerifiedInput {
    /// mail-auth's view of the message with the body hashes filled in, and the signatures that are not
    /// going to be verified (rsa-sha1, over [`MAX_SIGNATURES`]) moved out of `dkim_headers`.
    pub fn prepare(&self) -> Prepared<'_> {
        let Some(header) = &self.header else {
            return Prepared { message: None, set_aside: Vec::new(), too_large: true };
        };
        let Some(mut message) = parse(header) else {
            return Prepared { message: None, set_aside: Vec::new(), too_large: false };
        };
        for (c, h, l, digest) in &mut message.body_hashes {
            if let Some((.., d)) = self.body_hashes.iter().find(|(c2, h2, l2, _)| c2 == c && h2 == h && l2 == l) {
                digest.clone_from(d);
            }
        }
        let mut set_aside = Vec::new();
        let headers = std::mem::take(&mut message.dkim_headers);
        for (index, header) in headers.into_iter().enumerate() {
            if header.header.a == Algorithm::RsaSha1 {
                let reason = "rsa-sha1 is not accepted (RFC 8301)".to_string();
                set_aside.push((index, DkimResult::new(DkimStatus::Fail, Some(&header.header), Some(reason))));
            } else if message.dkim_headers.len() >= MAX_SIGNATURES {
                let reason = format!("not verified: more than {MAX_SIGNATURES} signatures");
                set_aside.push((index, DkimResult::new(DkimStatus::Policy, Some(&header.header), Some(reason))));
            } else {
                message.dkim_headers.push(header);
            }
        }
        Prepared {
            message: Some(message),
            set_aside: set_aside.into_iter().map(|(_, r)| r).collect(),
            too_large: false,
        }
    }
}

/// The parsed header section, ready for `verify_dkim` (and for mail-auth's ARC and DMARC checks, which
/// take `message` and the DKIM outputs).
pub struct Prepared<'x> {
    /// None when there were no headers (or the section was over the bound).
    pub message: Option<AuthenticatedMessage<'x>>,
    /// Signatures decided without verifying (rsa-sha1: fail; over the limit: policy).
    pub set_aside: Vec<DkimResult>,
    too_large: bool,
}

impl<'x> Prepared<'x> {
    /// Verifies the signatures: mail-auth's outputs, with the mapping above applied (what DMARC takes),
    /// and one [`DkimResult`] per signature (for Authentication-Results), the set-aside ones last; a single
    /// `none` when the message has no signature. `txt_cache` is mail-auth's TXT cache, when there is one.
    pub async fn verify_dkim<TXT: ResolverCache<Box<str>, Txt>>(
        &'x self,
        authenticator: &MessageAuthenticator,
        txt_cache: Option<&'x TXT>,
    ) -> (Vec<DkimOutput<'x>>, Vec<DkimResult>) {
        if self.too_large {
            let reason = Some("header section too large to verify".to_string());
            return (Vec::new(), vec![DkimResult::new(DkimStatus::PermError, None, reason)]);
        }
        let Some(message) = &self.message else { return (Vec::new(), none_or(self.set_aside.clone())) };
        let params = Parameters {
            params: message,
            cache_txt: txt_cache,
            cache_mx: None::<&mail_auth::common::cache::NoCache<_, _>>,
            cache_ptr: None::<&mail_auth::common::cache::NoCache<_, _>>,
            cache_ipv4: None::<&mail_auth::common::cache::NoCache<_, _>>,
            cache_ipv6: None::<&mail_auth::common::cache::NoCache<_, _>>,
        };
        let outputs: Vec<DkimOutput<'x>> =
            authenticator.verify_dkim(params).await.into_iter().map(|o| remap(o, &message.dkim_headers)).collect();
        let mut results: Vec<DkimResult> = outputs.iter().map(summarise).collect();
        for r in &mut results {
            explain_short_key(r, authenticator, txt_cache).await;
        }
        results.extend(self.set_aside.iter().cloned());
        widen_b(&mut results);
        (outputs, none_or(results))
    }
}

/// The least RSA key size accepted (RFC 8301 §3.2: verifiers MUST NOT consider signatures with keys under
/// 1024 bits valid). ring refuses them on its own; this only names the reason.
pub const MIN_RSA_BITS: usize = 1024;

/// A failed RSA signature whose key is under [`MIN_RSA_BITS`] says so (the key comes from the cache
/// mail-auth just filled, when there is one).
async fn explain_short_key<TXT: ResolverCache<Box<str>, Txt>>(
    r: &mut DkimResult,
    authenticator: &MessageAuthenticator,
    txt_cache: Option<&TXT>,
) {
    let (DkimStatus::Fail, Some(Algorithm::RsaSha256), Some(d), Some(s)) =
        (r.status, r.algorithm, &r.domain, &r.selector)
    else {
        return;
    };
    let name = format!("{s}._domainkey.{d}.");
    if let Ok(key) = authenticator.txt_lookup::<DomainKey>(name, txt_cache).await {
        let bits = key.p.public_key_bits();
        if bits < MIN_RSA_BITS {
            r.reason = Some(format!("RSA key of {bits} bits, under {MIN_RSA_BITS} (RFC 8301)"));
        }
    }
}

fn none_or(results: Vec<DkimResult>) -> Vec<DkimResult> {
    if results.is_empty() {
        vec![DkimResult::none()]
    } else {
        results
    }
}

/// mail-auth's output with the quirks fixed: a body-hash mismatch is a failure (RFC 6376 §6.1.3), a
/// server failure or refusal while fetching the key is temporary.
fn remap<'x>(o: DkimOutput<'x>, headers: &'x [Header<'x, Signature>]) -> DkimOutput<'x> {
    // The output's signature, with the message's lifetime (the accessor shortens it).
    let signature = o.signature().and_then(|s| headers.iter().map(|h| &h.header).find(|h| std::ptr::eq(*h, s)));
    let with = |out: DkimOutput<'x>| match signature {
        Some(s) => out.with_signature(s),
        None => out,
    };
    match o.result() {
        MailAuthResult::Neutral(e @ Error::Dkim(DkimError::FailedBodyHashMatch)) => with(DkimOutput::fail(e.clone())),
        MailAuthResult::PermError(e @ Error::Dns(DnsError::RecordNotFound(code))) if is_temporary(*code) => {
            with(DkimOutput::temp_err(e.clone()))
        }
        _ => o,
    }
}

/// SERVFAIL, REFUSED and the like: the key may well exist (RFC 6376 §6.1.2: TEMPFAIL).
fn is_temporary(code: ResponseCode) -> bool {
    !matches!(code, ResponseCode::NXDomain | ResponseCode::NoError)
}

fn summarise(o: &DkimOutput<'_>) -> DkimResult {
    let (status, reason) = match o.result() {
        MailAuthResult::Pass => (DkimStatus::Pass, None),
        MailAuthResult::Fail(e) => (DkimStatus::Fail, Some(reason(e))),
        MailAuthResult::Neutral(e) => (DkimStatus::Neutral, Some(reason(e))),
        MailAuthResult::TempError(e) => (DkimStatus::TempError, Some(reason(e))),
        MailAuthResult::PermError(e) => (DkimStatus::PermError, Some(reason(e))),
        MailAuthResult::None => (DkimStatus::None, None),
    };
    DkimResult::new(status, o.signature(), reason)
}

fn reason(e: &Error) -> String {
    match e {
        Error::Dkim(DkimError::FailedBodyHashMatch) => "body hash mismatch".to_string(),
        Error::Dns(DnsError::RecordNotFound(ResponseCode::NXDomain)) => "no key published".to_string(),
        other => other.to_string().to_lowercase(),
    }
}

/// Cuts `b=` to [`HEADER_B_LEN`] characters, or more where two signatures would look alike (RFC 6008 §4).
fn widen_b(results: &mut [DkimResult]) {
    let full: Vec<Option<String>> = results.iter().map(|r| r.b.clone()).collect();
    for (i, r) in results.iter_mut().enumerate() {
        let Some(b) = &full[i] else { continue };
        let mut len = HEADER_B_LEN.min(b.len());
        while len < b.len()
            && full
                .iter()
                .enumerate()
                .any(|(j, o)| j != i && o.as_deref().is_some_and(|o| o != b && o.starts_with(&b[..len])))
        {
            len += 1;
        }
        r.b = Some(b[..len].to_string());
    }
}
