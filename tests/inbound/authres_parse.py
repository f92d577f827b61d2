"""Parses the Authentication-Results field of a stored message with Python's authres module (Debian
python3-authres): prints the authserv-id, then one `method=result` line per result with its properties.

usage: authres_parse.py MESSAGE_FILE
"""
import email
import email.policy
import sys

import authres

with open(sys.argv[1], "rb") as f:
    msg = email.message_from_binary_file(f, policy=email.policy.compat32)
fields = msg.get_all("Authentication-Results") or []
if len(fields) != 1:
    sys.exit("expected one Authentication-Results field, found %d" % len(fields))
value = "".join(fields[0].splitlines())
header = authres.AuthenticationResultsHeader.parse("Authentication-Results: " + value)
print(header.authserv_id)
for r in header.results:
    props = " ".join("%s.%s=%s" % (p.type, p.name, p.value) for p in r.properties)
    print(("%s=%s %s" % (r.method, r.result, props)).strip())
