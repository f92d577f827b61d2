//! Helpers of the DKIM tests: a TXT cache that stands in for DNS, a resolver that answers nothing, and
//! dkimpy (Debian's python3-dkim, run with /usr/bin/python3) as the independent implementation.
#![allow(dead_code)]

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use mailroom_auth::mail_auth::common::parse::TxtRecordParser;
use mailroom_auth::mail_auth::common::verify::DomainKey;
use mailroom_auth::mail_auth::hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts,
};
use mailroom_auth::mail_auth::{MessageAuthenticator, ResolverCache, Txt};

/// Key records by name (`sel._domainkey.example.org.`), answered without DNS.
#[derive(Default)]
pub struct Keys(Mutex<HashMap<Box<str>, Txt>>);

impl Keys {
    pub fn with(records: &[(&str, &str)]) -> Keys {
        let keys = Keys::default();
        for (name, value) in records {
            let key = DomainKey::parse(value.as_bytes()).expect("a valid key record");
            keys.0.lock().unwrap().insert((*name).into(), Txt::DomainKey(key.into()));
        }
        keys
    }
}

impl ResolverCache<Box<str>, Txt> for Keys {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().get(name).cloned()
    }
    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().remove(name)
    }
    fn insert(&self, key: Box<str>, value: Txt, _valid_until: Instant) {
        self.0.lock().unwrap().insert(key, value);
    }
}

/// A resolver that asks `server` only (one quick attempt).
pub fn authenticator(server: SocketAddr) -> MessageAuthenticator {
    let mut config = ResolverConfig::default();
    let mut udp = ConnectionConfig::udp();
    udp.port = server.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = server.port();
    config.add_name_server(NameServerConfig::new(server.ip(), true, vec![udp, tcp]));
    let mut opts = ResolverOpts::default();
    opts.timeout = std::time::Duration::from_millis(500);
    opts.attempts = 1;
    MessageAuthenticator::new(config, opts).expect("resolver")
}

/// A resolver whose server is a closed UDP port on loopback: every lookup fails (temperror).
pub fn no_dns() -> MessageAuthenticator {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    drop(sock);
    authenticator(addr)
}

/// Runs a Python snippet with dkimpy; `args` are passed as sys.argv[1:]. Panics (the test fails) when
/// python3 or dkimpy is missing.
pub fn python(script: &str, args: &[&str], stdin: &[u8]) -> (bool, Vec<u8>, String) {
    use std::io::Write;
    let mut child = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 (Debian python3-dkim) is needed");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("No module named 'dkim'"), "dkimpy missing: apt-get install python3-dkim");
    (out.status.success(), out.stdout, stderr)
}

/// dkimpy's canonical bodies (`relaxed` or `simple`) of `bodies`, in one run of Python.
pub fn dkimpy_canonical(canon: &str, bodies: &[&[u8]]) -> Vec<Vec<u8>> {
    let script = "import sys, base64, dkim.canonicalization as c\n\
        algo = {'relaxed': c.Relaxed, 'simple': c.Simple}[sys.argv[1]]\n\
        for line in sys.stdin.read().split():\n\
        \x20   print(base64.b64encode(algo.canonicalize_body(base64.b64decode(line))).decode() or '-')";
    let input: Vec<String> = bodies
        .iter()
        .map(|b| mailroom_proto::base64::encode(b))
        .map(|b| if b.is_empty() { "=".repeat(4) } else { b })
        .collect();
    let (ok, out, err) = python(script, &[canon], input.join("\n").as_bytes());
    assert!(ok, "dkimpy failed: {err}");
    let out = String::from_utf8(out).unwrap();
    let canonical: Vec<Vec<u8>> =
        out.lines().map(|l| if l == "-" { Vec::new() } else { mailroom_proto::base64::decode(l).unwrap() }).collect();
    assert_eq!(canonical.len(), bodies.len(), "{out}");
    canonical
}

/// Signs `message` with dkimpy: selector, domain, PEM key file, algorithm (`rsa-sha256`,
/// `ed25519-sha256`, `rsa-sha1`), canonicalisation (`relaxed/simple`...); returns the DKIM-Signature field.
pub fn dkimpy_sign(
    message: &[u8],
    selector: &str,
    domain: &str,
    key_pem: &[u8],
    algorithm: &str,
    canon: &str,
) -> Vec<u8> {
    dkimpy_sign_with(message, selector, domain, key_pem, algorithm, canon, false)
}

/// [`dkimpy_sign`], with `l=` (the body length) when `length` is true.
pub fn dkimpy_sign_with(
    message: &[u8],
    selector: &str,
    domain: &str,
    key_pem: &[u8],
    algorithm: &str,
    canon: &str,
    length: bool,
) -> Vec<u8> {
    let script = "import sys, dkim\n\
        msg = sys.stdin.buffer.read()\n\
        key = open(sys.argv[3], 'rb').read()\n\
        c = sys.argv[5].encode().split(b'/')\n\
        sig = dkim.sign(msg, sys.argv[1].encode(), sys.argv[2].encode(), key, canonicalize=(c[0], c[1]),\n\
            signature_algorithm=sys.argv[4].encode(), include_headers=[b'from', b'to', b'subject', b'date'],\n\
            length=sys.argv[6] == 'l')\n\
        sys.stdout.buffer.write(sig)";
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    std::fs::write(&key, key_pem).unwrap();
    let l = if length { "l" } else { "-" };
    let (ok, out, err) = python(script, &[selector, domain, key.to_str().unwrap(), algorithm, canon, l], message);
    assert!(ok, "dkimpy sign failed: {err}");
    out
}

/// Verifies `message` with dkimpy against `records` (name -> TXT value) as its DNS; true on pass.
pub fn dkimpy_verify(message: &[u8], records: &[(String, String)]) -> (bool, String) {
    let script = "import sys, dkim, json\n\
        recs = json.loads(sys.argv[1])\n\
        def dnsfunc(name, timeout=5):\n\
        \x20   return recs.get(name.decode(), '').encode()\n\
        msg = sys.stdin.buffer.read()\n\
        headers, body = dkim.rfc822_parse(msg)\n\
        n = len([h for h in headers if h[0].lower() == b'dkim-signature'])\n\
        res = [dkim.DKIM(msg).verify(idx=i, dnsfunc=dnsfunc) for i in range(n)]\n\
        print(res)\n\
        sys.exit(0 if n > 0 and all(res) else 1)";
    let json =
        format!("{{{}}}", records.iter().map(|(n, v)| format!("{:?}: {:?}", n, v)).collect::<Vec<_>>().join(", "));
    let (ok, out, err) = python(script, &[&json], message);
    (ok, format!("{}{}", String::from_utf8_lossy(&out), err))
}
