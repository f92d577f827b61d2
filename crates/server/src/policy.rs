//! Who may send and who may receive mail here: the one place where the server decides about a sender
//! (bound to the authenticated user, the message rate per address) and routes a recipient: a served
//! domain's user or postmaster@ (RFC 5321 §4.5.1) goes to a local mailbox; any other domain is relaying,
//! allowed only to authenticated clients and clients in `[delivery] relay_networks`, and only when an
//! outbound delivery agent is attached; everyone else gets 550 5.7.1. The connection driver (and later
//! forwarding) asks [`Policy::route`] and carries out the answer; it decides nothing itself.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use mailroom_proto::{Domain, Enhanced, ForwardPath, Reply, ReversePath};
use mailroom_store::{canonical_domain, MailboxId, Store};

use crate::limits::{Cidr, PerIp};
use crate::outbound::{Outbound, NULL_MX_TIMEOUT};

/// Where an accepted recipient's mail goes. The session keeps it with the recipient until the end of
/// data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A mailbox in the store.
    Local(MailboxId),
    /// Another domain: into the outbound queue, for the relay to deliver.
    Remote(ForwardPath),
}

impl Route {
    /// The mailbox the message is stored in, for a local route.
    pub fn local(&self) -> Option<&MailboxId> {
        match self {
            Route::Local(m) => Some(m),
            Route::Remote(_) => None,
        }
    }

    /// The recipient address, for a remote route.
    pub fn remote(&self) -> Option<&ForwardPath> {
        match self {
            Route::Local(_) => None,
            Route::Remote(to) => Some(to),
        }
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
    store: Store,
    per_ip: Arc<PerIp>,
    /// `[delivery] relay_networks`: clients that may relay without AUTH.
    relay_networks: Vec<Cidr>,
    /// The outbound delivery agent; without one nobody relays.
    outbound: Option<Arc<dyn Outbound>>,
}

impl Policy {
    /// `domains`: lowercased; the config check makes sure there is at least one and that each is valid.
    pub fn new(domains: Vec<String>, store: Store, per_ip: Arc<PerIp>) -> Policy {
        let canonical = domains.iter().map(|d| canonical_domain(d).unwrap_or_else(|_| d.clone())).collect();
        Policy { domains, canonical, store, per_ip, relay_networks: Vec::new(), outbound: None }
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

    /// RCPT TO: where the recipient's mail goes, or why not; a remote recipient's domain is checked for a
    /// null MX (RFC 7505 §4.2: 556 5.1.10 at once rather than a bounce later).
    pub async fn route(&self, client: Client<'_>, to: &ForwardPath) -> Result<Route, Refusal> {
        let route = self.route_rcpt(client, to)?;
        if let (Route::Remote(ForwardPath::Mailbox(a)), Some(outbound)) = (&route, &self.outbound) {
            let domain = a.domain().as_str();
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
        let Some(mailbox) = route.local() else { return Ok(()) };
        crate::quota::check(&self.store, mailbox, declared).await.map_err(|(reply, reason)| Refusal { reply, reason })
    }

    /// RCPT TO without the DNS check of [`Policy::route`]: where the recipient's mail goes, or why not.
    pub fn route_rcpt(&self, client: Client<'_>, to: &ForwardPath) -> Result<Route, Refusal> {
        let authenticated = client.authenticated.is_some();
        let (local, domain) = match to {
            ForwardPath::Postmaster => match self.domains.first() {
                Some(d) => return self.postmaster(d),
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
                return Ok(Route::Remote(to.clone()));
            }
            return Err(relay_denied(authenticated));
        };
        if local.eq_ignore_ascii_case("postmaster") {
            return self.postmaster(served);
        }
        match self.store.users().resolve(local, &domain) {
            Ok(Some(id)) => Ok(Route::Local(id)),
            Ok(None) => {
                Err(Refusal { reply: Reply::new(550, Enhanced(5, 1, 1), "No such user here"), reason: "no such user" })
            }
            // users.toml missing or empty since start-up: whether the user exists is unknown, so no 5xx.
            Err(_) => Err(Refusal {
                reply: Reply::new(451, Enhanced(4, 3, 0), "User directory unavailable, try again later"),
                reason: "user directory unavailable",
            }),
        }
    }

    fn postmaster(&self, domain: &str) -> Result<Route, Refusal> {
        match self.store.postmaster(domain) {
            Ok(id) => Ok(Route::Local(id)),
            Err(_) => Err(Refusal {
                reply: Reply::new(451, Enhanced(4, 3, 0), "Mailbox unavailable, try again later"),
                reason: "postmaster mailbox unavailable",
            }),
        }
    }
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
