//! DKIM signing keys on disk: `<data-dir>/dkim/<domain>/<selector>.key`, PEM PKCS#8 (`PRIVATE KEY`), mode
//! 0600 in directories of mode 0700. Generation (ed25519 with ring, RSA 2048 with the `rsa` crate, no
//! external tool), loading, the choice of keys for a domain, and the DNS TXT record each key needs.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use mail_auth::common::crypto::Algorithm;
use mail_auth::common::crypto::{DkimKey, Ed25519Key, RsaKey, Sha256};
use rsa::pkcs8::{EncodePrivateKey, LineEnding};

/// RSA keys are generated with this many bits (RFC 8301 §3.2: signers MUST use at least 1024 and SHOULD
/// use at least 2048).
pub const RSA_BITS: usize = 2048;

/// A TXT character-string holds at most 255 octets (RFC 1035 §3.3.14); longer records are split.
pub const TXT_STRING_MAX: usize = 255;

/// The longest selector accepted (one DNS label, RFC 1035 §2.3.4).
const LABEL_MAX: usize = 63;

/// The directory under the data directory that holds the keys.
pub const DKIM_DIR: &str = "dkim";

/// The signing algorithms mailroom makes keys for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyAlgorithm {
    /// ed25519-sha256 (RFC 8463).
    Ed25519,
    /// rsa-sha256 (RFC 6376, RFC 8301).
    Rsa,
}

impl KeyAlgorithm {
    /// The name in the DNS record's `k=` and on the command line: `ed25519`, `rsa`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::Ed25519 => "ed25519",
            KeyAlgorithm::Rsa => "rsa",
        }
    }

    /// The signature algorithm (`a=`) this key signs with.
    pub fn signature_algorithm(self) -> Algorithm {
        match self {
            KeyAlgorithm::Ed25519 => Algorithm::Ed25519Sha256,
            KeyAlgorithm::Rsa => Algorithm::RsaSha256,
        }
    }
}

impl std::str::FromStr for KeyAlgorithm {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        match s.to_ascii_lowercase().as_str() {
            "ed25519" => Ok(KeyAlgorithm::Ed25519),
            "rsa" => Ok(KeyAlgorithm::Rsa),
            _ => Err(KeyError::Invalid(format!("unknown algorithm {s:?} (ed25519 or rsa)"))),
        }
    }
}

impl std::fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What can go wrong with keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Invalid(String),
    #[error("a key for selector {selector:?} of {domain} exists already ({path})")]
    Exists { domain: String, selector: String, path: String },
    #[error("{path}: {message}")]
    Unreadable { path: String, message: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io { path: path.display().to_string(), source }
}

/// One signing key: where it is, what it is for, and the key itself.
pub struct SigningKey {
    /// The signing domain (`d=`), lowercase A-labels.
    pub domain: String,
    /// The selector (`s=`).
    pub selector: String,
    pub algorithm: KeyAlgorithm,
    pub path: PathBuf,
    /// The key file's modification time: the newest key per algorithm signs.
    pub modified: SystemTime,
    /// The public key as the record's `p=` carries it (ed25519: the 32 octets; RSA: SubjectPublicKeyInfo).
    public: Vec<u8>,
    pub(crate) key: DkimKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        f.debug_struct("SigningKey")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("algorithm", &self.algorithm)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Reads a key file (`<domain>/<selector>.key`: the names give domain and selector).
    pub fn load(path: &Path, domain: &str, selector: &str) -> Result<SigningKey, KeyError> {
        let text = fs::read_to_string(path).map_err(io_error(path))?;
        let modified = fs::metadata(path).and_then(|m| m.modified()).map_err(io_error(path))?;
        let unreadable = |message: String| KeyError::Unreadable { path: path.display().to_string(), message };
        let der = pem_private_key(&text).ok_or_else(|| unreadable("not a PEM PKCS#8 private key".into()))?;
        let (algorithm, key, public) = if contains(&der, OID_ED25519) {
            let key = Ed25519Key::from_pkcs8_maybe_unchecked_der(&der).map_err(|e| unreadable(e.to_string()))?;
            let public = key.public_key();
            (KeyAlgorithm::Ed25519, DkimKey::Ed25519(key), public)
        } else if contains(&der, OID_RSA) {
            let key = RsaKey::<Sha256>::from_key_der(rustls_der(&der)).map_err(|e| unreadable(e.to_string()))?;
            let public = rsa_spki(&key.public_key());
            (KeyAlgorithm::Rsa, DkimKey::Rsa(key), public)
        } else {
            return Err(unreadable("neither an ed25519 nor an RSA key".into()));
        };
        Ok(SigningKey {
            domain: domain.to_owned(),
            selector: selector.to_owned(),
            algorithm,
            path: path.to_owned(),
            modified,
            public,
            key,
        })
    }

    /// The DNS name of the key record: `<selector>._domainkey.<domain>.` (RFC 6376 §3.6.2.1).
    pub fn record_name(&self) -> String {
        format!("{}._domainkey.{}.", self.selector, self.domain)
    }

    /// The record's text: `v=DKIM1; k=<algorithm>; p=<base64 public key>` (RFC 6376 §3.6.1, RFC 8463 §4).
    pub fn record_value(&self) -> String {
        format!("v=DKIM1; k={}; p={}", self.algorithm, mailroom_proto::base64::encode(&self.public))
    }

    /// The record as a zone file line: name, `IN TXT` and the value as quoted strings of at most
    /// [`TXT_STRING_MAX`] octets each (resolvers join them).
    pub fn zone_line(&self) -> String {
        format!("{} IN TXT {}", self.record_name(), txt_strings(&self.record_value()))
    }
}

/// `value` as zone-file character-strings: `"..." "..."`, each at most [`TXT_STRING_MAX`] octets (the
/// record is ASCII without quotes or backslashes, so no escaping is needed).
pub fn txt_strings(value: &str) -> String {
    let parts: Vec<String> =
        value.as_bytes().chunks(TXT_STRING_MAX).map(|c| format!("\"{}\"", String::from_utf8_lossy(c))).collect();
    parts.join(" ")
}

/// The keys under `<data-dir>/dkim`, read once (a new [`KeyStore`] rereads them).
#[derive(Debug, Default)]
pub struct KeyStore {
    keys: Vec<Arc<SigningKey>>,
}

impl KeyStore {
    /// Reads every `<domain>/<selector>.key` under `<data_dir>/dkim` (none there: an empty store).
    /// Files that cannot be read are returned as errors next to the store; they sign nothing.
    pub fn load(data_dir: &Path) -> (KeyStore, Vec<KeyError>) {
        let mut keys = Vec::new();
        let mut errors = Vec::new();
        let root = data_dir.join(DKIM_DIR);
        let Ok(domains) = fs::read_dir(&root) else { return (KeyStore::default(), errors) };
        for domain_dir in domains.flatten() {
            let Some(domain) = domain_dir.file_name().to_str().map(str::to_owned) else { continue };
            if normalize_domain(&domain).ok().as_deref() != Some(domain.as_str()) {
                continue;
            }
            let Ok(files) = fs::read_dir(domain_dir.path()) else { continue };
            for file in files.flatten() {
                let name = file.file_name();
                let Some(selector) = name.to_str().and_then(|n| n.strip_suffix(".key")) else { continue };
                if check_selector(selector).is_err() {
                    continue;
                }
                match SigningKey::load(&file.path(), &domain, selector) {
                    Ok(k) => keys.push(Arc::new(k)),
                    Err(e) => errors.push(e),
                }
            }
        }
        keys.sort_by(|a, b| (&a.domain, &a.selector).cmp(&(&b.domain, &b.selector)));
        (KeyStore { keys }, errors)
    }

    /// Every key, by domain then selector.
    pub fn keys(&self) -> &[Arc<SigningKey>] {
        &self.keys
    }

    /// The keys that sign mail from `domain` (compared in lowercase A-label form): per algorithm the
    /// newest key file (latest modification time; the greater selector on a tie), ed25519 first.
    pub fn signing_keys(&self, domain: &str) -> Vec<Arc<SigningKey>> {
        let Ok(domain) = normalize_domain(domain) else { return Vec::new() };
        let mut chosen: Vec<Arc<SigningKey>> = Vec::new();
        for key in self.keys.iter().filter(|k| k.domain == domain) {
            match chosen.iter_mut().find(|c| c.algorithm == key.algorithm) {
                Some(c) if (key.modified, &key.selector) > (c.modified, &c.selector) => *c = key.clone(),
                Some(_) => {}
                None => chosen.push(key.clone()),
            }
        }
        chosen.sort_by_key(|k| k.algorithm);
        chosen
    }

    /// True when no key was found.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Makes a new key for `domain` and `selector` in `<data_dir>/dkim/<domain>/<selector>.key` (mode 0600,
/// directories 0700) and loads it. Refuses to replace an existing key.
pub fn generate(
    data_dir: &Path,
    domain: &str,
    selector: &str,
    algorithm: KeyAlgorithm,
) -> Result<SigningKey, KeyError> {
    let domain = normalize_domain(domain)?;
    check_selector(selector)?;
    let root = data_dir.join(DKIM_DIR);
    let dir = root.join(&domain);
    create_private_dir(&root)?;
    create_private_dir(&dir)?;
    let path = dir.join(format!("{selector}.key"));
    if path.exists() {
        return Err(KeyError::Exists { domain, selector: selector.to_owned(), path: path.display().to_string() });
    }
    let pem = match algorithm {
        KeyAlgorithm::Ed25519 => ed25519_pem()?,
        KeyAlgorithm::Rsa => rsa_pem()?,
    };
    write_new(&path, pem.as_bytes())?;
    SigningKey::load(&path, &domain, selector)
}

fn ed25519_pem() -> Result<String, KeyError> {
    let der = Ed25519Key::generate_pkcs8().map_err(|e| KeyError::Invalid(format!("ed25519 key generation: {e}")))?;
    Ok(pem_encode("PRIVATE KEY", &der))
}

fn rsa_pem() -> Result<String, KeyError> {
    let mut rng = rsa::rand_core::OsRng;
    let key = rsa::RsaPrivateKey::new(&mut rng, RSA_BITS)
        .map_err(|e| KeyError::Invalid(format!("RSA key generation: {e}")))?;
    let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| KeyError::Invalid(format!("RSA key encoding: {e}")))?;
    Ok(pem.to_string())
}

/// Creates a directory of mode 0700 when missing, fsynced into its parent (a key acknowledged survives a
/// power cut).
fn create_private_dir(dir: &Path) -> Result<(), KeyError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new().mode(0o700).create(dir).map_err(io_error(dir))?;
    if let Some(parent) = dir.parent() {
        fs::File::open(parent).and_then(|d| d.sync_all()).map_err(io_error(parent))?;
    }
    Ok(())
}

/// Writes a new file of mode 0600 through a temporary name (fsynced, renamed, directory fsynced): a
/// crash leaves the whole key or none.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    let tmp = path.with_extension("key.tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_error(&tmp))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(io_error(&tmp))?;
    fs::rename(&tmp, path).map_err(io_error(path))?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(dir))?;
    }
    Ok(())
}

/// A domain as keys are filed under: lowercase A-labels (IDNA), LDH labels, at least two labels.
pub fn normalize_domain(domain: &str) -> Result<String, KeyError> {
    let bad = || KeyError::Invalid(format!("not a domain name: {domain:?}"));
    let ascii = idna::domain_to_ascii(domain.trim_end_matches('.')).map_err(|_| bad())?;
    let labels: Vec<&str> = ascii.split('.').collect();
    let ok_label = |l: &&str| {
        !l.is_empty()
            && l.len() <= LABEL_MAX
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if labels.len() < 2 || !labels.iter().all(ok_label) {
        return Err(bad());
    }
    Ok(ascii)
}

/// A selector: one or more DNS labels of letters, digits and hyphens (RFC 6376 §3.1), used as a file name.
pub fn check_selector(selector: &str) -> Result<(), KeyError> {
    let ok = !selector.is_empty()
        && selector.split('.').all(|l| {
            !l.is_empty() && l.len() <= LABEL_MAX && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && !selector.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(KeyError::Invalid(format!("not a selector: {selector:?} (letters, digits, '-', '.')")))
    }
}

/// id-Ed25519 (RFC 8410) and rsaEncryption (RFC 8017), as DER OBJECT IDENTIFIERs.
const OID_ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
const OID_RSA: &[u8] = &[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn rustls_der(der: &[u8]) -> rustls_pki_types::PrivateKeyDer<'_> {
    rustls_pki_types::PrivateKeyDer::Pkcs8(rustls_pki_types::PrivatePkcs8KeyDer::from(der))
}

/// The body of the first `-----BEGIN PRIVATE KEY-----` block.
fn pem_private_key(text: &str) -> Option<Vec<u8>> {
    let start = text.find("-----BEGIN PRIVATE KEY-----")? + "-----BEGIN PRIVATE KEY-----".len();
    let end = start + text[start..].find("-----END PRIVATE KEY-----")?;
    let b64: String = text[start..end].chars().filter(|c| !c.is_ascii_whitespace()).collect();
    mailroom_proto::base64::decode(&b64)
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = mailroom_proto::base64::encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Wraps a PKCS#1 RSAPublicKey in a SubjectPublicKeyInfo (RFC 5280 §4.1), the form DKIM records carry
/// (what `openssl rsa -pubout` and opendkim-genkey publish).
fn rsa_spki(rsa_public_key: &[u8]) -> Vec<u8> {
    let algorithm = der(0x30, &[OID_RSA, &[0x05, 0x00]].concat());
    let bits = der(0x03, &[&[0x00], rsa_public_key].concat());
    der(0x30, &[algorithm, bits].concat())
}

/// One DER TLV.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(content);
    out
}
