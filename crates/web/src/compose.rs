//! Compose and send: the API route `POST /api/v1/messages/send` and what the compose page shares with
//! it. The message is built here (From, To, Cc, Subject, Date, Message-ID, In-Reply-To, References, a
//! text part; Bcc only in the envelope) and handed to the server's in-process submission
//! (`mailroom_server::submit`), which decides exactly as for the user's own SMTP AUTH submission: the
//! sender binding, routing, limits, DKIM signing and the commit. Unless the draft says
//! `save_copy: false`, the same commit keeps a copy in the sender's `Sent` folder, then marked read.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use mail_builder::headers::address::Address as MbAddress;
use mail_builder::MessageBuilder;
use mail_parser::{HeaderName, MessageParser};
use mailroom_proto::Address;
use mailroom_server::submit::{Submission, SubmitError};
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::errors::{ApiError, ApiResult};
use crate::listener::Peer;
use crate::state::{AppState, MAX_COMPOSE_REQUEST};

/// Longest subject, in characters: one header line's limit (RFC 5322 §2.1.1, 998 octets).
pub const MAX_SUBJECT: usize = 998;
/// Longest address entry (display name and address), in octets.
pub const MAX_ADDRESS_ENTRY: usize = 512;
/// Entries taken in To, Cc and Bcc together before they are parsed (the server's `[limits]
/// max_recipients` then applies to the distinct addresses).
pub const MAX_ADDRESS_ENTRIES: usize = 1000;
/// Message ids taken in `references` (a long thread keeps its newest ones).
pub const MAX_REFERENCES: usize = 100;
/// Longest message id (`<...>`) taken in `in_reply_to` / `references`.
pub const MAX_MESSAGE_ID: usize = 998;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/messages/send", post(send)).layer(axum::extract::DefaultBodyLimit::max(MAX_COMPOSE_REQUEST))
}

/// A message to send, as the API and the compose page take it.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Draft {
    /// The sender; absent: the user's own address.
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Vec<String>,
    #[serde(default)]
    pub cc: Vec<String>,
    /// Envelope recipients only: never written into the message.
    #[serde(default)]
    pub bcc: Vec<String>,
    #[serde(default)]
    pub subject: String,
    #[serde(default)]
    pub text: String,
    /// The message replied to (`<id@host>`).
    #[serde(default)]
    pub in_reply_to: Option<String>,
    #[serde(default)]
    pub references: Vec<String>,
    /// Keep a copy in the sender's `Sent` folder, marked read (the default).
    #[serde(default)]
    pub save_copy: Option<bool>,
}

/// What the API answers for a message sent.
#[derive(Debug, Serialize)]
pub struct Sent {
    /// The store's id of the message (as in SMTP's 250 reply).
    pub id: String,
    /// Its Message-ID field.
    pub message_id: String,
    /// Local mailboxes it was stored in.
    pub local: usize,
    /// Addresses queued for delivery to other servers.
    pub queued: usize,
    /// A copy is in the sender's `Sent` folder.
    pub saved: bool,
}

type Mailbox = (Option<String>, Address);

/// One `Name <addr>` or `addr` entry: the address checked as SMTP checks one (ASCII only: the
/// composer writes no SMTPUTF8 messages), the name free of control characters.
pub fn parse_mailbox(entry: &str) -> Result<Mailbox, ApiError> {
    let bad = |why: &str| ApiError::bad_request(format!("{why}: {}", entry.chars().take(80).collect::<String>()));
    let entry = entry.trim();
    if entry.len() > MAX_ADDRESS_ENTRY || entry.chars().any(char::is_control) {
        return Err(invalid_recipient(bad("address too long or with control characters")));
    }
    let (name, addr) = match entry.strip_suffix('>').and_then(|e| e.rsplit_once('<')) {
        Some((name, addr)) => {
            let name = name.trim().trim_matches('"').trim();
            ((!name.is_empty()).then(|| name.to_owned()), addr.trim())
        }
        None => (None, entry),
    };
    // An internationalized domain (bob@bücher.example) is written as its A-label (xn--...), which every
    // server takes; a non-ASCII local part would need SMTPUTF8 (RFC 6531) end to end.
    let ascii;
    let addr = if addr.is_ascii() {
        addr
    } else {
        match addr.rsplit_once('@') {
            Some((local, domain)) if local.is_ascii() => {
                let domain = mailroom_store::domain::canonical_domain(domain)
                    .map_err(|_| invalid_recipient(bad("not a domain name")))?;
                ascii = format!("{local}@{domain}");
                ascii.as_str()
            }
            _ => {
                return Err(invalid_recipient(bad(
                    "a non-ASCII local part needs SMTPUTF8, which the web interface does not compose",
                )))
            }
        }
    };
    let address = Address::parse(addr).map_err(|_| invalid_recipient(bad("not an address")))?;
    Ok((name, address))
}

fn invalid_recipient(e: ApiError) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_recipient", e.message)
}

/// A comma-separated list as the compose form has it; commas inside quotes or angle brackets stay.
pub fn split_list(list: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted, mut angle) = (Vec::new(), String::new(), false, false);
    for c in list.chars() {
        match c {
            '"' => quoted = !quoted,
            '<' => angle = true,
            '>' => angle = false,
            ',' | ';' if !quoted && !angle => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()
}

/// A message id as `<...>`, checked: printable ASCII, no spaces, bounded.
fn message_id(id: &str) -> Result<String, ApiError> {
    let id = id.trim();
    let inner = id.strip_prefix('<').and_then(|i| i.strip_suffix('>')).unwrap_or(id);
    let ok = !inner.is_empty()
        && inner.len() <= MAX_MESSAGE_ID
        && inner.bytes().all(|b| b.is_ascii_graphic() && !b"<>()\\\"".contains(&b));
    if !ok {
        return Err(ApiError::bad_request("in_reply_to/references: a message id like <id@host>"));
    }
    Ok(inner.to_owned())
}

/// The checked parts of a draft.
struct Checked {
    from: Mailbox,
    to: Vec<Mailbox>,
    cc: Vec<Mailbox>,
    /// Every envelope recipient (To, Cc, Bcc), each address once.
    rcpts: Vec<Address>,
    in_reply_to: Option<String>,
    references: Vec<String>,
}

fn check(draft: &Draft, user: &str) -> ApiResult<Checked> {
    if draft.subject.chars().count() > MAX_SUBJECT || draft.subject.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!("subject: one line of at most {MAX_SUBJECT} characters")));
    }
    if draft.to.len() + draft.cc.len() + draft.bcc.len() > MAX_ADDRESS_ENTRIES {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "too_many_recipients", "too many recipients"));
    }
    let from = parse_mailbox(draft.from.as_deref().unwrap_or(user))
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_sender", e.message))?;
    let list = |l: &[String]| l.iter().map(|e| parse_mailbox(e)).collect::<ApiResult<Vec<_>>>();
    let (to, cc, bcc) = (list(&draft.to)?, list(&draft.cc)?, list(&draft.bcc)?);
    let mut rcpts: Vec<Address> = Vec::new();
    for (_, a) in to.iter().chain(&cc).chain(&bcc) {
        if !rcpts.iter().any(|r| r.to_string().eq_ignore_ascii_case(&a.to_string())) {
            rcpts.push(a.clone());
        }
    }
    if rcpts.is_empty() {
        return Err(invalid_recipient(ApiError::bad_request("at least one recipient (to, cc or bcc)")));
    }
    let in_reply_to = draft.in_reply_to.as_deref().filter(|s| !s.trim().is_empty()).map(message_id).transpose()?;
    let skip = draft.references.len().saturating_sub(MAX_REFERENCES);
    let references = draft.references.iter().skip(skip).map(|r| message_id(r)).collect::<ApiResult<Vec<_>>>()?;
    Ok(Checked { from, to, cc, rcpts, in_reply_to, references })
}

fn mb(m: &Mailbox) -> MbAddress<'static> {
    MbAddress::new_address(m.0.clone(), m.1.to_string())
}

/// A new Message-ID at the sender's domain: random, so it says nothing about the server.
fn new_message_id(from: &Address) -> ApiResult<String> {
    let random = crate::tokens::random_hex(16).map_err(ApiError::internal)?;
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Ok(format!("{secs}.{random}@{}", from.domain().as_str()))
}

/// The RFC 5322 message (CRLF line ends) and its Message-ID; Bcc is not in it.
fn build(draft: &Draft, c: &Checked) -> ApiResult<(Vec<u8>, String)> {
    let id = new_message_id(&c.from.1)?;
    let mut b = MessageBuilder::new()
        .from(mb(&c.from))
        .message_id(id.clone())
        .date(mail_builder::headers::date::Date::now())
        .subject(draft.subject.clone());
    if !c.to.is_empty() {
        b = b.to(MbAddress::new_list(c.to.iter().map(mb).collect()));
    }
    if !c.cc.is_empty() {
        b = b.cc(MbAddress::new_list(c.cc.iter().map(mb).collect()));
    }
    if let Some(r) = &c.in_reply_to {
        b = b.in_reply_to(r.clone());
    }
    if !c.references.is_empty() {
        b = b.references(c.references.clone());
    }
    // Line ends as the browser sent them (CRLF in forms) become the builder's own.
    let text = draft.text.replace("\r\n", "\n").replace('\r', "\n");
    let bytes = b.text_body(text).write_to_vec().map_err(ApiError::internal)?;
    Ok((bytes, format!("<{id}>")))
}

/// Checks, builds and submits a draft as `caller`, from `peer`.
pub async fn submit(state: &AppState, caller: &Caller, peer: Peer, draft: &Draft) -> ApiResult<Sent> {
    let Some(submitter) = state.submitter.clone() else {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "submission_unavailable", "sending is off here"));
    };
    let checked = check(draft, &caller.address)?;
    let (message, message_id) = build(draft, &checked)?;
    let submission = Submission {
        user: caller.address.clone(),
        client: peer.addr.ip(),
        protocol: if peer.is_tls { "HTTPS" } else { "HTTP" },
        from: checked.from.1.clone(),
        rcpts: checked.rcpts,
        message,
        keep_copy: draft.save_copy.unwrap_or(true),
    };
    let done = submitter.submit(submission).await.map_err(submit_error)?;
    if done.kept {
        mark_sent_copy_read(state, caller, &done.id).await;
    }
    Ok(Sent { id: done.id, message_id, local: done.local, queued: done.queued, saved: done.kept })
}

/// How long marking the Sent copy read waits for the store to make it durable in `.Sent/new/`.
const SENT_COPY_SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// The copy in `Sent` is the user's own message: read, as a mail client's saved copy is. It was
/// committed (and so is in `.Sent/new/`) before this; it is moved to `cur/` only once the store's
/// background stage has made its data durable (usually milliseconds), so that the move cannot make a
/// name durable before its data. A failure or a slow disk leaves it unread, nothing worse.
async fn mark_sent_copy_read(state: &AppState, caller: &Caller, id: &str) {
    let mailbox = caller.mailbox.clone();
    let store = state.store.clone();
    let id = id.to_owned();
    let marked = tokio::task::spawn_blocking(move || -> std::io::Result<bool> {
        if !store.settle(SENT_COPY_SETTLE) {
            return Ok(false);
        }
        let Some(folder) = crate::mail::open_folder(&mailbox, mailroom_store::store::SENT_FOLDER) else {
            return Ok(false);
        };
        match folder.find(&id)? {
            Some(entry) if !entry.is_seen() => folder.set_seen(&entry, true).map(|()| true),
            Some(_) => Ok(true),
            None => Ok(false),
        }
    })
    .await;
    match marked {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => {
            tracing::warn!(user = %caller.address, "the Sent copy was not found, or not yet durable, to mark it read")
        }
        Ok(Err(error)) => tracing::warn!(user = %caller.address, %error, "cannot mark the Sent copy read"),
        Err(error) => tracing::warn!(user = %caller.address, %error, "cannot mark the Sent copy read"),
    }
}

/// The stable code and status of each refusal.
fn submit_error(e: SubmitError) -> ApiError {
    let text = e.to_string();
    let (status, code) = match &e {
        SubmitError::SenderNotAllowed(_) => (StatusCode::FORBIDDEN, "sender_not_allowed"),
        SubmitError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        SubmitError::NoRecipients => (StatusCode::BAD_REQUEST, "invalid_recipient"),
        SubmitError::TooManyRecipients { .. } => (StatusCode::BAD_REQUEST, "too_many_recipients"),
        SubmitError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "message_too_large"),
        SubmitError::Recipient { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "recipient_refused"),
        // The store could not take it (disk full, ...): try again later.
        SubmitError::Refused(r) if r.is_transient() => (StatusCode::SERVICE_UNAVAILABLE, "submission_failed"),
        SubmitError::Refused(_) => (StatusCode::UNPROCESSABLE_ENTITY, "message_refused"),
    };
    ApiError::new(status, code, text)
}

async fn send(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ConnectInfo(peer): ConnectInfo<Peer>,
    json: Result<Json<Draft>, JsonRejection>,
) -> ApiResult<Json<Sent>> {
    let draft = crate::api::body(json)?;
    submit(&state, &caller, peer, &draft).await.map(Json)
}

/// The compose form pre-filled to answer (or forward) a message: its raw bytes.
pub fn reply_draft(raw: &[u8], forward: bool) -> Draft {
    let Some(m) = MessageParser::default().parse_headers(raw) else { return Draft::default() };
    let text = |h: HeaderName| m.header(h).map(crate::mail::header_text).unwrap_or_default();
    let subject = text(HeaderName::Subject);
    let prefix = if forward { "Fwd: " } else { "Re: " };
    let has_prefix = subject.get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix));
    let subject = if has_prefix { subject } else { format!("{prefix}{subject}") };
    let body = MessageParser::default().parse(raw).and_then(|full| full.body_text(0).map(|t| t.into_owned()));
    let body = body.unwrap_or_default();
    if forward {
        let head = format!(
            "From: {}\nDate: {}\nSubject: {}\n",
            text(HeaderName::From),
            text(HeaderName::Date),
            m.subject().unwrap_or("")
        );
        return Draft {
            subject,
            text: format!("\n\n---------- Forwarded message ----------\n{head}\n{body}"),
            ..Draft::default()
        };
    }
    let to = if m.header(HeaderName::ReplyTo).is_some() { text(HeaderName::ReplyTo) } else { text(HeaderName::From) };
    let id = m.message_id().map(|i| format!("<{i}>"));
    let mut references: Vec<String> = match m.header(HeaderName::References) {
        Some(mail_parser::HeaderValue::TextList(l)) => l.iter().map(|r| format!("<{r}>")).collect(),
        Some(mail_parser::HeaderValue::Text(t)) => vec![format!("<{t}>")],
        _ => Vec::new(),
    };
    references.extend(id.clone());
    let quoted: String = body.lines().map(|l| format!("> {l}\n")).collect();
    Draft { to: vec![to], subject, text: format!("\n\n{quoted}"), in_reply_to: id, references, ..Draft::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_split_on_commas_outside_quotes_and_brackets() {
        let l = split_list(r#""Doe, Jane" <jane@x.test>, bob@x.test; <odd,one@x.test> , "#);
        assert_eq!(l, [r#""Doe, Jane" <jane@x.test>"#, "bob@x.test", "<odd,one@x.test>"]);
        let (name, addr) = parse_mailbox(&l[0]).unwrap();
        assert_eq!((name.as_deref(), addr.to_string().as_str()), (Some("Doe, Jane"), "jane@x.test"));
        assert_eq!(parse_mailbox("bob@x.test").unwrap().0, None);
        for bad in ["", "bob", "a b@x.test", "bob@x.test\r\nBcc: evil@x.test", "bøb@x.test", "<>"] {
            assert_eq!(parse_mailbox(bad).unwrap_err().code, "invalid_recipient", "{bad:?}");
        }
    }

    #[test]
    fn a_reply_answers_the_sender_and_keeps_the_thread() {
        let raw = b"From: Carol <carol@x.test>\r\nReply-To: list@x.test\r\nSubject: Plans\r\n\
                    Message-ID: <m2@x.test>\r\nReferences: <m1@x.test>\r\n\r\nShall we?\r\n";
        let d = reply_draft(raw, false);
        assert_eq!(d.to, ["list@x.test"], "Reply-To wins over From");
        assert_eq!(d.subject, "Re: Plans");
        assert_eq!(d.in_reply_to.as_deref(), Some("<m2@x.test>"));
        assert_eq!(d.references, ["<m1@x.test>", "<m2@x.test>"]);
        assert!(d.text.contains("> Shall we?"));
        assert_eq!(reply_draft(b"Subject: Re: Plans\r\n\r\nx\r\n", false).subject, "Re: Plans", "no Re: Re:");
        let f = reply_draft(raw, true);
        assert!(f.to.is_empty() && f.subject == "Fwd: Plans" && f.text.contains("Shall we?"), "{f:?}");
    }

    #[test]
    fn an_internationalized_domain_becomes_its_a_label_and_a_non_ascii_local_part_is_refused() {
        let (name, a) = parse_mailbox("Bücher <info@Bücher.Example>").unwrap();
        assert_eq!((name.as_deref(), a.to_string().as_str()), (Some("Bücher"), "info@xn--bcher-kva.example"));
        assert_eq!(parse_mailbox("dave@xn--bcher-kva.example").unwrap().1.to_string(), "dave@xn--bcher-kva.example");
        let e = parse_mailbox("jörg@example.org").unwrap_err();
        assert!(e.message.contains("SMTPUTF8"), "{}", e.message);
        assert!(parse_mailbox("bob@bü..example").is_err(), "an empty label is not a domain");
    }

    #[test]
    fn the_built_message_has_no_bcc() {
        let draft = Draft {
            to: vec!["b@x.test".into()],
            bcc: vec!["hidden@x.test".into()],
            subject: "s".into(),
            text: "t\r\n".into(),
            ..Draft::default()
        };
        let checked = check(&draft, "a@x.test").unwrap();
        assert_eq!(checked.rcpts.len(), 2);
        let (bytes, id) = build(&draft, &checked).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(!text.to_lowercase().contains("hidden") && !text.to_lowercase().contains("bcc"), "{text}");
        assert!(text.contains(&format!("Message-ID: {id}")) && id.ends_with("@x.test>"), "{text}");
    }
}
