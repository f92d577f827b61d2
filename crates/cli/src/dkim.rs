//! `mailroom dkim keygen|list`: the DKIM signing keys under `<data-dir>/dkim/<domain>/<selector>.key`
//! and the DNS TXT record each one needs. A running server picks new keys up on SIGHUP.

use std::time::SystemTime;

use anyhow::Context;
use mailroom_auth::keys::{self, KeyAlgorithm, KeyStore};

use crate::user::DataDirArgs;

#[derive(Debug, clap::Subcommand)]
pub enum DkimCommand {
    /// Make a signing key for DOMAIN and print the DNS TXT record to publish.
    Keygen {
        domain: String,
        /// The selector [default: the algorithm and this month, e.g. ed25519-202611].
        #[arg(long)]
        selector: Option<String>,
        /// ed25519 (RFC 8463) or rsa (2048 bits).
        #[arg(long, default_value = "ed25519")]
        algorithm: String,
    },
    /// Show every key: domain, selector, algorithm and its DNS record.
    List,
}

pub fn run(cmd: DkimCommand, dirs: DataDirArgs) -> anyhow::Result<()> {
    let data_dir = dirs.resolve()?;
    match cmd {
        DkimCommand::Keygen { domain, selector, algorithm } => {
            let algorithm: KeyAlgorithm = algorithm.parse()?;
            mailroom_store::fsync::create_dir_all_synced(&data_dir)?;
            let selector = selector.unwrap_or_else(|| default_selector(algorithm, SystemTime::now()));
            let key = keys::generate(&data_dir, &domain, &selector, algorithm)
                .with_context(|| format!("making a key for {domain}"))?;
            println!("# {} key for {} in {}", key.algorithm, key.domain, key.path.display());
            println!("# publish this TXT record, then restart mailroom or send it SIGHUP:");
            println!("{}", key.zone_line());
        }
        DkimCommand::List => {
            let (store, errors) = KeyStore::load(&data_dir);
            for e in errors {
                eprintln!("mailroom: {e}");
            }
            for key in store.keys() {
                println!("{}\t{}\t{}\t{}", key.domain, key.selector, key.algorithm, key.zone_line());
            }
        }
    }
    Ok(())
}

/// `<algorithm>-<yyyymm>`: distinct per algorithm, and a new one each month for rotation.
fn default_selector(algorithm: KeyAlgorithm, now: SystemTime) -> String {
    // "Mon, 30 Nov 2026 18:00:00 +0000": the month name and the year.
    let date = mailroom_proto::date::rfc5322(now);
    let parts: Vec<&str> = date.split_whitespace().collect();
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = parts.get(2).and_then(|m| MONTHS.iter().position(|x| x == m)).map_or(1, |i| i + 1);
    let year = parts.get(3).copied().unwrap_or("1970");
    format!("{algorithm}-{year}{month:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_selectors_name_algorithm_and_month() {
        // 2026-11-30T18:00:00Z
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_796_061_600);
        assert_eq!(default_selector(KeyAlgorithm::Ed25519, t), "ed25519-202611");
        assert_eq!(default_selector(KeyAlgorithm::Rsa, t), "rsa-202611");
    }
}
