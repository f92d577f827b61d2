"""Seals a message with an ARC set with dkimpy (Debian python3-dkim): instance 1, rsa-sha256, selector
SELECTOR of DOMAIN, the RSA private key (PEM) in KEYFILE, as the forwarder SRV_ID whose
Authentication-Results field the message carries. Reads the message (CRLF) on stdin, writes it sealed.

usage: arc_seal.py DOMAIN SELECTOR KEYFILE SRV_ID
"""
import sys

import dkim

domain, selector, keyfile, srv_id = sys.argv[1:5]
message = sys.stdin.buffer.read()
with open(keyfile, "rb") as f:
    key = f.read()
headers = dkim.arc_sign(message, selector.encode(), domain.encode(), key, srv_id.encode())
if not headers:
    sys.exit("arc_sign gave nothing (no Authentication-Results of SRV_ID?)")
sys.stdout.buffer.write(b"".join(headers) + message)
