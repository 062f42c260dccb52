//! Lock validation (SPEC §10): on in builds with debug assertions and with
//! the `validate` feature (`cargo test --release --features validate`).
#![cfg(any(debug_assertions, feature = "validate"))]

mod common;

use common::{ordered, watchdog};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread;
use std::time::Duration;
use two_state_lock::{Class, LockTable, TwoStateLock};

const LIMIT: Duration = Duration::from_secs(20);

/// Runs `f`, which must panic, and returns the panic's message.
fn panic_message(f: impl FnOnce()) -> String {
    let err = catch_unwind(AssertUnwindSafe(f)).expect_err("validation should have panicked");
    match err.downcast::<String>() {
        Ok(s) => *s,
        Err(e) => e.downcast_ref::<&str>().unwrap().to_string(),
    }
}

/// `file:line` of the line after the call (where a test's next statement
/// takes a lock).
macro_rules! next_line {
    () => {
        format!("{}:{}", file!(), line!() + 1)
    };
}

#[test]
fn taking_the_other_class_of_a_held_lock_panics_at_once_naming_both_sites() {
    let lock = TwoStateLock::new();
    let first = next_line!();
    let held = lock.lock(Class::Block);
    let second = format!("{}:{}", file!(), line!() + 1);
    let msg = panic_message(|| drop(lock.lock(Class::Add)));
    println!("{msg}");
    assert!(msg.contains("self-deadlock"), "{msg}");
    assert!(
        msg.contains(&first),
        "names where the hold was taken: {msg}"
    );
    assert!(
        msg.contains(&second),
        "names where the other class is taken: {msg}"
    );
    assert!(
        msg.contains(&format!("lock {:#x}", &lock as *const _ as usize)),
        "{msg}"
    );
    // Nothing changed: the hold is still ours, and the same class re-enters.
    assert_eq!(lock.state().holders, 1);
    drop(lock.lock(Class::Block));
    drop(held);
    // Free again: the other class is fine now.
    drop(lock.lock(Class::Add));
}

#[test]
fn every_blocking_way_to_take_the_other_class_is_checked() {
    let lock = Arc::new(TwoStateLock::new());
    let _held = lock.lock(Class::Add);
    for msg in [
        panic_message(|| drop(lock.lock_nested(Class::Block))),
        panic_message(|| drop(lock.lock_arc(Class::Block))),
    ] {
        assert!(msg.contains("self-deadlock"), "{msg}");
    }
    // try_lock never waits: it just fails.
    assert!(lock.try_lock(Class::Block).is_none());
    drop(_held);
    // A fault on a lock held in Block outside any scope would wait for its
    // own Block (SPEC §8).
    let _dio = lock.lock(Class::Block);
    let msg = panic_message(|| lock.fault_in(|| ()));
    assert!(msg.contains("self-deadlock"), "{msg}");
    // Inside the guard's scope the fault cycles the hold instead.
    let scoped = _dio.faults_disabled(|| lock.fault_in(|| 1));
    assert_eq!(scoped.value, 1);
}

#[test]
fn a_range_over_a_held_lock_of_the_other_class_panics() {
    let table = LockTable::new(16);
    let _dio = table.lock_range(3, 0..4, Class::Block);
    let msg = panic_message(|| drop(table.lock_range(3, 2..3, Class::Add)));
    assert!(msg.contains("self-deadlock"), "{msg}");
}

/// A buffered write holds `Add` on F and takes `Add` on G; a direct write
/// holds `Block` on G and takes `Block` on F. Together they deadlock. The
/// second order is reported the first time it is tried, even though
/// nothing waits: here both run one after the other on one thread.
#[test]
fn a_lock_order_inversion_is_reported_when_first_possible() {
    let (f, g) = (TwoStateLock::new(), TwoStateLock::new());
    let held_f = next_line!();
    let write = f.lock(Class::Add);
    let took_g = next_line!();
    let add = g.lock(Class::Add);
    drop((add, write));
    let held_g = next_line!();
    let dio = g.lock(Class::Block);
    let took_f = next_line!();
    let msg = panic_message(|| drop(f.lock(Class::Block)));
    drop(dio);
    println!("{msg}");
    assert!(msg.contains("possible deadlock"), "{msg}");
    for site in [&held_f, &took_g, &held_g, &took_f] {
        assert!(msg.contains(site.as_str()), "names {site}: {msg}");
    }
    // The report changed nothing: both locks are free.
    assert_eq!(f.state().holders + g.state().holders, 0);
}

#[test]
fn an_inversion_between_threads_and_through_a_third_lock_is_reported() {
    let locks: Arc<[TwoStateLock; 3]> = Arc::new(std::array::from_fn(|_| TwoStateLock::new()));
    // Thread 1: A(Add) then B(Add). Thread 2: B(Block) then C(Block).
    let l = locks.clone();
    thread::spawn(move || {
        let _a = l[0].lock(Class::Add);
        drop(l[1].lock(Class::Add));
    })
    .join()
    .unwrap();
    let l = locks.clone();
    thread::spawn(move || {
        let _b = l[1].lock(Class::Block);
        drop(l[2].lock(Class::Block));
    })
    .join()
    .unwrap();
    // Here: C(Add) then A(Block) closes A -> B -> C -> A: thread 1 waits
    // for B held in Block by thread 2, which waits for C held in Add by us,
    // and we wait for A held in Add by thread 1.
    let _c = locks[2].lock(Class::Add);
    let msg = panic_message(|| drop(locks[0].lock(Class::Block)));
    assert!(msg.contains("possible deadlock"), "{msg}");
    assert_eq!(
        msg.matches("earlier,").count(),
        2,
        "two earlier orders: {msg}"
    );
}

#[test]
fn orders_that_cannot_deadlock_are_not_reported() {
    let (a, b) = (TwoStateLock::new(), TwoStateLock::new());
    // Adders crossing two files (the fault case of SPEC §3.1.3): nested
    // acquisitions of one class never wait for each other.
    for (x, y) in [(&a, &b), (&b, &a)] {
        let _x = x.lock(Class::Add);
        drop(y.lock(Class::Add));
    }
    // Blockers crossing two other files, likewise. (Blockers crossing these
    // two would deadlock against the adders, and are reported: see
    // `a_lock_order_inversion_is_reported_when_first_possible`.)
    let (c, d) = (TwoStateLock::new(), TwoStateLock::new());
    for (x, y) in [(&c, &d), (&d, &c)] {
        let _x = x.lock(Class::Block);
        drop(y.lock(Class::Block));
    }
    // Re-entering a held lock in its class never waits.
    let _x = a.lock(Class::Add);
    drop(a.lock(Class::Add));
}

#[test]
fn try_lock_and_lock_nested_do_not_count() {
    let (a, b) = (TwoStateLock::new(), TwoStateLock::new());
    {
        let _a = a.lock(Class::Add);
        drop(b.try_lock(Class::Add).unwrap());
        drop(b.lock_nested(Class::Add));
    }
    // The other order, in the other classes: reported only if one of the
    // above had counted.
    let _b = b.lock(Class::Block);
    drop(a.lock(Class::Block));
}

#[test]
fn the_fault_protocols_cycles_and_try_locks_do_not_count() {
    watchdog("fault orders", LIMIT, || {
        let (a, b) = (TwoStateLock::new(), TwoStateLock::new());
        // Direct writes crossing: A from a buffer mapped from B, B from A.
        for (file, buffer) in [(&a, &b), (&b, &a)] {
            let dio = file.lock(Class::Block);
            let r = dio.faults_disabled(|| {
                buffer.fault_in(|| ());
                drop(buffer.lock_fault());
            });
            let _ = r.locks_dropped;
        }
        // A plain blocking order against them is still checked on its own.
        let _a = a.lock(Class::Add);
        drop(b.lock(Class::Add));
    });
}

#[test]
fn the_ascending_acquisitions_of_one_range_never_report_by_themselves() {
    let table = LockTable::new(4);
    for class in [Class::Add, Class::Block] {
        for start in 0..4 {
            drop(table.lock_range(1, start..start + 3, class));
        }
        drop(table.lock_range(1, 0..100, class));
    }
}

/// Two ranges taken one inside the other out of table order, in opposite
/// classes to a range that takes both in order: the single-range order is
/// recorded, so the inversion is found.
#[test]
fn a_range_taken_inside_another_out_of_order_is_reported() {
    let table = LockTable::new(8);
    let object = (0..).find(|&o| table.lock_index(o, 0) == 0).unwrap();
    // Locks 0 and 1, in order, in Block.
    drop(table.lock_range(object, 0..2, Class::Block));
    // Lock 1, then lock 0, in Add.
    let _one = table.lock_range(object, 1..2, Class::Add);
    let msg = panic_message(|| drop(table.lock_range(object, 0..1, Class::Add)));
    assert!(msg.contains("possible deadlock"), "{msg}");
}

#[test]
fn a_dropped_lock_leaves_no_orders_for_a_new_lock_at_its_address() {
    let mut a = Box::new(TwoStateLock::new());
    let b = TwoStateLock::new();
    {
        let _a = a.lock(Class::Add);
        drop(b.lock(Class::Add));
    }
    let before = &*a as *const TwoStateLock;
    // A new lock in the same memory; the old one is dropped.
    *a = TwoStateLock::new();
    assert_eq!(&*a as *const TwoStateLock, before);
    let _b = b.lock(Class::Block);
    drop(a.lock(Class::Block));
}

/// A scope whose hold lock validation does not track (an `ArcGuard`'s), or
/// a range of more than 16 locks (whose orders it does not learn), is cycled by a fault on its lock while an
/// unscoped `Guard` of the same thread holds that lock in `Block`: the fault
/// would wait for the unscoped hold forever, and is reported.
#[test]
fn a_fault_waiting_for_an_unscoped_hold_is_reported_whatever_the_scope() {
    watchdog("untracked scopes", LIMIT, || {
        let lock = Arc::new(TwoStateLock::new());
        let unscoped = lock.lock(Class::Block);
        let aio = lock.lock_arc(Class::Block);
        let msg = panic_message(|| {
            let _ = aio.faults_disabled(|| lock.fault_in(|| ()));
        });
        assert!(msg.contains("self-deadlock"), "{msg}");
        // The cycle's unwind re-took the scope's hold.
        assert_eq!(lock.state().holders, 2);
        drop((aio, unscoped));

        let table = LockTable::new(64);
        let big = table.lock_range(5, 0..32, Class::Block); // orders not learned
        let small = table.lock_range(5, 0..1, Class::Block);
        let msg = panic_message(|| {
            let _ = big.faults_disabled(|| table.fault_in(5, 0, || ()));
        });
        assert!(msg.contains("self-deadlock"), "{msg}");
        drop((small, big));
        assert_eq!(table.state(table.lock_index(5, 0)).holders, 0);
    });
}

/// The fault protocol's "all order before L" row waits in address order,
/// which is deadlock-free only if every thread does: T2 takes `Block` on
/// high, then `Add` on low (a plain order); T1 holds `Block` on low and
/// faults on high, a blocking `Add`. Reported whichever comes first.
#[test]
fn a_fault_in_lock_order_against_a_plain_inversion_is_reported() {
    watchdog("fault orders", LIMIT, || {
        let t1 = |low: &TwoStateLock, high: &TwoStateLock| {
            let dio = low.lock(Class::Block);
            let _ = dio.faults_disabled(|| high.fault_in(|| ()));
        };
        let t2 = |low: &TwoStateLock, high: &TwoStateLock| {
            let _dio = high.lock(Class::Block);
            drop(low.lock(Class::Add));
        };
        let [low, high] = ordered();
        t2(&low, &high);
        let msg = panic_message(|| t1(&low, &high));
        assert!(msg.contains("possible deadlock"), "{msg}");
        assert_eq!(low.state().holders + high.state().holders, 0);

        let [low, high] = ordered();
        t1(&low, &high);
        let msg = panic_message(|| t2(&low, &high));
        assert!(msg.contains("possible deadlock"), "{msg}");
    });
}

/// Holding one stripe in `Add` and taking a `Block` range over it waits for
/// itself, whatever the range's length: 16 locks, 17, the whole table. So
/// does an unscoped `fault_in` on a stripe of a `Block` range.
#[test]
fn a_self_deadlock_through_a_range_of_any_length_is_reported() {
    watchdog("long ranges", LIMIT, || {
        let table = LockTable::new(64);
        for end in [16, 17, 64, u64::MAX] {
            let stripe = table.lock_range(1, 3..4, Class::Add);
            let msg = panic_message(|| drop(table.lock_range(1, 0..end, Class::Block)));
            assert!(msg.contains("self-deadlock"), "0..{end}: {msg}");
            drop(stripe);

            let range = table.lock_range(1, 0..end, Class::Block);
            let msg = panic_message(|| table.fault_in(1, 3, || ()));
            assert!(msg.contains("self-deadlock"), "0..{end}: {msg}");
            drop(range);
            assert!((0..64).all(|i| table.state(i).holders == 0));
        }
    });
}

/// A timed acquisition of the other class of a held lock would only time
/// out: reported as a self-deadlock. Its order is not counted (it cannot
/// wait forever).
#[test]
fn a_timed_acquisition_is_checked_for_self_deadlock_but_not_counted_in_orders() {
    let (lock, other) = (TwoStateLock::new(), TwoStateLock::new());
    let held = lock.lock(Class::Add);
    let long = Duration::from_secs(20);
    let msg = panic_message(|| drop(lock.try_lock_for(Class::Block, long)));
    assert!(msg.contains("self-deadlock"), "{msg}");
    let table = LockTable::new(8);
    let stripe = table.lock_range(1, 0..1, Class::Add);
    let msg = panic_message(|| drop(table.try_lock_range_for(1, 0..u64::MAX, Class::Block, long)));
    assert!(msg.contains("self-deadlock"), "{msg}");
    drop(stripe);
    // Timed: held lock, then other; plain: other, then lock, in the other
    // classes. Not an inversion the graph knows of.
    drop(other.try_lock_for(Class::Add, long));
    drop(held);
    let _other = other.lock(Class::Block);
    drop(lock.lock(Class::Block));
}

/// A cycle's wait counts against what the thread still holds while it
/// waits: here an unscoped `Add` on high while the cycle on low waits for
/// `Add` on low. A thread taking `Block` on low, then on high, deadlocks
/// against that, and is reported.
#[test]
fn a_cycles_wait_counts_against_the_holds_it_keeps() {
    watchdog("cycle orders", LIMIT, || {
        let [low, high] = ordered();
        {
            let dio = low.lock(Class::Block);
            let _unscoped = high.lock(Class::Add);
            let r = dio.faults_disabled(|| low.fault_in(|| ()));
            assert!(r.locks_dropped);
        }
        let _low = low.lock(Class::Block);
        let msg = panic_message(|| drop(high.lock(Class::Block)));
        assert!(msg.contains("possible deadlock"), "{msg}");
    });
}
