//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;
use two_state_lock::{Class, TwoStateLock};

/// Runs `f` on its own thread and fails the test with a message if it has not
/// finished within `limit`: a deadlock becomes a failure, never a stuck run.
pub fn watchdog<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    watchdog_dump(what, limit, f, String::new)
}

/// As [`watchdog`], adding `dump()` (the state of the locks) to the message.
pub fn watchdog_dump<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
    dump: impl FnOnce() -> String,
) -> T {
    let (tx, rx) = mpsc::channel();
    let worker = thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(value) => {
            worker.join().unwrap();
            value
        }
        // The sender was dropped without a value: `f` panicked.
        Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!(),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!(
                "watchdog: {what} did not finish within {limit:?} (deadlock or lost wake-up)\n{}",
                dump()
            )
        }
    }
}

/// Shadow counters of the holders of each class, checked on every entry.
#[derive(Default)]
pub struct Shadow {
    inside: [AtomicUsize; 2],
    pub max_inside: [AtomicUsize; 2],
}

impl Shadow {
    pub fn enter(&self, class: Class) {
        let me = class as usize;
        let now = self.inside[me].fetch_add(1, SeqCst) + 1;
        self.max_inside[me].fetch_max(now, SeqCst);
        let other = self.inside[1 - me].load(SeqCst);
        assert_eq!(
            other, 0,
            "{class:?} entered while {other} of the other class hold the lock"
        );
    }

    pub fn leave(&self, class: Class) {
        self.inside[class as usize].fetch_sub(1, SeqCst);
    }
}

/// Spins (with short sleeps) until `cond` holds; panics after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting until {what}");
        thread::sleep(Duration::from_micros(200));
    }
}

/// Two locks, lower address first (the fault protocol's lock order).
pub fn ordered_pair() -> (std::sync::Arc<TwoStateLock>, std::sync::Arc<TwoStateLock>) {
    let [a, b] = ordered();
    (a, b)
}

/// `N` locks, lowest address first.
pub fn ordered<const N: usize>() -> [std::sync::Arc<TwoStateLock>; N] {
    let mut locks: Vec<_> = (0..N)
        .map(|_| std::sync::Arc::new(TwoStateLock::new()))
        .collect();
    locks.sort_by_key(|l| std::sync::Arc::as_ptr(l) as usize);
    locks.try_into().unwrap()
}

/// A thread that takes `class` on `lock` and holds it until told to stop.
pub struct Holder {
    stop: mpsc::Sender<()>,
    handle: thread::JoinHandle<()>,
}

impl Holder {
    pub fn spawn(lock: &std::sync::Arc<TwoStateLock>, class: Class) -> Holder {
        let lock = lock.clone();
        let (stop, rx) = mpsc::channel::<()>();
        let (ready_tx, ready) = mpsc::channel();
        let handle = thread::spawn(move || {
            let g = lock.lock(class);
            ready_tx.send(()).unwrap();
            let _ = rx.recv();
            drop(g);
        });
        ready.recv().unwrap();
        Holder { stop, handle }
    }

    pub fn release(self) {
        self.stop.send(()).unwrap();
        self.handle.join().unwrap();
    }
}

/// A tokio runtime with 2 worker threads (this machine's cores) and timers.
#[cfg(not(loom))]
pub fn multi_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
}
