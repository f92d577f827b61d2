//! The relay's metrics: the result of each delivery attempt, and the queue gauges (recipients by state,
//! messages, the oldest message's age), refreshed from the queue's in-memory census as the scheduler
//! goes round, at most once per [`GAUGE_INTERVAL`] (no directory scan: the queue keeps every entry in
//! memory).

use std::time::{Duration, Instant, SystemTime};

use mailroom_metrics::record::{self, QueueGauges};
use mailroom_metrics::{DeliveryResult, QueueState};
use mailroom_queue::{Census, Outcome, Queue};

/// The shortest time between two refreshes of the queue gauges: the census walks every entry.
pub const GAUGE_INTERVAL: Duration = Duration::from_secs(1);

/// Counts one attempt for one recipient by the outcome the queue records.
pub(crate) fn attempt(outcome: &Outcome) {
    record::delivery_attempt(match outcome {
        Outcome::Delivered { .. } | Outcome::Relayed { .. } => DeliveryResult::Delivered,
        Outcome::Deferred { .. } => DeliveryResult::Deferred,
        Outcome::Bounced { .. } => DeliveryResult::Bounced,
    });
}

/// When the queue gauges were last set.
#[derive(Debug, Default)]
pub(crate) struct Gauges {
    last: Option<Instant>,
}

impl Gauges {
    /// Sets the queue gauges from a census, unless that was done less than [`GAUGE_INTERVAL`] ago or no
    /// recorder is installed.
    pub(crate) fn update(&mut self, queue: &Queue) {
        if !mailroom_metrics::is_installed() || self.last.is_some_and(|t| t.elapsed() < GAUGE_INTERVAL) {
            return;
        }
        self.last = Some(Instant::now());
        record::queue(&gauges(&queue.census(), SystemTime::now()));
    }
}

/// The gauge values of a census taken at `now`.
fn gauges(c: &Census, now: SystemTime) -> QueueGauges {
    let mut recipients = [0u64; 3];
    recipients[QueueState::Pending as usize] = c.pending as u64;
    recipients[QueueState::Deferred as usize] = c.deferred as u64;
    recipients[QueueState::InFlight as usize] = c.in_flight as u64;
    let oldest_age = c.oldest.and_then(|t| now.duration_since(t).ok()).unwrap_or_default();
    QueueGauges { recipients, messages: c.messages as u64, oldest_age }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_census_becomes_gauges() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let c =
            Census { pending: 1, deferred: 2, in_flight: 3, messages: 4, oldest: Some(now - Duration::from_secs(30)) };
        let g = gauges(&c, now);
        assert_eq!(g.recipients[QueueState::Pending as usize], 1);
        assert_eq!(g.recipients[QueueState::Deferred as usize], 2);
        assert_eq!(g.recipients[QueueState::InFlight as usize], 3);
        assert_eq!((g.messages, g.oldest_age), (4, Duration::from_secs(30)));
        let empty = gauges(&Census::default(), now);
        assert_eq!(empty.oldest_age, Duration::ZERO, "an empty queue has no age");
        let future = Census { oldest: Some(now + Duration::from_secs(5)), ..c };
        assert_eq!(gauges(&future, now).oldest_age, Duration::ZERO, "a clock step back is not negative");
    }
}
