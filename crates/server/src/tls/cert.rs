//! The self-signed certificate mailroom makes when none is configured: its subject is the host name,
//! it is valid for [`SELF_SIGNED_VALIDITY`], and it is made anew once fewer than [`RENEW_BEFORE`] remain
//! (at start, on SIGHUP and on the server's renewal timer). Also reads a certificate's expiry
//! (`notAfter`) from its DER, which rustls does not expose.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::TlsError;

/// How long a self-signed certificate is valid: a year, as the common self-signed tools make them.
pub const SELF_SIGNED_VALIDITY: Duration = Duration::from_secs(365 * 86_400);
/// A self-signed certificate with less than this left is made anew (Let's Encrypt's clients renew at
/// 30 days too).
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);
/// How often a running server checks whether its self-signed certificate is due (it also checks at
/// start and on SIGHUP).
pub const RENEW_CHECK_INTERVAL: Duration = Duration::from_secs(12 * 3600);

/// Makes a self-signed certificate for the host name (its subject CN and first name), localhost,
/// 127.0.0.1 and ::1, valid from now for [`SELF_SIGNED_VALIDITY`], and writes it with its key (mode
/// 0600) into `dir`, each file replaced atomically.
pub fn generate_self_signed(dir: &Path, cert: &Path, key: &Path, hostname: &str) -> Result<(), TlsError> {
    let mut names = vec![hostname.to_owned(), "localhost".into(), "127.0.0.1".into(), "::1".into()];
    names.dedup();
    let gen = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let mut params = rcgen::CertificateParams::new(names).map_err(gen)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, hostname);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    // A minute back: a client whose clock is a little behind still accepts it at once.
    params.not_before = epoch + now.saturating_sub(Duration::from_secs(60));
    params.not_after = epoch + now + SELF_SIGNED_VALIDITY;
    let signing_key = rcgen::KeyPair::generate().map_err(gen)?;
    let certificate = params.self_signed(&signing_key).map_err(gen)?;
    // Fsynced into its parent, like every directory mailroom creates (it must survive a power cut).
    mailroom_store::fsync::create_dir_all_synced(dir).map_err(|e| TlsError::Write(dir.to_owned(), e))?;
    write_atomically(key, &signing_key.serialize_pem(), 0o600)?;
    write_atomically(cert, &certificate.pem(), 0o644)
}

fn write_atomically(path: &Path, text: &str, mode: u32) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| TlsError::Write(tmp.clone(), e))?;
    f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(|e| TlsError::Write(tmp.clone(), e))?;
    std::fs::rename(&tmp, path).map_err(|e| TlsError::Write(path.to_owned(), e))
}

/// True when the certificate in the PEM file `cert` expires within [`RENEW_BEFORE`] of `now` (or has
/// expired), or cannot be read as a certificate at all: either way a self-signed one is due.
pub fn is_due(cert: &Path, now: SystemTime) -> bool {
    use rustls::pki_types::pem::PemObject;
    let Ok(der) = rustls::pki_types::CertificateDer::from_pem_file(cert) else { return true };
    match not_after(&der) {
        Some(end) => end.duration_since(now).map_or(true, |left| left < RENEW_BEFORE),
        None => true,
    }
}

/// The end of a certificate's validity (RFC 5280 §4.1.2.5), read from its DER: Certificate ::= SEQUENCE
/// { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber, signature, issuer, validity SEQUENCE
/// { notBefore, notAfter }, ... } ... }.
pub fn not_after(der: &[u8]) -> Option<SystemTime> {
    let (tag, cert, _) = tlv(der)?;
    let (tag2, mut tbs, _) = tlv(cert).filter(|_| tag == 0x30)?;
    if tag2 != 0x30 {
        return None;
    }
    if tbs.first() == Some(&0xa0) {
        tbs = tlv(tbs)?.2; // the explicit version
    }
    for _ in 0..3 {
        tbs = tlv(tbs)?.2; // serialNumber, signature, issuer
    }
    let (tag, validity, _) = tlv(tbs)?;
    let (_, _, rest) = tlv(validity).filter(|_| tag == 0x30)?;
    let (time_tag, time, _) = tlv(rest)?;
    parse_time(time_tag, std::str::from_utf8(time).ok()?)
}

/// One DER tag-length-value: (tag, contents, what follows). Short tags only, as X.509 uses them here.
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *b.first()?;
    let first = *b.get(1)?;
    let (len, head) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let len = b.get(2..2 + n)?.iter().fold(0usize, |acc, &x| (acc << 8) | usize::from(x));
        (len, 2 + n)
    };
    let end = head.checked_add(len)?;
    Some((tag, b.get(head..end)?, b.get(end..)?))
}

/// UTCTime (`YYMMDDHHMMSSZ`, tag 0x17) or GeneralizedTime (`YYYYMMDDHHMMSSZ`, tag 0x18), RFC 5280 §4.1.2.5.
fn parse_time(tag: u8, s: &str) -> Option<SystemTime> {
    let digits = s.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i64 = digits.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, digits.get(2..)?)
        }
        0x18 => (digits.get(..4)?.parse().ok()?, digits.get(4..)?),
        _ => return None,
    };
    if rest.len() != 10 || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |i: usize| rest[i..i + 2].parse::<i64>().ok();
    let (month, day, h, m, sec) = (num(0)?, num(2)?, num(4)?, num(6)?, num(8)?);
    let days = days_from_civil(year, month, day)?;
    let secs = days * 86_400 + h * 3600 + m * 60 + sec;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> Option<i64> {
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_self_signed_certificate_runs_a_year_and_is_not_due() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        generate_self_signed(dir.path(), &c, &k, "mx.example.test").unwrap();
        use rustls::pki_types::pem::PemObject;
        let der = rustls::pki_types::CertificateDer::from_pem_file(&c).unwrap();
        let end = not_after(&der).expect("notAfter");
        let left = end.duration_since(SystemTime::now()).unwrap();
        assert!(left > SELF_SIGNED_VALIDITY - Duration::from_secs(120) && left <= SELF_SIGNED_VALIDITY, "{left:?}");
        assert!(!is_due(&c, SystemTime::now()));
        assert!(is_due(&c, SystemTime::now() + SELF_SIGNED_VALIDITY - Duration::from_secs(10 * 86_400)));
        assert!(is_due(&dir.path().join("missing.pem"), SystemTime::now()));
    }

    #[test]
    fn times() {
        assert_eq!(days_from_civil(1970, 1, 1), Some(0));
        assert_eq!(days_from_civil(2000, 3, 1), Some(11_017));
        let t = |tag, s| parse_time(tag, s).map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_secs());
        assert_eq!(t(0x17, "700101000000Z"), Some(0));
        assert_eq!(t(0x18, "20380119031408Z"), Some(2_147_483_648));
        assert_eq!(t(0x17, "491231235959Z"), Some(2_524_607_999));
        assert_eq!(t(0x17, "7001010000Z"), None);
        assert_eq!(t(0x18, "20381319031408Z"), None);
        assert_eq!(not_after(&[0x30, 0x82, 0xff]), None);
    }
}
