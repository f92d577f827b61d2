//! `Command` and `MailParams` written with `Display` parse back to the same value: the client writes its
//! commands this way, and the server reads them with the same parser.

use mailroom_proto::command::Command;
use mailroom_proto::params::{parse_mail_params, Body, MailParams};
use mailroom_proto::{Address, ForwardPath, ReversePath};
use proptest::prelude::*;

/// Local parts: dot-atoms, quoted strings (with spaces, quotes and backslashes inside) and UTF-8 (RFC 6531).
fn local_part() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,10}(\\.[a-zA-Z0-9_-]{1,8}){0,2}",
        "\"[a-zA-Z0-9 .@,:<>\\\\\"]{0,12}\"",
        "[a-zäöüßéø日本]{1,8}(\\.[a-zé]{1,5})?",
    ]
}

fn domain() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9]{1,10}(-[a-z0-9]{1,5})?(\\.[a-z]{2,6}){1,2}",
        "[a-zäöü]{1,8}\\.[a-z]{2,4}",
        (0u8..=255, 0u8..=255, 0u8..=255, 1u8..=254).prop_map(|(a, b, c, d)| format!("[{a}.{b}.{c}.{d}]")),
    ]
}

fn address() -> impl Strategy<Value = Address> {
    (local_part(), domain()).prop_filter_map("not an address", |(l, d)| Address::parse(&format!("{l}@{d}")).ok())
}

fn reverse_path() -> impl Strategy<Value = ReversePath> {
    prop_oneof![Just(ReversePath::Null), address().prop_map(ReversePath::Mailbox)]
}

fn forward_path() -> impl Strategy<Value = ForwardPath> {
    prop_oneof![Just(ForwardPath::Postmaster), address().prop_map(ForwardPath::Mailbox)]
}

fn mail_params() -> impl Strategy<Value = MailParams> {
    let body = prop_oneof![Just(None), Just(Some(Body::SevenBit)), Just(Some(Body::EightBitMime))];
    // AUTH= values: any printable text (xtext-encoded on the wire), or `<>`.
    let auth = prop_oneof![
        Just(None),
        Just(Some(None)),
        "[^\\p{C}]{1,20}".prop_map(|s| Some(Some(s))),
        "[a-z]{1,8}@[a-z]{1,8}\\.example[+= ]?".prop_map(|s| Some(Some(s))),
    ];
    (proptest::option::of(any::<u64>()), body, any::<bool>(), auth)
        .prop_map(|(size, body, smtputf8, auth)| MailParams { size, body, smtputf8, auth })
}

fn command() -> impl Strategy<Value = Command> {
    let name = "[a-zA-Z0-9.:\\[\\]-]{1,30}";
    prop_oneof![
        name.prop_map(Command::Helo),
        name.prop_map(Command::Ehlo),
        (reverse_path(), mail_params()).prop_map(|(from, params)| Command::Mail { from, params }),
        forward_path().prop_map(|to| Command::Rcpt { to }),
        Just(Command::Data),
        (any::<u64>(), any::<bool>()).prop_map(|(size, last)| Command::Bdat { size, last }),
        Just(Command::Rset),
        Just(Command::Noop),
        Just(Command::Quit),
        Just(Command::Vrfy),
        Just(Command::Expn),
        Just(Command::Help),
        Just(Command::StartTls),
        prop_oneof![Just(String::new()), "(PLAIN|LOGIN|CRAM-MD5)( [A-Za-z0-9+/]{1,20}={0,2})?"].prop_map(Command::Auth),
        Just(Command::NotImplemented),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn commands_parse_back_from_their_display(cmd in command()) {
        let line = cmd.to_string();
        prop_assert!(!line.contains('\r') && !line.contains('\n'), "{line:?}");
        prop_assert_eq!(Command::parse(line.as_bytes()), Ok(cmd), "{:?}", line);
    }

    #[test]
    fn mail_params_parse_back_from_their_display(p in mail_params()) {
        prop_assert_eq!(parse_mail_params(&p.to_string()), Ok(p));
    }
}

#[test]
fn wire_forms() {
    let a = Address::parse("\"john doe\"@example.org").unwrap();
    let mail = Command::Mail {
        from: ReversePath::Mailbox(a),
        params: MailParams { size: Some(10), body: Some(Body::EightBitMime), smtputf8: true, auth: Some(None) },
    };
    assert_eq!(mail.to_string(), "MAIL FROM:<\"john doe\"@example.org> SIZE=10 BODY=8BITMIME SMTPUTF8 AUTH=<>");
    assert_eq!(Command::Mail { from: ReversePath::Null, params: MailParams::default() }.to_string(), "MAIL FROM:<>");
    assert_eq!(Command::Rcpt { to: ForwardPath::Postmaster }.to_string(), "RCPT TO:<postmaster>");
    assert_eq!(Command::Bdat { size: 5, last: true }.to_string(), "BDAT 5 LAST");
    assert_eq!(Command::Auth("PLAIN".into()).to_string(), "AUTH PLAIN");
    let auth = MailParams { auth: Some(Some("a b+c=d".into())), ..MailParams::default() };
    assert_eq!(auth.to_string(), "AUTH=a+20b+2Bc+3Dd");
}
