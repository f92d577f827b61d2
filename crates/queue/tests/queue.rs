//! The queue through its public API, with entries made by the store's commit path as the server makes
//! them: states, claims, durable results, removal, quarantine, crash leftovers, requests.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use mailroom_queue::envelope::from_unix;
use mailroom_queue::request::ALL;
use mailroom_queue::{Envelope, Outcome, Queue, QueueError, Request, State};
use mailroom_store::Store;

const MESSAGE: &[u8] = b"Return-Path: <alice@example.org>\nSubject: hi\n\nbody\n";

/// Queues a message for `rcpts` the way the server does: commit_with(no mailboxes, spool), then
/// add_committed.
fn enqueue(store: &Store, queue: &Queue, rcpts: &[&str]) -> Envelope {
    let mut incoming = store.begin().unwrap();
    incoming.write(MESSAGE).unwrap();
    let env = Envelope::new(incoming.id(), "alice@example.org", SystemTime::now(), MESSAGE.len() as u64, rcpts);
    incoming.commit_with(&[], Some(queue.spool_for(&env))).wait().unwrap();
    queue.add_committed(env.clone());
    env
}

fn open(dir: &Path) -> (Store, Queue) {
    let store = Store::open(dir).unwrap();
    let queue = Queue::open(dir).unwrap();
    (store, queue)
}

fn on_disk(dir: &Path, id: &str) -> Envelope {
    Envelope::from_toml(&fs::read(dir.join("queue/env").join(id)).unwrap()).unwrap()
}

fn deferred(secs: u64) -> Outcome {
    Outcome::Deferred {
        reply: "451 4.3.0 try later".into(),
        status: "4.3.0".into(),
        remote_mta: Some("mx.remote.example".into()),
        retry_at: SystemTime::now() + Duration::from_secs(secs),
    }
}

fn delivered() -> Outcome {
    Outcome::Delivered { reply: "250 2.0.0 Ok".into(), remote_mta: "mx.remote.example".into() }
}

#[test]
fn an_entry_goes_from_pending_through_deferred_to_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (store, queue) = open(dir.path());
    let env = enqueue(&store, &queue, &["bob@remote.example", "carol@remote.example"]);
    assert_eq!(on_disk(dir.path(), &env.id), env, "the envelope is on disk after the commit");
    assert_eq!(fs::read(queue.message_path(&env.id)).unwrap(), MESSAGE);

    let now = SystemTime::now();
    let due = queue.due(now);
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].due, [0, 1]);
    assert!(queue.next_due().unwrap() <= now, "pending is due at once");

    let claim = queue.claim(&env.id, &[0, 1]).unwrap();
    assert!(queue.claim(&env.id, &[1]).is_none(), "one attempt per recipient at a time");
    assert!(queue.due(now).is_empty(), "in flight is not due");
    assert_eq!(queue.next_due(), None, "nothing waits while everything is in flight");

    queue.record(claim, vec![(0, delivered()), (1, deferred(60))]).unwrap();
    let stored = on_disk(dir.path(), &env.id);
    assert_eq!(stored.rcpts[0].state, State::Delivered);
    assert_eq!(stored.rcpts[0].status.as_deref(), Some("2.0.0"));
    assert_eq!(stored.rcpts[1].state, State::Deferred);
    assert_eq!(stored.rcpts[1].attempts, 1);
    assert_eq!(stored.rcpts[1].last_reply.as_deref(), Some("451 4.3.0 try later"));
    assert_eq!(stored.rcpts[1].remote_mta.as_deref(), Some("mx.remote.example"));
    assert_eq!(stored.history.len(), 2);
    assert_eq!(queue.get(&env.id).unwrap(), stored, "memory and disk agree");
    assert!(queue.due(SystemTime::now()).is_empty(), "deferred for a minute");
    let next = queue.next_due().unwrap();
    assert!(next > SystemTime::now() + Duration::from_secs(50), "{next:?}");
    let later = queue.due(SystemTime::now() + Duration::from_secs(61));
    assert_eq!(later[0].due, [1], "only the deferred recipient");

    let claim = queue.claim(&env.id, &[1]).unwrap();
    assert!(queue.claim(&env.id, &[0]).is_none(), "a final recipient cannot be claimed");
    let bounce = Outcome::Bounced { reply: "550 5.1.1 no such user".into(), status: "5.1.1".into(), remote_mta: None };
    queue.record(claim, vec![(1, bounce)]).unwrap();
    assert!(!dir.path().join("queue/env").join(&env.id).exists(), "envelope removed when all final");
    assert!(!queue.message_path(&env.id).exists(), "message removed when all final");
    assert!(queue.list().unwrap().is_empty());
    assert!(matches!(queue.get(&env.id), Err(QueueError::NoSuchEntry(_))));
}

#[test]
fn results_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (store, queue) = open(dir.path());
    let env = enqueue(&store, &queue, &["bob@remote.example", "carol@remote.example"]);
    let claim = queue.claim(&env.id, &[0, 1]).unwrap();
    queue.record(claim, vec![(0, delivered()), (1, deferred(300))]).unwrap();
    let before = queue.get(&env.id).unwrap();
    drop(queue);
    let again = Queue::open(dir.path()).unwrap();
    assert_eq!(again.get(&env.id).unwrap(), before);
    assert!(again.due(SystemTime::now()).is_empty(), "the delivered recipient is not attempted again");
}

#[test]
fn a_dropped_claim_makes_its_recipients_due_again() {
    let dir = tempfile::tempdir().unwrap();
    let (store, queue) = open(dir.path());
    let env = enqueue(&store, &queue, &["bob@remote.example"]);
    let claim = queue.claim(&env.id, &[0]).unwrap();
    assert!(queue.due(SystemTime::now()).is_empty());
    drop(claim);
    assert_eq!(queue.due(SystemTime::now())[0].due, [0]);
}

#[test]
fn results_for_unclaimed_recipients_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let (store, queue) = open(dir.path());
    let env = enqueue(&store, &queue, &["bob@remote.example", "carol@remote.example"]);
    let claim = queue.claim(&env.id, &[0]).unwrap();
    queue.record(claim, vec![(0, deferred(60)), (1, delivered()), (7, delivered())]).unwrap();
    let stored = on_disk(dir.path(), &env.id);
    assert_eq!(stored.rcpts[0].state, State::Deferred);
    assert_eq!(stored.rcpts[1].state, State::Pending, "not claimed: untouched");
}

#[test]
fn a_corrupt_envelope_is_moved_aside_and_the_rest_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (store, queue) = open(dir.path());
    let good = enqueue(&store, &queue, &["bob@remote.example"]);
    let bad = enqueue(&store, &queue, &["carol@remote.example"]);
    let lost = enqueue(&store, &queue, &["dave@remote.example"]);
    drop(queue);
    fs::write(dir.path().join("queue/env").join(&bad.id), b"state = [ this is not toml").unwrap();
    fs::remove_file(dir.path().join("queue/msg").join(&lost.id)).unwrap();

    let queue = Queue::open(dir.path()).unwrap();
    let ids: Vec<String> = queue.list().unwrap().into_iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![good.id.clone()]);
    let corrupt = dir.path().join("queue/corrupt");
    assert!(corrupt.join(format!("{}.env", bad.id)).exists());
    assert_eq!(fs::read(corrupt.join(format!("{}.msg", bad.id))).unwrap(), MESSAGE, "its message kept beside it");
    assert!(corrupt.join(format!("{}.env", lost.id)).exists(), "an envelope without its message");
    assert!(!dir.path().join("queue/env").join(&bad.id).exists());
    assert_eq!(queue.due(SystemTime::now()).len(), 1, "the good entry is still delivered");
}

#[test]
fn an_envelope_naming_another_id_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (store, queue) = open(dir.path());
    let env = enqueue(&store, &queue, &["bob@remote.example"]);
    drop(queue);
    let mut other = env.clone();
    other.id = "someone-else".into();
    fs::write(dir.path().join("queue/env").join(&env.id), other.to_toml().unwrap()).unwrap();
    let queue = Queue::open(dir.path()).unwrap();
    assert!(queue.list().unwrap().is_empty());
    assert!(dir.path().join("queue/corrupt").join(format!("{}.env", env.id)).exists());
}

#[test]
fn a_crash_between_rewrite_steps_leaves_the_old_or_the_new_envelope() {
    let dir = tempfile::tempdir().unwrap();
    let (store, queue) = open(dir.path());
    let env = enqueue(&store, &queue, &["bob@remote.example", "carol@remote.example"]);
    let claim = queue.claim(&env.id, &[0]).unwrap();
    queue.record(claim, vec![(0, deferred(60))]).unwrap();
    let old = queue.get(&env.id).unwrap();
    drop(queue);
    // Crash after writing (part of) the new version, before the rename: the staging file is torn.
    let tmp = dir.path().join("queue/env").join(format!("{}.tmp", env.id));
    let mut newer = old.clone();
    newer.rcpts[0].state = State::Delivered;
    let bytes = newer.to_toml().unwrap();
    fs::write(&tmp, &bytes[..bytes.len() / 2]).unwrap();
    let queue = Queue::open(dir.path()).unwrap();
    assert_eq!(queue.get(&env.id).unwrap(), old, "the old version, whole");
    assert_eq!(queue.list().unwrap().len(), 1, "the staging file is not an entry");
    assert!(!dir.path().join("queue/corrupt").read_dir().unwrap().any(|_| true), "nothing quarantined");
    // The next result replaces the leftover staging file.
    let claim = queue.claim(&env.id, &[0, 1]).unwrap();
    queue.record(claim, vec![(0, delivered()), (1, deferred(60))]).unwrap();
    assert_eq!(on_disk(dir.path(), &env.id).rcpts[0].state, State::Delivered);
    assert!(!tmp.exists());
}

#[test]
fn an_entry_whose_removal_was_cut_short_is_finished_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (store, queue) = open(dir.path());
    let env = enqueue(&store, &queue, &["bob@remote.example"]);
    drop(queue);
    let mut done = env.clone();
    done.rcpts[0].state = State::Delivered;
    fs::write(dir.path().join("queue/env").join(&env.id), done.to_toml().unwrap()).unwrap();
    let queue = Queue::open(dir.path()).unwrap();
    assert!(queue.list().unwrap().is_empty());
    assert!(!dir.path().join("queue/env").join(&env.id).exists());
    assert!(!queue.message_path(&env.id).exists());
}

#[test]
fn stale_orphans_are_removed_and_fresh_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(dir.path()).unwrap();
    drop(queue);
    let msg = dir.path().join("queue/msg");
    fs::write(msg.join("old"), b"x").unwrap();
    fs::write(msg.join("fresh"), b"x").unwrap();
    let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
    fs::File::options().write(true).open(msg.join("old")).unwrap().set_modified(two_hours_ago).unwrap();
    let _queue = Queue::open(dir.path()).unwrap();
    assert!(!msg.join("old").exists(), "a message whose envelope is gone, long ago");
    assert!(msg.join("fresh").exists(), "may be a commit in progress");
}

#[test]
fn requests_are_written_taken_once_and_acted_on() {
    let dir = tempfile::tempdir().unwrap();
    let (store, queue) = open(dir.path());
    let a = enqueue(&store, &queue, &["bob@remote.example"]);
    let b = enqueue(&store, &queue, &["carol@remote.example"]);
    let cli = Queue::open(dir.path()).unwrap(); // another process's view
    cli.request(&a.id, Request::Flush).unwrap();
    cli.request(ALL, Request::Flush).unwrap();
    cli.request(&b.id, Request::Delete).unwrap();
    cli.request(&b.id, Request::Bounce).unwrap();
    assert!(matches!(cli.request("../x", Request::Delete), Err(QueueError::InvalidId(_))));
    fs::write(dir.path().join("queue/requests/junk"), b"").unwrap();
    let mut taken = queue.take_requests();
    taken.sort_by(|x, y| (&x.0, x.1.as_str()).cmp(&(&y.0, y.1.as_str())));
    let mut expected = vec![
        (a.id.clone(), Request::Flush),
        (ALL.to_string(), Request::Flush),
        (b.id.clone(), Request::Bounce),
        (b.id.clone(), Request::Delete),
    ];
    expected.sort_by(|x, y| (&x.0, x.1.as_str()).cmp(&(&y.0, y.1.as_str())));
    assert_eq!(taken, expected);
    assert!(queue.take_requests().is_empty(), "taken once");
    assert_eq!(fs::read_dir(dir.path().join("queue/requests")).unwrap().count(), 0, "junk removed too");

    // Flush: a deferred recipient is due at once.
    let claim = queue.claim(&a.id, &[0]).unwrap();
    queue.record(claim, vec![(0, deferred(3600))]).unwrap();
    assert!(queue.due(SystemTime::now()).iter().all(|e| e.envelope.id != a.id));
    queue.flush(ALL).unwrap();
    assert!(queue.due(SystemTime::now()).iter().any(|e| e.envelope.id == a.id));

    // Delete: gone, and a result of an attempt in flight is dropped.
    let claim = queue.claim(&b.id, &[0]).unwrap();
    queue.delete(&b.id).unwrap();
    assert!(!dir.path().join("queue/env").join(&b.id).exists() && !queue.message_path(&b.id).exists());
    queue.record(claim, vec![(0, deferred(60))]).unwrap();
    assert!(!dir.path().join("queue/env").join(&b.id).exists(), "a late result does not bring it back");
    assert!(matches!(queue.delete(&b.id), Err(QueueError::NoSuchEntry(_))));
}

#[test]
fn a_result_after_a_delete_by_another_process_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (store, queue) = open(dir.path());
    let env = enqueue(&store, &queue, &["bob@remote.example"]);
    let claim = queue.claim(&env.id, &[0]).unwrap();
    Queue::open(dir.path()).unwrap().delete(&env.id).unwrap(); // `mailroom queue delete` without a server
    queue.record(claim, vec![(0, deferred(60))]).unwrap();
    assert!(!dir.path().join("queue/env").join(&env.id).exists());
    assert!(queue.list().unwrap().is_empty());
}

#[test]
fn history_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (store, queue) = open(dir.path());
    let env = enqueue(&store, &queue, &["bob@remote.example"]);
    for _ in 0..mailroom_queue::envelope::MAX_HISTORY + 5 {
        let claim = queue.claim(&env.id, &[0]).unwrap();
        queue.record(claim, vec![(0, deferred(1))]).unwrap();
    }
    let stored = on_disk(dir.path(), &env.id);
    assert_eq!(stored.history.len(), mailroom_queue::envelope::MAX_HISTORY);
    assert_eq!(stored.rcpts[0].attempts as usize, mailroom_queue::envelope::MAX_HISTORY + 5);
}

#[test]
fn delay_warned_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (store, queue) = open(dir.path());
    let env = enqueue(&store, &queue, &["bob@remote.example"]);
    let claim = queue.claim(&env.id, &[0]).unwrap();
    queue.mark_delay_warned(&claim, &[0]).unwrap();
    queue.record(claim, vec![(0, deferred(60))]).unwrap();
    assert!(on_disk(dir.path(), &env.id).rcpts[0].delay_warned);
}

#[test]
fn a_relayed_result_is_final() {
    let dir = tempfile::tempdir().unwrap();
    let (store, queue) = open(dir.path());
    let env = enqueue(&store, &queue, &["bob@remote.example", "carol@remote.example"]);
    let claim = queue.claim(&env.id, &[0]).unwrap();
    let relayed = Outcome::Relayed { reply: "250 ok".into(), remote_mta: "mx".into() };
    queue.record(claim, vec![(0, relayed)]).unwrap();
    let stored = on_disk(dir.path(), &env.id);
    assert_eq!(stored.rcpts[0].state, State::Relayed);
    assert_eq!(stored.rcpts[0].status.as_deref(), Some("2.0.0"), "no enhanced code in the reply: 2.0.0");
    assert_eq!(queue.due(from_unix(u64::from(u32::MAX)))[0].due, [1]);
}

#[test]
fn concurrent_results_for_one_entry_are_all_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (store, queue) = open(dir.path());
    let rcpts: Vec<String> = (0..8).map(|i| format!("r{i}@remote.example")).collect();
    let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    let env = enqueue(&store, &queue, &refs);
    let claims: Vec<_> = (0..8).map(|i| queue.claim(&env.id, &[i]).unwrap()).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    std::thread::scope(|s| {
        let (q, stop2) = (queue.clone(), stop.clone());
        // A scheduler and a `list` looking on while the results are written: no deadlock.
        s.spawn(move || {
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = (q.due(SystemTime::now()), q.next_due(), q.list().unwrap());
            }
        });
        let writers: Vec<_> = claims
            .into_iter()
            .map(|c| {
                let q = queue.clone();
                s.spawn(move || {
                    let i = c.rcpts()[0];
                    q.record(c, vec![(i, deferred(60))]).unwrap()
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let stored = on_disk(dir.path(), &env.id);
    assert!(stored.rcpts.iter().all(|r| r.state == State::Deferred), "a result was lost: {stored:?}");
    assert_eq!(stored.history.len(), 8);
}

#[test]
fn a_data_dir_given_with_dotdot_works() {
    // e.g. `mailroom serve --data-dir ../data`: the spool's paths go into the store's intent records,
    // which accept only resolved paths.
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("elsewhere")).unwrap();
    let data = dir.path().join("elsewhere/../data");
    let (store, queue) = open(&data);
    let env = enqueue(&store, &queue, &["bob@remote.example"]);
    assert_eq!(fs::read(dir.path().join("data/queue/msg").join(&env.id)).unwrap(), MESSAGE);
    assert_eq!(queue.list().unwrap().len(), 1);
}

#[test]
fn the_census_counts_recipients_by_state_and_finds_the_oldest_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (store, queue) = open(dir.path());
    assert_eq!(queue.census(), mailroom_queue::Census::default(), "empty");
    let first = enqueue(&store, &queue, &["a@remote.example", "b@remote.example", "c@remote.example"]);
    let second = enqueue(&store, &queue, &["d@remote.example"]);
    let claim = queue.claim(&first.id, &[0, 1]).unwrap();
    queue.record(claim, vec![(0, delivered()), (1, deferred(60))]).unwrap();
    let _in_flight = queue.claim(&second.id, &[0]).unwrap();
    let c = queue.census();
    assert_eq!((c.pending, c.deferred, c.in_flight, c.messages), (1, 1, 1, 2), "{c:?}");
    assert_eq!(c.oldest, Some(first.arrival_time().min(second.arrival_time())));
}
