//! The task-scoped held mapping (SPEC §11.3): `faults_disabled_async`
//! wraps a future and makes a guard's locks held mappings of it, linked in
//! as the polling thread's innermost scope for every poll of the future and
//! while it is dropped, and unlinked after, on whichever thread that is
//! (the pattern of tokio's `task_local!`: a wrapper future that swaps a
//! thread-local in and out around `poll`).
//!
//! The scope itself (its released positions, whether a cycle dropped its
//! holds) lives in the pinned wrapper between polls, so a fault cycle that
//! spans awaits finds it again on any thread.

use std::fmt;
use std::future::Future;
use std::marker::PhantomPinned;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::guard::{ArcGuard, AsyncGuard, ScopeClaim};
use crate::table::AsyncRangeGuard;
use crate::thread::{self, Holds, Scope, Scoped};
use crate::validate::Site;

/// The future of `faults_disabled_async` ([`AsyncGuard`], [`ArcGuard`],
/// [`AsyncRangeGuard`]): runs the wrapped future with the guard's locks as
/// held mappings of the task, and resolves to its output as a [`Scoped`],
/// whose `locks_dropped` says whether a fault cycle released and re-took
/// them meanwhile.
///
/// Everything the wrapped future polls is inside the scope, `join!` and
/// `select!` branches included (they share it, as one kernel task shares
/// its held mapping); a task it spawns is not. Inside, async acquisitions
/// are nested ([`lock_async`](crate::TwoStateLock::lock_async) never
/// queues behind a waiter), faults follow the total protocol
/// ([`fault_in_async`](crate::TwoStateLock::fault_in_async)), and lock
/// validation sees the holds. Scopes nest. `Send` when the wrapped future
/// is.
///
/// ```
/// use two_state_lock::{Class, TwoStateLock};
/// let file = TwoStateLock::new();
/// futures::executor::block_on(async {
///     let dio = file.lock_async(Class::Block).await;
///     let pinned = dio.faults_disabled_async(file.fault_in_async(|| async { "pinned" })).await;
///     assert_eq!(pinned.value, "pinned");
///     assert!(pinned.locks_dropped); // the same file: re-invalidate, then write
/// });
/// ```
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct FaultsDisabled<'g, F: Future> {
    scope: Scope<'g>,
    /// The guard's one active scope, given back when the scope ends.
    claim: Option<ScopeClaim>,
    /// Dropped in place, with the scope linked in, when it completes or when
    /// this future is dropped.
    inner: ManuallyDrop<F>,
    /// `inner` is gone.
    done: bool,
    /// The scope's address is in the thread's list while linked, and in the
    /// records of cycles in progress between polls.
    _pinned: PhantomPinned,
}

// SAFETY: the scope's pointers (to the next scope out, to the guard) are
// set only while it is linked in, during one poll or drop on one thread,
// and its cells are used only by the thread polling or dropping it: moving
// the future to another thread between polls shares nothing.
unsafe impl<F: Future + Send> Send for FaultsDisabled<'_, F> {}

impl<'g, F: Future> FaultsDisabled<'g, F> {
    /// A scope of `holds` over `inner`, claiming the scope of their guard.
    ///
    /// Panics if the guard already has an active scope.
    pub(crate) fn new(holds: Holds<'g>, inner: F) -> Self {
        let claim = ScopeClaim::take(holds.owner);
        let mut scope = FaultsDisabled::of_fault(holds, 0, inner);
        scope.claim = Some(claim);
        scope
    }

    /// The scope of the async fault `fault`'s own `Add` hold, `holds`: no
    /// claim (the guard is the fault's own, no other scope can have it).
    pub(crate) fn of_fault(holds: Holds<'g>, fault: u64, inner: F) -> Self {
        FaultsDisabled {
            scope: Scope::new(holds, fault),
            claim: None,
            inner: ManuallyDrop::new(inner),
            done: false,
            _pinned: PhantomPinned,
        }
    }

    /// Drops the wrapped future with the scope linked in, and ends the
    /// scope.
    fn finish(&mut self) {
        self.done = true;
        let linked = thread::link(&self.scope);
        // SAFETY: `inner` is dropped once (`done` is set first) and in place,
        // as its pinning requires.
        unsafe { ManuallyDrop::drop(&mut self.inner) };
        drop(linked);
        thread::scope_ended(&self.scope);
        self.claim = None;
    }
}

impl<F: Future> Future for FaultsDisabled<'_, F> {
    type Output = Scoped<F::Output>;

    /// # Panics
    ///
    /// When polled after it completed.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Scoped<F::Output>> {
        // SAFETY: nothing is moved out: `inner` is pinned structurally (it is
        // polled and dropped in place), the rest is not pinned.
        let this = unsafe { self.get_unchecked_mut() };
        if this.done {
            panic!("two-state-lock: a faults_disabled_async future was polled after it completed");
        }
        let linked = thread::link(&this.scope);
        // SAFETY: see above; `inner` is not dropped (`done` is false).
        let inner = unsafe { Pin::new_unchecked(&mut *this.inner) };
        let value = match inner.poll(cx) {
            Poll::Ready(value) => value,
            Poll::Pending => return Poll::Pending,
        };
        drop(linked);
        this.finish();
        Poll::Ready(Scoped {
            value,
            locks_dropped: this.scope.locks_dropped(),
        })
    }
}

impl<F: Future> Drop for FaultsDisabled<'_, F> {
    fn drop(&mut self) {
        if !self.done {
            self.finish();
        }
    }
}

impl<F: Future> fmt::Debug for FaultsDisabled<'_, F> {
    /// Shows whether the scope is over, a cycle has some of its holds
    /// released now, and a cycle released them since it began.
    ///
    /// ```
    /// use two_state_lock::{Class, TwoStateLock};
    /// let lock = TwoStateLock::new();
    /// let g = futures::executor::block_on(lock.lock_async(Class::Block));
    /// let scope = g.faults_disabled_async(async {});
    /// assert_eq!(
    ///     format!("{scope:?}"),
    ///     "FaultsDisabled { done: false, cycling: false, locks_dropped: false }"
    /// );
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultsDisabled")
            .field("done", &self.done)
            .field("cycling", &self.scope.cycling())
            .field("locks_dropped", &self.scope.locks_dropped())
            .finish()
    }
}

impl<'a> AsyncGuard<'a> {
    /// The async form of [`Guard::faults_disabled`](crate::Guard::faults_disabled):
    /// runs `f` with this guard's lock as a held mapping of the task, for
    /// every poll of `f` and while it is dropped, on whichever thread that
    /// is. Inside, [`fault_in_async`](crate::TwoStateLock::fault_in_async)
    /// (and the blocking [`fault_in`](crate::TwoStateLock::fault_in)) follow
    /// the total fault protocol, and async acquisitions are nested. See
    /// [`FaultsDisabled`].
    ///
    /// Pin a direct I/O's source pages inside the scope, then issue the I/O
    /// after it: if `locks_dropped`, re-invalidate the range first. A task
    /// spawned inside does not inherit the scope.
    ///
    /// # Panics
    ///
    /// When this guard already has an active scope.
    ///
    /// ```
    /// use two_state_lock::{Class, TwoStateLock};
    /// let file = TwoStateLock::new();
    /// futures::executor::block_on(async {
    ///     let read = file.lock_async(Class::Add).await;
    ///     let again = read
    ///         .faults_disabled_async(async {
    ///             // Nested: gets in even while a Block waiter queues.
    ///             file.lock_async(Class::Add).await.class()
    ///         })
    ///         .await;
    ///     assert_eq!(again.value, Class::Add);
    /// });
    /// ```
    #[cfg_attr(validate, track_caller)]
    pub fn faults_disabled_async<F: Future>(&self, f: F) -> FaultsDisabled<'_, F> {
        FaultsDisabled::new(self.task_holds(Site::caller()), f)
    }

    /// The scope of an async fault's own `Add` hold, `fault`.
    pub(crate) fn fault_scope<F: Future>(
        &self,
        fault: u64,
        site: Site,
        f: F,
    ) -> FaultsDisabled<'_, F> {
        FaultsDisabled::of_fault(self.task_holds(site), fault, f)
    }
}

impl ArcGuard {
    /// As [`AsyncGuard::faults_disabled_async`].
    ///
    /// # Panics
    ///
    /// When this guard already has an active scope.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use two_state_lock::{Class, TwoStateLock};
    /// let file = Arc::new(TwoStateLock::new());
    /// futures::executor::block_on(async {
    ///     let dio = file.lock_arc_async(Class::Block).await;
    ///     let r = dio.faults_disabled_async(file.fault_in_async(|| async { 7 })).await;
    ///     assert_eq!((r.value, r.locks_dropped), (7, true));
    /// });
    /// ```
    #[cfg_attr(validate, track_caller)]
    pub fn faults_disabled_async<F: Future>(&self, f: F) -> FaultsDisabled<'_, F> {
        FaultsDisabled::new(self.task_holds(Site::caller()), f)
    }
}

impl<'a> AsyncRangeGuard<'a> {
    /// As [`AsyncGuard::faults_disabled_async`], with every lock of the
    /// range as a held mapping.
    ///
    /// # Panics
    ///
    /// When this guard already has an active scope.
    ///
    /// ```
    /// use two_state_lock::{Class, LockTable};
    /// let table = LockTable::new(64);
    /// futures::executor::block_on(async {
    ///     let dio = table.lock_range_async(1, 0..4, Class::Block).await;
    ///     // A source buffer mapped from stripe 2 of the file written.
    ///     let pinned = dio
    ///         .faults_disabled_async(table.fault_in_async(1, 2, || async { "pinned" }))
    ///         .await;
    ///     assert!(pinned.locks_dropped); // re-invalidate 0..4 before the write
    /// });
    /// ```
    #[cfg_attr(validate, track_caller)]
    pub fn faults_disabled_async<F: Future>(&self, f: F) -> FaultsDisabled<'_, F> {
        FaultsDisabled::new(self.task_holds(Site::caller()), f)
    }
}
