//! Retry arithmetic: when a deferred recipient is tried again ([`next_retry`]) and when it has been
//! queued too long and must bounce ([`is_expired`]). The relay calls these; the queue only stores the
//! resulting time.

use std::time::{Duration, SystemTime};

/// The wait after the `attempts`-th failed attempt (1 = the first): `min_backoff` doubling with each
/// further attempt, never more than `max_backoff` (as Postfix's minimal/maximal_backoff_time). Attempts
/// 0 and 1 both wait `min_backoff`. A `max_backoff` below `min_backoff` caps it.
pub fn next_retry(attempts: u32, min_backoff: Duration, max_backoff: Duration) -> Duration {
    let doublings = attempts.saturating_sub(1).min(63);
    let factor = 1u64 << doublings;
    let wait = u32::try_from(factor).ok().and_then(|f| min_backoff.checked_mul(f)).unwrap_or(Duration::MAX);
    wait.min(max_backoff)
}

/// Whether a message that arrived at `arrival` has been queued longer than `max_lifetime` at `now`:
/// its deferred recipients are then bounced (RFC 5321 §4.5.4.1: give up after 4-5 days) by the caller.
pub fn is_expired(arrival: SystemTime, now: SystemTime, max_lifetime: Duration) -> bool {
    now.duration_since(arrival).is_ok_and(|age| age > max_lifetime)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(300);
    const MAX: Duration = Duration::from_secs(3600);

    #[test]
    fn backoff_doubles_from_min_to_max() {
        let waits: Vec<u64> = (0..8).map(|a| next_retry(a, MIN, MAX).as_secs()).collect();
        assert_eq!(waits, [300, 300, 600, 1200, 2400, 3600, 3600, 3600]);
        assert_eq!(next_retry(u32::MAX, MIN, MAX), MAX, "no overflow");
        assert_eq!(next_retry(1, Duration::from_millis(50), Duration::from_millis(80)), Duration::from_millis(50));
        assert_eq!(next_retry(3, Duration::from_secs(10), Duration::from_secs(5)), Duration::from_secs(5));
    }

    #[test]
    fn expiry_is_strictly_past_the_lifetime() {
        let arrival = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let life = Duration::from_secs(5 * 86400);
        assert!(!is_expired(arrival, arrival + life, life));
        assert!(is_expired(arrival, arrival + life + Duration::from_secs(1), life));
        assert!(!is_expired(arrival, arrival - Duration::from_secs(10), life), "a clock going back is no expiry");
    }
}
