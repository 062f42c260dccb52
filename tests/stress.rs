//! Many more threads than cores, random classes, nesting, try_lock and
//! `ArcGuard`s over a few locks, with shadow counters asserting exclusion.
//! Bounded by count and time; a watchdog turns a hang into a failure.

mod common;

use common::{Shadow, watchdog_dump};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::thread;
use std::time::{Duration, Instant};
use two_state_lock::{Class, TwoStateLock};

const THREADS: u64 = 32;
const LOCKS: usize = 4;
const RUN: Duration = Duration::from_secs(6);
const OPS_PER_THREAD: u64 = 50_000;

struct World {
    locks: Vec<Arc<TwoStateLock>>,
    shadows: Vec<Shadow>,
    ops: AtomicU64,
    nested: AtomicU64,
}

fn random_class(rng: &mut fastrand::Rng) -> Class {
    if rng.bool() { Class::Add } else { Class::Block }
}

/// One operation: a hold on lock `i`, and maybe, while holding it, a nested
/// hold on a higher lock (any class: lock order keeps that deadlock-free) or
/// the same lock again (same class: rule 3 admits it at once).
fn op(world: &World, rng: &mut fastrand::Rng) {
    let i = rng.usize(..LOCKS);
    let class = random_class(rng);
    let lock = &world.locks[i];
    let outer = match rng.u8(..10) {
        0 => match lock.try_lock(class) {
            Some(g) => Some(g),
            None => return,
        },
        1 => {
            let g = lock.lock_arc(class);
            world.shadows[i].enter(class);
            world.shadows[i].leave(class);
            // Released on another thread half the time.
            if rng.bool() {
                thread::spawn(move || drop(g)).join().unwrap();
            }
            return;
        }
        _ => Some(lock.lock(class)),
    };
    let _outer = outer;
    world.shadows[i].enter(class);
    match rng.u8(..4) {
        0 if i + 1 < LOCKS => {
            let j = rng.usize(i + 1..LOCKS);
            let inner_class = random_class(rng);
            let _g = world.locks[j].lock(inner_class);
            world.shadows[j].enter(inner_class);
            world.nested.fetch_add(1, Relaxed);
            thread::yield_now();
            world.shadows[j].leave(inner_class);
        }
        1 => {
            let _g = lock.lock(class);
            world.nested.fetch_add(1, Relaxed);
        }
        _ => {
            if rng.u8(..16) == 0 {
                thread::sleep(Duration::from_micros(50));
            }
        }
    }
    world.shadows[i].leave(class);
}

#[test]
fn stress_many_threads_random_classes_and_nesting() {
    let world = Arc::new(World {
        locks: (0..LOCKS).map(|_| Arc::new(TwoStateLock::new())).collect(),
        shadows: (0..LOCKS).map(|_| Shadow::default()).collect(),
        ops: AtomicU64::new(0),
        nested: AtomicU64::new(0),
    });
    let locks = world.locks.clone();
    let dump = move || format!("{locks:#?}");
    let run = move || {
        let w = world.clone();
        run_bounded(THREADS, OPS_PER_THREAD, move |rng| {
            op(&w, rng);
            w.ops.fetch_add(1, Relaxed);
        });
        for lock in &world.locks {
            let s = lock.state();
            assert!(
                s.holders == 0 && s.add_waiters == 0 && s.block_waiters == 0,
                "left behind: {s:?}"
            );
        }
        (world.ops.load(Relaxed), world.nested.load(Relaxed))
    };
    let (ops, nested) = watchdog_dump("stress run", RUN + Duration::from_secs(30), run, dump);
    println!("stress: {THREADS} threads, {ops} operations, {nested} nested acquisitions");
    assert!(ops > 1000 && nested > 100);
}

/// One lock and short holds, so that most acquisitions race on the fast
/// path: `lock`, `try_lock`, the same lock again (nested), the lock under
/// another one (nested), `lock_nested` under an `ArcGuard`, and `lock_arc`,
/// three in four `Add`. At the end the lock is free and both classes get
/// in, by `try_lock` too.
#[test]
fn stress_one_hot_lock_short_holds() {
    const HOT_THREADS: u64 = 16;
    const HOT_OPS_PER_THREAD: u64 = 400_000;
    struct Hot {
        lock: Arc<TwoStateLock>,
        /// Taken before `lock`, never while holding it.
        outer: TwoStateLock,
        shadow: Shadow,
        tries: [AtomicU64; 2],
        nested: AtomicU64,
    }
    fn hold(hot: &Hot, class: Class, rng: &mut fastrand::Rng) {
        hot.shadow.enter(class);
        if rng.u8(..8) == 0 {
            let _again = hot.lock.lock(class);
            hot.nested.fetch_add(1, Relaxed);
        }
        hot.shadow.leave(class);
    }
    fn hot_op(hot: &Hot, rng: &mut fastrand::Rng) {
        let class = if rng.u8(..4) == 0 {
            Class::Block
        } else {
            Class::Add
        };
        match rng.u8(..10) {
            0..=4 => {
                let _g = hot.lock.lock(class);
                hold(hot, class, rng);
            }
            5 | 6 => {
                let got = hot.lock.try_lock(class).map(|_g| hold(hot, class, rng));
                hot.tries[usize::from(got.is_some())].fetch_add(1, Relaxed);
            }
            7 => {
                let _o = hot.outer.lock(random_class(rng));
                let _g = hot.lock.lock(class);
                hot.nested.fetch_add(1, Relaxed);
                hold(hot, class, rng);
            }
            8 => {
                let other = Arc::new(TwoStateLock::new());
                let _a = other.lock_arc(Class::Add);
                let _g = hot.lock.lock_nested(class);
                hold(hot, class, rng);
            }
            _ => {
                let g = hot.lock.lock_arc(class);
                hot.shadow.enter(class);
                hot.shadow.leave(class);
                drop(g);
            }
        }
    }
    let hot = Arc::new(Hot {
        lock: Arc::new(TwoStateLock::new()),
        outer: TwoStateLock::new(),
        shadow: Shadow::default(),
        tries: Default::default(),
        nested: AtomicU64::new(0),
    });
    let h = hot.clone();
    let dump = move || format!("{:#?}", h.lock);
    let h = hot.clone();
    let run = move || {
        let hot = h.clone();
        run_bounded(HOT_THREADS, HOT_OPS_PER_THREAD, move |rng| {
            hot_op(&hot, rng)
        });
        let s = h.lock.state();
        assert!(
            s.holders == 0 && s.add_waiters == 0 && s.block_waiters == 0,
            "left behind: {s:?}"
        );
        for class in [Class::Add, Class::Block, Class::Add] {
            assert!(
                h.lock.try_lock(class).is_some(),
                "try_lock({class:?}) failed on a free lock"
            );
        }
    };
    watchdog_dump(
        "hot-lock stress run",
        RUN + Duration::from_secs(30),
        run,
        dump,
    );
    let (ok, failed) = (hot.tries[1].load(Relaxed), hot.tries[0].load(Relaxed));
    let nested = hot.nested.load(Relaxed);
    println!(
        "hot-lock stress: {HOT_THREADS} threads, {nested} nested, try_lock {ok} ok / {failed} failed"
    );
    assert!(
        ok > 0 && failed > 0 && nested > 100,
        "the mix did not happen"
    );
}

/// Runs `op` on `threads` threads, each until it has run `ops` times or `RUN`
/// is over.
fn run_bounded(threads: u64, ops: u64, op: impl Fn(&mut fastrand::Rng) + Send + Sync + 'static) {
    let op = Arc::new(op);
    let deadline = Instant::now() + RUN;
    let handles: Vec<_> = (0..threads)
        .map(|seed| {
            let op = op.clone();
            thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(seed);
                for n in 0..ops {
                    if n % 64 == 0 && Instant::now() > deadline {
                        break;
                    }
                    op(&mut rng);
                }
            })
        })
        .collect();
    handles.into_iter().for_each(|t| t.join().unwrap());
}
