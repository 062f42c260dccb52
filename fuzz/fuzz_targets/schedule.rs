//! Multi-threaded: the input becomes per-thread scripts (classes, nesting,
//! try vs blocking, fault-protocol direct writes, hold times) run at once on
//! three shared locks. Shadow counters assert exclusion; a watchdog aborts
//! with the scripts if they do not finish. Scripts contain only what the
//! contract promises cannot deadlock: nested acquisitions in lock order (or
//! the same lock and class again), and out-of-order holds only through the
//! fault protocol.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier, mpsc};
use std::time::Duration;
use two_state_lock::{Class, FaultError, TwoStateLock};
use two_state_lock_fuzz::C;

const LOCKS: usize = 3;

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
}

fn work(units: u8) {
    match units % 4 {
        0 => {}
        1 => std::thread::yield_now(),
        2 => (0..units as u32 * 8).for_each(|_| std::hint::spin_loop()),
        _ => std::thread::sleep(Duration::from_micros(units as u64 % 50)),
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
    }
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
            std::process::abort();
        }
    }
    // Joined, so that no thread outlives the input (LeakSanitizer checks).
    handles.into_iter().for_each(|h| h.join().unwrap());
    for l in &world.locks {
        let s = l.state();
        assert!(
            s.holders == 0 && s.add_waiters == 0 && s.block_waiters == 0,
            "{s:?}"
        );
    }
});
