//! DKIM signing of mail this server's own users send: messages from authenticated clients or from
//! `[delivery] relay_networks` whose From domain has a key under `<data-dir>/dkim/` are signed while
//! the body streams into the store, and the DKIM-Signature fields go in below the trace headers before
//! the commit (so the queued and the stored copies carry them). The keys are read at start and again on
//! SIGHUP ([`Signing::reload`]); no key, no signing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use mailroom_auth::dkim::DkimSigner;
use mailroom_auth::keys::KeyStore;
use mailroom_proto::data::ToLf;
use tracing::{info, warn};

/// The signing keys in force, swapped whole on reload.
pub struct Signing {
    data_dir: PathBuf,
    keys: RwLock<Arc<KeyStore>>,
}

impl Signing {
    /// Reads the keys under `<data_dir>/dkim` (unreadable key files are logged and skipped).
    pub fn load(data_dir: &Path) -> Signing {
        Signing { data_dir: data_dir.to_owned(), keys: RwLock::new(Arc::new(read_keys(data_dir))) }
    }

    /// Reads the keys again (SIGHUP): keys made with `mailroom dkim keygen` since start sign from now on.
    pub fn reload(&self) {
        let keys = Arc::new(read_keys(&self.data_dir));
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
    }

    /// The keys now (cheap: an `Arc`).
    pub fn keys(&self) -> Arc<KeyStore> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A signer for one message, or None when there are no keys at all (nothing to hash then).
    pub(crate) fn message_signer(&self) -> Option<MessageSigner> {
        let keys = self.keys();
        (!keys.is_empty()).then(|| MessageSigner { signer: DkimSigner::new(keys) })
    }
}

fn read_keys(data_dir: &Path) -> KeyStore {
    let (keys, errors) = KeyStore::load(data_dir);
    for e in errors {
        warn!(error = %e, "DKIM key skipped");
    }
    if !keys.is_empty() {
        let domains: Vec<String> = keys.keys().iter().map(|k| format!("{}/{}", k.domain, k.selector)).collect();
        info!(keys = %domains.join(","), "DKIM signing keys loaded");
    }
    keys
}

/// Signs one message as its body streams by (the wire form: CRLF, unstuffed).
pub(crate) struct MessageSigner {
    signer: DkimSigner,
}

impl MessageSigner {
    pub(crate) fn handle_data(&mut self, chunk: &[u8]) {
        self.signer.handle_chunk(chunk);
    }

    /// The DKIM-Signature fields in the store's form (LF line ends), or None: no key for the From
    /// domain, or signing failed (logged; the message goes out unsigned rather than not at all).
    pub(crate) fn finish(self) -> Option<Vec<u8>> {
        match self.signer.finish(SystemTime::now()) {
            Ok(fields) if fields.is_empty() => None,
            Ok(fields) => {
                let mut lf = Vec::with_capacity(fields.len());
                let mut conv = ToLf::default();
                conv.convert(&fields, &mut lf);
                conv.finish(&mut lf);
                Some(lf)
            }
            Err(e) => {
                warn!(error = %e, "DKIM signing failed: the message is not signed");
                None
            }
        }
    }
}
