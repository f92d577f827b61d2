#!/usr/bin/env python3
"""Parses a delivery status notification (RFC 3464) with Python's `email` package and prints what a test
checks, as JSON on stdout:

    /usr/bin/python3 tests/outbound/dsn.py FILE

{"content_type", "report_type", "from", "to", "subject", "return_path", "parts": [content types of the
top-level parts], "per_message": {field: value}, "recipients": [{field: value}, ...],
"human": the text of the first part, "original": the text of the third part (headers or message)}.
Field names keep their case as written; values are unfolded. Exits 1 (with the reason on stderr) when FILE is not a
multipart/report with a message/delivery-status part (or message/global-delivery-status, RFC 6533, for
UTF-8 addresses; "status_type" says which).
"""
import email
import email.parser
import email.policy
import json
import sys


def fields(msg):
    """The header fields of a block, unfolded (RFC 5322 §2.2.3) with runs of white space made one space."""
    return {k: " ".join(str(v).split()) for k, v in msg.items()}


def main():
    with open(sys.argv[1], "rb") as f:
        msg = email.message_from_binary_file(f, policy=email.policy.compat32)
    if msg.get_content_type() != "multipart/report":
        sys.exit(f"not multipart/report: {msg.get_content_type()}")
    parts = msg.get_payload()
    kinds = ("message/delivery-status", "message/global-delivery-status")
    status = [p for p in parts if p.get_content_type() in kinds]
    if not status:
        sys.exit("no message/delivery-status part")
    # Python's email parses message/delivery-status into a list of header blocks: the per-message fields,
    # then one block per recipient (RFC 3464 §2.1). It leaves message/global-delivery-status (RFC 6533, the
    # same fields in UTF-8) as text: split it into its blocks here.
    blocks = status[0].get_payload()
    if status[0].get_content_type() == "message/global-delivery-status":
        if isinstance(blocks, list):  # taken for an encapsulated message: its headers + body are the text
            text = blocks[0].as_bytes(policy=email.policy.SMTPUTF8).decode("utf-8")
        else:
            text = status[0].get_payload(decode=True).decode("utf-8")
        text = text.replace("\r\n", "\n")
        parser = email.parser.HeaderParser(policy=email.policy.compat32)
        blocks = [parser.parsestr(b.strip("\n") + "\n") for b in text.split("\n\n") if b.strip()]
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
        "status_type": status[0].get_content_type(),
        "per_message": fields(blocks[0]) if blocks else {},
        "recipients": [fields(b) for b in blocks[1:]],
        "human": human.decode("utf-8", "replace"),
        "original": original,
    }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
