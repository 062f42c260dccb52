//! Where waiting tasks' wakers live: a global table of buckets keyed by the
//! address of the wake word a task waits on, as parking_lot_core keeps
//! sleeping threads, so that a lock stays 16 bytes whatever waits for it.
//!
//! This is the futex of tasks. A task parks on a wake word with the sequence
//! number it read before signing up, as a thread's futex wait does; a
//! hand-off bumps the word, wakes the sleeping threads, then
//! [`unpark_all`] wakes the parked tasks. Parking checks the word and
//! stores the waker under the bucket's mutex, and `unpark_all` takes that
//! mutex after the bump, so a bump is either seen by the parking task or
//! finds its waker: no wake-up is lost.
//!
//! A bucket keeps its entries in a slab that grows to the most tasks ever
//! parked in it at once and is reused from then on: a wait allocates
//! nothing once the slab has room.

use std::panic::{self, AssertUnwindSafe};
use std::task::Waker;

#[cfg(not(loom))]
use crossbeam_utils::CachePadded;

use crate::sync::{Mutex, MutexGuard, WakeWord, lock_ignoring_poison};

/// Buckets in the table (a power of two). Locks hash to buckets by the
/// address of the wake word; two locks that share a bucket share its mutex
/// only while a task parks or a hand-off wakes.
#[cfg(not(loom))]
const BUCKETS: usize = 128;
/// Under loom: one bucket, which every lock shares. (A bucket chosen by
/// address would differ between the runs of one model, whose heap
/// addresses differ, and loom replays each schedule exactly.)
#[cfg(loom)]
const BUCKETS: usize = 1;

/// Wakers taken out of a bucket at a time by [`unpark_all`], which wakes
/// them after it lets go of the bucket's mutex (a waker may run executor
/// code of any length).
const WAKE_BATCH: usize = 16;

/// One parked task's entry.
struct Entry {
    /// The address of the wake word it waits on; 0 while the entry is free.
    word: usize,
    /// The waker to wake; `None` once woken, until the task parks again.
    waker: Option<Waker>,
}

/// The entries of one bucket: a slab and its free list. Emptied (keeping
/// its memory) whenever its last entry is given back, so that a burst of
/// parked tasks does not lengthen later scans.
struct Entries {
    slots: Vec<Entry>,
    free: Vec<u32>,
}

impl Entries {
    const fn new() -> Self {
        Entries {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }

    /// A free entry for `word`: a reused one if there is one.
    fn insert(&mut self, word: usize) -> u32 {
        let entry = Entry { word, waker: None };
        match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = entry;
                i
            }
            None => {
                let i = u32::try_from(self.slots.len())
                    .expect("two-state-lock: more than u32::MAX tasks parked in one bucket");
                self.slots.push(entry);
                i
            }
        }
    }
}

struct Bucket {
    entries: Mutex<Entries>,
}

#[cfg(not(loom))]
static TABLE: [CachePadded<Bucket>; BUCKETS] = [const {
    CachePadded::new(Bucket {
        entries: Mutex::new(Entries::new()),
    })
}; BUCKETS];

// Under loom, the table's mutexes must be created inside each model run.
#[cfg(loom)]
loom::lazy_static! {
    static ref TABLE: [Bucket; BUCKETS] = std::array::from_fn(|_| Bucket {
        entries: Mutex::new(Entries::new()),
    });
}

/// A task's place in the table while it waits: which entry is its.
/// Owned by the task's acquisition future; [`leave`] gives it back.
#[derive(Debug, Default)]
pub(crate) struct Parking {
    entry: Option<u32>,
}

#[inline]
fn address(word: &WakeWord) -> usize {
    std::ptr::from_ref(word) as usize
}

/// The bucket of `word` (Fibonacci hashing of the address: neighbouring
/// locks land in different buckets).
#[inline]
fn bucket(word: usize) -> MutexGuard<'static, Entries> {
    #[cfg(not(loom))]
    let index = ((word as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        >> (64 - BUCKETS.trailing_zeros())) as usize;
    #[cfg(loom)]
    let index = {
        let _ = word;
        0
    };
    lock_ignoring_poison(&TABLE[index].entries)
}

/// Parks the task on `word` with `waker`, unless the word has moved past
/// `seen` (then `false`: the task judges the lock again instead of
/// waiting). The waker stored is the latest one the task was polled with.
pub(crate) fn park(word: &WakeWord, parking: &mut Parking, seen: u32, waker: &Waker) -> bool {
    let key = address(word);
    let mut entries = bucket(key);
    // Under the mutex: a bump before `unpark_all` took the mutex is seen
    // here; a later one's `unpark_all` finds the waker stored below.
    if word.load() != seen {
        return false;
    }
    let i = *parking.entry.get_or_insert_with(|| entries.insert(key));
    let entry = &mut entries.slots[i as usize];
    let replaced = match &entry.waker {
        Some(w) if w.will_wake(waker) => None,
        _ => entry.waker.replace(waker.clone()),
    };
    drop(entries);
    // Outside the mutex: a waker's drop may run executor code.
    drop(replaced);
    true
}

/// Wakes every task parked on `word`. Called after the word was bumped.
pub(crate) fn unpark_all(word: &WakeWord) {
    let key = address(word);
    let mut next = 0;
    let mut panicked = None;
    loop {
        let mut batch: [Option<Waker>; WAKE_BATCH] = Default::default();
        let mut taken = 0;
        let more = {
            let mut entries = bucket(key);
            while next < entries.slots.len() && taken < WAKE_BATCH {
                let entry = &mut entries.slots[next];
                if entry.word == key {
                    if let Some(waker) = entry.waker.take() {
                        batch[taken] = Some(waker);
                        taken += 1;
                    }
                }
                next += 1;
            }
            next < entries.slots.len()
        };
        // Outside the mutex. An entry freed and reused meanwhile by a task
        // that parked after the bump is at worst woken once for nothing. A
        // waker that panics does not keep the others from being woken: the
        // first panic goes on once every task is woken.
        for waker in batch.into_iter().flatten() {
            if let Err(panic) = panic::catch_unwind(AssertUnwindSafe(|| waker.wake())) {
                panicked.get_or_insert(panic);
            }
        }
        if !more {
            break;
        }
    }
    if let Some(panic) = panicked {
        panic::resume_unwind(panic);
    }
}

/// The task no longer waits on `word`: gives its entry back, if it has
/// one (dropping the waker outside the mutex).
pub(crate) fn leave(word: &WakeWord, parking: &mut Parking) {
    let Some(i) = parking.entry.take() else {
        return;
    };
    let mut entries = bucket(address(word));
    let waker = entries.slots[i as usize].waker.take();
    entries.slots[i as usize].word = 0;
    entries.free.push(i);
    if entries.free.len() == entries.slots.len() {
        entries.slots.clear();
        entries.free.clear();
    }
    drop(entries);
    drop(waker);
}

/// Parked entries in use, over the whole table (for tests: a future that
/// is done or dropped leaves none).
#[cfg(all(test, not(loom)))]
pub(crate) fn entries_in_use() -> usize {
    TABLE
        .iter()
        .map(|b| {
            let e = lock_ignoring_poison(&b.entries);
            e.slots.len() - e.free.len()
        })
        .sum()
}
