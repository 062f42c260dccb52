//! Multi-threaded: the input becomes per-thread scripts (classes, nesting,
//! try vs blocking, fault-protocol direct writes with `lock_fault` and with
//! `fault_in`, range acquisitions over a 3-lock `LockTable`, where stripes
//! collide all the time, timed acquisitions that give up, faults inside
//! faults, async acquisitions polled by hand and dropped at points the
//! input picks, async direct writes pinning through `fault_in_async` in a
//! task scope, dropped mid-fault where the input says, hold times) run at
//! once on three shared locks and
//! the table. Shadow counters (one per lock, the table's included) assert
//! exclusion; a watchdog aborts with the scripts if they do not finish.
//! Scripts contain only what the contract promises cannot deadlock: nested
//! acquisitions in lock order (or the same lock and class again), one range
//! at a time, and out-of-order holds only through the fault protocol.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier, mpsc};
use std::time::Duration;
use two_state_lock::{Class, FaultError, LockTable, TwoStateLock};
use two_state_lock_fuzz::{C, poll_by_hand};

const LOCKS: usize = 3;
const TABLE: usize = 3;

#[derive(Arbitrary, Debug)]
enum Step {
    Hold {
        lock: u8,
        class: C,
        work: u8,
    },
    Nested {
        outer: u8,
        outer_class: C,
        inner: u8,
        inner_class: C,
    },
    Reenter {
        lock: u8,
        class: C,
    },
    Try {
        lock: u8,
        class: C,
    },
    Arc {
        lock: u8,
        class: C,
        other_thread: bool,
    },
    DirectWrite {
        file: u8,
        buffer: u8,
        pages: u8,
    },
    /// A direct write pinning with `fault_in`: the buffer may be mapped from
    /// the written file.
    DirectWriteFaultIn {
        file: u8,
        buffer: u8,
        pages: u8,
    },
    Range {
        object: u8,
        start: u8,
        len: u8,
        class: C,
        try_only: bool,
        work: u8,
    },
    /// A direct write under a `Block` range, pinning stripes of another (or
    /// the same) object with the table's `fault_in`.
    RangeDirectWrite {
        object: u8,
        start: u8,
        len: u8,
        buffer_object: u8,
        buffer_stripe: u8,
        pages: u8,
    },
    /// A timed acquisition that gives up after `micros` x 10 us.
    Timed {
        lock: u8,
        class: C,
        micros: u8,
        work: u8,
    },
    /// A timed range acquisition.
    TimedRange {
        object: u8,
        start: u8,
        len: u8,
        class: C,
        micros: u8,
    },
    /// An async acquisition, polled by hand on this thread: `polls % 4` is
    /// 0 (dropped before its first poll), 1 or 2 (dropped after that many
    /// polls unless ready), or 3 (polled until ready, the thread parked
    /// between polls until the future's waker wakes it).
    Task {
        lock: u8,
        class: C,
        polls: u8,
        arc: bool,
        work: u8,
    },
    /// Two pending acquisitions of one lock in one task: the first dropped
    /// after `polls % 3` polls, the second polled until ready.
    TwoPending {
        lock: u8,
        class: C,
        polls: u8,
    },
    /// An async range acquisition, polled as `Task`'s.
    TaskRange {
        object: u8,
        start: u8,
        len: u8,
        class: C,
        polls: u8,
    },
    /// A direct write whose pin faults on `outer`, and whose fault's work
    /// faults on `inner`, in any order against each other and the file.
    FaultInsideFault {
        file: u8,
        outer: u8,
        inner: u8,
    },
    /// An async direct write: `lock_async(Block)` on `file`, then each page
    /// pinned with `fault_in_async` on `buffer` (a fault inside on `inner`
    /// if `nested`) inside the guard's `faults_disabled_async` scope,
    /// polled by hand as `Task`'s (so a pin may be dropped mid-cycle).
    AsyncDirectWrite {
        file: u8,
        buffer: u8,
        inner: u8,
        nested: bool,
        pages: u8,
        polls: u8,
    },
    /// An async direct write under a `Block` range of the table, pinning
    /// stripes with the table's `fault_in_async`.
    AsyncRangeDirectWrite {
        object: u8,
        start: u8,
        len: u8,
        buffer_object: u8,
        buffer_stripe: u8,
        pages: u8,
    },
}

#[derive(Arbitrary, Debug)]
struct Scripts(Vec<Vec<Step>>);

#[derive(Default)]
struct Shadow([AtomicUsize; 2]);

impl Shadow {
    fn enter(&self, class: Class) {
        self.0[class as usize].fetch_add(1, SeqCst);
        assert_eq!(
            self.0[class.other() as usize].load(SeqCst),
            0,
            "both classes inside"
        );
    }
    fn leave(&self, class: Class) {
        self.0[class as usize].fetch_sub(1, SeqCst);
    }
}

struct World {
    /// Sorted by address: index order is lock order.
    locks: Vec<Arc<TwoStateLock>>,
    shadows: Vec<Shadow>,
    table: LockTable,
    /// One per lock of the table.
    table_shadows: Vec<Shadow>,
}

impl World {
    /// The shadows of table locks `held` enter (or leave) `class`.
    fn range_shadows(&self, held: &[usize], class: Class, enter: bool) {
        for &i in held {
            if enter {
                self.table_shadows[i].enter(class);
            } else {
                self.table_shadows[i].leave(class);
            }
        }
    }

    /// Runs `f` as a fault's work on table lock `index`: `Add`, checked.
    fn table_add(&self, index: usize) {
        self.table_shadows[index].enter(Class::Add);
        self.table_shadows[index].leave(Class::Add);
    }
}

fn work(units: u8) {
    match units % 4 {
        0 => {}
        1 => std::thread::yield_now(),
        2 => (0..units as u32 * 8).for_each(|_| std::hint::spin_loop()),
        _ => std::thread::sleep(Duration::from_micros(units as u64 % 50)),
    }
}

/// `polls % 4` as `Step::Task` reads it: `Some(0)` drops before the first
/// poll.
fn poll_limit(polls: u8) -> Option<u32> {
    match polls % 4 {
        3 => None,
        n => Some(u32::from(n)),
    }
}

fn run_step(w: &World, step: &Step) {
    let idx = |l: u8| l as usize % LOCKS;
    match *step {
        Step::Hold {
            lock,
            class,
            work: units,
        } => {
            let (i, class) = (idx(lock), class.into());
            let _g = w.locks[i].lock(class);
            w.shadows[i].enter(class);
            work(units);
            w.shadows[i].leave(class);
        }
        Step::Nested {
            outer,
            outer_class,
            inner,
            inner_class,
        } => {
            let (i, j) = (idx(outer), idx(inner));
            let (ci, mut cj): (Class, Class) = (outer_class.into(), inner_class.into());
            if j < i {
                return; // out of lock order: not promised
            }
            if j == i {
                cj = ci; // the other class of a held lock would self-deadlock
            }
            let _a = w.locks[i].lock(ci);
            w.shadows[i].enter(ci);
            let _b = w.locks[j].lock(cj);
            w.shadows[j].enter(cj);
            work(3);
            w.shadows[j].leave(cj);
            w.shadows[i].leave(ci);
        }
        Step::Reenter { lock, class } => {
            let (i, class) = (idx(lock), class.into());
            let _a = w.locks[i].lock(class);
            let _b = w.locks[i].lock(class);
            w.shadows[i].enter(class);
            w.shadows[i].leave(class);
        }
        Step::Try { lock, class } => {
            let (i, class) = (idx(lock), class.into());
            if let Some(_g) = w.locks[i].try_lock(class) {
                w.shadows[i].enter(class);
                w.shadows[i].leave(class);
            }
        }
        Step::Arc {
            lock,
            class,
            other_thread,
        } => {
            let (i, class) = (idx(lock), class.into());
            let g = w.locks[i].lock_arc(class);
            w.shadows[i].enter(class);
            w.shadows[i].leave(class);
            if other_thread {
                std::thread::spawn(move || drop(g)).join().unwrap();
            }
        }
        Step::DirectWrite {
            file,
            buffer,
            pages,
        } => {
            let (f, b) = (idx(file), idx(buffer));
            let dio = w.locks[f].lock(Class::Block);
            w.shadows[f].enter(Class::Block);
            let mut pinned = 0;
            let r = dio.retry_faults(
                || {},
                || {
                    while pinned < pages % 4 + 1 {
                        // The cycle may release our hold while we wait.
                        w.shadows[f].leave(Class::Block);
                        let fault = w.locks[b].lock_fault();
                        w.shadows[f].enter(Class::Block);
                        let g = fault?;
                        w.shadows[b].enter(Class::Add);
                        w.shadows[b].leave(Class::Add);
                        drop(g);
                        pinned += 1;
                    }
                    Ok(())
                },
            );
            w.shadows[f].leave(Class::Block);
            let expected = if f == b {
                Err(FaultError::SameMapping)
            } else {
                Ok(())
            };
            assert_eq!(r, expected);
        }
        Step::DirectWriteFaultIn {
            file,
            buffer,
            pages,
        } => {
            let (f, b) = (idx(file), idx(buffer));
            let dio = w.locks[f].lock(Class::Block);
            w.shadows[f].enter(Class::Block);
            let pages = pages % 4 + 1;
            let mut cycles = 0;
            for page in 0..pages {
                let pinned = dio.faults_disabled(|| {
                    // The cycle may release our hold while f runs.
                    w.shadows[f].leave(Class::Block);
                    let got = w.locks[b].fault_in(|| {
                        w.shadows[b].enter(Class::Add);
                        w.shadows[b].leave(Class::Add);
                        page
                    });
                    w.shadows[f].enter(Class::Block);
                    got
                });
                assert_eq!(pinned.value, page, "fault_in returns f's value");
                cycles += u8::from(pinned.locks_dropped);
            }
            assert!(cycles <= pages);
            if f == b {
                assert_eq!(cycles, pages, "a same-mapping fault always cycles");
            }
            w.shadows[f].leave(Class::Block);
        }
        Step::Range {
            object,
            start,
            len,
            class,
            try_only,
            work: units,
        } => {
            let class: Class = class.into();
            let stripes = start as u64..start as u64 + len as u64 % 5 + 1;
            let g = if try_only {
                match w.table.try_lock_range(object as u64 % 4, stripes, class) {
                    Some(g) => g,
                    None => return,
                }
            } else {
                w.table.lock_range(object as u64 % 4, stripes, class)
            };
            let held: Vec<usize> = g.lock_indices().collect();
            held.iter().for_each(|&i| w.table_shadows[i].enter(class));
            work(units);
            held.iter().for_each(|&i| w.table_shadows[i].leave(class));
        }
        Step::RangeDirectWrite {
            object,
            start,
            len,
            buffer_object,
            buffer_stripe,
            pages,
        } => {
            let stripes = start as u64..start as u64 + len as u64 % 5 + 1;
            let dio = w.table.lock_range(object as u64 % 4, stripes, Class::Block);
            let held: Vec<usize> = dio.lock_indices().collect();
            let enter = || w.range_shadows(&held, Class::Block, true);
            let leave = || w.range_shadows(&held, Class::Block, false);
            enter();
            for page in 0..pages % 4 + 1 {
                let stripe = buffer_stripe as u64 + page as u64;
                let target = w.table.lock_index(buffer_object as u64 % 4, stripe);
                let pinned = dio.faults_disabled(|| {
                    leave(); // the cycle may release some of our holds
                    let got = w.table.fault_in(buffer_object as u64 % 4, stripe, || {
                        w.table_add(target);
                        stripe
                    });
                    enter();
                    got
                });
                assert_eq!(pinned.value, stripe);
            }
            leave();
        }
        Step::Timed {
            lock,
            class,
            micros,
            work: units,
        } => {
            let (i, class) = (idx(lock), class.into());
            let timeout = Duration::from_micros(u64::from(micros) * 10);
            if let Some(_g) = w.locks[i].try_lock_for(class, timeout) {
                w.shadows[i].enter(class);
                work(units);
                w.shadows[i].leave(class);
            }
        }
        Step::TimedRange {
            object,
            start,
            len,
            class,
            micros,
        } => {
            let class: Class = class.into();
            let stripes = start as u64..start as u64 + len as u64 % 5 + 1;
            let timeout = Duration::from_micros(u64::from(micros) * 10);
            if let Some(g) = w
                .table
                .try_lock_range_for(object as u64 % 4, stripes, class, timeout)
            {
                let held: Vec<usize> = g.lock_indices().collect();
                held.iter().for_each(|&i| w.table_shadows[i].enter(class));
                work(1);
                held.iter().for_each(|&i| w.table_shadows[i].leave(class));
            }
        }
        Step::Task {
            lock,
            class,
            polls,
            arc,
            work: units,
        } => {
            let (i, class) = (idx(lock), class.into());
            let limit = poll_limit(polls);
            let inside = || {
                w.shadows[i].enter(class);
                work(units);
                w.shadows[i].leave(class);
            };
            if limit == Some(0) {
                drop(w.locks[i].lock_async(class));
                drop(w.locks[i].lock_arc_async(class));
            } else if arc {
                if let Some(_g) = poll_by_hand(&mut w.locks[i].lock_arc_async(class), limit) {
                    inside();
                }
            } else if let Some(_g) = poll_by_hand(&mut w.locks[i].lock_async(class), limit) {
                inside();
            }
        }
        Step::TwoPending { lock, class, polls } => {
            let (i, class) = (idx(lock), class.into());
            let mut first = w.locks[i].lock_async(class);
            let mut second = w.locks[i].lock_async(class);
            let a = poll_by_hand(&mut first, Some(u32::from(polls % 3) + 1));
            let b = poll_by_hand(&mut second, Some(1));
            drop(a);
            drop(first);
            let b = b.or_else(|| poll_by_hand(&mut second, None)).unwrap();
            w.shadows[i].enter(class);
            w.shadows[i].leave(class);
            drop(b);
        }
        Step::TaskRange {
            object,
            start,
            len,
            class,
            polls,
        } => {
            let class: Class = class.into();
            let stripes = start as u64..start as u64 + len as u64 % 5 + 1;
            let mut f = w.table.lock_range_async(object as u64 % 4, stripes, class);
            let limit = poll_limit(polls);
            if limit == Some(0) {
                return;
            }
            if let Some(g) = poll_by_hand(&mut f, limit) {
                let held: Vec<usize> = g.lock_indices().collect();
                held.iter().for_each(|&i| w.table_shadows[i].enter(class));
                work(1);
                held.iter().for_each(|&i| w.table_shadows[i].leave(class));
            }
        }
        Step::AsyncDirectWrite {
            file,
            buffer,
            inner,
            nested,
            pages,
            polls,
        } => {
            let inner = nested.then(|| idx(inner));
            async_direct_write(w, idx(file), idx(buffer), inner, pages, polls);
        }
        Step::AsyncRangeDirectWrite {
            object,
            start,
            len,
            buffer_object,
            buffer_stripe,
            pages,
        } => {
            let stripes = start as u64..start as u64 + len as u64 % 5 + 1;
            async_range_direct_write(
                w,
                object as u64 % 4,
                stripes,
                buffer_object as u64 % 4,
                buffer_stripe as u64,
                pages,
            );
        }
        Step::FaultInsideFault { file, outer, inner } => {
            let (f, o, i) = (idx(file), idx(outer), idx(inner));
            let dio = w.locks[f].lock(Class::Block);
            w.shadows[f].enter(Class::Block);
            // Cycles may release the write's hold and the outer fault's
            // while the faults run: the shadows leave around them.
            w.shadows[f].leave(Class::Block);
            let pinned = dio.faults_disabled(|| {
                w.locks[o].fault_in(|| {
                    w.shadows[o].enter(Class::Add);
                    w.shadows[o].leave(Class::Add);
                    let got = w.locks[i].fault_in(|| {
                        w.shadows[i].enter(Class::Add);
                        w.shadows[i].leave(Class::Add);
                        i
                    });
                    w.shadows[o].enter(Class::Add);
                    w.shadows[o].leave(Class::Add);
                    got
                })
            });
            w.shadows[f].enter(Class::Block);
            assert_eq!(pinned.value, i, "fault_in returns f's value");
            w.shadows[f].leave(Class::Block);
        }
    }
}

/// `Step::AsyncDirectWrite`.
fn async_direct_write(w: &World, f: usize, b: usize, inner: Option<usize>, pages: u8, polls: u8) {
    let dio = poll_by_hand(&mut w.locks[f].lock_async(Class::Block), None).unwrap();
    w.shadows[f].enter(Class::Block);
    let limit = poll_limit(polls);
    let pages = pages % 4 + 1;
    let mut cycles = 0;
    for page in 0..pages {
        // The cycle may release our hold while the pin runs.
        w.shadows[f].leave(Class::Block);
        let pin = w.locks[b].fault_in_async(|| async move {
            w.shadows[b].enter(Class::Add);
            w.shadows[b].leave(Class::Add);
            if let Some(i) = inner {
                w.locks[i]
                    .fault_in_async(|| async move {
                        w.shadows[i].enter(Class::Add);
                        w.shadows[i].leave(Class::Add);
                    })
                    .await;
            }
            page
        });
        let mut scope = Box::pin(dio.faults_disabled_async(pin));
        // Dropped unfinished only on the last page, where `limit` says.
        let finished = if page + 1 == pages && limit != Some(0) {
            poll_by_hand(&mut scope, limit)
        } else {
            poll_by_hand(&mut scope, None)
        };
        drop(scope);
        w.shadows[f].enter(Class::Block);
        // The hold is ours again, whether the pin finished or was dropped.
        assert_eq!(w.locks[f].state().class, Class::Block);
        if let Some(pinned) = finished {
            assert_eq!(
                pinned.value, page,
                "fault_in_async returns the work's value"
            );
            cycles += u8::from(pinned.locks_dropped);
        }
    }
    assert!(cycles <= pages);
    w.shadows[f].leave(Class::Block);
    drop(dio);
}

/// `Step::AsyncRangeDirectWrite`.
fn async_range_direct_write(
    w: &World,
    object: u64,
    stripes: std::ops::Range<u64>,
    buffer: u64,
    stripe: u64,
    pages: u8,
) {
    let dio = poll_by_hand(
        &mut w.table.lock_range_async(object, stripes, Class::Block),
        None,
    )
    .unwrap();
    let held: Vec<usize> = dio.lock_indices().collect();
    let enter = || w.range_shadows(&held, Class::Block, true);
    let leave = || w.range_shadows(&held, Class::Block, false);
    enter();
    for page in 0..u64::from(pages % 4 + 1) {
        leave(); // the cycle may release some of our holds
        let s = stripe + page;
        let target = w.table.lock_index(buffer, s);
        let pin = w.table.fault_in_async(buffer, s, || async move {
            w.table_add(target);
            s
        });
        let mut scope = Box::pin(dio.faults_disabled_async(pin));
        let pinned = poll_by_hand(&mut scope, None).unwrap();
        drop(scope);
        enter();
        assert_eq!(pinned.value, s);
    }
    leave();
}

fuzz_target!(|scripts: Scripts| {
    let mut scripts = scripts.0;
    scripts.truncate(4);
    for s in &mut scripts {
        s.truncate(12);
    }
    if scripts.is_empty() {
        return;
    }
    let mut locks: Vec<Arc<TwoStateLock>> =
        (0..LOCKS).map(|_| Arc::new(TwoStateLock::new())).collect();
    locks.sort_by_key(|l| Arc::as_ptr(l) as usize);
    let world = Arc::new(World {
        locks,
        shadows: (0..LOCKS).map(|_| Shadow::default()).collect(),
        table: LockTable::new(TABLE),
        table_shadows: (0..TABLE).map(|_| Shadow::default()).collect(),
    });
    let scripts = Arc::new(scripts);
    let start = Arc::new(Barrier::new(scripts.len()));
    let (done_tx, done) = mpsc::channel();
    let mut handles = Vec::new();
    for t in 0..scripts.len() {
        let (world, scripts, start, done_tx) = (
            world.clone(),
            scripts.clone(),
            start.clone(),
            done_tx.clone(),
        );
        handles.push(std::thread::spawn(move || {
            start.wait();
            for step in &scripts[t] {
                run_step(&world, step);
            }
            let _ = done_tx.send(());
        }));
    }
    for _ in 0..scripts.len() {
        if done.recv_timeout(Duration::from_secs(10)).is_err() {
            eprintln!(
                "schedule: threads did not finish within 10 s (deadlock?); scripts: {scripts:#?}"
            );
            for (i, l) in world.locks.iter().enumerate() {
                eprintln!("lock {i}: {l:?}");
            }
            eprintln!("{:?}", world.table);
            std::process::abort();
        }
    }
    // Joined, so that no thread outlives the input (LeakSanitizer checks).
    handles.into_iter().for_each(|h| h.join().unwrap());
    let states = world.locks.iter().map(|l| l.state());
    for s in states.chain((0..TABLE).map(|i| world.table.state(i))) {
        assert!(
            s.holders == 0 && s.add_waiters == 0 && s.block_waiters == 0,
            "{s:?}"
        );
    }
});
