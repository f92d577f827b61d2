//! The canonical domain form (`mailroom_store::canonical_domain`, UTS #46 ToASCII) on arbitrary input,
//! as RCPT domains, served domains and user directory entries reach it.
//!
//! Input: any bytes, read as UTF-8 (lossily, so that invalid sequences become U+FFFD).
//!
//! Invariants:
//! - no panic, for the input and for its ASCII-uppercased form;
//! - a canonical form is ASCII, lowercase, at most 253 octets, and canonical itself (idempotent);
//! - case does not matter: the ASCII-uppercased input has the same canonical form (or both fail);
//! - `is_same_domain` agrees with comparing canonical forms, and holds between an input and its form;
//! - a domain `validate_domain` accepts has a canonical form (every path-safe domain is comparable).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailroom_store::domain::{canonical_domain, is_same_domain};
use mailroom_store::validate_domain;

fuzz_target!(|data: &[u8]| {
    let input = String::from_utf8_lossy(data);
    let upper = input.to_ascii_uppercase();
    let canonical = canonical_domain(&input);
    assert_eq!(canonical.as_ref().ok(), canonical_domain(&upper).as_ref().ok(), "case changed the form of {input:?}");
    if let Ok(c) = &canonical {
        assert!(c.is_ascii(), "{c:?} is not ASCII");
        assert_eq!(c.to_ascii_lowercase(), *c, "{c:?} is not lowercase");
        assert!(c.len() <= 253, "{c:?} is longer than a DNS name");
        assert_eq!(canonical_domain(c).as_ref(), Ok(c), "not idempotent: {input:?} -> {c:?}");
        assert!(is_same_domain(&input, c));
        assert!(is_same_domain(&upper, c));
    } else {
        assert!(!is_same_domain(&input, &input), "an invalid domain equals itself");
    }
    if let Ok(lower) = validate_domain(&input) {
        assert!(canonical_domain(&lower).is_ok(), "{lower:?} is valid but has no canonical form");
    }
});
