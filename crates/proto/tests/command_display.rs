//! `Command` and `MailParams` written with `Display` parse back to the same value: the client writes its
//! commands this way, and the server reads them with the same parser.

use mailroom_proto::command::Command;
use mailroom_proto::params::{
    parse_mail_params, parse_rcpt_params, AddrType, Body, MailParams, Notify, Orcpt, RcptParams, Ret,
};
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
    let ret = prop_oneof![Just(None), Just(Some(Ret::Full)), Just(Some(Ret::Hdrs))];
    // ENVID: printable US-ASCII (RFC 3461 §4.4), short enough that its xtext stays within 100 characters.
    let envid = proptest::option::of("[ -~]{1,33}");
    (proptest::option::of(any::<u64>()), body, any::<bool>(), auth, ret, envid)
        .prop_map(|(size, body, smtputf8, auth, ret, envid)| MailParams { size, body, smtputf8, auth, ret, envid })
}

/// NOTIFY: NEVER or any non-empty combination; ORCPT of the rfc822, utf-8 and other types, with addresses
/// that need xtext or `\x{}` escapes.
fn rcpt_params() -> impl Strategy<Value = RcptParams> {
    let notify = proptest::option::of(
        (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(success, failure, delay)| Notify {
            success,
            failure,
            delay,
        }),
    );
    let addr_type =
        prop_oneof![Just(AddrType::Rfc822), Just(AddrType::Utf8), "x-[a-z0-9]{1,8}".prop_map(AddrType::Other),];
    let orcpt = proptest::option::of(
        (addr_type, "[^\\p{C}]{1,40}").prop_map(|(addr_type, address)| Orcpt { addr_type, address }),
    );
    (notify, orcpt).prop_map(|(notify, orcpt)| RcptParams { notify, orcpt })
}

fn command() -> impl Strategy<Value = Command> {
    let name = "[a-zA-Z0-9.:\\[\\]-]{1,30}";
    prop_oneof![
        name.prop_map(Command::Helo),
        name.prop_map(Command::Ehlo),
        (reverse_path(), mail_params()).prop_map(|(from, params)| Command::Mail { from, params }),
        (forward_path(), rcpt_params()).prop_map(|(to, params)| Command::Rcpt { to, params }),
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

    #[test]
    fn rcpt_params_parse_back_from_their_display(p in rcpt_params()) {
        prop_assert_eq!(parse_rcpt_params(&p.to_string()), Ok(p));
    }
}

#[test]
fn wire_forms() {
    let a = Address::parse("\"john doe\"@example.org").unwrap();
    let mail = Command::Mail {
        from: ReversePath::Mailbox(a),
        params: MailParams {
            size: Some(10),
            body: Some(Body::EightBitMime),
            smtputf8: true,
            auth: Some(None),
            ret: Some(Ret::Hdrs),
            envid: Some("id=1+2".into()),
        },
    };
    assert_eq!(
        mail.to_string(),
        "MAIL FROM:<\"john doe\"@example.org> SIZE=10 BODY=8BITMIME SMTPUTF8 AUTH=<> RET=HDRS ENVID=id+3D1+2B2"
    );
    assert_eq!(Command::Mail { from: ReversePath::Null, params: MailParams::default() }.to_string(), "MAIL FROM:<>");
    assert_eq!(
        Command::Rcpt { to: ForwardPath::Postmaster, params: RcptParams::default() }.to_string(),
        "RCPT TO:<postmaster>"
    );
    let params = RcptParams {
        notify: Some(Notify { success: true, failure: true, delay: false }),
        orcpt: Some(Orcpt { addr_type: AddrType::Utf8, address: "jö+ran@x.example".into() }),
    };
    assert_eq!(
        Command::Rcpt { to: ForwardPath::Postmaster, params }.to_string(),
        "RCPT TO:<postmaster> NOTIFY=SUCCESS,FAILURE ORCPT=utf-8;j\\x{F6}\\x{2B}ran@x.example"
    );
    let never = RcptParams {
        notify: Some(Notify::NEVER),
        orcpt: Some(Orcpt { addr_type: AddrType::Rfc822, address: "a b@x".into() }),
    };
    assert_eq!(never.to_string(), "NOTIFY=NEVER ORCPT=rfc822;a+20b@x");
    assert_eq!(Command::Bdat { size: 5, last: true }.to_string(), "BDAT 5 LAST");
    assert_eq!(Command::Auth("PLAIN".into()).to_string(), "AUTH PLAIN");
    let auth = MailParams { auth: Some(Some("a b+c=d".into())), ..MailParams::default() };
    assert_eq!(auth.to_string(), "AUTH=a+20b+2Bc+3Dd");
}
