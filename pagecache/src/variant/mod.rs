//! How the cache keeps direct I/O and page additions apart: one module per
//! variant, each a [`Locking`]. A variant takes a class over a range of a
//! file's pages; the two-state ones also pin mapped sources under their
//! `Block` with the fault protocol ([`Faults`]). Adding a variant is a
//! module here and a line in [`Variant`].

use std::future::Future;
use std::pin::Pin;

use two_state_lock::{Class, FaultError};

mod invalidate_twice;
mod rwlock;
mod tokio_rwlock;
mod two_state;
mod two_state_range;

/// A boxed future, for the async engine's traits.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Locks in the `two-state-range` table, shared by all files (64 KiB). A
/// stripe is one page.
pub const RANGE_TABLE_LOCKS: usize = 4096;

/// How the cache keeps direct I/O and page additions apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// No lock: evict before and after each direct write.
    InvalidateTwice,
    /// `std::sync::RwLock`: adders read, direct I/O writes.
    RwLock,
    /// `TwoStateLock` per file: adders `Add`, direct I/O `Block`.
    TwoState,
    /// A `LockTable` of [`RANGE_TABLE_LOCKS`] locks keyed by (file, page):
    /// adders take `Add` on their page, direct I/O `Block` on its range.
    TwoStateRange,
}

impl Variant {
    /// All variants, in table order.
    pub const ALL: [Variant; 4] = [
        Variant::InvalidateTwice,
        Variant::RwLock,
        Variant::TwoState,
        Variant::TwoStateRange,
    ];

    /// The name used on the command line and in the table.
    pub fn name(self) -> &'static str {
        match self {
            Variant::InvalidateTwice => "invalidate-twice",
            Variant::RwLock => "rwlock",
            Variant::TwoState => "two-state",
            Variant::TwoStateRange => "two-state-range",
        }
    }

    /// Whether the variant pins mapped sources under its lock with the
    /// fault protocol (the two-state ones), or copies them before locking.
    pub fn pins_under_lock(self) -> bool {
        matches!(self, Variant::TwoState | Variant::TwoStateRange)
    }

    /// Parses [`name`](Self::name).
    pub fn parse(s: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.name() == s)
    }

    /// The name in the async engine's table (its `RwLock` is tokio's).
    pub fn async_name(self) -> &'static str {
        match self {
            Variant::RwLock => "tokio-rwlock",
            v => v.name(),
        }
    }

    /// The variant's locking for the async engine, for `files` files.
    pub(crate) fn async_locking(self, files: usize) -> Box<dyn AsyncLocking> {
        match self {
            Variant::InvalidateTwice => Box::new(invalidate_twice::InvalidateTwice),
            Variant::RwLock => Box::new(tokio_rwlock::PerFile::new(files)),
            Variant::TwoState => Box::new(two_state::PerFile::new(files)),
            Variant::TwoStateRange => Box::new(two_state_range::Table::new(RANGE_TABLE_LOCKS)),
        }
    }

    /// The variant's locking for `files` files.
    pub(crate) fn locking(self, files: usize) -> Box<dyn Locking> {
        match self {
            Variant::InvalidateTwice => Box::new(invalidate_twice::InvalidateTwice),
            Variant::RwLock => Box::new(rwlock::PerFile::new(files)),
            Variant::TwoState => Box::new(two_state::PerFile::new(files)),
            Variant::TwoStateRange => Box::new(two_state_range::Table::new(RANGE_TABLE_LOCKS)),
        }
    }
}

/// What a variant holds while it works on a file's pages; released when
/// dropped.
pub(crate) trait Hold {
    /// Runs `f` in a `faults_disabled` scope of this hold; whether a fault
    /// cycle released and re-took it meanwhile.
    fn faults_disabled(&self, _f: &mut dyn FnMut()) -> bool {
        unreachable!("only the two-state variants pin under their lock")
    }

    /// The seed's cycle-and-retry loop (`retry_faults`) with this hold as
    /// the held mapping.
    fn retry_faults(
        &self,
        _revalidate: &mut dyn FnMut(),
        _step: &mut dyn FnMut() -> Result<(), FaultError>,
    ) -> Result<(), FaultError> {
        unreachable!("only the two-state variants pin under their lock")
    }
}

/// A variant's locking.
pub(crate) trait Locking: Send + Sync {
    /// Takes `class` over pages `first..first + n` of file `file`.
    fn lock(&self, file: usize, first: u64, n: u64, class: Class) -> Box<dyn Hold + '_>;

    /// No lock at all: nothing waits (so no waits are recorded), and
    /// nothing keeps pages out during a direct write or a punch, which
    /// evict their range again after it.
    fn is_lockless(&self) -> bool {
        false
    }

    /// The fault protocol, for the variants that pin mapped sources under
    /// their `Block`.
    fn faults(&self) -> Option<&dyn Faults> {
        None
    }
}

/// A page fault on a page of a file, through the fault protocol.
pub(crate) trait Faults {
    /// `fault_in` (the total protocol) on the lock of `page` of `file`.
    fn fault_in(&self, file: usize, page: u64, f: &mut dyn FnMut());

    /// `lock_fault` (the seed's protocol) on the lock of `page` of `file`.
    fn lock_fault(&self, file: usize, page: u64) -> Result<Box<dyn Hold + '_>, FaultError>;
}

/// What a variant holds while a task works on a file's pages, across
/// awaits; released when dropped.
pub(crate) trait AsyncHold: Send + Sync {
    /// Runs `f` in a `faults_disabled_async` scope of this hold; whether a
    /// fault cycle released and re-took it meanwhile.
    fn faults_disabled<'a>(&'a self, _f: BoxFuture<'a, ()>) -> BoxFuture<'a, bool> {
        unreachable!("only the two-state variants pin under their lock")
    }
}

/// A variant's locking for tasks.
pub(crate) trait AsyncLocking: Send + Sync {
    /// Takes `class` over pages `first..first + n` of file `file`.
    fn lock(
        &self,
        file: usize,
        first: u64,
        n: u64,
        class: Class,
    ) -> BoxFuture<'_, Box<dyn AsyncHold + '_>>;

    /// As [`Locking::is_lockless`].
    fn is_lockless(&self) -> bool {
        false
    }

    /// The fault protocol, for the variants that pin mapped sources under
    /// their `Block`.
    fn faults(&self) -> Option<&dyn AsyncFaults> {
        None
    }
}

/// A page fault on a page of a file from a task: `fault_in_async`, the
/// fault's work a future.
pub(crate) trait AsyncFaults: Send + Sync {
    fn fault_in<'a>(&'a self, file: usize, page: u64, work: BoxFuture<'a, ()>)
    -> BoxFuture<'a, ()>;
}
