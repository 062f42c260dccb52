//! A lock with two mutually exclusive **shared** classes, for storage
//! engines that keep a page cache per file and also do direct I/O.
//!
//! - [`Class::Add`]: code that adds pages to a file's cache (buffered reads
//!   and writes, page faults, readahead);
//! - [`Class::Block`]: code that must keep pages out while it runs (direct
//!   I/O, truncate, hole punch, fallocate).
//!
//! Any number of adders hold a [`TwoStateLock`] together, or any number of
//! blockers, never both: direct I/Os to one file run side by side, where a
//! reader/writer lock would serialize them on its write side, and a page
//! can never be added to the cache while a direct write to it is in flight.
//!
//! # The parts
//!
//! - [`TwoStateLock`]: the lock (16 bytes). [`lock`](TwoStateLock::lock),
//!   [`try_lock`](TwoStateLock::try_lock) and
//!   [`lock_nested`](TwoStateLock::lock_nested) return a [`Guard`];
//!   [`lock_arc`](TwoStateLock::lock_arc) an [`ArcGuard`], for a hold
//!   released on another thread (asynchronous I/O). Top-level acquisitions
//!   are phase-fair; a thread that already holds a guard of this crate never
//!   queues behind a waiter. [`state`](TwoStateLock::state) returns a
//!   [`LockState`]; [`MAX_HOLDERS`] and [`MAX_WAITERS`] are the limits, past
//!   which an acquisition panics and leaves the lock as it was.
//! - The **fault protocol**: a direct I/O pins its buffer inside its guard's
//!   [`faults_disabled`](Guard::faults_disabled) scope, which makes the lock
//!   a *held mapping* of the thread, and the fault path calls
//!   [`fault_in`](TwoStateLock::fault_in) on the buffer's file. Every fault
//!   completes, a buffer mapped from the written file included, and cannot
//!   deadlock; the scope's [`Scoped::locks_dropped`] says whether the hold
//!   was cycled, so that the caller re-invalidates. The seed's protocol is
//!   [`lock_fault`](TwoStateLock::lock_fault), with [`FaultError`] and
//!   [`Guard::retry_faults`].
//! - **Timed acquisition**: [`try_lock_for`](TwoStateLock::try_lock_for),
//!   [`try_lock_until`](TwoStateLock::try_lock_until) and, for ranges,
//!   [`try_lock_range_until`](LockTable::try_lock_range_until) give up at a
//!   deadline and leave the lock as if they had never asked.
//! - **Async acquisition**: [`lock_async`](TwoStateLock::lock_async),
//!   [`lock_nested_async`](TwoStateLock::lock_nested_async),
//!   [`lock_arc_async`](TwoStateLock::lock_arc_async) and
//!   [`lock_range_async`](LockTable::lock_range_async) return futures
//!   ([`LockFuture`], [`ArcLockFuture`], [`RangeLockFuture`]) that wait on
//!   the same lock as blocking threads, in one phase-fair order, without
//!   blocking the worker; they resolve to `Send` guards ([`AsyncGuard`],
//!   [`ArcGuard`], [`AsyncRangeGuard`]). Cancel-safe: a dropped future
//!   leaves the lock as if it had never asked, so a runtime's timeout is a
//!   timed acquisition. No runtime is a dependency.
//! - **The held mapping in async code**: a task's direct write pins its
//!   buffer inside the guard's
//!   [`faults_disabled_async`](AsyncGuard::faults_disabled_async) scope (a
//!   [`FaultsDisabled`] future, whose guard's locks are the task's held
//!   mappings on whichever thread polls it) and faults with
//!   [`fault_in_async`](TwoStateLock::fault_in_async), the total protocol
//!   with the fault's work a future. Inside a scope, async acquisitions
//!   are nested and lock validation sees them.
//! - [`LockTable`]: a fixed table of locks that ranges of stripes of any
//!   number of objects map to; [`lock_range`](LockTable::lock_range) returns
//!   a [`RangeGuard`].
//! - **Lock validation**, in builds with debug assertions and with the
//!   `validate` feature: a self-deadlock or a possible lock-order inversion
//!   panics, naming both places, before it can hang.
//!
//! # Example
//!
//! ```
//! use two_state_lock::{Class, TwoStateLock};
//!
//! let file = TwoStateLock::new();
//! // Two direct writes share the lock and keep page additions out.
//! let (w1, w2) = (file.lock(Class::Block), file.lock(Class::Block));
//! assert!(file.try_lock(Class::Add).is_none());
//! drop(w2);
//! // A direct write from a buffer mapped from the same file: the fault
//! // cycles the write's hold and completes.
//! let pinned = w1.faults_disabled(|| file.fault_in(|| "page pinned"));
//! assert_eq!(pinned.value, "page pinned");
//! assert!(pinned.locks_dropped); // re-invalidate before the write
//! drop(w1);
//! ```
//!
//! The README has an example per part and a comparison with std's,
//! parking_lot's and tokio's `RwLock` and with bcachefs's lock; the
//! repository's `docs/` has the design, the fault protocol, ranges,
//! validation, performance and verification in depth, and `examples/` has
//! runnable programs.
#![warn(missing_docs)]

mod fault;
mod future;
mod guard;
mod lock;
mod lockset;
mod raw;
mod sync;
mod table;
mod task_scope;
mod task_wait;
mod thread;
mod validate;

pub use fault::FaultError;
pub use future::{ArcLockFuture, LockFuture, RangeLockFuture};
pub use guard::{ArcGuard, AsyncGuard, Guard};
pub use lock::TwoStateLock;
pub use raw::{Class, LockState, MAX_HOLDERS, MAX_WAITERS};
pub use table::{AsyncRangeGuard, LockTable, RangeGuard};
pub use task_scope::FaultsDisabled;
pub use thread::Scoped;

// The examples in the README and in docs/ run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;
#[cfg(doctest)]
#[doc = include_str!("../docs/fault-protocol.md")]
struct FaultProtocolExamples;
#[cfg(doctest)]
#[doc = include_str!("../docs/ranges.md")]
struct RangeExamples;
#[cfg(doctest)]
#[doc = include_str!("../docs/async.md")]
struct AsyncExamples;
