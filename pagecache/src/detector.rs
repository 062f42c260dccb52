//! The stale-read detector. Each page has one writer at a time, which
//! publishes the version once the write is durable; a reader notes the
//! published version before it starts and must see at least that version.
//! Anything older is a **stale read**, the bug of the seed. A hole is
//! current if a punch at least that recent has begun; a malformed page that
//! a write overlapped is a torn direct read, not a stale one.

use std::sync::atomic::Ordering;

use crate::mapping::Mapping;
use crate::page::Block;
use crate::stats::Stats;

impl Mapping {
    /// The version published for `page`, to note before a read.
    pub(crate) fn noted(&self, page: u64) -> u64 {
        self.published[page as usize].load(Ordering::Acquire)
    }

    /// `page` is durable at `version` (a hole if `punched`).
    pub(crate) fn publish(&self, page: u64, version: u64, punched: bool) {
        self.published[page as usize].store(version << 1 | u64::from(punched), Ordering::Release);
    }

    /// A hole punch of `page` at `version` has begun.
    pub(crate) fn punch_begun(&self, page: u64, version: u64) {
        self.last_punch[page as usize].store(version, Ordering::Release);
    }

    /// Counts `data` as stale if it is older than `noted` (published before
    /// the read started), or as torn if it is malformed and `overlapped` (a
    /// write of the page was in flight while it was read from the file).
    /// Returns its version (`None`: malformed, counted).
    pub(crate) fn check(
        &self,
        stats: &Stats,
        page: u64,
        data: &Block,
        noted: u64,
        overlapped: bool,
    ) -> Option<u64> {
        let want = noted >> 1;
        let got = data.version(self.index, page);
        let counter = match got {
            Some(v) if v >= want => None,
            Some(0) if self.last_punch[page as usize].load(Ordering::Acquire) >= want => None,
            None if overlapped => Some(&stats.torn_direct_reads),
            _ => Some(&stats.stale_reads),
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        got
    }
}
