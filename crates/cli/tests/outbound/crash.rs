//! The crash test of the queue: the remote MX is down, messages are accepted and deferred; the server is
//! SIGKILLed several times while the MX comes and goes; at the end every recipient that got a 250 was
//! delivered exactly once, except recipients in flight at a kill, which may arrive twice (at-least-once):
//! the test counts and prints those duplicates.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::{poll, Server, Smtp};
use crate::support::{mailroom, queued, Rig};

const ROUNDS: usize = 8;
const PER_ROUND: usize = 8;
const PER_DESTINATION: usize = 2;
const RCPTS_PER_MESSAGE: usize = 2;

/// A small xorshift, seeded from the clock (printed, so a run can be reasoned about).
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Sends one message to two recipients from 127.0.0.1 (inside relay_networks); returns the acknowledged
/// (subject, recipient) pairs, none if the server did not say 250.
fn send_one(server: &Server, subject: &str) -> Vec<(String, String)> {
    let Ok(mut s) = Smtp::try_connect(server.port) else { return vec![] };
    let rcpts: Vec<String> = (0..RCPTS_PER_MESSAGE).map(|k| format!("{subject}-{k}@one.test")).collect();
    let mut go = || -> std::io::Result<bool> {
        s.try_read_reply()?;
        s.try_send(b"EHLO crash.test\r\n")?;
        s.try_read_reply()?;
        s.try_send(b"MAIL FROM:<cron@crash.test>\r\n")?;
        if s.try_read_reply()?.code != 250 {
            return Ok(false);
        }
        for r in &rcpts {
            s.try_send(format!("RCPT TO:<{r}>\r\n").as_bytes())?;
            if s.try_read_reply()?.code != 250 {
                return Ok(false);
            }
        }
        s.try_send(b"DATA\r\n")?;
        if s.try_read_reply()?.code != 354 {
            return Ok(false);
        }
        s.try_send(format!("Subject: {subject}\r\n\r\ncrash test\r\n.\r\n").as_bytes())?;
        Ok(s.try_read_reply()?.code == 250)
    };
    match go() {
        Ok(true) => rcpts.into_iter().map(|r| (subject.to_string(), r)).collect(),
        _ => vec![],
    }
}

#[test]
fn sigkill_while_the_mx_comes_and_goes_loses_nothing() {
    let Some(rig) = Rig::new() else { return };
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    eprintln!("crash test seed {seed}");
    let mut rng = Rng(seed);
    let mut rx = rig.receiver("rx", &["127.0.0.2"], &[]);
    rx.down();
    let delivery = format!("relay_networks = [\"127.0.0.0/8\"]\nmax_connections_per_destination = {PER_DESTINATION}");
    let mut server = mailroom(rig.config(&delivery, ""), &[]);
    let mut acked = Vec::new();
    let mut kills = 0;
    for round in 0..ROUNDS {
        // The MX comes and goes: down in even rounds, up in odd ones, where the messages just accepted (and
        // those deferred before, as their backoff ends) are being delivered when the kill comes.
        if round % 2 == 1 && !rx.is_up() {
            rx.up();
        } else if round % 2 == 0 && rx.is_up() {
            rx.down();
        }
        for k in 0..PER_ROUND {
            acked.extend(send_one(&server, &format!("c{round}x{k}")));
        }
        std::thread::sleep(Duration::from_millis(rng.below(400)));
        server.kill();
        kills += 1;
        server.restart();
    }
    let during = rx.messages().len();
    if !rx.is_up() {
        rx.up();
    }
    let want = ROUNDS * PER_ROUND * RCPTS_PER_MESSAGE;
    assert_eq!(acked.len(), want, "every message was acknowledged between the kills");

    // Everything drains: every acknowledged recipient arrives.
    let count = |rx: &crate::support::Receiver| {
        let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
        for m in rx.messages() {
            let subject = m.header("Subject").unwrap_or_default();
            for r in m.rcpts() {
                *seen.entry((subject.clone(), r.to_lowercase())).or_default() += 1;
            }
        }
        seen
    };
    let start = Instant::now();
    let done = poll(Duration::from_secs(60), Duration::from_millis(200), || {
        let seen = count(&rx);
        acked.iter().all(|a| seen.contains_key(a)).then_some(())
    });
    let seen = count(&rx);
    let missing: Vec<_> = acked.iter().filter(|a| !seen.contains_key(*a)).collect();
    assert!(
        done.is_some() && missing.is_empty(),
        "lost after {kills} kills: {missing:?}\nqueue: {:?}\nlog:\n{}",
        queued(&server),
        server.log_text()
    );
    let _ = poll(Duration::from_secs(20), Duration::from_millis(100), || queued(&server).is_empty().then_some(()));
    assert!(queued(&server).is_empty(), "queue drained: {:?}", queued(&server));
    std::thread::sleep(Duration::from_millis(500));
    let seen = count(&rx);
    let unexpected: Vec<_> = seen.keys().filter(|k| !acked.contains(k)).collect();
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    let extra: usize = dups.iter().map(|(_, n)| **n - 1).sum();
    eprintln!(
        "crash test: {kills} kills, {} acknowledged recipients ({during} transactions delivered while the kills \
         went on), all delivered {:?} after the last restart; {} duplicate deliveries (in flight at a kill): \
         {dups:?}",
        acked.len(),
        start.elapsed(),
        extra
    );
    // Only messages that got no 250 (none here) may arrive unacknowledged.
    assert!(unexpected.is_empty(), "delivered but never acknowledged: {unexpected:?}");
    // At a kill at most PER_DESTINATION transactions of RCPTS_PER_MESSAGE recipients are in flight.
    let bound = kills * PER_DESTINATION * RCPTS_PER_MESSAGE;
    assert!(extra <= bound, "{extra} duplicates, more than the {bound} that can be in flight at {kills} kills");
}
