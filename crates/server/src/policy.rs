//! Who may receive mail here: served domains, the user directory, and postmaster@ (RFC 5321 §4.5.1).
//! Relaying to other domains is refused; it comes later, for authenticated users only.

use mailroom_proto::{Domain, Enhanced, ForwardPath, Reply, ReversePath};
use mailroom_store::{MailboxId, Store};

/// The answer to one RCPT.
pub enum RcptVerdict {
    Local(MailboxId),
    Refused(Reply),
}

pub struct Policy {
    /// Served domains, lowercased; the first is the one bare `<postmaster>` goes to.
    pub domains: Vec<String>,
}

impl Policy {
    pub fn is_served(&self, domain: &str) -> bool {
        self.domains.iter().any(|d| d == domain)
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
        if !self.is_served(&domain) {
            return RcptVerdict::Refused(relay_denied(authenticated));
        }
        if local.eq_ignore_ascii_case("postmaster") {
            return self.postmaster(store, &domain);
        }
        match store.users().lookup(local, &domain) {
            Some(id) => RcptVerdict::Local(id),
            None => RcptVerdict::Refused(Reply::new(550, Enhanced(5, 1, 1), "No such user here")),
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
