//! The held-mapping token and the fault protocol (SPEC §4).

mod common;

use common::{Holder, ordered, ordered_pair, wait_until, watchdog};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};
use two_state_lock::{Class, FaultError, Scoped, TwoStateLock};

const LIMIT: Duration = Duration::from_secs(30);

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
        let [l0, l1, l2] = ordered::<3>();
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
        let [l0, l1, l2] = ordered::<3>();
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

// ---------------------------------------------------------------------------
// The total protocol, `fault_in` (SPEC §8): one test per row of its table,
// and what it promises beyond them. Every test counts the runs of `f`.

/// Runs `f` under `fault_in` on `lock`, counting its runs in `runs`, and
/// returns what `f` saw of `lock`: this thread holds `Add` on it.
fn fault_in_counted(lock: &TwoStateLock, runs: &AtomicU64) -> two_state_lock::LockState {
    lock.fault_in(|| {
        runs.fetch_add(1, SeqCst);
        lock.state()
    })
}

#[test]
fn fault_in_with_no_held_mapping_takes_add_runs_f_and_releases() {
    let lock = TwoStateLock::new();
    let runs = AtomicU64::new(0);
    let seen = fault_in_counted(&lock, &runs);
    assert_eq!((seen.class, seen.holders), (Class::Add, 1));
    assert_eq!(runs.load(SeqCst), 1);
    assert_eq!(lock.state().holders, 0);
    // Blocking: it waits for another thread's Block to go.
    watchdog("fault_in waits for Block", LIMIT, || {
        let lock = Arc::new(TwoStateLock::new());
        let truncate = Holder::spawn(&lock, Class::Block);
        let released = AtomicBool::new(false);
        let runs = AtomicU64::new(0);
        thread::scope(|s| {
            s.spawn(|| {
                thread::sleep(Duration::from_millis(30));
                released.store(true, SeqCst);
                truncate.release();
            });
            let seen = fault_in_counted(&lock, &runs);
            assert!(released.load(SeqCst), "f ran while Block held");
            assert_eq!(seen.class, Class::Add);
        });
        assert_eq!(runs.load(SeqCst), 1);
    });
}

#[test]
fn fault_in_with_held_mappings_all_before_waits_in_lock_order() {
    watchdog("in-order fault_in", LIMIT, || {
        let (low, high) = ordered_pair();
        let truncate = Holder::spawn(&high, Class::Block);
        let dio = low.lock(Class::Block);
        let runs = AtomicU64::new(0);
        let released = AtomicBool::new(false);
        let r = thread::scope(|s| {
            s.spawn(|| {
                thread::sleep(Duration::from_millis(30));
                released.store(true, SeqCst);
                truncate.release();
            });
            dio.faults_disabled(|| {
                let seen = fault_in_counted(&high, &runs);
                // The held mapping stayed held: nobody else adds to `low`.
                (seen.class, low.state().holders)
            })
        });
        assert!(released.load(SeqCst));
        assert_eq!(r.value, (Class::Add, 1));
        assert!(!r.locks_dropped, "in lock order: no cycle");
        assert_eq!(runs.load(SeqCst), 1);
    });
}

#[test]
fn fault_in_with_a_held_mapping_after_tries_first() {
    let (low, high) = ordered_pair();
    let dio = high.lock(Class::Block);
    let runs = AtomicU64::new(0);
    let r = dio.faults_disabled(|| (fault_in_counted(&low, &runs), high.state()));
    let (seen, held) = r.value;
    assert_eq!((seen.class, seen.holders), (Class::Add, 1));
    assert_eq!((held.class, held.holders), (Class::Block, 1), "not cycled");
    assert!(!r.locks_dropped);
    assert_eq!(runs.load(SeqCst), 1);
}

#[test]
fn fault_in_cycles_a_held_mapping_after_when_try_lock_fails() {
    watchdog("fault_in cycle", LIMIT, || {
        let (low, high) = ordered_pair();
        let truncate = Holder::spawn(&low, Class::Block);
        let runs = Arc::new(AtomicU64::new(0));
        let (l, h, n) = (low.clone(), high.clone(), runs.clone());
        let writer = thread::spawn(move || {
            let dio = h.lock(Class::Block);
            let r = dio.faults_disabled(|| {
                let seen = fault_in_counted(&l, &n);
                (seen, h.state())
            });
            (r, h.state())
        });
        // While the writer waits for Add on `low`, its Block on `high` is down.
        wait_until("the writer cycles", LIMIT, || low.state().add_waiters > 0);
        assert_eq!(high.state().holders, 0);
        drop(
            high.try_lock(Class::Add)
                .expect("the held mapping is released"),
        );
        truncate.release();
        let (r, after) = writer.join().unwrap();
        let (seen, during) = r.value;
        assert_eq!((seen.class, seen.holders), (Class::Add, 1));
        assert_eq!(
            (during.class, during.holders),
            (Class::Block, 1),
            "re-taken before fault_in returns"
        );
        assert!(r.locks_dropped);
        assert_eq!((after.class, after.holders), (Class::Block, 1));
        assert_eq!(runs.load(SeqCst), 1);
    });
}

#[test]
fn fault_in_on_the_held_mapping_itself_completes() {
    // generic/729: a direct write of a mapped page onto itself.
    let lock = TwoStateLock::new();
    let dio = lock.lock(Class::Block);
    let runs = AtomicU64::new(0);
    let r = dio.faults_disabled(|| (fault_in_counted(&lock, &runs), lock.state()));
    let (seen, after) = r.value;
    assert_eq!(
        (seen.class, seen.holders),
        (Class::Add, 1),
        "f runs holding Add, our Block released"
    );
    assert_eq!((after.class, after.holders), (Class::Block, 1));
    assert!(r.locks_dropped);
    assert_eq!(runs.load(SeqCst), 1);
    // From an ArcGuard's scope too.
    drop(dio);
    let lock = Arc::new(TwoStateLock::new());
    let aio = lock.lock_arc(Class::Block);
    let r = aio.faults_disabled(|| fault_in_counted(&lock, &runs));
    assert_eq!(r.value.class, Class::Add);
    assert!(r.locks_dropped);
    assert_eq!(lock.state().class, Class::Block);
    assert_eq!(runs.load(SeqCst), 2);
}

#[test]
fn fault_in_on_a_held_mapping_holding_add_runs_f_without_cycling() {
    let lock = TwoStateLock::new();
    let write = lock.lock(Class::Add); // a buffered write, faulting its source
    let runs = AtomicU64::new(0);
    let r = write.faults_disabled(|| fault_in_counted(&lock, &runs));
    assert_eq!((r.value.class, r.value.holders), (Class::Add, 1));
    assert!(!r.locks_dropped);
    assert_eq!(runs.load(SeqCst), 1);
}

#[test]
fn fault_in_cycles_every_held_mapping_at_or_after_the_lock_and_keeps_the_rest() {
    watchdog("nested fault_in", LIMIT, || {
        let [l0, l1, l2] = ordered::<3>();
        // Scopes on l0 (outer) and l2 (inner); the fault is on l1, held in
        // Block by another thread so that try_lock fails.
        let truncate = Holder::spawn(&l1, Class::Block);
        let (a, b, c) = (l0.clone(), l1.clone(), l2.clone());
        let writer = thread::spawn(move || {
            let low = a.lock(Class::Block);
            let high = c.lock(Class::Block);
            low.faults_disabled(|| {
                high.faults_disabled(|| b.fault_in(|| (a.state().holders, c.state().holders)))
            })
        });
        wait_until("the writer cycles", LIMIT, || l1.state().add_waiters > 0);
        assert_eq!(
            l2.state().holders,
            0,
            "the hold after the fault is released"
        );
        assert_eq!(l0.state().holders, 1, "the hold before it is kept");
        truncate.release();
        let outer = writer.join().unwrap();
        assert!(!outer.locks_dropped && outer.value.locks_dropped);
        assert_eq!(outer.value.value, (1, 0), "f ran with l0 held and l2 down");
        // Now with the faulting lock itself held by the inner scope and a
        // higher one by the outer: both are cycled, re-taken in order.
        let outer_dio = l2.lock(Class::Block);
        let inner_dio = l1.lock(Class::Block);
        let r = outer_dio.faults_disabled(|| {
            inner_dio.faults_disabled(|| l1.fault_in(|| (l1.state(), l2.state().holders)))
        });
        assert!(r.locks_dropped && r.value.locks_dropped);
        let (during, l2_during) = r.value.value;
        assert_eq!(
            (during.class, during.holders, l2_during),
            (Class::Add, 1, 0)
        );
        assert_eq!(l1.state().class, Class::Block);
        assert_eq!(l2.state().class, Class::Block);
    });
}

#[test]
fn fault_in_never_cycles_holds_outside_a_scope() {
    let (low, high) = ordered_pair();
    let unscoped = high.lock(Class::Block);
    let runs = AtomicU64::new(0);
    // No scope: a plain blocking Add on the free lower lock; `high` stays held.
    let seen = low.fault_in(|| {
        runs.fetch_add(1, SeqCst);
        (low.state().class, high.state().holders)
    });
    assert_eq!(seen, (Class::Add, 1));
    drop(unscoped);
    assert_eq!(runs.load(SeqCst), 1);
}

#[test]
fn a_panic_inside_fault_in_leaves_every_hold_owned_by_its_guard() {
    let (low, high) = ordered_pair();
    let dio = high.lock(Class::Block);
    let blocker = Holder::spawn(&low, Class::Block);
    let released = Arc::new(AtomicBool::new(false));
    // Cycles (try_lock fails on `low` until the blocker goes), then panics.
    let (r2, l2) = (released.clone(), blocker);
    let freer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        r2.store(true, SeqCst);
        l2.release();
    });
    let caught = dio.faults_disabled(|| {
        let r = catch_unwind(AssertUnwindSafe(|| low.fault_in(|| panic!("inside f"))));
        assert!(r.is_err());
        // The unwind released the fault's Add and re-took our Block before
        // it left fault_in: code that caught it runs holding the lock.
        (high.state(), low.state().holders)
    });
    freer.join().unwrap();
    assert!(released.load(SeqCst));
    assert!(caught.locks_dropped);
    let (high_state, low_holders) = caught.value;
    assert_eq!((high_state.class, high_state.holders), (Class::Block, 1));
    assert_eq!(low_holders, 0);
    // Same-mapping: the panic also leaves the hold re-taken.
    let r = dio.faults_disabled(|| {
        catch_unwind(AssertUnwindSafe(|| high.fault_in(|| panic!("inside f")))).is_err()
    });
    assert!(r.value && r.locks_dropped);
    assert_eq!(high.state().class, Class::Block);
    drop(dio);
    assert_eq!(high.state().holders, 0);
    assert!(low.try_lock(Class::Block).is_some(), "nothing left behind");
}

/// A direct write of `pages` pages holding `Block` on `file`, pinning one
/// page per `fault_in` call from a buffer mapped from `buffer`, each in its
/// own scope so the cycles can be counted. Returns the cycles.
fn pin_with_fault_in(file: &TwoStateLock, buffer: &TwoStateLock, pages: u64) -> u64 {
    let dio = file.lock(Class::Block);
    let mut cycles = 0;
    for page in 0..pages {
        let pinned = dio.faults_disabled(|| buffer.fault_in(|| page));
        assert_eq!(pinned.value, page);
        cycles += u64::from(pinned.locks_dropped);
    }
    assert_eq!(
        file.state().class,
        Class::Block,
        "held when the I/O is issued"
    );
    cycles
}

#[test]
fn an_n_page_pin_loop_cycles_at_most_n_times_under_a_returning_blocker() {
    const PAGES: u64 = 8;
    let (max, writes) = watchdog("bounded cycles", LIMIT, || {
        let (low, high) = ordered_pair();
        let stop = Arc::new(AtomicBool::new(false));
        // Blockers that keep coming back to the source's lock (and to the
        // written file's), so the faults keep failing their try_lock.
        let blockers: Vec<_> = [&low, &low, &high]
            .into_iter()
            .map(|lock| {
                let (lock, stop) = (Arc::clone(lock), stop.clone());
                thread::spawn(move || {
                    while !stop.load(SeqCst) {
                        let _g = lock.lock(Class::Block);
                        thread::sleep(Duration::from_micros(30));
                    }
                })
            })
            .collect();
        let (mut max, mut writes) = (0, 0);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && writes < 2000 {
            // Sources mapped from the other file, and from the same file.
            max = max.max(pin_with_fault_in(&high, &low, PAGES));
            max = max.max(pin_with_fault_in(&high, &high, PAGES));
            writes += 2;
        }
        stop.store(true, SeqCst);
        blockers.into_iter().for_each(|t| t.join().unwrap());
        (max, writes)
    });
    println!("{writes} direct writes of {PAGES} pages, at most {max} cycles in one");
    assert!(writes > 0);
    assert!(max <= PAGES, "{max} cycles for {PAGES} pages");
}

/// SPEC §8's D1/D2: D1 holds `Block` on X and Y (X < Y) and faults on X; D2
/// holds `Block` on X and faults in order on Y. A cycle that released only X
/// would deadlock (D1 waits for D2's X, D2 for D1's Y).
#[test]
fn fault_in_releases_every_held_mapping_at_or_after_the_fault() {
    watchdog("D1/D2", LIMIT, || {
        for _ in 0..200 {
            let (x, y) = ordered_pair();
            let go = Arc::new(Barrier::new(2));
            let (x1, y1, g1) = (x.clone(), y.clone(), go.clone());
            let d1 = thread::spawn(move || {
                let hx = x1.lock(Class::Block);
                let hy = y1.lock(Class::Block);
                g1.wait();
                hx.faults_disabled(|| hy.faults_disabled(|| x1.fault_in(|| ())))
                    .value
                    .locks_dropped
            });
            let (x2, y2) = (x.clone(), y.clone());
            let d2 = thread::spawn(move || {
                go.wait();
                let hx = x2.lock(Class::Block);
                hx.faults_disabled(|| y2.fault_in(|| ())).locks_dropped
            });
            assert!(d1.join().unwrap(), "D1 cycles its own X");
            assert!(!d2.join().unwrap(), "D2 faults in lock order");
        }
    });
}

/// A fault inside a cycling `fault_in`'s `f`, in a scope opened there: the
/// inner cycle re-takes exactly what it released, the outer one the rest,
/// whether the inner fault's lock orders below the outer one's or above.
#[test]
fn a_fault_cycle_inside_a_cycling_fault_in_re_takes_exactly_its_own_holds() {
    watchdog("nested cycles", LIMIT, || {
        let [l0, l1, l2, l3] = ordered::<4>();
        let block = |l: &TwoStateLock| (l.state().class, l.state().holders);
        let g0 = l0.lock(Class::Block);
        let g2 = l2.lock(Class::Block);
        // Outer cycle on l2 (its own lock); inside f, a new scope on l3
        // faults on l0, below the outer cycle's lock.
        let r = g0.faults_disabled(|| {
            g2.faults_disabled(|| {
                l2.fault_in(|| {
                    let g3 = l3.lock(Class::Block);
                    let inner = g3.faults_disabled(|| l0.fault_in(|| l3.state().holders));
                    assert_eq!(inner.value, 0, "l3 down while l0 is faulted");
                    assert!(inner.locks_dropped);
                    let after = (block(&l3), block(&l0));
                    drop(g3);
                    after
                })
            })
        });
        let (l3_after, l0_after) = r.value.value;
        assert_eq!(l3_after, (Class::Block, 1), "the inner cycle re-took l3");
        assert_eq!(l0_after, (Class::Block, 1), "and l0");
        assert!(r.locks_dropped && r.value.locks_dropped);
        assert_eq!(block(&l2), (Class::Block, 1), "the outer cycle re-took l2");
        assert_eq!(l3.state().holders, 0);
        drop((g0, g2));
        // Inside f of a cycle on l1, a new scope on l3 faults on l3 itself,
        // above the outer cycle's lock.
        let g1 = l1.lock(Class::Block);
        let r = g1.faults_disabled(|| {
            l1.fault_in(|| {
                let g3 = l3.lock(Class::Block);
                let inner = g3.faults_disabled(|| l3.fault_in(|| block(&l3)));
                assert_eq!(
                    inner.value,
                    (Class::Add, 1),
                    "l3 cycled: the fault holds Add"
                );
                assert!(inner.locks_dropped);
                let after = block(&l3);
                drop(g3);
                after
            })
        });
        assert_eq!(r.value, (Class::Block, 1));
        assert!(r.locks_dropped);
        drop(g1);
        for l in [&l0, &l1, &l2, &l3] {
            let s = l.state();
            assert_eq!(
                (s.holders, s.add_waiters, s.block_waiters),
                (0, 0, 0),
                "{s:?}"
            );
        }
    });
}

/// A fault inside a fault (SPEC §8): T1 faults on `high` and, inside that
/// fault's work, on `low`, which T2 holds in `Block` and then takes `high`
/// after it, in address order. With a scope, T1 also holds `Block` on `low`
/// itself, so the inner fault is its same-mapping cycle. The inner fault
/// must release the outer fault's `Add` on `high` while it waits, or T2
/// waits for T1's `high` while T1 waits for T2's `low`.
fn a_fault_inside_a_fault(scoped: bool) {
    let (low, high) = ordered_pair();
    let (go, wait_go) = std::sync::mpsc::channel::<()>();
    let (l, h) = (low.clone(), high.clone());
    let t2 = thread::spawn(move || {
        let on_low = l.lock(Class::Block);
        wait_go.recv().unwrap();
        let on_high = h.lock(Class::Block);
        drop((on_high, on_low));
    });
    wait_until("T2 holds low", LIMIT, || low.state().holders == 1);
    let (l, h) = (low.clone(), high.clone());
    let t1 = thread::spawn(move || {
        let pin = || h.fault_in(|| l.fault_in(|| 7));
        if scoped {
            let dio = l.lock(Class::Block);
            let r = dio.faults_disabled(pin);
            assert!(r.locks_dropped, "the inner fault cycled low");
            r.value
        } else {
            pin()
        }
    });
    watchdog("a fault inside a fault", LIMIT, move || {
        wait_until("T1's inner fault waits for low", LIMIT, || {
            low.state().add_waiters == 1
        });
        assert_eq!(high.state().holders, 0, "the outer fault's Add was cycled");
        go.send(()).unwrap();
        t2.join().unwrap();
        assert_eq!(t1.join().unwrap(), 7);
        for lock in [&low, &high] {
            let s = lock.state();
            assert_eq!((s.holders, s.add_waiters, s.block_waiters), (0, 0, 0));
        }
    });
}

#[test]
fn a_fault_inside_a_fault_in_a_scope_cycles_the_outer_faults_hold() {
    a_fault_inside_a_fault(true);
}

#[test]
fn a_fault_inside_a_fault_without_a_scope_cycles_the_outer_faults_hold() {
    a_fault_inside_a_fault(false);
}
