//! Trust on the wire: DKIM signing, and the SPF, DKIM, DMARC and ARC checks of inbound mail with the
//! Authentication-Results header that records them (around Stalwart's `mail-auth`). No sockets of its
//! own: DNS goes through the resolver it is given.
#![forbid(unsafe_code)]

pub mod dkim;
pub mod keys;

/// mail-auth, for the types the API takes (`MessageAuthenticator`, its resolver and caches).
pub use mail_auth;
