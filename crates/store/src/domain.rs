//! The one canonical form of a domain name, used wherever two domains are compared: served domains,
//! the user directory, routing.
//!
//! A domain may reach us as a U-label (`bücher.example`, with SMTPUTF8, RFC 6531) or as an A-label
//! (`xn--bcher-kva.example`, the form a sender without SMTPUTF8 must use, RFC 5890 §2.3.2.1), in any
//! case. Both are one domain: [`canonical_domain`] maps either to its lowercase ASCII (A-label) form
//! by UTS #46 (IDNA 2008 compatible processing, nontransitional), so comparing canonical forms compares
//! domains. On-disk paths are not built from this form: they stay what the user directory holds.

use std::borrow::Cow;

use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};

/// Why a string is not a domain name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid domain name: {0:?}")]
pub struct InvalidDomain(pub String);

/// The canonical form of `domain`: UTS #46 ToASCII (nontransitional, STD3 rules: letters, digits and
/// hyphens only; no label starting or ending with a hyphen; RFC 1035 lengths checked), which also
/// lowercases. Idempotent: the canonical form of a canonical form is itself.
pub fn canonical_domain(domain: &str) -> Result<String, InvalidDomain> {
    // A trailing dot (the DNS root) would make `a.example.` and `a.example` differ; mail domains are
    // written without it (RFC 5321 §2.3.5), so it is refused like any other empty label.
    let ascii = Uts46::new()
        .to_ascii(domain.as_bytes(), AsciiDenyList::STD3, Hyphens::CheckFirstLast, DnsLength::Verify)
        .map_err(|_| InvalidDomain(domain.to_string()))?;
    Ok(match ascii {
        Cow::Borrowed(s) => s.to_string(),
        Cow::Owned(s) => s,
    })
}

/// True when `a` and `b` name the same domain (both valid, equal canonical forms).
pub fn is_same_domain(a: &str, b: &str) -> bool {
    match (canonical_domain(a), canonical_domain(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unicode_and_ascii_forms_are_one_domain() {
        let table = [
            ("bücher.example", "xn--bcher-kva.example"),
            ("XN--BCHER-KVA.example", "xn--bcher-kva.example"),
            ("BÜCHER.Example", "xn--bcher-kva.example"),
            ("Example.TEST", "example.test"),
            ("例子.测试", "xn--fsqu00a.xn--0zwm56d"),
            ("localhost", "localhost"),
        ];
        for (input, want) in table {
            assert_eq!(canonical_domain(input).as_deref(), Ok(want), "{input}");
            assert_eq!(canonical_domain(want).as_deref(), Ok(want), "idempotent for {want}");
        }
        assert!(is_same_domain("bücher.example", "xn--bcher-kva.EXAMPLE"));
        assert!(!is_same_domain("bucher.example", "bücher.example"));
    }

    #[test]
    fn invalid_domains_are_refused() {
        for bad in ["", ".", "a..b", "a.", "-a.test", "a-.test", "a_b.test", "a b", "a/b", "[1.2.3.4]", "xn--zz.test"] {
            assert!(canonical_domain(bad).is_err(), "{bad:?}");
        }
        let long_label = format!("{}.test", "x".repeat(64));
        assert!(canonical_domain(&long_label).is_err());
    }
}
