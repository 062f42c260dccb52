//! The raw lock: one state word and two wake words. The only place that
//! touches the lock's atomics. Threads sleep here; tasks wait through the
//! same [`Waiter`] steps in `crate::future`, parked in `crate::task_wait`.
//!
//! `RawLock` knows nothing about threads: callers say whether an acquisition
//! is top-level or nested (see `crate::thread` for the thread-local part) and
//! release exactly what they took. Guards in `crate::guard` make that safe.

use std::time::Instant;

use crate::sync::{AtomicU64, CasBackoff, Ordering, Spin, WakeWord, const_fn_unless_loom, peek};
use crate::task_wait;

/// The class of a hold. Holders of one class share the lock; the two classes
/// exclude each other.
///
/// ```
/// use two_state_lock::Class;
/// assert_eq!(Class::Add.other(), Class::Block);
/// assert_eq!(Class::Block.other(), Class::Add);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// Code that adds pages to a mapping's cache: buffered reads and writes,
    /// page faults, readahead.
    Add,
    /// Code that must keep pages from being added: direct I/O, truncate,
    /// hole punch, fallocate.
    Block,
}

impl Class {
    /// The class this one excludes.
    ///
    /// ```
    /// use two_state_lock::Class;
    /// assert_eq!(Class::Add.other().other(), Class::Add);
    /// ```
    #[inline]
    #[must_use]
    pub const fn other(self) -> Class {
        match self {
            Class::Add => Class::Block,
            Class::Block => Class::Add,
        }
    }

    /// This class in the `CLASS` bit.
    #[inline]
    const fn bit(self) -> u64 {
        match self {
            Class::Add => 0,
            Class::Block => CLASS_BLOCK,
        }
    }

    /// Where this class's waiter count sits in the state word.
    #[inline]
    const fn waiter_shift(self) -> u32 {
        match self {
            Class::Add => ADD_WAITERS_SHIFT,
            Class::Block => BLOCK_WAITERS_SHIFT,
        }
    }

    /// One waiter of this class in its waiter count.
    #[inline]
    const fn waiter(self) -> u64 {
        1 << self.waiter_shift()
    }

    #[inline]
    const fn index(self) -> usize {
        self as usize
    }
}

// The state word (64 bits).
//
// Invariant: a class's waiter count is the number of waiters of that class
// (threads inside `lock_slow`, tasks inside an acquisition future: both are
// a `Waiter`) that have signed up to wait and not yet entered. A waiter
// counts itself once, when it first signs up, and uncounts itself in the
// same compare-and-swap that lets it in, so the count is never stale: while
// it is non-zero, a waiter of that class is still coming. (A single
// WANT bit per class cannot say that: a thread that set it and was then let
// in by an earlier hand-off's late wake-up leaves it set with nobody behind
// it, and the lock is eventually handed to a class that never arrives.)
//
// "Count 0, CLASS = X, HANDED" is a pending hand-off to X (X waiters > 0):
// only X (top-level or nested) and nested acquisitions of Y get in. The
// first to enter clears HANDED.
//
// "Count 0, CLASS = X, not HANDED, Y waiters > 0" is a release caught
// between its `fetch_sub` and the hand-off that follows it: the turn is
// already Y's. Top-level X arrivals wait, counted X waiters included, and
// so do X waiters woken by the hand-off that began the phase now ending
// (they were late for it); Y (unless X waits too) and nested X get in. The
// releaser then passes the turn to Y and wakes it, or, if Y got in first,
// just wakes it; if a nested X got in, that X's release hands off.
//
// "Count 0, CLASS = X, OWED, Y waiters > 0": nothing else leaves the word
// above behind, because the first Y to sign up on a free lock whose turn
// is X's, not handed, while X waits (no releaser saw a Y, so none is
// coming: the X waiters are late ones of a phase that has drained, already
// woken by the hand-off that began it) sets OWED in its sign-up, waking
// nobody. The turn is owed to the X waiters already counted: they,
// nested acquisitions and nobody else get in, so a top-level X arriving
// now waits behind Y as it should. The first to enter clears OWED; X's
// release then hands off to Y.
//
// Every way out after sign-up uncounts the waiter: entering (in the
// entering CAS), and unwinding, a timed wait giving up or a future dropped
// (`RawLock::leave`). A count left behind by a waiter that is gone would be
// a hand-off pending forever to a class that never comes.

/// Holders (low 29 bits). While 0, the lock is free.
const COUNT_MASK: u64 = (1 << 29) - 1;
/// The class holding, or whose turn it is while the count is 0. Set = Block.
const CLASS_BLOCK: u64 = 1 << 29;
/// While the count is 0: a release handed the turn to CLASS, whose waiters
/// are coming.
const HANDED: u64 = 1 << 30;
/// While the count is 0: the turn is CLASS's, owed to its counted waiters,
/// which a hand-off woke but which came only after their phase drained.
const OWED: u64 = 1 << 31;
/// `Add` waiters (threads and tasks) signed up to wait (16 bits).
const ADD_WAITERS_SHIFT: u32 = 32;
/// `Block` waiters (threads and tasks) signed up to wait (16 bits).
const BLOCK_WAITERS_SHIFT: u32 = 48;
const WAITER_MASK: u64 = 0xffff;
const WAITERS: u64 = u64::MAX << ADD_WAITERS_SHIFT;

/// The most holders one lock can count. One more panics.
#[cfg(not(loom))]
pub const MAX_HOLDERS: u32 = COUNT_MASK as u32;
/// The most holders one lock can count. One more panics. (3 under loom, so
/// that models can reach the limit.)
#[cfg(loom)]
pub const MAX_HOLDERS: u32 = 3;
/// The most threads and tasks that can wait for one class of one lock at
/// once. One more panics, leaving the lock unchanged.
pub const MAX_WAITERS: u32 = WAITER_MASK as u32;

#[inline]
fn holders(state: u64) -> u32 {
    (state & COUNT_MASK) as u32
}

#[inline]
fn class_of(state: u64) -> Class {
    if state & CLASS_BLOCK == 0 {
        Class::Add
    } else {
        Class::Block
    }
}

#[inline]
fn waiters(state: u64, class: Class) -> u32 {
    ((state >> class.waiter_shift()) & WAITER_MASK) as u32
}

/// How an acquisition is judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// The thread holds nothing of this crate: it queues behind waiters of
    /// the other class (phase fairness).
    TopLevel,
    /// The thread already holds something: it waits only while the other
    /// class holds, never behind a waiter.
    Nested,
    /// The thread slept and was woken by a hand-off to its class: it joins
    /// the phase it was handed, even though the other class now waits.
    HandedOff,
}

#[inline]
fn is_lockable_top_level(state: u64, class: Class) -> bool {
    let other_waits = waiters(state, class.other()) != 0;
    if holders(state) == 0 {
        // Free: take it unless the turn is the other class's, which it is
        // when the class bit says so, or when the other class waits and the
        // turn was not handed to us (a release mid-hand-off).
        if class_of(state) == class {
            state & HANDED != 0 || !other_waits
        } else {
            !other_waits
        }
    } else {
        // Join the phase unless the other class waits for its turn.
        class_of(state) == class && !other_waits
    }
}

#[inline]
fn is_lockable_nested(state: u64, class: Class) -> bool {
    holders(state) == 0 || class_of(state) == class
}

#[inline]
fn is_lockable(state: u64, class: Class, admission: Admission) -> bool {
    match admission {
        Admission::TopLevel => is_lockable_top_level(state, class),
        Admission::Nested => is_lockable_nested(state, class),
        // It joins the phase it was handed while that phase lasts, or the
        // turn owed to it; else it waits its turn like a top-level arrival.
        Admission::HandedOff => {
            (class_of(state) == class && (holders(state) > 0 || state & OWED != 0))
                || is_lockable_top_level(state, class)
        }
    }
}

/// `OWED`, if the first waiter of `class` signing up from `state` must set
/// it, else 0: the lock is free, it is the other class's turn and the
/// other class waits, but no hand-off is pending and no releaser is on its
/// way (none saw a waiter of `class`, there was none). The sign-up makes
/// the turn the other class's waiters' explicitly; without it, those late
/// waiters could not tell this state from a release gap and would wait
/// for a hand-off nobody makes. (`HANDED` would do that too, but would
/// also let in top-level arrivals of the other class, ahead of this one.)
#[inline]
fn owe_other(state: u64, class: Class) -> u64 {
    let other = class.other();
    if holders(state) == 0
        && state & (HANDED | OWED) == 0
        && class_of(state) == other
        && waiters(state, other) != 0
        && waiters(state, class) == 0
    {
        OWED
    } else {
        0
    }
}

/// The state after one more holder of `class` enters `state`; `counted`:
/// the entering thread is one of the class's waiters, and uncounts itself.
///
/// Panics, before anything changes, when the count is full.
#[inline]
fn entered(state: u64, class: Class, counted: bool) -> u64 {
    if holders(state) == MAX_HOLDERS {
        too_many_holders();
    }
    let next = if holders(state) > 0 {
        state + 1
    } else {
        // Take the turn: our class, waiter counts unchanged, not HANDED or
        // OWED.
        (state & WAITERS) | class.bit() | 1
    };
    if counted { next - class.waiter() } else { next }
}

/// The state after one more holder of `class` enters `state` by the fast
/// path, if it may: nobody waits, no hand-off is pending, and the lock is
/// free or held by `class` below the holder limit. Every such entry is one
/// that `entered` allows under any admission; anything else takes the slow
/// path, which also reports the holder limit.
#[inline]
fn fast_entry(state: u64, class: Class) -> Option<u64> {
    if state & (WAITERS | HANDED | OWED) != 0 {
        None
    } else if holders(state) == 0 {
        Some(class.bit() | 1)
    } else if class_of(state) == class && holders(state) < MAX_HOLDERS {
        Some(state + 1)
    } else {
        None
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn too_many_holders() -> ! {
    panic!("two-state-lock: more than {MAX_HOLDERS} holders at once; the lock was left unchanged")
}

#[cold]
#[inline(never)]
#[track_caller]
fn too_many_waiters() -> ! {
    panic!(
        "two-state-lock: more than {MAX_WAITERS} threads and tasks waiting for one class; the lock was left unchanged"
    )
}

/// A snapshot of a lock's state word, for `Debug` and diagnostics.
///
/// It is stale as soon as it is read; use it to look, never to decide.
///
/// ```
/// use two_state_lock::{Class, TwoStateLock};
/// let lock = TwoStateLock::new();
/// let _g = lock.lock(Class::Block);
/// let s = lock.state();
/// assert_eq!((s.holders, s.class), (1, Class::Block));
/// assert_eq!((s.add_waiters, s.block_waiters), (0, 0));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockState {
    /// How many holds exist.
    pub holders: u32,
    /// The class holding; while `holders` is 0, the class whose turn it is.
    pub class: Class,
    /// `Add` threads and tasks that have signed up to wait and not yet entered.
    pub add_waiters: u32,
    /// `Block` threads and tasks that have signed up to wait and not yet
    /// entered.
    pub block_waiters: u32,
}

/// The lock's state machine: 16 bytes.
pub(crate) struct RawLock {
    state: AtomicU64,
    /// One wake word per class, so a release wakes only the class it admits.
    wake: [WakeWord; 2],
}

impl RawLock {
    const_fn_unless_loom! {
        pub(crate) fn new() -> Self {
            Self { state: AtomicU64::new(0), wake: [WakeWord::new(), WakeWord::new()] }
        }
    }

    pub(crate) fn snapshot(&self) -> LockState {
        let s = self.state.load(Ordering::Relaxed);
        LockState {
            holders: holders(s),
            class: class_of(s),
            add_waiters: waiters(s, Class::Add),
            block_waiters: waiters(s, Class::Block),
        }
    }

    /// The uncontended acquisition: nobody waits and the lock is free or held
    /// by `class`. A look, then one compare-and-swap from what it saw; on
    /// failure, the state to judge next. (Looking first keeps a thread whose
    /// class already holds from a compare-and-swap bound to fail, which takes
    /// the cache line from the holders for nothing.)
    #[inline]
    pub(crate) fn try_lock_fast(&self, class: Class) -> Result<(), u64> {
        let state = peek(&self.state);
        let Some(next) = fast_entry(state, class) else {
            return Err(state);
        };
        // Acquire: the holder sees what the previous holders wrote.
        match self
            .state
            .compare_exchange(state, next, Ordering::Acquire, Ordering::Relaxed)
        {
            Ok(_) => Ok(()),
            Err(_) => Err(self.after_lost_race(&mut CasBackoff::new())),
        }
    }

    /// The state to judge next after a compare-and-swap lost to another
    /// thread, most often one entering or leaving the same phase. Backs off
    /// first (`CasBackoff`), so that the cache line stays with that thread
    /// for a few of its operations (retrying at once took it away
    /// mid-operation), then looks again. The look is never
    /// older than the value the failed compare-and-swap read: a later load of
    /// the same atomic by the same thread reads that write or a later one
    /// (read-read coherence).
    #[cold]
    #[inline(never)]
    fn after_lost_race(&self, backoff: &mut CasBackoff) -> u64 {
        backoff.spin();
        peek(&self.state)
    }

    /// Takes one hold of `class` if the rules for `admission` allow it now,
    /// starting from `state`, the state last seen (no extra load).
    #[inline(never)]
    pub(crate) fn try_lock_from(&self, state: u64, class: Class, admission: Admission) -> bool {
        self.enter_from(state, class, admission, false).is_ok()
    }

    /// As `try_lock_from`; `counted`: this thread is a counted waiter. On
    /// failure, the state last seen, which is closed to this acquisition.
    fn enter_from(
        &self,
        mut state: u64,
        class: Class,
        admission: Admission,
        counted: bool,
    ) -> Result<(), u64> {
        let mut backoff = CasBackoff::new();
        while is_lockable(state, class, admission) {
            // Acquire, as in `try_lock_fast`.
            match self.state.compare_exchange(
                state,
                entered(state, class, counted),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(_) => state = self.after_lost_race(&mut backoff),
            }
        }
        Err(state)
    }

    /// Takes one hold of `class`, sleeping until `admission` allows it.
    #[inline]
    pub(crate) fn lock(&self, class: Class, admission: Admission) {
        if let Err(state) = self.try_lock_fast(class) {
            self.lock_contended(state, class, admission);
        }
    }

    /// [`lock`](Self::lock) after the fast path failed, having seen `state`.
    #[inline(never)]
    pub(crate) fn lock_contended(&self, state: u64, class: Class, admission: Admission) {
        if !self.try_lock_from(state, class, admission) {
            self.lock_slow(class, admission, None);
        }
    }

    /// As [`lock_contended`](Self::lock_contended), giving up at
    /// `deadline`: whether it took the hold. A waiter that gives up leaves
    /// as an unwinding one does (`Signup::drop`).
    #[inline(never)]
    pub(crate) fn lock_contended_until(
        &self,
        state: u64,
        class: Class,
        admission: Admission,
        deadline: Instant,
    ) -> bool {
        self.try_lock_from(state, class, admission)
            || self.lock_slow(class, admission, Some(deadline))
    }

    /// Spins, then sleeps, until `first_admission` admits `class` (true),
    /// or until `deadline` passes (false).
    #[cold]
    fn lock_slow(
        &self,
        class: Class,
        first_admission: Admission,
        deadline: Option<Instant>,
    ) -> bool {
        let spin = Spin::new();
        let wake = &self.wake[class.index()];
        // If this thread unwinds (or gives up) while counted, the drop
        // uncounts it.
        let mut signup = Signup {
            lock: self,
            waiter: Waiter::new(class, first_admission),
        };
        let waiter = &mut signup.waiter;
        loop {
            if spin.spin() {
                if self.try_lock_from(self.state.load(Ordering::Relaxed), class, first_admission) {
                    return true;
                }
                continue;
            }
            if deadline.is_some_and(|d| wake.expired(d)) {
                // Out of time before sleeping (again). Counted, the drop
                // uncounts it and passes on a hand-off it was part of.
                return false;
            }
            let seen = match self.sign_up(waiter) {
                SignUp::Entered => return true,
                SignUp::Again => continue,
                SignUp::Wait(seen) => seen,
            };
            match deadline {
                None => wake.wait(seen),
                Some(d) => wake.wait_until(seen, d),
            }
            if self.woken(waiter) {
                return true;
            }
        }
    }

    /// `waiter` enters if its admission allows it now; else it signs up to
    /// wait (counts itself among its class's waiters, once) from exactly the
    /// state judged closed, and is told the wake word's sequence number to
    /// wait on. The waiter, a thread or a task, then waits until the word
    /// moves past that number and calls [`woken`](Self::woken).
    pub(crate) fn sign_up(&self, waiter: &mut Waiter) -> SignUp {
        let class = waiter.class;
        // Read the wake word first: a hand-off to us that lands after this
        // read changes the state (so the CAS below fails and we judge again)
        // or the word (so the wait returns).
        let seen = self.wake[class.index()].load();
        let state = match self.enter(
            waiter,
            waiter.admission(seen),
            self.state.load(Ordering::Relaxed),
        ) {
            Ok(()) => return SignUp::Entered,
            // Sign up from exactly this state: the one judged closed.
            Err(closed) => closed,
        };
        let signed_up = if waiter.counted {
            state
        } else {
            if waiters(state, class) == MAX_WAITERS {
                too_many_waiters();
            }
            state + class.waiter() + owe_other(state, class)
        };
        // AcqRel: orders our read of the wake word before the hand-off
        // that will see our count and bump it. The CAS is from the exact
        // state judged closed (also when already counted): if anything
        // moved, judge again.
        if self
            .state
            .compare_exchange(state, signed_up, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return SignUp::Again;
        }
        // Owing the turn wakes nobody: the waiters it is owed to were
        // woken by the hand-off they were late for. (A bump here would
        // also let in a new arrival of theirs that read its wake word
        // just before, as if it had been handed the turn.)
        waiter.counted = true;
        waiter.waited_on = seen;
        SignUp::Wait(seen)
    }

    /// `waiter`'s wait returned (or its task was polled again): enters if
    /// it may now, judged by the wake word as it reads now
    /// ([`Waiter::admission`]). On `false` it signs up again.
    pub(crate) fn woken(&self, waiter: &mut Waiter) -> bool {
        let word = self.wake[waiter.class.index()].load();
        self.enter(
            waiter,
            waiter.admission(word),
            self.state.load(Ordering::Relaxed),
        )
        .is_ok()
    }

    /// `waiter` leaves without entering (a thread unwinding or giving up, a
    /// future dropped): if it is counted, uncounts it, passing on a
    /// hand-off it was part of.
    pub(crate) fn leave(&self, waiter: &mut Waiter) {
        if waiter.counted {
            waiter.counted = false;
            self.uncount(waiter.class);
        }
    }

    /// `RawLock::enter_from` for `waiter`, judged by `admission`; on entry
    /// it is no longer counted.
    #[inline]
    fn enter(&self, waiter: &mut Waiter, admission: Admission, state: u64) -> Result<(), u64> {
        let entered = self.enter_from(state, waiter.class, admission, waiter.counted);
        if entered.is_ok() {
            waiter.counted = false;
        }
        entered
    }

    /// The wake word `class`'s waiters wait on.
    #[inline]
    pub(crate) fn wake_word(&self, class: Class) -> &WakeWord {
        &self.wake[class.index()]
    }

    /// Wakes `class`'s sleeping threads and parked tasks: bumps its wake
    /// word, wakes the threads, then the tasks (after the bump, which is
    /// what makes a task's parking safe: see `task_wait`).
    fn wake_class(&self, class: Class) {
        let word = &self.wake[class.index()];
        word.bump_and_wake_all();
        task_wait::unpark_all(word);
    }

    /// Takes this thread out of `class`'s waiter count without entering: it
    /// is leaving `lock_slow` by unwinding or because its deadline passed. If nobody of its class is left
    /// waiting while the other class waits, that class must not wait on for
    /// it: if the lock is free, the turn passes to the other class, as a
    /// release would have passed it; if the other class holds, its waiters
    /// (queued behind this one) are woken to join.
    #[cold]
    fn uncount(&self, class: Class) {
        let other = class.other();
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            let mut next = state - class.waiter();
            let last = waiters(next, class) == 0 && waiters(next, other) != 0;
            let pass_turn = last && holders(next) == 0;
            let wake = pass_turn || (last && class_of(next) == other);
            if pass_turn {
                next = (next & WAITERS) | other.bit() | HANDED;
            }
            // AcqRel, as the hand-off in `hand_off`.
            match self
                .state
                .compare_exchange(state, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    if wake {
                        self.wake_class(other);
                    }
                    return;
                }
                Err(now) => state = now,
            }
        }
    }

    /// Releases one hold of `class`: one `fetch_sub`, which cannot fail, so
    /// that holders of one class leaving together do not retry each other.
    #[inline]
    pub(crate) fn unlock(&self, class: Class) {
        // Release: the next holder sees what this one wrote.
        let before = self.state.fetch_sub(1, Ordering::Release);
        debug_assert!(
            holders(before) > 0,
            "two-state-lock: release of a lock not held"
        );
        debug_assert_eq!(
            class_of(before),
            class,
            "two-state-lock: release of the wrong class"
        );
        if holders(before) == 1 && waiters(before, class.other()) != 0 {
            self.hand_off(class, before - 1);
        }
    }

    /// The last holder of `class` left while the other class waits: passes
    /// it the turn and wakes it (the `fetch_sub` left the turn in between,
    /// see the state word's comment). `state`: what the release wrote.
    #[cold]
    #[inline(never)]
    fn hand_off(&self, class: Class, mut state: u64) {
        let other = class.other();
        loop {
            // Not when HANDED (or OWED): a hand-off to our class is pending
            // (another release handed it back after the other class's
            // phase), whose waiters' release hands off in turn; taking it
            // would cost our class's waiters a second phase of the other
            // class.
            if holders(state) == 0
                && state & (HANDED | OWED) == 0
                && class_of(state) == class
                && waiters(state, other) != 0
            {
                // AcqRel, and Acquire on failure: reading the state (ours, or
                // a later one in its release sequence) synchronizes with the
                // sleepers' sign-up CAS, so their reads of the wake word
                // happen before our bump.
                match self.state.compare_exchange(
                    state,
                    (state & WAITERS) | other.bit() | HANDED,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => break,
                    Err(now) => state = now,
                }
            } else if class_of(state) == other && waiters(state, other) != 0 {
                // The other class got in first (or another release handed
                // it the turn): wake its sleepers to join.
                break;
            } else {
                // A nested holder of our class got in, whose release hands
                // off; or nobody waits any more.
                return;
            }
        }
        self.wake_class(other);
    }

    /// Under loom: every timed wait on this lock times out now.
    #[cfg(loom)]
    pub(crate) fn fire_timers(&self) {
        self.wake.iter().for_each(WakeWord::fire_timers);
    }

    /// Sets the state word, for unit tests of limits that would take minutes
    /// to reach by acquiring.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn set_state_for_test(&self, holders: u32, class: Class) {
        self.state
            .store(u64::from(holders) | class.bit(), Ordering::Relaxed);
    }
}

/// A waiter for one hold of one class: a thread in `lock_slow`, or a task
/// in an acquisition future (`crate::future`). The one mechanism both kinds
/// wait through ([`RawLock::sign_up`], then [`RawLock::woken`] after each
/// wait), so that threads and tasks wait in one phase-fair order, and leave
/// the same way: whoever gives up a waiter that may still be counted (an
/// unwinding thread, a timed wait, a dropped future) calls
/// [`RawLock::leave`].
#[derive(Debug)]
pub(crate) struct Waiter {
    class: Class,
    /// How its first attempt was judged: top-level or nested.
    first_admission: Admission,
    /// Counted among its class's waiters: it must enter or leave.
    counted: bool,
    /// While counted: the wake word's sequence number it last waited on.
    waited_on: u32,
}

impl Waiter {
    #[inline]
    pub(crate) fn new(class: Class, admission: Admission) -> Self {
        Waiter {
            class,
            first_admission: admission,
            counted: false,
            waited_on: 0,
        }
    }

    #[inline]
    pub(crate) fn class(&self) -> Class {
        self.class
    }

    #[inline]
    pub(crate) fn first_admission(&self) -> Admission {
        self.first_admission
    }

    /// Counted among its class's waiters (it signed up and has neither
    /// entered nor left).
    #[inline]
    pub(crate) fn is_counted(&self) -> bool {
        self.counted
    }

    /// How the waiter is judged when its class's wake word reads `word`:
    /// handed off if it is counted and the word moved since it last waited
    /// (a hand-off to its class woke it), else as its first attempt was (a
    /// spurious wake-up). Judged from the word as read now, also when the
    /// sign-up that follows a failed entry reads it again: a waiter that
    /// read the word just before a hand-off's bump and signs up again just
    /// after it would otherwise wait on the new number as a top-level
    /// arrival and miss the turn made for it (for good when that turn is
    /// `OWED`, which wakes nobody).
    #[inline]
    fn admission(&self, word: u32) -> Admission {
        if self.counted && self.first_admission != Admission::Nested && word != self.waited_on {
            Admission::HandedOff
        } else {
            self.first_admission
        }
    }
}

/// What [`RawLock::sign_up`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SignUp {
    /// The waiter entered: the hold is its.
    Entered,
    /// The waiter is counted: wait until the class's wake word moves past
    /// this sequence number.
    Wait(u32),
    /// The state moved under the sign-up: judge again.
    Again,
}

/// A thread inside `lock_slow`. Dropped while counted (by unwinding, or
/// when a timed wait gives up: every other return is an entry, which
/// uncounts), it uncounts the thread.
struct Signup<'a> {
    lock: &'a RawLock,
    waiter: Waiter,
}

impl Drop for Signup<'_> {
    fn drop(&mut self) {
        self.lock.leave(&mut self.waiter);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn holder_limit_panics_and_leaves_state_unchanged() {
        let lock = RawLock::new();
        lock.set_state_for_test(MAX_HOLDERS, Class::Add);
        let before = lock.snapshot();
        for admission in [Admission::TopLevel, Admission::Nested] {
            let err = std::panic::catch_unwind(|| lock.lock(Class::Add, admission)).unwrap_err();
            let msg = err.downcast_ref::<String>().unwrap();
            assert!(msg.contains("more than 536870911 holders"), "{msg}");
            assert_eq!(lock.snapshot(), before);
            let err = std::panic::catch_unwind(|| {
                lock.try_lock_from(lock.state.load(Ordering::Relaxed), Class::Add, admission)
            });
            assert!(err.is_err());
            assert_eq!(lock.snapshot(), before);
        }
        // One below the limit still works, and reaches the limit exactly.
        lock.set_state_for_test(MAX_HOLDERS - 1, Class::Add);
        lock.lock(Class::Add, Admission::TopLevel);
        assert_eq!(lock.snapshot().holders, MAX_HOLDERS);
        lock.unlock(Class::Add);
        assert_eq!(lock.snapshot().holders, MAX_HOLDERS - 1);
    }

    /// A thread that slept (counted) and is handed a phase that already has
    /// `MAX_HOLDERS` holders panics; it must not leave its count behind, or
    /// the lock stays handed to a class nobody is coming from and a fresh
    /// `Block` sleeps forever on a free lock.
    #[test]
    fn a_counted_waiter_at_the_holder_limit_uncounts_itself() {
        use std::sync::{Arc, mpsc};
        use std::time::{Duration, Instant};
        let lock = Arc::new(RawLock::new());
        lock.lock(Class::Block, Admission::TopLevel);
        let l = lock.clone();
        let waiter = std::thread::spawn(move || {
            std::panic::catch_unwind(|| l.lock(Class::Add, Admission::TopLevel)).unwrap_err()
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while lock.snapshot().add_waiters == 0 {
            assert!(Instant::now() < deadline, "the Add thread never signed up");
            std::thread::sleep(Duration::from_micros(100));
        }
        // The hand-off to Add lands after nested Adds barged into it up to
        // the limit: Add holds MAX_HOLDERS, the sleeper is still counted.
        let full = u64::from(MAX_HOLDERS) | Class::Add.bit() | Class::Add.waiter();
        lock.state.store(full, Ordering::Relaxed);
        lock.wake[Class::Add.index()].bump_and_wake_all();
        let err = waiter.join().unwrap();
        let msg = err.downcast_ref::<String>().unwrap();
        assert!(msg.contains("holders at once"), "{msg}");
        assert_eq!(
            lock.snapshot(),
            LockState {
                holders: MAX_HOLDERS,
                class: Class::Add,
                add_waiters: 0,
                block_waiters: 0
            },
            "the panicking waiter uncounted itself and changed nothing else"
        );
        // Every hold is released; a fresh Block gets in.
        lock.set_state_for_test(1, Class::Add);
        lock.unlock(Class::Add);
        let (tx, rx) = mpsc::channel();
        let l = lock.clone();
        std::thread::spawn(move || {
            l.lock(Class::Block, Admission::TopLevel);
            tx.send(()).unwrap();
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("a top-level Block slept on a free lock");
    }

    #[test]
    fn the_last_waiter_of_a_class_lets_the_other_class_on_as_it_leaves() {
        let lock = RawLock::new();
        let pending = Class::Add.bit() | HANDED | Class::Add.waiter() | Class::Block.waiter();
        lock.state.store(pending, Ordering::Relaxed);
        let seen = lock.wake[Class::Block.index()].load();
        lock.uncount(Class::Add);
        let s = lock.snapshot();
        assert_eq!(
            (s.holders, s.class, s.add_waiters, s.block_waiters),
            (0, Class::Block, 0, 1)
        );
        assert_ne!(lock.wake[Class::Block.index()].load(), seen, "Block woken");
        // Block holds, and its waiters queued behind the Add waiter that
        // leaves: they are woken to join.
        let queued = 1 | Class::Block.bit() | Class::Add.waiter() | Class::Block.waiter();
        lock.state.store(queued, Ordering::Relaxed);
        let seen = lock.wake[Class::Block.index()].load();
        lock.uncount(Class::Add);
        assert_eq!(
            lock.state.load(Ordering::Relaxed),
            queued - Class::Add.waiter()
        );
        assert_ne!(lock.wake[Class::Block.index()].load(), seen, "Block woken");
        // With another Add still coming, the hand-off to Add stays pending.
        let pending = Class::Add.bit() | HANDED | (2 * Class::Add.waiter()) | Class::Block.waiter();
        lock.state.store(pending, Ordering::Relaxed);
        lock.uncount(Class::Add);
        assert_eq!(
            lock.state.load(Ordering::Relaxed),
            pending - Class::Add.waiter()
        );
    }

    #[test]
    fn admission_rules() {
        use Class::*;
        let c = |h: u64, class: Class, add_waiters: u64, block_waiters: u64| {
            h | class.bit() | (add_waiters * Add.waiter()) | (block_waiters * Block.waiter())
        };
        // Free, Add's turn: anyone gets in.
        assert!(is_lockable_top_level(c(0, Add, 0, 0), Block));
        // Block waits while Add holds: top-level Add may not join, nested may,
        // and so may an Add woken by a hand-off.
        let held = c(3, Add, 0, 1);
        assert!(!is_lockable_top_level(held, Add));
        assert!(is_lockable_nested(held, Add));
        assert!(is_lockable(held, Add, Admission::HandedOff));
        // Hand-off to Block pending: top-level Add waits, Block takes the turn
        // and a counted Block waiter uncounts itself as it enters.
        let pending = c(0, Block, 0, 2) | HANDED;
        assert!(!is_lockable_top_level(pending, Add));
        assert!(is_lockable_top_level(pending, Block));
        assert_eq!(entered(pending, Block, true), c(1, Block, 0, 1));
        assert_eq!(entered(pending, Block, false), c(1, Block, 0, 2));
        // A nested Add may barge in; the Block count stays, so its release
        // hands the lock back.
        assert!(is_lockable_nested(pending, Add));
        assert_eq!(entered(pending, Add, false), c(1, Add, 0, 2));
        // A release between its fetch_sub and its hand-off: the turn is
        // already Block's. Top-level Add waits, even a counted one (it could
        // not tell this from a hand-off to Add without HANDED); Block and a
        // nested Add get in.
        let gap = c(0, Add, 1, 2);
        assert!(!is_lockable_top_level(gap, Add));
        assert!(is_lockable_top_level(c(0, Add, 0, 2), Block));
        assert!(is_lockable_nested(gap, Add));
        assert!(
            is_lockable_top_level(gap | HANDED, Add),
            "a hand-off to Add"
        );
        // An Add woken by the hand-off that began the phase now ending was
        // late for it: it waits for Block's turn too.
        assert!(!is_lockable(gap, Add, Admission::HandedOff));
        assert!(is_lockable(c(1, Add, 1, 2), Add, Admission::HandedOff));
        // The other class holds: nobody of this class gets in.
        for a in [Admission::TopLevel, Admission::Nested, Admission::HandedOff] {
            assert!(!is_lockable(c(1, Block, 0, 0), Add, a));
        }
        // Waiter counts live above the holder count and class bit.
        assert_eq!(waiters(c(5, Block, 7, 9), Add), 7);
        assert_eq!(waiters(c(5, Block, 7, 9), Block), 9);
        assert_eq!(holders(c(5, Block, 7, 9)), 5);
    }

    /// The fast path takes only entries the admission rules allow, and
    /// writes what the slow path would write.
    #[test]
    fn fast_entries_are_admissible_entries() {
        let mut fast = 0;
        for holders in [0, 1, 2, u64::from(MAX_HOLDERS) - 1, u64::from(MAX_HOLDERS)] {
            for bits in 0..32u64 {
                // Bit i of `bits` sets the i-th of these.
                let state = [
                    CLASS_BLOCK,
                    HANDED,
                    OWED,
                    Class::Add.waiter(),
                    Class::Block.waiter(),
                ]
                .iter()
                .enumerate()
                .filter(|&(i, _)| bits & (1 << i) != 0)
                .fold(holders, |state, (_, bit)| state | bit);
                for class in [Class::Add, Class::Block] {
                    let Some(next) = fast_entry(state, class) else {
                        continue;
                    };
                    fast += 1;
                    for admission in [Admission::TopLevel, Admission::Nested, Admission::HandedOff]
                    {
                        assert!(is_lockable(state, class, admission), "{state:#x} {class:?}");
                    }
                    assert_eq!(next, entered(state, class, false), "{state:#x} {class:?}");
                }
            }
        }
        // Free under either class (2 classes each) and held below the limit
        // by the entering class (3 counts).
        assert_eq!(fast, 2 * 2 + 3 * 2);
    }

    /// The first `Block` to sign up on a free lock whose turn is `Add`'s,
    /// with `Add` waiting and no hand-off pending, owes the turn to the
    /// waiting `Add`s explicitly; in a release gap (a `Block` already
    /// counted) it does not.
    #[test]
    fn a_first_sign_up_on_a_free_lock_hands_the_waiting_class_its_turn() {
        use Class::*;
        let c = |h: u64, class: Class, add_waiters: u64, block_waiters: u64| {
            h | class.bit() | (add_waiters * Add.waiter()) | (block_waiters * Block.waiter())
        };
        assert_eq!(owe_other(c(0, Add, 1, 0), Block), OWED);
        assert_eq!(owe_other(c(0, Add, 1, 1), Block), 0, "a release gap");
        assert_eq!(owe_other(c(0, Add, 1, 0) | HANDED, Block), 0);
        assert_eq!(owe_other(c(1, Add, 1, 0), Block), 0, "Add holds");
        assert_eq!(owe_other(c(0, Add, 0, 0), Block), 0, "nobody waits");
        assert_eq!(owe_other(c(0, Block, 0, 1), Add), OWED);
        // Owed to Add: its woken waiters and nested acquisitions get in;
        // a top-level Add arriving now, and Block, wait.
        let owed = c(0, Add, 1, 1) | OWED;
        assert!(is_lockable(owed, Add, Admission::HandedOff));
        assert!(is_lockable(owed, Add, Admission::Nested));
        assert!(!is_lockable(owed, Add, Admission::TopLevel));
        assert!(!is_lockable(owed, Block, Admission::TopLevel));
        assert_eq!(
            entered(owed, Add, true),
            c(1, Add, 0, 1),
            "entering clears it"
        );
        assert_eq!(fast_entry(owed, Add), None);
    }

    /// An `Add` release whose hand-off CAS failed finds that `Block` got in
    /// meanwhile and its release handed the turn back to `Add`: it leaves
    /// that hand-off alone (before, it took it and handed the turn to
    /// `Block` again, so `Add` waited two `Block` phases).
    #[test]
    fn a_release_that_finds_a_hand_off_back_to_its_class_leaves_it() {
        let lock = RawLock::new();
        let gap = Class::Add.bit() | Class::Block.waiter();
        let handed_back = Class::Add.bit() | HANDED | Class::Add.waiter() | Class::Block.waiter();
        lock.state.store(handed_back, Ordering::Relaxed);
        let seen = lock.wake[Class::Block.index()].load();
        lock.hand_off(Class::Add, gap);
        assert_eq!(
            lock.state.load(Ordering::Relaxed),
            handed_back,
            "the hand-off to Add stands"
        );
        assert_eq!(
            lock.wake[Class::Block.index()].load(),
            seen,
            "Block not woken"
        );
    }

    #[test]
    fn waiter_limit_panics_and_leaves_state_unchanged() {
        let lock = RawLock::new();
        let full = 1 | Class::Block.bit() | (u64::from(MAX_WAITERS) * Class::Add.waiter());
        lock.state.store(full, Ordering::Relaxed);
        let err =
            std::panic::catch_unwind(|| lock.lock(Class::Add, Admission::TopLevel)).unwrap_err();
        let msg = err.downcast_ref::<String>().unwrap();
        assert!(msg.contains("tasks waiting for one class"), "{msg}");
        assert_eq!(lock.state.load(Ordering::Relaxed), full);
    }
}
