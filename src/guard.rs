//! The RAII guards. A guard owns exactly one hold of one class; dropping it
//! releases that hold, also during unwinding (there is no poisoning: both
//! classes are shared, so no holder can leave half-written data behind).

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::fault::{self, FaultError, Scoped};
use crate::lock::TwoStateLock;
use crate::raw::Class;

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
    _not_send_or_sync: PhantomData<*const ()>,
}

impl<'a> Guard<'a> {
    /// Wraps a hold the caller has just taken, and counts it in this thread.
    #[inline]
    pub(crate) fn new(lock: &'a TwoStateLock, class: Class) -> Self {
        fault::guard_taken();
        Guard {
            lock,
            class,
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

    /// Runs `f` with this thread's held mapping set to this guard's lock, so
    /// that [`TwoStateLock::lock_fault`] calls inside `f` follow the fault
    /// protocol; restores the previous held mapping afterwards, also when `f`
    /// panics. `locks_dropped` reports whether this hold was released and
    /// re-taken during `f` (then the caller's invalidation may be stale).
    ///
    /// # Panics
    ///
    /// When this guard already has an active scope on this thread (one hold
    /// cannot be cycled twice).
    ///
    /// ```
    /// use two_state_lock::{Class, FaultError, TwoStateLock};
    /// let file = TwoStateLock::new();
    /// let dio = file.lock(Class::Block);
    /// let pinned = dio.faults_disabled(|| file.lock_fault().map(drop));
    /// assert_eq!(pinned.value, Err(FaultError::SameMapping));
    /// assert!(!pinned.locks_dropped);
    /// ```
    pub fn faults_disabled<R>(&self, f: impl FnOnce() -> R) -> Scoped<R> {
        let owner = self as *const Self as *const ();
        fault::with_scope(self.lock, self.class, true, owner, f)
    }

    /// The cycle-and-retry loop: runs `step` under
    /// [`faults_disabled`](Self::faults_disabled) until it returns `Ok`.
    ///
    /// `step` continues from where it got to (it keeps its own progress) and
    /// returns [`FaultError::OrderingViolation`] when a fault inside it did.
    /// Whenever this hold was cycled, `revalidate` runs before `step` is
    /// called again: re-invalidate what is left to do. `SameMapping` is
    /// returned at once: the caller fails the access with a bad-address
    /// error.
    ///
    /// ```
    /// use two_state_lock::{Class, FaultError, TwoStateLock};
    /// let (file, buffer_file) = (TwoStateLock::new(), TwoStateLock::new());
    /// let dio = file.lock(Class::Block);
    /// let mut pinned = 0;
    /// let result = dio.retry_faults(
    ///     || { /* evict the range not yet written from the cache */ },
    ///     || {
    ///         while pinned < 4 {
    ///             let page = buffer_file.lock_fault()?; // fault one page in
    ///             drop(page);
    ///             pinned += 1;
    ///         }
    ///         Ok(pinned)
    ///     },
    /// );
    /// assert_eq!(result, Ok(4));
    /// ```
    pub fn retry_faults<R>(
        &self,
        revalidate: impl FnMut(),
        step: impl FnMut() -> Result<R, FaultError>,
    ) -> Result<R, FaultError> {
        let owner = self as *const Self as *const ();
        fault::retry(self.lock, self.class, true, owner, revalidate, step)
    }
}

impl Drop for Guard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.lock.raw.unlock(self.class);
        fault::guard_released();
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
/// completion.
///
/// `Send` but `!Sync`: only the thread that has it may run
/// [`faults_disabled`](Self::faults_disabled), which can release and re-take
/// the hold. The hold does not count as this thread's for nesting; see
/// [`TwoStateLock::lock_nested`].
///
/// ```compile_fail
/// fn assert_sync<T: Sync>() {}
/// assert_sync::<two_state_lock::ArcGuard>();
/// ```
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
    _not_sync: PhantomData<Cell<()>>,
}

impl ArcGuard {
    #[inline]
    pub(crate) fn new(lock: Arc<TwoStateLock>, class: Class) -> Self {
        ArcGuard {
            lock,
            class,
            _not_sync: PhantomData,
        }
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
    /// thread's held mapping, and acquisitions are nested.
    ///
    /// # Panics
    ///
    /// When this guard already has an active scope on this thread.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use two_state_lock::{Class, FaultError, TwoStateLock};
    /// let file = Arc::new(TwoStateLock::new());
    /// let aio = file.lock_arc(Class::Block);
    /// let r = aio.faults_disabled(|| file.lock_fault().map(drop));
    /// assert_eq!(r.value, Err(FaultError::SameMapping));
    /// ```
    pub fn faults_disabled<R>(&self, f: impl FnOnce() -> R) -> Scoped<R> {
        let owner = self as *const Self as *const ();
        fault::with_scope(&self.lock, self.class, false, owner, f)
    }

    /// As [`Guard::retry_faults`].
    ///
    /// ```
    /// use std::sync::Arc;
    /// use two_state_lock::{Class, TwoStateLock};
    /// let (file, other) = (Arc::new(TwoStateLock::new()), TwoStateLock::new());
    /// let aio = file.lock_arc(Class::Block);
    /// let r = aio.retry_faults(|| {}, || other.lock_fault().map(|g| g.class()));
    /// assert_eq!(r, Ok(Class::Add));
    /// ```
    pub fn retry_faults<R>(
        &self,
        revalidate: impl FnMut(),
        step: impl FnMut() -> Result<R, FaultError>,
    ) -> Result<R, FaultError> {
        let owner = self as *const Self as *const ();
        fault::retry(&self.lock, self.class, false, owner, revalidate, step)
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
