//! The session table of logged-in browsers: a random id (the cookie) maps to the user and the CSRF
//! token of that session. In memory: a restart logs everyone out, which is the safe direction.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a login lasts (absolute, not sliding): a forgotten browser tab does not stay logged in.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; beyond it the one closest to expiry makes room (memory stays bounded however
/// many logins there are).
pub const MAX_SESSIONS: usize = 10_000;
/// Name of the session cookie.
pub const COOKIE: &str = "mailroom_session";

#[derive(Debug, Clone)]
pub struct Session {
    pub address: String,
    pub csrf: String,
    pub expires: Instant,
}

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Opens a session for `address`; returns its id (the cookie value).
    pub fn open(&self, address: &str) -> Result<(String, Session), crate::tokens::TokenError> {
        let id = crate::tokens::random_hex(32)?;
        let session = Session {
            address: address.to_owned(),
            csrf: crate::tokens::random_hex(32)?,
            expires: Instant::now() + SESSION_LIFETIME,
        };
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_SESSIONS {
            let now = Instant::now();
            map.retain(|_, s| s.expires > now);
        }
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| k.clone()) {
                map.remove(&oldest);
            }
        }
        map.insert(id.clone(), session.clone());
        Ok((id, session))
    }

    /// The live session with this id.
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        match map.get(id) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    pub fn close(&self, id: &str) {
        self.map.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
    }

    /// Ends every session of `address` (the user was removed).
    pub fn close_user(&self, address: &str) {
        self.map.lock().unwrap_or_else(PoisonError::into_inner).retain(|_, s| s.address != address);
    }
}
