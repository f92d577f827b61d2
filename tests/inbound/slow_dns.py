"""A DNS forwarder for the tests: answers on 127.0.0.1:LISTEN what 127.0.0.1:UPSTREAM answers, but holds every
query whose name has a label `slow` for DELAY seconds first (a sender's DNS that answers slowly).
Prints "ready" once it listens; runs until killed.

usage: slow_dns.py LISTEN UPSTREAM DELAY
"""
import socket
import sys
import threading
import time

listen, upstream, delay = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
server.bind(("127.0.0.1", listen))


def labels(query):
    out, i = [], 12
    while i < len(query) and query[i] != 0 and len(out) < 128:
        n = query[i]
        out.append(query[i + 1:i + 1 + n].lower())
        i += 1 + n
    return out


def forward(query, client):
    if b"slow" in labels(query):
        time.sleep(delay)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    try:
        s.sendto(query, ("127.0.0.1", upstream))
        answer, _ = s.recvfrom(65535)
        server.sendto(answer, client)
    except OSError:
        pass
    finally:
        s.close()


print("ready", flush=True)
while True:
    query, client = server.recvfrom(65535)
    threading.Thread(target=forward, args=(query, client), daemon=True).start()
