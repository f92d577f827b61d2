//! The Sender Rewriting Scheme (SRS0) for forwarded mail: the envelope sender of a message forwarded to
//! another domain becomes an address of the forwarding domain, so that the destination's SPF check (RFC
//! 7208) looks at our domain's record, and a bounce comes back here, where [`Srs::reverse`] checks it and
//! finds the original sender.
//!
//! Form: `SRS0=HHHH=TT=domain=local@forwarding-domain` (the scheme of Shevek's libsrs2, as Postfix's
//! postsrsd writes it): `TT` is the day of forwarding (days since the Unix epoch modulo 1024, two base32
//! characters), `HHHH` the first four base32 characters of an HMAC-SHA256 over `TT=domain=local`, keyed
//! with a secret kept in `<data-dir>/srs.secret` (generated once, mode 0600). The hash covers the
//! lowercased fields and is compared case-insensitively: relays may change the case of a local part.
//! A forged hash or a timestamp older than the maximum age is refused.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::fsync;

/// File name of the SRS secret inside the data directory.
pub const SRS_SECRET_FILE: &str = "srs.secret";
/// Bytes of secret generated (the HMAC-SHA256 key; RFC 2104 §3: at least the hash's output length).
pub const SECRET_LEN: usize = 32;
/// How long an SRS address stays valid by default: libsrs2's default, long enough for a message that
/// sat in queues for the usual 5 days and a late bounce.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(21 * 86_400);
/// The timestamp counts days modulo this (two base32 characters: 10 bits), as libsrs2 does.
const TIME_SLOTS: u64 = 1024;
/// Characters of the base32-encoded hash in the address.
const HASH_LEN: usize = 4;
/// The tag that starts a rewritten local part (followed by `=`).
const SRS0: &str = "SRS0";
/// RFC 4648 §6 base32 alphabet.
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Why an SRS address was not accepted.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SrsError {
    #[error("not an SRS0 address")]
    NotSrs,
    #[error("malformed SRS0 address")]
    Malformed,
    #[error("SRS hash does not match")]
    BadHash,
    #[error("SRS address expired")]
    Expired,
}

/// The SRS key and the maximum age. Cheap to clone.
#[derive(Clone)]
pub struct Srs {
    key: hmac::Key,
    max_age_days: u64,
}

impl std::fmt::Debug for Srs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Srs").field("max_age_days", &self.max_age_days).finish_non_exhaustive()
    }
}

impl Srs {
    /// An SRS with this secret (tests; servers use [`Srs::load_or_create`]).
    pub fn new(secret: &[u8], max_age: Duration) -> Srs {
        Srs { key: hmac::Key::new(hmac::HMAC_SHA256, secret), max_age_days: max_age.as_secs().div_ceil(86_400) }
    }

    /// Reads `<data-dir>/srs.secret`, creating it (random bytes, hex, mode 0600, fsynced) the first time.
    /// Two processes creating it at once agree: the file is linked into place only if none exists.
    pub fn load_or_create(data_dir: &Path, max_age: Duration) -> io::Result<Srs> {
        let path = data_dir.join(SRS_SECRET_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => return parse_secret(&text, &path).map(|s| Srs::new(&s, max_age)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut secret = [0u8; SECRET_LEN];
        SystemRandom::new().fill(&mut secret).map_err(|_| io::Error::other("no system randomness"))?;
        let tmp = data_dir.join(format!("{SRS_SECRET_FILE}.tmp.{}", std::process::id()));
        let result = (|| {
            let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
            f.write_all(format!("{}\n", hex(&secret)).as_bytes())?;
            fsync::sync_all(&f)?;
            match fs::hard_link(&tmp, &path) {
                Ok(()) => fsync::sync_dir(data_dir),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(e),
            }
        })();
        let _ = fs::remove_file(&tmp);
        result?;
        // Whoever won the race, the file on disk is the secret.
        let text = fs::read_to_string(&path)?;
        parse_secret(&text, &path).map(|s| Srs::new(&s, max_age))
    }

    /// The rewritten sender for `local@domain` forwarded by `forwarding_domain` on day `now`.
    pub fn forward(&self, local: &str, domain: &str, forwarding_domain: &str, now: SystemTime) -> String {
        let tt = timestamp(day(now));
        let hash = self.hash(&tt, domain, local);
        format!("{SRS0}={hash}={tt}={domain}={local}@{forwarding_domain}")
    }

    /// Whether `local` (a local part of a served domain) is in SRS0 form, valid or not.
    pub fn is_srs(local: &str) -> bool {
        // `get`, not indexing: a UTF-8 local part may have a character across byte 5.
        local.len() > SRS0.len() + 1 && local.get(..SRS0.len() + 1).is_some_and(|p| p.eq_ignore_ascii_case("SRS0="))
    }

    /// The original sender `(local, domain)` of the SRS0 local part `local`, checked: the hash must
    /// match and the timestamp be at most the maximum age old on day `now`.
    pub fn reverse(&self, local: &str, now: SystemTime) -> Result<(String, String), SrsError> {
        if !Srs::is_srs(local) {
            return Err(SrsError::NotSrs);
        }
        let mut fields = local[SRS0.len() + 1..].splitn(4, '=');
        let (Some(hash), Some(tt), Some(domain), Some(orig)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(SrsError::Malformed);
        };
        if hash.len() != HASH_LEN || tt.len() != 2 || domain.is_empty() || orig.is_empty() {
            return Err(SrsError::Malformed);
        }
        let then = decode_timestamp(tt).ok_or(SrsError::Malformed)?;
        // Checked before the age, so that a probe cannot tell a forged address from an old one.
        if !self.hash(tt, domain, orig).eq_ignore_ascii_case(hash) {
            return Err(SrsError::BadHash);
        }
        let age = (day(now) % TIME_SLOTS + TIME_SLOTS - then) % TIME_SLOTS;
        if age > self.max_age_days {
            return Err(SrsError::Expired);
        }
        Ok((orig.to_string(), domain.to_string()))
    }

    /// The first [`HASH_LEN`] base32 characters of HMAC-SHA256(key, lowercase `TT=domain=local`).
    fn hash(&self, tt: &str, domain: &str, local: &str) -> String {
        let data = format!("{tt}={domain}={local}").to_ascii_lowercase();
        let tag = hmac::sign(&self.key, data.as_bytes());
        base32(tag.as_ref()).chars().take(HASH_LEN).collect()
    }
}

/// Days since the Unix epoch.
fn day(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / 86_400
}

/// Two base32 characters of `day` modulo [`TIME_SLOTS`].
fn timestamp(day: u64) -> String {
    let slot = day % TIME_SLOTS;
    [BASE32[(slot >> 5) as usize], BASE32[(slot & 31) as usize]].iter().map(|&b| b as char).collect()
}

fn decode_timestamp(tt: &str) -> Option<u64> {
    let value = |c: u8| BASE32.iter().position(|&b| b == c.to_ascii_uppercase()).map(|p| p as u64);
    let b = tt.as_bytes();
    Some(value(b[0])? << 5 | value(b[1])?)
}

/// RFC 4648 base32 without padding.
fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(BASE32[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(BASE32[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The secret file's content: hex, at least [`SECRET_LEN`] bytes.
fn parse_secret(text: &str, path: &Path) -> io::Result<Vec<u8>> {
    let text = text.trim();
    let invalid = || io::Error::new(io::ErrorKind::InvalidData, format!("{}: not a hex secret", path.display()));
    if !text.len().is_multiple_of(2) || text.len() < 2 * SECRET_LEN {
        return Err(invalid());
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2).ok_or_else(invalid)?, 16).map_err(|_| invalid()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_day(d: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(d * 86_400 + 3600)
    }

    #[test]
    fn forward_then_reverse_gives_the_original_sender() {
        let srs = Srs::new(b"0123456789abcdef0123456789abcdef", DEFAULT_MAX_AGE);
        let now = at_day(20_000);
        let addr = srs.forward("carol", "remote.test", "fwd.test", now);
        let (local, domain) = addr.rsplit_once('@').unwrap();
        assert_eq!(domain, "fwd.test");
        assert!(local.starts_with("SRS0=") && local.ends_with("=remote.test=carol"), "{addr}");
        assert_eq!(srs.reverse(local, now), Ok(("carol".into(), "remote.test".into())));
        // Lowercased on the way (relays may do that): still valid.
        assert_eq!(srs.reverse(&local.to_lowercase(), now), Ok(("carol".into(), "remote.test".into())));
        // A local part that itself holds '=' (an SRS address forwarded again) comes back whole.
        let twice = srs.forward("SRS0=abcd=AB=orig.test=x", "fwd1.test", "fwd.test", now);
        let l = twice.rsplit_once('@').unwrap().0;
        assert_eq!(srs.reverse(l, now), Ok(("SRS0=abcd=AB=orig.test=x".into(), "fwd1.test".into())));
    }

    #[test]
    fn tampered_expired_and_malformed_addresses_are_refused() {
        let srs = Srs::new(b"0123456789abcdef0123456789abcdef", Duration::from_secs(21 * 86_400));
        let now = at_day(20_000);
        let addr = srs.forward("carol", "remote.test", "fwd.test", now);
        let local = addr.rsplit_once('@').unwrap().0;
        // Another original sender under the same hash.
        let forged = local.replace("=carol", "=mallory");
        assert_eq!(srs.reverse(&forged, now), Err(SrsError::BadHash));
        let mut bad_hash = local.to_string();
        let c = if &bad_hash[5..6] == "A" { "B" } else { "A" };
        bad_hash.replace_range(5..6, c);
        assert_eq!(srs.reverse(&bad_hash, now), Err(SrsError::BadHash));
        let other_key = Srs::new(b"another secret, 32 bytes long!!!", DEFAULT_MAX_AGE);
        assert_eq!(other_key.reverse(local, now), Err(SrsError::BadHash));
        assert!(srs.reverse(local, at_day(20_021)).is_ok(), "21 days old is still valid");
        assert_eq!(srs.reverse(local, at_day(20_022)), Err(SrsError::Expired));
        // The day counter wraps at 1024: across the wrap it still works.
        let old = srs.forward("carol", "remote.test", "fwd.test", at_day(1023));
        assert!(srs.reverse(old.rsplit_once('@').unwrap().0, at_day(1025)).is_ok());
        for bad in ["SRS0=", "SRS0=abcd", "SRS0=abcd=AB=", "SRS0=abc=AB=d.test=x", "SRS0=abcd=A1=d.test=x", "srs1=x"] {
            assert!(srs.reverse(bad, now).is_err(), "{bad}");
        }
        assert_eq!(srs.reverse("alice", now), Err(SrsError::NotSrs));
    }

    #[test]
    fn the_secret_is_created_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = Srs::load_or_create(dir.path(), DEFAULT_MAX_AGE).unwrap();
        let path = dir.path().join(SRS_SECRET_FILE);
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let b = Srs::load_or_create(dir.path(), DEFAULT_MAX_AGE).unwrap();
        let now = at_day(20_000);
        let addr = a.forward("c", "r.test", "f.test", now);
        assert!(b.reverse(addr.rsplit_once('@').unwrap().0, now).is_ok(), "the same secret is read back");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
        fs::write(&path, "zz").unwrap();
        assert!(Srs::load_or_create(dir.path(), DEFAULT_MAX_AGE).is_err(), "a broken secret is an error");
    }

    #[test]
    fn a_utf8_local_part_is_not_srs_and_does_not_panic() {
        // SMTPUTF8 local parts reach this check from the network: byte 5 may fall inside a character.
        let srs = Srs::new(b"0123456789abcdef0123456789abcdef", DEFAULT_MAX_AGE);
        for local in ["SRSé=abcd", "SRS0é", "日本語のアドレス", "SRS0=é"] {
            let _ = Srs::is_srs(local);
            assert!(srs.reverse(local, at_day(1)).is_err(), "{local}");
        }
        assert!(!Srs::is_srs("SRSé=abcd"));
    }

    #[test]
    fn base32_matches_rfc_4648_vectors() {
        assert_eq!(base32(b"f"), "MY");
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(timestamp(0), "AA");
        assert_eq!(decode_timestamp(&timestamp(1023)), Some(1023));
    }
}
