//! The metric families (name, type, unit, HELP text) and the bounded label sets. Names follow the
//! Prometheus conventions: a `mailroom_` prefix, `_total` on counters, base units (seconds, bytes) named
//! in the suffix, and label values drawn from the fixed enums below.

/// What kind of metric a family is (its `# TYPE` line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric family: what `# HELP` and `# TYPE` say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

pub const SESSIONS_TOTAL: &str = "mailroom_sessions_total";
pub const SESSIONS_ACTIVE: &str = "mailroom_sessions_active";
pub const MESSAGES_RECEIVED: &str = "mailroom_messages_received_total";
pub const RECEIVED_BYTES: &str = "mailroom_received_bytes_total";
pub const SMTP_REPLIES: &str = "mailroom_smtp_replies_total";
pub const REFUSALS: &str = "mailroom_refusals_total";
pub const STORE_COMMIT_SECONDS: &str = "mailroom_store_commit_duration_seconds";
pub const DELIVERY_ATTEMPTS: &str = "mailroom_delivery_attempts_total";
pub const QUEUE_RECIPIENTS: &str = "mailroom_queue_recipients";
pub const QUEUE_MESSAGES: &str = "mailroom_queue_messages";
pub const QUEUE_OLDEST_AGE: &str = "mailroom_queue_oldest_message_age_seconds";
pub const SMTP_AUTH_FAILURES: &str = "mailroom_smtp_auth_failures_total";
pub const TLS_HANDSHAKES: &str = "mailroom_tls_handshakes_total";
pub const TLS_HANDSHAKE_FAILURES: &str = "mailroom_tls_handshake_failures_total";
pub const AUTH_RESULTS: &str = "mailroom_auth_results_total";

/// Every family mailroom exports, in the order of the README's table.
pub const FAMILIES: &[Family] = &[
    Family { name: SESSIONS_TOTAL, kind: Kind::Counter, help: "SMTP sessions opened, by listener." },
    Family { name: SESSIONS_ACTIVE, kind: Kind::Gauge, help: "SMTP sessions open now, by listener." },
    Family {
        name: MESSAGES_RECEIVED,
        kind: Kind::Counter,
        help: "Messages received and made durable (answered 250 after the end of data).",
    },
    Family {
        name: RECEIVED_BYTES,
        kind: Kind::Counter,
        help: "Bytes of the messages received, as stored (with the trace headers, LF line ends).",
    },
    Family { name: SMTP_REPLIES, kind: Kind::Counter, help: "SMTP replies sent to clients, by code class." },
    Family {
        name: REFUSALS,
        kind: Kind::Counter,
        help: "Connections, senders, recipients and messages refused, by reason.",
    },
    Family {
        name: STORE_COMMIT_SECONDS,
        kind: Kind::Histogram,
        help: "Time the store took to make a received message durable in its mailboxes and the queue.",
    },
    Family {
        name: DELIVERY_ATTEMPTS,
        kind: Kind::Counter,
        help: "Outbound delivery attempts per recipient, by result.",
    },
    Family { name: QUEUE_RECIPIENTS, kind: Kind::Gauge, help: "Recipients waiting in the outbound queue, by state." },
    Family { name: QUEUE_MESSAGES, kind: Kind::Gauge, help: "Messages in the outbound queue." },
    Family {
        name: QUEUE_OLDEST_AGE,
        kind: Kind::Gauge,
        help: "Age of the oldest message in the outbound queue (0 when it is empty).",
    },
    Family { name: SMTP_AUTH_FAILURES, kind: Kind::Counter, help: "SMTP AUTH attempts that failed." },
    Family {
        name: TLS_HANDSHAKES,
        kind: Kind::Counter,
        help: "TLS handshakes completed by the SMTP listeners, by protocol version.",
    },
    Family {
        name: TLS_HANDSHAKE_FAILURES,
        kind: Kind::Counter,
        help: "TLS handshakes that failed or timed out (implicit TLS and STARTTLS).",
    },
    Family {
        name: AUTH_RESULTS,
        kind: Kind::Counter,
        help: "Results of the inbound message authentication checks, by method and result (RFC 8601).",
    },
];

/// Bucket bounds of [`STORE_COMMIT_SECONDS`]: 100 µs (a commit on tmpfs or a fast NVMe write cache) to
/// 1 s (a disk that is struggling); a commit is a few fdatasyncs and fsyncs.
pub const COMMIT_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// A fixed set of label values: an enum whose variants are `0..N` in order (so a variant indexes the
/// handles registered for it) and whose label text is static.
macro_rules! label_set {
    ($(#[$m:meta])* $name:ident, $label:literal { $($(#[$vm:meta])* $variant:ident => $value:literal,)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $variant,)+
        }

        impl $name {
            /// The label's name.
            pub const LABEL: &'static str = $label;
            /// Every value, in declaration order (`v as usize` is its index here).
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The label's value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $value,)+
                }
            }
        }
    };
}

label_set! {
    /// The listener role a session came in on.
    Listener, "listener" {
        Smtp => "smtp",
        Submission => "submission",
        Submissions => "submissions",
    }
}

label_set! {
    /// The class of an SMTP reply code (RFC 5321 §4.2.1: the first digit).
    ReplyClass, "class" {
        Positive => "2xx",
        Intermediate => "3xx",
        Transient => "4xx",
        Permanent => "5xx",
    }
}

label_set! {
    /// Why a connection, sender, recipient or message was refused. Refusals that fit none of these (a
    /// check added later that no one mapped yet) count as `other`.
    RefusalReason, "reason" {
        /// The per-address connection limit or rate, or every connection slot taken (421 at connect).
        ConnectionLimit => "connection_limit",
        /// The per-address message rate at MAIL.
        RateLimited => "rate_limited",
        /// An authenticated user sending as someone else (RFC 6409 §6.1).
        SenderNotOwned => "sender_not_owned",
        /// A recipient in a served domain that no user or alias takes.
        NoSuchUser => "no_such_user",
        /// A recipient in a domain not served here, from a client that may not relay.
        RelayDenied => "relay_denied",
        /// A recipient domain that publishes a null MX (RFC 7505).
        NullMx => "null_mx",
        /// A mailbox over its quota (X.2.2).
        MailboxFull => "mailbox_full",
        /// Larger than the size limit, or a header section too large (X.3.4).
        TooBig => "too_big",
        /// A bare CR or LF in the data (the SMTP smuggling defence).
        BareLineEnding => "bare_line_ending",
        /// Too many Received headers (X.4.6).
        MailLoop => "mail_loop",
        /// A local policy check other than the above (X.7.x): SPF, DMARC and the like.
        Policy => "policy",
        /// A temporary local failure (the user directory or a mailbox unavailable).
        Temporary => "temporary",
        Other => "other",
    }
}

label_set! {
    /// What one outbound delivery attempt for one recipient came to.
    DeliveryResult, "result" {
        /// Accepted by the next hop (delivered or relayed).
        Delivered => "delivered",
        /// A temporary failure: tried again later.
        Deferred => "deferred",
        /// A permanent failure or an expiry: a bounce.
        Bounced => "bounced",
    }
}

label_set! {
    /// Where a queued recipient stands.
    QueueState, "state" {
        /// Not attempted yet.
        Pending => "pending",
        /// Failed temporarily, waiting for its next attempt.
        Deferred => "deferred",
        /// An attempt under way now.
        InFlight => "in_flight",
    }
}

label_set! {
    /// The TLS version a handshake agreed (mailroom refuses anything older than 1.2).
    TlsVersion, "version" {
        Tls12 => "1.2",
        Tls13 => "1.3",
        Other => "other",
    }
}

label_set! {
    /// A message authentication method (RFC 8601 method names).
    AuthMethod, "method" {
        Spf => "spf",
        Dkim => "dkim",
        Dmarc => "dmarc",
        Arc => "arc",
    }
}

label_set! {
    /// A message authentication result (the RFC 8601 result keywords of SPF, DKIM, DMARC and ARC).
    AuthResult, "result" {
        Pass => "pass",
        Fail => "fail",
        SoftFail => "softfail",
        Neutral => "neutral",
        None => "none",
        Policy => "policy",
        TempError => "temperror",
        PermError => "permerror",
        Other => "other",
    }
}

impl AuthResult {
    /// The result for an RFC 8601 keyword as written in Authentication-Results (any case); an unknown
    /// keyword is [`AuthResult::Other`], so the label set stays bounded.
    pub fn from_keyword(keyword: &str) -> AuthResult {
        AuthResult::ALL
            .iter()
            .copied()
            .find(|r| *r != AuthResult::Other && r.as_str().eq_ignore_ascii_case(keyword))
            .unwrap_or(AuthResult::Other)
    }
}

impl ReplyClass {
    /// The class of a reply code's first digit; `None` for anything that is not 2 to 5.
    pub fn of_digit(first: u8) -> Option<ReplyClass> {
        match first {
            b'2' => Some(ReplyClass::Positive),
            b'3' => Some(ReplyClass::Intermediate),
            b'4' => Some(ReplyClass::Transient),
            b'5' => Some(ReplyClass::Permanent),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_end_in_total_and_others_do_not() {
        for f in FAMILIES {
            assert!(f.name.starts_with("mailroom_"), "{}", f.name);
            assert_eq!(f.kind == Kind::Counter, f.name.ends_with("_total"), "{}", f.name);
        }
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = FAMILIES.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FAMILIES.len());
    }

    #[test]
    fn variants_index_their_label_sets() {
        for (i, r) in RefusalReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        for (i, r) in AuthResult::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }

    #[test]
    fn auth_result_keywords_map_to_a_bounded_set() {
        assert_eq!(AuthResult::from_keyword("pass"), AuthResult::Pass);
        assert_eq!(AuthResult::from_keyword("SoftFail"), AuthResult::SoftFail);
        assert_eq!(AuthResult::from_keyword("temperror"), AuthResult::TempError);
        assert_eq!(AuthResult::from_keyword("hardfail"), AuthResult::Other);
        assert_eq!(AuthResult::from_keyword("other"), AuthResult::Other);
    }

    #[test]
    fn reply_classes_by_first_digit() {
        assert_eq!(ReplyClass::of_digit(b'2'), Some(ReplyClass::Positive));
        assert_eq!(ReplyClass::of_digit(b'5'), Some(ReplyClass::Permanent));
        assert_eq!(ReplyClass::of_digit(b'1'), None);
    }
}
