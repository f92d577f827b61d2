//! Password checks for the web: as SMTP AUTH checks them — argon2 off the async threads, a bounded
//! number at once, `[auth] failure_delay` after a failure, a dummy check for unknown users — and a
//! client address that failed `[limits] max_auth_failures` times within [`FAILURE_WINDOW`] is refused
//! until the window has passed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use mailroom_store::Store;
use tokio::sync::Semaphore;

/// Window over which failed logins from one client address are counted.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Client addresses tracked for failures at most (memory bound under a spray of sources).
const MAX_TRACKED: usize = 10_000;

/// Password checks: argon2 slots, failure delay, per-address failure counts.
pub struct LoginLimiter {
    slots: Semaphore,
    failure_delay: Duration,
    max_failures: usize,
    failures: Mutex<HashMap<IpAddr, (usize, Instant)>>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum LoginError {
    Invalid,
    /// Too many failures from this address lately.
    Blocked,
}

impl LoginLimiter {
    pub fn new(failure_delay: Duration, max_failures: usize) -> LoginLimiter {
        let slots = std::thread::available_parallelism().map_or(2, |n| n.get());
        LoginLimiter { slots: Semaphore::new(slots), failure_delay, max_failures, failures: Mutex::default() }
    }

    /// The normalized address when `password` is right for `address`.
    pub async fn check(&self, store: &Store, ip: IpAddr, address: &str, password: &str) -> Result<String, LoginError> {
        if self.is_blocked(ip) {
            tokio::time::sleep(self.failure_delay).await;
            return Err(LoginError::Blocked);
        }
        let user = store.users().get(address).cloned();
        let password = password.to_owned();
        let slot = self.slots.acquire().await;
        let hash = user.as_ref().and_then(|u| u.password_hash.clone());
        let ok = tokio::task::spawn_blocking(move || match hash {
            Some(hash) => mailroom_store::password::verify_password(&hash, &password),
            None => {
                mailroom_store::password::dummy_verify(&password);
                false
            }
        })
        .await
        .unwrap_or(false);
        drop(slot);
        match user {
            Some(u) if ok => Ok(u.address),
            _ => {
                self.record_failure(ip);
                tracing::info!(user = %address, client = %ip, "web login failed");
                tokio::time::sleep(self.failure_delay).await;
                Err(LoginError::Invalid)
            }
        }
    }

    fn is_blocked(&self, ip: IpAddr) -> bool {
        let map = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(&ip).is_some_and(|(n, since)| *n >= self.max_failures && since.elapsed() < FAILURE_WINDOW)
    }

    fn record_failure(&self, ip: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_TRACKED {
            map.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
        }
        let entry = map.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= FAILURE_WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }
}
