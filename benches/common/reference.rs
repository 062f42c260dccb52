//! A port of the reference algorithm, bcachefs's `two_state_shared_lock`
//! (SPEC §7), kept as a baseline to beat:
//!
//! - one signed counter: the sign says which class holds, the magnitude how
//!   many; 0 is free;
//! - trylock: fail if the counter has the other sign, else CAS ±1;
//! - lock: trylock, else sleep on a wait queue until trylock succeeds (no
//!   hand-off, no queueing: woken waiters race new arrivals);
//! - unlock: subtract; on reaching 0, wake *all* waiters of both classes,
//!   every time (the wait queue's lock is taken even when nobody waits);
//! - no fairness, no overflow check, no lock-order validation.
//!
//! The kernel's wait queue is a spinlock and a list; here it is a `Mutex`
//! holding the number of sleepers and a `Condvar`. Like the kernel's
//! `wake_up_all` on an empty queue, a release to 0 takes the queue's lock
//! but makes no system call when the queue is empty.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Condvar, Mutex};
use two_state_lock::Class;

#[derive(Default)]
pub struct Reference {
    v: AtomicI64,
    sleepers: Mutex<usize>,
    wait: Condvar,
}

fn delta(class: Class) -> i64 {
    match class {
        Class::Add => 1,
        Class::Block => -1,
    }
}

impl Reference {
    #[inline]
    pub fn try_lock(&self, class: Class) -> bool {
        let i = delta(class);
        let mut old = self.v.load(Ordering::Relaxed);
        loop {
            if (i > 0 && old < 0) || (i < 0 && old > 0) {
                return false;
            }
            match self
                .v
                .compare_exchange_weak(old, old + i, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => old = now,
            }
        }
    }

    #[inline]
    pub fn lock(&self, class: Class) {
        if !self.try_lock(class) {
            self.lock_slow(class);
        }
    }

    #[cold]
    fn lock_slow(&self, class: Class) {
        // wait_event(): join the queue, re-check, sleep; any wake-up re-checks.
        let mut sleepers = self.sleepers.lock().unwrap();
        while !self.try_lock(class) {
            *sleepers += 1;
            sleepers = self.wait.wait(sleepers).unwrap();
            *sleepers -= 1;
        }
    }

    #[inline]
    pub fn unlock(&self, class: Class) {
        let i = delta(class);
        if self.v.fetch_sub(i, Ordering::Release) - i == 0 {
            self.wake_up_all();
        }
    }

    #[inline(never)]
    fn wake_up_all(&self) {
        let sleepers = self.sleepers.lock().unwrap();
        if *sleepers > 0 {
            self.wait.notify_all();
        }
    }
}
