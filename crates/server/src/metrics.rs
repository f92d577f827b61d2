//! The server's metrics: everything of `mailroom-metrics` (the family names, label sets, [`install`],
//! [`render`] and the [`record`] functions), plus the mapping of the server's own types onto the bounded
//! label sets: a listener role, a policy refusal, an aborted message, a TLS version.
//!
//! `mailroom serve` calls [`install`] once; whoever serves `/metrics` calls [`render`] (or
//! [`Handle::render`]) with the handle it returns (`install` again gives the same one).

pub use mailroom_metrics::*;

use mailroom_proto::server::AbortReason;
use mailroom_proto::{Enhanced, Reply};

use crate::policy::Refusal;
use crate::shared::Role;

/// The `listener` label of a role.
pub(crate) fn listener(role: Role) -> Listener {
    match role {
        Role::Smtp => Listener::Smtp,
        Role::Submission => Listener::Submission,
        Role::Submissions => Listener::Submissions,
    }
}

/// Counts a policy refusal (of a sender or a recipient) under its reason.
pub(crate) fn refusal(r: &Refusal) {
    record::refusal(refusal_reason(r));
}

/// Counts a message the session refused at the end of data; a reset (RSET, QUIT, a timeout, the
/// connection lost in the middle of BDAT) is not a refusal.
pub(crate) fn data_aborted(reason: AbortReason) {
    let reason = match reason {
        AbortReason::TooBig | AbortReason::HeaderTooLarge => RefusalReason::TooBig,
        AbortReason::BareLineEnding => RefusalReason::BareLineEnding,
        AbortReason::Reset => return,
    };
    record::refusal(reason);
}

/// The reason label of a refusal: the policy's own word where it names one of the fixed reasons, else
/// what the reply's enhanced status code (RFC 3463) says, so that a check added later (quota, SPF,
/// DMARC) lands in a meaningful bucket without being listed here.
pub(crate) fn refusal_reason(r: &Refusal) -> RefusalReason {
    match r.reason {
        "no such user" => RefusalReason::NoSuchUser,
        "relaying denied" | "address literal" => RefusalReason::RelayDenied,
        "sender is not the authenticated user's address" => RefusalReason::SenderNotOwned,
        "message rate" => RefusalReason::RateLimited,
        "null MX" => RefusalReason::NullMx,
        _ => reason_of_reply(&r.reply),
    }
}

/// The reason label an enhanced status code stands for (RFC 3463 §3: subject.detail).
pub(crate) fn reason_of_reply(reply: &Reply) -> RefusalReason {
    match reply.enhanced {
        Some(Enhanced(_, 1, 1)) => RefusalReason::NoSuchUser,
        Some(Enhanced(_, 1, 10)) => RefusalReason::NullMx,
        Some(Enhanced(_, 2, 2)) => RefusalReason::MailboxFull,
        Some(Enhanced(_, 3, 4)) => RefusalReason::TooBig,
        Some(Enhanced(_, 4, 6)) => RefusalReason::MailLoop,
        Some(Enhanced(_, 7, _)) => RefusalReason::Policy,
        _ if reply.code / 100 == 4 => RefusalReason::Temporary,
        _ => RefusalReason::Other,
    }
}

/// The `version` label of a completed handshake.
pub(crate) fn tls_version(v: Option<rustls::ProtocolVersion>) -> TlsVersion {
    match v {
        Some(rustls::ProtocolVersion::TLSv1_2) => TlsVersion::Tls12,
        Some(rustls::ProtocolVersion::TLSv1_3) => TlsVersion::Tls13,
        _ => TlsVersion::Other,
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Instant;

    use mailroom_proto::ForwardPath;

    use super::*;
    use crate::limits::{IpLimits, PerIp};
    use crate::policy::{Client, Policy};

    fn policy(data: &std::path::Path) -> Policy {
        let store = mailroom_store::Store::open(data).unwrap();
        mailroom_store::users::UserDirectory::new(data).add("alice@example.test", None).unwrap();
        Policy::new(vec!["example.test".into()], store, PerIp::new(IpLimits::default()))
    }

    fn rcpt(s: &str) -> ForwardPath {
        mailroom_proto::address::parse_forward_path(s.as_bytes()).unwrap().0
    }

    /// The policy's own refusals get their own reasons, not `other`: if a reason's wording changes in
    /// policy.rs, this fails rather than the metric quietly moving.
    #[test]
    fn policy_refusals_map_to_their_reasons() {
        let data = tempfile::tempdir().unwrap();
        let p = policy(data.path());
        let anon = Client { ip: IpAddr::V4(Ipv4Addr::LOCALHOST), authenticated: None };
        let reason = |to: &str| refusal_reason(&p.route_rcpt(anon, &rcpt(to)).unwrap_err());
        assert_eq!(reason("<nobody@example.test>"), RefusalReason::NoSuchUser);
        assert_eq!(reason("<someone@elsewhere.test>"), RefusalReason::RelayDenied);
        assert_eq!(reason("<someone@[192.0.2.1]>"), RefusalReason::RelayDenied);
        let alice = Client { authenticated: Some("alice@example.test"), ..anon };
        let from = mailroom_proto::address::parse_reverse_path(b"<mallory@example.test>").unwrap().0;
        let refused = p.check_sender(alice, &from, Instant::now()).unwrap_err();
        assert_eq!(refusal_reason(&refused), RefusalReason::SenderNotOwned);
    }

    #[test]
    fn unknown_refusals_fall_back_to_their_status_code() {
        let r = |code, e, reason| Refusal { reply: Reply::new(code, e, "x"), reason };
        assert_eq!(refusal_reason(&r(552, Enhanced(5, 2, 2), "quota")), RefusalReason::MailboxFull);
        assert_eq!(refusal_reason(&r(550, Enhanced(5, 7, 26), "dmarc")), RefusalReason::Policy);
        assert_eq!(refusal_reason(&r(451, Enhanced(4, 3, 0), "unavailable")), RefusalReason::Temporary);
        assert_eq!(refusal_reason(&r(550, Enhanced(5, 1, 10), "null mx")), RefusalReason::NullMx);
        assert_eq!(refusal_reason(&r(554, Enhanced(5, 6, 0), "odd")), RefusalReason::Other);
    }
}
