"""Signs a message with dkimpy (Debian python3-dkim): ed25519-sha256, relaxed/relaxed, selector SELECTOR of
DOMAIN, the private key (base64 of the 32-byte ed25519 seed, RFC 8463) in KEY. Reads the message (CRLF) on
stdin, writes the signed message on stdout.

usage: dkim_sign.py DOMAIN SELECTOR KEY
"""
import sys

import dkim

domain, selector, key = sys.argv[1:4]
message = sys.stdin.buffer.read()
signature = dkim.sign(
    message,
    selector.encode(),
    domain.encode(),
    key.encode(),
    signature_algorithm=b"ed25519-sha256",
    canonicalize=(b"relaxed", b"relaxed"),
    include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
    linesep=b"\r\n",
)
sys.stdout.buffer.write(signature + message)
