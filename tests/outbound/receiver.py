#!/usr/bin/env python3
"""A scripted remote MX for mailroom's outbound tests, built on Python's aiosmtpd.

    /usr/bin/python3 tests/outbound/receiver.py OUTDIR ADDR:PORT [ADDR:PORT...] [--dsn] [--size N]

Listens on every ADDR:PORT given (e.g. 127.0.0.2:2600) and prints "READY" on stdout once all accept
connections. Behaviour by the recipient's local part:
  refuse...    550 5.1.1 at RCPT (a permanent failure)
  later...     450 4.2.0 at RCPT, always (a temporary failure that never ends)
  flakyN...    451 4.3.2 at RCPT for the first N attempts of that address (this process), then accepted
  anything else accepted.
--dsn advertises the DSN extension (RFC 3461) and accepts RET/ENVID on MAIL and NOTIFY/ORCPT on RCPT;
without it, DSN is not offered and those parameters get aiosmtpd's 555 (as a server without DSN would).
--size N advertises SIZE N. --no-smtputf8 does not offer SMTPUTF8 (RFC 6531). --starttls CERT KEY offers
STARTTLS with that (self-signed) certificate; each message's JSON says whether it came under TLS ("tls").

Every accepted connection appends one line "CONN <local-ip> <peer-ip>" to OUTDIR/connections.log (O_APPEND,
one write per line, so several receivers may share OUTDIR). Each message is saved as OUTDIR/<unique>.json
(envelope: mail_from, rcpt_tos, mail_options, rcpt_options, helo, local, peer) and then <unique>.eml (the
bytes as received, CRLF), the .eml renamed into place last so a reader never sees half a file. File names
are unique across restarts of the receiver (pid + counter), so a crash test can stop and start it at will.
Stops on SIGTERM/SIGKILL (the test kills it by pid), when stdin closes, or after LIFETIME seconds.
"""
import json
import os
import re
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

LIFETIME = 600
DSN_MAIL = ("RET", "ENVID")
DSN_RCPT = ("NOTIFY", "ORCPT")


def split_params(arg, names):
    """Removes the DSN parameters NAMES from a MAIL/RCPT argument; returns (rest, removed)."""
    if arg is None:
        return arg, []
    close = arg.rfind(">")
    if close < 0:
        return arg, []
    head, tail = arg[: close + 1], arg[close + 1:]
    keep, dsn = [], []
    for p in tail.split():
        if p.split("=", 1)[0].upper() in names:
            dsn.append(p)
        else:
            keep.append(p)
    return " ".join([head] + keep), dsn


class Session(SMTP):
    """aiosmtpd's SMTP with a connection counter and, when asked, the DSN extension."""

    # RFC 3461 §4.1 and §5.1: ENVID and ORCPT may add up to 500 octets to a MAIL or RCPT line.
    command_size_limit = 2048

    def __init__(self, handler, opts, **kw):
        super().__init__(handler, **kw)
        self.opts = opts

    def connection_made(self, transport):
        # Not the STARTTLS re-entry, nor the probe connection aiosmtpd's Controller makes at start.
        if self._original_transport is None and self.opts["counting"]:
            sock = transport.get_extra_info("sockname")
            peer = transport.get_extra_info("peername")
            line = f"CONN {sock[0]} {peer[0]}\n".encode()
            fd = os.open(os.path.join(self.opts["out"], "connections.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        super().connection_made(transport)

    async def smtp_MAIL(self, arg):
        if self.opts["dsn"]:
            arg, dsn = split_params(arg, DSN_MAIL)
            self.envelope_dsn_mail = dsn
        return await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg):
        dsn = []
        if self.opts["dsn"]:
            arg, dsn = split_params(arg, DSN_RCPT)
        self.pending_rcpt_dsn = dsn
        return await super().smtp_RCPT(arg)


class Handler:
    def __init__(self, opts):
        self.opts = opts
        self.n = 0
        self.tries = {}
        self.lock = threading.Lock()

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        out = [r for r in responses if not r.startswith("250-SIZE")]
        extra = ["250-PIPELINING", "250-ENHANCEDSTATUSCODES"]
        if self.opts["dsn"]:
            extra.append("250-DSN")
        if self.opts["size"]:
            extra.append(f"250-SIZE {self.opts['size']}")
        return out[:1] + extra + out[1:]

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.mail_options.extend(getattr(server, "envelope_dsn_mail", []))
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@")[0].lower()
        if local.startswith("refuse"):
            return "550 5.1.1 no such user here"
        if local.startswith("later"):
            return "450 4.2.0 try again later"
        m = re.match(r"flaky(\d+)", local)
        if m:
            with self.lock:
                seen = self.tries.get(address.lower(), 0)
                self.tries[address.lower()] = seen + 1
            if seen < int(m.group(1)):
                return f"451 4.3.2 not yet (attempt {seen + 1})"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.append(" ".join(rcpt_options + getattr(server, "pending_rcpt_dsn", [])))
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.n += 1
            n = self.n
        base = os.path.join(self.opts["out"], f"{os.getpid()}-{n}")
        content = envelope.original_content if envelope.original_content is not None else envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogateescape")
        sock = server.transport.get_extra_info("sockname")
        with open(base + ".json", "w") as f:
            json.dump(
                {
                    "mail_from": envelope.mail_from,
                    "rcpt_tos": envelope.rcpt_tos,
                    "mail_options": envelope.mail_options,
                    "rcpt_options": envelope.rcpt_options,
                    "helo": session.host_name,
                    "local": sock[0],
                    "tls": session.ssl is not None,
                    "peer": session.peer[0],
                },
                f,
            )
        with open(base + ".eml.tmp", "wb") as f:
            f.write(content)
        os.rename(base + ".eml.tmp", base + ".eml")
        return "250 2.0.0 Message accepted for delivery"


class Ctl(Controller):
    def __init__(self, handler, opts, **kw):
        self.opts = opts
        super().__init__(handler, **kw)

    def factory(self):
        return Session(self.handler, self.opts, **self.SMTP_kwargs)


def main():
    args = sys.argv[1:]
    opts = {"dsn": False, "size": 0, "out": None, "counting": False, "smtputf8": True, "tls": None}
    addrs = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--dsn":
            opts["dsn"] = True
        elif a == "--starttls":
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(args[i + 1], args[i + 2])
            opts["tls"] = ctx
            i += 2
        elif a == "--no-smtputf8":
            opts["smtputf8"] = False
        elif a == "--size":
            i += 1
            opts["size"] = int(args[i])
        elif opts["out"] is None:
            opts["out"] = a
        else:
            host, port = a.rsplit(":", 1)
            addrs.append((host, int(port)))
        i += 1
    if opts["out"] is None or not addrs:
        sys.exit(__doc__)
    os.makedirs(opts["out"], exist_ok=True)
    handler = Handler(opts)
    controllers = []
    for host, port in addrs:
        c = Ctl(
            handler,
            opts,
            hostname=host,
            port=port,
            server_hostname=f"rx-{host}",
            enable_SMTPUTF8=opts["smtputf8"],
            tls_context=opts["tls"],
            require_starttls=False,
            decode_data=False,
            data_size_limit=0,
        )
        c.start()
        controllers.append(c)
    opts["counting"] = True
    print("READY", flush=True)
    done = threading.Event()

    def watch_stdin():
        try:
            while sys.stdin.buffer.read(4096):
                pass
        finally:
            done.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    done.wait(LIFETIME)
    for c in controllers:
        c.stop()


if __name__ == "__main__":
    main()
