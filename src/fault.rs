//! The thread-local part: how many guards this thread holds, its held-mapping
//! token (a stack of active `faults_disabled` scopes), and the fault protocol
//! that uses them (`TwoStateLock::lock_fault`).
//!
//! The scopes form a linked list through the stack frames of the active
//! `faults_disabled` calls, innermost first, so nesting costs no allocation.

use std::cell::Cell;
use std::fmt;
use std::ptr;

use crate::guard::Guard;
use crate::lock::TwoStateLock;
use crate::raw::{Admission, Class};
use crate::sync::thread_local_const;

/// What a thread knows about itself.
struct ThreadState {
    /// `Guard`s this thread holds (an `ArcGuard` is not counted: it may be
    /// released on another thread).
    held: Cell<usize>,
    /// Active scopes whose hold is not released by a cycle in progress.
    tokens: Cell<usize>,
    /// The innermost active scope, or null.
    innermost: Cell<*const Scope>,
}

thread_local_const! {
    static THREAD: ThreadState = ThreadState {
        held: Cell::new(0),
        tokens: Cell::new(0),
        innermost: Cell::new(ptr::null()),
    };
}

/// Top-level for a thread that holds no guard and has no token; else nested.
#[inline]
pub(crate) fn admission() -> Admission {
    THREAD.with(|t| {
        if t.held.get() == 0 && t.tokens.get() == 0 {
            Admission::TopLevel
        } else {
            Admission::Nested
        }
    })
}

#[inline]
pub(crate) fn guard_taken() {
    THREAD.with(|t| t.held.set(t.held.get() + 1));
}

#[inline]
pub(crate) fn guard_released() {
    THREAD.with(|t| t.held.set(t.held.get() - 1));
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

/// Why [`TwoStateLock::lock_fault`] did not return a guard.
///
/// ```
/// use two_state_lock::FaultError;
/// assert_eq!(
///     FaultError::SameMapping.to_string(),
///     "fault on the mapping this thread holds for direct I/O (bad address)"
/// );
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultError {
    /// The faulting lock is a held mapping of this thread: taking `Add` on it
    /// would wait for this thread forever. Fail the access (the kernel's
    /// `-EFAULT`).
    SameMapping,
    /// A held mapping orders after the faulting lock and `try_lock` failed:
    /// the held locks were released, the fault's lock waited for, and the
    /// held locks re-taken. The scope reports `locks_dropped`; re-invalidate
    /// and retry.
    OrderingViolation,
}

impl fmt::Display for FaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FaultError::SameMapping => {
                "fault on the mapping this thread holds for direct I/O (bad address)"
            }
            FaultError::OrderingViolation => {
                "fault out of lock order: held locks were dropped and re-taken, retry"
            }
        })
    }
}

impl std::error::Error for FaultError {}

/// One active `faults_disabled` scope, on the stack frame of its call.
struct Scope {
    lock: *const TwoStateLock,
    class: Class,
    /// The hold is a `Guard`'s, counted in `ThreadState::held`.
    counted: bool,
    /// The guard the hold belongs to, to refuse two scopes for one hold.
    owner: *const (),
    outer: *const Scope,
    /// Released by the cycle in progress.
    released: Cell<bool>,
    /// Released and re-taken at least once: reported as `locks_dropped`.
    dropped: Cell<bool>,
}

impl Scope {
    fn order(&self) -> usize {
        self.lock as usize
    }

    fn lock(&self) -> &TwoStateLock {
        // SAFETY: the scope's guard borrows (or owns an `Arc` of) the lock
        // for longer than the scope is active.
        unsafe { &*self.lock }
    }

    /// Gives up the hold for a cycle: the thread no longer holds it.
    fn release(&self, t: &ThreadState) {
        debug_assert!(!self.released.get());
        self.lock().raw.unlock(self.class);
        t.held.set(t.held.get() - usize::from(self.counted));
        t.tokens.set(t.tokens.get() - 1);
        self.released.set(true);
        self.dropped.set(true);
    }

    /// Takes the hold back, judged by what the thread holds now.
    fn retake(&self, t: &ThreadState) {
        debug_assert!(self.released.get());
        self.lock().raw.lock(self.class, admission());
        t.held.set(t.held.get() + usize::from(self.counted));
        t.tokens.set(t.tokens.get() + 1);
        self.released.set(false);
    }
}

/// Calls `f` on each active scope, innermost first, until it returns `Some`.
fn find_scope<'t, T>(t: &'t ThreadState, mut f: impl FnMut(&'t Scope) -> Option<T>) -> Option<T> {
    let mut next = t.innermost.get();
    // SAFETY: every pointer in the list is to a `Scope` on the stack frame of
    // an active `with_scope` call on this thread, which unlinks it before the
    // frame is left, by return or by unwind.
    while let Some(scope) = unsafe { next.as_ref() } {
        if let Some(found) = f(scope) {
            return Some(found);
        }
        next = scope.outer;
    }
    None
}

/// Runs `f` with the hold `(lock, class)` of the guard at `owner` as this
/// thread's innermost held mapping.
pub(crate) fn with_scope<R>(
    lock: &TwoStateLock,
    class: Class,
    counted: bool,
    owner: *const (),
    f: impl FnOnce() -> R,
) -> Scoped<R> {
    THREAD.with(|t| {
        if find_scope(t, |s| (s.owner == owner).then_some(())).is_some() {
            panic!("two-state-lock: faults_disabled on a guard whose scope is already active");
        }
        let scope = Scope {
            lock,
            class,
            counted,
            owner,
            outer: t.innermost.get(),
            released: Cell::new(false),
            dropped: Cell::new(false),
        };
        /// Unlinks the scope when `f` returns or unwinds.
        struct Unlink<'t>(&'t ThreadState, *const Scope);
        impl Drop for Unlink<'_> {
            fn drop(&mut self) {
                self.0.innermost.set(self.1);
                self.0.tokens.set(self.0.tokens.get() - 1);
            }
        }
        t.innermost.set(&scope);
        t.tokens.set(t.tokens.get() + 1);
        let unlink = Unlink(t, scope.outer);
        let value = f();
        drop(unlink);
        Scoped {
            value,
            locks_dropped: scope.dropped.get(),
        }
    })
}

/// The cycle-and-retry loop behind `Guard::retry_faults`.
pub(crate) fn retry<R>(
    lock: &TwoStateLock,
    class: Class,
    counted: bool,
    owner: *const (),
    mut revalidate: impl FnMut(),
    mut step: impl FnMut() -> Result<R, FaultError>,
) -> Result<R, FaultError> {
    loop {
        let scoped = with_scope(lock, class, counted, owner, &mut step);
        if scoped.locks_dropped {
            revalidate();
        }
        match scoped.value {
            Err(FaultError::OrderingViolation) => continue,
            done => return done,
        }
    }
}

impl TwoStateLock {
    /// Takes `Add` on this lock for a page fault, following the fault
    /// protocol against this thread's held mappings (the locks of the active
    /// [`faults_disabled`](Guard::faults_disabled) scopes):
    ///
    /// | held mappings | what happens |
    /// | --- | --- |
    /// | none | blocking `Add`, `Ok(guard)` |
    /// | one of them is this lock | `Err(SameMapping)` at once |
    /// | all order before this lock | blocking `Add` (in lock order), `Ok(guard)` |
    /// | some order after this lock | `try_lock(Add)`: `Ok(guard)`, or else the cycle, then `Err(OrderingViolation)` |
    ///
    /// The cycle releases the holds that order after this lock (innermost
    /// first), waits until this lock admits `Add`, re-takes them in address
    /// order, and marks their scopes `locks_dropped`. Locks order by address,
    /// lower first. Holds not in an active scope are never cycled.
    ///
    /// ```
    /// use two_state_lock::{Class, FaultError, TwoStateLock};
    /// let (a, b) = (TwoStateLock::new(), TwoStateLock::new());
    /// let (low, high) = if (&a as *const _) < (&b as *const _) { (&a, &b) } else { (&b, &a) };
    /// let dio = high.lock(Class::Block);
    /// // A fault on a lower lock that is free: try_lock succeeds.
    /// let r = dio.faults_disabled(|| low.lock_fault().map(|g| g.class()));
    /// assert_eq!(r.value, Ok(Class::Add));
    /// // A fault on the held lock itself.
    /// let r = dio.faults_disabled(|| high.lock_fault().map(drop));
    /// assert_eq!(r.value, Err(FaultError::SameMapping));
    /// ```
    pub fn lock_fault(&self) -> Result<Guard<'_>, FaultError> {
        let me = self.order();
        let (same, any_after) = THREAD.with(|t| {
            let mut any_after = false;
            let same = find_scope(t, |s| {
                any_after |= s.order() > me;
                (s.order() == me).then_some(())
            });
            (same.is_some(), any_after)
        });
        if same {
            return Err(FaultError::SameMapping);
        }
        if !any_after {
            // No held mapping, or all in lock order: wait as usual (nested,
            // if a token is active).
            return Ok(self.lock(Class::Add));
        }
        if let Some(guard) = self.try_lock(Class::Add) {
            return Ok(guard);
        }
        self.cycle();
        Err(FaultError::OrderingViolation)
    }

    /// The cycle step of [`lock_fault`](Self::lock_fault).
    #[cold]
    fn cycle(&self) {
        let me = self.order();
        THREAD.with(|t| {
            find_scope(t, |s| {
                if s.order() > me {
                    s.release(t);
                }
                None::<()>
            });
            // Re-takes every released hold, in address order, when this
            // function returns or unwinds: the guards must own their holds
            // again before any user code runs.
            struct Retake<'t>(&'t ThreadState);
            impl Drop for Retake<'_> {
                fn drop(&mut self) {
                    let t = self.0;
                    // A panic here would leave a guard that releases a hold it
                    // does not own: abort instead.
                    let bomb = AbortOnUnwind;
                    loop {
                        let mut lowest: Option<&Scope> = None;
                        find_scope(t, |s| {
                            if s.released.get() && lowest.is_none_or(|l| s.order() < l.order()) {
                                lowest = Some(s);
                            }
                            None::<()>
                        });
                        match lowest {
                            Some(s) => s.retake(t),
                            None => break,
                        }
                    }
                    std::mem::forget(bomb);
                }
            }
            let _retake = Retake(t);
            #[cfg(all(test, not(loom)))]
            tests::failpoint();
            // Wait until this lock admits Add, judged by what the thread
            // still holds after the release.
            self.raw.lock(Class::Add, admission());
            self.raw.unlock(Class::Add);
        });
    }
}

struct AbortOnUnwind;

impl Drop for AbortOnUnwind {
    fn drop(&mut self) {
        eprintln!("two-state-lock: panic while re-taking a hold after a fault cycle; aborting");
        std::process::abort();
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::panic::{AssertUnwindSafe, catch_unwind};

    thread_local! {
        static PANIC_IN_CYCLE: Cell<bool> = const { Cell::new(false) };
    }

    pub(super) fn failpoint() {
        if PANIC_IN_CYCLE.with(|p| p.replace(false)) {
            panic!("failpoint: panic inside the cycle");
        }
    }

    fn ordered() -> (Box<TwoStateLock>, Box<TwoStateLock>) {
        let (a, b) = (Box::new(TwoStateLock::new()), Box::new(TwoStateLock::new()));
        if a.order() < b.order() {
            (a, b)
        } else {
            (b, a)
        }
    }

    #[test]
    fn panic_inside_the_cycle_leaves_every_hold_owned() {
        let (low, high) = ordered();
        let dio = high.lock(Class::Block);
        let blocker = low.lock(Class::Block);
        // The fault's try_lock fails (Block holds `low`), so it cycles; the
        // failpoint panics after the release, before the wait.
        PANIC_IN_CYCLE.with(|p| p.set(true));
        let caught = dio.faults_disabled(|| {
            let r = catch_unwind(AssertUnwindSafe(|| low.lock_fault().map(drop)));
            assert!(r.is_err(), "the failpoint panics");
            // The unwind re-took the hold before it left lock_fault: user code
            // that caught it runs holding the lock.
            assert_eq!(high.state().holders, 1);
            assert!(high.try_lock(Class::Add).is_none());
            THREAD.with(|t| (t.held.get(), t.tokens.get()))
        });
        assert!(caught.locks_dropped);
        // Two guards held (dio, blocker), one active token.
        assert_eq!(caught.value, (2, 1));
        drop((dio, blocker));
        assert_eq!(high.state().holders, 0);
        assert_eq!(low.state().holders, 0);
        assert_eq!(THREAD.with(|t| (t.held.get(), t.tokens.get())), (0, 0));
    }

    #[test]
    fn panic_inside_the_scope_restores_the_token() {
        let lock = TwoStateLock::new();
        let g = lock.lock(Class::Block);
        let r = catch_unwind(AssertUnwindSafe(|| g.faults_disabled(|| panic!("inside"))));
        assert!(r.is_err());
        THREAD.with(|t| {
            assert!(t.innermost.get().is_null());
            assert_eq!((t.held.get(), t.tokens.get()), (1, 0));
        });
        // No token: a fault on the lock is a plain blocking Add again, which
        // try_lock shows would not be admitted while we hold Block.
        drop(g);
        assert!(lock.lock_fault().is_ok());
    }
}
