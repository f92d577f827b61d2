"""Real TLS clients against a running mailroom: Python's smtplib and ssl.

    python3 tls_clients.py CASE SMTP_PORT SUBMISSION_PORT SUBMISSIONS_PORT CAFILE

Each case prints what it saw and exits non-zero when the server did not behave.
"""
import smtplib, socket, ssl, sys, time

case, smtp_port, sub_port, subs_port, cafile = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
HOST = "127.0.0.1"


def ctx():
    c = ssl.create_default_context(cafile=cafile)
    return c


def expect(cond, what):
    if not cond:
        print("FAIL:", what)
        sys.exit(1)
    print("ok:", what)


def msg(subject):
    return f"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n"


if case == "submission":
    s = smtplib.SMTP(HOST, sub_port, timeout=10)
    code, ehlo = s.ehlo()
    expect(b"STARTTLS" in ehlo, "STARTTLS offered before TLS")
    expect(b"AUTH" not in ehlo, "AUTH not advertised before TLS")
    code, resp = s.docmd("AUTH", "PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzZWtyZXQ=")
    expect(code == 538 and resp.startswith(b"5.7.11"), f"AUTH before TLS gets 538 5.7.11 ({code} {resp})")
    code, resp = s.docmd("MAIL", "FROM:<alice@example.test>")
    expect(code == 530 and resp.startswith(b"5.7.0"), f"MAIL before AUTH gets 530 5.7.0 ({code} {resp})")
    s.starttls(context=ctx())
    code, ehlo = s.ehlo()
    expect(b"AUTH PLAIN LOGIN" in ehlo and b"STARTTLS" not in ehlo, "after TLS: AUTH offered, STARTTLS not again")
    try:
        s.login("alice@example.test", "wrong")
        expect(False, "a wrong password is refused")
    except smtplib.SMTPAuthenticationError as e:
        expect(e.smtp_code == 535 and e.smtp_error.startswith(b"5.7.8"), f"a wrong password gets 535 5.7.8 ({e})")
    s.login("alice@example.test", "sekret")
    try:
        s.sendmail("bob@example.test", ["bob@example.test"], msg("forged"))
        expect(False, "another user's address as sender is refused")
    except smtplib.SMTPSenderRefused as e:
        expect(e.smtp_code == 553 and e.smtp_error.startswith(b"5.7.1"), f"another user's address gets 553 5.7.1 ({e})")
    refused = s.sendmail("alice@example.test", ["bob@example.test"], msg("via submission"))
    expect(refused == {}, "smtplib starttls() + login() delivers on the submission port")
    # An authenticated user may relay: the message is queued for outbound delivery (the 250 says
    # "queued as"). Unauthenticated relaying is refused: the attack suite's open_relay cases.
    s.mail("alice@example.test")
    code, text = s.rcpt("someone@elsewhere.example")
    expect(code == 250, f"an authenticated user may relay to another domain ({code} {text})")
    code, text = s.data(msg("relay"))
    expect(code == 250 and b"queued as" in text, f"the relayed message is queued ({code} {text})")
    s.quit()

elif case == "submissions":
    s = smtplib.SMTP_SSL(HOST, subs_port, context=ctx(), timeout=10)
    code, ehlo = s.ehlo()
    expect(b"AUTH PLAIN LOGIN" in ehlo and b"STARTTLS" not in ehlo, "implicit TLS: AUTH offered, no STARTTLS")
    s.login("alice@example.test", "sekret")
    expect(s.sendmail("alice@example.test", ["bob@example.test"], msg("via submissions")) == {},
           "SMTP_SSL + login delivers on the submissions port")
    s.quit()

elif case == "tls11":
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    c.set_ciphers("DEFAULT:@SECLEVEL=0")
    c.minimum_version = ssl.TLSVersion.TLSv1_1
    c.maximum_version = ssl.TLSVersion.TLSv1_1
    raw = socket.create_connection((HOST, subs_port), timeout=10)
    try:
        c.wrap_socket(raw)
        expect(False, "a TLS 1.1-only client is refused")
    except ssl.SSLError as e:
        text = str(e).lower()
        # The server's protocol_version alert (70), as OpenSSL reports it.
        expect("protocol version" in text,
               f"a TLS 1.1-only client is refused ({e})")
        print("detail:", e)

elif case == "injection":
    # STARTTLS and further commands in one write: none may be answered after the handshake.
    raw = socket.create_connection((HOST, smtp_port), timeout=10)
    f = raw.makefile("rb")
    f.readline()
    raw.sendall(b"EHLO c\r\n")
    while True:
        line = f.readline()
        if line[3:4] == b" ":
            break
    raw.sendall(b"STARTTLS\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<bob@example.test>\r\nNOOP\r\n")
    line = f.readline()
    expect(line.startswith(b"220 2.0.0"), f"STARTTLS gets 220 ({line})")
    tls = ctx().wrap_socket(raw, server_hostname="localhost")
    tls.settimeout(1.5)
    try:
        extra = tls.recv(4096)
    except (socket.timeout, TimeoutError):
        extra = b""
    expect(extra == b"", f"nothing injected is answered after the handshake (got {extra!r})")
    tls.settimeout(10)
    tls.sendall(b"MAIL FROM:<a@x.test>\r\n")
    r = tls.recv(4096)
    expect(r.startswith(b"503 5.5.1"), f"the session forgot its EHLO ({r!r})")
    tls.sendall(b"EHLO c\r\n")
    time.sleep(0.2)
    r = tls.recv(4096)
    expect(b"STARTTLS" not in r and r.startswith(b"250"), "a fresh EHLO works and STARTTLS is not offered again")
    tls.sendall(b"QUIT\r\n")

else:
    sys.exit(f"unknown case {case}")
