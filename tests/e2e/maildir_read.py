"""Read a Maildir with Python's standard `mailbox.Maildir(path, create=False)`, as any Maildir
reader would, and print what it sees.

Usage: maildir_read.py MAILDIR_PATH
Prints, per message (in key order), tab-separated lines; values are repr()s so they stay on one line:
  MESSAGE\t<key>\t<subdir>
  HEADER\t<name>\t<repr(value)>     Subject, From, Message-ID, Return-Path, Received (all of them)
  BODY\t<repr(decoded body text)>
and finally COUNT\t<n>. Fails if the Maildir does not exist.
"""

import mailbox
import sys


def main():
    md = mailbox.Maildir(sys.argv[1], factory=None, create=False)
    n = 0
    for key in sorted(md.keys()):
        msg = md[key]
        print(f"MESSAGE\t{key}\t{msg.get_subdir()}")
        for name in ("Subject", "From", "Message-ID", "Return-Path"):
            print(f"HEADER\t{name}\t{msg[name]!r}")
        for r in msg.get_all("Received") or []:
            print(f"HEADER\tReceived\t{r!r}")
        body = msg.get_payload(decode=True).decode("utf-8")
        print(f"BODY\t{body!r}")
        n += 1
    print(f"COUNT\t{n}")


if __name__ == "__main__":
    main()
