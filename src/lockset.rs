//! `LockSet`: the locks one guard holds (one lock, or a table range as at
//! most two ascending runs of indices), and `LockAddrs`, the same set as
//! addresses without the borrow, which is what lock validation keeps.
//!
//! Locks are ordered by address, lower first; within a set, ascending
//! positions are ascending addresses.

use crate::raw::{Class, RawLock};

/// A lock's place in the fault protocol's order: its address, lower first.
/// (A lock cannot move while a guard borrows it.)
#[inline]
pub(crate) fn order(lock: &RawLock) -> usize {
    lock as *const RawLock as usize
}

/// The locks of one guard, in ascending address order: `base[runs[0]]`,
/// then `base[runs[1]]` (a table range that wraps around is two runs).
#[derive(Clone, Copy)]
pub(crate) struct LockSet<'a> {
    base: &'a [RawLock],
    runs: [(u32, u32); 2],
}

impl<'a> LockSet<'a> {
    /// One lock.
    pub(crate) fn one(lock: &'a RawLock) -> Self {
        LockSet {
            base: std::slice::from_ref(lock),
            runs: [(0, 1), (0, 0)],
        }
    }

    /// `base[runs[0].0..runs[0].1]` then `base[runs[1].0..runs[1].1]`: the
    /// first run ends before the second begins.
    pub(crate) fn runs(base: &'a [RawLock], runs: [(u32, u32); 2]) -> Self {
        debug_assert!(runs[0].0 <= runs[0].1 && runs[1].0 <= runs[1].1);
        debug_assert!(runs[1].0 == runs[1].1 || runs[0].1 <= runs[1].0);
        debug_assert!(runs[0].1.max(runs[1].1) as usize <= base.len());
        LockSet { base, runs }
    }

    /// How many locks.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        (self.runs[0].1 - self.runs[0].0 + self.runs[1].1 - self.runs[1].0) as usize
    }

    /// The lock at `position` in address order.
    #[inline]
    pub(crate) fn get(&self, position: usize) -> &'a RawLock {
        let first = (self.runs[0].1 - self.runs[0].0) as usize;
        let index = if position < first {
            self.runs[0].0 as usize + position
        } else {
            self.runs[1].0 as usize + position - first
        };
        &self.base[index]
    }

    /// The position of the first lock at or after `order` (`len()` if none).
    pub(crate) fn first_at_or_after(&self, order: usize) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self::order(self.get(mid)) < order {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Releases positions `from..to`, highest first.
    pub(crate) fn unlock(&self, class: Class, from: usize, to: usize) {
        for position in (from..to).rev() {
            self.get(position).unlock(class);
        }
    }

    /// The same locks as addresses.
    #[inline]
    #[cfg_attr(not(validate), allow(dead_code))] // used by lock validation
    pub(crate) fn addrs(&self) -> LockAddrs {
        LockAddrs {
            base: self.base.as_ptr() as usize,
            runs: self.runs,
        }
    }
}

/// A `LockSet` as addresses: comparable with any other set without
/// borrowing either, and without allocating (two runs each).
#[cfg_attr(not(validate), allow(dead_code))] // used by lock validation
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct LockAddrs {
    base: usize,
    runs: [(u32, u32); 2],
}

/// The bytes between consecutive locks of a table.
#[cfg_attr(not(validate), allow(dead_code))]
const STRIDE: usize = std::mem::size_of::<RawLock>();

#[cfg_attr(not(validate), allow(dead_code))]
impl LockAddrs {
    /// How many locks.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        (self.runs[0].1 - self.runs[0].0 + self.runs[1].1 - self.runs[1].0) as usize
    }

    /// The first `n` positions.
    pub(crate) fn prefix(self, n: usize) -> LockAddrs {
        let first = self.runs[0].1 - self.runs[0].0;
        let n = n.min(self.len()) as u32;
        let runs = if n <= first {
            [(self.runs[0].0, self.runs[0].0 + n), (0, 0)]
        } else {
            [self.runs[0], (self.runs[1].0, self.runs[1].0 + n - first)]
        };
        LockAddrs {
            base: self.base,
            runs,
        }
    }

    /// Each run as the bytes `start..end` its locks occupy. Locks never
    /// overlap, so two sets share a lock exactly when two of their runs'
    /// bytes overlap, whichever array (or lone lock) each lives in.
    fn spans(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.runs.iter().filter(|r| r.0 < r.1).map(|r| {
            (
                self.base + r.0 as usize * STRIDE,
                self.base + r.1 as usize * STRIDE,
            )
        })
    }

    /// The lock at `addr` is one of these.
    pub(crate) fn contains(&self, addr: usize) -> bool {
        self.spans().any(|(start, end)| start <= addr && addr < end)
    }

    /// The first lock of `self` that is also one of `other`'s.
    pub(crate) fn first_shared(&self, other: &LockAddrs) -> Option<usize> {
        self.spans()
            .flat_map(|a| other.spans().map(move |b| (a, b)))
            .filter(|(a, b)| a.0 < b.1 && b.0 < a.1)
            .map(|(a, b)| a.0.max(b.0))
            .min()
    }

    /// The locks' addresses, ascending.
    pub(crate) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.spans()
            .flat_map(|(start, end)| (start..end).step_by(STRIDE))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn address_sets_share_a_lock_exactly_when_their_runs_overlap() {
        let base: Vec<RawLock> = (0..10).map(|_| RawLock::new()).collect();
        let wrapped = LockSet::runs(&base, [(0, 2), (8, 10)]).addrs();
        let middle = LockSet::runs(&base, [(2, 8), (0, 0)]).addrs();
        assert_eq!(wrapped.len(), 4);
        assert_eq!(wrapped.first_shared(&middle), None);
        let one = LockSet::one(&base[9]).addrs();
        assert_eq!(wrapped.first_shared(&one), Some(order(&base[9])));
        assert!(wrapped.contains(order(&base[1])) && !wrapped.contains(order(&base[2])));
        // The first three positions: 0, 1 and 8.
        let three = wrapped.prefix(3);
        assert!(three.contains(order(&base[8])) && !three.contains(order(&base[9])));
        let listed: Vec<usize> = three.iter().collect();
        let expected: Vec<usize> = [0, 1, 8].iter().map(|&i| order(&base[i])).collect();
        assert_eq!(listed, expected);
        // A lock outside the table shares nothing with it.
        let lone = RawLock::new();
        assert_eq!(LockSet::one(&lone).addrs().first_shared(&wrapped), None);
    }
}
