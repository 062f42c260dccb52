//! The held-mapping token and the fault protocol (SPEC §4).

mod common;

use common::{Holder, ordered_pair, wait_until, watchdog};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};
use two_state_lock::{Class, FaultError, Scoped, TwoStateLock};

const LIMIT: Duration = Duration::from_secs(30);

/// Three locks in address order.
fn ordered_three() -> [Arc<TwoStateLock>; 3] {
    let mut locks: Vec<_> = (0..3).map(|_| Arc::new(TwoStateLock::new())).collect();
    locks.sort_by_key(|l| Arc::as_ptr(l) as usize);
    locks.try_into().unwrap()
}

#[test]
fn no_held_mapping_takes_add() {
    let lock = TwoStateLock::new();
    let g = lock.lock_fault().unwrap();
    assert_eq!(g.class(), Class::Add);
    assert_eq!(lock.state().holders, 1);
}

#[test]
fn same_mapping_fails_at_once() {
    let lock = Arc::new(TwoStateLock::new());
    let dio = lock.lock(Class::Block);
    let r = dio.faults_disabled(|| lock.lock_fault().map(drop));
    assert_eq!(
        r,
        Scoped {
            value: Err(FaultError::SameMapping),
            locks_dropped: false
        }
    );
    drop(dio);
    // Through an ArcGuard.
    let aio = lock.lock_arc(Class::Block);
    let r = aio.faults_disabled(|| lock.lock_fault().map(drop));
    assert_eq!(r.value, Err(FaultError::SameMapping));
    // The same lock held by an outer scope, another lock by the inner one.
    let other = TwoStateLock::new();
    let inner = other.lock(Class::Block);
    let r = aio.faults_disabled(|| inner.faults_disabled(|| lock.lock_fault().map(drop)).value);
    assert_eq!(r.value, Err(FaultError::SameMapping));
    assert!(FaultError::SameMapping.to_string().contains("bad address"));
}

#[test]
fn held_mapping_ordering_before_waits_in_lock_order() {
    watchdog("in-order fault", LIMIT, || {
        let (low, high) = ordered_pair();
        let truncate = Holder::spawn(&high, Class::Block);
        let dio = low.lock(Class::Block);
        let released = Arc::new(AtomicBool::new(false));
        let r = thread::scope(|s| {
            s.spawn(|| {
                thread::sleep(Duration::from_millis(50));
                released.store(true, SeqCst);
                truncate.release();
            });
            dio.faults_disabled(|| high.lock_fault().map(|g| g.class()))
        });
        // It waited (blocking, in lock order) instead of cycling.
        assert!(released.load(SeqCst));
        assert_eq!(
            r,
            Scoped {
                value: Ok(Class::Add),
                locks_dropped: false
            }
        );
    });
}

#[test]
fn held_mapping_ordering_after_uses_try_lock_first() {
    let (low, high) = ordered_pair();
    let dio = high.lock(Class::Block);
    let r = dio.faults_disabled(|| {
        let g = low.lock_fault().unwrap();
        (g.class(), low.state().holders)
    });
    assert_eq!(
        r,
        Scoped {
            value: (Class::Add, 1),
            locks_dropped: false
        }
    );
}

#[test]
fn the_cycle_really_releases_and_really_retakes_the_held_hold() {
    watchdog("cycle", LIMIT, || {
        let (low, high) = ordered_pair();
        let truncate = Holder::spawn(&low, Class::Block);
        let (l, h) = (low.clone(), high.clone());
        let writer = thread::spawn(move || {
            let dio = h.lock(Class::Block);
            dio.faults_disabled(|| {
                let r = l.lock_fault().map(drop);
                // After lock_fault returns, the hold is ours again: an adder
                // on another thread is refused.
                let h2 = h.clone();
                let refused = thread::spawn(move || h2.try_lock(Class::Add).is_none());
                (r, refused.join().unwrap(), h.state())
            })
        });
        // While the writer waits for `low`, its hold on `high` is released: a
        // third thread takes Add on `high`.
        // The writer sleeps for Add on `low`: it is in the cycle's wait.
        wait_until("the writer cycles", LIMIT, || low.state().add_waiters > 0);
        assert_eq!(high.state().holders, 0);
        let adder = high
            .try_lock(Class::Add)
            .expect("the held hold is released during the cycle");
        drop(adder);
        truncate.release();
        let Scoped {
            value: (r, refused, state),
            locks_dropped,
        } = writer.join().unwrap();
        assert_eq!(r, Err(FaultError::OrderingViolation));
        assert!(locks_dropped);
        assert!(refused, "the hold is taken again before lock_fault returns");
        assert_eq!((state.class, state.holders), (Class::Block, 1));
    });
}

/// Direct write to `file` from a buffer mapped from `buffer`, with the
/// cycle-and-retry loop. Returns how many times the hold was cycled.
fn direct_write(file: &TwoStateLock, buffer: &TwoStateLock, pages: usize) -> u64 {
    let dio = file.lock(Class::Block);
    let mut cycles = 0;
    let mut pinned = 0;
    let r = dio.retry_faults(
        || cycles += 1,
        || {
            while pinned < pages {
                drop(buffer.lock_fault()?);
                pinned += 1;
            }
            Ok(())
        },
    );
    assert_eq!(r, Ok(()));
    cycles
}

#[test]
fn cross_mapping_direct_writes_do_not_deadlock() {
    let (low_cycles, high_cycles) = watchdog("A<->B direct writes", LIMIT, || {
        let (low, high) = ordered_pair();
        let start = Arc::new(Barrier::new(2));
        let run = |file: Arc<TwoStateLock>, buffer: Arc<TwoStateLock>| {
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                let deadline = Instant::now() + Duration::from_secs(5);
                let mut cycles = 0;
                for _ in 0..5_000 {
                    if Instant::now() > deadline {
                        break;
                    }
                    cycles += direct_write(&file, &buffer, 4);
                }
                cycles
            })
        };
        let a = run(low.clone(), high.clone());
        let b = run(high, low);
        (a.join().unwrap(), b.join().unwrap())
    });
    println!(
        "A<->B: cycles by the low-lock writer {low_cycles}, by the high-lock writer {high_cycles}"
    );
    assert_eq!(
        low_cycles, 0,
        "only the writer whose held lock orders after ever cycles"
    );
}

#[test]
fn nested_scopes_cycle_every_held_mapping_after_the_fault() {
    watchdog("nested scopes", LIMIT, || {
        let [l0, l1, l2] = ordered_three();
        let truncate = Holder::spawn(&l0, Class::Block);
        let (a, b, c) = (l0.clone(), l1.clone(), l2.clone());
        let writer = thread::spawn(move || {
            let outer = b.lock(Class::Block);
            let inner = c.lock(Class::Block);
            outer.faults_disabled(|| inner.faults_disabled(|| a.lock_fault().map(drop)))
        });
        wait_until("the writer cycles", LIMIT, || l0.state().add_waiters > 0);
        assert_eq!(
            l1.state().holders + l2.state().holders,
            0,
            "both held mappings are released"
        );
        // The mirror image: a writer holding the low lock faults on both
        // high ones, in lock order, while the first one waits.
        let mirror = {
            let (a, b, c) = (l0.clone(), l1.clone(), l2.clone());
            thread::spawn(move || {
                let dio = a.lock(Class::Block);
                dio.faults_disabled(|| {
                    drop(b.lock_fault().unwrap());
                    drop(c.lock_fault().unwrap());
                })
            })
        };
        thread::sleep(Duration::from_millis(20));
        truncate.release();
        let outer = writer.join().unwrap();
        assert!(outer.locks_dropped, "the outer scope's hold was cycled");
        assert!(
            outer.value.locks_dropped,
            "the inner scope's hold was cycled"
        );
        assert_eq!(outer.value.value, Err(FaultError::OrderingViolation));
        assert!(!mirror.join().unwrap().locks_dropped);
        for l in [&l0, &l1, &l2] {
            assert_eq!(l.state().holders, 0);
        }
    });
}

#[test]
fn only_scopes_ordering_after_the_fault_are_cycled() {
    watchdog("partial cycle", LIMIT, || {
        let [l0, l1, l2] = ordered_three();
        let truncate = Holder::spawn(&l1, Class::Block);
        let (a, b, c) = (l0.clone(), l1.clone(), l2.clone());
        let writer = thread::spawn(move || {
            let low = a.lock(Class::Block);
            let high = c.lock(Class::Block);
            low.faults_disabled(|| high.faults_disabled(|| b.lock_fault().map(drop)))
        });
        wait_until("the writer cycles", LIMIT, || l1.state().add_waiters > 0);
        assert_eq!(l2.state().holders, 0, "the high hold is released");
        assert_eq!(l0.state().holders, 1, "the low hold is in order and kept");
        truncate.release();
        let r = writer.join().unwrap();
        assert!(!r.locks_dropped && r.value.locks_dropped);
        assert_eq!(r.value.value, Err(FaultError::OrderingViolation));
    });
}

#[test]
fn a_token_from_an_arc_guard_makes_acquisitions_nested() {
    watchdog("ArcGuard token", LIMIT, || {
        let (file, other) = ordered_pair();
        let adder = Holder::spawn(&other, Class::Add);
        let o = other.clone();
        let waiter = thread::spawn(move || drop(o.lock(Class::Block)));
        wait_until("the Block waiter sleeps", LIMIT, || {
            other.state().block_waiters > 0
        });
        let aio = file.lock_arc(Class::Block);
        // Without the token this thread holds no Guard: top-level, queued.
        assert!(other.try_lock(Class::Add).is_none());
        let r = aio.faults_disabled(|| other.lock(Class::Add).class());
        assert_eq!(r.value, Class::Add);
        adder.release();
        drop(aio);
        waiter.join().unwrap();
    });
}

#[test]
fn a_panic_in_the_scope_restores_the_token() {
    let lock = TwoStateLock::new();
    let dio = lock.lock(Class::Block);
    let r = catch_unwind(AssertUnwindSafe(|| {
        dio.faults_disabled(|| panic!("inside"))
    }));
    assert!(r.is_err());
    // The scope is gone: a second scope on the same guard is allowed again.
    let r = dio.faults_disabled(|| lock.lock_fault().map(drop));
    assert_eq!(r.value, Err(FaultError::SameMapping));
    drop(dio);
    // No token left: the fault is a plain blocking Add on a free lock.
    assert!(lock.lock_fault().is_ok());
}

#[test]
#[should_panic(expected = "scope is already active")]
fn two_scopes_for_one_hold_panic() {
    let lock = TwoStateLock::new();
    let dio = lock.lock(Class::Block);
    let _ = dio.faults_disabled(|| dio.faults_disabled(|| ()));
}

/// An adversarial mix: direct writers crossing two files, and truncates that
/// keep taking Block on both, so faults keep failing their try_lock. Reports
/// the most consecutive cycles one direct write needed.
#[test]
fn progress_under_an_adversarial_mix() {
    let (max, total, writes) = watchdog("adversarial mix", LIMIT, || {
        let (low, high) = ordered_pair();
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicU64::new(0));
        let total = Arc::new(AtomicU64::new(0));
        let writes = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for i in 0..4 {
            let (file, buffer) = if i % 2 == 0 {
                (&high, &low)
            } else {
                (&low, &high)
            };
            let (file, buffer) = (file.clone(), buffer.clone());
            let (stop, max, total, writes) =
                (stop.clone(), max.clone(), total.clone(), writes.clone());
            threads.push(thread::spawn(move || {
                while !stop.load(SeqCst) {
                    let c = direct_write(&file, &buffer, 8);
                    max.fetch_max(c, SeqCst);
                    total.fetch_add(c, SeqCst);
                    writes.fetch_add(1, SeqCst);
                }
            }));
        }
        for lock in [&low, &high] {
            let (lock, stop) = (lock.clone(), stop.clone());
            threads.push(thread::spawn(move || {
                while !stop.load(SeqCst) {
                    let _g = lock.lock(Class::Block);
                    thread::sleep(Duration::from_micros(20));
                }
            }));
        }
        thread::sleep(Duration::from_secs(3));
        stop.store(true, SeqCst);
        threads.into_iter().for_each(|t| t.join().unwrap());
        (max.load(SeqCst), total.load(SeqCst), writes.load(SeqCst))
    });
    println!(
        "adversarial mix: {writes} direct writes, {total} cycles, at most {max} consecutive cycles in one write"
    );
    assert!(writes > 0);
}
