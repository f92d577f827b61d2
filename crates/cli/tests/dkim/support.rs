//! The DKIM test rig: a real DNS server (Debian's `knotd`, on a free port of 127.0.0.1) serving a zone
//! `test.` that holds the TXT records `mailroom dkim keygen` printed, dkimpy (python3-dkim, asking that
//! server through dnspython) as the independent verifier, and opendkim-testmsg as a second signer.
//!
//! Every process a test starts is stopped by its own pid when its guard drops. A missing tool fails the
//! test unless `MAILROOM_SKIP_DKIM=1` is set (CI never sets it).

use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::mailroom;

/// The system Python with dkimpy and dnspython (Debian's python3-dkim), not a pyenv shim.
pub const PYTHON: &str = "/usr/bin/python3";

/// Fails (or, with `MAILROOM_SKIP_DKIM=1`, returns false) when TOOL cannot be run.
pub fn have(tool: &str, probe: &[&str]) -> bool {
    let ok =
        Command::new(tool).args(probe).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("MAILROOM_SKIP_DKIM").is_some(),
            "{tool} is missing: apt-get install knot python3-dkim opendkim-tools (or set MAILROOM_SKIP_DKIM=1)"
        );
        eprintln!("skipping: {tool} missing (MAILROOM_SKIP_DKIM is set)");
    }
    ok
}

/// True when every tool of the rig is there (false only when skipping is allowed).
pub fn have_all() -> bool {
    have(knotd(), &["--version"]) && have(PYTHON, &["-c", "import dkim, dns.resolver"])
}

/// `mailroom dkim keygen DOMAIN --selector S --algorithm A` on DATA: the zone line it printed.
pub fn keygen(data: &Path, domain: &str, selector: &str, algorithm: &str) -> String {
    let out = mailroom(data, &["dkim", "keygen", domain, "--selector", selector, "--algorithm", algorithm]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "keygen: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout.lines().find(|l| !l.starts_with('#')).expect("the record line").to_string()
}

fn knotd() -> &'static str {
    if Path::new("/usr/sbin/knotd").exists() {
        "/usr/sbin/knotd"
    } else {
        "knotd"
    }
}

/// A running `knotd` authoritative for `test.` with the given records, killed on drop.
pub struct Dns {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Dns {
    /// Serves `test.` with RECORDS (zone file lines, e.g. the ones keygen printed) and waits until it
    /// answers.
    pub fn start(records: &[String]) -> Dns {
        let zone = format!(
            "$ORIGIN test.\n$TTL 5\n@ SOA ns.test. hostmaster.test. 1 3600 600 86400 5\n@ NS ns.test.\nns A 127.0.0.1\n{}\n",
            records.join("\n")
        );
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("test.zone"), &zone).unwrap();
            let port = free_udp_tcp_port();
            let d = dir.path().display();
            let conf = format!(
                "server:\n    rundir: \"{d}\"\n    listen: 127.0.0.1@{port}\n\
                 database:\n    storage: \"{d}/db\"\n\
                 template:\n  - id: default\n    storage: \"{d}\"\n    file: \"%s.zone\"\n    zonefile-sync: -1\n    \
                 zonefile-load: whole\n    journal-content: none\n\
                 zone:\n  - domain: test.\n\
                 log:\n  - target: stderr\n    any: warning\n"
            );
            let path = dir.path().join("knot.conf");
            std::fs::write(&path, conf).unwrap();
            let log = std::fs::File::create(dir.path().join("knot.log")).unwrap();
            let child = Command::new(knotd())
                .arg("-c")
                .arg(&path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn knotd");
            let mut dns = Dns { child, port, _dir: dir };
            if dns.wait_answering() {
                return dns;
            }
            let log = std::fs::read_to_string(dns._dir.path().join("knot.log")).unwrap_or_default();
            eprintln!("knotd on port {port} did not answer, retrying:\n{log}");
        }
        panic!("knotd did not start (zone:\n{zone})");
    }

    /// `127.0.0.1:PORT`.
    pub fn server(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    /// SOA queries for `test.` until a NOERROR answer with the query's id comes (bounded).
    fn wait_answering(&mut self) -> bool {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let query: &[u8] = b"\x4d\x52\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04test\x00\x00\x06\x00\x01";
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            let _ = sock.send_to(query, ("127.0.0.1", self.port));
            let mut buf = [0u8; 512];
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                if n > 12 && buf[..2] == query[..2] && buf[2] & 0x80 != 0 && buf[3] & 0x0f == 0 && buf[7] > 0 {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_tcp_port() -> u16 {
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// dkimpy's verdict on the message in FILE (stored form: LF line ends are made CRLF), fetching keys from
/// DNS: every signature must pass. Returns (all passed, what dkimpy said: per signature d=, a=, result).
pub fn dkimpy_verify_file(file: &Path, dns: &Dns) -> (bool, String) {
    let script = "import sys, dkim, dns.resolver\n\
        r = dns.resolver.Resolver(configure=False)\n\
        r.nameservers = ['127.0.0.1']\n\
        r.port = int(sys.argv[1])\n\
        def dnsfunc(name, timeout=5):\n\
        \x20   try:\n\
        \x20       a = r.resolve(name.decode(), 'TXT')\n\
        \x20   except Exception:\n\
        \x20       return None\n\
        \x20   return b''.join(a[0].strings)\n\
        msg = open(sys.argv[2], 'rb').read().replace(b'\\r\\n', b'\\n').replace(b'\\n', b'\\r\\n')\n\
        headers, _ = dkim.rfc822_parse(msg)\n\
        sigs = [dkim.util.parse_tag_value(v.replace(b'\\r\\n', b'')) for n, v in headers if n.lower() == b'dkim-signature']\n\
        res = [dkim.DKIM(msg).verify(idx=i, dnsfunc=dnsfunc) for i in range(len(sigs))]\n\
        for s, ok in zip(sigs, res):\n\
        \x20   print(s[b'd'].decode(), s[b'a'].decode(), ok)\n\
        sys.exit(0 if sigs and all(res) else 1)";
    let out = Command::new(PYTHON)
        .arg("-c")
        .arg(script)
        .arg(dns.port.to_string())
        .arg(file)
        .output()
        .expect("python3 with dkimpy");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}
