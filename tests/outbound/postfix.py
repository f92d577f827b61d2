#!/usr/bin/env python3
"""A private Postfix instance for mailroom's outbound tests (the way bench/compare runs one).

    /usr/bin/python3 tests/outbound/postfix.py start DIR LISTEN_IP PORT DOMAIN RELAYHOST
    /usr/bin/python3 tests/outbound/postfix.py stop DIR

`start` writes a config directory DIR/conf from nothing (master.cf copied from the package, read only),
with its own queue and data directories under DIR, and starts the instance; the system's /etc/postfix is
never written and the system instance is never started. The instance's smtpd listens on LISTEN_IP:PORT
only, takes mail for DOMAIN into Maildirs under DIR/vmail/DOMAIN/<local>/ (virtual(8), every local part
of DOMAIN exists, owned by nobody), relays for 127.0.0.0/8 and sends everything else to RELAYHOST (e.g.
"[127.0.0.1]:2525", no MX lookup). It prints "READY <master pid>" once smtpd answers.
`stop` stops that instance (postfix -c DIR/conf stop; abort if it lingers).
Postfix's own log goes to DIR/postfix.log. Needs root, as Postfix's master does.
"""
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time


def run(cmd):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}")
    return r.stdout


def wait_port(ip, port, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection((ip, port), timeout=1) as s:
                if s.recv(512).startswith(b"220"):
                    return True
        except OSError:
            time.sleep(0.1)
    return False


def start(d, ip, port, domain, relayhost):
    conf, queue, data, vmail = (os.path.join(d, x) for x in ("conf", "queue", "data", "vmail"))
    for x in (conf, queue, data, vmail):
        os.makedirs(x, exist_ok=True)
    src = "/etc/postfix/master.cf" if os.path.exists("/etc/postfix/master.cf") else "/usr/share/postfix/master.cf.dist"
    shutil.copy(src, os.path.join(conf, "master.cf"))
    open(os.path.join(conf, "main.cf"), "w").close()
    pf = pwd.getpwnam("postfix")
    os.chown(data, pf.pw_uid, pf.pw_gid)
    nobody = pwd.getpwnam("nobody")
    os.chown(vmail, nobody.pw_uid, nobody.pw_gid)
    with open(os.path.join(conf, "vmailbox"), "w") as f:
        f.write(f"@{domain} {domain}/catchall/\n")
    log = os.path.join(d, "postfix.log")
    settings = [
        "compatibility_level = 3.6",
        f"queue_directory = {queue}",
        f"data_directory = {data}",
        "inet_interfaces = loopback-only",
        "inet_protocols = ipv4",
        f"myhostname = postfix.{domain}",
        f"mydomain = {domain}",
        f"myorigin = {domain}",
        "mydestination =",
        "local_recipient_maps =",
        "mynetworks = 127.0.0.0/8",
        f"relayhost = {relayhost}",
        f"virtual_mailbox_domains = {domain}",
        f"virtual_mailbox_base = {vmail}",
        f"virtual_mailbox_maps = texthash:{conf}/vmailbox",
        f"virtual_uid_maps = static:{nobody.pw_uid}",
        f"virtual_gid_maps = static:{nobody.pw_gid}",
        "virtual_minimum_uid = 1",
        "alias_maps =",
        "alias_database =",
        "biff = no",
        "smtpd_client_connection_count_limit = 0",
        "smtp_host_lookup = native",
        "smtp_tls_security_level = none",
        "smtpd_tls_security_level = none",
        "queue_run_delay = 1s",
        "minimal_backoff_time = 1s",
        "maximal_backoff_time = 2s",
        f"maillog_file = {log}",
        f"maillog_file_prefixes = {d}",
    ]
    run(["postconf", "-c", conf, "-e", *settings])
    run(["postconf", "-c", conf, "-M#", "smtp/inet"])
    run(["postconf", "-c", conf, "-M", f"{ip}:{port}/inet = {ip}:{port} inet n - n - - smtpd"])
    run(["postconf", "-c", conf, "-F", "*/*/chroot = n"])
    subprocess.run(["postfix", "-c", conf, "check"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    r = subprocess.run(["postfix", "-c", conf, "start"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0 or not wait_port(ip, port):
        tail = open(log).read()[-3000:] if os.path.exists(log) else ""
        sys.exit(f"Postfix did not start ({r.returncode}): {r.stdout}\n{tail}")
    pid = open(os.path.join(queue, "pid", "master.pid")).read().split()[0]
    print(f"READY {pid}", flush=True)


def stop(d):
    conf = os.path.join(d, "conf")
    subprocess.run(["postfix", "-c", conf, "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pidfile = os.path.join(d, "queue", "pid", "master.pid")
    end = time.monotonic() + 10
    while time.monotonic() < end:
        try:
            pid = int(open(pidfile).read().split()[0])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            return
        time.sleep(0.1)
    subprocess.run(["postfix", "-c", conf, "abort"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    if len(sys.argv) == 7 and sys.argv[1] == "start":
        start(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6])
    elif len(sys.argv) == 3 and sys.argv[1] == "stop":
        stop(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
