//! Single-threaded operation sequences over four locks, checked step by step
//! against a model of SPEC §3, §4 and §8: what each call returns and which
//! holds exist. Blocking calls are made only where the model says they return;
//! where a fault must wait for a lock held by `ArcGuard`s, those guards are
//! handed to a helper thread that drops them a moment later, so the cycle
//! really waits.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;
use two_state_lock::{ArcGuard, AsyncGuard, Class, FaultError, Guard, TwoStateLock};
use two_state_lock_fuzz::{C, poll_by_hand};

const LOCKS: usize = 4;
const MAX_GUARDS: usize = 24;

#[derive(Arbitrary, Debug)]
enum Op {
    Lock {
        lock: u8,
        class: C,
    },
    LockNested {
        lock: u8,
        class: C,
    },
    TryLock {
        lock: u8,
        class: C,
    },
    LockArc {
        lock: u8,
        class: C,
    },
    TryLockArc {
        lock: u8,
        class: C,
    },
    Drop {
        guard: u8,
    },
    Fault {
        lock: u8,
    },
    FaultIn {
        lock: u8,
    },
    Scope {
        guard: u8,
    },
    EndScope,
    ScopeTwice {
        guard: u8,
    },
    /// `lock_async`, polled by hand once (taken only where it is ready).
    LockAsync {
        lock: u8,
        class: C,
    },
    /// `fault_in_async`, polled by hand until ready.
    FaultInAsync {
        lock: u8,
    },
    /// A task scope (`faults_disabled_async`) of an `ArcGuard` or
    /// `AsyncGuard`, whose wrapped future runs the ops that follow.
    ScopeAsync {
        guard: u8,
    },
}

enum Hold<'a> {
    Plain(Guard<'a>),
    Arc(ArcGuard),
    Async(AsyncGuard<'a>),
}

struct Held<'a> {
    lock: usize,
    class: Class,
    hold: Hold<'a>,
}

/// The model of one lock: holders and their class.
#[derive(Clone, Copy, Default)]
struct Model {
    holders: u32,
    class: Option<Class>,
}

struct ScopeModel {
    lock: usize,
    class: Class,
    /// Lock validation records the hold: a `Guard`'s (this thread's), or a
    /// task scope's while it is linked in; not a blocking `ArcGuard`
    /// scope's.
    recorded: bool,
    /// A cycle certainly released and re-took this scope's hold.
    dropped: bool,
    /// A cycle may have (a `fault_in` whose `try_lock` raced a helper
    /// thread's release).
    maybe_dropped: bool,
}

struct World<'a> {
    locks: &'a [Arc<TwoStateLock>],
    /// Rank of each lock in address order.
    rank: [usize; LOCKS],
    model: [Model; LOCKS],
    guards: Vec<Held<'a>>,
    scopes: Vec<ScopeModel>,
}

impl<'a> World<'a> {
    fn admits(&self, lock: usize, class: Class) -> bool {
        let m = self.model[lock];
        m.holders == 0 || m.class == Some(class)
    }

    fn took(&mut self, lock: usize, class: Class, hold: Hold<'a>) {
        let m = &mut self.model[lock];
        m.holders += 1;
        m.class = Some(class);
        self.guards.push(Held { lock, class, hold });
    }

    fn released(&mut self, lock: usize) {
        let m = &mut self.model[lock];
        m.holders -= 1;
        if m.holders == 0 {
            m.class = None;
        }
    }

    fn check(&self, step: &Op) {
        for (i, lock) in self.locks.iter().enumerate() {
            let s = lock.state();
            let m = self.model[i];
            assert_eq!(s.holders, m.holders, "lock {i} after {step:?}");
            if let Some(class) = m.class {
                assert_eq!(s.class, class, "lock {i} after {step:?}");
            }
            assert!(
                s.add_waiters == 0 && s.block_waiters == 0,
                "waiter bits left on lock {i}: {s:?}"
            );
        }
    }

    /// If every hold on `lock` that keeps `Add` out is an `ArcGuard`, hands
    /// them to a thread that drops them shortly, and returns it.
    fn release_arc_blockers_soon(&mut self, lock: usize) -> Option<std::thread::JoinHandle<()>> {
        let blocking = |h: &Held| h.lock == lock && h.class == Class::Block;
        if self
            .guards
            .iter()
            .any(|h| blocking(h) && !matches!(h.hold, Hold::Arc(_)))
        {
            return None; // held by this thread, or borrowed here
        }
        let mut arcs = Vec::new();
        let mut i = 0;
        while i < self.guards.len() {
            if blocking(&self.guards[i]) {
                match self.guards.swap_remove(i).hold {
                    Hold::Arc(a) => arcs.push(a),
                    Hold::Plain(_) | Hold::Async(_) => unreachable!(),
                }
                self.released(lock);
            } else {
                i += 1;
            }
        }
        Some(std::thread::spawn(move || {
            std::thread::sleep(Duration::from_micros(300));
            drop(arcs);
        }))
    }

    fn fault(&mut self, lock: usize) {
        let me = self.rank[lock];
        if self.scopes.iter().any(|s| s.lock == lock) {
            let r = self.locks[lock].lock_fault().map(drop);
            assert_eq!(r, Err(FaultError::SameMapping));
            return;
        }
        let after = self.scopes.iter().any(|s| self.rank[s.lock] > me);
        let helper = if self.admits(lock, Class::Add) {
            None
        } else {
            match self.release_arc_blockers_soon(lock) {
                Some(h) => Some(h),
                None => return, // would wait for this thread forever
            }
        };
        let r = self.locks[lock].lock_fault();
        if let Some(h) = helper {
            h.join().unwrap();
        }
        match r {
            Ok(g) => {
                assert_eq!(g.class(), Class::Add);
                self.took(lock, Class::Add, Hold::Plain(g));
            }
            Err(e) => {
                assert_eq!(e, FaultError::OrderingViolation);
                assert!(after, "only a held mapping ordering after the fault cycles");
                for s in &mut self.scopes {
                    if self.rank[s.lock] > me {
                        s.dropped = true;
                    }
                }
            }
        }
    }

    /// `fault_in` (or `fault_in_async`, polled by hand on this thread) on
    /// `lock`: it always returns `f`'s value, `f` runs holding `Add` on the
    /// lock, and afterwards every guard still holds (`check`).
    fn fault_in(&mut self, lock: usize, task: bool) {
        let me = self.rank[lock];
        let scoped = |class| {
            self.scopes
                .iter()
                .any(|s| s.lock == lock && s.class == class)
        };
        let (scoped_add, scoped_block) = (scoped(Class::Add), scoped(Class::Block));
        let any_after = self.scopes.iter().any(|s| self.rank[s.lock] >= me);
        // Block holds on the lock outside every scope: the fault waits for
        // them, cycle or not.
        let unscoped_blockers = self
            .guards
            .iter()
            .any(|h| h.lock == lock && h.class == Class::Block);
        let helper = if scoped_add || !unscoped_blockers {
            None
        } else {
            match self.release_arc_blockers_soon(lock) {
                Some(h) => Some(h),
                None => return, // would wait for this thread forever
            }
        };
        let target = &self.locks[lock];
        let holding_add = || {
            let s = target.state();
            assert!(
                s.class == Class::Add && s.holders >= 1,
                "f runs holding Add: {s:?}"
            );
            0x5eed
        };
        let value = if task {
            let mut fault = Box::pin(target.fault_in_async(|| async { holding_add() }));
            poll_by_hand(&mut fault, None).unwrap()
        } else {
            target.fault_in(holding_add)
        };
        assert_eq!(value, 0x5eed);
        if let Some(h) = helper {
            h.join().unwrap();
        }
        if !scoped_add && any_after {
            // The cycle releases every scoped hold at or after the lock. It
            // certainly runs when a scope holds the lock in Block; otherwise
            // when `try_lock` fails, which depends on the helper's timing.
            for s in &mut self.scopes {
                if self.rank[s.lock] >= me {
                    if scoped_block {
                        s.dropped = true;
                    } else if unscoped_blockers {
                        s.maybe_dropped = true;
                    }
                }
            }
        }
    }

    fn lock_with(&mut self, lock: usize, class: Class, op: &Op) {
        let locks: &'a [Arc<TwoStateLock>] = self.locks;
        let (arc, l): (&'a Arc<TwoStateLock>, &'a TwoStateLock) = (&locks[lock], &locks[lock]);
        let admits = self.admits(lock, class);
        // Lock validation (on in fuzz builds, which have debug assertions)
        // reports a blocking acquisition out of lock order that could
        // deadlock against an earlier one; keep blocking acquisitions after
        // this thread's guards in lock order, as a correct program does.
        let in_order = self
            .guards
            .iter()
            .filter(|h| matches!(h.hold, Hold::Plain(_)))
            .map(|h| h.lock)
            .chain(self.scopes.iter().filter(|s| s.recorded).map(|s| s.lock))
            .all(|held| self.rank[held] <= self.rank[lock]);
        let hold = match op {
            Op::Lock { .. } | Op::LockArc { .. } if !in_order => return,
            Op::Lock { .. } if admits => Hold::Plain(l.lock(class)),
            Op::LockNested { .. } if admits => Hold::Plain(l.lock_nested(class)),
            Op::LockArc { .. } if admits => Hold::Arc(arc.lock_arc(class)),
            Op::TryLock { .. } => match l.try_lock(class) {
                Some(g) => Hold::Plain(g),
                None => return assert!(!admits, "try_lock refused an admissible {class:?}"),
            },
            Op::TryLockArc { .. } => match arc.try_lock_arc(class) {
                Some(g) => Hold::Arc(g),
                None => return assert!(!admits, "try_lock_arc refused an admissible {class:?}"),
            },
            // Judged as `lock`, and checked by lock validation as it is:
            // only in lock order. No other thread waits, so an admissible
            // acquisition is ready at its first poll.
            Op::LockAsync { .. } if !in_order || !admits => return,
            Op::LockAsync { .. } => match poll_by_hand(&mut l.lock_async(class), Some(1)) {
                Some(g) => Hold::Async(g),
                None => panic!("lock_async pending on an admissible {class:?}"),
            },
            _ => return, // would block forever: skip
        };
        assert!(admits, "{op:?} admitted against the model");
        self.took(lock, class, hold);
    }

    /// Pops the innermost scope's model and checks its `locks_dropped`.
    fn end_scope(&mut self, locks_dropped: bool) {
        let model = self.scopes.pop().unwrap();
        if !model.maybe_dropped {
            assert_eq!(
                locks_dropped, model.dropped,
                "locks_dropped of a scope on lock {}",
                model.lock
            );
        }
        assert!(
            locks_dropped || !model.dropped,
            "a scope on lock {} was cycled",
            model.lock
        );
    }

    /// Runs ops until the end or an `EndScope` for this depth.
    fn run(&mut self, ops: &mut std::slice::Iter<'_, Op>) {
        while let Some(op) = ops.next() {
            match *op {
                Op::Lock { lock, class }
                | Op::LockNested { lock, class }
                | Op::TryLock { lock, class }
                | Op::LockArc { lock, class }
                | Op::TryLockArc { lock, class }
                | Op::LockAsync { lock, class } => {
                    if self.guards.len() < MAX_GUARDS {
                        self.lock_with(lock as usize % LOCKS, class.into(), op);
                    }
                }
                Op::Drop { guard } => {
                    if !self.guards.is_empty() {
                        let h = self.guards.swap_remove(guard as usize % self.guards.len());
                        drop(h.hold);
                        self.released(h.lock);
                    }
                }
                Op::Fault { lock } => {
                    if self.guards.len() < MAX_GUARDS {
                        self.fault(lock as usize % LOCKS);
                    }
                }
                Op::FaultIn { lock } => self.fault_in(lock as usize % LOCKS, false),
                Op::FaultInAsync { lock } => self.fault_in(lock as usize % LOCKS, true),
                Op::ScopeAsync { guard } => {
                    let task_guard = |h: &Held| !matches!(h.hold, Hold::Plain(_));
                    let Some(i) = (0..self.guards.len())
                        .map(|k| (k + guard as usize) % self.guards.len())
                        .find(|&k| task_guard(&self.guards[k]))
                    else {
                        continue;
                    };
                    let held = self.guards.swap_remove(i);
                    self.scopes.push(ScopeModel {
                        lock: held.lock,
                        class: held.class,
                        recorded: true,
                        dropped: false,
                        maybe_dropped: false,
                    });
                    let body = async { self.run(ops) };
                    let scoped = match &held.hold {
                        Hold::Arc(g) => {
                            poll_by_hand(&mut Box::pin(g.faults_disabled_async(body)), Some(1))
                        }
                        Hold::Async(g) => {
                            poll_by_hand(&mut Box::pin(g.faults_disabled_async(body)), Some(1))
                        }
                        Hold::Plain(_) => unreachable!(),
                    };
                    let scoped = scoped.expect("the scope's body has no await: ready at once");
                    self.end_scope(scoped.locks_dropped);
                    self.guards.push(held);
                }
                Op::Scope { guard } => {
                    if self.guards.is_empty() {
                        continue;
                    }
                    let held = self.guards.swap_remove(guard as usize % self.guards.len());
                    if matches!(held.hold, Hold::Async(_)) {
                        // An `AsyncGuard` has only the task scope.
                        self.guards.push(held);
                        continue;
                    }
                    self.scopes.push(ScopeModel {
                        lock: held.lock,
                        class: held.class,
                        recorded: matches!(held.hold, Hold::Plain(_)),
                        dropped: false,
                        maybe_dropped: false,
                    });
                    let scoped = match &held.hold {
                        Hold::Plain(g) => g.faults_disabled(|| self.run(ops)),
                        Hold::Arc(g) => g.faults_disabled(|| self.run(ops)),
                        Hold::Async(_) => unreachable!(),
                    };
                    self.end_scope(scoped.locks_dropped);
                    self.guards.push(held);
                }
                Op::EndScope => {
                    if !self.scopes.is_empty() {
                        return;
                    }
                }
                Op::ScopeTwice { guard } => {
                    if let Some(held) = self.guards.get(guard as usize % self.guards.len().max(1)) {
                        let twice = AssertUnwindSafe(|| match &held.hold {
                            Hold::Plain(g) => g.faults_disabled(|| g.faults_disabled(|| ())).value,
                            Hold::Arc(g) => g.faults_disabled(|| g.faults_disabled(|| ())).value,
                            Hold::Async(g) => {
                                let _first = g.faults_disabled_async(async {});
                                drop(g.faults_disabled_async(async {}));
                                two_state_lock::Scoped {
                                    value: (),
                                    locks_dropped: false,
                                }
                            }
                        });
                        EXPECTING_PANIC.with(|e| e.set(true));
                        let r = catch_unwind(twice);
                        EXPECTING_PANIC.with(|e| e.set(false));
                        assert!(r.is_err(), "two scopes for one hold must panic");
                    }
                }
            }
            self.check(op);
        }
    }
}

thread_local! {
    static EXPECTING_PANIC: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// libFuzzer's panic hook aborts; let the one documented misuse panic unwind.
fn allow_expected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let fuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !EXPECTING_PANIC.with(|e| e.get()) {
                fuzzer_hook(info);
            }
        }));
    });
}

fuzz_target!(|ops: Vec<Op>| {
    allow_expected_panics();
    let locks: Vec<Arc<TwoStateLock>> = (0..LOCKS).map(|_| Arc::new(TwoStateLock::new())).collect();
    let mut by_address: Vec<usize> = (0..LOCKS).collect();
    by_address.sort_by_key(|&i| Arc::as_ptr(&locks[i]) as usize);
    let mut rank = [0; LOCKS];
    for (r, &i) in by_address.iter().enumerate() {
        rank[i] = r;
    }
    let mut world = World {
        locks: &locks,
        rank,
        model: [Model::default(); LOCKS],
        guards: Vec::new(),
        scopes: Vec::new(),
    };
    world.run(&mut ops.iter());
    let guards = std::mem::take(&mut world.guards);
    drop(guards);
    for lock in &locks {
        assert_eq!(lock.state().holders, 0);
    }
});
