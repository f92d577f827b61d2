//! API tokens: `mailroom token create|list|revoke` and the bearer check of the API.
//!
//! Owns `<data-dir>/api-tokens.toml`. A token is `mrt_<id>_<secret>`; the file keeps the id, the owner
//! and the SHA-256 of the secret, never the secret itself (it is shown once, at creation). The secret
//! is 256 random bits, so a fast hash is enough: there is nothing to brute-force. Revoking removes the
//! entry; the next request with that token is refused (the file is read at each check).

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};

/// File name of the token list inside the data directory.
pub const TOKENS_FILE: &str = "api-tokens.toml";
/// Largest token file read (about 5,000 entries): the check reads it per request.
pub const MAX_TOKENS_FILE: u64 = 1024 * 1024;
/// Tokens kept at most, over all users.
pub const MAX_TOKENS: usize = 1000;
/// Prefix of every token, so that one found in a log or a repository is recognisable.
pub const TOKEN_PREFIX: &str = "mrt_";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{0}: not a token file: {1}")]
    Parse(PathBuf, String),
    #[error("{0}: larger than {MAX_TOKENS_FILE} bytes")]
    TooLarge(PathBuf),
    #[error("too many tokens (at most {MAX_TOKENS}); revoke some first")]
    TooMany,
    #[error("no random numbers from the system")]
    Random,
}

/// One stored token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Public part, shown by `token list`, used by `token revoke`.
    pub id: String,
    /// The user the token acts as (normalized address).
    pub address: String,
    /// Hex SHA-256 of the secret part.
    pub hash: String,
    /// Unix seconds.
    pub created: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default, rename = "token")]
    tokens: Vec<TokenEntry>,
}

/// Reads and writes `<data-dir>/api-tokens.toml`.
#[derive(Debug, Clone)]
pub struct TokenFile {
    dir: PathBuf,
    path: PathBuf,
}

impl TokenFile {
    pub fn new(data_dir: &Path) -> TokenFile {
        TokenFile { dir: data_dir.to_path_buf(), path: data_dir.join(TOKENS_FILE) }
    }

    /// Every token (none when the file does not exist).
    pub fn list(&self) -> Result<Vec<TokenEntry>, TokenError> {
        let mut text = String::new();
        let io = |op| move |source| TokenError::Io { op, path: self.path.clone(), source };
        match fs::File::open(&self.path) {
            Ok(f) => f.take(MAX_TOKENS_FILE + 1).read_to_string(&mut text).map_err(io("read"))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("open")(e)),
        };
        if text.len() as u64 > MAX_TOKENS_FILE {
            return Err(TokenError::TooLarge(self.path.clone()));
        }
        let file: File = toml::from_str(&text).map_err(|e| TokenError::Parse(self.path.clone(), e.to_string()))?;
        Ok(file.tokens)
    }

    /// Makes a token for `address` (already validated by the caller); returns its entry and the token
    /// itself, which is not stored and cannot be shown again.
    pub fn create(&self, address: &str) -> Result<(TokenEntry, String), TokenError> {
        let mut tokens = self.list()?;
        if tokens.len() >= MAX_TOKENS {
            return Err(TokenError::TooMany);
        }
        let (id, secret) = (random_hex(8)?, random_hex(32)?);
        let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let entry = TokenEntry { id: id.clone(), address: address.to_owned(), hash: sha256_hex(&secret), created };
        tokens.push(entry.clone());
        self.write(&tokens)?;
        Ok((entry, format!("{TOKEN_PREFIX}{id}_{secret}")))
    }

    /// Removes the token `id`; false when there is none.
    pub fn revoke(&self, id: &str) -> Result<bool, TokenError> {
        let mut tokens = self.list()?;
        let before = tokens.len();
        tokens.retain(|t| t.id != id);
        if tokens.len() == before {
            return Ok(false);
        }
        self.write(&tokens)?;
        Ok(true)
    }

    /// The address a presented token acts as, if it is a current token.
    pub fn check(&self, token: &str) -> Option<String> {
        let (id, secret) = token.strip_prefix(TOKEN_PREFIX)?.split_once('_')?;
        let hash = sha256_hex(secret);
        let tokens = match self.list() {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the API tokens");
                return None;
            }
        };
        tokens.into_iter().find(|t| t.id == id && same(t.hash.as_bytes(), hash.as_bytes())).map(|t| t.address)
    }

    /// Atomic replace (temporary file, fsync, rename), mode 0600.
    fn write(&self, tokens: &[TokenEntry]) -> Result<(), TokenError> {
        let text = toml::to_string(&File { tokens: tokens.to_vec() })
            .map_err(|e| TokenError::Parse(self.path.clone(), e.to_string()))?;
        let tmp = self.dir.join(format!("{TOKENS_FILE}.tmp.{}", std::process::id()));
        let io = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| TokenError::Io { op, path, source }
        };
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        let header = "# mailroom API tokens: `mailroom token create|list|revoke`. Hashes only.\n";
        f.write_all(header.as_bytes()).and_then(|()| f.write_all(text.as_bytes())).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
        fs::rename(&tmp, &self.path).map_err(io("rename", &tmp))?;
        mailroom_store::fsync::sync_dir(&self.dir).map_err(io("fsync", &self.dir))
    }
}

/// `bytes` random bytes from the system, as lowercase hex.
pub fn random_hex(bytes: usize) -> Result<String, TokenError> {
    let mut buf = vec![0u8; bytes];
    ring::rand::SystemRandom::new().fill(&mut buf).map_err(|_| TokenError::Random)?;
    Ok(hex(&buf))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(s: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, s.as_bytes()).as_ref())
}

/// Equal contents, in time that does not depend on where they differ.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_check_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let file = TokenFile::new(dir.path());
        let (entry, token) = file.create("a@example.test").unwrap();
        assert!(token.starts_with("mrt_"));
        assert_eq!(file.check(&token).as_deref(), Some("a@example.test"));
        let stored = fs::read_to_string(dir.path().join(TOKENS_FILE)).unwrap();
        let secret = token.rsplit('_').next().unwrap();
        assert!(!stored.contains(secret), "the secret is never stored");
        assert_eq!(file.check(&format!("{token}x")), None);
        assert_eq!(file.check(&format!("mrt_{}_{}", entry.id, "0".repeat(64))), None);
        assert!(file.revoke(&entry.id).unwrap());
        assert_eq!(file.check(&token), None, "revoked");
        assert!(!file.revoke(&entry.id).unwrap());
    }
}
