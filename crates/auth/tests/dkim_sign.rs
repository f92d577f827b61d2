//! Keys and signing: generated key files (modes, PEM PKCS#8, the TXT record), signatures made by
//! mailroom that dkimpy verifies (ed25519-sha256 and rsa-sha256, relaxed/relaxed, over-signed headers,
//! t=), and that mailroom's own streaming verifier passes whatever the chunking.

mod dkim_support;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mailroom_auth::dkim::{sign_message, DkimSigner, DkimStatus, DkimVerifier};
use mailroom_auth::keys::{generate, KeyAlgorithm, KeyStore, TXT_STRING_MAX};

use dkim_support::{dkimpy_verify, no_dns, Keys};

const MESSAGE: &[u8] = b"From: Alice <alice@example.org>\r\n\
To: bob@example.net\r\n\
Cc: carol@example.net\r\n\
Subject: the   plan\r\n\
Date: Mon, 30 Nov 2026 18:00:00 +0000\r\n\
Message-ID: <1@example.org>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
X-Not-Signed: whatever\r\n\
\r\n\
Hello Bob,\r\n\
\r\n\
trailing spaces   \r\n\
  \r\n\
\t\r\n";

fn records(store: &KeyStore) -> Vec<(String, String)> {
    store.keys().iter().map(|k| (k.record_name(), k.record_value())).collect()
}

fn sign(store: &Arc<KeyStore>, message: &[u8], chunk: usize) -> Vec<u8> {
    let mut s = DkimSigner::new(store.clone());
    for piece in message.chunks(chunk) {
        s.handle_chunk(piece);
    }
    s.finish(SystemTime::now()).expect("signed")
}

#[test]
fn generated_keys_are_private_files_and_print_their_record() {
    let dir = tempfile::tempdir().unwrap();
    let ed = generate(dir.path(), "Example.ORG", "ed1", KeyAlgorithm::Ed25519).unwrap();
    let rsa = generate(dir.path(), "example.org", "rsa1", KeyAlgorithm::Rsa).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(ed.path, dir.path().join("dkim/example.org/ed1.key"));
    assert_eq!(mode(&ed.path), 0o600);
    assert_eq!(mode(&rsa.path), 0o600);
    assert_eq!(mode(&dir.path().join("dkim/example.org")), 0o700);
    assert_eq!(mode(&dir.path().join("dkim")), 0o700);
    let pem = std::fs::read_to_string(&ed.path).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
    assert_eq!(ed.record_name(), "ed1._domainkey.example.org.");
    let value = ed.record_value();
    assert!(value.starts_with("v=DKIM1; k=ed25519; p="), "{value}");
    // 32 octets of public key: 44 base64 characters.
    assert_eq!(value.len(), "v=DKIM1; k=ed25519; p=".len() + 44);
    let line = rsa.zone_line();
    assert!(line.starts_with("rsa1._domainkey.example.org. IN TXT \"v=DKIM1; k=rsa; p=MIIBIjANBg"), "{line}");
    // A 2048-bit key's record is longer than one TXT string: split, each string at most 255 octets.
    let strings: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
    assert!(strings.len() >= 2, "{line}");
    assert!(strings.iter().all(|s| s.len() <= TXT_STRING_MAX));
    assert_eq!(strings.concat(), rsa.record_value());
    // The public key is the one openssl derives from the file.
    let out = std::process::Command::new("openssl")
        .args(["pkey", "-in", rsa.path.to_str().unwrap(), "-pubout", "-outform", "DER"])
        .output()
        .expect("openssl");
    assert!(out.status.success());
    assert!(rsa.record_value().ends_with(&mailroom_proto::base64::encode(&out.stdout)));
    // Never replaced.
    let again = generate(dir.path(), "example.org", "ed1", KeyAlgorithm::Rsa);
    assert!(again.is_err());
    assert_eq!(std::fs::read_to_string(&ed.path).unwrap(), pem);
}

#[test]
fn bad_domains_and_selectors_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (domain, selector) in
        [("../etc", "s"), ("example.org", "../x"), ("example.org", "a/b"), ("localhost", "s"), ("example.org", "")]
    {
        assert!(generate(dir.path(), domain, selector, KeyAlgorithm::Ed25519).is_err(), "{domain} {selector}");
    }
    assert!(!dir.path().join("etc").exists());
}

#[test]
fn signatures_verify_with_dkimpy() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), "example.org", "ed", KeyAlgorithm::Ed25519).unwrap();
    generate(dir.path(), "example.org", "rsa", KeyAlgorithm::Rsa).unwrap();
    let (store, errors) = KeyStore::load(dir.path());
    assert!(errors.is_empty(), "{errors:?}");
    let store = Arc::new(store);
    let sigs = sign(&store, MESSAGE, MESSAGE.len());
    let text = String::from_utf8(sigs.clone()).unwrap();
    assert_eq!(text.matches("DKIM-Signature:").count(), 2, "{text}");
    assert!(text.contains("a=ed25519-sha256") && text.contains("a=rsa-sha256"), "{text}");
    assert!(text.contains("c=relaxed/relaxed") && text.contains("t="), "{text}");
    let signed = [&sigs[..], MESSAGE].concat();
    let (ok, out) = dkimpy_verify(&signed, &records(&store));
    assert!(ok, "dkimpy: {out}\n{text}");
    // Each alone too.
    for sig in text.split("DKIM-Signature:").filter(|s| !s.is_empty()) {
        let one = [format!("DKIM-Signature:{sig}").as_bytes(), MESSAGE].concat();
        let (ok, out) = dkimpy_verify(&one, &records(&store));
        assert!(ok, "dkimpy on one signature: {out}\n{sig}");
    }
}

#[tokio::test]
async fn signatures_verify_with_our_verifier_and_added_headers_break_them() {
    let dir = tempfile::tempdir().unwrap();
    let key = generate(dir.path(), "example.org", "ed", KeyAlgorithm::Ed25519).unwrap();
    let keys = Keys::with(&[(key.record_name().as_str(), key.record_value().as_str())]);
    let store = Arc::new(KeyStore::load(dir.path()).0);
    // The signer's chunking does not matter.
    for chunk in [1, 2, 5, 64, MESSAGE.len()] {
        let signed = [sign(&store, MESSAGE, chunk), MESSAGE.to_vec()].concat();
        let mut v = DkimVerifier::new();
        v.handle_chunk(&signed);
        let input = v.finish_body();
        let results = input.prepare().verify_dkim(&no_dns(), Some(&keys)).await.1;
        assert_eq!(results[0].status, DkimStatus::Pass, "chunk {chunk}: {results:?}");
    }
    // Over-signing: a second From, Subject or To added in transit fails the signature.
    let sig = sign(&store, MESSAGE, MESSAGE.len());
    for added in [
        "From: mallory@evil.example\r\n",
        "Subject: pay now\r\n",
        "To: x@evil.example\r\n",
        "Reply-To: x@evil.example\r\n",
    ] {
        let forged = [&sig[..], added.as_bytes(), MESSAGE].concat();
        let (ok, out) = dkimpy_verify(&forged, &[(key.record_name(), key.record_value())]);
        assert!(!ok, "dkimpy accepted an added {added:?}: {out}");
        let mut v = DkimVerifier::new();
        v.handle_chunk(&forged);
        let input = v.finish_body();
        let results = input.prepare().verify_dkim(&no_dns(), Some(&keys)).await.1;
        assert_eq!(results[0].status, DkimStatus::Fail, "{added:?}: {results:?}");
    }
}

#[test]
fn no_key_for_the_from_domain_means_no_signature() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), "example.com", "ed", KeyAlgorithm::Ed25519).unwrap();
    let store = Arc::new(KeyStore::load(dir.path()).0);
    assert!(sign(&store, MESSAGE, 7).is_empty());
    // Signing for a given domain (DSNs) ignores From.
    let sig = sign_message(store, "example.com", MESSAGE, SystemTime::now()).unwrap();
    assert!(String::from_utf8(sig).unwrap().contains("d=example.com;"));
}

#[test]
fn the_newest_key_per_algorithm_signs() {
    let dir = tempfile::tempdir().unwrap();
    let old = generate(dir.path(), "example.org", "zz-old", KeyAlgorithm::Ed25519).unwrap();
    generate(dir.path(), "example.org", "aa-new", KeyAlgorithm::Ed25519).unwrap();
    let past = SystemTime::now() - Duration::from_secs(86_400);
    std::fs::File::options().write(true).open(&old.path).unwrap().set_modified(past).unwrap();
    let (store, _) = KeyStore::load(dir.path());
    let chosen = store.signing_keys("EXAMPLE.org");
    assert_eq!(chosen.len(), 1);
    assert_eq!(chosen[0].selector, "aa-new");
}

#[test]
fn keys_made_by_openssl_load_and_sign() {
    // An admin's own keys: openssl's PKCS#8 (v1 for ed25519, without the public key) in the same place.
    let dir = tempfile::tempdir().unwrap();
    let domain_dir = dir.path().join("dkim/example.org");
    std::fs::create_dir_all(&domain_dir).unwrap();
    for (name, args) in [
        ("osl-ed.key", &["genpkey", "-algorithm", "ed25519"][..]),
        ("osl-rsa.key", &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"][..]),
    ] {
        let out = std::process::Command::new("openssl").args(args).output().expect("openssl");
        assert!(out.status.success());
        std::fs::write(domain_dir.join(name), out.stdout).unwrap();
    }
    let (store, errors) = KeyStore::load(dir.path());
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(store.keys().len(), 2);
    let store = Arc::new(store);
    let sigs = sign(&store, MESSAGE, 9);
    let (ok, out) = dkimpy_verify(&[&sigs[..], MESSAGE].concat(), &records(&store));
    assert!(ok, "dkimpy: {out}\n{}", String::from_utf8_lossy(&sigs));
    // A file that is no key is reported, and signs nothing.
    std::fs::write(domain_dir.join("junk.key"), "not a key").unwrap();
    let (store, errors) = KeyStore::load(dir.path());
    assert_eq!((store.keys().len(), errors.len()), (2, 1), "{errors:?}");
}
