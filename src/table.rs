//! `LockTable`: a fixed table of two-state locks that ranges of stripes of
//! any number of objects hash onto (SPEC §9). `RangeGuard`: the locks of one
//! range, held in one class.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;
use std::time::{Duration, Instant};

use crate::future::RangeLockFuture;
use crate::lock::{TwoStateLock, raw_locks};
use crate::lockset::LockSet;
use crate::raw::{Class, LockState};
use crate::thread::{self, Holds, Kind, Scoped};
use crate::validate::{self, Record, Site};

/// A fixed-size table of [`TwoStateLock`]s for locking ranges of *stripes*
/// (fixed-size pieces of an object, e.g. 64 KiB of a file) of any number of
/// objects, in either class.
///
/// Each `(object, stripe)` maps to one lock. Ranges that share no lock
/// proceed independently, whatever their classes: a direct write to the
/// first stripes of a file does not keep a buffered read from adding a page
/// further on. Memory is fixed at construction (16 bytes a lock), whatever
/// the number and size of the objects. Two stripes that map to one lock
/// (a collision) only exclude each other more than needed; they never
/// deadlock or give a wrong answer.
///
/// Consecutive stripes of one object map to consecutive locks (wrapping
/// around), starting at an offset hashed from the object: a range of up to
/// [`size`](Self::size) stripes never collides with itself, and equal
/// stripes of different objects usually map to different locks.
///
/// ```
/// use two_state_lock::{Class, LockTable};
///
/// let table = LockTable::new(1024); // 16 KiB, for every file
/// let (file, stripe_of) = (7, |offset: u64| offset / 65536);
/// // A direct write of bytes 0..256 KiB keeps page additions out of them...
/// let dio = table.lock_range(file, stripe_of(0)..stripe_of(256 << 10), Class::Block);
/// // ...while a buffered read adds a page at 1 MiB, and another direct
/// // write shares the stripes.
/// assert!(table.try_lock_range(file, 16..17, Class::Add).is_some());
/// assert!(table.try_lock_range(file, 2..5, Class::Block).is_some());
/// assert!(table.try_lock_range(file, 3..4, Class::Add).is_none());
/// drop(dio);
/// ```
pub struct LockTable {
    locks: Box<[TwoStateLock]>,
    /// `size - 1` when the size is a power of two, so that a stripe is
    /// reduced to the table by a mask; else 0, and it takes a division.
    mask: u64,
}

/// The most locks a table can have.
const MAX_LOCKS: usize = u32::MAX as usize;

impl LockTable {
    /// A table of `locks` free locks (`locks` x 16 bytes).
    ///
    /// More locks mean fewer collisions between unrelated ranges; a
    /// collision costs only extra exclusion. A power of two spares
    /// [`lock_index`](Self::lock_index) a division. See the crate docs for a
    /// worked example of choosing the size and the stripe.
    ///
    /// # Panics
    ///
    /// When `locks` is 0 or more than `u32::MAX`.
    ///
    /// ```
    /// use two_state_lock::LockTable;
    /// let table = LockTable::new(256);
    /// assert_eq!(table.size(), 256);
    /// ```
    #[must_use]
    pub fn new(locks: usize) -> Self {
        assert!(
            (1..=MAX_LOCKS).contains(&locks),
            "two-state-lock: a LockTable needs 1 to {MAX_LOCKS} locks, not {locks}"
        );
        LockTable {
            locks: (0..locks).map(|_| TwoStateLock::new()).collect(),
            mask: if locks.is_power_of_two() {
                locks as u64 - 1
            } else {
                0
            },
        }
    }

    /// The number of locks.
    ///
    /// ```
    /// use two_state_lock::LockTable;
    /// assert_eq!(LockTable::new(3).size(), 3);
    /// ```
    #[inline]
    #[must_use]
    pub fn size(&self) -> usize {
        self.locks.len()
    }

    /// The index of the lock that `(object, stripe)` maps to.
    ///
    /// ```
    /// use two_state_lock::LockTable;
    /// let table = LockTable::new(64);
    /// let first = table.lock_index(9, 0);
    /// // Consecutive stripes of an object take consecutive locks.
    /// assert_eq!(table.lock_index(9, 1), (first + 1) % 64);
    /// assert_eq!(table.lock_index(9, 64), first);
    /// ```
    #[inline]
    #[must_use]
    pub fn lock_index(&self, object: u64, stripe: u64) -> usize {
        let n = self.locks.len() as u64;
        let slot = if self.mask != 0 {
            stripe & self.mask
        } else {
            stripe % n
        };
        let i = self.offset(object) + slot;
        (if i >= n { i - n } else { i }) as usize
    }

    /// A snapshot of the state of the lock at `index`.
    ///
    /// # Panics
    ///
    /// When `index` is not below [`size`](Self::size).
    ///
    /// ```
    /// use two_state_lock::{Class, LockTable};
    /// let table = LockTable::new(16);
    /// let _g = table.lock_range(1, 5..6, Class::Add);
    /// assert_eq!(table.state(table.lock_index(1, 5)).holders, 1);
    /// ```
    #[must_use]
    pub fn state(&self, index: usize) -> LockState {
        self.locks[index].state()
    }

    /// Takes every lock that `stripes` of `object` map to, each once, in
    /// ascending table order, in `class`; a range of more stripes than the
    /// table has locks takes the whole table. The first lock is judged like
    /// [`TwoStateLock::lock`] (phase-fair if this thread holds nothing); the
    /// others are nested acquisitions.
    ///
    /// Two range acquisitions never deadlock each other, and a range never
    /// deadlocks on itself (colliding stripes take their lock once). As with
    /// `TwoStateLock`, taking the other class of a lock this thread already
    /// holds deadlocks.
    ///
    /// # Panics
    ///
    /// When `stripes` is empty (`start >= end`), or a lock is at its holder
    /// limit (what was taken is released first).
    ///
    /// ```
    /// use two_state_lock::{Class, LockTable};
    /// let table = LockTable::new(8);
    /// let truncate = table.lock_range(3, 0..u64::MAX, Class::Block);
    /// assert_eq!(truncate.lock_count(), 8); // longer than the table: all of it
    /// assert!(table.try_lock_range(4, 0..1, Class::Add).is_none());
    /// ```
    #[inline]
    #[cfg_attr(validate, track_caller)]
    pub fn lock_range(&self, object: u64, stripes: Range<u64>, class: Class) -> RangeGuard<'_> {
        let (first, len) = self.span(object, &stripes);
        let site = Site::caller();
        if len == 1 {
            // One stripe: one lock, as `TwoStateLock::lock`.
            let lock = &self.locks[first as usize];
            validate::before_blocking(LockSet::one(&lock.raw), class, site, true);
            lock.acquire(class);
            thread::hold_taken();
            let record = validate::acquired(LockSet::one(&lock.raw), class, site);
            return RangeGuard::new(self, first, len, class, record);
        }
        self.lock_span(first, len, class, site)
    }

    /// `lock_range` of more than one lock.
    fn lock_span(&self, first: u32, len: u32, class: Class, site: Site) -> RangeGuard<'_> {
        // Checked as one: the set is at most two runs, whatever its length.
        validate::before_blocking(self.lock_set(first, len), class, site, true);
        let mut taking = Taking::new(self, first, len, class);
        for index in taking.set_indices() {
            self.locks[index].acquire(class);
            taking.took();
        }
        taking.done(site)
    }

    /// As [`lock_range`](Self::lock_range) if every lock admits it now; if
    /// one does not, releases what it took and returns `None`. Never blocks.
    ///
    /// # Panics
    ///
    /// As [`lock_range`](Self::lock_range).
    ///
    /// ```
    /// use two_state_lock::{Class, LockTable};
    /// let table = LockTable::new(8);
    /// let add = table.lock_range(1, 2..3, Class::Add);
    /// // Overlaps the Add range at stripe 2: all or nothing.
    /// assert!(table.try_lock_range(1, 0..4, Class::Block).is_none());
    /// assert_eq!(table.state(table.lock_index(1, 0)).holders, 0);
    /// drop(add);
    /// assert!(table.try_lock_range(1, 0..4, Class::Block).is_some());
    /// ```
    #[cfg_attr(validate, track_caller)]
    pub fn try_lock_range(
        &self,
        object: u64,
        stripes: Range<u64>,
        class: Class,
    ) -> Option<RangeGuard<'_>> {
        let (first, len) = self.span(object, &stripes);
        let mut taking = Taking::new(self, first, len, class);
        for index in taking.set_indices() {
            if !self.locks[index].try_acquire(class) {
                return None; // `taking` releases what it took
            }
            taking.took();
        }
        Some(taking.done(Site::caller()))
    }

    /// As [`lock_range`](Self::lock_range), giving up at `deadline`: if a
    /// lock does not admit `class` by then, releases what it took and
    /// returns `None`. Each lock is waited for until the same deadline, in
    /// ascending table order, as `lock_range` takes them; a waiter that gives
    /// up leaves no trace in the lock it waited for (see
    /// [`TwoStateLock::try_lock_for`]).
    ///
    /// # Panics
    ///
    /// As [`lock_range`](Self::lock_range).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use two_state_lock::{Class, LockTable};
    /// let table = LockTable::new(64);
    /// let add = table.lock_range(1, 2..3, Class::Add);
    /// std::thread::scope(|s| {
    ///     s.spawn(|| {
    ///         let deadline = Instant::now() + Duration::from_millis(10);
    ///         // A truncate of the whole file: stripe 2 is busy.
    ///         assert!(table.try_lock_range_until(1, 0..u64::MAX, Class::Block, deadline).is_none());
    ///     });
    /// });
    /// assert_eq!(table.state(table.lock_index(1, 0)).holders, 0); // released
    /// # drop(add);
    /// ```
    #[cfg_attr(validate, track_caller)]
    pub fn try_lock_range_until(
        &self,
        object: u64,
        stripes: Range<u64>,
        class: Class,
        deadline: Instant,
    ) -> Option<RangeGuard<'_>> {
        let (first, len) = self.span(object, &stripes);
        let site = Site::caller();
        // A self-deadlock would only time out; the order is not counted (a
        // timed wait cannot hang).
        validate::before_blocking(self.lock_set(first, len), class, site, false);
        let mut taking = Taking::new(self, first, len, class);
        for index in taking.set_indices() {
            if !self.locks[index].acquire_until(class, deadline) {
                return None; // `taking` releases what it took
            }
            taking.took();
        }
        Some(taking.done(site))
    }

    /// As [`try_lock_range_until`](Self::try_lock_range_until), giving up
    /// after `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use two_state_lock::{Class, LockTable};
    /// let table = LockTable::new(64);
    /// let dio = table.try_lock_range_for(1, 0..4, Class::Block, Duration::from_millis(10));
    /// assert_eq!(dio.unwrap().lock_count(), 4);
    /// ```
    #[cfg_attr(validate, track_caller)]
    pub fn try_lock_range_for(
        &self,
        object: u64,
        stripes: Range<u64>,
        class: Class,
        timeout: Duration,
    ) -> Option<RangeGuard<'_>> {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.try_lock_range_until(object, stripes, class, deadline),
            None => Some(self.lock_range(object, stripes, class)),
        }
    }

    /// As [`lock_range`](Self::lock_range), for a task: the future waits
    /// without blocking its worker and resolves to an [`AsyncRangeGuard`],
    /// which is `Send`. The locks are taken in the same order as
    /// `lock_range` takes them, the first judged top-level, the others
    /// nested; threads and tasks wait for each lock in one phase-fair order.
    ///
    /// Cancel-safe: dropped half-way, the future releases what it took and
    /// leaves the lock it waits for as if it had never asked (see
    /// [`LockFuture`](crate::LockFuture)). Inside a task's
    /// `faults_disabled_async` scope the first lock is nested too, and lock
    /// validation sees the acquisition against the scope's holds.
    ///
    /// # Panics
    ///
    /// At the call, when `stripes` is empty; when polled, as
    /// [`lock_range`](Self::lock_range) for a lock at its holder limit.
    ///
    /// ```
    /// use two_state_lock::{Class, LockTable};
    /// let table = LockTable::new(64);
    /// futures::executor::block_on(async {
    ///     let dio = table.lock_range_async(7, 0..4, Class::Block).await;
    ///     // ... the direct I/O's await, with the stripes blocked ...
    ///     assert!(table.try_lock_range(7, 2..3, Class::Add).is_none());
    ///     drop(dio);
    /// });
    /// ```
    #[cfg_attr(validate, track_caller)]
    pub fn lock_range_async(
        &self,
        object: u64,
        stripes: Range<u64>,
        class: Class,
    ) -> RangeLockFuture<'_> {
        let (first, len) = self.span(object, &stripes);
        RangeLockFuture::new(self, first, len, class, Site::caller())
    }

    /// The lock `(object, stripe)` maps to.
    #[inline]
    pub(crate) fn lock_for(&self, object: u64, stripe: u64) -> &TwoStateLock {
        &self.locks[self.lock_index(object, stripe)]
    }

    /// Where `object`'s stripe 0 maps: Fibonacci hashing (a multiply by
    /// 2^64 / golden ratio) scaled to the table by a second multiply: object
    /// numbers that follow each other land about 0.62 of the table apart.
    #[inline]
    fn offset(&self, object: u64) -> u64 {
        let z = object.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        ((u128::from(z) * self.locks.len() as u128) >> 64) as u64
    }

    /// The first table index and the number of locks of a range.
    #[inline]
    fn span(&self, object: u64, stripes: &Range<u64>) -> (u32, u32) {
        assert!(
            stripes.start < stripes.end,
            "two-state-lock: empty stripe range {stripes:?}"
        );
        let n = self.locks.len();
        match usize::try_from(stripes.end - stripes.start) {
            Ok(len) if len < n => (self.lock_index(object, stripes.start) as u32, len as u32),
            _ => (0, n as u32),
        }
    }

    /// The table indices `first, first + 1, ...` (`len` of them, wrapping
    /// around) as ascending runs: the wrapped part first.
    fn runs(&self, first: u32, len: u32) -> [(u32, u32); 2] {
        let n = self.locks.len() as u32;
        if first + len <= n {
            [(first, first + len), (0, 0)]
        } else {
            [(0, first + len - n), (first, n)]
        }
    }

    /// Those locks, in ascending table order.
    /// The runs of table indices of a range, for `Debug`.
    fn index_runs(&self, first: u32, len: u32) -> Vec<Range<u32>> {
        self.runs(first, len)
            .into_iter()
            .filter(|r| r.0 < r.1)
            .map(|r| r.0..r.1)
            .collect()
    }

    pub(crate) fn lock_set(&self, first: u32, len: u32) -> LockSet<'_> {
        LockSet::runs(raw_locks(&self.locks), self.runs(first, len))
    }

    /// Their indices, ascending.
    pub(crate) fn indices(&self, first: u32, len: u32) -> impl Iterator<Item = usize> + use<> {
        let [a, b] = self.runs(first, len);
        (a.0 as usize..a.1 as usize).chain(b.0 as usize..b.1 as usize)
    }
}

impl fmt::Debug for LockTable {
    /// Shows the size and every lock that is held or waited for.
    ///
    /// ```
    /// use two_state_lock::{Class, LockTable};
    /// let table = LockTable::new(4);
    /// let _g = table.lock_range(0, 0..1, Class::Block);
    /// let i = table.lock_index(0, 0);
    /// assert_eq!(
    ///     format!("{table:?}"),
    ///     format!("LockTable {{ size: 4, busy: {{{i}: TwoStateLock {{ class: Block, holders: 1, add_waiters: 0, block_waiters: 0 }}}} }}")
    /// );
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Busy<'a>(&'a [TwoStateLock]);
        impl fmt::Debug for Busy<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map()
                    .entries(self.0.iter().enumerate().filter(|(_, l)| {
                        let s = l.state();
                        s.holders != 0 || s.add_waiters != 0 || s.block_waiters != 0
                    }))
                    .finish()
            }
        }
        f.debug_struct("LockTable")
            .field("size", &self.locks.len())
            .field("busy", &Busy(&self.locks))
            .finish()
    }
}

/// A range acquisition in progress: releases what it took if dropped before
/// `done` (a failed `try_lock_range`, or a panic at a holder limit).
struct Taking<'a> {
    table: &'a LockTable,
    first: u32,
    len: u32,
    class: Class,
    taken: u32,
}

impl<'a> Taking<'a> {
    fn new(table: &'a LockTable, first: u32, len: u32, class: Class) -> Self {
        Taking {
            table,
            first,
            len,
            class,
            taken: 0,
        }
    }

    /// The table indices to take, in ascending order.
    fn set_indices(&self) -> impl Iterator<Item = usize> + use<> {
        self.table.indices(self.first, self.len)
    }

    /// The next lock in set order was taken.
    fn took(&mut self) {
        thread::hold_taken();
        self.taken += 1;
    }

    /// Every lock was taken, asked for at `site`: the guard.
    fn done(self, site: Site) -> RangeGuard<'a> {
        let set = self.table.lock_set(self.first, self.len);
        let record = validate::acquired(set, self.class, site);
        let guard = RangeGuard::new(self.table, self.first, self.len, self.class, record);
        std::mem::forget(self);
        guard
    }
}

impl Drop for Taking<'_> {
    fn drop(&mut self) {
        let set = self.table.lock_set(self.first, self.len);
        set.unlock(self.class, 0, self.taken as usize);
        thread::holds_released(self.taken as usize);
    }
}

/// The locks of one range of a [`LockTable`], held in one class; released
/// when dropped, also during unwinding.
///
/// `!Send` and `!Sync`, like [`Guard`](crate::Guard): its holds count in
/// this thread's state.
///
/// ```compile_fail
/// fn assert_send<T: Send>() {}
/// assert_send::<two_state_lock::RangeGuard<'static>>();
/// ```
///
/// ```
/// use two_state_lock::{Class, LockTable};
/// let table = LockTable::new(16);
/// {
///     let _dio = table.lock_range(1, 0..4, Class::Block);
///     assert!(table.try_lock_range(1, 3..5, Class::Add).is_none());
/// }
/// assert!(table.try_lock_range(1, 3..5, Class::Add).is_some());
/// ```
#[must_use = "the holds are released as soon as the guard is dropped"]
pub struct RangeGuard<'a> {
    table: &'a LockTable,
    first: u32,
    len: u32,
    class: Class,
    /// Lock validation's record of the holds.
    record: Record,
    _not_send_or_sync: PhantomData<*const ()>,
}

impl<'a> RangeGuard<'a> {
    /// Wraps holds the caller has taken (and counted in this thread).
    #[inline]
    fn new(table: &'a LockTable, first: u32, len: u32, class: Class, record: Record) -> Self {
        RangeGuard {
            table,
            first,
            len,
            class,
            record,
            _not_send_or_sync: PhantomData,
        }
    }

    /// The class of these holds.
    ///
    /// ```
    /// use two_state_lock::{Class, LockTable};
    /// let table = LockTable::new(4);
    /// assert_eq!(table.lock_range(0, 0..2, Class::Block).class(), Class::Block);
    /// ```
    #[inline]
    #[must_use]
    pub fn class(&self) -> Class {
        self.class
    }

    /// How many distinct locks this guard holds.
    ///
    /// ```
    /// use two_state_lock::{Class, LockTable};
    /// let table = LockTable::new(4);
    /// assert_eq!(table.lock_range(0, 0..3, Class::Add).lock_count(), 3);
    /// assert_eq!(table.lock_range(0, 0..100, Class::Add).lock_count(), 4);
    /// ```
    #[inline]
    #[must_use]
    pub fn lock_count(&self) -> usize {
        self.len as usize
    }

    /// The table indices of the locks this guard holds, ascending.
    ///
    /// ```
    /// use two_state_lock::{Class, LockTable};
    /// let table = LockTable::new(4);
    /// let g = table.lock_range(5, 0..2, Class::Add);
    /// let held: Vec<usize> = g.lock_indices().collect();
    /// let mut expected = vec![table.lock_index(5, 0), table.lock_index(5, 1)];
    /// expected.sort();
    /// assert_eq!(held, expected);
    /// ```
    pub fn lock_indices(&self) -> impl Iterator<Item = usize> + use<> {
        self.table.indices(self.first, self.len)
    }

    /// Runs `f` with every lock of this guard as a held mapping of this
    /// thread (see [`Guard::faults_disabled`](crate::Guard::faults_disabled)):
    /// a fault inside `f` on a stripe that maps to one of them is the
    /// same-mapping case of the fault protocol. `locks_dropped` reports
    /// whether a fault cycle released and re-took any of them.
    ///
    /// Code that may take a fault while it holds a range takes it inside
    /// this scope (or faults in before locking): unscoped, an `Add` holder
    /// of a higher lock that faults on a lower one deadlocks against a
    /// thread that holds `Block` on the lower lock and takes the higher one
    /// in order, as every range of more than one lock does.
    ///
    /// # Panics
    ///
    /// When this guard already has an active scope on this thread.
    ///
    /// ```
    /// use two_state_lock::{Class, LockTable};
    /// let table = LockTable::new(64);
    /// // A direct write to stripes 0..4 of file 1, from a buffer mapped from
    /// // stripe 2 of the same file.
    /// let dio = table.lock_range(1, 0..4, Class::Block);
    /// let pinned = dio.faults_disabled(|| table.fault_in(1, 2, || "pinned"));
    /// assert_eq!(pinned.value, "pinned");
    /// assert!(pinned.locks_dropped); // re-invalidate 0..4 before the write
    /// ```
    pub fn faults_disabled<R>(&self, f: impl FnOnce() -> R) -> Scoped<R> {
        thread::with_scope(self.holds(), f)
    }

    /// These holds as held mappings.
    pub(crate) fn holds(&self) -> Holds<'a> {
        Holds {
            locks: self.lock_set(),
            class: self.class,
            kind: Kind::Guard,
            owner: self as *const Self as *const (),
            record: self.record,
        }
    }

    /// The locks held, in ascending order.
    pub(crate) fn lock_set(&self) -> LockSet<'a> {
        self.table.lock_set(self.first, self.len)
    }
}

impl Drop for RangeGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        if self.len == 1 {
            self.table.locks[self.first as usize].raw.unlock(self.class);
            thread::holds_released(1);
            validate::released(self.record);
        } else {
            self.lock_set().unlock(self.class, 0, self.len as usize);
            thread::holds_released(self.len as usize);
            validate::released(self.record);
        }
    }
}

impl fmt::Debug for RangeGuard<'_> {
    /// Shows the class and the table indices held, as runs.
    ///
    /// ```
    /// use two_state_lock::{Class, LockTable};
    /// let table = LockTable::new(8);
    /// let g = table.lock_range(0, 0..100, Class::Add);
    /// assert_eq!(format!("{g:?}"), "RangeGuard { class: Add, locks: [0..8] }");
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RangeGuard")
            .field("class", &self.class)
            .field("locks", &self.table.index_runs(self.first, self.len))
            .finish()
    }
}

/// The locks of one range, held in one class by a task
/// ([`LockTable::lock_range_async`]), released when dropped, on whichever
/// thread the task runs then.
///
/// `Send` and `Sync`: the holds are the task's, not a thread's (they do not
/// make any thread's later acquisitions nested), except inside its
/// [`faults_disabled_async`](Self::faults_disabled_async) scope, where they
/// are held mappings of the task.
///
/// ```
/// use two_state_lock::{Class, LockTable};
/// let table = LockTable::new(8);
/// let g = futures::executor::block_on(table.lock_range_async(0, 0..100, Class::Add));
/// assert_eq!(format!("{g:?}"), "AsyncRangeGuard { class: Add, locks: [0..8] }");
/// ```
#[must_use = "the holds are released as soon as the guard is dropped"]
pub struct AsyncRangeGuard<'a> {
    table: &'a LockTable,
    first: u32,
    len: u32,
    class: Class,
}

impl<'a> AsyncRangeGuard<'a> {
    pub(crate) fn new(table: &'a LockTable, first: u32, len: u32, class: Class) -> Self {
        AsyncRangeGuard {
            table,
            first,
            len,
            class,
        }
    }

    /// The holds a task scope of this guard makes held mappings.
    pub(crate) fn task_holds(&self, site: Site) -> Holds<'a> {
        Holds {
            locks: self.table.lock_set(self.first, self.len),
            class: self.class,
            kind: Kind::Task(site),
            owner: self as *const Self as *const (),
            record: Record::NONE,
        }
    }

    /// The class of the holds.
    ///
    /// ```
    /// use two_state_lock::{Class, LockTable};
    /// let table = LockTable::new(8);
    /// let g = futures::executor::block_on(table.lock_range_async(0, 0..2, Class::Block));
    /// assert_eq!(g.class(), Class::Block);
    /// ```
    #[inline]
    #[must_use]
    pub fn class(&self) -> Class {
        self.class
    }

    /// How many locks the range holds.
    ///
    /// ```
    /// use two_state_lock::{Class, LockTable};
    /// let table = LockTable::new(8);
    /// let g = futures::executor::block_on(table.lock_range_async(0, 0..3, Class::Add));
    /// assert_eq!(g.lock_count(), 3);
    /// ```
    #[inline]
    #[must_use]
    pub fn lock_count(&self) -> usize {
        self.len as usize
    }

    /// The table indices of the locks held, ascending.
    ///
    /// ```
    /// use two_state_lock::{Class, LockTable};
    /// let table = LockTable::new(8);
    /// let g = futures::executor::block_on(table.lock_range_async(0, 0..100, Class::Add));
    /// assert_eq!(g.lock_indices().collect::<Vec<_>>(), (0..8).collect::<Vec<_>>());
    /// ```
    pub fn lock_indices(&self) -> impl Iterator<Item = usize> + use<> {
        self.table.indices(self.first, self.len)
    }
}

impl Drop for AsyncRangeGuard<'_> {
    fn drop(&mut self) {
        self.table
            .lock_set(self.first, self.len)
            .unlock(self.class, 0, self.len as usize);
    }
}

impl fmt::Debug for AsyncRangeGuard<'_> {
    /// Shows the class and the table indices held, as runs (see the type's
    /// example).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncRangeGuard")
            .field("class", &self.class)
            .field("locks", &self.table.index_runs(self.first, self.len))
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::MAX_HOLDERS;

    #[test]
    fn a_holder_limit_panic_midway_releases_what_the_range_took() {
        let table = LockTable::new(8);
        let object = (0..).find(|&o| table.lock_index(o, 0) == 2).unwrap();
        // The range takes locks 2, 3, 4; lock 4 is full.
        table.locks[4]
            .raw
            .set_state_for_test(MAX_HOLDERS, Class::Add);
        let r = std::panic::catch_unwind(|| drop(table.lock_range(object, 0..3, Class::Add)));
        let msg = *r.unwrap_err().downcast::<String>().unwrap();
        assert!(msg.contains("holders at once"), "{msg}");
        assert_eq!((table.state(2).holders, table.state(3).holders), (0, 0));
        assert_eq!(table.state(4).holders, MAX_HOLDERS);
        assert_eq!(thread::counts_for_test(), (0, 0));
    }
}
