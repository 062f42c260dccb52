//! Criterion micro-benchmarks: `cargo bench --bench lock`.
//!
//! `Add` is a reader/writer lock's read side and `Block` its write side.

mod common;

use common::reference::Reference;
use common::tasks::{AsyncLockRwLock, AsyncSubject, TokioRwLock, ready};
use common::{ParkingLotRwLock, StdRwLock, Subject, short_work};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use crossbeam_utils::CachePadded;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};
use two_state_lock::{Class, TwoStateLock};

const CLASSES: [(Class, &str); 2] = [(Class::Add, "Add (read)"), (Class::Block, "Block (write)")];

fn uncontended<S: Subject>(c: &mut Criterion) {
    let mut g = c.benchmark_group("uncontended lock+unlock");
    let lock = S::default();
    for (class, label) in CLASSES {
        g.bench_function(BenchmarkId::new(S::NAME, label), |b| {
            b.iter(|| lock.with(black_box(class), || black_box(())))
        });
    }
    g.finish();
}

fn try_lock<S: Subject>(c: &mut Criterion) {
    let mut g = c.benchmark_group("uncontended try_lock+unlock");
    let lock = S::default();
    for (class, label) in CLASSES {
        g.bench_function(BenchmarkId::new(S::NAME, label), |b| {
            b.iter(|| lock.try_with(black_box(class)))
        });
    }
    g.finish();
}

/// Runs `helper` on another thread until `iters` iterations of `main` are
/// done, and times the main thread from the helper's first acquisition on.
fn against_helper<S: Subject>(iters: u64, main: Class, helper: Class) -> Duration {
    // Each on its own cache line: the helper reads `stop` on every pass,
    // which must not be a read of the lock's line.
    let lock = Arc::new(CachePadded::new(S::default()));
    let stop = Arc::new(CachePadded::new(AtomicBool::new(false)));
    let started = Arc::new(CachePadded::new(AtomicBool::new(false)));
    let (l, s, h_started) = (lock.clone(), stop.clone(), started.clone());
    let h = thread::spawn(move || {
        l.with(helper, short_work);
        h_started.store(true, Ordering::Relaxed);
        while !s.load(Ordering::Relaxed) {
            l.with(helper, short_work);
        }
    });
    // Timing before the helper runs would count uncontended operations (a
    // thread takes tens of microseconds to start): wait for it.
    while !started.load(Ordering::Relaxed) {
        std::hint::spin_loop();
    }
    let start = Instant::now();
    for _ in 0..iters {
        lock.with(main, short_work);
    }
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
    elapsed
}

fn class_switch<S: Subject>(c: &mut Criterion) {
    let mut g = c.benchmark_group("class switch, two threads (Add vs Block)");
    g.bench_function(S::NAME, |b| {
        b.iter_custom(|iters| against_helper::<S>(iters, Class::Add, Class::Block))
    });
    g.finish();
}

fn same_class<S: Subject>(c: &mut Criterion) {
    let mut g = c.benchmark_group("same class, two threads (Add vs Add)");
    g.bench_function(S::NAME, |b| {
        b.iter_custom(|iters| against_helper::<S>(iters, Class::Add, Class::Add))
    });
    g.finish();
    let mut g = c.benchmark_group("same class, two threads (Block vs Block)");
    g.bench_function(S::NAME, |b| {
        b.iter_custom(|iters| against_helper::<S>(iters, Class::Block, Class::Block))
    });
    g.finish();
}

fn all<S: Subject>(c: &mut Criterion) {
    uncontended::<S>(c);
    try_lock::<S>(c);
    class_switch::<S>(c);
    same_class::<S>(c);
}

/// One stripe of a `LockTable` against the plain lock it replaces.
fn range_uncontended(c: &mut Criterion) {
    let mut g = c.benchmark_group("uncontended, one stripe of a LockTable vs TwoStateLock::lock");
    let table = two_state_lock::LockTable::new(1024);
    let lock = TwoStateLock::new();
    // Both timed by the same loop, whose counter (the stripe) stays in a
    // register. With the counter kept across `iter`'s calls, in memory, the
    // table took 1.0-1.7x the lock's time from one run to the next.
    fn timed(iters: u64, mut op: impl FnMut(u64)) -> Duration {
        let start = Instant::now();
        for i in 0..iters {
            op(black_box(i));
        }
        start.elapsed()
    }
    for (class, label) in CLASSES {
        g.bench_function(BenchmarkId::new("TwoStateLock::lock", label), |b| {
            b.iter_custom(|iters| timed(iters, |_| drop(black_box(&lock).lock(black_box(class)))))
        });
        g.bench_function(BenchmarkId::new("LockTable::lock_range", label), |b| {
            b.iter_custom(|iters| {
                timed(iters, |s| {
                    drop(black_box(&table).lock_range(black_box(7), s..s + 1, black_box(class)))
                })
            })
        });
    }
    g.finish();
}

/// An async acquisition and release that is ready at its first poll,
/// polled by hand (no runtime in the measurement).
fn async_uncontended<S: AsyncSubject>(c: &mut Criterion) {
    let mut g = c.benchmark_group("uncontended async lock+unlock (ready at first poll)");
    let lock = S::default();
    for (class, label) in CLASSES {
        g.bench_function(BenchmarkId::new(S::NAME, label), |b| {
            b.iter(|| ready(lock.with(black_box(class), || async { black_box(()) })))
        });
    }
    g.finish();
}

/// What a task scope costs (SPEC §11.3): an async acquisition ready at its
/// first poll inside a `faults_disabled_async` scope (the scope linked in
/// and out around the poll, the acquisition judged nested) against the same
/// acquisition unscoped; and an uncontended fault, blocking against async.
fn task_scope(c: &mut Criterion) {
    let mut g = c.benchmark_group("uncontended async, in a task scope");
    let (file, other) = (TwoStateLock::new(), TwoStateLock::new());
    let dio = ready(file.lock_async(Class::Block));
    g.bench_function("lock_async, unscoped", |b| {
        b.iter(|| drop(ready(black_box(&other).lock_async(Class::Add))))
    });
    g.bench_function("lock_async, in a scope", |b| {
        b.iter(|| {
            let scoped = dio.faults_disabled_async(black_box(&other).lock_async(Class::Add));
            drop(ready(scoped).value)
        })
    });
    g.bench_function("fault_in, no held mapping (blocking)", |b| {
        b.iter(|| black_box(&other).fault_in(|| black_box(1)))
    });
    g.bench_function("fault_in_async, no held mapping", |b| {
        b.iter(|| ready(black_box(&other).fault_in_async(|| async { black_box(1) })))
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    task_scope(c);
    async_uncontended::<TwoStateLock>(c);
    async_uncontended::<TokioRwLock>(c);
    async_uncontended::<AsyncLockRwLock>(c);
    range_uncontended(c);
    all::<TwoStateLock>(c);
    all::<StdRwLock>(c);
    all::<ParkingLotRwLock>(c);
    all::<Reference>(c);
}

criterion_group! {
    name = lock;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(30);
    targets = benches
}
criterion_main!(lock);
