//! What the workload reports: counters of what the engine did, and how
//! long acquisitions of each class waited.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use two_state_lock::Class;

use crate::OpError;
use crate::page::PAGE;

/// Counters the workload reports.
#[derive(Default, Debug)]
pub struct Stats {
    /// Pages read that were older than the version published before the read.
    pub stale_reads: AtomicU64,
    /// Pages a direct read saw half old, half new because a write of that
    /// page was in flight during the read: concurrent direct I/O to one page
    /// is not atomic (in Linux neither), so these are not stale reads.
    pub torn_direct_reads: AtomicU64,
    /// Direct writes refused because the source was mapped from the same file.
    pub bad_address: AtomicU64,
    /// Fault cycles (`OrderingViolation`): holds dropped and re-taken.
    pub cycles: AtomicU64,
    /// The most cycles one direct write needed.
    pub max_cycles_per_write: AtomicU64,
    /// Direct writes completed, and their bytes.
    pub direct_writes: AtomicU64,
    /// Bytes written by direct writes.
    pub direct_bytes: AtomicU64,
    /// Direct reads completed.
    pub direct_reads: AtomicU64,
    /// Buffered reads completed.
    pub buffered_reads: AtomicU64,
    /// Buffered writes completed.
    pub buffered_writes: AtomicU64,
    /// Holes punched.
    pub punches: AtomicU64,
    /// The most direct writes in flight on one file at once.
    pub max_dio_in_flight: AtomicUsize,
    /// Nanoseconds direct writes spent holding their lock, summed: divided
    /// by the run time and the files, the mean number in flight per file.
    pub dio_busy_ns: AtomicU64,
    /// Waits for a lock to add pages (`Add`, a reader/writer lock's read
    /// side): buffered writes and cache misses.
    pub add_waits: Waits,
    /// Waits for a lock to keep pages out (`Block`, the write side): direct
    /// I/O and hole punches.
    pub block_waits: Waits,
}

/// How long acquisitions of one class waited for their lock.
#[derive(Default, Debug)]
pub struct Waits {
    /// Acquisitions.
    pub count: AtomicU64,
    /// Nanoseconds waited, summed.
    pub total_ns: AtomicU64,
    /// The longest wait, in nanoseconds.
    pub max_ns: AtomicU64,
}

impl Waits {
    pub(crate) fn record(&self, waited: Duration) {
        let ns = waited.as_nanos().min(u128::from(u64::MAX)) as u64;
        self.count.fetch_add(1, Ordering::Relaxed);
        self.total_ns.fetch_add(ns, Ordering::Relaxed);
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    /// The mean wait (zero if none).
    pub fn mean(&self) -> Duration {
        let n = self.count.load(Ordering::Relaxed);
        Duration::from_nanos(
            self.total_ns
                .load(Ordering::Relaxed)
                .checked_div(n)
                .unwrap_or(0),
        )
    }

    /// The longest wait.
    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max_ns.load(Ordering::Relaxed))
    }
}

impl Stats {
    /// An acquisition of `class` waited `waited`.
    pub(crate) fn waited(&self, class: Class, waited: Duration) {
        match class {
            Class::Add => &self.add_waits,
            Class::Block => &self.block_waits,
        }
        .record(waited);
    }

    /// A direct write of `n` pages, in flight for `busy` (holding its lock),
    /// ended with `result`.
    pub(crate) fn direct_write_done(&self, n: u64, busy: Duration, result: &Result<(), OpError>) {
        self.dio_busy_ns
            .fetch_add(busy.as_nanos() as u64, Ordering::Relaxed);
        match result {
            Ok(()) => {
                self.direct_writes.fetch_add(1, Ordering::Relaxed);
                self.direct_bytes
                    .fetch_add(n * PAGE as u64, Ordering::Relaxed);
            }
            Err(OpError::BadAddress) => {
                self.bad_address.fetch_add(1, Ordering::Relaxed);
            }
            Err(OpError::Io(_)) => {}
        }
    }
}
