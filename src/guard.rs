//! The RAII guards. A guard owns exactly one hold of one class; dropping it
//! releases that hold, also during unwinding (there is no poisoning: both
//! classes are shared, so no holder can leave half-written data behind).

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use crossbeam_utils::CachePadded;

use crate::lock::TwoStateLock;
use crate::lockset::LockSet;
use crate::raw::Class;
use crate::thread::{self, Holds, Kind, Scoped};
use crate::validate::{self, Record, Site};

/// A hold of one class on a [`TwoStateLock`], released when dropped.
///
/// `!Send` and `!Sync`: the hold counts in this thread's state (it makes the
/// thread's later acquisitions nested), so it must be released here, and only
/// this thread may run [`faults_disabled`](Self::faults_disabled) with it.
/// Use [`ArcGuard`] for a hold that moves between threads.
///
/// ```compile_fail
/// fn assert_send<T: Send>() {}
/// assert_send::<two_state_lock::Guard<'static>>();
/// ```
///
/// ```
/// use two_state_lock::{Class, TwoStateLock};
/// let lock = TwoStateLock::new();
/// {
///     let _guard = lock.lock(Class::Block);
///     assert!(lock.try_lock(Class::Add).is_none());
/// }
/// assert!(lock.try_lock(Class::Add).is_some());
/// ```
#[must_use = "the hold is released as soon as the guard is dropped"]
pub struct Guard<'a> {
    lock: &'a TwoStateLock,
    class: Class,
    /// Lock validation's record of the hold (nothing when it is off).
    record: Record,
    _not_send_or_sync: PhantomData<*const ()>,
}

impl<'a> Guard<'a> {
    /// Wraps a hold the caller has just taken (asked for at `site`), and
    /// counts it in this thread.
    #[inline]
    pub(crate) fn new(lock: &'a TwoStateLock, class: Class, site: Site) -> Self {
        thread::hold_taken();
        Guard {
            lock,
            class,
            record: validate::acquired(LockSet::one(&lock.raw), class, site),
            _not_send_or_sync: PhantomData,
        }
    }

    /// The class of this hold.
    ///
    /// ```
    /// use two_state_lock::{Class, TwoStateLock};
    /// let lock = TwoStateLock::new();
    /// assert_eq!(lock.lock(Class::Block).class(), Class::Block);
    /// ```
    #[inline]
    #[must_use]
    pub fn class(&self) -> Class {
        self.class
    }

    /// Runs `f` with this guard's lock as this thread's innermost held
    /// mapping, so that faults inside `f` ([`TwoStateLock::fault_in`],
    /// [`TwoStateLock::lock_fault`]) follow the fault protocol; restores the
    /// previous held mappings afterwards, also when `f` panics.
    /// `locks_dropped` reports whether a fault cycle released and re-took
    /// this hold during `f` (then the caller's invalidation may be stale).
    ///
    /// # Panics
    ///
    /// When this guard already has an active scope on this thread (one hold
    /// cannot be cycled twice).
    ///
    /// ```
    /// use two_state_lock::{Class, TwoStateLock};
    /// let file = TwoStateLock::new();
    /// let dio = file.lock(Class::Block);
    /// // A direct write whose source buffer is mapped from the same file:
    /// // the fault cycles this hold and completes.
    /// let pinned = dio.faults_disabled(|| file.fault_in(|| "page pinned"));
    /// assert_eq!(pinned.value, "page pinned");
    /// assert!(pinned.locks_dropped); // re-invalidate before the I/O
    /// ```
    pub fn faults_disabled<R>(&self, f: impl FnOnce() -> R) -> Scoped<R> {
        thread::with_scope(self.holds(), f)
    }

    /// This hold as held mappings.
    pub(crate) fn holds(&self) -> Holds<'_> {
        Holds {
            locks: LockSet::one(&self.lock.raw),
            class: self.class,
            kind: Kind::Guard,
            owner: self as *const Self as *const (),
            record: self.record,
        }
    }

    /// The lock this guard holds.
    ///
    /// ```
    /// use two_state_lock::{Class, TwoStateLock};
    /// let lock = TwoStateLock::new();
    /// let g = lock.lock(Class::Add);
    /// assert!(std::ptr::eq(g.lock(), &lock));
    /// ```
    #[inline]
    #[must_use]
    pub fn lock(&self) -> &'a TwoStateLock {
        self.lock
    }
}

impl Drop for Guard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.lock.raw.unlock(self.class);
        thread::holds_released(1);
        validate::released(self.record);
    }
}

impl fmt::Debug for Guard<'_> {
    /// ```
    /// use two_state_lock::{Class, TwoStateLock};
    /// let lock = TwoStateLock::new();
    /// let g = lock.lock(Class::Add);
    /// assert!(format!("{g:?}").starts_with("Guard { class: Add, lock: TwoStateLock { class: Add, holders: 1"));
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("class", &self.class)
            .field("lock", self.lock)
            .finish()
    }
}

/// A hold of one class on an `Arc<TwoStateLock>`, released when dropped,
/// on any thread. For asynchronous I/O: take it at submission, drop it at
/// completion; in a task, [`lock_arc_async`](TwoStateLock::lock_arc_async).
///
/// `Send` and `Sync`. The hold does not count as any thread's for nesting
/// (see [`TwoStateLock::lock_nested`]) except inside its scopes
/// ([`faults_disabled`](Self::faults_disabled),
/// [`faults_disabled_async`](Self::faults_disabled_async)), of which it
/// has one at a time: a scope can release and re-take the hold.
///
/// ```
/// use std::sync::Arc;
/// use two_state_lock::{Class, TwoStateLock};
/// let lock = Arc::new(TwoStateLock::new());
/// let write = lock.lock_arc(Class::Block);
/// let completion = std::thread::spawn(move || drop(write));
/// completion.join().unwrap();
/// assert!(lock.try_lock(Class::Add).is_some());
/// ```
#[must_use = "the hold is released as soon as the guard is dropped"]
pub struct ArcGuard {
    lock: Arc<TwoStateLock>,
    class: Class,
}

impl ArcGuard {
    #[inline]
    pub(crate) fn new(lock: Arc<TwoStateLock>, class: Class) -> Self {
        ArcGuard { lock, class }
    }

    /// The class of this hold.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use two_state_lock::{Class, TwoStateLock};
    /// let lock = Arc::new(TwoStateLock::new());
    /// assert_eq!(lock.lock_arc(Class::Add).class(), Class::Add);
    /// ```
    #[inline]
    #[must_use]
    pub fn class(&self) -> Class {
        self.class
    }

    /// The lock this guard holds.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use two_state_lock::{Class, TwoStateLock};
    /// let lock = Arc::new(TwoStateLock::new());
    /// let g = lock.lock_arc(Class::Add);
    /// assert!(Arc::ptr_eq(g.lock(), &lock));
    /// ```
    #[inline]
    #[must_use]
    pub fn lock(&self) -> &Arc<TwoStateLock> {
        &self.lock
    }

    /// As [`Guard::faults_disabled`]: while `f` runs, this hold is the
    /// thread's innermost held mapping, and acquisitions are nested.
    ///
    /// # Panics
    ///
    /// When this guard already has an active scope, on any thread.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use two_state_lock::{Class, TwoStateLock};
    /// let file = Arc::new(TwoStateLock::new());
    /// let aio = file.lock_arc(Class::Block);
    /// let r = aio.faults_disabled(|| file.fault_in(|| 7));
    /// assert_eq!((r.value, r.locks_dropped), (7, true));
    /// ```
    pub fn faults_disabled<R>(&self, f: impl FnOnce() -> R) -> Scoped<R> {
        let _claim = ScopeClaim::take(self as *const Self as *const ());
        thread::with_scope(self.holds(), f)
    }

    /// This hold as held mappings (counted as this thread's while a scope
    /// is active; lock validation does not track it).
    pub(crate) fn holds(&self) -> Holds<'_> {
        Holds {
            locks: LockSet::one(&self.lock.raw),
            class: self.class,
            kind: Kind::Arc,
            owner: self as *const Self as *const (),
            record: Record::NONE,
        }
    }

    /// The holds a task scope of this guard makes held mappings.
    pub(crate) fn task_holds(&self, site: Site) -> Holds<'_> {
        Holds {
            kind: Kind::Task(site),
            ..self.holds()
        }
    }
}

impl Drop for ArcGuard {
    #[inline]
    fn drop(&mut self) {
        self.lock.raw.unlock(self.class);
    }
}

impl fmt::Debug for ArcGuard {
    /// ```
    /// use std::sync::Arc;
    /// use two_state_lock::{Class, TwoStateLock};
    /// let lock = Arc::new(TwoStateLock::new());
    /// let g = lock.lock_arc(Class::Block);
    /// assert!(format!("{g:?}").starts_with("ArcGuard { class: Block"));
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArcGuard")
            .field("class", &self.class)
            .field("lock", &*self.lock)
            .finish()
    }
}

/// A hold of one class on a [`TwoStateLock`] taken by a task
/// ([`TwoStateLock::lock_async`], [`TwoStateLock::lock_nested_async`]),
/// released when dropped, on whichever thread the task runs then.
///
/// `Send` and `Sync`: the hold is the task's, not a thread's, so it does
/// not count in any thread's state, except inside its
/// [`faults_disabled_async`](Self::faults_disabled_async) scope, where it
/// is a held mapping of the task and makes the task's acquisitions nested.
/// Hold it across `.await`s freely: waiting tasks park, never block their
/// worker.
///
/// ```
/// use two_state_lock::{Class, TwoStateLock};
/// fn assert_send_sync<T: Send + Sync>(_: &T) {}
/// let lock = TwoStateLock::new();
/// futures::executor::block_on(async {
///     let dio = lock.lock_async(Class::Block).await;
///     assert_send_sync(&dio);
///     assert!(lock.try_lock(Class::Add).is_none());
/// });
/// assert!(lock.try_lock(Class::Add).is_some());
/// ```
#[must_use = "the hold is released as soon as the guard is dropped"]
pub struct AsyncGuard<'a> {
    lock: &'a TwoStateLock,
    class: Class,
}

impl<'a> AsyncGuard<'a> {
    #[inline]
    pub(crate) fn new(lock: &'a TwoStateLock, class: Class) -> Self {
        AsyncGuard { lock, class }
    }

    /// The holds a task scope of this guard makes held mappings.
    pub(crate) fn task_holds(&self, site: Site) -> Holds<'a> {
        Holds {
            locks: LockSet::one(&self.lock.raw),
            class: self.class,
            kind: Kind::Task(site),
            owner: self as *const Self as *const (),
            record: Record::NONE,
        }
    }

    /// The class of this hold.
    ///
    /// ```
    /// use two_state_lock::{Class, TwoStateLock};
    /// let lock = TwoStateLock::new();
    /// let g = futures::executor::block_on(lock.lock_async(Class::Add));
    /// assert_eq!(g.class(), Class::Add);
    /// ```
    #[inline]
    #[must_use]
    pub fn class(&self) -> Class {
        self.class
    }

    /// The lock this guard holds.
    ///
    /// ```
    /// use two_state_lock::{Class, TwoStateLock};
    /// let lock = TwoStateLock::new();
    /// let g = futures::executor::block_on(lock.lock_async(Class::Add));
    /// assert!(std::ptr::eq(g.lock(), &lock));
    /// ```
    #[inline]
    #[must_use]
    pub fn lock(&self) -> &'a TwoStateLock {
        self.lock
    }
}

impl Drop for AsyncGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.lock.raw.unlock(self.class);
    }
}

impl fmt::Debug for AsyncGuard<'_> {
    /// ```
    /// use two_state_lock::{Class, TwoStateLock};
    /// let lock = TwoStateLock::new();
    /// let g = futures::executor::block_on(lock.lock_async(Class::Block));
    /// assert!(format!("{g:?}").starts_with("AsyncGuard { class: Block, lock: TwoStateLock { class: Block, holders: 1"));
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncGuard")
            .field("class", &self.class)
            .field("lock", self.lock)
            .finish()
    }
}

/// The claim of a guard's one active scope, given back when dropped.
///
/// The guards with an active scope are kept in a small global table keyed
/// by the guard's address, not in the guard: a task's guard stays two
/// words with no interior mutability (a flag in `AsyncGuard` measured about
/// 6 ns more per uncontended `lock_async` and release, scope or not).
pub(crate) struct ScopeClaim(*const ());

// SAFETY: the pointer is only an address, never dereferenced.
unsafe impl Send for ScopeClaim {}

/// Buckets of the claims table: a scope begins and ends under one bucket's
/// mutex, held for a search of a short vector.
const CLAIM_BUCKETS: usize = 32;

static CLAIMS: [CachePadded<std::sync::Mutex<Vec<usize>>>; CLAIM_BUCKETS] =
    [const { CachePadded::new(std::sync::Mutex::new(Vec::new())) }; CLAIM_BUCKETS];

fn claims(guard: usize) -> std::sync::MutexGuard<'static, Vec<usize>> {
    // Guards are at least word-aligned: drop the low bits before hashing.
    let bucket = (guard >> 3).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (usize::BITS - 5);
    CLAIMS[bucket % CLAIM_BUCKETS]
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ScopeClaim {
    /// Claims the scope of the guard at `guard`.
    ///
    /// Panics if the guard already has an active scope (on any thread): one
    /// hold cannot be cycled twice.
    pub(crate) fn take(guard: *const ()) -> Self {
        let mut claims = claims(guard as usize);
        if claims.contains(&(guard as usize)) {
            drop(claims);
            panic!("two-state-lock: faults_disabled on a guard whose scope is already active");
        }
        claims.push(guard as usize);
        ScopeClaim(guard)
    }
}

impl Drop for ScopeClaim {
    fn drop(&mut self) {
        let mut claims = claims(self.0 as usize);
        if let Some(i) = claims.iter().position(|&g| g == self.0 as usize) {
            claims.swap_remove(i);
        }
    }
}
