//! Delivery status notifications: the RFC 3464 `multipart/report; report-type=delivery-status` message
//! that tells a sender what became of its message (failed, delayed, delivered, relayed).
//!
//! [`build`] owns the whole message: the top-level header (from `MAILER-DAEMON@<hostname>`,
//! `Auto-Submitted: auto-replied` per RFC 3834 §5), a human-readable part that quotes the remote reply,
//! the machine-readable status part (RFC 3464 §2), and the returned content: the original header section
//! (`text/rfc822-headers`, RFC 6522) or the whole message (`message/rfc822`) when the sender asked for it
//! with RET=FULL (RFC 3461 §4.3) and the report is about a failure.
//!
//! Non-ASCII is carried, never mangled: when an address or a reply holds UTF-8, the status part is
//! `message/global-delivery-status` and addresses are of type `utf-8` (RFC 6533 §3, §6.2); an original
//! with UTF-8 headers comes back as `message/global-headers` / `message/global` (RFC 6533 §6.3, RFC 6532
//! §3.7). Sending such a report then needs 8BITMIME / SMTPUTF8 like any other message.
//!
//! Input and output use LF line endings (the store's form); the relay converts to CRLF on the wire.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The local part of the DSN's author (RFC 5321 §4.5.5 null reverse path; the conventional name).
pub const MAILER_DAEMON: &str = "MAILER-DAEMON";
/// RFC 5322 §2.1.1: header lines SHOULD stay within 78 characters; longer fields are folded at spaces.
pub const FOLD_WIDTH: usize = 78;
/// A remote reply longer than this (in characters) is cut in Diagnostic-Code and the text part: RFC 5321
/// §4.5.3.1.5 bounds a reply line at 512 octets, and a few lines say all there is to say.
pub const MAX_DIAGNOSTIC: usize = 2048;

/// The longest run without a space kept in a quoted reply (RFC 5322 §2.1.1: lines of at most 998
/// characters, leaving room for the field name).
const MAX_WORD: usize = 500;

/// Makes Message-IDs of reports built in the same second for the same message differ.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// RFC 3461 §4.3: what the sender asked to get back with a failure report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    /// The whole message.
    Full,
    /// Only the header section.
    Hdrs,
}

/// RFC 3464 §2.3.3 `Action`: what happened to one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delayed,
    Delivered,
    /// Passed on to a system that does not offer DSN (RFC 3461 §4.1): no further notice will come.
    Relayed,
    Expanded,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
            Action::Expanded => "expanded",
        }
    }

    /// The status used when the given one is not a valid RFC 3463 code.
    fn default_status(self) -> &'static str {
        match self {
            Action::Failed => "5.0.0",
            Action::Delayed => "4.0.0",
            _ => "2.0.0",
        }
    }
}

/// One report about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Our host name: Reporting-MTA and the domain of `MAILER-DAEMON@`.
    pub hostname: String,
    /// The queue id of the original message (in the text and the report's Message-ID).
    pub id: String,
    /// Who gets the report: the original envelope sender. Empty means the local postmaster.
    pub sender: String,
    /// RFC 3461 ENVID of the original (xtext-decoded): Original-Envelope-Id.
    pub envid: Option<String>,
    /// RFC 3461 RET of the original.
    pub ret: Option<Ret>,
    /// When we received the original: Arrival-Date.
    pub arrival: SystemTime,
    /// When the report is made: its Date.
    pub date: SystemTime,
    /// At least one recipient.
    pub recipients: Vec<RecipientReport>,
}

/// What happened to one recipient (RFC 3464 §2.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientReport {
    /// The envelope recipient we tried: Final-Recipient.
    pub recipient: String,
    /// RFC 3461 ORCPT as `type;address` with the address decoded (no xtext): Original-Recipient.
    pub original_recipient: Option<String>,
    pub action: Action,
    /// RFC 3463 status code such as `5.1.1`; an invalid one is replaced by `X.0.0` of the action's class.
    pub status: String,
    /// The remote host that answered: Remote-MTA.
    pub remote_mta: Option<String>,
    /// The remote reply (`550 5.1.1 No such user`, lines joined), or our own reason: Diagnostic-Code.
    pub diagnostic: Option<String>,
    pub last_attempt: Option<SystemTime>,
    /// For `delayed`: when we give up.
    pub will_retry_until: Option<SystemTime>,
}

/// Builds the whole report message (LF line endings) about `original`, the stored message: LF line
/// endings, starting with our `Return-Path:` line, which is dropped.
pub fn build(report: &Report, original: &[u8]) -> Vec<u8> {
    let original = strip_return_path(original);
    let header_end = header_end(&original);
    let headers = &original[..header_end];
    let full = report.ret == Some(Ret::Full) && report.recipients.iter().any(|r| r.action == Action::Failed);
    let returned: &[u8] = if full { &original } else { headers };
    let boundary = boundary(report, returned);
    let status = status_part(report);
    let global_status = !status.is_ascii();

    let mut out = String::new();
    top_header(&mut out, report, &boundary);
    out.push_str("This is a MIME-encapsulated message.\n\n");
    part_start(&mut out, &boundary);
    let text = human_text(report);
    out.push_str("Content-Description: Notification\n");
    out.push_str("Content-Type: text/plain; charset=utf-8\n");
    out.push_str(if text.is_ascii() {
        "Content-Transfer-Encoding: 7bit\n\n"
    } else {
        "Content-Transfer-Encoding: 8bit\n\n"
    });
    out.push_str(&text);
    part_start(&mut out, &boundary);
    out.push_str("Content-Description: Delivery report\n");
    out.push_str(if global_status {
        "Content-Type: message/global-delivery-status\nContent-Transfer-Encoding: 8bit\n\n"
    } else {
        "Content-Type: message/delivery-status\n\n"
    });
    out.push_str(&status);
    part_start(&mut out, &boundary);
    let mut bytes = out.into_bytes();
    returned_part(&mut bytes, headers, returned, full);
    ensure_newline(&mut bytes);
    bytes.extend_from_slice(format!("\n--{boundary}--\n").as_bytes());
    bytes
}

fn part_start(out: &mut String, boundary: &str) {
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&format!("\n--{boundary}\n"));
}

fn ensure_newline(b: &mut Vec<u8>) {
    if b.last() != Some(&b'\n') {
        b.push(b'\n');
    }
}

/// The third part: the original's header section or the whole message, as it was received.
fn returned_part(out: &mut Vec<u8>, headers: &[u8], returned: &[u8], full: bool) {
    // RFC 6532 §3.7, RFC 6533 §6.3: UTF-8 in the header calls for the "global" types.
    let global = !headers.is_ascii();
    let (description, ctype) = match (full, global) {
        (true, false) => ("Undelivered Message", "message/rfc822"),
        (true, true) => ("Undelivered Message", "message/global"),
        (false, false) => ("Message Headers", "text/rfc822-headers"),
        (false, true) => ("Message Headers", "message/global-headers"),
    };
    out.extend_from_slice(format!("Content-Description: {description}\nContent-Type: {ctype}\n").as_bytes());
    // RFC 2046 §5.2.1: a message/* part is 7bit, 8bit or binary, never encoded.
    if !returned.is_ascii() {
        out.extend_from_slice(b"Content-Transfer-Encoding: 8bit\n");
    }
    out.push(b'\n');
    out.extend_from_slice(returned);
}

fn top_header(out: &mut String, r: &Report, boundary: &str) {
    let host = clean(&r.hostname);
    let to = if r.sender.is_empty() { format!("postmaster@{host}") } else { clean(&r.sender) };
    let worst = worst_action(r);
    let subject = match worst {
        Action::Failed => "Undelivered Mail Returned to Sender",
        Action::Delayed => "Delayed Mail (still being retried)",
        _ => "Successful Mail Delivery Report",
    };
    let secs = r.date.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let id: String = clean(&r.id).chars().filter(|c| c.is_ascii_alphanumeric() || ".-_".contains(*c)).collect();
    out.push_str(&format!("From: Mail Delivery System <{MAILER_DAEMON}@{host}>\n"));
    out.push_str(&format!("To: <{to}>\n"));
    out.push_str(&format!("Subject: {subject}\n"));
    out.push_str(&format!("Date: {}\n", rfc5322_date(r.date)));
    out.push_str(&format!("Message-ID: <{secs}.{n}.{id}.dsn@{host}>\n"));
    out.push_str("Auto-Submitted: auto-replied\n");
    out.push_str("MIME-Version: 1.0\n");
    out.push_str(&format!("Content-Type: multipart/report; report-type=delivery-status;\n\tboundary=\"{boundary}\"\n"));
    out.push('\n');
}

/// The most important action in the report, for the subject: failed, then delayed, then the rest.
fn worst_action(r: &Report) -> Action {
    let has = |a: Action| r.recipients.iter().any(|x| x.action == a);
    if has(Action::Failed) {
        Action::Failed
    } else if has(Action::Delayed) {
        Action::Delayed
    } else {
        r.recipients.first().map(|x| x.action).unwrap_or(Action::Delivered)
    }
}

/// The part a person reads: what happened to whom, and the remote reply quoted.
fn human_text(r: &Report) -> String {
    let host = clean(&r.hostname);
    let mut t = format!("This is the mail system at host {host}.\n\n");
    let intro = |a: Action| match a {
        Action::Failed => {
            "Your message could not be delivered to the following recipients; the error \
                           is given below. This is a permanent error: no further attempts will be made."
        }
        Action::Delayed => {
            "Your message could not be delivered yet to the following recipients. \
                            Delivery will be retried; you need not send it again."
        }
        Action::Delivered => "Your message was delivered to the following recipients.",
        Action::Relayed => {
            "Your message was passed on to the following recipients' mail systems, which \
                            do not send delivery notifications: you will get no further notice."
        }
        Action::Expanded => {
            "Your message was delivered to the following recipients, which expanded to \
                             further addresses."
        }
    };
    for action in [Action::Failed, Action::Delayed, Action::Delivered, Action::Relayed, Action::Expanded] {
        let group: Vec<&RecipientReport> = r.recipients.iter().filter(|x| x.action == action).collect();
        if group.is_empty() {
            continue;
        }
        t.push_str(&wrap(intro(action), 72));
        t.push('\n');
        for x in group {
            t.push_str(&format!("<{}>", clean(&x.recipient)));
            match (&x.remote_mta, &x.diagnostic) {
                (Some(mta), Some(d)) => t.push_str(&format!(": host {} said:\n{}", clean(mta), quote(d))),
                (None, Some(d)) => t.push_str(&format!(":\n{}", quote(d))),
                (Some(mta), None) => t.push_str(&format!(": via host {}\n", clean(mta))),
                (None, None) => t.push('\n'),
            }
            if let Some(until) = x.will_retry_until {
                t.push_str(&format!("    (retried until {})\n", rfc5322_date(until)));
            }
        }
        t.push('\n');
    }
    t.push_str(&format!("Queue id of your message: {}\n", clean(&r.id)));
    t
}

/// The `message/delivery-status` body (RFC 3464 §2.2, §2.3): the per-message fields, then one block per
/// recipient, blank lines between.
fn status_part(r: &Report) -> String {
    let mut s = String::new();
    field(&mut s, "Reporting-MTA", &format!("dns; {}", clean(&r.hostname)));
    if let Some(envid) = &r.envid {
        field(&mut s, "Original-Envelope-Id", &clean(envid));
    }
    field(&mut s, "Arrival-Date", &rfc5322_date(r.arrival));
    for x in &r.recipients {
        s.push('\n');
        if let Some(orcpt) = &x.original_recipient {
            field(&mut s, "Original-Recipient", &original_recipient(orcpt));
        }
        field(&mut s, "Final-Recipient", &typed_address(&clean(&x.recipient)));
        field(&mut s, "Action", x.action.name());
        let status = if is_status(&x.status) { x.status.as_str() } else { x.action.default_status() };
        field(&mut s, "Status", status);
        if let Some(mta) = &x.remote_mta {
            field(&mut s, "Remote-MTA", &format!("dns; {}", clean(mta)));
        }
        if let Some(d) = &x.diagnostic {
            field(&mut s, "Diagnostic-Code", &format!("smtp; {}", diagnostic(d)));
        }
        if let Some(t) = x.last_attempt {
            field(&mut s, "Last-Attempt-Date", &rfc5322_date(t));
        }
        if let (Action::Delayed, Some(t)) = (x.action, x.will_retry_until) {
            field(&mut s, "Will-Retry-Until", &rfc5322_date(t));
        }
    }
    s
}

/// `rfc822; a@b.example`, or `utf-8; jöran@b.example` for a UTF-8 address (RFC 6533 §3).
fn typed_address(address: &str) -> String {
    if address.is_ascii() {
        format!("rfc822; {address}")
    } else {
        format!("utf-8; {address}")
    }
}

/// An ORCPT given as `type;address`: kept, but a non-ASCII rfc822 address becomes type utf-8.
fn original_recipient(orcpt: &str) -> String {
    let orcpt = clean(orcpt);
    match orcpt.split_once(';') {
        Some((t, a)) if t.trim().eq_ignore_ascii_case("rfc822") => typed_address(a.trim()),
        Some((t, a)) => format!("{}; {}", t.trim(), a.trim()),
        None => typed_address(orcpt.trim()),
    }
}

/// RFC 3463 §2: `class.subject.detail`, class 2, 4 or 5, subject and detail 1 to 3 digits.
fn is_status(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && parts[1..].iter().all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

/// A reply for quoting: one line, control characters gone, at most [`MAX_DIAGNOSTIC`] characters.
fn diagnostic(d: &str) -> String {
    // A run without spaces longer than [`MAX_WORD`] is cut into pieces, so that folding can keep every
    // line within RFC 5322's 998 characters whatever the remote sent.
    let cleaned = clean(d);
    let words: Vec<String> = cleaned
        .split_whitespace()
        .flat_map(|w| {
            w.chars().collect::<Vec<_>>().chunks(MAX_WORD).map(|c| c.iter().collect()).collect::<Vec<String>>()
        })
        .collect();
    let text = words.join(" ");
    if text.chars().count() > MAX_DIAGNOSTIC {
        text.chars().take(MAX_DIAGNOSTIC).collect::<String>() + "..."
    } else {
        text
    }
}

/// A reply quoted in the text part: indented, wrapped at spaces.
fn quote(d: &str) -> String {
    wrap(&diagnostic(d), 72).lines().map(|l| format!("    {l}\n")).collect()
}

/// A header field, folded at spaces before [`FOLD_WIDTH`] where it can be.
fn field(out: &mut String, name: &str, value: &str) {
    let mut line = format!("{name}:");
    let mut first = true;
    for word in value.split(' ').filter(|w| !w.is_empty()) {
        if !first && line.chars().count() + 1 + word.chars().count() > FOLD_WIDTH {
            out.push_str(&line);
            out.push('\n');
            line = String::from("\t");
        } else {
            line.push(' ');
        }
        line.push_str(word);
        first = false;
    }
    out.push_str(&line);
    out.push('\n');
}

/// Text wrapped at spaces to `width` characters.
fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
    out
}

/// Control characters (CR, LF, NUL, C1 ...) become spaces: nothing from outside can start a header line.
fn clean(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// The message without its first line when that is our `Return-Path:`, with CRLF made LF.
fn strip_return_path(m: &[u8]) -> Vec<u8> {
    let m: &[u8] = if m.len() >= 12 && m[..12].eq_ignore_ascii_case(b"Return-Path:") {
        match m.iter().position(|&b| b == b'\n') {
            Some(i) => &m[i + 1..],
            None => &[],
        }
    } else {
        m
    };
    let mut out = Vec::with_capacity(m.len());
    for (i, &b) in m.iter().enumerate() {
        if b == b'\r' && m.get(i + 1) == Some(&b'\n') {
            continue;
        }
        out.push(b);
    }
    out
}

/// The length of the header section including its last line's LF, without the blank line.
fn header_end(m: &[u8]) -> usize {
    if m.first() == Some(&b'\n') {
        return 0;
    }
    match m.windows(2).position(|w| w == b"\n\n") {
        Some(i) => i + 1,
        None => m.len(),
    }
}

/// A boundary that occurs nowhere in what the report quotes (RFC 2046 §5.1.1: at most 70 characters).
fn boundary(r: &Report, returned: &[u8]) -> String {
    let secs = r.date.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let id: String = r.id.chars().filter(|c| c.is_ascii_alphanumeric()).take(30).collect();
    let mut n = 0u32;
    loop {
        let b = format!("=_mailroom-dsn-{id}-{secs}-{n}");
        if !contains(returned, b.as_bytes()) && !r.recipients.iter().any(|x| quoted_has(x, &b)) {
            return b;
        }
        n += 1;
    }
}

fn quoted_has(x: &RecipientReport, b: &str) -> bool {
    x.diagnostic.as_deref().is_some_and(|d| d.contains(b)) || x.recipient.contains(b)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// `Sat, 28 Nov 2026 14:31:46 +0000` (RFC 5322 §3.3), in UTC: proto's one definition.
pub use mailroom_proto::date::rfc5322 as rfc5322_date;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};
    use std::time::Duration;

    const ORIGINAL: &[u8] = b"Return-Path: <alice@mx.test>\nReceived: from client ([127.0.0.1])\n\tby mx.test (mailroom) with ESMTPA id Q1;\n\tSat, 28 Nov 2026 14:31:46 +0000\nFrom: alice@mx.test\nTo: bob@remote.example\nSubject: the plan\nMessage-ID: <plan@mx.test>\n\nBODY LINE ONE\nbody line two\n";

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn failed(recipient: &str) -> RecipientReport {
        RecipientReport {
            recipient: recipient.into(),
            original_recipient: Some("rfc822;Bob@Old.example".into()),
            action: Action::Failed,
            status: "5.1.1".into(),
            remote_mta: Some("mx1.remote.example".into()),
            diagnostic: Some("550 5.1.1 <bob@remote.example>: Recipient address rejected: User unknown".into()),
            last_attempt: Some(at(1_795_876_400)),
            will_retry_until: None,
        }
    }

    fn report(ret: Option<Ret>, recipients: Vec<RecipientReport>) -> Report {
        Report {
            hostname: "mx.test".into(),
            id: "1795876306.M1P2Q3.mx.test".into(),
            sender: "alice@mx.test".into(),
            envid: Some("env-42".into()),
            ret,
            arrival: at(1_795_876_306),
            date: at(1_795_876_500),
            recipients,
        }
    }

    /// Python's `email` package reads the report; prints what a DSN reader would look at, one `key=value`
    /// per line (the blocks of a message/delivery-status part as `blockN:Field=value`).
    const READER: &str = r#"
import sys, email
from email import policy
m = email.message_from_binary_file(sys.stdin.buffer, policy=policy.compat32)
print("ctype=" + m.get_content_type())
print("report-type=" + str(m.get_param("report-type")))
print("from=" + str(m["From"]))
print("to=" + str(m["To"]))
print("auto=" + str(m["Auto-Submitted"]))
print("defects=%d" % len(m.defects))
parts = m.get_payload()
print("parts=" + ",".join(p.get_content_type() for p in parts))
print("text=" + parts[0].get_payload(decode=True).decode("utf-8").replace("\n", "|"))
st = parts[1]
if st.get_content_type() == "message/delivery-status":
    for i, b in enumerate(st.get_payload()):
        for k, v in b.items():
            print("block%d:%s=%s" % (i, k, " ".join(str(v).split())))
ret = parts[2]
if ret.get_content_type() == "message/rfc822":
    inner = ret.get_payload()[0]
    print("inner-subject=" + str(inner["Subject"]))
    print("inner-return-path=" + str(inner["Return-Path"]))
    print("inner-body=" + inner.get_payload().replace("\n", "|"))
elif ret.get_content_type() == "text/rfc822-headers":
    print("returned=" + ret.get_payload().replace("\n", "|"))
"#;

    /// Runs the reader; a missing python3 fails the test unless MAILROOM_SKIP_PYTHON=1.
    fn python(dsn: &[u8]) -> Option<Vec<String>> {
        let child = Command::new("/usr/bin/python3")
            .args(["-c", READER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(_) if std::env::var("MAILROOM_SKIP_PYTHON").as_deref() == Ok("1") => return None,
            Err(e) => panic!("/usr/bin/python3 is needed for this test (MAILROOM_SKIP_PYTHON=1 skips): {e}"),
        };
        child.stdin.take().unwrap().write_all(dsn).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
        Some(String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect())
    }

    #[track_caller]
    fn has(lines: &[String], want: &str) {
        assert!(lines.iter().any(|l| l == want), "no line {want:?} in {lines:#?}");
    }

    #[test]
    fn a_failure_report_reads_as_multipart_report_in_python() {
        let dsn = build(&report(None, vec![failed("bob@remote.example")]), ORIGINAL);
        assert!(!dsn.contains(&b'\r'), "LF line endings");
        let Some(l) = python(&dsn) else { return };
        has(&l, "ctype=multipart/report");
        has(&l, "report-type=delivery-status");
        has(&l, "from=Mail Delivery System <MAILER-DAEMON@mx.test>");
        has(&l, "to=<alice@mx.test>");
        has(&l, "auto=auto-replied");
        has(&l, "defects=0");
        has(&l, "parts=text/plain,message/delivery-status,text/rfc822-headers");
        has(&l, "block0:Reporting-MTA=dns; mx.test");
        has(&l, "block0:Original-Envelope-Id=env-42");
        has(&l, "block0:Arrival-Date=Sat, 28 Nov 2026 14:31:46 +0000");
        has(&l, "block1:Original-Recipient=rfc822; Bob@Old.example");
        has(&l, "block1:Final-Recipient=rfc822; bob@remote.example");
        has(&l, "block1:Action=failed");
        has(&l, "block1:Status=5.1.1");
        has(&l, "block1:Remote-MTA=dns; mx1.remote.example");
        has(
            &l,
            "block1:Diagnostic-Code=smtp; 550 5.1.1 <bob@remote.example>: Recipient address rejected: User unknown",
        );
        has(&l, "block1:Last-Attempt-Date=Sat, 28 Nov 2026 14:33:20 +0000");
        let text = l.iter().find(|x| x.starts_with("text=")).unwrap();
        assert!(text.contains("<bob@remote.example>: host mx1.remote.example said:"), "{text}");
        assert!(text.contains("550 5.1.1 <bob@remote.example>: Recipient address rejected"), "{text}");
        assert!(text.contains("could not be delivered"), "{text}");
        // RET absent on a failure: the headers come back, our Return-Path does not, the body does not.
        let returned = l.iter().find(|x| x.starts_with("returned=")).unwrap();
        assert!(returned.contains("Subject: the plan") && returned.contains("Received: from client"), "{returned}");
        assert!(!returned.contains("Return-Path"), "{returned}");
        assert!(!contains(&dsn, b"BODY LINE ONE"));
    }

    #[test]
    fn ret_hdrs_carries_only_the_headers() {
        let dsn = build(&report(Some(Ret::Hdrs), vec![failed("bob@remote.example")]), ORIGINAL);
        assert!(!contains(&dsn, b"BODY LINE ONE") && !contains(&dsn, b"body line two"));
        assert!(contains(&dsn, b"Content-Type: text/rfc822-headers\n\nReceived: from client"));
        assert!(!contains(&dsn, b"Return-Path"));
        let Some(l) = python(&dsn) else { return };
        has(&l, "parts=text/plain,message/delivery-status,text/rfc822-headers");
    }

    #[test]
    fn ret_full_returns_the_whole_message() {
        let dsn = build(&report(Some(Ret::Full), vec![failed("bob@remote.example")]), ORIGINAL);
        let Some(l) = python(&dsn) else { return };
        has(&l, "parts=text/plain,message/delivery-status,message/rfc822");
        has(&l, "inner-subject=the plan");
        has(&l, "inner-return-path=None");
        has(&l, "inner-body=BODY LINE ONE|body line two|");
    }

    #[test]
    fn a_delay_report_says_until_when_and_returns_headers_even_with_ret_full() {
        let mut r = failed("bob@remote.example");
        r.action = Action::Delayed;
        r.status = "4.4.1".into();
        r.diagnostic = Some("451 4.4.1 try later".into());
        r.will_retry_until = Some(at(1_796_308_306));
        let dsn = build(&report(Some(Ret::Full), vec![r]), ORIGINAL);
        assert!(!contains(&dsn, b"BODY LINE ONE"), "RET=FULL is for failures only (RFC 3461 §4.3)");
        assert!(contains(&dsn, b"Subject: Delayed Mail"));
        let Some(l) = python(&dsn) else { return };
        has(&l, "block1:Action=delayed");
        has(&l, "block1:Status=4.4.1");
        has(&l, "block1:Will-Retry-Until=Thu, 3 Dec 2026 14:31:46 +0000");
        has(&l, "parts=text/plain,message/delivery-status,text/rfc822-headers");
    }

    #[test]
    fn relayed_and_delivered_recipients_in_one_report() {
        let relayed = RecipientReport {
            recipient: "carol@far.example".into(),
            original_recipient: None,
            action: Action::Relayed,
            status: "2.0.0".into(),
            remote_mta: Some("mx.far.example".into()),
            diagnostic: Some("250 2.0.0 Ok: queued as 123".into()),
            last_attempt: Some(at(1_795_876_400)),
            will_retry_until: None,
        };
        let delivered =
            RecipientReport { recipient: "dave@far.example".into(), action: Action::Delivered, ..relayed.clone() };
        let mut rep = report(None, vec![relayed, delivered]);
        rep.envid = None;
        let dsn = build(&rep, ORIGINAL);
        assert!(contains(&dsn, b"Subject: Successful Mail Delivery Report"));
        let words = String::from_utf8_lossy(&dsn).split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(words.contains("do not send delivery notifications: you will get no further notice"));
        let Some(l) = python(&dsn) else { return };
        has(&l, "block1:Final-Recipient=rfc822; carol@far.example");
        has(&l, "block1:Action=relayed");
        has(&l, "block2:Final-Recipient=rfc822; dave@far.example");
        has(&l, "block2:Action=delivered");
        assert!(!l.iter().any(|x| x.contains("Original-Envelope-Id") || x.contains("Original-Recipient")), "{l:#?}");
    }

    #[test]
    fn utf8_addresses_and_headers_survive() {
        let original = "Return-Path: <jöran@mx.test>\nFrom: Jöran <jöran@mx.test>\nSubject: Grüße\n\nGrüße aus Köln\n";
        let mut r = failed("zoë@remote.example");
        r.original_recipient = Some("utf-8;zoë@old.example".into());
        r.diagnostic = Some("550 5.1.1 zoë: unbekannt".into());
        let mut rep = report(Some(Ret::Full), vec![r]);
        rep.sender = "jöran@mx.test".into();
        let dsn = build(&rep, original.as_bytes());
        let text = String::from_utf8(dsn.clone()).expect("the report is valid UTF-8");
        assert!(text.contains("Content-Type: message/global-delivery-status"), "{text}");
        assert!(text.contains("Final-Recipient: utf-8; zoë@remote.example"), "{text}");
        assert!(text.contains("Original-Recipient: utf-8; zoë@old.example"), "{text}");
        assert!(text.contains("Diagnostic-Code: smtp; 550 5.1.1 zoë: unbekannt"), "{text}");
        assert!(
            text.contains("Content-Type: message/global\nContent-Transfer-Encoding: 8bit\n\nFrom: Jöran"),
            "{text}"
        );
        assert!(text.contains("Grüße aus Köln"), "{text}");
        assert!(text.contains("To: <jöran@mx.test>"), "{text}");
        assert!(!text.contains("Return-Path"), "{text}");
        let Some(l) = python(&dsn) else { return };
        has(&l, "ctype=multipart/report");
        has(&l, "parts=text/plain,message/global-delivery-status,message/global");
    }

    #[test]
    fn an_ascii_report_about_an_8bit_body_marks_it_8bit() {
        let original = b"Return-Path: <a@mx.test>\nSubject: x\n\nK\xc3\xb6ln\n";
        let dsn = build(&report(Some(Ret::Full), vec![failed("bob@remote.example")]), original);
        assert!(contains(
            &dsn,
            b"Content-Type: message/rfc822\nContent-Transfer-Encoding: 8bit\n\nSubject: x\n\nK\xc3\xb6ln\n"
        ));
        assert!(contains(&dsn, b"Content-Type: message/delivery-status\n"));
    }

    #[test]
    fn nothing_from_outside_starts_a_header_line() {
        let mut r = failed("bob@remote.example\nBcc: x@evil.example");
        r.diagnostic = Some("550 no\r\nBcc: y@evil.example".into());
        r.remote_mta = Some("mx\n\nX-Evil: 1".into());
        let mut rep = report(None, vec![r]);
        rep.envid = Some("e\nX-Evil: 2".into());
        rep.sender = "a@b\nBcc: z@evil.example".into();
        let dsn = String::from_utf8(build(&rep, ORIGINAL)).unwrap();
        for line in dsn.lines() {
            assert!(!line.starts_with("Bcc:") && !line.starts_with("X-Evil:"), "{line:?} in\n{dsn}");
        }
    }

    #[test]
    fn the_boundary_never_occurs_in_the_quoted_message() {
        let rep = report(Some(Ret::Full), vec![failed("bob@remote.example")]);
        let first = boundary(&rep, b"");
        let original = format!("Subject: x\n\n--{first}\n");
        let dsn = String::from_utf8(build(&rep, original.as_bytes())).unwrap();
        assert!(!dsn.contains(&format!("boundary=\"{first}\"")), "{dsn}");
        let Some(l) = python(dsn.as_bytes()) else { return };
        has(&l, "parts=text/plain,message/delivery-status,message/rfc822");
    }

    #[test]
    fn long_diagnostics_are_folded_and_bounded() {
        let mut r = failed("bob@remote.example");
        r.diagnostic = Some(format!("550-5.7.1 {}\n550 5.7.1 end", "word ".repeat(1000)));
        r.status = "bogus".into();
        let dsn = String::from_utf8(build(&report(None, vec![r]), ORIGINAL)).unwrap();
        assert!(dsn.lines().all(|l| l.chars().count() <= 998), "RFC 5322 §2.1.1 line limit");
        assert!(dsn.contains("Status: 5.0.0\n"), "an invalid status falls back to the action's class");
        let Some(l) = python(dsn.as_bytes()) else { return };
        let d = l.iter().find(|x| x.starts_with("block1:Diagnostic-Code=")).unwrap();
        assert!(d.starts_with("block1:Diagnostic-Code=smtp; 550-5.7.1 word word") && d.ends_with("..."), "{d}");
        has(&l, "block1:Status=5.0.0");
    }

    #[test]
    fn a_reply_without_spaces_still_fits_the_line_limit() {
        let mut r = failed("bob@remote.example");
        let word = "x".repeat(1500);
        r.diagnostic = Some(format!("550 5.7.1 {word}"));
        let dsn = String::from_utf8(build(&report(None, vec![r]), ORIGINAL)).unwrap();
        assert!(dsn.lines().all(|l| l.chars().count() <= 998), "RFC 5322 §2.1.1 line limit");
        let Some(l) = python(dsn.as_bytes()) else { return };
        let d = l.iter().find(|x| x.starts_with("block1:Diagnostic-Code=")).unwrap();
        // Python unfolds the field: the reply is all there, cut into pieces by spaces.
        assert_eq!(d.replace(' ', ""), format!("block1:Diagnostic-Code=smtp;5505.7.1{word}"));
    }

    #[test]
    fn status_codes() {
        for ok in ["2.0.0", "5.1.1", "4.4.7", "5.123.456"] {
            assert!(is_status(ok), "{ok}");
        }
        for bad in ["", "5.1", "6.0.0", "5.1.1.1", "5.1234.1", "5.x.1", "550"] {
            assert!(!is_status(bad), "{bad}");
        }
    }
}
