#!/usr/bin/env python3
"""Parses a delivery status notification (RFC 3464) with Python's `email` package and prints what a test
checks, as JSON on stdout:

    /usr/bin/python3 tests/outbound/dsn.py FILE

{"content_type", "report_type", "from", "to", "subject", "return_path", "parts": [content types of the
top-level parts], "per_message": {field: value}, "recipients": [{field: value}, ...],
"human": the text of the first part, "original": the text of the third part (headers or message)}.
Field names keep their case as written. Exits 1 (with the reason on stderr) when FILE is not a
multipart/report with a message/delivery-status part.
"""
import email
import email.policy
import json
import sys


def fields(msg):
    return {k: str(v) for k, v in msg.items()}


def main():
    with open(sys.argv[1], "rb") as f:
        msg = email.message_from_binary_file(f, policy=email.policy.compat32)
    if msg.get_content_type() != "multipart/report":
        sys.exit(f"not multipart/report: {msg.get_content_type()}")
    parts = msg.get_payload()
    status = [p for p in parts if p.get_content_type() == "message/delivery-status"]
    if not status:
        sys.exit("no message/delivery-status part")
    # Python's email parses message/delivery-status into a list of header blocks: the per-message fields,
    # then one block per recipient (RFC 3464 §2.1).
    blocks = status[0].get_payload()
    original = ""
    if len(parts) >= 3:
        third = parts[2]
        payload = third.get_payload()
        if isinstance(payload, list):  # message/rfc822
            original = payload[0].as_string()
        else:
            original = payload if isinstance(payload, str) else str(payload)
    human = parts[0].get_payload(decode=True) or b""
    out = {
        "content_type": msg.get_content_type(),
        "report_type": msg.get_param("report-type"),
        "from": msg.get("From", ""),
        "to": msg.get("To", ""),
        "subject": msg.get("Subject", ""),
        "return_path": msg.get("Return-Path", ""),
        "parts": [p.get_content_type() for p in parts],
        "per_message": fields(blocks[0]) if blocks else {},
        "recipients": [fields(b) for b in blocks[1:]],
        "human": human.decode("utf-8", "replace"),
        "original": original,
    }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
