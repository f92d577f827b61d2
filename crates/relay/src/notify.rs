//! Delivering the relay's own reports (DSNs, built by [`crate::dsn::build`]): to a local sender's
//! Maildir through the store, to a remote sender through the queue with a null reverse path, and a
//! report about mail that itself had a null sender to the local postmaster (a double bounce, never sent
//! back out: RFC 3461 §6.2, RFC 5321 §4.5.5).

use std::time::SystemTime;

use mailroom_queue::{Envelope, Queue};
use mailroom_store::{MailboxId, Store};

use crate::dsn::{self, Report};

/// Why a report could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("store: {0}")]
    Store(#[from] mailroom_store::StoreError),
    #[error("the local postmaster mailbox: {0}")]
    Postmaster(String),
}

/// Where a report goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A mailbox of this server.
    Local(MailboxId),
    /// A remote address, through the queue.
    Remote(String),
}

/// Where a report to `sender` goes: a local user's mailbox, the queue for a remote address, or the
/// postmaster for the null sender.
pub fn target(store: &Store, postmaster: &str, sender: &str) -> Result<Target, NotifyError> {
    if sender.is_empty() {
        return postmaster_box(store, postmaster).map(Target::Local);
    }
    let users = store.users();
    if let Some((local, domain)) = sender.rsplit_once('@') {
        if let Some(mb) = users.lookup(local, domain) {
            return Ok(Target::Local(mb));
        }
        if users.domains().any(|d| mailroom_store::domain::is_same_domain(d, domain)) {
            // A served domain without that user (a forged or deleted sender): nobody to tell but the
            // postmaster; sending it out would come straight back.
            return postmaster_box(store, postmaster).map(Target::Local);
        }
    }
    Ok(Target::Remote(sender.to_string()))
}

/// The postmaster mailbox: `postmaster` as `local@domain`, or the postmaster of the first served domain.
fn postmaster_box(store: &Store, postmaster: &str) -> Result<MailboxId, NotifyError> {
    let users = store.users();
    if let Some((local, domain)) = postmaster.rsplit_once('@') {
        if let Some(mb) = users.lookup(local, domain) {
            return Ok(mb);
        }
        return store.postmaster(domain).map_err(|e| NotifyError::Postmaster(e.to_string()));
    }
    let domain = users.domains().next().map(str::to_string);
    let domain = domain.ok_or_else(|| NotifyError::Postmaster("no domain is served".into()))?;
    store.postmaster(&domain).map_err(|e| NotifyError::Postmaster(e.to_string()))
}

/// Builds the report about `original` (the spool form) and delivers it durably. Returns the id of the
/// new message (the Maildir file or the queue entry), for the log.
pub async fn send_report(
    store: &Store,
    queue: &Queue,
    postmaster: &str,
    report: &Report,
    original: &[u8],
) -> Result<String, NotifyError> {
    let body = sign(store.data_dir(), &report.hostname, dsn::build(report, original));
    let target = target(store, postmaster, &report.sender)?;
    let mut incoming = store.begin()?;
    let id = incoming.id().to_string();
    // The store's form: our Return-Path line first (the null path: a report is never answered), then
    // our trace line, as on every copy that leaves mailroom (RFC 5321 §4.4).
    incoming.write(b"Return-Path: <>\n")?;
    let received = format!(
        "Received: by {} (mailroom) id {id}\n\tfor <{}>; {}\n",
        report.hostname,
        report.sender,
        dsn::rfc5322_date(report.date)
    );
    incoming.write(received.as_bytes())?;
    incoming.write(&to_lf(&body))?;
    match target {
        Target::Local(mb) => {
            incoming.commit(&[mb]).await?;
            tracing::info!(id, original = %report.id, to = %report.sender, "report delivered to a local mailbox");
        }
        Target::Remote(to) => {
            let size = incoming.len();
            let envelope = Envelope::new(id.clone(), "", SystemTime::now(), size, &[to.as_str()]);
            let spool = queue.spool_for(&envelope);
            incoming.commit_with(&[], Some(spool)).await?;
            queue.add_committed(envelope);
            tracing::info!(id, original = %report.id, to, "report queued");
        }
    }
    Ok(id)
}

/// The report (LF line ends) with DKIM-Signature fields in front when the host name's domain has a key (the host name
/// itself, else its parent: `mail.example.org` signs as `example.org`). Keys are read each time: reports
/// are rare, and a key made since start is used without a reload.
fn sign(data_dir: &std::path::Path, hostname: &str, report: Vec<u8>) -> Vec<u8> {
    let keys = std::sync::Arc::new(mailroom_auth::keys::KeyStore::load(data_dir).0);
    let parent = hostname.split_once('.').map(|(_, p)| p).filter(|p| p.contains('.'));
    let Some(domain) = [Some(hostname), parent].into_iter().flatten().find(|d| !keys.signing_keys(d).is_empty()) else {
        return report;
    };
    // Signed in its wire form: the report is built with LF line ends (and holds no bare CR).
    let wire: Vec<u8> = report.iter().flat_map(|&b| if b == b'\n' { vec![b'\r', b'\n'] } else { vec![b] }).collect();
    match mailroom_auth::dkim::sign_message(keys, domain, &wire, SystemTime::now()) {
        Ok(fields) => [fields, report].concat(),
        Err(e) => {
            tracing::warn!(error = %e, "report not DKIM-signed");
            report
        }
    }
}

/// CRLF to LF (the store's and the queue's line ends; the wire gets CRLF back).
fn to_lf(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\r' && b.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_to_lf() {
        assert_eq!(to_lf(b"a\r\nb\nc\rd\r\n"), b"a\nb\nc\rd\n");
    }
}
