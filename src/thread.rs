//! This thread's state: how many holds it has, and its held mappings (the
//! locks of the active `faults_disabled` scopes). The count decides whether
//! an acquisition is top-level or nested; the held mappings are what a fault
//! cycle may release and must re-take.
//!
//! The scopes form a linked list, innermost first, so nesting costs no
//! allocation. A blocking scope lives on the stack frame of its
//! `faults_disabled` call; a task's scope lives in its pinned
//! `faults_disabled_async` future and is linked in only while that future is
//! polled or dropped (`crate::task_scope`), on whichever thread does it.
//! This module knows locks only as `RawLock`s, ordered by address.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::Waker;

use crate::lockset::{LockSet, order};
use crate::raw::{Admission, Class, RawLock};
use crate::sync::thread_local_const;
use crate::validate::{self, Record, Site};

struct ThreadState {
    /// Holds that make this thread's acquisitions nested: every lock held
    /// through a `Guard` or `RangeGuard` of this thread, and the live holds
    /// of each linked scope whose guard does not count them itself (an
    /// `ArcGuard`'s, a task's); less what a fault cycle has released.
    held: Cell<usize>,
    /// The innermost linked scope, or null. (Lifetime erased: see
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
    /// What the closure (or future) returned.
    pub value: R,
    /// The scope's hold was released and re-taken while the closure ran (a
    /// fault cycled it): pages may have been added to the mapping meanwhile.
    pub locks_dropped: bool,
}

/// Who counts a scope's holds in `held`, and who records them for lock
/// validation.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    /// A `Guard` or `RangeGuard`: the guard counts and records its holds.
    Guard,
    /// An `ArcGuard` in a blocking scope: the scope counts them; not
    /// recorded (the hold may be released on another thread).
    Arc,
    /// A task's scope: counted and recorded each time it is linked in, on
    /// the thread that polls it, at the site of its `faults_disabled_async`.
    Task(Site),
}

/// The holds a `faults_disabled` scope makes held mappings: `locks`, held in
/// `class` by the guard at `owner`, which lock validation records as
/// `record` (for `Kind::Guard`).
#[derive(Clone, Copy)]
pub(crate) struct Holds<'a> {
    pub(crate) locks: LockSet<'a>,
    pub(crate) class: Class,
    pub(crate) kind: Kind,
    pub(crate) owner: *const (),
    pub(crate) record: Record,
}

/// One scope: on the stack frame of a `faults_disabled` call, or in a
/// task's `faults_disabled_async` future.
pub(crate) struct Scope<'a> {
    locks: LockSet<'a>,
    class: Class,
    kind: Kind,
    /// The guard the holds belong to, to refuse two scopes for one guard.
    owner: *const (),
    /// Lock validation's record of the holds while linked in.
    record: Cell<Record>,
    /// The next scope out while linked in.
    outer: Cell<*const Scope<'static>>,
    /// Positions `released..` are released by fault cycles in progress
    /// (always a suffix: a cycle releases everything at or after its lock,
    /// and cycles on one scope end in the reverse order they began).
    released: Cell<usize>,
    /// Released and re-taken at least once: reported as `locks_dropped`.
    dropped: Cell<bool>,
    /// The async fault in progress in this scope (0: none): the task's
    /// other faults wait for it (`fault_turn`).
    busy: Cell<u64>,
    /// For the scope of an async fault's own `Add` hold: that fault (0:
    /// none). Faults polled inside it are nested in that fault.
    fault: u64,
    /// The task's faults waiting for their turn in this scope, first come
    /// first served: (fault, the waker of its latest poll).
    waiters: RefCell<VecDeque<(u64, Waker)>>,
}

impl<'a> Scope<'a> {
    /// A scope of `holds`, not linked in; `fault`: the async fault whose
    /// own hold these are (0: none).
    pub(crate) fn new(holds: Holds<'a>, fault: u64) -> Self {
        Scope {
            locks: holds.locks,
            class: holds.class,
            kind: holds.kind,
            owner: holds.owner,
            record: Cell::new(holds.record),
            outer: Cell::new(ptr::null()),
            released: Cell::new(holds.locks.len()),
            dropped: Cell::new(false),
            busy: Cell::new(0),
            fault,
            waiters: RefCell::new(VecDeque::new()),
        }
    }

    /// A fault cycle released and re-took some of these holds.
    pub(crate) fn locks_dropped(&self) -> bool {
        self.dropped.get()
    }

    /// Whether a cycle in progress has some of these holds released.
    pub(crate) fn cycling(&self) -> bool {
        self.released.get() < self.locks.len()
    }
}

/// The linked scopes, innermost first.
///
/// The lifetimes are erased: a scope and what it borrows outlive the time it
/// is linked in, so callers use the references only while they run.
fn scopes(t: &ThreadState) -> impl Iterator<Item = &Scope<'static>> {
    let mut next = t.innermost.get();
    std::iter::from_fn(move || {
        // SAFETY: every pointer in the list is to a `Scope` that a `Linked`
        // guard on this thread has linked in and will unlink before the
        // scope moves or goes away (by return or by unwind): on the frame of
        // an active `with_scope` call, or in a pinned task scope future
        // being polled or dropped on this thread.
        let scope = unsafe { next.as_ref() }?;
        next = scope.outer.get();
        Some(scope)
    })
}

/// Links a scope in as this thread's innermost, until dropped.
pub(crate) struct Linked<'s> {
    scope: &'s Scope<'s>,
}

/// Links `scope` in as this thread's innermost held mappings until the
/// returned guard is dropped. The scope must not move while linked (it is on
/// the caller's frame, or pinned).
///
/// Panics if its guard already has a linked scope on this thread.
pub(crate) fn link<'s>(scope: &'s Scope<'s>) -> Linked<'s> {
    THREAD.with(|t| {
        if scopes(t).any(|s| s.owner == scope.owner) {
            panic!("two-state-lock: faults_disabled on a guard whose scope is already active");
        }
        scope.outer.set(t.innermost.get());
        // Lifetime erased: the scope is unlinked before it moves or goes.
        t.innermost
            .set((scope as *const Scope<'_>).cast::<Scope<'static>>());
        let live = scope.released.get();
        if !matches!(scope.kind, Kind::Guard) {
            t.held.set(t.held.get() + live);
        }
        if let Kind::Task(site) = scope.kind {
            let record = validate::acquired(scope.locks, scope.class, site);
            if live < scope.locks.len() {
                validate::cycle_released(record, live);
            }
            scope.record.set(record);
        }
    });
    Linked { scope }
}

impl Drop for Linked<'_> {
    fn drop(&mut self) {
        let scope = self.scope;
        THREAD.with(|t| {
            debug_assert!(ptr::eq(t.innermost.get().cast(), scope));
            t.innermost.set(scope.outer.get());
            scope.outer.set(ptr::null());
            if !matches!(scope.kind, Kind::Guard) {
                t.held.set(t.held.get() - scope.released.get());
            }
            if let Kind::Task(_) = scope.kind {
                validate::released(scope.record.replace(Record::NONE));
            }
        });
    }
}

/// The scope has ended: no cycle may still have its holds released (a
/// guard would then release a hold it does not own), nor an async fault
/// still be in progress in it.
pub(crate) fn scope_ended(scope: &Scope<'_>) {
    if scope.cycling() || scope.busy.get() != 0 {
        abort("a fault_in_async future that began in a faults_disabled scope outlived the scope");
    }
}

/// Runs `f` with `holds` as this thread's innermost held mappings.
///
/// Panics if their guard already has an active scope on this thread.
pub(crate) fn with_scope<R>(holds: Holds<'_>, f: impl FnOnce() -> R) -> Scoped<R> {
    let scope = Scope::new(holds, 0);
    let linked = link(&scope);
    let value = f();
    drop(linked);
    scope_ended(&scope);
    Scoped {
        value,
        locks_dropped: scope.dropped.get(),
    }
}

/// What this thread's held mappings (the holds of linked scopes that no
/// cycle has released) are, against one lock `L`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HeldMappings {
    /// `L` itself is a held mapping, in this class.
    pub(crate) holds_it: Option<Class>,
    /// Some held mapping is `L` or orders after it.
    pub(crate) any_at_or_after: bool,
    /// Some scope is linked in.
    pub(crate) scoped: bool,
    /// Another async fault of the task is in progress in a linked scope,
    /// one this call is not nested in (a `join!` sibling's).
    pub(crate) sibling_fault: bool,
}

/// This thread's held mappings against `lock`.
pub(crate) fn held_mappings(lock: &RawLock) -> HeldMappings {
    let me = order(lock);
    THREAD.with(|t| {
        let mut held = HeldMappings {
            holds_it: None,
            any_at_or_after: false,
            scoped: false,
            sibling_fault: false,
        };
        let mut inside = FaultsInside::default();
        for s in scopes(t) {
            held.scoped = true;
            held.sibling_fault |= inside.blocked_by(s);
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

/// One scope's holds that a cycle released: positions `from..live` of the
/// scope at `scope` (its address: it is looked up among the linked scopes
/// whenever it is used, so a record never points at a scope not linked in).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Released {
    scope: usize,
    from: usize,
    live: usize,
}

/// The first half of a fault cycle: releases every held mapping at or after
/// `lock` (each scope's highest first, innermost scope first), marks their
/// scopes `locks_dropped`, and returns what it released, which the caller
/// must re-take (`retake`, or `retake_one` for each of `retake_order`).
pub(crate) fn release_from(lock: &RawLock) -> Vec<Released> {
    let floor = order(lock);
    THREAD.with(|t| {
        // A vector on the slow path: a cycle waits for a lock anyway.
        let mut released = Vec::new();
        for s in scopes(t) {
            let live = s.released.get();
            let from = s.locks.first_at_or_after(floor);
            if from < live {
                s.locks.unlock(s.class, from, live);
                validate::cycle_released(s.record.get(), from);
                t.held.set(t.held.get() - (live - from));
                s.released.set(from);
                s.dropped.set(true);
                released.push(Released {
                    scope: s as *const Scope<'_> as usize,
                    from,
                    live,
                });
            }
        }
        released
    })
}

/// The holds `released` names, as (scope, position) in the order a cycle
/// re-takes them: address order (within a scope, ascending positions are
/// ascending addresses).
pub(crate) fn retake_order(released: &[Released]) -> Vec<(usize, usize)> {
    let mut holds: Vec<(usize, usize, usize)> = THREAD.with(|t| {
        released
            .iter()
            .flat_map(|r| {
                let s = find(t, r.scope);
                (r.from..r.live).map(move |p| (order(s.locks.get(p)), r.scope, p))
            })
            .collect()
    });
    holds.sort_by_key(|&(o, _, p)| (o, p));
    holds.into_iter().map(|(_, s, p)| (s, p)).collect()
}

/// The linked scope at address `scope`; aborts if it is not linked in on
/// this thread (a cycle's record used outside the scope it released: its
/// guard may be gone, and cannot be made whole).
fn find(t: &ThreadState, scope: usize) -> &Scope<'static> {
    match scopes(t).find(|s| *s as *const Scope<'_> as usize == scope) {
        Some(s) => s,
        None => abort("a fault_in_async future that cycled a scope's holds ran outside that scope"),
    }
}

/// Calls `f` with the lock and class of the released hold `position` of
/// the linked scope `scope` (the hold is not taken by this).
pub(crate) fn with_released<R>(
    scope: usize,
    position: usize,
    f: impl FnOnce(&RawLock, Class) -> R,
) -> R {
    let (lock, class) = THREAD.with(|t| {
        let s = find(t, scope);
        // The cycles on one scope re-take in the reverse order they released.
        debug_assert_eq!(s.released.get(), position);
        (ptr::from_ref(s.locks.get(position)), s.class)
    });
    // SAFETY: the scope is linked in on this thread, so the guard that
    // borrows the lock is alive for at least as long as this call.
    f(unsafe { &*lock }, class)
}

/// The released hold `position` of the linked scope `scope` has been taken
/// again (by the caller, judged by what the thread holds now).
pub(crate) fn retaken(scope: usize, position: usize) {
    THREAD.with(|t| {
        let s = find(t, scope);
        debug_assert_eq!(s.released.get(), position);
        validate::cycle_retaken(s.record.get(), position);
        t.held.set(t.held.get() + 1);
        s.released.set(position + 1);
    });
}

/// Re-takes the holds `order` names, blocking, in that (address) order. A panic here would leave a guard that releases a hold it does not
/// own: the process aborts instead.
pub(crate) fn retake_blocking(order: &[(usize, usize)]) {
    let bomb = AbortOnUnwind;
    for &(scope, position) in order {
        with_released(scope, position, |lock, class| lock.lock(class, admission()));
        retaken(scope, position);
    }
    std::mem::forget(bomb);
}

/// The blocking fault cycle: `release_from(lock)`, runs `wait` (which takes
/// what it needs of `lock` and releases it), then re-takes exactly the holds
/// it released, in address order, judged by what the thread holds then. The
/// re-take also runs when `wait` unwinds, before the unwind leaves this
/// function: a guard must own its hold whenever user code runs. Cycles nest
/// (a fault inside `wait`, also in a scope opened there): each re-takes only
/// what it released.
pub(crate) fn cycle<R>(lock: &RawLock, wait: impl FnOnce() -> R) -> R {
    /// Re-takes the holds this cycle released when dropped.
    struct Retake(Vec<(usize, usize)>);
    impl Drop for Retake {
        fn drop(&mut self) {
            retake_blocking(&self.0);
        }
    }
    let released = release_from(lock);
    let _retake = Retake(retake_order(&released));
    wait()
}

/// A number for an async fault, unique in the process (0 is "none"): a
/// block of 2^32 per thread, so that faults on many threads share no
/// counter.
pub(crate) fn new_fault() -> u64 {
    static NEXT_BLOCK: AtomicU64 = AtomicU64::new(1);
    std::thread_local! {
        static NEXT: Cell<u64> = const { Cell::new(0) };
    }
    NEXT.with(|next| {
        let mut id = next.get();
        if id & u64::from(u32::MAX) == 0 {
            // Relaxed: only uniqueness matters, which the RMW gives.
            id = NEXT_BLOCK.fetch_add(1, Relaxed) << 32 | 1;
        }
        next.set(id + 1);
        id
    })
}

/// The faults whose work a walk of the linked scopes (innermost first) is
/// inside of: a scope busy with one of them does not block.
#[derive(Default)]
struct FaultsInside(Vec<u64>);

impl FaultsInside {
    /// Whether `s` has a fault in progress that the walk so far is not
    /// inside of; then notes the fault whose own hold `s` is, if any.
    fn blocked_by(&mut self, s: &Scope<'_>) -> bool {
        let busy = s.busy.get();
        let blocked = busy != 0 && !self.0.contains(&busy);
        if s.fault != 0 {
            self.0.push(s.fault);
        }
        blocked
    }
}

/// Why an async fault may not begin yet.
pub(crate) enum Turn {
    /// It may: the linked scopes that had no fault in progress now have
    /// this one (then `true`, and the caller ends it with `end_fault`).
    Go(bool),
    /// Another fault of this task is in progress in a linked scope (a
    /// sibling under `join!` or `select!`, not one this fault is nested
    /// in), or one that asked first waits: the waker is woken when it ends.
    Wait,
}

/// An async fault `fault` asks to begin in the linked scopes. A task's
/// faults run one at a time, as one kernel task takes one fault at a time,
/// and in the order they asked: so the cycles on a scope end in the reverse
/// order they began, every re-take is in address order, and a sibling that
/// faults in a loop cannot keep the others out. A fault nested in
/// another's work (polled inside the scope of that fault's own hold) goes
/// on.
pub(crate) fn begin_fault(fault: u64, waker: &Waker) -> Turn {
    THREAD.with(|t| {
        let mut inside = FaultsInside::default();
        for s in scopes(t) {
            let first_waiting = s.waiters.borrow().front().map(|&(f, _)| f);
            let free = s.busy.get() == 0;
            if inside.blocked_by(s) || (free && first_waiting.is_some_and(|f| f != fault)) {
                let mut waiters = s.waiters.borrow_mut();
                match waiters.iter_mut().find(|(f, _)| *f == fault) {
                    Some((_, w)) => w.clone_from(waker),
                    None => waiters.push_back((fault, waker.clone())),
                }
                return Turn::Wait;
            }
        }
        let mut marked = false;
        for s in scopes(t) {
            if s.busy.get() == 0 {
                s.busy.set(fault);
                marked = true;
            }
            s.waiters.borrow_mut().retain(|&(f, _)| f != fault);
        }
        Turn::Go(marked)
    })
}

/// The async fault `fault` has ended (completed, or dropped): the linked
/// scopes it had are free again, and the faults waiting for them are woken
/// (the first in line takes the turn; the others wait on).
pub(crate) fn end_fault(fault: u64) {
    let woken = THREAD.with(|t| {
        let mut woken = Vec::new();
        let mut found = false;
        for s in scopes(t) {
            if s.busy.get() == fault {
                s.busy.set(0);
                found = true;
                woken.extend(s.waiters.borrow().iter().map(|(_, w)| w.clone()));
            }
        }
        if !found {
            abort("a fault_in_async future ended outside the scope it began in");
        }
        woken
    });
    // Outside the thread-local: a waker may poll inline.
    woken.into_iter().for_each(Waker::wake);
}

/// The async fault `fault` stopped waiting for its turn (its future was
/// dropped): it leaves the lines of the linked scopes, and the faults that
/// waited behind it are woken.
pub(crate) fn abandon_turn(fault: u64) {
    let woken = THREAD.with(|t| {
        let mut woken = Vec::new();
        for s in scopes(t) {
            let mut waiters = s.waiters.borrow_mut();
            if waiters.iter().any(|&(f, _)| f == fault) {
                waiters.retain(|&(f, _)| f != fault);
                woken.extend(waiters.iter().map(|(_, w)| w.clone()));
            }
        }
        woken
    });
    woken.into_iter().for_each(Waker::wake);
}

#[cold]
fn abort(why: &str) -> ! {
    eprintln!("two-state-lock: {why}; aborting (a guard would not own its hold)");
    std::process::abort();
}

struct AbortOnUnwind;

impl Drop for AbortOnUnwind {
    fn drop(&mut self) {
        eprintln!("two-state-lock: panic while re-taking a hold after a fault cycle; aborting");
        std::process::abort();
    }
}

/// This thread's hold count and the number of linked scopes, for tests.
#[cfg(all(test, not(loom)))]
pub(crate) fn counts_for_test() -> (usize, usize) {
    THREAD.with(|t| (t.held.get(), scopes(t).count()))
}
