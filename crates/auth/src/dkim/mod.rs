//! DKIM (RFC 6376, RFC 8463): streaming body canonicalisation and hashing, streaming verification, and
//! signing. Nothing here holds a message body in memory: the header section is kept (bounded), the body
//! is hashed as it goes by.

mod body;
mod sign;
mod split;
mod verify;

pub use body::{canonical_body, BodyHash, BodyHasher};
pub use sign::{sign_message, DkimSigner, SignError, SIGNED_HEADERS};
pub use split::DEFAULT_MAX_HEADER_SECTION;
pub use verify::{
    DkimResult, DkimStatus, DkimVerifier, Prepared, VerifiedInput, HEADER_B_LEN, MAX_BODY_HASHES, MAX_SIGNATURES,
    MIN_RSA_BITS,
};

/// mail-auth's names for what the API takes and gives.
pub use mail_auth::common::crypto::{Algorithm, HashAlgorithm};
pub use mail_auth::dkim::Canonicalization;
