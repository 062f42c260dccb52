//! Timed acquisition (SPEC §12): `try_lock_for`, `try_lock_until`,
//! `LockTable::try_lock_range_until` and `try_lock_range_for`.

mod common;

use common::{Holder, wait_until, watchdog};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use two_state_lock::{Class, LockTable, TwoStateLock};

const LIMIT: Duration = Duration::from_secs(30);
/// A timeout no correct run comes near.
const LONG: Duration = Duration::from_secs(20);

#[test]
fn a_timed_acquisition_gives_up_at_its_deadline_and_leaves_no_count() {
    watchdog("a timed wait", LIMIT, || {
        let lock = Arc::new(TwoStateLock::new());
        let dio = Holder::spawn(&lock, Class::Block);
        let start = Instant::now();
        assert!(
            lock.try_lock_for(Class::Add, Duration::from_millis(50))
                .is_none()
        );
        assert!(
            start.elapsed() >= Duration::from_millis(50),
            "gave up early"
        );
        let s = lock.state();
        assert_eq!((s.holders, s.add_waiters, s.block_waiters), (1, 0, 0));
        // A deadline already past: a try_lock.
        assert!(lock.try_lock_until(Class::Add, start).is_none());
        assert!(lock.try_lock_until(Class::Block, start).is_some(), "shared");
        dio.release();
        assert!(lock.try_lock_until(Class::Add, start).is_some());
    });
}

#[test]
fn a_timed_acquisition_enters_when_the_lock_is_released_in_time() {
    watchdog("a timed wait that succeeds", LIMIT, || {
        let lock = Arc::new(TwoStateLock::new());
        let dio = Holder::spawn(&lock, Class::Block);
        let l = lock.clone();
        let waiter = thread::spawn(move || l.try_lock_for(Class::Add, LONG).map(|g| g.class()));
        wait_until("the Add waiter signed up", LIMIT, || {
            lock.state().add_waiters == 1
        });
        dio.release();
        assert_eq!(waiter.join().unwrap(), Some(Class::Add));
        assert_eq!(lock.state().add_waiters, 0);
    });
}

/// `Add` holds; a timed `Block` waits, and a top-level `Add` queues behind
/// it (phase fairness). When the `Block` gives up, the `Add` queued behind
/// it must get in while the first `Add` still holds, as if the `Block` had
/// never asked.
#[test]
fn a_waiter_that_gives_up_lets_the_class_queued_behind_it_in() {
    watchdog("the class behind a timed-out waiter", LIMIT, || {
        let lock = Arc::new(TwoStateLock::new());
        let add = Holder::spawn(&lock, Class::Add);
        let l = lock.clone();
        let blocker = thread::spawn(move || {
            l.try_lock_for(Class::Block, Duration::from_millis(200))
                .is_some()
        });
        wait_until("the Block waiter signed up", LIMIT, || {
            lock.state().block_waiters == 1
        });
        let l = lock.clone();
        let queued = thread::spawn(move || drop(l.lock(Class::Add)));
        wait_until("the second Add queued", LIMIT, || {
            lock.state().add_waiters == 1
        });
        assert!(!blocker.join().unwrap(), "Add held for the whole timeout");
        queued.join().unwrap();
        let s = lock.state();
        assert_eq!((s.holders, s.add_waiters, s.block_waiters), (1, 0, 0));
        add.release();
    });
}

/// A nested timed acquisition (this thread holds a guard) joins the class
/// that holds at once, even while the other class waits.
#[test]
fn a_nested_timed_acquisition_does_not_queue_behind_a_waiter() {
    watchdog("a nested timed acquisition", LIMIT, || {
        let lock = Arc::new(TwoStateLock::new());
        let held = lock.lock(Class::Add);
        let l = lock.clone();
        let blocker = thread::spawn(move || drop(l.lock(Class::Block)));
        wait_until("the Block waiter signed up", LIMIT, || {
            lock.state().block_waiters == 1
        });
        let again = lock.try_lock_for(Class::Add, LONG);
        assert!(
            again.is_some(),
            "a nested acquisition queued behind a waiter"
        );
        drop((again, held));
        blocker.join().unwrap();
    });
}

/// A timed range that cannot take one of its locks releases the ones it
/// took, and its waiter leaves no count.
#[test]
fn a_timed_range_that_gives_up_releases_what_it_took() {
    watchdog("a timed range", LIMIT, || {
        let table = Arc::new(LockTable::new(16));
        let object = (0..).find(|&o| table.lock_index(o, 0) == 2).unwrap();
        let t = table.clone();
        let (held, release) = std::sync::mpsc::channel();
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let holder = thread::spawn(move || {
            let add = t.lock_range(object, 3..4, Class::Add); // lock 5
            held.send(()).unwrap();
            wait.recv().unwrap();
            drop(add);
        });
        release.recv().unwrap();
        let deadline = Instant::now() + Duration::from_millis(50);
        let range = table.try_lock_range_until(object, 0..8, Class::Block, deadline);
        assert!(range.is_none());
        for i in 0..16 {
            let s = table.state(i);
            let expected = u32::from(i == 5);
            assert_eq!(
                (s.holders, s.add_waiters, s.block_waiters),
                (expected, 0, 0),
                "lock {i}"
            );
        }
        go.send(()).unwrap();
        holder.join().unwrap();
        let range = table.try_lock_range_for(object, 0..8, Class::Block, LONG);
        assert_eq!(range.map(|r| r.lock_count()), Some(8));
    });
}

#[test]
fn a_timeout_past_what_instant_holds_waits_without_a_deadline() {
    let lock = TwoStateLock::new();
    assert!(lock.try_lock_for(Class::Add, Duration::MAX).is_some());
    let table = LockTable::new(4);
    assert!(
        table
            .try_lock_range_for(0, 0..2, Class::Block, Duration::MAX)
            .is_some()
    );
}

/// Many threads of both classes, each giving up after a short, random
/// timeout, against plain acquisitions: exclusion holds throughout, and at
/// the end nobody is counted as waiting.
#[test]
fn timed_and_plain_acquisitions_of_both_classes_race() {
    watchdog("timed stress", LIMIT, || {
        let lock = Arc::new(TwoStateLock::new());
        let shadow = Arc::new(common::Shadow::default());
        let stop = Instant::now() + Duration::from_secs(2);
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let (lock, shadow) = (lock.clone(), shadow.clone());
                thread::spawn(move || {
                    let mut rng = fastrand::Rng::with_seed(t);
                    let mut timed_out = 0;
                    for _ in 0..20_000 {
                        if Instant::now() > stop {
                            break;
                        }
                        let class = if rng.bool() { Class::Add } else { Class::Block };
                        let guard = if t % 2 == 0 {
                            let timeout = Duration::from_micros(rng.u64(0..200));
                            lock.try_lock_for(class, timeout)
                        } else {
                            Some(lock.lock(class))
                        };
                        let Some(guard) = guard else {
                            timed_out += 1;
                            continue;
                        };
                        shadow.enter(class);
                        if rng.u8(..) < 8 {
                            thread::sleep(Duration::from_micros(50));
                        }
                        shadow.leave(class);
                        drop(guard);
                    }
                    timed_out
                })
            })
            .collect();
        let timed_out: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        let s = lock.state();
        assert_eq!((s.holders, s.add_waiters, s.block_waiters), (0, 0, 0));
        eprintln!("{timed_out} timed acquisitions gave up");
    });
}
