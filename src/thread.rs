//! This thread's state: how many holds it has, and its held mappings (the
//! locks of the active `faults_disabled` scopes). The count decides whether
//! an acquisition is top-level or nested; the held mappings are what a fault
//! cycle may release and must re-take.
//!
//! The scopes form a linked list through the stack frames of the active
//! `faults_disabled` calls, innermost first, so nesting costs no allocation.
//! This module knows locks only as `RawLock`s, ordered by address.

use std::cell::Cell;
use std::ptr;

use crate::lockset::{LockSet, order};
use crate::raw::{Admission, Class, RawLock};
use crate::sync::thread_local_const;
use crate::validate::{self, Record};

struct ThreadState {
    /// Holds that make this thread's acquisitions nested: every lock held
    /// through a `Guard` or `RangeGuard` of this thread, and the hold of each
    /// active `ArcGuard` scope; less what a fault cycle has released.
    held: Cell<usize>,
    /// The innermost active scope, or null. (Lifetime erased: see
    /// `scopes`.)
    innermost: Cell<*const Scope<'static>>,
}

thread_local_const! {
    static THREAD: ThreadState = ThreadState {
        held: Cell::new(0),
        innermost: Cell::new(ptr::null()),
    };
}

/// Top-level for a thread that holds nothing; else nested.
#[inline]
pub(crate) fn admission() -> Admission {
    THREAD.with(|t| {
        if t.held.get() == 0 {
            Admission::TopLevel
        } else {
            Admission::Nested
        }
    })
}

/// This thread now holds one more lock.
#[inline]
pub(crate) fn hold_taken() {
    THREAD.with(|t| t.held.set(t.held.get() + 1));
}

/// This thread released `n` of its holds.
#[inline]
pub(crate) fn holds_released(n: usize) {
    THREAD.with(|t| t.held.set(t.held.get() - n));
}

/// The result of a [`faults_disabled`](crate::Guard::faults_disabled) scope.
///
/// ```
/// use two_state_lock::{Class, Scoped, TwoStateLock};
/// let lock = TwoStateLock::new();
/// let g = lock.lock(Class::Block);
/// let Scoped { value, locks_dropped } = g.faults_disabled(|| 42);
/// assert_eq!((value, locks_dropped), (42, false));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "if `locks_dropped` is true, the caller's invalidation may be stale"]
pub struct Scoped<R> {
    /// What the closure returned.
    pub value: R,
    /// The scope's hold was released and re-taken while the closure ran (a
    /// fault cycled it): pages may have been added to the mapping meanwhile.
    pub locks_dropped: bool,
}

/// One active `faults_disabled` scope, on the stack frame of its call.
struct Scope<'a> {
    locks: LockSet<'a>,
    class: Class,
    /// The holds are counted in `held` by their guard (`Guard`,
    /// `RangeGuard`); an `ArcGuard`'s are counted by its scope.
    counted_by_guard: bool,
    /// The guard the holds belong to, to refuse two scopes for one guard.
    owner: *const (),
    /// Lock validation's record of the guard's holds.
    record: Record,
    outer: *const Scope<'static>,
    /// Positions `released..` are released by fault cycles in progress
    /// (always a suffix: a cycle releases everything at or after its lock).
    released: Cell<usize>,
    /// Released and re-taken at least once: reported as `locks_dropped`.
    dropped: Cell<bool>,
}

/// The active scopes, innermost first.
///
/// The lifetimes are erased: a scope and what it borrows live as long as its
/// `with_scope` call, so callers use the references only while they run.
fn scopes(t: &ThreadState) -> impl Iterator<Item = &Scope<'static>> {
    let mut next = t.innermost.get();
    std::iter::from_fn(move || {
        // SAFETY: every pointer in the list is to a `Scope` on the stack
        // frame of an active `with_scope` call on this thread, which unlinks
        // it before the frame is left, by return or by unwind.
        let scope = unsafe { next.as_ref() }?;
        next = scope.outer;
        Some(scope)
    })
}

/// The holds a `faults_disabled` scope makes held mappings: `locks`, held in
/// `class` by the guard at `owner`, which lock validation records as
/// `record`; `counted_by_guard`: the guard counts them in this thread's
/// holds (a `Guard` or `RangeGuard`), else the scope does (an `ArcGuard`).
#[derive(Clone, Copy)]
pub(crate) struct Holds<'a> {
    pub(crate) locks: LockSet<'a>,
    pub(crate) class: Class,
    pub(crate) counted_by_guard: bool,
    pub(crate) owner: *const (),
    pub(crate) record: Record,
}

/// Runs `f` with `holds` as this thread's innermost held mappings.
///
/// Panics if their guard already has an active scope on this thread.
pub(crate) fn with_scope<R>(holds: Holds<'_>, f: impl FnOnce() -> R) -> Scoped<R> {
    let Holds {
        locks,
        class,
        counted_by_guard,
        owner,
        record,
    } = holds;
    THREAD.with(|t| {
        if scopes(t).any(|s| s.owner == owner) {
            panic!("two-state-lock: faults_disabled on a guard whose scope is already active");
        }
        let scope = Scope {
            locks,
            class,
            counted_by_guard,
            owner,
            record,
            outer: t.innermost.get(),
            released: Cell::new(locks.len()),
            dropped: Cell::new(false),
        };
        /// Unlinks the scope when `f` returns or unwinds.
        struct Unlink<'t, 's> {
            t: &'t ThreadState,
            scope: &'s Scope<'s>,
        }
        impl Drop for Unlink<'_, '_> {
            fn drop(&mut self) {
                self.t.innermost.set(self.scope.outer);
                if !self.scope.counted_by_guard {
                    self.t.held.set(self.t.held.get() - self.scope.locks.len());
                }
                // Any cycle inside `f` re-took its holds before it returned.
                debug_assert_eq!(self.scope.released.get(), self.scope.locks.len());
            }
        }
        // Lifetime erased: the scope is unlinked before this frame is left.
        t.innermost.set((&raw const scope).cast::<Scope<'static>>());
        if !counted_by_guard {
            t.held.set(t.held.get() + locks.len());
        }
        let unlink = Unlink { t, scope: &scope };
        let value = f();
        drop(unlink);
        Scoped {
            value,
            locks_dropped: scope.dropped.get(),
        }
    })
}

/// What this thread's held mappings (the holds of active scopes that no
/// cycle has released) are, against one lock `L`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HeldMappings {
    /// `L` itself is a held mapping, in this class.
    pub(crate) holds_it: Option<Class>,
    /// Some held mapping is `L` or orders after it.
    pub(crate) any_at_or_after: bool,
}

/// This thread's held mappings against `lock`.
pub(crate) fn held_mappings(lock: &RawLock) -> HeldMappings {
    let me = order(lock);
    THREAD.with(|t| {
        let mut held = HeldMappings {
            holds_it: None,
            any_at_or_after: false,
        };
        for s in scopes(t) {
            let live = s.released.get();
            if live > 0 && order(s.locks.get(live - 1)) >= me {
                held.any_at_or_after = true;
                let p = s.locks.first_at_or_after(me);
                if p < live && order(s.locks.get(p)) == me {
                    held.holds_it = held.holds_it.or(Some(s.class));
                }
            }
        }
        held
    })
}

/// The fault cycle: releases every held mapping at or after `lock` (each
/// scope's highest first, innermost scope first) and marks their scopes
/// `locks_dropped`, runs `wait` (which takes what it needs of `lock` and
/// releases it), then re-takes exactly the holds it released, in address
/// order, judged by what the thread holds then. The re-take also runs when
/// `wait` unwinds, before the unwind leaves this function: a guard must own
/// its hold whenever user code runs. Cycles nest (a fault inside `wait`,
/// also in a scope opened there): each re-takes only what it released.
pub(crate) fn cycle<R>(lock: &RawLock, wait: impl FnOnce() -> R) -> R {
    let floor = order(lock);
    THREAD.with(|t| {
        // Per scope touched: the positions released, `from..live`. A
        // vector on the slow path: a cycle waits for a lock anyway.
        let mut released = Vec::new();
        for s in scopes(t) {
            let live = s.released.get();
            let from = s.locks.first_at_or_after(floor);
            if from < live {
                s.locks.unlock(s.class, from, live);
                validate::cycle_released(s.record, from);
                t.held.set(t.held.get() - (live - from));
                s.released.set(from);
                s.dropped.set(true);
                released.push((s, from, live));
            }
        }
        /// Re-takes the holds this cycle released when dropped.
        struct Retake<'t> {
            t: &'t ThreadState,
            released: Vec<(&'t Scope<'static>, usize, usize)>,
        }
        impl Drop for Retake<'_> {
            fn drop(&mut self) {
                // A panic here would leave a guard that releases a hold it
                // does not own: abort instead.
                let bomb = AbortOnUnwind;
                retake(self.t, &self.released);
                std::mem::forget(bomb);
            }
        }
        let _retake = Retake { t, released };
        wait()
    })
}

/// Re-takes the positions `from..live` of each scope, all in address order
/// (within a scope, ascending positions are ascending addresses).
fn retake(t: &ThreadState, released: &[(&Scope<'static>, usize, usize)]) {
    let mut holds: Vec<(usize, &Scope<'static>, usize)> = released
        .iter()
        .flat_map(|&(s, from, live)| (from..live).map(move |p| (order(s.locks.get(p)), s, p)))
        .collect();
    holds.sort_by_key(|&(o, _, p)| (o, p));
    for (_, s, position) in holds {
        // Any cycle inside this one re-took its own holds first.
        debug_assert_eq!(s.released.get(), position);
        s.locks.get(position).lock(s.class, admission());
        validate::cycle_retaken(s.record, position);
        t.held.set(t.held.get() + 1);
        s.released.set(position + 1);
    }
}

struct AbortOnUnwind;

impl Drop for AbortOnUnwind {
    fn drop(&mut self) {
        eprintln!("two-state-lock: panic while re-taking a hold after a fault cycle; aborting");
        std::process::abort();
    }
}

/// This thread's hold count and the number of active scopes, for tests.
#[cfg(all(test, not(loom)))]
pub(crate) fn counts_for_test() -> (usize, usize) {
    THREAD.with(|t| (t.held.get(), scopes(t).count()))
}
