//! AUTH: checks a user name and password against the user directory, off the async threads (argon2 is
//! slow on purpose), with the failure delay that slows down guessing. Never logs a password.

use mailroom_proto::server::{Credentials, Decision};
use mailroom_proto::{Enhanced, Reply};
use tracing::info;

use crate::shared::Shared;

/// The answer to one AUTH exchange: Accept (235) or 535 5.7.8 after `[auth] failure_delay`.
pub(crate) async fn authenticate<R>(shared: &Shared, creds: Credentials) -> Decision<R> {
    let users = shared.store.users();
    let (username, mechanism) = (creds.username.clone(), creds.mechanism);
    // Held until the check is done (the blocking task cannot be cancelled anyway).
    let slot = shared.auth_slots.acquire().await;
    let ok =
        tokio::task::spawn_blocking(move || match users.get(&creds.username).and_then(|u| u.password_hash.clone()) {
            Some(hash) => mailroom_store::password::verify_password(&hash, creds.password.expose()),
            None => {
                mailroom_store::password::dummy_verify(creds.password.expose());
                false
            }
        })
        .await
        .unwrap_or(false);
    // Free the slot before any failure delay: a guesser must not hold up other users' logins.
    drop(slot);
    if ok {
        info!(user = %username, ?mechanism, "authenticated");
        Decision::Accept
    } else {
        info!(user = %username, "authentication failed");
        crate::metrics::record::smtp_auth_failure();
        tokio::time::sleep(shared.auth.failure_delay).await;
        Decision::Reply(Reply::new(535, Enhanced(5, 7, 8), "Authentication credentials invalid"))
    }
}
