//! STARTTLS injection.
//!
//! Command injection (server side, CVE-2011-0411, Postfix; the same bug class in Exim, Cyrus, qmail
//! patches and, again, in 2021 in many servers, "Why TLS is better without STARTTLS", Poddebniak et
//! al., USENIX Security 2021): a man in the middle appends plaintext commands to the client's
//! `STARTTLS`; a server that keeps them in its input buffer runs them inside the TLS session as if the
//! client had sent them there. mailroom drops every byte that arrived with or after `STARTTLS<CRLF>`.
//!
//! Response injection (client side, the same paper; CVE-2021-33515 Dovecot, CVE-2021-38371 Exim as a
//! client): a man in the middle appends replies to the server's 220. The client's own test lives with
//! the client (`crates/client`); the case here drives the `mailroom send` binary against a scripted
//! server.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::common::*;
use crate::support::*;

/// A rustls client trusting the server's self-signed certificate (`<data>/tls/cert.pem`).
fn tls_config(server: &Server) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(server.data.join("tls/cert.pem")).expect("the server's cert.pem") {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(cfg)
}

/// Reads one reply byte by byte (so nothing after it is taken from the socket); None on EOF or timeout.
fn read_reply_raw(r: &mut impl Read) -> Option<String> {
    let mut all = String::new();
    loop {
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            match r.read(&mut b) {
                Ok(1) => line.push(b[0]),
                _ => return None,
            }
        }
        let text = String::from_utf8_lossy(&line).into_owned();
        all.push_str(&text);
        if text.as_bytes().get(3) != Some(&b'-') {
            return Some(all);
        }
    }
}

/// Plaintext up to EHLO; returns the socket.
fn plain_ehlo(server: &Server) -> TcpStream {
    let mut tcp = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    assert!(read_reply_raw(&mut tcp).unwrap().starts_with("220 "));
    tcp.write_all(b"EHLO client.example\r\n").unwrap();
    let ehlo = read_reply_raw(&mut tcp).unwrap();
    assert!(ehlo.contains("STARTTLS"), "STARTTLS offered: {ehlo}");
    tcp
}

fn handshake(server: &Server, tcp: TcpStream) -> StreamOwned<ClientConnection, TcpStream> {
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(tls_config(server), name).unwrap();
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).expect("TLS handshake");
    }
    tls
}

/// CVE-2011-0411 with a long tail: more injected plaintext than the server hands its session at once (it
/// feeds what it read in 4 KiB slices), all read together with STARTTLS. The server's read buffer is grown to
/// 64 KiB first, so that the whole packet arrives in one read; none of the tail may run under TLS.
#[test]
fn cve_2011_0411_starttls_injection_longer_than_a_slice() {
    let server = server();
    let mut tcp = plain_ehlo(&server);
    // A read that fills the server's first 2 KiB buffer makes it grow to 64 KiB.
    tcp.write_all(&b"NOOP\r\n".repeat(700)).unwrap();
    for _ in 0..700 {
        let r = read_reply_raw(&mut tcp).unwrap();
        assert!(r.starts_with("250"), "{r}");
    }
    let mut packet = b"STARTTLS\r\n".to_vec();
    packet.extend(b"NOOP\r\n".repeat(3000));
    packet.extend_from_slice(b"MAIL FROM:<attacker@evil.example>\r\n");
    tcp.write_all(&packet).unwrap();
    let r = read_reply_raw(&mut tcp).unwrap();
    assert!(r.starts_with("220 2.0.0"), "STARTTLS: {r}");
    let mut tls = handshake(&server, tcp);
    tls.sock.set_read_timeout(Some(Duration::from_millis(1000))).unwrap();
    let mut extra = [0u8; 512];
    match tls.read(&mut extra) {
        Ok(n) => panic!("an injected command was answered under TLS: {:?}", String::from_utf8_lossy(&extra[..n])),
        Err(e) => {
            assert!(matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut), "TLS read: {e}")
        }
    }
    tls.sock.set_read_timeout(Some(WAIT)).unwrap();
    tls.write_all(b"NOOP\r\n").unwrap();
    let r = read_reply_raw(&mut tls).unwrap();
    assert!(r.starts_with("250"), "the TLS session works: {r}");
    assert_still_serves(&server);
}

/// CVE-2011-0411 (Postfix; also Exim, Cyrus, Ipswitch and others, 2011; again in 2021): commands
/// pipelined behind `STARTTLS` in the same plaintext packet are never answered under TLS. After the
/// handshake the session is new: it needs EHLO again (RFC 3207 §4.2) and does not offer STARTTLS.
#[test]
fn cve_2011_0411_starttls_command_injection() {
    let server = server();
    let mut tcp = plain_ehlo(&server);
    tcp.write_all(
        b"STARTTLS\r\nMAIL FROM:<attacker@evil.example>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n\
          Subject: injected\r\n\r\nINJECTED-PAYLOAD\r\n.\r\nNOOP\r\n",
    )
    .unwrap();
    let r = read_reply_raw(&mut tcp).unwrap();
    assert!(r.starts_with("220 2.0.0"), "STARTTLS: {r}");
    let mut tls = handshake(&server, tcp);
    tls.sock.set_read_timeout(Some(Duration::from_millis(1000))).unwrap();
    let mut extra = [0u8; 512];
    match tls.read(&mut extra) {
        Ok(n) => panic!(
            "an injected command was answered under TLS: {:?}\n{}",
            String::from_utf8_lossy(&extra[..n]),
            server.log_text()
        ),
        Err(e) => {
            assert!(matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut), "TLS read: {e}")
        }
    }
    tls.sock.set_read_timeout(Some(WAIT)).unwrap();
    tls.write_all(b"MAIL FROM:<a@client.example>\r\n").unwrap();
    let r = read_reply_raw(&mut tls).unwrap();
    assert!(r.starts_with("503 5.5.1"), "the session forgot the plaintext EHLO: {r}");
    tls.write_all(b"EHLO client.example\r\n").unwrap();
    let r = read_reply_raw(&mut tls).unwrap();
    assert!(r.starts_with("250") && !r.contains("STARTTLS"), "a fresh EHLO, STARTTLS not offered again: {r}");
    // The TLS session delivers normally.
    for (line, want) in [
        ("MAIL FROM:<a@client.example>", "250 2.1.0"),
        ("RCPT TO:<alice@example.test>", "250 2.1.5"),
        ("DATA", "354"),
        ("Subject: under TLS\r\n\r\nhello\r\n.", "250 2.0.0"),
        ("QUIT", "221"),
    ] {
        tls.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        let r = read_reply_raw(&mut tls).unwrap();
        assert!(r.starts_with(want), "{line:?} -> {r}");
    }
    assert_bob_untouched(&server);
    assert_nowhere(&server, "INJECTED-PAYLOAD");
    assert_eq!(messages(&server, ALICE).len(), 1);
    assert_still_serves(&server);
}

/// CVE-2011-0411, second shape: the injected command arrives in its own packet right behind
/// `STARTTLS`, possibly after the server has read the first. Either the server dropped it with the
/// plaintext buffer, or it reaches the TLS layer as garbage and the handshake fails: in no case is it
/// answered, in plaintext or under TLS.
#[test]
fn cve_2011_0411_starttls_injection_in_second_packet() {
    let server = server();
    let mut tcp = plain_ehlo(&server);
    tcp.write_all(b"STARTTLS\r\n").unwrap();
    tcp.write_all(b"RCPT TO:<bob@example.test>\r\n").unwrap();
    let r = read_reply_raw(&mut tcp).unwrap();
    assert!(r.starts_with("220 2.0.0"), "STARTTLS: {r}");
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(tls_config(&server), name).unwrap();
    let mut tls = StreamOwned::new(conn, tcp);
    let mut ok = true;
    while ok && tls.conn.is_handshaking() {
        ok = tls.conn.complete_io(&mut tls.sock).is_ok();
    }
    if ok {
        tls.sock.set_read_timeout(Some(Duration::from_millis(800))).unwrap();
        let mut extra = [0u8; 512];
        if let Ok(n) = tls.read(&mut extra) {
            assert!(n == 0, "the injected RCPT was answered under TLS: {:?}", String::from_utf8_lossy(&extra[..n]));
        }
    }
    assert_bob_untouched(&server);
    assert_still_serves(&server);
}

/// STARTTLS in the middle of a transaction is refused (RFC 3207 §4.2 makes the server forget the
/// transaction; refusing keeps a half-built plaintext envelope from crossing into TLS at all).
#[test]
fn starttls_inside_a_transaction_is_refused() {
    let server = server();
    let mut c = ehlo(&server);
    expect_reply(&mut c, "MAIL FROM:<a@client.example>", 250, "2.1.0");
    expect_reply(&mut c, "STARTTLS", 503, "5.5.1");
    expect_reply(&mut c, "RSET", 250, "2.0.0");
    c.expect("QUIT", 221);
    assert_still_serves(&server);
}

/// Response injection, client side ("Why TLS is better without STARTTLS", 2021: CVE-2021-33515 Dovecot,
/// CVE-2021-38371 Exim's client, and most mail clients): a man in the middle sends a forged reply in the
/// same plaintext packet as the 220 to STARTTLS. A client that keeps it buffered takes it, under TLS, as
/// the server's answer. `mailroom send --starttls` must refuse at once: no handshake, no MAIL, and the
/// forged reply never shown as a reply. The library-level mirror of this case is
/// `crates/client/tests/tls.rs::bytes_behind_the_starttls_220_are_refused`.
#[test]
fn starttls_response_injection_against_mailroom_send() {
    use std::io::BufRead;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let script = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = std::io::BufReader::new(s);
        let mut seen = Vec::new();
        let mut line = String::new();
        w.write_all(b"220 mitm.example ESMTP\r\n").unwrap();
        r.read_line(&mut line).unwrap();
        seen.push(std::mem::take(&mut line));
        w.write_all(b"250-mitm.example\r\n250-PIPELINING\r\n250 STARTTLS\r\n").unwrap();
        r.read_line(&mut line).unwrap();
        seen.push(std::mem::take(&mut line));
        // The 220 and a forged EHLO reply in one write.
        w.write_all(b"220 2.0.0 ready\r\n250-injected.example\r\n250 AUTH PLAIN\r\n").unwrap();
        // Whatever the client does next: a TLS ClientHello starts with 0x16; a command is text.
        let mut rest = Vec::new();
        let _ = r.read_to_end(&mut rest);
        (seen, rest)
    });
    let out = std::process::Command::new(bin())
        .args(["send", "--server", &addr.to_string(), "--from", "a@client.example", "--to", "bob@example.test"])
        .args(["--subject", "injected", "--body", "hello", "--starttls", "--insecure", "--timeout", "5s", "-v"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let (seen, rest) = script.join().unwrap();
    let transcript = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(seen[0].starts_with("EHLO ") && seen[1].starts_with("STARTTLS"), "{seen:?}");
    assert!(transcript.contains("S: 220 2.0.0 ready"), "the -v transcript shows the replies:\n{transcript}");
    assert!(!out.status.success(), "mailroom send went on after a forged reply:\n{transcript}");
    assert!(rest.is_empty(), "the client sent more after the injected 220: {:?}", String::from_utf8_lossy(&rest));
    assert!(
        !transcript.lines().any(|l| l.contains("S:") && l.contains("injected.example")),
        "the forged reply was read as one:\n{transcript}"
    );
}

/// The first bytes of a TLS ClientHello: a handshake record header (type 22, version 3.1) and one byte of
/// its length. A real hello follows with hundreds more bytes; these clients never send them.
const HALF_CLIENT_HELLO: &[u8] = &[0x16, 0x03, 0x01, 0x02];

/// Says STARTTLS without EHLO (allowed on an smtp listener), reads the 220 and sends half a ClientHello.
fn half_starttls(port: u16) -> Smtp {
    let mut c = Smtp::connect(port);
    assert_eq!(c.read_reply().code, 220);
    assert_reply(&c.cmd("STARTTLS"), 220, "2.0.0", "STARTTLS");
    c.send(HALF_CLIENT_HELLO);
    c
}

/// Half a ClientHello on the implicit-TLS port.
fn half_implicit_tls(port: u16) -> Smtp {
    let mut c = Smtp::connect(port);
    c.send(HALF_CLIENT_HELLO);
    c
}

/// Connects to the smtp listener until a greeting comes (the server notices the previous client's close
/// asynchronously): the 220 within 1 s, or the last refusal.
fn greeted_within_a_second(server: &Server) -> Result<(), Reply> {
    let start = Instant::now();
    loop {
        let mut c = Smtp::connect(server.port);
        let r = c.read_reply();
        if r.code == 220 {
            // Hand the slot back before the caller's next connection.
            c.expect("QUIT", 221);
            assert!(c.wait_eof());
            std::thread::sleep(Duration::from_millis(100)); // the slot is freed just after the close
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(1) {
            return Err(r);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Issue 10, finding 2: half-started TLS handshakes held their slots. A client that says STARTTLS, writes
/// a few bytes of a ClientHello and closes left its session polling the socket every 5 ms until
/// `command_timeout` (5 minutes): 50 of them locked an address out. The handshake wait notices EOF now:
/// with `max_connections_per_ip = 1` the address gets in again at once.
#[test]
fn half_started_tls_handshakes_hold_their_slots_after_starttls() {
    let server = server_with(&limits("max_connections_per_ip = 1"));
    let c = half_starttls(server.port);
    c.shutdown_write();
    drop(c);
    if let Err(r) = greeted_within_a_second(&server) {
        panic!("the closed half handshake still holds the address's slot: {r:?}\n{}", log_tail(&server));
    }
    assert_still_serves(&server);
}

/// Finding 2 on the implicit-TLS (submissions) port: half a ClientHello, then close. The per-address
/// slot is shared by every listener, so the smtp listener shows whether it was freed.
#[test]
fn half_started_tls_handshakes_hold_their_slots_implicit_tls() {
    let (server, tls_port) = server_with_implicit_tls("max_connections_per_ip = 1");
    let c = half_implicit_tls(tls_port);
    std::thread::sleep(Duration::from_millis(100));
    c.shutdown_write();
    drop(c);
    if let Err(r) = greeted_within_a_second(&server) {
        panic!("the closed half handshake still holds the address's slot: {r:?}\n{}", log_tail(&server));
    }
    assert_still_serves(&server);
}

/// Finding 2, a client that stalls instead of closing: the handshake has its own short timeout
/// (`tls_handshake_timeout`), not `command_timeout` (5 minutes here). Both ways into TLS.
#[test]
fn half_started_tls_handshakes_stall_until_the_handshake_timeout() {
    let (server, tls_port) = server_with_implicit_tls("tls_handshake_timeout = \"1s\"\ncommand_timeout = \"5m\"");
    let start = Instant::now();
    let mut stalled = [half_starttls(server.port), half_implicit_tls(tls_port)];
    for (i, c) in stalled.iter_mut().enumerate() {
        assert!(c.wait_eof(), "stalled handshake {i} was never dropped\n{}", log_tail(&server));
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(900), "dropped before the handshake timeout: {took:?}");
        assert!(took < Duration::from_secs(3), "dropped after {took:?}, not at the 1 s handshake timeout");
    }
    assert_still_serves(&server);
}

/// Finding 2: SIGTERM waited for half-started handshakes (35 s for one: the whole shutdown grace, then
/// more). Shutdown does not wait for a handshake: with stalled ones from both ways into TLS and the
/// default 30 s grace, the server exits within 3 s, with status 0.
#[test]
fn half_started_tls_handshakes_do_not_delay_sigterm() {
    let (mut server, tls_port) = server_with_implicit_tls("");
    let _stalled: Vec<Smtp> = (0..3).flat_map(|_| [half_starttls(server.port), half_implicit_tls(tls_port)]).collect();
    std::thread::sleep(Duration::from_millis(200));
    server.sigterm();
    let start = Instant::now();
    let status = server.wait_exit(Duration::from_secs(3));
    let log = server.log_text();
    let status = status.unwrap_or_else(|| panic!("still running 3 s after SIGTERM\n{log}"));
    assert!(status.success(), "exit status {status}\n{log}");
    eprintln!("exited {:?} after SIGTERM with 6 stalled handshakes", start.elapsed());
}

/// Finding 2: 1,000 stalled handshakes used ~21% of a core, each polling every 5 ms. The wait is for
/// readiness now: 300 stalled handshakes cost (next to) no CPU over 2 s.
#[test]
fn half_started_tls_handshakes_do_not_poll() {
    let server = server_with(&limits("max_connections_per_ip = 0"));
    let _stalled: Vec<Smtp> = (0..300).map(|_| half_starttls(server.port)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(server.pid());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(server.pid()) - before;
    eprintln!("300 stalled handshakes: {used} CPU ticks in 2 s");
    assert!(used <= 5, "the server used {used}0 ms of CPU in 2 s waiting on stalled handshakes");
    assert_still_serves(&server);
}
