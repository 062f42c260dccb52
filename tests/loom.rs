//! Exhaustive interleaving checks of the lock and the fault protocol.
//!
//! RUSTFLAGS="--cfg loom" cargo test --release --test loom --target-dir target/loom
//!
//! Every model ends with all threads joined: loom reports a deadlock (every
//! thread asleep) as a failure, which is how lost wake-ups, stale waiter
//! counts and nested acquisitions stuck behind waiters show up.
//! `LOOM_MAX_PREEMPTIONS` overrides the default bound of 2.
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use loom::thread;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use two_state_lock::{Class, FaultError, TwoStateLock};

fn model(f: impl Fn() + Sync + Send + 'static) {
    model_with_bound(2, f);
}

/// Explores up to `bound` preemptions, unless `LOOM_MAX_PREEMPTIONS` says
/// otherwise.
fn model_with_bound(bound: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(bound);
    }
    builder.check(f);
}

/// Shadow counters: one per class, checked inside every critical section.
#[derive(Default)]
struct Shadow {
    inside: [AtomicUsize; 2],
}

impl Shadow {
    fn enter(&self, class: Class) {
        let (me, other) = match class {
            Class::Add => (0, 1),
            Class::Block => (1, 0),
        };
        self.inside[me].fetch_add(1, SeqCst);
        assert_eq!(
            self.inside[other].load(SeqCst),
            0,
            "{class:?} entered while the other class holds"
        );
    }
    fn leave(&self, class: Class) {
        self.inside[class as usize].fetch_sub(1, SeqCst);
    }
    fn critical(&self, lock: &TwoStateLock, class: Class) {
        let g = lock.lock(class);
        self.enter(class);
        self.leave(class);
        drop(g);
    }
}

/// Two locks, lower address first.
fn two_locks() -> (Arc<TwoStateLock>, Arc<TwoStateLock>) {
    let (a, b) = (Arc::new(TwoStateLock::new()), Arc::new(TwoStateLock::new()));
    if Arc::as_ptr(&a) < Arc::as_ptr(&b) {
        (a, b)
    } else {
        (b, a)
    }
}

#[test]
fn two_classes_exclude_each_other() {
    model(|| {
        let lock = Arc::new(TwoStateLock::new());
        let shadow = Arc::new(Shadow::default());
        let (l, s) = (lock.clone(), shadow.clone());
        let t = thread::spawn(move || s.critical(&l, Class::Block));
        shadow.critical(&lock, Class::Add);
        t.join().unwrap();
        assert_eq!(lock.state().holders, 0);
    });
}

#[test]
fn two_adders_and_a_blocker() {
    model(|| {
        let lock = Arc::new(TwoStateLock::new());
        let shadow = Arc::new(Shadow::default());
        let spawn = |class| {
            let (l, s) = (lock.clone(), shadow.clone());
            thread::spawn(move || s.critical(&l, class))
        };
        let (a1, a2) = (spawn(Class::Add), spawn(Class::Add));
        shadow.critical(&lock, Class::Block);
        a1.join().unwrap();
        a2.join().unwrap();
        let end = lock.state();
        assert!(
            end.holders == 0 && end.add_waiters == 0 && end.block_waiters == 0,
            "{end:?}"
        );
    });
}

#[test]
fn hand_off_with_waiters_of_both_classes() {
    model(|| {
        let lock = Arc::new(TwoStateLock::new());
        let shadow = Arc::new(Shadow::default());
        let held = lock.lock(Class::Add);
        let spawn = |class| {
            let (l, s) = (lock.clone(), shadow.clone());
            thread::spawn(move || s.critical(&l, class))
        };
        let block = spawn(Class::Block);
        let add = spawn(Class::Add);
        drop(held);
        block.join().unwrap();
        add.join().unwrap();
        let end = lock.state();
        assert_eq!(end.holders, 0);
        assert!(
            end.add_waiters == 0 && end.block_waiters == 0,
            "stranded waiter count: {end:?}"
        );
    });
}

#[test]
fn nested_acquisition_does_not_queue_behind_a_waiter() {
    model(|| {
        let lock = Arc::new(TwoStateLock::new());
        let outer = lock.lock(Class::Add);
        let l = lock.clone();
        let blocker = thread::spawn(move || drop(l.lock(Class::Block)));
        // Whether or not the Block waiter has signed up, the nested Add must
        // get in: queueing it behind the waiter would deadlock.
        let inner = lock.lock(Class::Add);
        drop(inner);
        drop(outer);
        blocker.join().unwrap();
    });
}

#[test]
fn nested_barge_into_pending_hand_off_hands_back() {
    model(|| {
        let (lock, other) = two_locks();
        let first = lock.lock(Class::Add);
        let l = lock.clone();
        let blocker = thread::spawn(move || drop(l.lock(Class::Block)));
        let keep = other.lock(Class::Add); // makes our next acquisition nested
        drop(first); // may hand the lock to the Block waiter
        // Nested: may barge into the pending hand-off, and must hand back.
        let barge = lock.lock(Class::Add);
        drop(barge);
        drop(keep);
        blocker.join().unwrap();
        let end = lock.state();
        assert!(
            end.holders == 0 && end.block_waiters == 0 && end.add_waiters == 0,
            "{end:?}"
        );
    });
}

/// Each of two threads holds Add on one lock and takes Add on the other
/// (nested) while a Block waiter sits on each lock: nested acquisitions must
/// not queue behind those waiters.
#[test]
fn nested_cross_locks_with_block_waiters() {
    model(|| {
        let (l1, l2) = two_locks();
        let spawn = |lock: &Arc<TwoStateLock>, class| {
            let l = lock.clone();
            thread::spawn(move || drop(l.lock(class)))
        };
        let g1 = l1.lock(Class::Add);
        let (a, b) = (l1.clone(), l2.clone());
        let other = thread::spawn(move || {
            let g2 = b.lock(Class::Add);
            drop(a.lock(Class::Add));
            drop(g2);
        });
        let (w1, w2) = (spawn(&l1, Class::Block), spawn(&l2, Class::Block));
        drop(l2.lock(Class::Add));
        drop(g1);
        other.join().unwrap();
        w1.join().unwrap();
        w2.join().unwrap();
    });
}

#[test]
fn no_stranded_waiter_when_the_lock_frees_during_sign_up() {
    model(|| {
        let lock = Arc::new(TwoStateLock::new());
        let held = lock.lock(Class::Block);
        let l = lock.clone();
        let adder = thread::spawn(move || drop(l.lock(Class::Add)));
        drop(held); // races the adder's sign-up
        adder.join().unwrap();
        let end = lock.state();
        assert!(
            end.add_waiters == 0 && end.block_waiters == 0,
            "stranded waiter count: {end:?}"
        );
    });
}

/// A hand-off's wake-up can land late, after the woken class has already
/// entered by other means and a new waiter of it has signed up. That waiter
/// is then let in by the late wake-up; the lock must not remember it as
/// still waiting, or it is later handed to a class nobody is coming from.
/// At the end, fresh threads of both classes must still get in.
#[test]
fn late_wake_up_leaves_no_phantom_waiter() {
    model(|| {
        let lock = Arc::new(TwoStateLock::new());
        let add = lock.lock(Class::Add);
        let spawn = |class| {
            let l = lock.clone();
            thread::spawn(move || drop(l.lock(class)))
        };
        let threads = [
            spawn(Class::Block),
            spawn(Class::Block),
            spawn(Class::Add),
            spawn(Class::Block),
        ];
        drop(add);
        threads.into_iter().for_each(|t| t.join().unwrap());
        for class in [Class::Add, Class::Block, Class::Add] {
            drop(lock.lock(class));
        }
        let end = lock.state();
        assert_eq!(
            (end.holders, end.add_waiters, end.block_waiters),
            (0, 0, 0),
            "{end:?}"
        );
    });
}

#[test]
fn waiter_is_admitted_after_one_opposite_phase() {
    model(|| {
        let lock = Arc::new(TwoStateLock::new());
        let held = lock.lock(Class::Add);
        let block_entered = Arc::new(AtomicBool::new(false));
        let (l, e) = (lock.clone(), block_entered.clone());
        let blocker = thread::spawn(move || {
            let _g = l.lock(Class::Block);
            e.store(true, SeqCst);
        });
        // Wait until the Block thread has signed up to sleep.
        while lock.state().block_waiters == 0 {
            thread::yield_now();
        }
        drop(held);
        // A new top-level Add must not get in before the Block waiter's phase.
        let again = lock.lock(Class::Add);
        assert!(
            block_entered.load(SeqCst),
            "Add re-entered ahead of a waiting Block"
        );
        drop(again);
        blocker.join().unwrap();
    });
}

/// Direct write holding Block on `held`, pinning a page mapped from `fault`.
fn direct_write(held: &TwoStateLock, fault: &TwoStateLock) -> usize {
    let dio = held.lock(Class::Block);
    let mut violations = 0;
    let pinned = dio.retry_faults(|| violations += 1, || fault.lock_fault().map(drop));
    assert_eq!(pinned, Ok(()));
    violations
}

#[test]
fn fault_protocol_a_b_cross_mapping() {
    model(|| {
        let (low, high) = two_locks();
        let (l, h) = (low.clone(), high.clone());
        // Holds the lower lock: its fault is in order and never cycles.
        let in_order = thread::spawn(move || direct_write(&l, &h));
        let cycles = direct_write(&high, &low);
        assert_eq!(
            in_order.join().unwrap(),
            0,
            "the in-order side never cycles"
        );
        assert!(
            cycles <= 1,
            "a cycle waits for the fault's lock, so one suffices here"
        );
        assert_eq!(low.state().holders + high.state().holders, 0);
    });
}

/// Regression (found by the `schedule` fuzz target): a direct write holding
/// `Block` on the high lock cycles on the low one while other threads take
/// `Block` on the low lock. A sleeper once judged the state it last saw but
/// signed up from an earlier one; when the lock came back to that earlier,
/// free state, it slept on a free lock with nobody to wake it. It takes four
/// preemptions to reach.
#[test]
fn cycle_against_blockers_of_the_faulting_lock() {
    model_with_bound(4, || {
        let (low, high) = two_locks();
        let (l, h) = (low.clone(), high.clone());
        let writer = thread::spawn(move || direct_write(&h, &l));
        let l = low.clone();
        let blocker = thread::spawn(move || {
            drop(l.lock(Class::Block));
            drop(l.lock(Class::Block));
        });
        drop(low.lock(Class::Block));
        writer.join().unwrap();
        blocker.join().unwrap();
        for class in [Class::Add, Class::Block, Class::Add] {
            drop(low.lock(class));
        }
        let end = low.state();
        assert_eq!(
            (end.holders, end.add_waiters, end.block_waiters),
            (0, 0, 0),
            "{end:?}"
        );
    });
}

#[test]
fn fault_protocol_same_mapping() {
    model(|| {
        let lock = Arc::new(TwoStateLock::new());
        let l = lock.clone();
        let other = thread::spawn(move || drop(l.lock(Class::Add)));
        let dio = lock.lock(Class::Block);
        let r = dio.faults_disabled(|| lock.lock_fault().map(drop));
        assert_eq!(r.value, Err(FaultError::SameMapping));
        assert!(!r.locks_dropped);
        drop(dio);
        other.join().unwrap();
    });
}

#[test]
fn cycle_races_an_adder_on_the_held_lock() {
    model(|| {
        let (low, high) = two_locks();
        let shadow = Arc::new(Shadow::default());
        // Someone holds Block on the faulting lock, so the fault cycles.
        let blocker = low.lock(Class::Block);
        let (l, h, s) = (low.clone(), high.clone(), shadow.clone());
        let writer = thread::spawn(move || {
            let dio = h.lock(Class::Block);
            s.enter(Class::Block);
            let r = dio.faults_disabled(|| {
                s.leave(Class::Block); // the cycle may release our hold
                let r = l.lock_fault().map(drop);
                s.enter(Class::Block);
                r
            });
            s.leave(Class::Block);
            r
        });
        let (h, s) = (high.clone(), shadow.clone());
        let adder = thread::spawn(move || s.critical(&h, Class::Add));
        drop(blocker);
        let r = writer.join().unwrap();
        adder.join().unwrap();
        // Either the try_lock won after the blocker left, or the cycle ran.
        match r.value {
            Ok(()) => assert!(!r.locks_dropped),
            Err(e) => assert!(e == FaultError::OrderingViolation && r.locks_dropped),
        }
        assert_eq!(high.state().holders + low.state().holders, 0);
    });
}

/// A counted waiter is handed a phase that nested acquisitions have already
/// filled to the holder limit (3 under loom), and panics. It must uncount
/// itself on the way out: a count left behind would hand the lock to `Add`
/// forever, and the fresh `Block` at the end would sleep on a free lock.
#[test]
fn a_waiter_that_panics_at_the_holder_limit_leaves_no_count() {
    quiet_panics("holders at once");
    model(|| {
        let lock = Arc::new(TwoStateLock::new());
        let block = lock.lock(Class::Block);
        let release = Arc::new(AtomicBool::new(false));
        let (l, r) = (lock.clone(), release.clone());
        let adder = thread::spawn(move || {
            let entered = catch_unwind(AssertUnwindSafe(|| l.lock(Class::Add))).ok();
            while !r.load(SeqCst) {
                thread::yield_now();
            }
            entered.is_some()
        });
        while lock.state().add_waiters == 0 {
            thread::yield_now();
        }
        // Keeps this thread's acquisitions nested: they barge into the
        // pending hand-off to Add.
        let other = TwoStateLock::new();
        let keep = other.lock(Class::Add);
        drop(block);
        let mine: Vec<_> = (0..two_state_lock::MAX_HOLDERS)
            .filter_map(|_| catch_unwind(AssertUnwindSafe(|| lock.lock(Class::Add))).ok())
            .collect();
        release.store(true, SeqCst);
        let adder_entered = adder.join().unwrap();
        // Exactly one of the four acquisitions was over the limit.
        assert_eq!(mine.len() + usize::from(adder_entered), 3);
        drop(mine);
        drop(keep);
        drop(lock.lock(Class::Block));
        let end = lock.state();
        assert_eq!(
            (end.holders, end.add_waiters, end.block_waiters),
            (0, 0, 0),
            "{end:?}"
        );
    });
}

/// Silences the panic messages a model expects (one per explored
/// interleaving); every other panic is reported as usual.
fn quiet_panics(expected: &'static str) {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if !msg.contains(expected) {
            report(info);
        }
    }));
}
