//! `TwoStateLock`: the public lock, a thin layer over `RawLock` that decides
//! top-level versus nested from this thread's state and hands out guards.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::future::{ArcLockFuture, LockFuture};
use crate::guard::{ArcGuard, Guard};
use crate::lockset::LockSet;
use crate::raw::{Admission, Class, LockState, RawLock};
use crate::sync::const_fn_unless_loom;
use crate::thread;
use crate::validate::{self, Site};

/// A lock with two mutually exclusive shared classes, [`Class::Add`] and
/// [`Class::Block`]: any number of holders of one class at once, never both.
///
/// Top-level acquisitions are phase-fair: once a thread of one class sleeps,
/// new arrivals of the holding class wait, and the lock passes to the waiting
/// class when the holders drain. Nested acquisitions (by a thread that already
/// holds a [`Guard`] or has a held-mapping token active) never wait behind a
/// waiter, only while the other class holds. See the crate docs.
///
/// 16 bytes; uncontended acquire and release are one compare-and-swap each.
///
/// ```
/// use two_state_lock::{Class, TwoStateLock};
///
/// let lock = TwoStateLock::new();
/// let a = lock.lock(Class::Block);
/// let b = lock.lock(Class::Block); // blockers share the lock
/// assert!(lock.try_lock(Class::Add).is_none()); // adders are kept out
/// drop((a, b));
/// assert!(lock.try_lock(Class::Add).is_some());
/// ```
// `repr(transparent)`: a slice of locks (a `LockTable`) is a slice of raw
// locks, which is how the thread state sees it (`raw_locks`).
#[repr(transparent)]
pub struct TwoStateLock {
    pub(crate) raw: RawLock,
}

impl TwoStateLock {
    const_fn_unless_loom! {
        /// A free lock.
        ///
        /// ```
        /// use two_state_lock::TwoStateLock;
        /// static LOCK: TwoStateLock = TwoStateLock::new();
        /// assert_eq!(LOCK.state().holders, 0);
        /// ```
        #[must_use]
        pub fn new() -> Self {
            Self { raw: RawLock::new() }
        }
    }

    /// Takes a hold of `class`, sleeping while the other class holds the lock
    /// (and, for a top-level acquisition, while the other class waits for its
    /// turn).
    ///
    /// Taking the other class of a lock this thread already holds deadlocks,
    /// as a read-then-write does on a reader/writer lock.
    ///
    /// # Panics
    ///
    /// When the lock already has [`MAX_HOLDERS`](crate::MAX_HOLDERS) holders;
    /// the lock is left unchanged.
    ///
    /// ```
    /// use two_state_lock::{Class, TwoStateLock};
    /// let lock = TwoStateLock::new();
    /// let guard = lock.lock(Class::Add);
    /// assert_eq!(guard.class(), Class::Add);
    /// ```
    #[inline]
    #[cfg_attr(validate, track_caller)]
    pub fn lock(&self, class: Class) -> Guard<'_> {
        self.lock_at(class, Site::caller(), true)
    }

    /// [`lock`](Self::lock) on behalf of the caller at `site`; `order`:
    /// lock validation counts it in the lock order (`lock_nested` and the
    /// untimed fallback of a timed acquisition do not).
    #[inline]
    pub(crate) fn lock_at(&self, class: Class, site: Site, order: bool) -> Guard<'_> {
        validate::before_blocking(LockSet::one(&self.raw), class, site, order);
        self.acquire(class);
        Guard::new(self, class, site)
    }

    /// Takes a hold of `class` as a nested acquisition: it waits only while
    /// the other class *holds* the lock, never behind a waiting thread.
    ///
    /// [`lock`](Self::lock) already does this on a thread that holds a
    /// [`Guard`] or has a held-mapping token active. Use `lock_nested` when
    /// this thread holds something the crate cannot see: an [`ArcGuard`], or
    /// a lock of another kind that a thread waiting here may need. Otherwise
    /// a fair queue could put this thread behind a waiter that waits for it.
    /// Using it everywhere gives up phase fairness.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use two_state_lock::{Class, TwoStateLock};
    /// let file = Arc::new(TwoStateLock::new());
    /// let in_flight = file.lock_arc(Class::Block); // an async direct write
    /// let other = TwoStateLock::new();
    /// let fault = other.lock_nested(Class::Add); // never queues behind a waiter
    /// # drop((fault, in_flight));
    /// ```
    #[inline]
    #[cfg_attr(validate, track_caller)]
    pub fn lock_nested(&self, class: Class) -> Guard<'_> {
        let site = Site::caller();
        validate::before_blocking(LockSet::one(&self.raw), class, site, false);
        self.raw.lock(class, Admission::Nested);
        Guard::new(self, class, site)
    }

    /// Takes a hold of `class` if the lock admits it now, under the same rules
    /// as [`lock`](Self::lock). Never blocks.
    ///
    /// # Panics
    ///
    /// When the lock already has [`MAX_HOLDERS`](crate::MAX_HOLDERS) holders.
    ///
    /// ```
    /// use two_state_lock::{Class, TwoStateLock};
    /// let lock = TwoStateLock::new();
    /// let add = lock.try_lock(Class::Add).unwrap();
    /// assert!(lock.try_lock(Class::Block).is_none());
    /// # drop(add);
    /// ```
    #[inline]
    #[cfg_attr(validate, track_caller)]
    pub fn try_lock(&self, class: Class) -> Option<Guard<'_>> {
        self.try_lock_at(class, Site::caller())
    }

    /// [`try_lock`](Self::try_lock) on behalf of the caller at `site`.
    #[inline]
    pub(crate) fn try_lock_at(&self, class: Class, site: Site) -> Option<Guard<'_>> {
        self.try_acquire(class)
            .then(|| Guard::new(self, class, site))
    }

    /// Like [`lock`](Self::lock), but gives up after `timeout`: `None` if
    /// the lock did not admit `class` by then. Waits at most about
    /// `timeout` (plus scheduling slack); a waiter that gives up leaves no
    /// trace in the lock, and passes on a hand-off to its class if it was
    /// the last of its class waiting. Judged top-level or nested as `lock`
    /// is, so a nested timed acquisition never queues behind a waiter.
    ///
    /// Storage engines use it to surface a stuck device (a direct I/O that
    /// never completes holds `Block`) instead of hanging. Lock validation
    /// reports a self-deadlock (this thread holds the other class), which
    /// would only ever time out, but does not count a timed acquisition in
    /// the lock order: it cannot wait forever.
    ///
    /// # Panics
    ///
    /// As [`lock`](Self::lock).
    ///
    /// ```
    /// use std::time::Duration;
    /// use two_state_lock::{Class, TwoStateLock};
    /// let lock = TwoStateLock::new();
    /// let dio = lock.lock(Class::Block);
    /// std::thread::scope(|s| {
    ///     s.spawn(|| {
    ///         let add = lock.try_lock_for(Class::Add, Duration::from_millis(10));
    ///         assert!(add.is_none()); // the direct I/O is stuck
    ///     });
    /// });
    /// drop(dio);
    /// assert!(lock.try_lock_for(Class::Add, Duration::from_millis(10)).is_some());
    /// ```
    #[inline]
    #[cfg_attr(validate, track_caller)]
    pub fn try_lock_for(&self, class: Class, timeout: Duration) -> Option<Guard<'_>> {
        let site = Site::caller();
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.try_lock_until_at(class, deadline, site),
            // Further than `Instant` reaches: no deadline at all.
            None => Some(self.lock_at(class, site, false)),
        }
    }

    /// Like [`try_lock_for`](Self::try_lock_for), giving up at `deadline`.
    /// A deadline already past makes it a [`try_lock`](Self::try_lock)
    /// that also waits out a compare-and-swap lost to another thread.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use two_state_lock::{Class, TwoStateLock};
    /// let lock = TwoStateLock::new();
    /// let deadline = Instant::now() + Duration::from_secs(1);
    /// let a = lock.try_lock_until(Class::Add, deadline).unwrap();
    /// let b = lock.try_lock_until(Class::Add, deadline).unwrap(); // shared
    /// # drop((a, b));
    /// ```
    #[inline]
    #[cfg_attr(validate, track_caller)]
    pub fn try_lock_until(&self, class: Class, deadline: Instant) -> Option<Guard<'_>> {
        self.try_lock_until_at(class, deadline, Site::caller())
    }

    /// [`try_lock_until`](Self::try_lock_until) on behalf of the caller at
    /// `site`.
    fn try_lock_until_at(&self, class: Class, deadline: Instant, site: Site) -> Option<Guard<'_>> {
        validate::before_blocking(LockSet::one(&self.raw), class, site, false);
        self.acquire_until(class, deadline)
            .then(|| Guard::new(self, class, site))
    }

    /// Under loom: every timed wait on this lock times out now (time does
    /// not pass under loom; a model fires the timers at a point it picks).
    #[cfg(loom)]
    #[doc(hidden)]
    pub fn fire_timers_for_loom(&self) {
        self.raw.fire_timers();
    }

    /// Like [`lock`](Self::lock), for a hold that outlives the borrow: taken
    /// at submission of an asynchronous I/O and released at its completion,
    /// possibly on another thread. The hold does not make this thread's later
    /// acquisitions nested; see [`lock_nested`](Self::lock_nested).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use two_state_lock::{Class, TwoStateLock};
    /// let lock = Arc::new(TwoStateLock::new());
    /// let hold = lock.lock_arc(Class::Block);
    /// std::thread::spawn(move || drop(hold)).join().unwrap();
    /// assert_eq!(lock.state().holders, 0);
    /// ```
    #[inline]
    #[cfg_attr(validate, track_caller)]
    pub fn lock_arc(self: &Arc<Self>, class: Class) -> ArcGuard {
        validate::before_blocking(LockSet::one(&self.raw), class, Site::caller(), true);
        self.acquire(class);
        ArcGuard::new(Arc::clone(self), class)
    }

    /// Like [`try_lock`](Self::try_lock), returning an [`ArcGuard`].
    ///
    /// ```
    /// use std::sync::Arc;
    /// use two_state_lock::{Class, TwoStateLock};
    /// let lock = Arc::new(TwoStateLock::new());
    /// let add = lock.try_lock_arc(Class::Add).unwrap();
    /// assert!(lock.try_lock_arc(Class::Block).is_none());
    /// # drop(add);
    /// ```
    #[inline]
    pub fn try_lock_arc(self: &Arc<Self>, class: Class) -> Option<ArcGuard> {
        self.try_acquire(class)
            .then(|| ArcGuard::new(Arc::clone(self), class))
    }

    /// Takes a hold of `class` from async code: the future waits without
    /// blocking its worker thread and resolves to an [`AsyncGuard`](crate::AsyncGuard), which
    /// is `Send` and may be held across `.await`s. Threads and tasks wait
    /// in one phase-fair order: a waiting task of one class stops new
    /// top-level arrivals of the other as a waiting thread does, and a
    /// hand-off admits the class's threads and tasks together.
    ///
    /// The acquisition is judged as a blocking one is, by what the polling
    /// thread holds at the first poll: inside a task's
    /// [`faults_disabled_async`](crate::AsyncGuard::faults_disabled_async)
    /// scope the scope's holds are the task's, so it is nested and never
    /// queues behind a waiter; elsewhere it is top-level (it queues behind
    /// waiters of the other class). A task that holds a guard outside any
    /// scope, or anything a waiter here may wait for, takes
    /// [`lock_nested_async`](Self::lock_nested_async).
    ///
    /// Cancel-safe: dropping the future at any point leaves the lock as if
    /// it had never asked, save that a hand-off it was part of goes on to
    /// the waiters behind it. So `tokio::time::timeout` around it is a timed
    /// acquisition. A future that was woken by a hand-off and is then
    /// neither polled nor dropped keeps its class's turn open, as in every
    /// async lock: the other class waits until it is polled or dropped.
    /// Lock validation sees it as a blocking acquisition against the holds
    /// of the task's linked scopes (and of the polling thread); holds
    /// outside a scope it cannot see.
    ///
    /// # Panics
    ///
    /// When polled, as [`lock`](Self::lock) at the holder limit.
    ///
    /// ```
    /// use two_state_lock::{Class, TwoStateLock};
    /// let file = TwoStateLock::new();
    /// futures::executor::block_on(async {
    ///     let w1 = file.lock_async(Class::Block).await;
    ///     let w2 = file.lock_async(Class::Block).await; // direct I/Os share it
    ///     assert!(file.try_lock(Class::Add).is_none());
    ///     drop((w1, w2));
    ///     let _read = file.lock_async(Class::Add).await;
    /// });
    /// ```
    #[inline]
    #[cfg_attr(validate, track_caller)]
    pub fn lock_async(&self, class: Class) -> LockFuture<'_> {
        LockFuture::new(self, class, false, Site::caller())
    }

    /// [`lock_async`](Self::lock_async) on behalf of the caller at `site`.
    #[inline]
    pub(crate) fn lock_async_at(&self, class: Class, site: Site) -> LockFuture<'_> {
        LockFuture::new(self, class, false, site)
    }

    /// As [`lock_async`](Self::lock_async), as a nested acquisition: it
    /// waits only while the other class *holds* the lock, never behind a
    /// waiter. For a task that holds an [`AsyncGuard`](crate::AsyncGuard), an [`ArcGuard`] or
    /// another lock that a waiter here may need (a task holding `Add` that
    /// takes `Add` again while `Block` waits would otherwise wait for a
    /// phase that waits for it).
    ///
    /// ```
    /// use two_state_lock::{Class, TwoStateLock};
    /// let lock = TwoStateLock::new();
    /// futures::executor::block_on(async {
    ///     let read = lock.lock_async(Class::Add).await;
    ///     let again = lock.lock_nested_async(Class::Add).await;
    ///     # drop((read, again));
    /// });
    /// ```
    #[inline]
    #[cfg_attr(validate, track_caller)]
    pub fn lock_nested_async(&self, class: Class) -> LockFuture<'_> {
        LockFuture::new(self, class, true, Site::caller())
    }

    /// As [`lock_async`](Self::lock_async), resolving to an [`ArcGuard`]:
    /// the future is `'static`, for a task spawned with the lock's `Arc`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use two_state_lock::{Class, TwoStateLock};
    /// let lock = Arc::new(TwoStateLock::new());
    /// let write = lock.lock_arc_async(Class::Block); // 'static: spawnable
    /// let guard = futures::executor::block_on(write);
    /// assert_eq!(guard.class(), Class::Block);
    /// ```
    #[inline]
    #[cfg_attr(validate, track_caller)]
    pub fn lock_arc_async(self: &Arc<Self>, class: Class) -> ArcLockFuture {
        ArcLockFuture::new(Arc::clone(self), class, Site::caller())
    }

    /// Takes one hold of `class`, judged top-level or nested by this thread's
    /// state, which is read only when the fast path fails.
    #[inline]
    pub(crate) fn acquire(&self, class: Class) {
        if let Err(state) = self.raw.try_lock_fast(class) {
            self.raw.lock_contended(state, class, thread::admission());
        }
    }

    /// As [`acquire`](Self::acquire), giving up at `deadline`: whether it
    /// took the hold.
    #[inline]
    pub(crate) fn acquire_until(&self, class: Class, deadline: Instant) -> bool {
        match self.raw.try_lock_fast(class) {
            Ok(()) => true,
            Err(state) => {
                self.raw
                    .lock_contended_until(state, class, thread::admission(), deadline)
            }
        }
    }

    /// As [`acquire`](Self::acquire), if the lock admits it now.
    #[inline]
    pub(crate) fn try_acquire(&self, class: Class) -> bool {
        match self.raw.try_lock_fast(class) {
            Ok(()) => true,
            Err(state) => self.raw.try_lock_from(state, class, thread::admission()),
        }
    }

    /// A snapshot of the lock's state: holders, class, who waits.
    ///
    /// ```
    /// use two_state_lock::{Class, TwoStateLock};
    /// let lock = TwoStateLock::new();
    /// let _g = lock.lock(Class::Add);
    /// assert_eq!(lock.state().holders, 1);
    /// assert_eq!(lock.state().class, Class::Add);
    /// ```
    #[must_use]
    pub fn state(&self) -> LockState {
        self.raw.snapshot()
    }
}

/// The raw locks of a slice of locks.
pub(crate) fn raw_locks(locks: &[TwoStateLock]) -> &[RawLock] {
    // SAFETY: `TwoStateLock` is `repr(transparent)` over `RawLock`, so the
    // two slices have the same layout; the borrow is carried over.
    unsafe { std::slice::from_raw_parts(locks.as_ptr().cast::<RawLock>(), locks.len()) }
}

impl Default for TwoStateLock {
    /// A free lock, as [`TwoStateLock::new`].
    ///
    /// ```
    /// use two_state_lock::TwoStateLock;
    /// assert_eq!(TwoStateLock::default().state().holders, 0);
    /// ```
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for TwoStateLock {
    /// Shows the holding class (or whose turn it is), the holder count and
    /// which classes wait.
    ///
    /// ```
    /// use two_state_lock::{Class, TwoStateLock};
    /// let lock = TwoStateLock::new();
    /// let _g = lock.lock(Class::Block);
    /// assert_eq!(
    ///     format!("{lock:?}"),
    ///     "TwoStateLock { class: Block, holders: 1, add_waiters: 0, block_waiters: 0 }"
    /// );
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.state();
        f.debug_struct("TwoStateLock")
            .field("class", &s.class)
            .field("holders", &s.holders)
            .field("add_waiters", &s.add_waiters)
            .field("block_waiters", &s.block_waiters)
            .finish()
    }
}

// `TwoStateLock` is Send + Sync automatically: it holds only atomics, and all
// of its methods take `&self`.

#[cfg(validate)]
impl Drop for TwoStateLock {
    /// Lock validation forgets the lock's orders, so that a new lock at the
    /// same address starts with none.
    fn drop(&mut self) {
        validate::lock_dropped(&self.raw);
    }
}
