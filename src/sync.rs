//! The one place atomics, mutexes, futex waits, spinning and thread-locals
//! come from.
//!
//! Built normally, these are `core` atomics, `atomic-wait` futexes and
//! `crossbeam_utils::Backoff`. Built with `RUSTFLAGS="--cfg loom"`, they are
//! loom's, so `tests/loom.rs` explores every interleaving of the real lock
//! code: the futex becomes a `loom` mutex + condvar pair and spinning is
//! skipped (a waiter goes straight to sleep, which is the interesting case).

pub(crate) use core::sync::atomic::Ordering;
#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicU32, AtomicU64};
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64};
#[cfg(loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};
use std::sync::PoisonError;
#[cfg(not(loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// A look at `word` before a compare-and-swap: a relaxed load.
///
/// Under loom it is a relaxed read-modify-write that changes nothing, which
/// always reads the latest value. A stale look either makes the
/// compare-and-swap that follows fail (it compares against the latest value,
/// and what it writes is computed from what it expected), or makes
/// `try_lock` fail, or the holder limit panic, as of a moment when the word
/// really held that value (std's `try_read` judges from a relaxed load the
/// same way); a blocking acquisition loads again before it signs up to
/// sleep. Exploring every stale value would prove nothing more, and it
/// multiplied the interleavings of the largest model by more than ten.
#[inline]
pub(crate) fn peek(word: &AtomicU64) -> u64 {
    #[cfg(not(loom))]
    return word.load(Ordering::Relaxed);
    #[cfg(loom)]
    return word.fetch_add(0, Ordering::Relaxed);
}

/// Locks `mutex`, also when a thread panicked while holding it: the data
/// the crate keeps under a mutex (the task wait table) stays consistent at
/// every point a panic can start.
#[inline]
pub(crate) fn lock_ignoring_poison<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Declares a thread-local. Outside loom it is `const`-initialised (no lazy
/// init check, no destructor registration); loom's macro has no `const` form.
macro_rules! thread_local_const {
    ($vis:vis static $name:ident: $t:ty = $init:expr;) => {
        #[cfg(not(loom))]
        std::thread_local!($vis static $name: $t = const { $init });
        #[cfg(loom)]
        loom::thread_local!($vis static $name: $t = $init);
    };
}
pub(crate) use thread_local_const;

/// Emits `const fn` outside loom and a plain `fn` under loom, whose atomics
/// have no `const` constructor.
macro_rules! const_fn_unless_loom {
    ($(#[$m:meta])* $vis:vis fn $name:ident() -> $ret:ty $body:block) => {
        $(#[$m])*
        #[cfg(not(loom))]
        $vis const fn $name() -> $ret $body
        $(#[$m])*
        #[cfg(loom)]
        $vis fn $name() -> $ret $body
    };
}
pub(crate) use const_fn_unless_loom;

/// A 32-bit sequence number that threads sleep on until it changes.
///
/// Outside loom this is exactly one `AtomicU32` used as a futex word.
pub(crate) struct WakeWord {
    seq: AtomicU32,
    #[cfg(loom)]
    parking: (loom::sync::Mutex<()>, loom::sync::Condvar),
    /// Under loom, time does not pass: a model fires the timers of timed
    /// waits on this word instead (`fire_timers`), at any point loom picks.
    #[cfg(loom)]
    timers_fired: loom::sync::atomic::AtomicBool,
}

impl WakeWord {
    const_fn_unless_loom! {
        pub(crate) fn new() -> Self {
            Self {
                seq: AtomicU32::new(0),
                #[cfg(loom)]
                parking: (loom::sync::Mutex::new(()), loom::sync::Condvar::new()),
                #[cfg(loom)]
                timers_fired: loom::sync::atomic::AtomicBool::new(false),
            }
        }
    }

    /// The current sequence number. Acquire: a sleeper reads it before it
    /// signs up, and must see every bump that happened before that.
    #[inline]
    pub(crate) fn load(&self) -> u32 {
        self.seq.load(Ordering::Acquire)
    }

    /// Sleeps while the sequence number is still `seen`. May return
    /// spuriously; callers re-check.
    pub(crate) fn wait(&self, seen: u32) {
        #[cfg(not(loom))]
        atomic_wait::wait(&self.seq, seen);
        #[cfg(loom)]
        {
            let (mutex, condvar) = &self.parking;
            let guard = mutex.lock().unwrap_or_else(PoisonError::into_inner);
            if self.seq.load(Ordering::Acquire) == seen {
                drop(condvar.wait(guard).unwrap_or_else(PoisonError::into_inner));
            }
        }
    }

    /// As [`wait`](Self::wait), giving up at `deadline` at the latest.
    /// May return spuriously or early; callers re-check the word and the
    /// deadline ([`expired`](Self::expired)).
    ///
    /// `atomic-wait` has no timed wait. On Linux this is the same private
    /// futex wait `atomic-wait` makes, with a relative timeout (the
    /// `libc` crate, which `atomic-wait` already depends on there), so the
    /// wake-ups of `bump_and_wake_all` reach it. Elsewhere it sleeps in
    /// slices of at most 1 ms and looks again: a timed waiter there notices
    /// a hand-off up to 1 ms late.
    pub(crate) fn wait_until(&self, seen: u32, deadline: Instant) {
        #[cfg(not(loom))]
        {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return;
            };
            #[cfg(target_os = "linux")]
            {
                let timeout = libc::timespec {
                    tv_sec: left.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
                    tv_nsec: left.subsec_nanos().into(),
                };
                // SAFETY: FUTEX_WAIT reads the `u32` behind `seq` (valid and
                // aligned for the whole call, which borrows `self`) and sleeps
                // while it equals `seen`, for at most `timeout`, which lives
                // on this frame. It writes nothing; its result (woken, timed
                // out, interrupted, or the word had changed) is judged by the
                // caller, which re-checks.
                unsafe {
                    libc::syscall(
                        libc::SYS_futex,
                        self.seq.as_ptr(),
                        libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                        seen,
                        &raw const timeout,
                    );
                }
            }
            #[cfg(not(target_os = "linux"))]
            if self.seq.load(Ordering::Acquire) == seen {
                std::thread::sleep(left.min(std::time::Duration::from_millis(1)));
            }
        }
        #[cfg(loom)]
        {
            let _ = deadline;
            let (mutex, condvar) = &self.parking;
            let guard = mutex.lock().unwrap_or_else(PoisonError::into_inner);
            if self.seq.load(Ordering::Acquire) == seen
                && !self.timers_fired.load(Ordering::Acquire)
            {
                drop(condvar.wait(guard).unwrap_or_else(PoisonError::into_inner));
            }
        }
    }

    /// Whether a timed wait on this word with `deadline` has expired.
    pub(crate) fn expired(&self, deadline: Instant) -> bool {
        #[cfg(not(loom))]
        return Instant::now() >= deadline;
        #[cfg(loom)]
        {
            let _ = deadline;
            self.timers_fired.load(Ordering::Acquire)
        }
    }

    /// Under loom: the deadline of every timed wait on this word passes now.
    #[cfg(loom)]
    pub(crate) fn fire_timers(&self) {
        self.timers_fired.store(true, Ordering::Release);
        let (mutex, condvar) = &self.parking;
        drop(mutex.lock().unwrap_or_else(PoisonError::into_inner));
        condvar.notify_all();
    }

    /// Bumps the sequence number and wakes every thread sleeping on it.
    pub(crate) fn bump_and_wake_all(&self) {
        // Release: a woken thread that sees the new number also sees the
        // state change that preceded the bump.
        self.seq.fetch_add(1, Ordering::Release);
        #[cfg(not(loom))]
        atomic_wait::wake_all(&self.seq);
        #[cfg(loom)]
        {
            let (mutex, condvar) = &self.parking;
            // Taking the mutex orders this wake after any sleeper's check.
            drop(mutex.lock().unwrap_or_else(PoisonError::into_inner));
            condvar.notify_all();
        }
    }
}

/// Backoff after a compare-and-swap lost to another thread that changed the
/// word: 8, 16, ... up to 1024 pause instructions, doubling each time, never
/// a yield. (parking_lot's `spin_no_yield` doubles from 2.)
pub(crate) struct CasBackoff {
    #[cfg(not(loom))]
    step: u32,
}

/// The first backoff: 8 pauses (about 0.2 us on the machine whose numbers
/// docs/performance.md gives). The thread that won keeps the cache line
/// for a few of its operations instead of one: with 2 pauses, contended
/// threads passed the line back and forth (docs/performance.md, "what was
/// tried"). Longer still gained more throughput but lengthened the wait of
/// the thread that lost.
#[cfg(not(loom))]
const CAS_BACKOFF_FIRST: u32 = 3;

/// The most doublings: 1024 pauses.
#[cfg(not(loom))]
const CAS_BACKOFF_LIMIT: u32 = 10;

impl CasBackoff {
    #[inline]
    pub(crate) fn new() -> Self {
        CasBackoff {
            #[cfg(not(loom))]
            step: CAS_BACKOFF_FIRST,
        }
    }

    /// Pauses before the caller looks at the word again. Under loom it
    /// returns at once: a pause is not an event loom can schedule (the look
    /// after it is).
    #[inline]
    pub(crate) fn spin(&mut self) {
        #[cfg(not(loom))]
        {
            for _ in 0..1u32 << self.step {
                core::hint::spin_loop();
            }
            self.step = (self.step + 1).min(CAS_BACKOFF_LIMIT);
        }
    }
}

/// Bounded spinning before a thread signs up to sleep.
pub(crate) struct Spin(#[cfg(not(loom))] crossbeam_utils::Backoff);

impl Spin {
    #[inline]
    pub(crate) fn new() -> Self {
        #[cfg(not(loom))]
        return Spin(crossbeam_utils::Backoff::new());
        #[cfg(loom)]
        return Spin();
    }

    /// Spins (or yields) once and returns `true`, or returns `false` when the
    /// spin budget is spent and the caller should sleep. Under loom there is
    /// no budget: spinning only multiplies the interleavings to explore.
    #[inline]
    pub(crate) fn spin(&self) -> bool {
        #[cfg(not(loom))]
        {
            if self.0.is_completed() {
                return false;
            }
            self.0.snooze();
            true
        }
        #[cfg(loom)]
        false
    }
}
