//! Address harvesting: a client that guesses recipients (a dictionary of local parts) learns who exists
//! from the 250/550 answers. Postfix counts every refused recipient towards `smtpd_hard_error_limit` and
//! tarpits past `smtpd_soft_error_limit`; mailroom does the same with `max_errors` and `error_delay`.

use std::time::{Duration, Instant};

use crate::support::*;

/// Finding 1 of the abuse review ("refused recipients are free"): one unauthenticated connection
/// pipelined about a million RCPTs to unknown users in 3 s, every one answered 550. A refused recipient
/// is an error like any other: after `max_errors` (20) answers the session ends with 421 4.7.0 and the
/// rest of the dictionary is never read.
#[test]
fn refused_recipients_count_as_errors_finding_1() {
    let server = server_with(&limits("max_errors = 20"));
    let mut c = ehlo(&server);
    expect_reply(&mut c, "MAIL FROM:<harvester@client.example>", 250, "2.1.0");
    let dictionary: String = (0..5000).map(|i| format!("RCPT TO:<guess{i}@example.test>\r\n")).collect();
    // The server closes long before the end, so later writes may fail.
    let _ = c.try_send(dictionary.as_bytes());
    for i in 0..20 {
        assert_reply(&c.read_reply(), 550, "5.1.1", &format!("unknown recipient {i}"));
    }
    assert_reply(&c.read_reply(), 421, "4.7.0", "at max_errors");
    assert!(c.wait_eof(), "closed after 421");
    assert_still_serves(&server);
}

/// Finding 1, second half: `error_delay` was applied once per pipelined batch, so 25 bad commands in one
/// write were closed after one delay. Each error reply past half of `max_errors` waits on its own: errors
/// 11 to 20 wait `error_delay` each, so the 421 comes after about ten delays.
#[test]
fn pipelined_errors_are_delayed_one_by_one_finding_1() {
    let delay = Duration::from_millis(200);
    let server = server_with("[limits]\nmax_errors = 20\nerror_delay = \"200ms\"\n");
    let mut c = ehlo(&server);
    let start = Instant::now();
    let _ = c.try_send(&b"XYZZY\r\n".repeat(25));
    for i in 0..20 {
        assert_reply(&c.read_reply(), 500, "5.5.2", &format!("bad command {i}"));
    }
    assert_reply(&c.read_reply(), 421, "4.7.0", "at max_errors");
    assert!(c.wait_eof(), "closed after 421");
    let took = start.elapsed();
    let want = delay * 10;
    assert!(took >= want - delay / 2, "25 pipelined errors closed after {took:?}, want about {want:?}");
    assert!(took < want * 3, "far slower than ten delays: {took:?}");
    assert_still_serves(&server);
}
