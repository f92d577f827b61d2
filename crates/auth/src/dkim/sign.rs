//! DKIM signing of a message as it streams by (RFC 6376 §5, RFC 8463): `relaxed/relaxed`, sha256, one
//! signature per key the From domain has (ed25519-sha256 and rsa-sha256 when both exist), `t=`, and the
//! usual header fields over-signed so that copies added later break the signature (§8.15).
//!
//! The body hash comes from [`BodyHasher`] (dkimpy's relaxed canonicalisation); the header hash and the
//! signature itself from mail-auth.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use mail_auth::common::crypto::{HashAlgorithm, SigningKey as _};
use mail_auth::common::headers::{HeaderWriter, Writable, Writer};
use mail_auth::dkim::{Canonicalization, Signature};
use mail_auth::AuthenticatedMessage;

use super::body::BodyHasher;
use super::split::{Splitter, DEFAULT_MAX_HEADER_SECTION};
use crate::keys::{KeyStore, SigningKey};

/// The header fields signed (RFC 6376 §5.4.1's list of what SHOULD be signed, with the MIME fields),
/// each listed once more than it occurs (over-signing, §8.15): a copy added in transit, or one of these
/// fields added where the message had none, then breaks the signature.
pub const SIGNED_HEADERS: &[&str] = &[
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
];

/// Why a message could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("header section over {0} octets: not signed")]
    HeaderTooLarge(usize),
    #[error("signing with {selector}._domainkey.{domain}: {message}")]
    Key { domain: String, selector: String, message: String },
}

/// Signs one message streaming in (CRLF line ends, the header section first, chunks of any size): feed
/// it with [`DkimSigner::handle_chunk`], then [`DkimSigner::finish`] gives the DKIM-Signature fields to
/// put in front of it. Signs only when the From domain has a key in the store it was made with.
pub struct DkimSigner {
    store: Arc<KeyStore>,
    split: Splitter,
    max_header: usize,
    /// The keys chosen once the header section is known (empty: nothing to sign).
    keys: Vec<Arc<SigningKey>>,
    /// One hasher serves every key: relaxed, sha256, the whole body.
    body: Option<BodyHasher>,
    /// Sign with the keys of this domain instead of the From domain's (DSNs: the host name's domain).
    domain: Option<String>,
}

impl DkimSigner {
    /// A signer for the From domain's keys in `store`.
    pub fn new(store: Arc<KeyStore>) -> DkimSigner {
        DkimSigner {
            store,
            split: Splitter::new(DEFAULT_MAX_HEADER_SECTION),
            max_header: DEFAULT_MAX_HEADER_SECTION,
            keys: Vec::new(),
            body: None,
            domain: None,
        }
    }

    /// A signer that signs with `domain`'s keys whatever the From field says (for mail mailroom writes
    /// itself, e.g. DSNs from MAILER-DAEMON@<hostname>).
    pub fn for_domain(store: Arc<KeyStore>, domain: &str) -> DkimSigner {
        DkimSigner { domain: Some(domain.to_owned()), ..DkimSigner::new(store) }
    }

    /// The next piece of the message.
    pub fn handle_chunk(&mut self, chunk: &[u8]) {
        let was_header = self.split.is_in_header();
        let body = self.split.handle_chunk(chunk);
        if was_header && !self.split.is_in_header() {
            self.choose_keys();
        }
        if let Some(h) = &mut self.body {
            h.handle_chunk(body);
        }
    }

    /// True when this message will be signed (known once the header section is complete).
    pub fn is_signing(&self) -> bool {
        !self.keys.is_empty()
    }

    fn choose_keys(&mut self) {
        let domain = match &self.domain {
            Some(d) => Some(d.clone()),
            None => self.split.header().and_then(from_domain),
        };
        self.keys = domain.map(|d| self.store.signing_keys(&d)).unwrap_or_default();
        if !self.keys.is_empty() {
            self.body = Some(BodyHasher::new(Canonicalization::Relaxed, HashAlgorithm::Sha256, None));
        }
    }

    /// The end of the message: one `DKIM-Signature:` field per key (CRLF line ends, folded), or an empty
    /// vector when the From domain has no key. `now` becomes `t=`.
    pub fn finish(mut self, now: SystemTime) -> Result<Vec<u8>, SignError> {
        if self.split.is_too_large() {
            return Err(SignError::HeaderTooLarge(self.max_header));
        }
        if self.split.is_in_header() {
            // No body at all: the header section ends here.
            let header = std::mem::replace(&mut self.split, Splitter::new(0)).finish().unwrap_or_default();
            self.split = Splitter::new(header.len());
            self.handle_chunk(&header);
        }
        let (Some(header), Some(body)) = (self.split.header(), self.body.take()) else { return Ok(Vec::new()) };
        let bh = body.finish().digest;
        let t = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut out = Vec::new();
        for key in &self.keys {
            out.extend_from_slice(sign_one(key, header, &bh, t)?.as_bytes());
        }
        Ok(out)
    }
}

/// Signs a whole message held in memory (mailroom's own small messages: DSNs); the fields to put in
/// front of it, empty when `domain` has no key.
pub fn sign_message(store: Arc<KeyStore>, domain: &str, message: &[u8], now: SystemTime) -> Result<Vec<u8>, SignError> {
    let mut signer = DkimSigner::for_domain(store, domain);
    signer.handle_chunk(message);
    signer.finish(now)
}

/// The domain of the (first) From address.
fn from_domain(header: &[u8]) -> Option<String> {
    let message = AuthenticatedMessage::parse_with_opts(header, None, false)?;
    message.from().rsplit_once('@').map(|(_, d)| d.to_owned())
}

/// The `h=` list: each field of [`SIGNED_HEADERS`] as many times as it occurs plus one.
fn signed_names(fields: &[(&[u8], &[u8])]) -> Vec<String> {
    let mut names = Vec::new();
    for wanted in SIGNED_HEADERS {
        let count = fields.iter().filter(|(n, _)| trim(n).eq_ignore_ascii_case(wanted.as_bytes())).count();
        names.extend(std::iter::repeat_n(wanted.to_string(), count + 1));
    }
    names
}

fn trim(name: &[u8]) -> &[u8] {
    let end = name.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(0, |p| p + 1);
    &name[..end]
}

/// The fields `h=` names, picked as a verifier picks them (RFC 6376 §5.4.2: the n-th mention of a name
/// is its n-th occurrence counted from the bottom; mentions beyond the occurrences select nothing).
fn selected_fields<'a>(fields: &[(&'a [u8], &'a [u8])], names: &[String]) -> Vec<(&'a [u8], &'a [u8])> {
    let mut used: Vec<(&str, usize)> = Vec::new();
    let mut out = Vec::new();
    for name in names {
        let skip = match used.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
            Some((_, k)) => {
                *k += 1;
                *k - 1
            }
            None => {
                used.push((name, 1));
                0
            }
        };
        if let Some(f) = fields.iter().rev().filter(|(n, _)| trim(n).eq_ignore_ascii_case(name.as_bytes())).nth(skip) {
            out.push(*f);
        }
    }
    out
}

/// What the signature covers: the canonical selected fields, then the DKIM-Signature field itself
/// with an empty `b=` and no final CRLF (RFC 6376 §3.7).
struct ToSign<'a> {
    headers: &'a [u8],
    signature: &'a Signature,
}

impl Writable for ToSign<'_> {
    fn write(self, writer: &mut impl Writer) {
        writer.write(self.headers);
        self.signature.write(writer, false);
    }
}

fn sign_one(key: &SigningKey, header: &[u8], bh: &[u8], t: u64) -> Result<String, SignError> {
    // mail-auth's own split of the header section into fields, as its verifier sees them.
    let fields = AuthenticatedMessage::parse_with_opts(header, None, false).map(|m| m.headers).unwrap_or_default();
    let names = signed_names(&fields);
    let mut canonical = Vec::new();
    Canonicalization::Relaxed.canonicalize_headers(selected_fields(&fields, &names).into_iter(), &mut canonical);
    let mut signature = Signature {
        v: 1,
        a: key.algorithm.signature_algorithm(),
        d: key.domain.clone(),
        s: key.selector.clone(),
        bh: bh.to_vec(),
        h: names,
        t,
        ch: Canonicalization::Relaxed,
        cb: Canonicalization::Relaxed,
        ..Signature::default()
    };
    let error =
        |message: String| SignError::Key { domain: key.domain.clone(), selector: key.selector.clone(), message };
    signature.b =
        key.key.sign(ToSign { headers: &canonical, signature: &signature }).map_err(|e| error(e.to_string()))?;
    Ok(join_final_semicolon(signature.to_header()))
}

/// mail-auth may fold the field right before the `;` that follows `b=`. RFC 6376 §3.7 deletes the
/// white space around the `b=` value when hashing, but dkimpy keeps that fold (as one SP), so such a
/// signature fails there: the `;` goes back onto the last line of the value.
fn join_final_semicolon(mut field: String) -> String {
    let trimmed = field.trim_end_matches("\r\n");
    if let Some(value_end) = trimmed.strip_suffix(';').map(|t| t.trim_end_matches([' ', '\t', '\r', '\n']).len()) {
        field.replace_range(value_end..trimmed.len() - 1, "");
    }
    field
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_semicolon_after_b_is_never_folded_onto_its_own_line() {
        let folded = "DKIM-Signature: v=1; a=rsa-sha256;\r\n\tb=abc\r\n\tdef==\r\n\t;\r\n".to_string();
        assert_eq!(join_final_semicolon(folded), "DKIM-Signature: v=1; a=rsa-sha256;\r\n\tb=abc\r\n\tdef==;\r\n");
        let fine = "DKIM-Signature: v=1; b=abc;\r\n".to_string();
        assert_eq!(join_final_semicolon(fine.clone()), fine);
    }

    #[test]
    fn over_signing_lists_each_field_once_more_than_it_occurs() {
        let header = b"From: a@example.org\r\nTo: b@example.org\r\nTo: c@example.org\r\nX-Other: 1\r\n\r\n";
        let fields = AuthenticatedMessage::parse_with_opts(header, None, false).unwrap().headers;
        let names = signed_names(&fields);
        assert_eq!(names.iter().filter(|n| *n == "From").count(), 2);
        assert_eq!(names.iter().filter(|n| *n == "To").count(), 3);
        assert_eq!(names.iter().filter(|n| *n == "Subject").count(), 1);
        assert!(!names.iter().any(|n| n == "X-Other"));
        // Picked bottom-up, as a verifier does: the last To first.
        let picked = selected_fields(&fields, &names);
        let tos: Vec<&[u8]> = picked.iter().filter(|(n, _)| n.eq_ignore_ascii_case(b"to")).map(|(_, v)| *v).collect();
        assert_eq!(tos, vec![&b" c@example.org\r\n"[..], &b" b@example.org\r\n"[..]]);
    }
}
