//! `LockTable` and `RangeGuard` (SPEC §9).

mod common;

use common::{Shadow, wait_until, watchdog, watchdog_dump};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};
use two_state_lock::{Class, FaultError, LockTable};

const LIMIT: Duration = Duration::from_secs(20);

/// Every lock of the table is free and nobody waits.
fn assert_all_free(table: &LockTable) {
    for i in 0..table.size() {
        let s = table.state(i);
        assert!(
            s.holders == 0 && s.add_waiters == 0 && s.block_waiters == 0,
            "lock {i}: {s:?}"
        );
    }
}

#[test]
fn a_range_takes_each_of_its_locks_once_in_its_class() {
    let table = LockTable::new(16);
    let g = table.lock_range(3, 5..9, Class::Block);
    assert_eq!(g.lock_count(), 4);
    let mut expected: Vec<usize> = (5..9).map(|s| table.lock_index(3, s)).collect();
    expected.sort();
    assert_eq!(g.lock_indices().collect::<Vec<_>>(), expected);
    for i in 0..16 {
        let s = table.state(i);
        let held = expected.contains(&i);
        assert_eq!(s.holders, u32::from(held), "lock {i}");
        if held {
            assert_eq!(s.class, Class::Block);
        }
    }
    drop(g);
    assert_all_free(&table);
}

#[test]
fn disjoint_ranges_of_opposite_classes_hold_at_once() {
    watchdog("disjoint ranges", LIMIT, || {
        let table = Arc::new(LockTable::new(64));
        // Four direct writes and four buffered adds on disjoint stripes of
        // one file, all inside at once (the barrier opens only if none waits
        // for another).
        let barrier = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8u64)
            .map(|i| {
                let (table, barrier) = (table.clone(), barrier.clone());
                thread::spawn(move || {
                    let class = if i % 2 == 0 { Class::Block } else { Class::Add };
                    let _g = table.lock_range(42, i * 4..i * 4 + 4, class);
                    barrier.wait();
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
    });
}

#[test]
fn overlapping_ranges_of_opposite_classes_exclude() {
    watchdog("overlapping ranges", LIMIT, || {
        let table = Arc::new(LockTable::new(64));
        let dio = table.lock_range(1, 0..8, Class::Block);
        assert!(table.try_lock_range(1, 7..9, Class::Add).is_none());
        assert!(table.try_lock_range(1, 8..9, Class::Add).is_some());
        // Same class overlaps share.
        assert!(table.try_lock_range(1, 4..12, Class::Block).is_some());
        // A blocking Add over stripe 7 waits until the direct write is done.
        let done = Arc::new(AtomicBool::new(false));
        let (t, d) = (table.clone(), done.clone());
        let adder = thread::spawn(move || {
            let _g = t.lock_range(1, 7..8, Class::Add);
            assert!(d.load(SeqCst), "Add got in while Block held stripe 7");
        });
        wait_until("the adder waits", LIMIT, || {
            table.state(table.lock_index(1, 7)).add_waiters > 0
        });
        done.store(true, SeqCst);
        drop(dio);
        adder.join().unwrap();
        assert_all_free(&table);
    });
}

#[test]
fn a_range_longer_than_the_table_takes_the_whole_table() {
    let table = LockTable::new(5);
    for stripes in [0..5, 3..9, 0..u64::MAX, u64::MAX - 5..u64::MAX] {
        let g = table.lock_range(9, stripes.clone(), Class::Add);
        assert_eq!(g.lock_count(), 5, "{stripes:?}");
        assert_eq!(g.lock_indices().collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
        assert!(table.try_lock_range(1, 0..1, Class::Block).is_none());
        drop(g);
    }
    // One short of the table: every lock but one, taken once each.
    let g = table.lock_range(9, 10..14, Class::Add);
    assert_eq!(g.lock_count(), 4);
    drop(g);
    assert_all_free(&table);
}

#[test]
fn a_range_that_wraps_around_the_table_takes_both_ends() {
    let table = LockTable::new(8);
    let object = (0..).find(|&o| table.lock_index(o, 0) == 6).unwrap();
    let g = table.lock_range(object, 0..4, Class::Block);
    assert_eq!(g.lock_indices().collect::<Vec<_>>(), [0, 1, 6, 7]);
    assert_eq!(
        format!("{g:?}"),
        "RangeGuard { class: Block, locks: [0..2, 6..8] }"
    );
}

#[test]
fn try_lock_range_leaves_nothing_held_on_failure() {
    let table = LockTable::new(16);
    let add = table.lock_range(2, 6..7, Class::Add);
    // 0..8 reaches lock of stripe 6 after taking the lower ones (in table
    // order, which ones depends on the hash): all are given back.
    assert!(table.try_lock_range(2, 0..8, Class::Block).is_none());
    let blocked = table.lock_index(2, 6);
    for i in 0..16 {
        assert_eq!(table.state(i).holders, u32::from(i == blocked), "lock {i}");
    }
    drop(add);
    assert_all_free(&table);
    assert!(table.try_lock_range(2, 0..8, Class::Block).is_some());
    // The thread's own count of holds is back to zero too: its acquisitions
    // are top-level again, so a try_lock is refused while the other class
    // waits (a leftover count would make it nested, and admitted).
    watchdog("top-level after a failed try_lock_range", LIMIT, || {
        let table = LockTable::new(16);
        let add = table.lock_range(2, 6..7, Class::Add);
        assert!(table.try_lock_range(2, 0..8, Class::Block).is_none());
        let lock = Arc::new(two_state_lock::TwoStateLock::new());
        let holder = common::Holder::spawn(&lock, Class::Add);
        let l = lock.clone();
        let waiter = thread::spawn(move || drop(l.lock(Class::Block)));
        wait_until("the Block waiter sleeps", LIMIT, || {
            lock.state().block_waiters > 0
        });
        drop(add);
        assert!(lock.try_lock(Class::Add).is_none(), "judged nested");
        holder.release();
        waiter.join().unwrap();
    });
}

#[test]
fn unwinding_releases_every_lock_of_a_range() {
    let table = Arc::new(LockTable::new(16));
    let t = table.clone();
    let r = thread::spawn(move || {
        let _g = t.lock_range(4, 0..6, Class::Block);
        panic!("inside the critical section");
    })
    .join();
    assert!(r.is_err());
    assert_all_free(&table);
    let r = catch_unwind(AssertUnwindSafe(|| {
        let _g = table.lock_range(4, 0..100, Class::Add);
        panic!("caught");
    }));
    assert!(r.is_err());
    assert_all_free(&table);
    assert!(table.try_lock_range(4, 0..100, Class::Block).is_some());
}

#[test]
fn misuse_panics_with_a_message() {
    let r = catch_unwind(|| LockTable::new(0));
    let msg = *r.unwrap_err().downcast::<String>().unwrap();
    assert!(msg.contains("needs 1 to"), "{msg}");
    let table = LockTable::new(4);
    #[allow(clippy::reversed_empty_ranges)]
    for stripes in [3..3, 5..2] {
        let r = catch_unwind(AssertUnwindSafe(|| {
            drop(table.lock_range(0, stripes.clone(), Class::Add))
        }));
        let msg = *r.unwrap_err().downcast::<String>().unwrap();
        assert!(msg.contains("empty stripe range"), "{msg}");
    }
    assert_all_free(&table);
}

#[test]
fn the_hash_spreads_stripes_and_objects() {
    let table = LockTable::new(1024);
    // Consecutive stripes of one object: distinct locks, for any start.
    for object in 0..50u64 {
        let start = object * 1_000_003;
        let mut seen: Vec<usize> = (start..start + 1024)
            .map(|s| table.lock_index(object, s))
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 1024);
    }
    // Equal stripes of different objects: about as spread as random
    // (1000 random picks of 1024 fill about 632 slots).
    for stripe in [0, 1, 77, u64::MAX] {
        let mut seen: Vec<usize> = (0..1000u64).map(|o| table.lock_index(o, stripe)).collect();
        seen.sort();
        seen.dedup();
        assert!(
            seen.len() > 560,
            "stripe {stripe}: only {} locks",
            seen.len()
        );
    }
    // Consecutive object numbers (inode numbers, say) are not neighbours.
    let adjacent = (0..1000u64)
        .filter(|&o| table.lock_index(o + 1, 0).abs_diff(table.lock_index(o, 0)) <= 1)
        .count();
    assert!(adjacent < 20, "{adjacent}");
}

#[test]
fn debug_shows_the_busy_locks() {
    let table = LockTable::new(4);
    assert_eq!(format!("{table:?}"), "LockTable { size: 4, busy: {} }");
    let g = table.lock_range(0, 0..4, Class::Add);
    let s = format!("{table:?}");
    assert_eq!(s.matches("class: Add, holders: 1").count(), 4, "{s}");
    drop(g);
}

#[test]
fn a_fault_in_a_range_on_its_own_stripe_completes() {
    // generic/647 with a range lock: a direct write to stripes 0..4 of a
    // file from a buffer mapped from stripes 2..6 of the same file.
    let table = LockTable::new(64);
    let dio = table.lock_range(1, 0..4, Class::Block);
    let runs = AtomicU64::new(0);
    let mut cycles = 0;
    for stripe in 2..6 {
        let pinned = dio.faults_disabled(|| {
            table.fault_in(1, stripe, || {
                runs.fetch_add(1, SeqCst);
                table.state(table.lock_index(1, stripe)).class
            })
        });
        assert_eq!(pinned.value, Class::Add);
        cycles += usize::from(pinned.locks_dropped);
    }
    assert_eq!(runs.load(SeqCst), 4);
    assert_eq!(cycles, 2, "stripes 2 and 3 are ours; 4 and 5 are free");
    for i in dio.lock_indices() {
        assert_eq!(table.state(i).class, Class::Block, "re-taken");
    }
    // The seed's protocol refuses the same-mapping fault instead.
    let r = dio.faults_disabled(|| table.lock_fault(1, 3).map(drop));
    assert_eq!(r.value, Err(FaultError::SameMapping));
}

#[test]
fn nested_ranges_in_one_thread_do_not_queue_behind_waiters() {
    watchdog("nested ranges", LIMIT, || {
        let table = Arc::new(LockTable::new(16));
        let outer = table.lock_range(1, 0..2, Class::Add);
        let t = table.clone();
        let blocker = thread::spawn(move || drop(t.lock_range(1, 0..2, Class::Block)));
        wait_until("the blocker waits", LIMIT, || {
            (0..16).any(|i| table.state(i).block_waiters > 0)
        });
        // This thread holds a range: its next acquisition is nested and gets
        // into the Add phase the blocker waits behind.
        let inner = table.lock_range(1, 1..2, Class::Add);
        drop(inner);
        drop(outer);
        blocker.join().unwrap();
    });
}

/// Many threads, random ranges and classes over a small table (collisions
/// are common), shadow counters per lock.
#[test]
fn stress_random_ranges_over_a_small_table() {
    const THREADS: u64 = 16;
    const LOCKS: usize = 4;
    let table = Arc::new(LockTable::new(LOCKS));
    let shadows: Arc<Vec<Shadow>> = Arc::new((0..LOCKS).map(|_| Shadow::default()).collect());
    let t = table.clone();
    let dump = move || format!("{t:?}");
    let ops = watchdog_dump(
        "range stress",
        Duration::from_secs(40),
        move || {
            let deadline = Instant::now() + Duration::from_secs(3);
            let threads: Vec<_> = (0..THREADS)
                .map(|seed| {
                    let (table, shadows) = (table.clone(), shadows.clone());
                    thread::spawn(move || {
                        let mut rng = fastrand::Rng::with_seed(seed);
                        let mut n = 0u64;
                        for attempt in 0..20_000 {
                            if attempt % 64 == 0 && Instant::now() > deadline {
                                break;
                            }
                            let class = if rng.bool() { Class::Add } else { Class::Block };
                            let object = rng.u64(..3);
                            let start = rng.u64(..8);
                            let stripes = start..start + rng.u64(1..6);
                            let g = if rng.u8(..4) == 0 {
                                match table.try_lock_range(object, stripes, class) {
                                    Some(g) => g,
                                    None => continue,
                                }
                            } else {
                                table.lock_range(object, stripes, class)
                            };
                            let held: Vec<usize> = g.lock_indices().collect();
                            held.iter().for_each(|&i| shadows[i].enter(class));
                            if rng.u8(..16) == 0 {
                                thread::yield_now();
                            }
                            held.iter().for_each(|&i| shadows[i].leave(class));
                            drop(g);
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            let ops: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
            assert_all_free(&table);
            ops
        },
        dump,
    );
    println!("range stress: {ops} range acquisitions over {LOCKS} locks");
    assert!(ops > 1000);
}
