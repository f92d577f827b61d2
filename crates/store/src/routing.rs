//! The routing decision for an address of a served domain: which local mailboxes (each maybe in a
//! Maildir++ folder) and which external addresses its mail goes to, or why none.
//!
//! [`Router::expand`] looks, in this order, at: an SRS0 address of ours ([`crate::srs`]: verified, then
//! routed to the original sender); an alias ([`crate::aliases`]: expanded recursively); a user; the
//! same with the subaddress (`alice+shop`, [`RoutingSettings::delimiter`]) cut off, the detail choosing
//! an existing folder ([`Store::existing_folder`], an exact match with a name from the Maildir's listing,
//! never a path made of what the client sent); `postmaster@` and `abuse@` ([`RoutingSettings::postmaster`],
//! by default the domain's postmaster mailbox, RFC 5321 §4.5.1, RFC 2142 §2); the domain's catch-all.
//!
//! Expansion is a depth-first walk with the usual three colours: an address met again while it is being
//! expanded is a loop ([`RouteError::Loop`], answered 550 5.4.6); one already expanded is skipped, so
//! each final mailbox and external address appears once however many paths lead there, and the walk is
//! linear in the size of the directory. Paths longer than [`RoutingSettings::max_depth`] are refused too.

use std::collections::HashSet;
use std::time::SystemTime;

use crate::address::MailboxId;
use crate::aliases::Aliases;
use crate::domain::canonical_domain;
use crate::srs::{Srs, SrsError};
use crate::store::Store;
use crate::users::Users;

/// Default `[routing] max_alias_depth`: aliases of aliases nested deeper than this are refused as a
/// loop (Postfix refuses past 100 nested virtual aliases; 10 is plenty for people).
pub const DEFAULT_MAX_ALIAS_DEPTH: usize = 10;
/// Default `[routing] recipient_delimiter` (as Postfix and Dovecot use it).
pub const DEFAULT_RECIPIENT_DELIMITER: &str = "+";
/// Local parts that reach the postmaster unless an alias or a user says otherwise (RFC 5321 §4.5.1
/// requires postmaster; RFC 2142 §2 names abuse).
pub const ROLE_ADDRESSES: [&str; 2] = ["postmaster", "abuse"];

/// How addresses expand; from `[routing]`.
#[derive(Debug, Clone)]
pub struct RoutingSettings {
    /// Separates a local part from its detail (`alice+shop`); empty turns subaddressing off.
    pub delimiter: String,
    /// Longest chain of aliases.
    pub max_depth: usize,
    /// Where `postmaster@` and `abuse@` of a served domain go when no alias or user says otherwise;
    /// empty: the domain's postmaster mailbox.
    pub postmaster: Vec<String>,
}

impl Default for RoutingSettings {
    fn default() -> Self {
        RoutingSettings {
            delimiter: DEFAULT_RECIPIENT_DELIMITER.into(),
            max_depth: DEFAULT_MAX_ALIAS_DEPTH,
            postmaster: Vec::new(),
        }
    }
}

/// Where an address's mail goes: local mailboxes and external addresses, each once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// Mailboxes of this store, each maybe a folder ([`MailboxId::folder`]).
    pub locals: Vec<MailboxId>,
    /// External addresses (`local@domain`), for the queue.
    pub remotes: Vec<String>,
    /// The remote addresses were reached through an alias (forwarding: the envelope sender is rewritten
    /// with SRS when the original sender's domain is not ours); false for an SRS address routed back to
    /// its original sender (a bounce goes out as it came).
    pub is_forwarded: bool,
}

/// Why an address has nowhere to go.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("no such user")]
    NoSuchUser,
    /// The chain of addresses, first to the one met again.
    #[error("alias loop: {}", .0.join(" -> "))]
    Loop(Vec<String>),
    #[error("aliases nested deeper than {depth}: {}", chain.join(" -> "))]
    TooDeep { depth: usize, chain: Vec<String> },
    #[error("SRS address refused: {0}")]
    Srs(#[from] SrsError),
    /// The user directory is missing or empty: whether the user exists is unknown (451, not 550).
    #[error("user directory unavailable")]
    Unavailable,
    #[error("mailbox unavailable: {0}")]
    Mailbox(String),
}

/// Expands addresses of served domains; one per server, cheap to share.
#[derive(Debug, Clone)]
pub struct Router {
    store: Store,
    settings: RoutingSettings,
    srs: Srs,
    /// Served domains as configured, and their canonical forms, in the same order.
    served: Vec<(String, String)>,
}

/// One expansion in progress.
struct Walk<'a> {
    users: &'a Users,
    aliases: &'a Aliases,
    now: SystemTime,
    out: Expansion,
    /// Keys being expanded (the current path): meeting one again is a loop.
    path: Vec<String>,
    /// Keys fully expanded: meeting one again adds nothing.
    done: HashSet<String>,
    /// Inside the `[routing] postmaster` targets: a role address there means the postmaster mailbox.
    in_postmaster: bool,
}

impl Router {
    /// `served`: the served domains as configured (lowercase); `srs`: the forwarding key.
    pub fn new(store: Store, settings: RoutingSettings, srs: Srs, served: &[String]) -> Router {
        let served =
            served.iter().map(|d| (d.clone(), canonical_domain(d).unwrap_or_else(|_| d.to_lowercase()))).collect();
        Router { store, settings, srs, served }
    }

    pub fn settings(&self) -> &RoutingSettings {
        &self.settings
    }

    /// The store whose directory this router reads.
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn srs(&self) -> &Srs {
        &self.srs
    }

    /// The served domain as configured that `domain` (in any form) names.
    pub fn served(&self, domain: &str) -> Option<&str> {
        let canonical = canonical_domain(domain).ok()?;
        self.served.iter().find(|(_, c)| *c == canonical).map(|(d, _)| d.as_str())
    }

    /// Where the mail of `local@domain` (a served domain) goes on day `now` (for SRS timestamps).
    pub fn expand(&self, local: &str, domain: &str, now: SystemTime) -> Result<Expansion, RouteError> {
        let (users, aliases) = (self.store.users(), self.store.aliases());
        let mut walk = Walk {
            users: &users,
            aliases: &aliases,
            now,
            out: Expansion::default(),
            path: Vec::new(),
            done: HashSet::new(),
            in_postmaster: false,
        };
        self.address(&mut walk, local, domain)?;
        Ok(walk.out)
    }

    /// The envelope sender for mail from `local@domain` forwarded by `forwarding_domain` (served): SRS0
    /// when the sender's domain is not ours, else unchanged.
    pub fn forward_sender(&self, local: &str, domain: &str, forwarding_domain: &str, now: SystemTime) -> String {
        if self.served(domain).is_some() {
            return format!("{local}@{domain}");
        }
        self.srs.forward(local, domain, forwarding_domain, now)
    }

    /// One address of a served domain, anywhere in the walk.
    fn address(&self, w: &mut Walk<'_>, local: &str, domain: &str) -> Result<(), RouteError> {
        let key = format!("{}@{}", local.to_lowercase(), canonical_domain(domain).unwrap_or_else(|_| domain.into()));
        if w.done.contains(&key) {
            return Ok(());
        }
        if w.path.contains(&key) {
            let mut chain = w.path.clone();
            chain.push(key);
            return Err(RouteError::Loop(chain));
        }
        if w.path.len() > self.settings.max_depth {
            let mut chain = w.path.clone();
            chain.push(key);
            return Err(RouteError::TooDeep { depth: self.settings.max_depth, chain });
        }
        w.path.push(key);
        self.address_step(w, local, domain)?;
        let key = w.path.pop().expect("pushed above");
        w.done.insert(key);
        Ok(())
    }

    /// The first rule that knows `local@domain` decides (see the module doc for the order).
    fn address_step(&self, w: &mut Walk<'_>, local: &str, domain: &str) -> Result<(), RouteError> {
        if Srs::is_srs(local) {
            let (orig_local, orig_domain) = self.srs.reverse(local, w.now)?;
            return self.target(w, &orig_local, &orig_domain, false);
        }
        if let Some(targets) = w.aliases.get(local, domain) {
            return self.targets(w, targets);
        }
        let is_role = ROLE_ADDRESSES.iter().any(|r| local.eq_ignore_ascii_case(r));
        match w.users.resolve(local, domain) {
            Ok(Some(mailbox)) => {
                w.out.push_local(mailbox);
                return Ok(());
            }
            Ok(None) => {}
            // No user directory yet: postmaster@ must still be accepted (RFC 5321 §4.5.1).
            Err(_) if is_role => return self.postmaster(w, domain),
            Err(_) => return Err(RouteError::Unavailable),
        }
        if let Some((base, detail)) = self.split_detail(local) {
            if let Some(targets) = w.aliases.get(base, domain) {
                return self.targets(w, targets);
            }
            if let Some(mailbox) = w.users.lookup(base, domain) {
                let folder = self.store.existing_folder(&mailbox, detail);
                w.out.push_local(folder.unwrap_or(mailbox));
                return Ok(());
            }
        }
        if is_role {
            return self.postmaster(w, domain);
        }
        if let Some(targets) = w.aliases.catch_all(domain) {
            return self.targets(w, targets);
        }
        Err(RouteError::NoSuchUser)
    }

    /// `alice+shop` → (`alice`, `shop`); None without a delimiter, or with nothing on either side.
    fn split_detail<'l>(&self, local: &'l str) -> Option<(&'l str, &'l str)> {
        if self.settings.delimiter.is_empty() {
            return None;
        }
        local
            .split_once(self.settings.delimiter.as_str())
            .filter(|(base, detail)| !base.is_empty() && !detail.is_empty())
    }

    /// `postmaster@`/`abuse@` with no alias or user of that name.
    fn postmaster(&self, w: &mut Walk<'_>, domain: &str) -> Result<(), RouteError> {
        if w.in_postmaster || self.settings.postmaster.is_empty() {
            let served = self.served(domain).unwrap_or(domain);
            let mailbox = self.store.postmaster(served).map_err(|e| RouteError::Mailbox(e.to_string()))?;
            w.out.push_local(mailbox);
            return Ok(());
        }
        w.in_postmaster = true;
        let result = self.targets(w, &self.settings.postmaster);
        w.in_postmaster = false;
        result
    }

    /// An alias's targets (normalized `local@domain` addresses).
    fn targets(&self, w: &mut Walk<'_>, targets: &[String]) -> Result<(), RouteError> {
        for t in targets {
            let Some((local, domain)) = t.rsplit_once('@') else { continue };
            self.target(w, local, domain, true)?;
        }
        Ok(())
    }

    fn target(&self, w: &mut Walk<'_>, local: &str, domain: &str, is_forwarded: bool) -> Result<(), RouteError> {
        if self.served(domain).is_some() {
            return self.address(w, local, domain);
        }
        let address = format!("{local}@{domain}");
        if !w.out.remotes.iter().any(|r| r.eq_ignore_ascii_case(&address)) {
            w.out.remotes.push(address);
        }
        w.out.is_forwarded |= is_forwarded;
        Ok(())
    }
}

impl Expansion {
    fn push_local(&mut self, mailbox: MailboxId) {
        if !self.locals.contains(&mailbox) {
            self.locals.push(mailbox);
        }
    }
}

/// The mailboxes a message is stored in, from every recipient's expansion: one copy per Maildir,
/// however many recipients lead there. When they choose different folders of one Maildir, the inbox
/// wins if any chose it (the plain address is the more general one), else the first folder chosen.
pub fn one_per_maildir<'a>(mailboxes: impl IntoIterator<Item = &'a MailboxId>) -> Vec<MailboxId> {
    let mut out: Vec<MailboxId> = Vec::new();
    for m in mailboxes {
        match out.iter_mut().find(|o| o.inbox() == m.inbox()) {
            Some(existing) if existing.folder().is_some() && m.folder().is_none() => *existing = m.clone(),
            Some(_) => {}
            None => out.push(m.clone()),
        }
    }
    out
}
