//! The fault protocol: what a page fault on a lock does against this
//! thread's held mappings.
//!
//! - [`TwoStateLock::fault_in`] (SPEC §8), the total protocol: runs the
//!   fault's work holding `Add`, never fails, cycles at most once per call.
//! - [`TwoStateLock::lock_fault`] (SPEC §4), the seed's protocol: returns an
//!   `Add` guard or an error (`SameMapping`, `OrderingViolation`), with
//!   `retry_faults` as its cycle-and-retry loop.
//! - [`TwoStateLock::fault_in_async`] (SPEC §11.3): the total protocol for
//!   a task, against the held mappings of its `faults_disabled_async`
//!   scopes; the fault's work is a future, and a cycle's record of what it
//!   released lives in the fault's future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::future::TaskWait;
use crate::guard::{ArcGuard, AsyncGuard, Guard};
use crate::lock::TwoStateLock;
use crate::raw::Class;
use crate::table::{LockTable, RangeGuard};
use crate::thread::{self, Holds, Turn};
use crate::validate::Site;

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
    /// `-EFAULT`), or use [`TwoStateLock::fault_in`], which completes it.
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

/// `fault_in` on one lock of this crate (a `TwoStateLock` or a table's),
/// asked for at `site`.
pub(crate) fn fault_in<R>(lock: &TwoStateLock, site: Site, f: impl FnOnce() -> R) -> R {
    let held = thread::held_mappings(&lock.raw);
    refuse_beside_an_async_fault(held);
    match held.holds_it {
        // A held mapping holds Add on this lock: the fault is admitted.
        Some(Class::Add) => return f(),
        // The fault would wait for this thread's own Block: cycle it.
        Some(Class::Block) => return thread::cycle(&lock.raw, || with_add(lock, site, f)),
        None => {}
    }
    if !held.any_at_or_after {
        // No held mapping, or all in lock order: wait as usual. Lock
        // validation checks that order against the orders seen.
        return with_add(lock, site, f);
    }
    match lock.try_lock_at(Class::Add, site) {
        Some(add) => run_holding(add, f),
        None => thread::cycle(&lock.raw, || with_add(lock, site, f)),
    }
}

/// Panics if a blocking fault is taken in a task scope while another async
/// fault of the task is in progress there (a `join!` sibling's): that
/// fault's own `Add` is invisible here, so a blocking wait could hold it
/// against a lock that orders before it, and deadlock.
fn refuse_beside_an_async_fault(held: thread::HeldMappings) {
    if held.sibling_fault {
        panic!(
            "two-state-lock: a blocking fault (fault_in, lock_fault) in a task scope while another fault of the task is in progress (a join! or select! sibling); use fault_in_async"
        );
    }
}

/// Runs `f` holding `Add` on `lock`, taken blocking (judged by what the
/// thread holds now) and released after `f`, also when it unwinds.
fn with_add<R>(lock: &TwoStateLock, site: Site, f: impl FnOnce() -> R) -> R {
    run_holding(lock.lock_at(Class::Add, site, true), f)
}

/// Runs `f` with the fault's own hold `add` as the innermost held mapping,
/// then releases it: a fault inside `f` on a lock that orders before it
/// cycles `add` too rather than wait while holding it (SPEC §8).
fn run_holding<R>(add: Guard<'_>, f: impl FnOnce() -> R) -> R {
    // Whether a fault inside `f` cycled `add` is the fault's own business:
    // its pages were added under `Add`, whatever happened in between.
    let value = add.faults_disabled(f).value;
    drop(add);
    value
}

/// `lock_fault` on one lock of this crate, asked for at `site`.
pub(crate) fn lock_fault(lock: &TwoStateLock, site: Site) -> Result<Guard<'_>, FaultError> {
    let held = thread::held_mappings(&lock.raw);
    refuse_beside_an_async_fault(held);
    if held.holds_it.is_some() {
        return Err(FaultError::SameMapping);
    }
    if !held.any_at_or_after {
        // No held mapping, or all in lock order: wait as usual (nested, if
        // a scope is active), checked by lock validation like `fault_in`.
        return Ok(lock.lock_at(Class::Add, site, true));
    }
    if let Some(guard) = lock.try_lock_at(Class::Add, site) {
        return Ok(guard);
    }
    thread::cycle(&lock.raw, || {
        #[cfg(all(test, not(loom)))]
        tests::failpoint();
        // Wait until this lock admits Add, judged by what the thread still
        // holds after the release (which lock validation checks, as for
        // `fault_in`'s cycles).
        drop(lock.lock_at(Class::Add, site, true));
    });
    Err(FaultError::OrderingViolation)
}

/// The cycle-and-retry loop behind `retry_faults`: runs `step` in a scope
/// of `holds` until it returns something other than `OrderingViolation`,
/// calling `revalidate` after every scope whose holds were cycled.
fn retry<R>(
    holds: Holds<'_>,
    mut revalidate: impl FnMut(),
    mut step: impl FnMut() -> Result<R, FaultError>,
) -> Result<R, FaultError> {
    loop {
        let scoped = thread::with_scope(holds, &mut step);
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
    /// Runs `f` holding `Add` on this lock: a page fault's "add", for code
    /// that pins a buffer mapped from this lock's file while it may hold
    /// other locks of this crate (the total fault protocol, SPEC §8).
    ///
    /// It never fails and runs `f` exactly once. Against this thread's held
    /// mappings (the locks of its active
    /// [`faults_disabled`](Guard::faults_disabled) scopes):
    ///
    /// | held mappings | what happens |
    /// | --- | --- |
    /// | none, or all order before this lock | take `Add` (blocking), run `f`, release |
    /// | some order after it, none is it | `try_lock(Add)` and run `f`; if that fails, **cycle** |
    /// | one of them is this lock, held in `Block` | **cycle** |
    /// | one of them is this lock, held in `Add` | run `f` (the fault is admitted) |
    ///
    /// The **cycle** releases every held mapping at or after this lock (this
    /// lock included), takes `Add` (blocking), runs `f`, releases `Add`,
    /// re-takes the released holds in address order and marks their scopes
    /// `locks_dropped`. While it waits, the thread holds only locks that
    /// order before this one, so it cannot deadlock; locks order by
    /// address, lower first. Holds outside an active scope are never cycled.
    ///
    /// Pin one page per call: each call makes progress, so a direct I/O of
    /// n pages cycles at most n times. After the pinning loop, if the scope
    /// reports `locks_dropped`, re-invalidate the range once (pages may have
    /// been added while the hold was down), then issue the I/O. `f` runs
    /// while the cycled holds are down: keep it to the fault's own work.
    ///
    /// **A fault inside `f`** follows the protocol too, and the fault's own
    /// `Add` hold is a held mapping while `f` runs: a fault inside `f` on a
    /// lock that orders before this one try-locks and, if that fails,
    /// cycles this `Add` hold with the others (it is re-taken before the
    /// inner fault returns), so no thread ever waits while holding a lock
    /// that orders after the one it waits for. A fault inside `f` on this
    /// lock is admitted at once.
    ///
    /// **Lock order.** The first row waits while holding the held mappings
    /// and any other guard: it is deadlock-free only if every thread takes
    /// locks in address order. Lock validation (debug builds, the `validate`
    /// feature) counts that wait like a [`lock`](Self::lock), so a plain
    /// acquisition elsewhere out of address order is reported with both
    /// sites. A cycle's wait is counted the same way, against what the
    /// thread still holds while it waits: the held mappings that order
    /// before this lock, and any hold outside a scope (the released holds
    /// are not held, so they are not counted).
    ///
    /// # Panics
    ///
    /// Inside a task's `faults_disabled_async` scope while another fault of
    /// the task is in progress (use [`fault_in_async`](Self::fault_in_async)
    /// there). As [`lock`](Self::lock), at the holder and waiter limits. A cycle
    /// that cannot re-take a released hold at one of those limits aborts
    /// the process: unwinding would leave a guard that does not own its
    /// hold, and the limits are 2^29 − 1 holders and 65535 waiting threads.
    ///
    /// Use `fault_in` for new code. [`lock_fault`](Self::lock_fault) is the
    /// seed's protocol, for callers that want a same-mapping fault to fail
    /// (`-EFAULT`) and a cycle to restart their step.
    ///
    /// ```
    /// use two_state_lock::{Class, TwoStateLock};
    ///
    /// let file = TwoStateLock::new();
    /// // A direct write of 4 pages to `file` from a buffer mapped from `file`.
    /// let dio = file.lock(Class::Block);
    /// let mut cycles = 0;
    /// for page in 0..4 {
    ///     let pinned = dio.faults_disabled(|| file.fault_in(|| page));
    ///     assert_eq!(pinned.value, page);
    ///     cycles += usize::from(pinned.locks_dropped);
    /// }
    /// assert!(cycles <= 4); // at most one cycle per page
    /// // `cycles > 0`: re-invalidate the range once, then issue the write.
    /// assert_eq!(file.state().class, Class::Block);
    /// # drop(dio);
    /// ```
    #[cfg_attr(validate, track_caller)]
    pub fn fault_in<R>(&self, f: impl FnOnce() -> R) -> R {
        fault_in(self, Site::caller(), f)
    }

    /// Takes `Add` on this lock for a page fault, following the seed's fault
    /// protocol (SPEC §4) against this thread's held mappings:
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
    /// Inside a [`fault_in`](Self::fault_in) closure, the fault's own `Add`
    /// hold is a held mapping: `lock_fault` on that lock returns
    /// `Err(SameMapping)` there, as on any held mapping.
    ///
    /// Prefer [`fault_in`](Self::fault_in), which completes every fault
    /// (the same mapping included) with at most one cycle per call. Use
    /// `lock_fault` with [`Guard::retry_faults`] where the seed's behaviour
    /// is wanted.
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
    #[cfg_attr(validate, track_caller)]
    pub fn lock_fault(&self) -> Result<Guard<'_>, FaultError> {
        lock_fault(self, Site::caller())
    }
}

impl Guard<'_> {
    /// The seed's cycle-and-retry loop: runs `step` under
    /// [`faults_disabled`](Self::faults_disabled) until it returns `Ok`.
    ///
    /// `step` continues from where it got to (it keeps its own progress) and
    /// returns [`FaultError::OrderingViolation`] when a fault inside it did.
    /// Whenever this hold was cycled, `revalidate` runs before `step` is
    /// called again: re-invalidate what is left to do. `SameMapping` is
    /// returned at once: the caller fails the access with a bad-address
    /// error. (With [`TwoStateLock::fault_in`] no step fails or repeats.)
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
        retry(self.holds(), revalidate, step)
    }
}

impl ArcGuard {
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
        retry(self.holds(), revalidate, step)
    }
}

impl LockTable {
    /// [`TwoStateLock::fault_in`] on the lock that `(object, stripe)` maps
    /// to: runs `f` holding `Add` on it, never fails, runs `f` exactly once.
    /// A held mapping of this thread that the stripe maps to (a
    /// [`RangeGuard::faults_disabled`] scope over it, for instance) is the
    /// same-mapping case: it is cycled, with every held mapping after it.
    ///
    /// ```
    /// use two_state_lock::{Class, LockTable};
    /// let table = LockTable::new(64);
    /// // A direct write to file 1 from a buffer mapped from file 2.
    /// let dio = table.lock_range(1, 0..2, Class::Block);
    /// let pinned = dio.faults_disabled(|| {
    ///     (0..2).map(|stripe| table.fault_in(2, stripe, || stripe)).sum::<u64>()
    /// });
    /// assert_eq!(pinned.value, 1);
    /// # drop(dio);
    /// ```
    #[cfg_attr(validate, track_caller)]
    pub fn fault_in<R>(&self, object: u64, stripe: u64, f: impl FnOnce() -> R) -> R {
        fault_in(self.lock_for(object, stripe), Site::caller(), f)
    }

    /// [`TwoStateLock::lock_fault`] (the seed's protocol) on the lock that
    /// `(object, stripe)` maps to.
    ///
    /// ```
    /// use two_state_lock::{Class, FaultError, LockTable};
    /// let table = LockTable::new(64);
    /// let dio = table.lock_range(1, 0..2, Class::Block);
    /// let r = dio.faults_disabled(|| table.lock_fault(1, 1).map(drop));
    /// assert_eq!(r.value, Err(FaultError::SameMapping));
    /// ```
    #[cfg_attr(validate, track_caller)]
    pub fn lock_fault(&self, object: u64, stripe: u64) -> Result<Guard<'_>, FaultError> {
        lock_fault(self.lock_for(object, stripe), Site::caller())
    }
}

impl RangeGuard<'_> {
    /// As [`Guard::retry_faults`], with every lock of this guard as a held
    /// mapping.
    ///
    /// ```
    /// use two_state_lock::{Class, LockTable};
    /// let table = LockTable::new(64);
    /// let dio = table.lock_range(1, 0..4, Class::Block);
    /// // A buffer mapped from a file whose stripe 0 does not collide with ours.
    /// let other = (2..).find(|&o| dio.lock_indices().all(|i| i != table.lock_index(o, 0)));
    /// let r = dio.retry_faults(|| {}, || table.lock_fault(other.unwrap(), 0).map(|g| g.class()));
    /// assert_eq!(r, Ok(Class::Add));
    /// // One that does: the seed's protocol fails it.
    /// let r = dio.retry_faults(|| {}, || table.lock_fault(1, 2).map(drop));
    /// assert_eq!(r, Err(two_state_lock::FaultError::SameMapping));
    /// ```
    pub fn retry_faults<R>(
        &self,
        revalidate: impl FnMut(),
        step: impl FnMut() -> Result<R, FaultError>,
    ) -> Result<R, FaultError> {
        retry(self.holds(), revalidate, step)
    }
}

/// `fault_in_async` on one lock of this crate, asked for at `site`: the
/// rows of `fault_in`, with awaits where it blocks.
pub(crate) async fn fault_in_async<W: Future>(
    lock: &TwoStateLock,
    site: Site,
    f: impl FnOnce() -> W,
) -> W::Output {
    if !thread::held_mappings(&lock.raw).scoped {
        // No held mapping: Add as usual, no turn to take.
        let add = lock.lock_async_at(Class::Add, site).await;
        return add.fault_scope(0, site, f()).await.value;
    }
    // Wait for the task's other faults in progress or asked for first, if
    // any (the turn is dropped last: after the cycle below has re-taken
    // what it released).
    let mut turn = FaultTurn::new(thread::new_fault());
    (&mut turn).await;
    let held = thread::held_mappings(&lock.raw);
    let mut cycle = None;
    let add = match held.holds_it {
        // A held mapping holds Add: the fault is admitted. It still takes
        // an Add of its own (nested, so at once), which no sibling's cycle
        // can take away while the work runs.
        Some(Class::Add) => lock.lock_async_at(Class::Add, site).await,
        // All held mappings order before this lock: wait as usual (nested),
        // checked by lock validation.
        None if !held.any_at_or_after => lock.lock_async_at(Class::Add, site).await,
        None if lock.try_acquire(Class::Add) => AsyncGuard::new(lock, Class::Add),
        // The cycle: release every held mapping at or after this lock; its
        // record re-takes them, blocking, if this future is dropped first.
        _ => {
            cycle = Some(Cycle::release(lock));
            lock.lock_async_at(Class::Add, site).await
        }
    };
    // The work runs with the fault's own Add as the innermost held mapping,
    // which a fault inside it may cycle too (SPEC §8).
    let value = add.fault_scope(turn.fault, site, f()).await.value;
    drop(add);
    if let Some(mut cycle) = cycle {
        cycle.retake().await;
    }
    drop(turn);
    value
}

/// An async fault's turn among the task's faults (`thread::begin_fault`):
/// a future that is ready once the fault may begin, and gives the turn
/// back (or its place in line) when dropped.
struct FaultTurn {
    fault: u64,
    /// It marked some linked scope as having this fault in progress.
    marked: bool,
    /// It waits in line.
    waiting: bool,
}

impl FaultTurn {
    fn new(fault: u64) -> Self {
        FaultTurn {
            fault,
            marked: false,
            waiting: false,
        }
    }
}

impl Future for FaultTurn {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match thread::begin_fault(self.fault, cx.waker()) {
            Turn::Go(marked) => {
                (self.marked, self.waiting) = (marked, false);
                Poll::Ready(())
            }
            Turn::Wait => {
                self.waiting = true;
                Poll::Pending
            }
        }
    }
}

impl Drop for FaultTurn {
    fn drop(&mut self) {
        if self.marked {
            thread::end_fault(self.fault);
        } else if self.waiting {
            thread::abandon_turn(self.fault);
        }
    }
}

/// A cycle's record of the holds it released, in re-take order, and how
/// many it has re-taken. Dropped before it is done (its future dropped, or
/// unwinding), it re-takes the rest blocking: the guards must own their
/// holds whenever user code runs, and there is no async drop.
struct Cycle {
    holds: Vec<(usize, usize)>,
    retaken: usize,
}

impl Cycle {
    fn release(lock: &TwoStateLock) -> Cycle {
        let released = thread::release_from(&lock.raw);
        Cycle {
            holds: thread::retake_order(&released),
            retaken: 0,
        }
    }

    /// Re-takes the released holds in address order, awaiting each, judged
    /// by what the thread holds by then.
    async fn retake(&mut self) {
        while let Some(&(scope, position)) = self.holds.get(self.retaken) {
            Retake {
                scope,
                position,
                wait: None,
            }
            .await;
            thread::retaken(scope, position);
            self.retaken += 1;
        }
    }
}

impl Drop for Cycle {
    fn drop(&mut self) {
        thread::retake_blocking(&self.holds[self.retaken..]);
    }
}

/// The wait for one released hold of a scope; the lock is looked up among
/// the linked scopes at every poll, never kept across one.
struct Retake {
    scope: usize,
    position: usize,
    wait: Option<TaskWait>,
}

impl Future for Retake {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        thread::with_released(this.scope, this.position, |lock, class| {
            let wait = this
                .wait
                .get_or_insert_with(|| TaskWait::new(class, thread::admission()));
            let taken = wait.poll(lock, cx);
            if taken.is_ready() {
                this.wait = None;
            }
            taken
        })
    }
}

impl Drop for Retake {
    fn drop(&mut self) {
        if let Some(wait) = &mut self.wait {
            thread::with_released(self.scope, self.position, |lock, _| wait.cancel(lock));
        }
    }
}

impl TwoStateLock {
    /// The async form of [`fault_in`](Self::fault_in) (SPEC §11.3): runs the
    /// fault's work, the future `f` returns, holding `Add` on this lock, and
    /// follows the total protocol against the task's held mappings (the
    /// locks of its active
    /// [`faults_disabled_async`](crate::AsyncGuard::faults_disabled_async)
    /// scopes, and of the polling thread's blocking scopes):
    ///
    /// | held mappings | what happens |
    /// | --- | --- |
    /// | none, or all order before this lock | await `Add`, run the work, release |
    /// | some order after it, none is it | `try_lock(Add)` and run the work; if that fails, **cycle** |
    /// | one of them is this lock, held in `Block` | **cycle** |
    /// | one of them is this lock, held in `Add` | run the work (the fault is admitted) |
    ///
    /// The **cycle** releases every held mapping at or after this lock,
    /// awaits `Add`, runs the work, releases `Add`, re-takes the released
    /// holds in address order (awaiting each) and marks their scopes
    /// `locks_dropped`. What it released is recorded in this future, never
    /// in a thread-local across an await, so the task may move between
    /// workers meanwhile. It never fails, and `f` is called once, holding
    /// `Add`. A fault inside the work follows the protocol too (the fault's
    /// own `Add` is a held mapping while the work runs).
    ///
    /// **One fault at a time per task.** Faults polled in the same scopes
    /// (`join!` or `select!` branches) take turns, as one kernel task takes
    /// one fault at a time: so cycles end in the reverse order they began
    /// and every re-take is in address order. A fault inside another's
    /// work is nested in it and goes on.
    ///
    /// **Cancelling.** Dropped while its cycle has holds released, the
    /// future re-takes them before the drop returns, *blocking* the thread
    /// (there is no async drop, and the guards must own their holds when
    /// user code runs again). The wait is for the `Add` holders that got
    /// in meanwhile; if one of them is a task that needs this thread, the
    /// runtime hangs. Do not cancel a scope or a fault that may be
    /// mid-cycle (no timeout around it); give the guard's acquisition the
    /// deadline instead.
    ///
    /// **Siblings** (`join!`, `select!`) run while a cycle has the scope's
    /// holds released: pin in them, do the I/O after the scope. A blocking
    /// [`fault_in`](Self::fault_in) beside an async fault in progress
    /// panics.
    ///
    /// # Panics
    ///
    /// As [`lock_async`](Self::lock_async). The process aborts if the
    /// future is polled or dropped outside the scope whose holds it
    /// released, or outlives it (its guard could not be made whole).
    ///
    /// ```
    /// use two_state_lock::{Class, TwoStateLock};
    /// let file = TwoStateLock::new();
    /// futures::executor::block_on(async {
    ///     // A direct write of 4 pages to `file` from a buffer mapped from `file`.
    ///     let dio = file.lock_async(Class::Block).await;
    ///     let pinned = dio
    ///         .faults_disabled_async(async {
    ///             let mut pages = 0;
    ///             for _ in 0..4 {
    ///                 pages += file.fault_in_async(|| async { 1 }).await;
    ///             }
    ///             pages
    ///         })
    ///         .await;
    ///     assert_eq!(pinned.value, 4);
    ///     assert!(pinned.locks_dropped); // re-invalidate, then issue the write
    ///     assert_eq!(file.state().class, Class::Block);
    /// });
    /// ```
    #[cfg_attr(validate, track_caller)]
    pub fn fault_in_async<W: Future>(
        &self,
        f: impl FnOnce() -> W,
    ) -> impl Future<Output = W::Output> {
        fault_in_async(self, Site::caller(), f)
    }
}

impl LockTable {
    /// [`TwoStateLock::fault_in_async`] on the lock that `(object, stripe)`
    /// maps to.
    ///
    /// ```
    /// use two_state_lock::{Class, LockTable};
    /// let table = LockTable::new(64);
    /// futures::executor::block_on(async {
    ///     // A direct write to file 1 from a buffer mapped from file 2.
    ///     let dio = table.lock_range_async(1, 0..2, Class::Block).await;
    ///     let pinned = dio
    ///         .faults_disabled_async(table.fault_in_async(2, 0, || async { "pinned" }))
    ///         .await;
    ///     assert_eq!(pinned.value, "pinned");
    /// });
    /// ```
    #[cfg_attr(validate, track_caller)]
    pub fn fault_in_async<W: Future>(
        &self,
        object: u64,
        stripe: u64,
        f: impl FnOnce() -> W,
    ) -> impl Future<Output = W::Output> {
        fault_in_async(self.lock_for(object, stripe), Site::caller(), f)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::cell::Cell;
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
        if crate::lockset::order(&a.raw) < crate::lockset::order(&b.raw) {
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
            thread::counts_for_test()
        });
        assert!(caught.locks_dropped);
        // Two guards held (dio, blocker), one active scope.
        assert_eq!(caught.value, (2, 1));
        drop((dio, blocker));
        assert_eq!(high.state().holders, 0);
        assert_eq!(low.state().holders, 0);
        assert_eq!(thread::counts_for_test(), (0, 0));
    }

    #[test]
    fn panic_inside_the_scope_restores_the_held_mappings() {
        let lock = TwoStateLock::new();
        let g = lock.lock(Class::Block);
        let r = catch_unwind(AssertUnwindSafe(|| g.faults_disabled(|| panic!("inside"))));
        assert!(r.is_err());
        assert_eq!(thread::counts_for_test(), (1, 0));
        // No held mapping: a fault on the lock is a plain blocking Add again,
        // which try_lock shows would not be admitted while we hold Block.
        drop(g);
        assert!(lock.lock_fault().is_ok());
    }

    #[test]
    fn an_arc_guard_scope_counts_its_hold_while_active() {
        let lock = std::sync::Arc::new(TwoStateLock::new());
        let aio = lock.lock_arc(Class::Block);
        assert_eq!(thread::counts_for_test(), (0, 0));
        let inside = aio.faults_disabled(thread::counts_for_test);
        assert_eq!(inside.value, (1, 1));
        // A cycle of it leaves this thread holding nothing while it waits.
        let during = aio.faults_disabled(|| lock.fault_in(thread::counts_for_test));
        // Only the fault's own Add is held, in a scope of its own (the
        // cycled scope stays linked, its hold released).
        assert_eq!(during.value, (1, 2), "only the fault's own Add is held");
        assert!(during.locks_dropped);
        assert_eq!(thread::counts_for_test(), (0, 0));
    }
}
