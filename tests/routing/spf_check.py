#!/usr/bin/python3
"""Evaluates SPF (RFC 7208) with Python's spf module (Debian python3-spf) against a given DNS server.

usage: spf_check.py DNS_IP DNS_PORT CLIENT_IP SENDER HELO
Prints the result word (pass, fail, softfail, neutral, none, temperror, permerror) and the explanation.
"""
import sys

import dns.resolver
import spf

server, port, ip, sender, helo = sys.argv[1:6]
resolver = dns.resolver.Resolver(configure=False)
resolver.nameservers = [server]
resolver.port = int(port)
resolver.lifetime = 5
# spf's dnspython lookup goes through dns.resolver's default resolver.
dns.resolver.default_resolver = resolver
result, explanation = spf.check2(i=ip, s=sender, h=helo)
print(result, explanation)
