"""Send one message with Python's smtplib, the real client of the end-to-end tests.

Usage: smtp_send.py PORT FROM TO[,TO...] MESSAGE_FILE [HELO]
Prints one line per outcome, tab-separated (the Rust side has no JSON parser):
  EHLO\t<keyword>\t<params>        for each extension the server offered
  REFUSED\t<rcpt>\t<code>\t<text>  for each recipient refused while others were accepted
  ERROR\t<exception>\t<code>\t<text>  if sendmail raised (all recipients refused: one line per rcpt)
  SENT                             sendmail returned (the message was accepted for someone)
"""

import smtplib
import sys


def main():
    port = int(sys.argv[1])
    sender = sys.argv[2]
    rcpts = sys.argv[3].split(",")
    with open(sys.argv[4], "rb") as f:
        message = f.read()
    helo = sys.argv[5] if len(sys.argv) > 5 else "client.e2e.test"
    with smtplib.SMTP("127.0.0.1", port, local_hostname=helo, timeout=10) as s:
        s.ehlo()
        for k, v in s.esmtp_features.items():
            print(f"EHLO\t{k}\t{v}")
        try:
            refused = s.sendmail(sender, rcpts, message)
        except smtplib.SMTPRecipientsRefused as e:
            for r, (code, text) in e.recipients.items():
                print(f"ERROR\tSMTPRecipientsRefused\t{code}\t{r} {text.decode('utf-8', 'replace')}")
            return
        except smtplib.SMTPResponseException as e:
            print(f"ERROR\t{type(e).__name__}\t{e.smtp_code}\t{e.smtp_error.decode('utf-8', 'replace')}")
            return
        for r, (code, text) in refused.items():
            print(f"REFUSED\t{r}\t{code}\t{text.decode('utf-8', 'replace')}")
        print("SENT")


if __name__ == "__main__":
    main()
