//! The streaming body canonicalisation: every split of the input gives the one-shot result, and that
//! result is dkimpy's (the reference) for simple and relaxed, including the trailing white-space-only
//! lines that mail-auth 0.13 keeps.

mod dkim_support;

use mailroom_auth::dkim::{canonical_body, BodyHasher, Canonicalization, HashAlgorithm};

use dkim_support::dkimpy_canonical;

/// Bodies that exercise every rule: trailing white space, runs of it, empty and white-space-only lines
/// at the end, a missing final CRLF, lone CR and LF, empty bodies.
const BODIES: &[&[u8]] = &[
    b"",
    b"\r\n",
    b"\r\n\r\n\r\n",
    b"Hi.\r\n\r\nWe lost the game.  Are you hungry yet?\r\n\r\nJoe.\r\n",
    b"line \t \r\n  indented\t\tx  \r\n",
    b"text\r\n \r\n\t\r\n  \t \r\n",
    b"text\r\n\r\n \r\n\r\n",
    b" \r\n\t\r\n",
    b"no final line end",
    b"no final line end   ",
    b"end\r\n  ",
    b"lone\rcr and lone\nlf \r \r\n",
    b"cr at end\r",
    b"a\r\r\n\r\n",
    b"  leading\r\n\r\nmiddle  \r\n\r\n\r\nlast\r\n\r\n",
];

fn hash(canon: Canonicalization, pieces: &[&[u8]]) -> Vec<u8> {
    let mut h = BodyHasher::new(canon, HashAlgorithm::Sha256, None);
    for p in pieces {
        h.handle_chunk(p);
    }
    h.finish().digest
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().to_vec()
}

#[test]
fn every_split_gives_the_one_shot_hash() {
    for canon in [Canonicalization::Simple, Canonicalization::Relaxed] {
        for body in BODIES {
            let whole = hash(canon, &[body]);
            assert_eq!(whole, sha256(&canonical_body(canon, body)), "{canon:?} {body:?}");
            for at in 0..=body.len() {
                assert_eq!(hash(canon, &[&body[..at], &body[at..]]), whole, "{canon:?} {body:?} split at {at}");
            }
            // One octet at a time.
            let singles: Vec<&[u8]> = body.chunks(1).collect();
            assert_eq!(hash(canon, &singles), whole, "{canon:?} {body:?} byte by byte");
        }
    }
}

#[test]
fn canonical_bodies_are_dkimpys() {
    for (canon, name) in [(Canonicalization::Simple, "simple"), (Canonicalization::Relaxed, "relaxed")] {
        let theirs = dkimpy_canonical(name, BODIES);
        for (body, theirs) in BODIES.iter().zip(theirs) {
            let ours = canonical_body(canon, body);
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&theirs),
                "{name} canonicalisation of {:?}",
                String::from_utf8_lossy(body)
            );
        }
    }
}

#[test]
fn relaxed_drops_trailing_whitespace_only_lines() {
    // The mail-auth 0.13 bug: these lines must go, as the empty lines do (RFC 6376 §3.4.4 a then b).
    assert_eq!(canonical_body(Canonicalization::Relaxed, b"text\r\n \r\n\t\r\n"), b"text\r\n");
    assert_eq!(canonical_body(Canonicalization::Relaxed, b" \r\n\t\r\n"), b"");
    assert_eq!(canonical_body(Canonicalization::Simple, b"text\r\n \r\n"), b"text\r\n \r\n");
}

#[test]
fn empty_bodies_hash_as_the_rfc_says() {
    // RFC 6376 §3.4.3: simple turns an empty body into CRLF; §3.4.4: relaxed leaves it empty.
    let b64 = |d: Vec<u8>| mailroom_proto::base64::encode(&d);
    assert_eq!(b64(hash(Canonicalization::Simple, &[b""])), "frcCV1k9oG9oKj3dpUqdJg1PxRT2RSN/XKdLCPjaYaY=");
    assert_eq!(b64(hash(Canonicalization::Relaxed, &[b"\r\n"])), "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
}

#[test]
fn length_limit_counts_canonical_octets() {
    // l= counts octets of the canonical body (RFC 6376 §3.5), not of the body as sent.
    let body = b"a  b\r\nsecond line\r\n";
    for l in [1u64, 3, 4, 6, 10, 200] {
        let mut h = BodyHasher::new(Canonicalization::Relaxed, HashAlgorithm::Sha256, Some(l));
        for b in body.chunks(1) {
            h.handle_chunk(b);
        }
        let got = h.finish();
        let canon = canonical_body(Canonicalization::Relaxed, body);
        let cut = &canon[..canon.len().min(l as usize)];
        assert_eq!(got.digest, sha256(cut), "l={l}");
        assert_eq!(got.canonical_len, cut.len() as u64, "l={l}");
    }
}

#[test]
fn sha1_is_computed_too() {
    let mut h = BodyHasher::new(Canonicalization::Simple, HashAlgorithm::Sha1, None);
    h.handle_chunk(b"x\r\n");
    let d = h.finish().digest;
    assert_eq!(d, ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, b"x\r\n").as_ref());
}
