//! The raw lock: one state word and two wake words. The only place that
//! touches the lock's atomics and sleeps.
//!
//! `RawLock` knows nothing about threads: callers say whether an acquisition
//! is top-level or nested (see `crate::fault` for the thread-local part) and
//! release exactly what they took. Guards in `crate::guard` make that safe.

use crate::sync::{AtomicU32, Ordering, Spin, WakeWord, const_fn_unless_loom};

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
    const fn bit(self) -> u32 {
        match self {
            Class::Add => 0,
            Class::Block => CLASS_BLOCK,
        }
    }

    /// This class's `WANT` bit.
    #[inline]
    const fn want(self) -> u32 {
        match self {
            Class::Add => WANT_ADD,
            Class::Block => WANT_BLOCK,
        }
    }

    #[inline]
    const fn index(self) -> usize {
        self as usize
    }
}

// The state word.
//
// Invariant: a WANT bit is only set by a thread that is about to sleep, or
// left set by a hand-off that is waiting for that class to arrive. It is
// never left behind by a thread that got in some other way, so a release
// that sees no WANT bit of the other class knows nobody of it sleeps.

/// Holders (low 29 bits). While 0, the lock is free.
const COUNT_MASK: u32 = (1 << 29) - 1;
/// The class holding, or whose turn it is while the count is 0. Set = Block.
const CLASS_BLOCK: u32 = 1 << 29;
/// An `Add` thread sleeps, or a hand-off to `Add` is pending.
const WANT_ADD: u32 = 1 << 30;
/// A `Block` thread sleeps, or a hand-off to `Block` is pending.
const WANT_BLOCK: u32 = 1 << 31;
const WANTS: u32 = WANT_ADD | WANT_BLOCK;

/// The most holders one lock can count. One more panics.
pub const MAX_HOLDERS: u32 = COUNT_MASK;

#[inline]
fn holders(state: u32) -> u32 {
    state & COUNT_MASK
}

#[inline]
fn class_of(state: u32) -> Class {
    if state & CLASS_BLOCK == 0 {
        Class::Add
    } else {
        Class::Block
    }
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
fn is_lockable_top_level(state: u32, class: Class) -> bool {
    let other_waits = state & class.other().want() != 0;
    if holders(state) == 0 {
        // Free: take it unless a hand-off to the other class is pending.
        class_of(state) == class || !other_waits
    } else {
        // Join the phase unless the other class waits for its turn.
        class_of(state) == class && !other_waits
    }
}

#[inline]
fn is_lockable_nested(state: u32, class: Class) -> bool {
    holders(state) == 0 || class_of(state) == class
}

#[inline]
fn is_lockable(state: u32, class: Class, admission: Admission) -> bool {
    match admission {
        Admission::TopLevel => is_lockable_top_level(state, class),
        Admission::Nested => is_lockable_nested(state, class),
        Admission::HandedOff => class_of(state) == class || is_lockable_top_level(state, class),
    }
}

/// The state after one more holder of `class` enters `state`.
///
/// Panics, before anything changes, when the count is full.
#[inline]
fn entered(state: u32, class: Class) -> u32 {
    let count = holders(state);
    if count == MAX_HOLDERS {
        too_many_holders();
    }
    if count > 0 {
        return state + 1;
    }
    let mut wants = state & WANTS;
    if class_of(state) == class {
        // Count 0 and our class's turn: a pending hand-off to us is taken up.
        wants &= !class.want();
    }
    wants | class.bit() | 1
}

#[cold]
#[inline(never)]
#[track_caller]
fn too_many_holders() -> ! {
    panic!("two-state-lock: more than {MAX_HOLDERS} holders at once; the lock was left unchanged")
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
/// assert!(!s.add_waiting && !s.block_waiting);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockState {
    /// How many holds exist.
    pub holders: u32,
    /// The class holding; while `holders` is 0, the class whose turn it is.
    pub class: Class,
    /// An `Add` acquirer sleeps, or the lock is being handed to `Add`.
    pub add_waiting: bool,
    /// A `Block` acquirer sleeps, or the lock is being handed to `Block`.
    pub block_waiting: bool,
}

/// The lock's state machine: 12 bytes.
pub(crate) struct RawLock {
    state: AtomicU32,
    /// One wake word per class, so a release wakes only the class it admits.
    wake: [WakeWord; 2],
}

impl RawLock {
    const_fn_unless_loom! {
        pub(crate) fn new() -> Self {
            Self { state: AtomicU32::new(0), wake: [WakeWord::new(), WakeWord::new()] }
        }
    }

    pub(crate) fn snapshot(&self) -> LockState {
        let s = self.state.load(Ordering::Relaxed);
        LockState {
            holders: holders(s),
            class: class_of(s),
            add_waiting: s & WANT_ADD != 0,
            block_waiting: s & WANT_BLOCK != 0,
        }
    }

    /// The uncontended acquisition: the lock is free, it is `class`'s turn
    /// and nobody waits. One compare-and-swap.
    #[inline]
    pub(crate) fn try_lock_fast(&self, class: Class) -> bool {
        // Acquire: the holder sees what the previous holders wrote.
        self.state
            .compare_exchange(
                class.bit(),
                class.bit() | 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Takes one hold of `class` if the rules for `admission` allow it now.
    #[cold]
    pub(crate) fn try_lock_slow(&self, class: Class, admission: Admission) -> bool {
        let mut state = self.state.load(Ordering::Relaxed);
        while is_lockable(state, class, admission) {
            // Acquire, as in `try_lock_fast`.
            match self.state.compare_exchange(
                state,
                entered(state, class),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => state = now,
            }
        }
        false
    }

    /// Takes one hold of `class`, sleeping until the rules for `admission`
    /// allow it.
    #[inline]
    pub(crate) fn lock(&self, class: Class, admission: Admission) {
        if !self.try_lock_fast(class) {
            self.lock_slow(class, admission);
        }
    }

    /// Takes one hold of `class`, sleeping until `admission` allows it.
    #[cold]
    pub(crate) fn lock_slow(&self, class: Class, first_admission: Admission) {
        let mut admission = first_admission;
        let spin = Spin::new();
        let wake = &self.wake[class.index()];
        loop {
            if self.try_lock_slow(class, admission) {
                return;
            }
            if spin.spin() {
                continue;
            }
            // Sign up to sleep. Read the wake word first: a hand-off to us
            // that lands after this read changes the state (so the CAS below
            // fails and we judge again) or the word (so the wait returns).
            let seen = wake.load();
            let state = self.state.load(Ordering::Relaxed);
            if is_lockable(state, class, admission) {
                continue;
            }
            // AcqRel: orders our read of the wake word before the hand-off
            // that will observe our WANT bit and bump it.
            if self
                .state
                .compare_exchange(
                    state,
                    state | class.want(),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_err()
            {
                continue;
            }
            wake.wait(seen);
            admission = if first_admission == Admission::Nested {
                Admission::Nested
            } else if wake.load() != seen {
                Admission::HandedOff
            } else {
                // Spurious wake-up: judge as before.
                first_admission
            };
        }
    }

    /// Releases one hold of `class`.
    #[inline]
    pub(crate) fn unlock(&self, class: Class) {
        // The last holder, nobody waiting: one compare-and-swap. Release:
        // the next holder sees what this one wrote.
        if self
            .state
            .compare_exchange(
                class.bit() | 1,
                class.bit(),
                Ordering::Release,
                Ordering::Relaxed,
            )
            .is_err()
        {
            self.unlock_slow(class);
        }
    }

    #[cold]
    fn unlock_slow(&self, class: Class) {
        let other = class.other();
        let mut state = self.state.load(Ordering::Relaxed);
        let handed_off = loop {
            debug_assert!(
                holders(state) > 0,
                "two-state-lock: release of a lock not held"
            );
            debug_assert_eq!(
                class_of(state),
                class,
                "two-state-lock: release of the wrong class"
            );
            // One CAS computes the next state whole (a `fetch_sub` would
            // publish "count 0, our class, WANT_other", which looks like a
            // hand-off pending to us). A hand-off leaves WANT_other set as
            // "hand-off pending" until an `other` thread enters: clearing it
            // here would let the old class steal the turn back.
            let hand_off = holders(state) == 1 && state & other.want() != 0;
            let (next, order) = if hand_off {
                // AcqRel: pairs with the sleeper's sign-up CAS, so its read
                // of the wake word happens before our bump.
                ((state & WANTS) | other.bit(), Ordering::AcqRel)
            } else {
                (state - 1, Ordering::Release)
            };
            match self
                .state
                .compare_exchange(state, next, order, Ordering::Relaxed)
            {
                Ok(_) => break hand_off,
                Err(now) => state = now,
            }
        };
        if handed_off {
            self.wake[other.index()].bump_and_wake_all();
        }
    }

    /// Sets the state word, for unit tests of limits that would take minutes
    /// to reach by acquiring.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn set_state_for_test(&self, holders: u32, class: Class) {
        self.state.store(holders | class.bit(), Ordering::Relaxed);
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
            let err = std::panic::catch_unwind(|| lock.try_lock_slow(Class::Add, admission));
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

    #[test]
    fn admission_rules() {
        let c = |h: u32, class: Class, wants: u32| h | class.bit() | wants;
        use Class::*;
        // Free, Add's turn: anyone gets in.
        assert!(is_lockable_top_level(c(0, Add, 0), Block));
        // Block waits while Add holds: top-level Add may not join, nested may.
        assert!(!is_lockable_top_level(c(3, Add, WANT_BLOCK), Add));
        assert!(is_lockable_nested(c(3, Add, WANT_BLOCK), Add));
        assert!(is_lockable(
            c(3, Add, WANT_BLOCK),
            Add,
            Admission::HandedOff
        ));
        // Hand-off to Block pending: top-level Add waits, Block takes the turn.
        let pending = c(0, Block, WANT_BLOCK);
        assert!(!is_lockable_top_level(pending, Add));
        assert!(is_lockable_nested(pending, Add));
        assert_eq!(entered(pending, Block), c(1, Block, 0));
        // A nested barge keeps the pending WANT so its release hands back.
        assert_eq!(entered(pending, Add), c(1, Add, WANT_BLOCK));
        // The other class holds: nobody of this class gets in.
        for a in [Admission::TopLevel, Admission::Nested, Admission::HandedOff] {
            assert!(!is_lockable(c(1, Block, 0), Add, a));
        }
    }
}
