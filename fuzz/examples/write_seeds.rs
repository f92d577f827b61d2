//! Writes the seed corpora into `fuzz/seeds/<target>/`, from the cases of proto's test tables, the
//! sendmail messages of issue 10 (`header`) and the attack catalogue of issue 5 (smuggling look-alikes, hostile addresses and parameters, long lines).
//!
//! Run from `fuzz/`: `cargo run --example write_seeds`. The seeds are committed; re-run after changing
//! this file. Each seed is named after what it holds; libFuzzer itself keeps what it finds under
//! `fuzz/corpus/` (git-ignored).

use std::fs;
use std::path::Path;

use mailroom_fuzz::{encode_bdat_ops, BdatOp, Knobs};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds").join(target);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(name), bytes).unwrap();
}

/// Command lines: the good and bad tables of command.rs and params.rs, and hostile input.
const COMMANDS: &[&[u8]] = &[
    b"EHLO client.example",
    b"helo [127.0.0.1]",
    b"HELO [IPv6:2001:db8::1]",
    b"DATA",
    b"data",
    b"RSET",
    b"NOOP anything",
    b"QUIT",
    b"VRFY root",
    b"EXPN staff",
    b"HELP",
    b"STARTTLS",
    b"AUTH PLAIN AGpvZQBzZWNyZXQ=",
    b"AUTH LOGIN",
    b"ETRN example.org",
    b"BDAT 100 LAST",
    b"BDAT 0",
    b"BDAT 18446744073709551615 LAST",
    b"BDAT 99999999999999999999999",
    b"BDAT -1",
    b"BDAT 1 FIRST",
    b"MAIL FROM:<a@b.example> SIZE=10 BODY=8BITMIME",
    b"mail from: <>",
    b"MAIL FROM:<> SIZE=18446744073709551615",
    b"MAIL FROM:<a@b> SIZE=18446744073709551616",
    b"MAIL FROM:<a@b> SIZE=000000000000000000001",
    b"MAIL FROM:<a@b> SIZE=1 SIZE=2",
    b"MAIL FROM:<a@b> BODY=BINARYMIME",
    b"MAIL FROM:<a@b> SMTPUTF8=yes",
    b"MAIL FROM:<a@b> RET=FULL ENVID=x",
    b"MAIL FROM:<a@b> AUTH=<>",
    b"MAIL FROM:<a@b> AUTH=joe+40example.org",
    b"MAIL FROM:<a@b> AUTH=a+0D+0Ab",
    b"MAIL FROM:<a@b> AUTH=a+00",
    b"MAIL FROM:<a@b> AUTH=a+4",
    b"MAIL FROM:<a@b> AUTH=a+zz",
    b"MAIL FROM:<a@b>SIZE=1",
    b"MAIL FROM:a@b",
    b"MAIL <a@b>",
    b"MAIL FROM:<@relay.example,@other.example:user@here.example>",
    b"MAIL FROM:<\"quoted local\"@example.org>",
    b"MAIL FROM:<\"a\\\"b\\\\c\"@example.org>",
    b"MAIL FROM:<j\xc3\xb6s\xc3\xa9@ex\xc3\xa4mple.org> SMTPUTF8",
    b"MAIL FROM:<user@[192.0.2.1]>",
    b"MAIL FROM:<user@[IPv6:::1]>",
    b"MAIL FROM:<user@[IPv6:2001:db8::192.0.2.1]>",
    b"MAIL FROM:<user@[300.1.1.1]>",
    b"MAIL FROM:<a\x00@b>",
    b"RCPT TO:<Postmaster>",
    b"RCPT TO:<postmaster@example.org>",
    b"RCPT TO:<a@b> NOTIFY=NEVER",
    b"RCPT TO:<>",
    b"RCPT FROM:<a@b>",
    b"RCPT TO:<user%other.example@relay.example>",
    b"RCPT TO:<other.example!user@relay.example>",
    b"RCPT TO:<\"user@other.example\"@relay.example>",
    b"RCPT TO:<../../etc/passwd@example.org>",
    b"RCPT TO:<`touch /tmp/x`@example.org>",
    b"RCPT TO:<$(reboot)|x;y&z@example.org>",
    b"RCPT TO:<a@b>\nMAIL",
    b"RCPT TO:<a..b@example.org>",
    b"RCPT TO:<.a@example.org>",
    b"RCPT TO:<a@-example.org>",
    b"RCPT TO:<a@example..org>",
    b"NOOP \xff",
    b"FOO",
    b"",
    b"SIZE=1000 BODY=7BIT SMTPUTF8 AUTH=a+2Bb",
    b"joe+40example.org",
    b"user@example.org",
    // RFC 3461 / RFC 6533 DSN parameters (appended: earlier seeds keep their names).
    b"MAIL FROM:<a@b> RET=HDRS ENVID=a+2Bb+3Dc",
    b"RCPT TO:<a@b> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=rfc822;a+40b",
    b"RCPT TO:<a@b> ORCPT=utf-8;j\\x{F6}ran@b",
    b"RCPT TO:<a@b> ORCPT=utf-8;j\xc3\xb6ran@b NOTIFY=never",
];

/// Bodies after 354: proto's DotDecoder table, smuggling look-alikes, and a long line.
const BODIES: &[&[u8]] = &[
    b".\r\n",
    b"a\r\n.\r\n",
    b"a\r\n.\r\nMAIL",
    b"..x\r\n.\r\n",
    b".x\r\n.\r\n",
    b"...\r\n.\r\n",
    b"a\r\n..\r\n.\r\n",
    b"a\n.\nMAIL FROM:<x@y>\r\n",
    b"a\n.\r\nMAIL",
    b"a\r\n.\nMAIL",
    b"a\r.\rMAIL",
    b"a\r.\r\nMAIL",
    b"a\r\n.\rMAIL",
    b"a\x00\r\n.x",
    b"a\r\n\x00.\r\n",
    b"a\r\n .\r\n",
    b"a\nb\r\n.\r\n",
    b"Subject: hi\r\n\r\nbody\r\n.\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\nDATA\r\nsmuggled\r\n.\r\n",
    b"Subject: hi\r\n\r\nbody\n.\nMAIL FROM:<evil@x>\r\n.\r\n",
    b"Subject: hi\r\n\r\nbody\r\n.\nMAIL FROM:<evil@x>\r\n.\r\n",
    b"Subject: hi\r\n\r\nbody\r\r\n.\r\r\n.\r\n",
];

/// Server replies as a client reads them.
const REPLIES: &[&[u8]] = &[
    b"220 mx.example ESMTP ready\r\n",
    b"250-mx.example\r\n250-SIZE 26214400\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250 HELP\r\n",
    b"250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n354 Start mail input\r\n250 2.0.0 Message accepted\r\n",
    b"550 5.1.1 No such user\r\n",
    b"421 4.7.0 Too many errors\r\n",
    b"250-2.0.0 first\r\n250-2.0.0 second\r\n250 2.0.0 last\r\n",
    b"250-2.0.0 first\r\n250 last without code\r\n",
    b"250 5.1.1 wrong class\r\n",
    b"250\r\n",
    b"250 \r\n",
    b"334 VXNlcm5hbWU6\r\n",
    b"220 2.0.0 Ready to start TLS\r\n250 injected\r\n",
    b"250-a\r\n550 b\r\n",
    b"250-a\n250 b\n",
    b"250 a\rb\r\n",
    b"2x0 bad\r\n",
    b"250xbad\r\n",
    b"600 out of range\r\n",
    b"250 ok\r\n\x00",
    b"250 \x1b[31mred\x1b[0m \xff\xfe\r\n",
];

/// Whole client sessions (pipelined where the client may pipeline).
fn sessions() -> Vec<(&'static str, Vec<u8>)> {
    let mut v: Vec<(&'static str, Vec<u8>)> = vec![
        ("helo_quit", b"HELO client.example\r\nQUIT\r\n".to_vec()),
        (
            "data_pipelined",
            b"EHLO client.example\r\nMAIL FROM:<a@client.example> SIZE=100\r\nRCPT TO:<b@localhost>\r\nRCPT TO:<c@localhost>\r\nDATA\r\nSubject: test\r\n\r\nHello\r\n..dot\r\n.\r\nQUIT\r\n".to_vec(),
        ),
        (
            "bdat_pipelined",
            b"EHLO client.example\r\nMAIL FROM:<a@client.example>\r\nRCPT TO:<b@localhost>\r\nBDAT 14\r\nSubject: x\r\n\r\nBDAT 6 LAST\r\nbody\r\nQUIT\r\n".to_vec(),
        ),
        (
            "two_transactions_rset",
            b"EHLO c\r\nMAIL FROM:<a@c>\r\nRCPT TO:<b@localhost>\r\nRSET\r\nMAIL FROM:<>\r\nRCPT TO:<postmaster>\r\nDATA\r\nx\r\n.\r\nNOOP\r\nVRFY x\r\nHELP\r\nQUIT\r\n".to_vec(),
        ),
        (
            "smuggle_lf_dot_lf",
            b"EHLO c\r\nMAIL FROM:<a@c>\r\nRCPT TO:<b@localhost>\r\nDATA\r\nhi\n.\nMAIL FROM:<evil@c>\r\nRCPT TO:<victim@localhost>\r\nDATA\r\nsmuggled\r\n.\r\nQUIT\r\n".to_vec(),
        ),
        (
            "smuggle_cr_dot_cr",
            b"EHLO c\r\nMAIL FROM:<a@c>\r\nRCPT TO:<b@localhost>\r\nDATA\r\nhi\r.\rMAIL FROM:<evil@c>\r\nRCPT TO:<victim@localhost>\r\nDATA\r\nsmuggled\r\n.\r\n".to_vec(),
        ),
        (
            "smuggle_lf_dot_crlf",
            b"EHLO c\r\nMAIL FROM:<a@c>\r\nRCPT TO:<b@localhost>\r\nDATA\r\nhi\n.\r\nMAIL FROM:<evil@c>\r\n.\r\n".to_vec(),
        ),
        (
            "smuggle_in_bdat",
            b"EHLO c\r\nMAIL FROM:<a@c>\r\nRCPT TO:<b@localhost>\r\nBDAT 40 LAST\r\nx\r\n.\r\nMAIL FROM:<evil@c>\r\nRSET\r\n\r\nQUIT\r\n".to_vec(),
        ),
        (
            "bdat_refused_chunk",
            b"EHLO c\r\nBDAT 20\r\nMAIL FROM:<evil@c>\r\nQUIT\r\n".to_vec(),
        ),
        ("starttls_injection", b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<evil@c>\r\nEHLO c\r\nQUIT\r\n".to_vec()),
        (
            "auth_plain_login",
            b"EHLO c\r\nAUTH PLAIN AGpvZQBzZWNyZXQ=\r\nAUTH LOGIN\r\nam9l\r\nc2VjcmV0\r\nAUTH PLAIN\r\n*\r\nMAIL FROM:<joe@c>\r\nQUIT\r\n".to_vec(),
        ),
        (
            "bad_commands",
            b"FOO\r\nMAIL FROM:<a@b>\r\nEHLO\r\nRCPT TO:<a@b>\r\nDATA\r\nBDAT x\r\n\xff\xfe\r\nEXPN x\r\nTURN\r\n".to_vec(),
        ),
        ("refused_bdat_flood", {
            let mut v = b"EHLO c\r\n".to_vec();
            for _ in 0..40 {
                v.extend_from_slice(b"BDAT 1\r\nx");
            }
            v
        }),
        ("bare_lf_commands", b"EHLO c\nMAIL FROM:<a@c>\nRCPT TO:<b@localhost>\r\nQUIT\r\n".to_vec()),
    ];
    let mut long = b"EHLO c\r\nNOOP ".to_vec();
    long.extend(std::iter::repeat_n(b'x', 2000));
    long.extend_from_slice(b"\r\nMAIL FROM:<a@c>\r\nRCPT TO:<b@localhost>\r\nDATA\r\n");
    long.extend(std::iter::repeat_n(b'y', 3000));
    long.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
    v.push(("long_lines", long));
    let mut many = b"EHLO c\r\nMAIL FROM:<a@c>\r\n".to_vec();
    for i in 0..120 {
        many.extend_from_slice(format!("RCPT TO:<u{i}@localhost>\r\n").as_bytes());
    }
    many.extend_from_slice(b"DATA\r\nx\r\n.\r\n");
    v.push(("many_recipients", many));
    v
}

/// Messages as programs pipe them to sendmail: issue 10's obsolete-syntax Bcc (`Bcc :`, `Bcc<TAB>:`),
/// mbox `From ` lines (git format-patch), continuation lines first, folded fields, no empty line, CR only.
const MESSAGES: &[&[u8]] = &[
    b"To: bob@example.test\nBcc : carol@example.test\nSubject: s\n\nbody\n",
    b"To: bob@example.test\r\nBcc\t:\r\n carol@example.test\r\nSubject: s\r\n\r\nbody\r\n",
    b"From 0123abcd Mon Sep 17 00:00:00 2001\nFrom: Me <me@example.test>\nSubject: [PATCH] fix\n\n---\ndiff\n",
    b"From : me@example.test\nTo: a@x\n\nbody",
    b" Bcc: carol@example.test\nTo: bob@example.test\n\nbody\n",
    b"From x Mon\n\tfolded\n\n",
    b"Subject: no empty line\nthis is the body\nBcc: not a header\n",
    b"Subject: no line end",
    b"X-A.B_c~!: odd but valid\nSub ject: not a field\n",
    b"Subject: a\rb\r\n\r\n",
    b"\n\nonly a body",
    b"",
    b"To: a@x,\n  b@y,\n\tc@z\nCc:\n\n",
    b"Resent-Bcc: x@y\nBCC:z@w\nbcc    :   v@u\n\n",
];

fn main() {
    for (i, m) in MESSAGES.iter().enumerate() {
        write("header", &format!("table_{i:03}"), m);
    }
    for (i, line) in COMMANDS.iter().enumerate() {
        write("command", &format!("table_{i:03}"), line);
    }
    let mut long = b"MAIL FROM:<".to_vec();
    long.extend(std::iter::repeat_n(b'a', 70));
    long.extend_from_slice(b"@");
    for _ in 0..30 {
        long.extend_from_slice(b"label0123.");
    }
    long.extend_from_slice(b"example>");
    write("command", "long_address", &long);

    for (i, body) in BODIES.iter().enumerate() {
        // header: split seed, then class 0 (bytewise) for some, 3 (1-7 bytes) for others
        let mut v = vec![i as u8, 0, (i % 2 * 3) as u8];
        v.extend_from_slice(body);
        write("data", &format!("table_{i:03}"), &v);
    }
    let mut v = vec![7, 0, 4];
    v.extend(std::iter::repeat_n(b'z', 4000));
    v.extend_from_slice(b"\r\n.\r\n");
    write("data", "long_line", &v);

    for (i, r) in REPLIES.iter().enumerate() {
        let mut v = vec![i as u8, 0, (i % 4) as u8 + 2];
        v.extend_from_slice(r);
        write("reply", &format!("table_{i:03}"), &v);
    }
    let mut v = vec![1, 0, 5];
    for i in 0..130 {
        v.extend_from_slice(format!("250-line {i}\r\n").as_bytes());
    }
    v.extend_from_slice(b"250 end\r\n");
    write("reply", "too_many_lines", &v);
    let mut v = vec![1, 0, 7, b'2', b'5', b'0', b' '];
    v.extend(std::iter::repeat_n(b'x', 600));
    v.extend_from_slice(b"\r\n");
    write("reply", "long_line", &v);

    // Session seeds: each session whole, byte by byte, and with other knobs.
    let variants = [
        ("whole", Knobs { split_class: 7, ..Knobs::default() }),
        ("bytewise", Knobs { split_seed: 1, split_class: 0, ..Knobs::default() }),
        (
            "small_limits_delay",
            Knobs { split_seed: 2, split_class: 3, config: 0b1010_0110, answer_seed: 5, ..Knobs::default() },
        ),
        ("tls_auth", Knobs { split_seed: 3, split_class: 4, repeat: 0x40, answer_seed: 1, ..Knobs::default() }),
        (
            "plain_auth_eof",
            Knobs { split_seed: 4, split_class: 5, repeat: 0x80, end: 4, answer_seed: 2, ..Knobs::default() },
        ),
        (
            "repeat_delay_shutdown",
            Knobs { split_seed: 5, split_class: 6, config: 0xC0, repeat: 0x3f, end: 0x47, answer_seed: 9 },
        ),
    ];
    for (name, s) in sessions() {
        for (vname, k) in variants {
            let mut v = k.to_bytes().to_vec();
            v.extend_from_slice(&s);
            write("server_session", &format!("{name}_{vname}"), &v);
        }
    }
    // A line without CRLF, repeated past MAX_BUFFERED_INPUT while an answer is pending.
    let mut v = Knobs { split_class: 6, config: 0xC0, repeat: 0x3f, ..Knobs::default() }.to_bytes().to_vec();
    v.extend_from_slice(b"EHLO c\r\nMAIL FROM:<a@c>\r\n");
    v.extend(std::iter::repeat_n(b'A', 1500));
    write("server_session", "flood_while_waiting", &v);

    // bdat: ops over a transaction that is already open.
    let chunk = |p: &[u8], last| BdatOp::Chunk { payload: p.to_vec(), last };
    let cases: Vec<(&str, Vec<BdatOp>)> = vec![
        ("one_last", vec![chunk(b"Subject: x\r\n\r\nbody\r\n", true)]),
        ("two_chunks", vec![chunk(b"Subject: x\r\n", false), chunk(b"\r\nbody\r\n", true)]),
        ("cr_split_across", vec![chunk(b"a\r", false), chunk(b"\nb\r\n", true)]),
        ("bare_lf", vec![chunk(b"a\nb\r\n", true), BdatOp::MailRcpt, chunk(b"ok\r\n", true)]),
        ("trailing_cr", vec![chunk(b"a\r", true)]),
        ("empty_last", vec![chunk(b"x\r\n", false), chunk(b"", true)]),
        (
            "commands_inside",
            vec![chunk(b"\r\nRSET\r\nMAIL FROM:<e@x>\r\nRCPT TO:<v@y>\r\nDATA\r\n.\r\nQUIT\r\n", true)],
        ),
        ("rset_between", vec![chunk(b"a\r\n", false), BdatOp::Rset, chunk(b"b\r\n", true)]),
        ("ehlo_between", vec![chunk(b"a\r\n", false), BdatOp::Ehlo, BdatOp::MailRcpt, chunk(b"b\r\n", true)]),
        ("mail_after_bdat", vec![chunk(b"a\r\n", false), BdatOp::MailRcpt, chunk(b"b\r\n", true), BdatOp::Noop]),
        ("big", vec![BdatOp::Big { n: 97 * 200, last: false }, BdatOp::Big { n: 97 * 20, last: true }]),
        ("no_transaction", vec![chunk(b"a\r\n", true), chunk(b"MAIL FROM:<x@y>\r\n", true)]),
    ];
    for (i, (name, ops)) in cases.into_iter().enumerate() {
        let k = Knobs {
            split_seed: i as u16,
            split_class: (i % 8) as u8,
            config: (i as u8).wrapping_mul(37) & 0xbf,
            answer_seed: i as u16,
            ..Knobs::default()
        };
        let mut v = k.to_bytes().to_vec();
        v.extend_from_slice(&encode_bdat_ops(&ops));
        write("bdat", name, &v);
    }

    // idn_domain: U-labels, A-labels, mixed case, and near misses.
    let domains: &[&str] = &[
        "bücher.example",
        "XN--BCHER-KVA.example",
        "例子.测试",
        "xn--fsqu00a.xn--0zwm56d",
        "Example.TEST",
        "straße.de",
        "xn--zz.test",
        "a..b",
        "-a.test",
        "a\u{200d}b.test",
        "\u{ff41}.example",
        "ß.ς.example",
    ];
    for (i, d) in domains.iter().enumerate() {
        write("idn_domain", &format!("table_{i:03}"), d.as_bytes());
    }
}
