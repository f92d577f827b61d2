//! Who may receive mail here: served domains, the user directory, and postmaster@ (RFC 5321 §4.5.1).
//! Relaying to other domains is refused; it comes later, for authenticated users only.

use mailroom_proto::{Domain, Enhanced, ForwardPath, Reply, ReversePath};
use mailroom_store::{canonical_domain, MailboxId, Store};

/// The answer to one RCPT.
pub enum RcptVerdict {
    Local(MailboxId),
    Refused(Reply),
}

pub struct Policy {
    /// Served domains, lowercased; the first is the one bare `<postmaster>` goes to.
    pub domains: Vec<String>,
    /// Their canonical forms (`mailroom_store::canonical_domain`), in the same order.
    canonical: Vec<String>,
}

impl Policy {
    pub fn new(domains: Vec<String>) -> Policy {
        let canonical = domains.iter().map(|d| canonical_domain(d).unwrap_or_else(|_| d.clone())).collect();
        Policy { domains, canonical }
    }

    pub fn is_served(&self, domain: &str) -> bool {
        self.served(domain).is_some()
    }

    /// The served domain as configured that `domain` (in any form: U-label, A-label, any case) names.
    fn served(&self, domain: &str) -> Option<&str> {
        let canonical = canonical_domain(domain).ok()?;
        self.canonical.iter().position(|c| *c == canonical).map(|i| self.domains[i].as_str())
    }

    /// `authenticated`: the session logged in (its mail to other domains gets a clearer refusal).
    pub fn rcpt(&self, store: &Store, to: &ForwardPath, authenticated: bool) -> RcptVerdict {
        let (local, domain) = match to {
            ForwardPath::Postmaster => return self.postmaster(store, &self.domains[0]),
            ForwardPath::Mailbox(a) => match a.domain() {
                // Address literals are never ours to serve: refusing them closes the `user@[our IP]` relay probe.
                Domain::Literal(_) => return RcptVerdict::Refused(relay_denied(authenticated)),
                Domain::Name(d) => (a.local(), d.to_lowercase()),
            },
        };
        let Some(served) = self.served(&domain) else {
            return RcptVerdict::Refused(relay_denied(authenticated));
        };
        if local.eq_ignore_ascii_case("postmaster") {
            return self.postmaster(store, served);
        }
        match store.users().resolve(local, &domain) {
            Ok(Some(id)) => RcptVerdict::Local(id),
            Ok(None) => RcptVerdict::Refused(Reply::new(550, Enhanced(5, 1, 1), "No such user here")),
            // users.toml missing or empty since start-up: whether the user exists is unknown.
            Err(_) => {
                RcptVerdict::Refused(Reply::new(451, Enhanced(4, 3, 0), "User directory unavailable, try again later"))
            }
        }
    }

    fn postmaster(&self, store: &Store, domain: &str) -> RcptVerdict {
        match store.postmaster(domain) {
            Ok(id) => RcptVerdict::Local(id),
            Err(_) => RcptVerdict::Refused(Reply::new(451, Enhanced(4, 3, 0), "Mailbox unavailable, try again later")),
        }
    }
}

fn relay_denied(authenticated: bool) -> Reply {
    if authenticated {
        // Outbound delivery is not built yet: say so rather than pretend the address is bad.
        Reply::new(550, Enhanced(5, 7, 1), "Relaying is not configured on this server")
    } else {
        Reply::new(550, Enhanced(5, 7, 1), "Relaying denied: this server does not serve that domain")
    }
}

/// Sender binding: an authenticated user may send only as itself (RFC 6409 §6.1 lets a submission server
/// enforce this). Domains compare case-insensitively, local parts as the user directory does.
pub fn sender_allowed(user: &str, from: &ReversePath) -> bool {
    match from {
        ReversePath::Mailbox(a) => {
            let addr = format!("{}@{}", a.local(), a.domain().as_str());
            addr.to_lowercase() == user.to_lowercase()
        }
        ReversePath::Null => false,
    }
}
