//! Who may send and who may receive mail here: the one place where the server decides about a sender
//! (bound to the authenticated user, the message rate per address) and routes a recipient: an address of
//! a served domain expands through the store's router (`mailroom_store::Router`: aliases, catch-all,
//! subaddress folders, postmaster@/abuse@, SRS addresses) into local mailboxes and forwarded addresses;
//! any other domain is relaying, allowed only to authenticated clients and clients in `[delivery]
//! relay_networks`, and only when an outbound delivery agent is attached; everyone else gets 550 5.7.1.
//! The connection driver asks [`Policy::route`] and carries out the answer; it decides nothing itself.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use mailroom_proto::address::MAX_LOCAL_PART;
use mailroom_proto::{Address, Domain, Enhanced, ForwardPath, Reply, ReversePath};
use mailroom_store::{canonical_domain, MailboxId, RouteError, Router};
use tracing::{debug, warn};

use crate::limits::{Cidr, PerIp};
use crate::outbound::{Outbound, NULL_MX_TIMEOUT};

/// Where an accepted recipient's mail goes: local mailboxes (each maybe a folder) and addresses for the
/// outbound queue. The session keeps it with the recipient until the end of data, where the routes of
/// every recipient are merged (one copy per Maildir, one queue recipient per address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The recipient as the client gave it (`alice+shop@example.org`): `Delivered-To`, the logs.
    pub rcpt: String,
    /// Mailboxes of the store.
    pub locals: Vec<MailboxId>,
    /// Addresses for the queue: the recipient itself when relayed, an alias's external targets when
    /// forwarded, the original sender for an SRS address of ours.
    pub remotes: Vec<String>,
    /// The envelope sender of the queued copies when it is not the transaction's: the SRS form of the
    /// sender for a forwarded message (see [`Policy::route`]).
    pub sender: Option<String>,
    /// The recipient is an address of a served domain (not relayed): it gets a `Delivered-To`.
    pub is_served: bool,
}

impl Route {
    /// Relaying: the recipient itself goes to the queue.
    fn relay(to: &ForwardPath) -> Route {
        let rcpt = rcpt_string(to);
        Route { rcpt: rcpt.clone(), locals: Vec::new(), remotes: vec![rcpt], sender: None, is_served: false }
    }

    /// The mailboxes the message is stored in for this recipient.
    pub fn locals(&self) -> &[MailboxId] {
        &self.locals
    }

    /// The addresses queued for this recipient.
    pub fn remotes(&self) -> &[String] {
        &self.remotes
    }

    /// True when something of it goes to a local mailbox.
    pub fn is_local(&self) -> bool {
        !self.locals.is_empty()
    }
}

/// The address of a forward path as text, without angle brackets (`postmaster` for the bare one).
pub fn rcpt_string(to: &ForwardPath) -> String {
    match to {
        ForwardPath::Mailbox(a) => a.to_string(),
        ForwardPath::Postmaster => "postmaster".to_string(),
    }
}

/// A refused sender or recipient: the reply for the client and a word for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reply: Reply,
    pub reason: &'static str,
}

/// What the policy knows about the client asking.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    pub ip: IpAddr,
    /// The user name that authenticated in this session, if any.
    pub authenticated: Option<&'a str>,
}

pub struct Policy {
    /// Served domains as configured, lowercased; the first is the one bare `<postmaster>` goes to.
    domains: Vec<String>,
    /// Their canonical forms (`mailroom_store::canonical_domain`: UTS #46 A-labels), in the same order, so
    /// that `bücher.example` and `xn--bcher-kva.example` are one domain.
    canonical: Vec<String>,
    /// Expands addresses of served domains (aliases, subaddresses, postmaster@, SRS).
    router: Router,
    per_ip: Arc<PerIp>,
    /// `[delivery] relay_networks`: clients that may relay without AUTH.
    relay_networks: Vec<Cidr>,
    /// The outbound delivery agent; without one nobody relays.
    outbound: Option<Arc<dyn Outbound>>,
}

impl Policy {
    /// `domains`: lowercased; the config check makes sure there is at least one and that each is valid.
    /// `router`: made with the same served domains.
    pub fn new(domains: Vec<String>, router: Router, per_ip: Arc<PerIp>) -> Policy {
        let canonical = domains.iter().map(|d| canonical_domain(d).unwrap_or_else(|_| d.clone())).collect();
        Policy { domains, canonical, router, per_ip, relay_networks: Vec::new(), outbound: None }
    }

    /// Enables relaying through `outbound` for authenticated clients and those in `relay_networks`.
    pub fn set_outbound(&mut self, outbound: Arc<dyn Outbound>, relay_networks: Vec<Cidr>) {
        self.outbound = Some(outbound);
        self.relay_networks = relay_networks;
    }

    /// True when this client may relay to domains not served here.
    pub fn is_relay_allowed(&self, client: Client<'_>) -> bool {
        self.outbound.is_some()
            && (client.authenticated.is_some() || self.relay_networks.iter().any(|n| n.contains(client.ip)))
    }

    pub fn domains(&self) -> &[String] {
        &self.domains
    }

    pub fn is_served(&self, domain: &str) -> bool {
        self.served(domain).is_some()
    }

    /// The served domain as configured that `domain` (in any form: U-label, A-label, any case) names.
    fn served(&self, domain: &str) -> Option<&str> {
        let canonical = canonical_domain(domain).ok()?;
        self.canonical.iter().position(|c| *c == canonical).map(|i| self.domains[i].as_str())
    }

    /// MAIL FROM: an authenticated user may send only as itself; then the message rate of the address.
    pub fn check_sender(&self, client: Client<'_>, from: &ReversePath, now: Instant) -> Result<(), Refusal> {
        if client.authenticated.is_some_and(|user| !sender_allowed(user, from)) {
            return Err(Refusal {
                reply: Reply::new(553, Enhanced(5, 7, 1), "Sender address not owned by the authenticated user"),
                reason: "sender is not the authenticated user's address",
            });
        }
        if !self.per_ip.message(client.ip, now) {
            return Err(Refusal {
                reply: Reply::new(450, Enhanced(4, 7, 1), "Too much mail from your address, try again later"),
                reason: "message rate",
            });
        }
        Ok(())
    }

    /// RCPT TO: where the recipient's mail goes, or why not. `from` is the transaction's sender and
    /// `earlier` the routes of the recipients accepted before this one. A relayed recipient's domain is
    /// checked for a null MX (RFC 7505 §4.2: 556 5.1.10 at once rather than a bounce later).
    ///
    /// One transaction makes one queue entry, which has one envelope sender: a recipient whose queued
    /// copies need another sender than those accepted before (a forwarded copy's SRS sender beside a
    /// relayed copy's original one) gets 452 4.5.3, and the client sends it in a later transaction
    /// (RFC 5321 §4.5.3.1.10 asks clients to do so).
    pub async fn route(
        &self,
        client: Client<'_>,
        from: &ReversePath,
        to: &ForwardPath,
        earlier: &[Route],
    ) -> Result<Route, Refusal> {
        let route = self.route_rcpt(client, from, to)?;
        // Quotas (issue 13) plug in here: a check of `route.locals` that may refuse with 452 4.2.2.
        if !route.remotes.is_empty() {
            if let Some(other) = earlier.iter().find(|r| !r.remotes.is_empty() && r.sender != route.sender) {
                debug!(rcpt = %route.rcpt, earlier = %other.rcpt, "queued copies need another envelope sender");
                return Err(Refusal {
                    reply: Reply::new(
                        452,
                        Enhanced(4, 5, 3),
                        "Too many recipients: send this one in a new transaction",
                    ),
                    reason: "another envelope sender for the queue",
                });
            }
        }
        if let (false, Some(outbound)) = (route.is_served, &self.outbound) {
            let Some((_, domain)) = route.rcpt.rsplit_once('@') else { return Ok(route) };
            // A lookup that does not answer in time accepts: the relay decides later.
            if let Ok(true) = tokio::time::timeout(NULL_MX_TIMEOUT, outbound.null_mx(domain)).await {
                return Err(Refusal {
                    reply: Reply::new(556, Enhanced(5, 1, 10), "Recipient address has null MX"),
                    reason: "null MX",
                });
            }
        }
        Ok(route)
    }

    /// RCPT TO, once routed: a local mailbox over its quota is refused (452 4.2.2 full, 552 5.2.2 when the
    /// declared SIZE would not fit; see `crate::quota`).
    pub async fn check_quota(&self, route: &Route, declared: Option<u64>) -> Result<(), Refusal> {
        for mailbox in route.locals() {
            crate::quota::check(self.router.store(), mailbox, declared)
                .await
                .map_err(|(reply, reason)| Refusal { reply, reason })?;
        }
        Ok(())
    }

    /// RCPT TO without the DNS and envelope checks of [`Policy::route`]: where the recipient's mail goes,
    /// or why not.
    pub fn route_rcpt(&self, client: Client<'_>, from: &ReversePath, to: &ForwardPath) -> Result<Route, Refusal> {
        let authenticated = client.authenticated.is_some();
        let (local, domain) = match to {
            ForwardPath::Postmaster => match self.domains.first() {
                Some(d) => ("postmaster", d.clone()),
                None => return Err(relay_denied(authenticated)),
            },
            ForwardPath::Mailbox(a) => match a.domain() {
                // Address literals are never ours to serve: refusing them closes the `user@[our IP]` relay
                // probe. Nor are they relayed: the relay delivers to domains (MX lookups) only.
                Domain::Literal(_) if self.is_relay_allowed(client) => {
                    return Err(Refusal {
                        reply: Reply::new(550, Enhanced(5, 7, 1), "Mail to address literals is not relayed"),
                        reason: "address literal",
                    })
                }
                Domain::Literal(_) => return Err(relay_denied(authenticated)),
                Domain::Name(d) => (a.local(), d.to_lowercase()),
            },
        };
        let Some(served) = self.served(&domain) else {
            if self.is_relay_allowed(client) {
                return Ok(Route::relay(to));
            }
            return Err(relay_denied(authenticated));
        };
        let now = SystemTime::now();
        let expansion = self.router.expand(local, &domain, now).map_err(|e| refusal(&e, to))?;
        let sender = match (&expansion, from) {
            (e, ReversePath::Mailbox(a)) if e.is_forwarded && !e.remotes.is_empty() => self.srs_sender(a, served, now),
            _ => None,
        };
        // The bare `<postmaster>` is recorded as the address it reached.
        let rcpt = if matches!(to, ForwardPath::Postmaster) { format!("postmaster@{served}") } else { rcpt_string(to) };
        Ok(Route { rcpt, locals: expansion.locals, remotes: expansion.remotes, sender, is_served: true })
    }

    /// The envelope sender of a forwarded copy: the SRS0 form at the forwarding domain when the sender's
    /// domain is not ours (None: the sender as it is). The null sender stays null; a sender whose SRS form
    /// would pass the 64-octet local part limit (RFC 5321 §4.5.3.1.1) is kept as it is, since its bounce
    /// could not come back.
    fn srs_sender(&self, from: &Address, forwarding_domain: &str, now: SystemTime) -> Option<String> {
        let Domain::Name(domain) = from.domain() else { return None };
        if self.is_served(domain) || is_quoted(from) {
            return None;
        }
        let rewritten = self.router.forward_sender(from.local(), domain, forwarding_domain, now);
        if rewritten.rsplit_once('@').is_some_and(|(l, _)| l.len() > MAX_LOCAL_PART) {
            warn!(%from, "SRS address would be too long: forwarding with the original sender");
            return None;
        }
        Some(rewritten)
    }
}

/// Whether the address's local part is written quoted (not a dot-string): the SRS form puts the local
/// part inside its own, which must stay a dot-string, so such a sender is forwarded as it is.
fn is_quoted(a: &Address) -> bool {
    a.to_string().starts_with('"')
}

/// The reply for an address that has nowhere to go; loops are logged with their chain.
fn refusal(e: &RouteError, to: &ForwardPath) -> Refusal {
    let (code, status, text, reason) = match e {
        RouteError::NoSuchUser => (550, Enhanced(5, 1, 1), "No such user here", "no such user"),
        RouteError::Srs(_) => (550, Enhanced(5, 1, 1), "Invalid or expired SRS address", "bad SRS address"),
        RouteError::Loop(_) | RouteError::TooDeep { .. } => {
            warn!(%to, error = %e, "alias loop");
            (550, Enhanced(5, 4, 6), "Routing loop detected in alias expansion", "alias loop")
        }
        // users.toml missing or empty since start-up: whether the user exists is unknown, so no 5xx.
        RouteError::Unavailable => {
            (451, Enhanced(4, 3, 0), "User directory unavailable, try again later", "user directory unavailable")
        }
        RouteError::Mailbox(_) => {
            (451, Enhanced(4, 3, 0), "Mailbox unavailable, try again later", "postmaster mailbox unavailable")
        }
    };
    Refusal { reply: Reply::new(code, status, text), reason }
}

fn relay_denied(authenticated: bool) -> Refusal {
    let reply = if authenticated {
        // No outbound delivery agent attached (or an address literal): say so rather than pretend the
        // address is bad.
        Reply::new(550, Enhanced(5, 7, 1), "Relaying is not configured on this server")
    } else {
        Reply::new(550, Enhanced(5, 7, 1), "Relaying denied: this server does not serve that domain")
    };
    Refusal { reply, reason: "relaying denied" }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_local_parts_are_told_apart() {
        assert!(!is_quoted(&Address::parse("dave@mx.test").unwrap()));
        assert!(!is_quoted(&Address::parse("d.a+ve=x@mx.test").unwrap()));
        assert!(is_quoted(&Address::parse("\"john doe\"@mx.test").unwrap()));
    }
}
