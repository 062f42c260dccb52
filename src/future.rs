//! Async acquisition: futures that wait for a hold through the same
//! [`Waiter`] steps as a blocking thread (so threads and tasks wait in one
//! phase-fair order, SPEC §11.2.1), parked in `crate::task_wait` instead of
//! a futex.
//!
//! Cancel safety is the waiter's: a future dropped at any point leaves
//! through [`RawLock::leave`], as an unwinding thread does, and gives its
//! parking entry back; a range future also releases the locks it took.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::guard::{ArcGuard, AsyncGuard};
use crate::lock::TwoStateLock;
use crate::lockset::LockSet;
use crate::raw::{Admission, Class, RawLock, SignUp, Waiter};
use crate::table::{AsyncRangeGuard, LockTable};
use crate::task_wait::{self, Parking};
use crate::thread;
use crate::validate::{self, Site};

/// One task's wait for one hold of one lock, kept in its future between
/// polls. The lock is passed in on every call (a future owning an `Arc`
/// cannot also borrow it).
#[derive(Debug)]
pub(crate) struct TaskWait {
    waiter: Waiter,
    /// The hold was taken (and handed to a guard).
    done: bool,
    /// Judge the admission by the polling thread's holds (those of the
    /// task's linked scopes among them) at the first poll, when the fast
    /// path fails, as a blocking acquisition does.
    judge: bool,
    parking: Parking,
}

impl TaskWait {
    /// A wait with a fixed admission.
    pub(crate) fn new(class: Class, admission: Admission) -> Self {
        TaskWait {
            waiter: Waiter::new(class, admission),
            done: false,
            judge: false,
            parking: Parking::default(),
        }
    }

    /// A wait judged top-level or nested at its first poll, by what the
    /// polling thread holds then: nested inside a task's
    /// `faults_disabled_async` scope (SPEC §11.2.5).
    pub(crate) fn judged(class: Class) -> Self {
        TaskWait {
            judge: true,
            ..TaskWait::new(class, Admission::TopLevel)
        }
    }

    /// Not polled yet.
    fn is_unpolled(&self) -> bool {
        !self.done && !self.waiter.is_counted()
    }

    /// Ready with the class once the hold of `lock` is taken, which the
    /// caller then wraps in a guard.
    ///
    /// Panics when polled again after that.
    fn poll_hold(&mut self, lock: &RawLock, cx: &Context<'_>) -> Poll<Class> {
        if self.done {
            polled_after_completion();
        }
        let taken = self.poll(lock, cx);
        self.done = taken.is_ready();
        taken.map(|()| self.waiter.class())
    }

    /// Ready once the hold of `lock` is taken.
    pub(crate) fn poll(&mut self, lock: &RawLock, cx: &Context<'_>) -> Poll<()> {
        let class = self.waiter.class();
        if !self.waiter.is_counted() {
            // Not signed up yet (the first poll): the uncontended
            // acquisition, as a blocking one makes it.
            match lock.try_lock_fast(class) {
                Ok(()) => return Poll::Ready(()),
                Err(state) => {
                    if std::mem::take(&mut self.judge) {
                        self.waiter = Waiter::new(class, thread::admission());
                    }
                    if lock.try_lock_from(state, class, self.waiter.first_admission()) {
                        return Poll::Ready(());
                    }
                }
            }
        } else if lock.woken(&mut self.waiter) {
            // Parked, and polled again.
            return self.entered(lock);
        }
        // No spinning: a task that cannot enter parks at once, and its
        // worker runs other tasks.
        loop {
            match lock.sign_up(&mut self.waiter) {
                SignUp::Entered => return self.entered(lock),
                SignUp::Again => {}
                SignUp::Wait(seen) => {
                    let word = lock.wake_word(class);
                    if task_wait::park(word, &mut self.parking, seen, cx.waker()) {
                        return Poll::Pending;
                    }
                    // The word moved before the waker was stored: woken.
                    if lock.woken(&mut self.waiter) {
                        return self.entered(lock);
                    }
                }
            }
        }
    }

    fn entered(&mut self, lock: &RawLock) -> Poll<()> {
        task_wait::leave(lock.wake_word(self.waiter.class()), &mut self.parking);
        Poll::Ready(())
    }

    /// The wait ends without the hold (its future is dropped): gives the
    /// parking entry back and leaves the lock as an unwinding thread does.
    /// Does nothing after the hold was taken.
    pub(crate) fn cancel(&mut self, lock: &RawLock) {
        task_wait::leave(lock.wake_word(self.waiter.class()), &mut self.parking);
        lock.leave(&mut self.waiter);
    }

    fn is_waiting(&self) -> bool {
        self.waiter.is_counted()
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn polled_after_completion() -> ! {
    panic!("two-state-lock: an acquisition future was polled after it completed")
}

/// The future of [`TwoStateLock::lock_async`] and
/// [`TwoStateLock::lock_nested_async`]: resolves to an [`AsyncGuard`].
///
/// Dropping it at any point (before its first poll, while it waits, after
/// a hand-off woke it) leaves the lock as if it had never asked, except that
/// a hand-off it was part of goes on to the waiters behind it. `Send` and
/// `Sync`; a wait allocates nothing once the task wait table has room.
///
/// ```
/// use two_state_lock::{Class, TwoStateLock};
/// let lock = TwoStateLock::new();
/// let guard = futures::executor::block_on(lock.lock_async(Class::Block));
/// assert_eq!(guard.class(), Class::Block);
/// ```
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct LockFuture<'a> {
    lock: &'a TwoStateLock,
    wait: TaskWait,
    /// Where it was asked for, and whether lock validation counts it in the
    /// lock order (`lock_async` does, `lock_nested_async` does not).
    site: Site,
    order: bool,
}

impl<'a> LockFuture<'a> {
    /// `nested`: a nested acquisition (else judged at the first poll).
    pub(crate) fn new(lock: &'a TwoStateLock, class: Class, nested: bool, site: Site) -> Self {
        LockFuture {
            lock,
            wait: if nested {
                TaskWait::new(class, Admission::Nested)
            } else {
                TaskWait::judged(class)
            },
            site,
            order: !nested,
        }
    }
}

impl<'a> Future for LockFuture<'a> {
    type Output = AsyncGuard<'a>;

    /// # Panics
    ///
    /// When the lock is at its holder limit (the future stays cancel-safe:
    /// dropping it uncounts it), or when polled after it completed.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<AsyncGuard<'a>> {
        let this = self.get_mut();
        let lock = this.lock;
        if this.wait.is_unpolled() {
            // Sees the holds of the task's linked scopes (SPEC §11.2.6).
            validate::before_blocking(
                LockSet::one(&lock.raw),
                this.wait.waiter.class(),
                this.site,
                this.order,
            );
        }
        this.wait
            .poll_hold(&lock.raw, cx)
            .map(|class| AsyncGuard::new(lock, class))
    }
}

impl Drop for LockFuture<'_> {
    fn drop(&mut self) {
        self.wait.cancel(&self.lock.raw);
    }
}

impl fmt::Debug for LockFuture<'_> {
    /// ```
    /// use two_state_lock::{Class, TwoStateLock};
    /// let lock = TwoStateLock::new();
    /// let f = lock.lock_async(Class::Add);
    /// assert!(format!("{f:?}").starts_with("LockFuture { class: Add, waiting: false"));
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockFuture")
            .field("class", &self.wait.waiter.class())
            .field("waiting", &self.wait.is_waiting())
            .field("lock", self.lock)
            .finish()
    }
}

/// The future of [`TwoStateLock::lock_arc_async`]: resolves to an
/// [`ArcGuard`]. `'static`, `Send` and `Sync`, cancel-safe as
/// [`LockFuture`].
///
/// ```
/// use std::sync::Arc;
/// use two_state_lock::{Class, TwoStateLock};
/// let lock = Arc::new(TwoStateLock::new());
/// let guard = futures::executor::block_on(lock.lock_arc_async(Class::Add));
/// assert!(Arc::ptr_eq(guard.lock(), &lock));
/// ```
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct ArcLockFuture {
    lock: Arc<TwoStateLock>,
    wait: TaskWait,
    site: Site,
}

impl ArcLockFuture {
    pub(crate) fn new(lock: Arc<TwoStateLock>, class: Class, site: Site) -> Self {
        ArcLockFuture {
            lock,
            wait: TaskWait::judged(class),
            site,
        }
    }
}

impl Future for ArcLockFuture {
    type Output = ArcGuard;

    /// # Panics
    ///
    /// As [`LockFuture`]'s.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<ArcGuard> {
        let this = self.get_mut();
        let lock = &this.lock;
        if this.wait.is_unpolled() {
            let class = this.wait.waiter.class();
            validate::before_blocking(LockSet::one(&lock.raw), class, this.site, true);
        }
        this.wait
            .poll_hold(&lock.raw, cx)
            .map(|class| ArcGuard::new(Arc::clone(lock), class))
    }
}

impl Drop for ArcLockFuture {
    fn drop(&mut self) {
        self.wait.cancel(&self.lock.raw);
    }
}

impl fmt::Debug for ArcLockFuture {
    /// ```
    /// use std::sync::Arc;
    /// use two_state_lock::{Class, TwoStateLock};
    /// let lock = Arc::new(TwoStateLock::new());
    /// let f = lock.lock_arc_async(Class::Block);
    /// assert!(format!("{f:?}").starts_with("ArcLockFuture { class: Block, waiting: false"));
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArcLockFuture")
            .field("class", &self.wait.waiter.class())
            .field("waiting", &self.wait.is_waiting())
            .field("lock", &*self.lock)
            .finish()
    }
}

/// The future of [`LockTable::lock_range_async`]: takes the range's locks
/// one at a time in ascending table order, as
/// [`lock_range`](LockTable::lock_range) does (the first judged
/// top-level, the others nested), and resolves to an [`AsyncRangeGuard`].
///
/// Dropped half-way, it releases the locks it took and leaves the one it
/// waits for as [`LockFuture`] does.
///
/// ```
/// use two_state_lock::{Class, LockTable};
/// let table = LockTable::new(64);
/// let dio = futures::executor::block_on(table.lock_range_async(1, 0..4, Class::Block));
/// assert_eq!(dio.lock_count(), 4);
/// ```
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct RangeLockFuture<'a> {
    table: &'a LockTable,
    first: u32,
    len: u32,
    class: Class,
    /// Locks taken so far: the first `taken` of the set.
    taken: u32,
    /// The wait for lock `taken`.
    wait: TaskWait,
    done: bool,
    site: Site,
}

impl<'a> RangeLockFuture<'a> {
    pub(crate) fn new(
        table: &'a LockTable,
        first: u32,
        len: u32,
        class: Class,
        site: Site,
    ) -> Self {
        RangeLockFuture {
            table,
            first,
            len,
            class,
            taken: 0,
            wait: TaskWait::judged(class),
            done: false,
            site,
        }
    }

    fn set(&self) -> LockSet<'a> {
        self.table.lock_set(self.first, self.len)
    }
}

impl<'a> Future for RangeLockFuture<'a> {
    type Output = AsyncRangeGuard<'a>;

    /// # Panics
    ///
    /// As [`LockFuture`]'s.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<AsyncRangeGuard<'a>> {
        let this = self.get_mut();
        if this.done {
            polled_after_completion();
        }
        let set = this.set();
        if this.taken == 0 && this.wait.is_unpolled() {
            validate::before_blocking(set, this.class, this.site, true);
        }
        while this.taken < this.len {
            if this
                .wait
                .poll(set.get(this.taken as usize), cx)
                .is_pending()
            {
                return Poll::Pending;
            }
            this.taken += 1;
            // The locks after the first are nested acquisitions: this task
            // holds the first, so it must not queue behind a waiter.
            this.wait = TaskWait::new(this.class, Admission::Nested);
        }
        this.done = true;
        Poll::Ready(AsyncRangeGuard::new(
            this.table, this.first, this.len, this.class,
        ))
    }
}

impl Drop for RangeLockFuture<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        /// Releases the locks taken, also if leaving the one waited for
        /// unwinds (a waker that panics when the leave passes a turn on).
        struct Release<'a>(LockSet<'a>, Class, u32);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.unlock(self.1, 0, self.2 as usize);
            }
        }
        let set = self.set();
        let _release = Release(set, self.class, self.taken);
        if self.taken < self.len {
            self.wait.cancel(set.get(self.taken as usize));
        }
    }
}

impl fmt::Debug for RangeLockFuture<'_> {
    /// ```
    /// use two_state_lock::{Class, LockTable};
    /// let table = LockTable::new(8);
    /// let f = table.lock_range_async(1, 0..3, Class::Add);
    /// assert_eq!(format!("{f:?}"), "RangeLockFuture { class: Add, locks: 3, taken: 0, waiting: false }");
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RangeLockFuture")
            .field("class", &self.class)
            .field("locks", &self.len)
            .field("taken", &self.taken)
            .field("waiting", &self.wait.is_waiting())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Waker;

    /// The tests here park tasks in the global table, which the first one
    /// counts: they run one at a time.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
        Pin::new(f).poll(&mut Context::from_waker(Waker::noop()))
    }

    /// A future that parked gives its wait-table entry back when it enters
    /// and when it is dropped; the waiter count follows.
    #[test]
    fn parked_futures_give_their_entries_back() {
        let _serial = SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let lock = Arc::new(TwoStateLock::new());
        let before = task_wait::entries_in_use();
        // An ArcGuard: not this thread's hold, so lock validation does not
        // take the polls below for a self-deadlock of this thread.
        let held = lock.lock_arc(Class::Block);
        let mut entering = lock.lock_async(Class::Add);
        let mut dropped = lock.lock_async(Class::Add);
        assert!(poll_once(&mut entering).is_pending());
        assert!(poll_once(&mut dropped).is_pending());
        assert_eq!(task_wait::entries_in_use(), before + 2);
        assert_eq!(lock.state().add_waiters, 2);
        drop(dropped);
        assert_eq!(task_wait::entries_in_use(), before + 1);
        drop(held);
        let Poll::Ready(g) = poll_once(&mut entering) else {
            panic!("not admitted after the release");
        };
        assert_eq!(task_wait::entries_in_use(), before);
        assert_eq!(lock.state().add_waiters, 0);
        drop(g);
    }

    /// A waker that panics when a hand-off wakes it does not keep the
    /// other parked tasks from being woken; the panic goes on to the
    /// releasing thread, and the lock is consistent.
    #[test]
    fn a_panicking_waker_does_not_strand_the_other_tasks() {
        let _serial = SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        use std::task::Wake;
        struct Panics;
        impl Wake for Panics {
            fn wake(self: Arc<Self>) {
                panic!("a waker that panics");
            }
        }
        struct Counts(AtomicUsize);
        impl Wake for Counts {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, SeqCst);
            }
        }
        let lock = Arc::new(TwoStateLock::new());
        let held = lock.lock_arc(Class::Block);
        let (panics, counts) = (
            Waker::from(Arc::new(Panics)),
            Arc::new(Counts(AtomicUsize::new(0))),
        );
        let counting = Waker::from(counts.clone());
        let mut first = lock.lock_async(Class::Add);
        let mut second = lock.lock_async(Class::Add);
        let poll = |f: &mut LockFuture<'_>, w: &Waker| {
            Pin::new(f).poll(&mut Context::from_waker(w)).is_ready()
        };
        assert!(!poll(&mut first, &panics));
        assert!(!poll(&mut second, &counting));
        let released = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(held)));
        assert!(released.is_err(), "the waker's panic reaches the releaser");
        assert_eq!(counts.0.load(SeqCst), 1, "the other task was woken");
        assert!(poll(&mut second, &counting) && poll(&mut first, &counting));
    }
}
