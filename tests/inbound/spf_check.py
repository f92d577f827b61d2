"""Python's SPF implementation (Debian python3-spf) on the same records: prints the check_host() result
for IP, SENDER and HELO, asking the DNS server at 127.0.0.1:PORT only.

usage: spf_check.py PORT IP SENDER HELO
"""
import sys

import dns.resolver
import spf

port, ip, sender, helo = sys.argv[1:5]
resolver = dns.resolver.Resolver(configure=False)
resolver.nameservers = ["127.0.0.1"]
resolver.port = int(port)
resolver.lifetime = 3
dns.resolver.default_resolver = resolver
result, _explanation = spf.check2(i=ip, s=sender, h=helo, querytime=3)
print(result)
