//! Mailbox identities and the path-safety validation that guards them.
//!
//! A [`MailboxId`] becomes the path `<mailboxes>/<domain>/<local>`, so it is made only from parts that
//! passed [`validate_address`] / [`validate_domain`] here (addresses the user directory holds, served
//! domains for postmaster@) or from existing directory entries. Nothing a client sent becomes a path.
//!
//! Case policy: the domain is case-insensitive (RFC 5321 §2.4, DNS). The local part *may* be
//! case-sensitive by RFC 5321 §2.4, but a receiving host is free to treat it insensitively; like
//! Postfix and Gmail in practice we match it case-insensitively and store it lowercase, so
//! `Alice@` and `alice@` are one mailbox (and one directory on disk, even on case-sensitive
//! file systems).

use std::fmt;
use std::path::{Path, PathBuf};

use crate::domain::canonical_domain;
use crate::error::UserError;

/// RFC 5321 §4.5.3.1.1: the local part is at most 64 octets.
pub const MAX_LOCAL_PART: usize = 64;
/// RFC 5321 §4.5.3.1.2: the domain is at most 255 octets.
pub const MAX_DOMAIN: usize = 255;
/// RFC 1035 §2.3.4: a DNS label is at most 63 octets (applied to ASCII labels; for IDN U-labels the
/// limit belongs to the punycode A-label, which we do not compute here).
pub const MAX_LABEL: usize = 63;

/// Identifies one mailbox directory. Only the store makes these, from validated addresses (the
/// user directory, [`Store::postmaster`]) or from existing directory entries, so its path can be
/// trusted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MailboxId {
    local: String,
    domain: String,
    /// A Maildir++ folder of the mailbox (`.NAME/` inside it, Dovecot's layout), without the leading
    /// dot; `None` is the inbox. Only the store sets it, from a name read from the mailbox's own
    /// directory listing ([`crate::Store::existing_folder`]) or a fixed name ([`crate::Store::junk`]).
    folder: Option<String>,
}

impl MailboxId {
    /// Callers guarantee both parts passed `users::validate_*`.
    pub(crate) fn new_validated(local: String, domain: String) -> MailboxId {
        MailboxId { local, domain, folder: None }
    }

    /// The same mailbox delivering into its folder `name`; callers guarantee [`is_folder_name`].
    pub(crate) fn with_folder(&self, name: &str) -> MailboxId {
        MailboxId { folder: Some(name.to_owned()), ..self.clone() }
    }

    /// The Maildir++ folder this id delivers into (without its leading dot); `None` is the inbox.
    pub fn folder(&self) -> Option<&str> {
        self.folder.as_deref()
    }

    /// The same mailbox's inbox.
    pub fn inbox(&self) -> MailboxId {
        MailboxId { folder: None, ..self.clone() }
    }

    pub fn address(&self) -> String {
        format!("{}@{}", self.local, self.domain)
    }

    pub fn local(&self) -> &str {
        &self.local
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The Maildir's path relative to `<data-dir>/mailboxes`: `<domain>/<local>[/.<folder>]`.
    pub fn relative_dir(&self) -> PathBuf {
        self.dir(Path::new(""))
    }

    /// `<mailboxes>/<domain>/<local>`, or `<mailboxes>/<domain>/<local>/.<folder>` for a folder.
    pub(crate) fn dir(&self, mailboxes: &Path) -> PathBuf {
        let inbox = mailboxes.join(&self.domain).join(&self.local);
        match &self.folder {
            Some(f) => inbox.join(format!(".{f}")),
            None => inbox,
        }
    }
}

impl fmt::Display for MailboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)?;
        match &self.folder {
            Some(folder) => write!(f, " (folder {folder})"),
            None => Ok(()),
        }
    }
}

/// Longest Maildir++ folder name taken (a file name is at most 255 bytes; Dovecot's own limit on a
/// mailbox name is lower still).
pub const MAX_FOLDER_NAME: usize = 200;

/// True for a name that can be a Maildir++ folder under a mailbox: one path component, not empty, not
/// starting with a dot (so never `.` or `..` once the folder's own dot is added), no `/`, no NUL or
/// other control bytes. Folder names come from a directory listing, so this is a second line of defence.
pub fn is_folder_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_FOLDER_NAME
        && !name.starts_with('.')
        && !name.bytes().any(|b| b == b'/' || b == b'\\' || b.is_ascii_control())
}

/// Validates an address for the user directory and returns the normalized `(local, domain)`.
///
/// Stricter than RFC 5321 on purpose, because both parts become directory names under
/// `mailboxes/`: the local part is a dot-atom (RFC 5322 §3.2.3 atext, plus UTF-8 as RFC 6531
/// allows) of 1..=64 octets, and additionally refuses `/`, `\`, `..`, leading or trailing dots,
/// control bytes and whitespace; quoted local parts are refused. The domain is 1..=255 octets of
/// dot-separated labels (letters, digits, hyphen; UTF-8 letters for IDN), no label empty or
/// starting/ending with a hyphen; address literals (`[1.2.3.4]`) are refused for users.
///
/// Both parts are lowercased (local part: see the module doc for why).
pub fn validate_address(address: &str) -> Result<(String, String), UserError> {
    let bad = |reason| UserError::InvalidAddress { address: address.to_string(), reason };
    let mut parts = address.split('@');
    let (local, domain) = match (parts.next(), parts.next(), parts.next()) {
        (Some(l), Some(d), None) => (l, d),
        (_, None, _) => return Err(bad("no @")),
        _ => return Err(bad("more than one @")),
    };
    let local = validate_local(local).map_err(bad)?;
    let domain = validate_domain(domain).map_err(|e| match e {
        UserError::InvalidDomain { reason, .. } => bad(reason),
        other => other,
    })?;
    Ok((local, domain))
}

/// RFC 5322 §3.2.3 atext, minus `/` (a path separator; refused for our own safety).
fn is_atext_ascii(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-=?^_`{|}~".contains(&b)
}

pub(crate) fn validate_local(local: &str) -> Result<String, &'static str> {
    // Lowercase first, then check the result: that is the form that becomes a path.
    let local = local.to_lowercase();
    if local.is_empty() {
        return Err("empty local part");
    }
    if local.len() > MAX_LOCAL_PART {
        return Err("local part longer than 64 octets (RFC 5321 §4.5.3.1.1)");
    }
    if local.starts_with('.') || local.ends_with('.') {
        return Err("local part starts or ends with a dot");
    }
    if local.contains("..") {
        return Err("local part contains \"..\"");
    }
    for c in local.chars() {
        if c == '/' || c == '\\' {
            return Err("local part contains a path separator");
        }
        if c == '.' {
            continue;
        }
        if c.is_ascii() {
            if (c as u32) < 0x20 || c == '\x7f' {
                return Err("local part contains a control character");
            }
            if c == ' ' {
                return Err("local part contains whitespace");
            }
            if !is_atext_ascii(c as u8) {
                return Err("local part contains a character outside dot-atom (quoted local parts are not accepted)");
            }
        } else if c.is_control() || c.is_whitespace() {
            return Err("local part contains a control or whitespace character");
        }
    }
    Ok(local)
}

/// Validates a domain the way [`validate_address`] does and returns it lowercased.
pub fn validate_domain(domain: &str) -> Result<String, UserError> {
    let bad = |reason| UserError::InvalidDomain { domain: domain.to_string(), reason };
    if domain.starts_with('[') {
        return Err(bad("address literals are not accepted for users"));
    }
    let lower = domain.to_lowercase();
    if lower.is_empty() {
        return Err(bad("empty domain"));
    }
    if lower.len() > MAX_DOMAIN {
        return Err(bad("domain longer than 255 octets (RFC 5321 §4.5.3.1.2)"));
    }
    if canonical_domain(&lower).is_err() {
        return Err(bad("not a valid internationalized domain name (UTS #46)"));
    }
    for label in lower.split('.') {
        if label.is_empty() {
            return Err(bad("empty label in domain"));
        }
        if label.is_ascii() && label.len() > MAX_LABEL {
            return Err(bad("label longer than 63 octets (RFC 1035 §2.3.4)"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("label starts or ends with a hyphen"));
        }
        let ok = label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || (!c.is_ascii() && c.is_alphanumeric()));
        if !ok {
            return Err(bad("domain contains a character other than letters, digits, hyphen and dot"));
        }
    }
    Ok(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_addresses() {
        let table: &[(&str, &str, &str)] = &[
            ("alice@example.test", "alice", "example.test"),
            ("Alice@Example.TEST", "alice", "example.test"),
            ("a.b@d", "a.b", "d"),
            ("first+tag@sub.example-host.org", "first+tag", "sub.example-host.org"),
            ("o'brien@d", "o'brien", "d"),
            ("x!#$%&*=?^_`{|}~-@d", "x!#$%&*=?^_`{|}~-", "d"),
            ("jörg@bücher.example", "jörg", "bücher.example"),
            ("ÆRØ@DØMÆNE.test", "ærø", "dømæne.test"),
            ("用户@例子.测试", "用户", "例子.测试"),
            ("localhost@localhost", "localhost", "localhost"),
        ];
        for &(addr, local, domain) in table {
            assert_eq!(validate_address(addr).unwrap(), (local.to_string(), domain.to_string()), "{addr}");
        }
        let max = format!("{}@d", "a".repeat(64));
        assert!(validate_address(&max).is_ok());
    }

    #[test]
    fn bad_addresses() {
        let long_local = format!("{}@d", "a".repeat(65));
        let long_domain = format!("a@{}", ["abcdefghi"; 26].join("."));
        assert!(long_domain.len() - 2 > 255);
        let long_label = format!("a@{}.test", "x".repeat(64));
        let table: Vec<&str> = vec![
            "",
            "@",
            "alice",
            "alice@",
            "@example.test",
            "a@b@c",
            "../x@d",
            "..@d",
            ".@d",
            "a/b@d",
            "a\\b@d",
            ".a@d",
            "a.@d",
            "a..b@d",
            "a\0b@d",
            "a\x01b@d",
            "a\x1fb@d",
            "a\x7fb@d",
            "a\nb@d",
            "a b@d",
            "a\tb@d",
            "a\u{00a0}b@d",
            "a\u{2028}b@d",
            "\"quoted\"@d",
            "a:b@d",
            "a(b)@d",
            "a,b@d",
            "a@[1.2.3.4]",
            "a@[IPv6:::1]",
            "a@.d",
            "a@d.",
            "a@d..e",
            "a@-d.test",
            "a@d-.test",
            "a@d_e.test",
            "a@d/e",
            "a@..",
            "a@d e",
            &long_local,
            &long_domain,
            &long_label,
        ];
        for addr in table {
            assert!(validate_address(addr).is_err(), "{addr:?} should be refused");
        }
    }
}
