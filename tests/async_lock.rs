//! Async acquisition (SPEC §11.2): the same lock for threads and tasks,
//! cancel-safe, under tokio (multi-thread and current-thread) and
//! `futures::executor`. Every run is bounded by a watchdog.

#![cfg(not(loom))]

mod common;

use common::{Holder, Shadow, multi_thread_runtime, wait_until, watchdog, watchdog_dump};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};
use two_state_lock::{
    ArcLockFuture, AsyncGuard, AsyncRangeGuard, Class, LockFuture, LockTable, RangeLockFuture,
    TwoStateLock,
};

const LIMIT: Duration = Duration::from_secs(30);

/// A waker that counts its wake-ups.
#[derive(Default)]
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, SeqCst);
    }
}

fn counting_waker() -> (Arc<CountingWaker>, Waker) {
    let counter = Arc::new(CountingWaker::default());
    (counter.clone(), Waker::from(counter))
}

/// Polls `f` once with `waker`.
fn poll_once<F: Future + Unpin>(f: &mut F, waker: &Waker) -> Poll<F::Output> {
    Pin::new(f).poll(&mut Context::from_waker(waker))
}

/// Returns `Pending` once (after waking its task), then `Ready`.
async fn yield_once() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if std::mem::replace(&mut yielded, true) {
            Poll::Ready(())
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

#[test]
fn futures_and_guards_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<LockFuture<'static>>();
    assert_send_sync::<ArcLockFuture>();
    assert_send_sync::<RangeLockFuture<'static>>();
    assert_send_sync::<AsyncGuard<'static>>();
    assert_send_sync::<AsyncRangeGuard<'static>>();
    fn assert_send<T: Send>() {}
    assert_send::<two_state_lock::ArcGuard>();
}

#[test]
fn an_uncontended_acquisition_is_ready_at_its_first_poll() {
    let lock = TwoStateLock::new();
    let waker = Waker::noop();
    for class in [Class::Add, Class::Block] {
        let mut f = lock.lock_async(class);
        let Poll::Ready(guard) = poll_once(&mut f, waker) else {
            panic!("{class:?} pending on a free lock");
        };
        assert_eq!(guard.class(), class);
        assert_eq!(lock.state().holders, 1);
        drop(guard);
        drop(f);
        assert_eq!(lock.state().holders, 0);
    }
    let table = LockTable::new(16);
    let mut f = table.lock_range_async(3, 0..5, Class::Block);
    let Poll::Ready(g) = poll_once(&mut f, waker) else {
        panic!("range pending on a free table");
    };
    assert_eq!(g.lock_count(), 5);
}

#[test]
fn a_future_dropped_before_its_first_poll_changes_nothing() {
    let lock = TwoStateLock::new();
    let before = lock.state();
    drop(lock.lock_async(Class::Block));
    drop(lock.lock_nested_async(Class::Add));
    assert_eq!(lock.state(), before);
}

#[test]
#[should_panic(expected = "polled after it completed")]
fn polling_after_completion_panics() {
    let lock = TwoStateLock::new();
    let mut f = lock.lock_async(Class::Add);
    let g = poll_once(&mut f, Waker::noop());
    assert!(g.is_ready());
    let _ = poll_once(&mut f, Waker::noop());
}

/// A waiting task of one class stops new top-level arrivals of the other
/// (threads included), and the release hands the lock to it; its latest
/// waker is the one woken.
#[test]
fn a_waiting_task_is_phase_fair_with_threads_and_its_latest_waker_is_woken() {
    let lock = Arc::new(TwoStateLock::new());
    let reader = Holder::spawn(&lock, Class::Add);
    let mut dio = lock.lock_arc_async(Class::Block);
    let (first, first_waker) = counting_waker();
    assert!(poll_once(&mut dio, &first_waker).is_pending());
    assert_eq!(lock.state().block_waiters, 1);
    // A new top-level Add, on a thread, waits behind the task.
    let l = lock.clone();
    assert!(
        std::thread::spawn(move || l.try_lock(Class::Add).is_none())
            .join()
            .unwrap()
    );
    // The task moved: polled again with another waker.
    let (latest, latest_waker) = counting_waker();
    assert!(poll_once(&mut dio, &latest_waker).is_pending());
    reader.release();
    wait_until("the hand-off wakes the task", LIMIT, || {
        latest.0.load(SeqCst) > 0
    });
    assert_eq!(first.0.load(SeqCst), 0, "the stale waker was not woken");
    let Poll::Ready(g) = poll_once(&mut dio, &latest_waker) else {
        panic!("woken by a hand-off to Block, but not admitted");
    };
    assert_eq!(g.class(), Class::Block);
    assert_eq!(lock.state().block_waiters, 0);
}

/// Dropped while it waits, a task leaves no count: the lock goes on as if
/// it had never asked.
#[test]
fn a_future_dropped_while_waiting_leaves_no_count() {
    let lock = Arc::new(TwoStateLock::new());
    let reader = Holder::spawn(&lock, Class::Add);
    let mut dio = lock.lock_async(Class::Block);
    assert!(poll_once(&mut dio, Waker::noop()).is_pending());
    assert_eq!(lock.state().block_waiters, 1);
    // While it waits, top-level Adds wait too...
    assert!(lock.try_lock(Class::Add).is_none());
    drop(dio);
    // ...and once it is gone they get in at once.
    assert_eq!(lock.state().block_waiters, 0);
    assert!(lock.try_lock(Class::Add).is_some());
    reader.release();
    assert!(lock.try_lock(Class::Block).is_some());
}

/// A release handed the lock to a waiting task of `Block`, which is then
/// dropped without being polled: the hand-off goes on to the `Add` waiters
/// behind it (a task here, and a thread).
#[test]
fn a_future_dropped_after_a_hand_off_woke_it_passes_the_turn_on() {
    let lock = Arc::new(TwoStateLock::new());
    let reader = Holder::spawn(&lock, Class::Add);
    let mut dio = lock.lock_async(Class::Block);
    let (woken, waker) = counting_waker();
    assert!(poll_once(&mut dio, &waker).is_pending());
    // An Add task and an Add thread queue behind the Block task.
    let mut read = lock.lock_async(Class::Add);
    let (read_woken, read_waker) = counting_waker();
    assert!(poll_once(&mut read, &read_waker).is_pending());
    let l = lock.clone();
    let thread_read = std::thread::spawn(move || drop(l.lock(Class::Add)));
    wait_until("the Add thread sleeps", LIMIT, || {
        lock.state().add_waiters == 2
    });
    reader.release();
    wait_until("the hand-off to Block wakes the task", LIMIT, || {
        woken.0.load(SeqCst) > 0
    });
    assert_eq!(lock.state().holders, 0);
    assert_eq!(lock.state().class, Class::Block);
    drop(dio);
    // The turn passed on: both Add waiters are woken and get in.
    watchdog(
        "the Add thread after the dropped hand-off",
        LIMIT,
        move || thread_read.join().unwrap(),
    );
    wait_until("the Add task is woken", LIMIT, || {
        read_woken.0.load(SeqCst) > 0
    });
    assert!(poll_once(&mut read, &read_waker).is_ready());
    let s = lock.state();
    assert_eq!((s.add_waiters, s.block_waiters), (0, 0));
}

/// Two pending acquisitions in one task, one of them dropped (tokio issue
/// 6450): the other is still woken by the release.
#[test]
fn two_pending_acquisitions_in_one_task_one_dropped() {
    let lock = Arc::new(TwoStateLock::new());
    let dio = Holder::spawn(&lock, Class::Block);
    let (woken, waker) = counting_waker();
    let mut a = lock.lock_async(Class::Add);
    let mut b = lock.lock_async(Class::Add);
    assert!(poll_once(&mut a, &waker).is_pending());
    assert!(poll_once(&mut b, &waker).is_pending());
    assert_eq!(lock.state().add_waiters, 2);
    drop(a);
    assert_eq!(lock.state().add_waiters, 1);
    dio.release();
    wait_until("the release wakes the task", LIMIT, || {
        woken.0.load(SeqCst) > 0
    });
    assert!(poll_once(&mut b, &waker).is_ready());
}

/// A range future dropped half-way releases what it took and leaves the
/// lock it waited for.
#[test]
fn a_range_future_dropped_half_way_releases_what_it_took() {
    let table = Arc::new(LockTable::new(8));
    // Block stripe 2 of object 0 with a thread's hold.
    let object = 0;
    let busy = table.lock_index(object, 2);
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (held_tx, held) = std::sync::mpsc::channel();
    let t = table.clone();
    let holder = std::thread::spawn(move || {
        let _g = t.lock_range(object, 2..3, Class::Add);
        held_tx.send(()).unwrap();
        let _ = rx.recv();
    });
    held.recv().unwrap();
    let mut f = table.lock_range_async(object, 0..5, Class::Block);
    assert!(poll_once(&mut f, Waker::noop()).is_pending());
    assert!(format!("{f:?}").contains("waiting: true"), "{f:?}");
    assert_eq!(table.state(busy).block_waiters, 1);
    drop(f);
    for i in 0..8 {
        let s = table.state(i);
        let holders = if i == busy { 1 } else { 0 };
        assert_eq!((s.holders, s.block_waiters), (holders, 0), "lock {i}");
    }
    tx.send(()).unwrap();
    holder.join().unwrap();
}

/// `tokio::time::timeout` around an acquisition is a timed acquisition.
#[test]
fn a_tokio_timeout_is_a_timed_acquisition() {
    let lock = Arc::new(TwoStateLock::new());
    let rt = multi_thread_runtime();
    let dio = Holder::spawn(&lock, Class::Block);
    let l = lock.clone();
    rt.block_on(async move {
        let r = tokio::time::timeout(Duration::from_millis(20), l.lock_async(Class::Add)).await;
        assert!(r.is_err(), "the Block holder is stuck");
    });
    assert_eq!(lock.state().add_waiters, 0);
    dio.release();
    let l = lock.clone();
    rt.block_on(async move {
        let g = tokio::time::timeout(Duration::from_secs(10), l.lock_async(Class::Add)).await;
        assert!(g.is_ok());
    });
}

/// SPEC §11.1's hang: tasks on 2 workers, each taking `Add` three times in
/// four and `Block` once, held across a 200 us sleep. With the blocking
/// `lock_arc` this made no progress in 20 of 20 runs; with the async calls
/// every run completes.
#[test]
fn the_blocking_hang_completes_with_the_async_calls() {
    for tasks in [2, 4, 8, 32] {
        for arc in [false, true] {
            let lock = Arc::new(TwoStateLock::new());
            let shadow = Arc::new(Shadow::default());
            let dump = lock.clone();
            let (l, s) = (lock.clone(), shadow.clone());
            watchdog_dump(
                &format!("{tasks} tasks (arc: {arc})"),
                LIMIT,
                move || {
                    multi_thread_runtime().block_on(async move {
                        let mut handles = Vec::new();
                        for t in 0..tasks {
                            let (l, s) = (l.clone(), s.clone());
                            handles.push(tokio::spawn(async move {
                                for i in 0..20 {
                                    let class = if (t + i) % 4 == 3 {
                                        Class::Block
                                    } else {
                                        Class::Add
                                    };
                                    if arc {
                                        let g = l.lock_arc_async(class).await;
                                        s.enter(class);
                                        tokio::time::sleep(Duration::from_micros(200)).await;
                                        s.leave(class);
                                        drop(g);
                                    } else {
                                        let g = l.lock_async(class).await;
                                        s.enter(class);
                                        tokio::time::sleep(Duration::from_micros(200)).await;
                                        s.leave(class);
                                        drop(g);
                                    }
                                }
                            }));
                        }
                        for h in handles {
                            h.await.unwrap();
                        }
                    })
                },
                move || format!("{dump:?}"),
            );
            let s = lock.state();
            assert_eq!((s.holders, s.add_waiters, s.block_waiters), (0, 0, 0));
        }
    }
}

/// Direct I/Os as tasks share the lock across their awaits: 32 `Block`
/// tasks on a current-thread runtime are all inside at once.
#[test]
fn block_tasks_share_the_lock_across_awaits_on_a_current_thread_runtime() {
    let lock = Arc::new(TwoStateLock::new());
    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (l, i, m) = (lock.clone(), inside.clone(), most.clone());
    watchdog("32 Block tasks", LIMIT, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async move {
            let handles: Vec<_> = (0..32)
                .map(|_| {
                    let (l, i, m) = (l.clone(), i.clone(), m.clone());
                    tokio::spawn(async move {
                        let _dio = l.lock_arc_async(Class::Block).await;
                        m.fetch_max(i.fetch_add(1, SeqCst) + 1, SeqCst);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        i.fetch_sub(1, SeqCst);
                    })
                })
                .collect();
            for h in handles {
                h.await.unwrap();
            }
        });
    });
    assert_eq!(most.load(SeqCst), 32);
    assert_eq!(lock.state().holders, 0);
}

/// `futures::executor`: tasks of both classes and a range, on a thread
/// pool-less executor, with threads on the same lock.
#[test]
fn futures_executor_with_threads_on_the_same_lock() {
    let lock = Arc::new(TwoStateLock::new());
    let shadow = Arc::new(Shadow::default());
    let (l, s) = (lock.clone(), shadow.clone());
    watchdog("futures::executor and threads", LIMIT, move || {
        std::thread::scope(|scope| {
            for t in 0..2 {
                let (l, s) = (&l, &s);
                scope.spawn(move || {
                    for i in 0..2000 {
                        let class = if (t + i) % 3 == 0 {
                            Class::Block
                        } else {
                            Class::Add
                        };
                        let _g = l.lock(class);
                        s.enter(class);
                        s.leave(class);
                    }
                });
            }
            futures::executor::block_on(async {
                for i in 0..2000 {
                    let class = if i % 2 == 0 { Class::Block } else { Class::Add };
                    let _g = l.lock_async(class).await;
                    s.enter(class);
                    s.leave(class);
                }
            });
        });
    });
    let s = lock.state();
    assert_eq!((s.holders, s.add_waiters, s.block_waiters), (0, 0, 0));
}

/// Stress: threads and tasks on a few locks, random classes, ranges,
/// futures dropped while they wait (timeouts and `select!`), shadow
/// counters asserting exclusion. Bounded by count and time.
#[test]
fn stress_threads_and_tasks_on_one_lock() {
    const LOCKS: usize = 3;
    const RUN: Duration = Duration::from_secs(4);
    let locks: Arc<Vec<Arc<TwoStateLock>>> =
        Arc::new((0..LOCKS).map(|_| Arc::new(TwoStateLock::new())).collect());
    let shadows: Arc<Vec<Shadow>> = Arc::new((0..LOCKS).map(|_| Shadow::default()).collect());
    let ops = Arc::new(AtomicUsize::new(0));
    let cancelled = Arc::new(AtomicUsize::new(0));
    let dump_locks = locks.clone();
    let (l, s, o, c) = (
        locks.clone(),
        shadows.clone(),
        ops.clone(),
        cancelled.clone(),
    );
    watchdog_dump(
        "threads and tasks",
        Duration::from_secs(60),
        move || {
            let start = Instant::now();
            std::thread::scope(|scope| {
                for seed in 0..4u64 {
                    let (l, s, o) = (&l, &s, &o);
                    scope.spawn(move || {
                        let mut rng = fastrand::Rng::with_seed(seed);
                        for _ in 0..20_000 {
                            if start.elapsed() > RUN {
                                break;
                            }
                            let i = rng.usize(..LOCKS);
                            let class = if rng.bool() { Class::Add } else { Class::Block };
                            let _g = l[i].lock(class);
                            s[i].enter(class);
                            std::hint::spin_loop();
                            s[i].leave(class);
                            o.fetch_add(1, SeqCst);
                        }
                    });
                }
                multi_thread_runtime().block_on(async {
                    let handles: Vec<_> = (0..16u64)
                        .map(|seed| {
                            let (l, s, o, c) = (l.clone(), s.clone(), o.clone(), c.clone());
                            tokio::spawn(async move {
                                let mut rng = fastrand::Rng::with_seed(100 + seed);
                                for _ in 0..5_000 {
                                    if start.elapsed() > RUN {
                                        break;
                                    }
                                    let i = rng.usize(..LOCKS);
                                    let class = if rng.bool() { Class::Add } else { Class::Block };
                                    let acquire = l[i].lock_arc_async(class);
                                    let g = match rng.u8(..8) {
                                        // Given up after a short wait.
                                        0 => match tokio::time::timeout(
                                            Duration::from_micros(50),
                                            acquire,
                                        )
                                        .await
                                        {
                                            Ok(g) => g,
                                            Err(_) => {
                                                c.fetch_add(1, SeqCst);
                                                continue;
                                            }
                                        },
                                        // Raced against a yield: dropped if
                                        // it was not ready at once.
                                        1 => {
                                            tokio::select! {
                                                biased;
                                                g = acquire => g,
                                                () = tokio::task::yield_now() => {
                                                    c.fetch_add(1, SeqCst);
                                                    continue;
                                                }
                                            }
                                        }
                                        _ => acquire.await,
                                    };
                                    s[i].enter(class);
                                    if rng.u8(..4) == 0 {
                                        tokio::task::yield_now().await;
                                    }
                                    s[i].leave(class);
                                    drop(g);
                                    o.fetch_add(1, SeqCst);
                                }
                            })
                        })
                        .collect();
                    for h in handles {
                        h.await.unwrap();
                    }
                });
            });
        },
        move || format!("{dump_locks:?}"),
    );
    assert!(ops.load(SeqCst) > 0);
    for lock in locks.iter() {
        let st = lock.state();
        assert_eq!((st.holders, st.add_waiters, st.block_waiters), (0, 0, 0));
    }
    eprintln!(
        "{} ops, {} acquisitions given up",
        ops.load(SeqCst),
        cancelled.load(SeqCst)
    );
}

/// smol's `async-executor`, run by two threads, with a blocking thread on
/// the same lock.
#[test]
fn smol_async_executor_with_a_blocking_thread() {
    let lock = Arc::new(TwoStateLock::new());
    let shadow = Arc::new(Shadow::default());
    let (l, s) = (lock.clone(), shadow.clone());
    watchdog("async-executor", LIMIT, move || {
        let ex = async_executor::Executor::new();
        let tasks: Vec<_> = (0..8)
            .map(|t| {
                let (l, s) = (l.clone(), s.clone());
                ex.spawn(async move {
                    for i in 0..500 {
                        let class = if (t + i) % 4 == 0 {
                            Class::Block
                        } else {
                            Class::Add
                        };
                        let g = l.lock_arc_async(class).await;
                        s.enter(class);
                        yield_once().await; // hold it across a suspension
                        s.leave(class);
                        drop(g);
                    }
                })
            })
            .collect();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for i in 0..2000 {
                    let class = if i % 3 == 0 { Class::Add } else { Class::Block };
                    let _g = l.lock(class);
                    s.enter(class);
                    s.leave(class);
                }
            });
            let (done, finished) = futures::channel::oneshot::channel::<()>();
            scope.spawn(|| futures::executor::block_on(ex.run(finished)));
            futures::executor::block_on(ex.run(async {
                for t in tasks {
                    t.await;
                }
            }));
            done.send(()).unwrap();
        });
    });
    let s = lock.state();
    assert_eq!((s.holders, s.add_waiters, s.block_waiters), (0, 0, 0));
}
