//! The threads the commit's background stage runs its fsyncs on, started once and kept for the life of
//! the store. fsyncs of different files proceed in parallel in the kernel and the device queue, so a
//! round's files and directories are synced by several threads; starting those threads for every round
//! (as `std::thread::scope` does) cost a `clone3`, a stack mapping and a dozen more system calls per
//! thread — at 10 pipelining sessions about one thread per three messages.
//!
//! [`SyncPool::map`] hands the items to the helpers and works on them itself too: the items sit in one
//! queue that every participant pulls from, so a helper that is slow to wake up (or a pool that could
//! start no helper at all) only means the caller does more of them. It returns when every item is done.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

type Task = Box<dyn FnOnce() + Send>;

/// A fixed set of helper threads for [`SyncPool::map`]; they end when the pool is dropped.
pub(crate) struct SyncPool {
    tasks: Option<mpsc::Sender<Task>>,
    threads: Vec<JoinHandle<()>>,
}

impl SyncPool {
    /// A pool where `threads` threads work on each map: `threads - 1` helpers and the caller. A helper
    /// that cannot be started is logged and done without.
    pub(crate) fn new(threads: usize, name: &str) -> SyncPool {
        let (tx, rx) = mpsc::channel::<Task>();
        let rx = Arc::new(Mutex::new(rx));
        let mut handles = Vec::new();
        for _ in 1..threads {
            let rx = rx.clone();
            let started = std::thread::Builder::new().name(name.to_owned()).spawn(move || loop {
                let task = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
                match task {
                    Ok(task) => task(),
                    Err(_) => return,
                }
            });
            match started {
                Ok(handle) => handles.push(handle),
                Err(error) => {
                    tracing::warn!(%error, "cannot start an fsync thread; continuing with fewer");
                    break;
                }
            }
        }
        SyncPool { tasks: Some(tx), threads: handles }
    }

    /// Helper threads running (the caller of [`SyncPool::map`] is one more).
    pub(crate) fn helpers(&self) -> usize {
        self.threads.len()
    }

    /// Runs `f` on every item, on the helpers and the calling thread, and returns the items in their
    /// order once all are done. A panic in `f` is raised here, after the other items are done.
    pub(crate) fn map<T: Send + 'static>(&self, mut items: Vec<T>, f: fn(&mut T)) -> Vec<T> {
        let n = items.len();
        let helpers = self.helpers().min(n.saturating_sub(1));
        let Some(tasks) = self.tasks.as_ref().filter(|_| helpers > 0) else {
            items.iter_mut().for_each(f);
            return items;
        };
        let batch = Arc::new(Batch {
            state: Mutex::new(State {
                queue: items.into_iter().enumerate().collect(),
                done: (0..n).map(|_| None).collect(),
                finished: 0,
                panicked: false,
            }),
            all_done: Condvar::new(),
            f,
        });
        for _ in 0..helpers {
            let b = batch.clone();
            // A send fails only when no helper is left to receive: the caller does everything.
            let _ = tasks.send(Box::new(move || b.work()));
        }
        batch.work();
        let mut s = batch.lock();
        while s.finished < n {
            s = batch.all_done.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        assert!(!s.panicked, "an fsync task panicked");
        std::mem::take(&mut s.done).into_iter().map(|item| item.expect("every item is done")).collect()
    }
}

impl Drop for SyncPool {
    fn drop(&mut self) {
        drop(self.tasks.take());
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One call of [`SyncPool::map`]: the items not started, those done, and the function.
struct Batch<T> {
    state: Mutex<State<T>>,
    all_done: Condvar,
    f: fn(&mut T),
}

struct State<T> {
    queue: VecDeque<(usize, T)>,
    done: Vec<Option<T>>,
    finished: usize,
    panicked: bool,
}

impl<T> Batch<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes items from the queue until it is empty (a helper that starts late finds nothing to do).
    fn work(&self) {
        loop {
            let next = self.lock().queue.pop_front();
            let Some((i, mut item)) = next else { return };
            let ran = catch_unwind(AssertUnwindSafe(|| (self.f)(&mut item)));
            let mut s = self.lock();
            match ran {
                Ok(()) => s.done[i] = Some(item),
                Err(_) => s.panicked = true,
            }
            s.finished += 1;
            if s.finished == s.done.len() {
                self.all_done.notify_all();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn double(x: &mut (u64, std::thread::ThreadId)) {
        x.0 *= 2;
        x.1 = std::thread::current().id();
        std::thread::sleep(std::time::Duration::from_millis(2));
    }

    #[test]
    fn every_item_is_done_once_in_order_on_the_same_threads_every_time() {
        let pool = SyncPool::new(4, "test-sync");
        assert_eq!(pool.helpers(), 3);
        let me = std::thread::current().id();
        let mut seen = std::collections::HashSet::new();
        for round in 0..20u64 {
            let items: Vec<(u64, std::thread::ThreadId)> = (0..16).map(|i| (round * 100 + i, me)).collect();
            let out = pool.map(items, double);
            let values: Vec<u64> = out.iter().map(|x| x.0).collect();
            assert_eq!(values, (0..16).map(|i| (round * 100 + i) * 2).collect::<Vec<_>>());
            seen.extend(out.iter().map(|x| x.1));
        }
        // The caller and at most the three helpers: no thread is started per round.
        assert!(seen.len() <= 4 && seen.len() >= 2, "{} threads did the work", seen.len());
    }

    #[test]
    fn one_item_or_no_helpers_runs_on_the_caller() {
        let me = std::thread::current().id();
        let pool = SyncPool::new(1, "test-sync");
        assert_eq!(pool.helpers(), 0);
        let out = pool.map(vec![(1, me), (2, me)], double);
        assert!(out.iter().all(|x| x.1 == me));
        let pool = SyncPool::new(4, "test-sync");
        assert_eq!(pool.map(vec![(5, me)], double)[0], (10, me));
        assert!(pool.map(Vec::new(), double).is_empty());
    }

    #[test]
    fn a_panic_in_an_item_is_raised_in_the_caller_and_the_pool_still_works() {
        let pool = SyncPool::new(3, "test-sync");
        fn boom(x: &mut u32) {
            if *x == 7 {
                panic!("item 7");
            }
            *x += 1;
        }
        let r = catch_unwind(AssertUnwindSafe(|| pool.map((0..16).collect(), boom)));
        assert!(r.is_err());
        assert_eq!(pool.map(vec![1, 2, 3], boom), [2, 3, 4]);
    }
}
