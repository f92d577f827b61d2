#!/usr/bin/env python3
"""Python's aiosmtpd as a foreign SMTP server for mailroom's client interop tests.

    /usr/bin/python3 tests/peers/aiosmtpd_server.py OUTDIR

Listens on 127.0.0.1 on a free port and prints "PORT <n>" on stdout once it accepts connections.
Each message is saved as OUTDIR/<n>.json (envelope: mail_from, rcpt_tos, mail_options) and then
OUTDIR/<n>.eml (the bytes as received, dot-unstuffed, CRLF), the .eml renamed into place last so a
reader never sees half a file. Recipients whose local part starts with "refuse" get 550 5.1.1, with
"later" 450 4.2.0. Stops when its stdin closes (the test dropped it) or after LIFETIME seconds.
"""
import json
import os
import socket
import sys
import threading
import time

from aiosmtpd.controller import Controller

LIFETIME = 300


class Handler:
    def __init__(self, out):
        self.out = out
        self.n = 0
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@")[0].lower()
        if local.startswith("refuse"):
            return "550 5.1.1 no such user here"
        if local.startswith("later"):
            return "450 4.2.0 try again later"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.n += 1
            n = self.n
        base = os.path.join(self.out, str(n))
        content = envelope.original_content if envelope.original_content is not None else envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogateescape")
        with open(base + ".json", "w") as f:
            json.dump(
                {
                    "mail_from": envelope.mail_from,
                    "rcpt_tos": envelope.rcpt_tos,
                    "mail_options": envelope.mail_options,
                    "helo": session.host_name,
                },
                f,
            )
        with open(base + ".eml.tmp", "wb") as f:
            f.write(content)
        os.rename(base + ".eml.tmp", base + ".eml")
        return "250 2.0.0 Message accepted for delivery"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    controller = None
    for _ in range(20):
        port = free_port()
        try:
            controller = Controller(
                Handler(out),
                hostname="127.0.0.1",
                port=port,
                enable_SMTPUTF8=True,
                decode_data=False,
                data_size_limit=64 * 1024 * 1024,
            )
            controller.start()
            break
        except Exception as e:  # the port was taken in between: try another
            print(f"port {port}: {e}", file=sys.stderr)
            controller = None
    if controller is None:
        sys.exit("could not start aiosmtpd")
    print(f"PORT {port}", flush=True)
    done = threading.Event()

    def watch_stdin():
        try:
            while sys.stdin.buffer.read(4096):
                pass
        finally:
            done.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    done.wait(LIFETIME)
    controller.stop()


if __name__ == "__main__":
    main()
