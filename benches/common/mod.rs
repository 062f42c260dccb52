//! The locks under comparison, behind one interface: hold `class` while a
//! closure runs. A reader/writer lock maps `Add` to read and `Block` to
//! write (the `invalidate_lock` way).
#![allow(dead_code)]

pub mod reference;
pub mod tasks;

use two_state_lock::{Class, TwoStateLock};

pub trait Subject: Send + Sync + Default + 'static {
    const NAME: &'static str;
    fn with<R>(&self, class: Class, f: impl FnOnce() -> R) -> R;
    fn try_with(&self, class: Class) -> bool;
    fn size() -> usize;
}

impl Subject for TwoStateLock {
    const NAME: &'static str = "two-state";
    #[inline]
    fn with<R>(&self, class: Class, f: impl FnOnce() -> R) -> R {
        let _g = self.lock(class);
        f()
    }
    #[inline]
    fn try_with(&self, class: Class) -> bool {
        self.try_lock(class).is_some()
    }
    fn size() -> usize {
        std::mem::size_of::<Self>()
    }
}

#[derive(Default)]
pub struct StdRwLock(std::sync::RwLock<()>);

impl Subject for StdRwLock {
    const NAME: &'static str = "std RwLock";
    #[inline]
    fn with<R>(&self, class: Class, f: impl FnOnce() -> R) -> R {
        match class {
            Class::Add => {
                let _g = self.0.read().unwrap();
                f()
            }
            Class::Block => {
                let _g = self.0.write().unwrap();
                f()
            }
        }
    }
    #[inline]
    fn try_with(&self, class: Class) -> bool {
        match class {
            Class::Add => self.0.try_read().is_ok(),
            Class::Block => self.0.try_write().is_ok(),
        }
    }
    fn size() -> usize {
        std::mem::size_of::<std::sync::RwLock<()>>()
    }
}

#[derive(Default)]
pub struct ParkingLotRwLock(parking_lot::RwLock<()>);

impl Subject for ParkingLotRwLock {
    const NAME: &'static str = "parking_lot RwLock";
    #[inline]
    fn with<R>(&self, class: Class, f: impl FnOnce() -> R) -> R {
        match class {
            Class::Add => {
                let _g = self.0.read();
                f()
            }
            Class::Block => {
                let _g = self.0.write();
                f()
            }
        }
    }
    #[inline]
    fn try_with(&self, class: Class) -> bool {
        match class {
            Class::Add => self.0.try_read().is_some(),
            Class::Block => self.0.try_write().is_some(),
        }
    }
    fn size() -> usize {
        std::mem::size_of::<parking_lot::RwLock<()>>()
    }
}

impl Subject for reference::Reference {
    const NAME: &'static str = "reference (bcachefs port)";
    #[inline]
    fn with<R>(&self, class: Class, f: impl FnOnce() -> R) -> R {
        self.lock(class);
        let r = f();
        self.unlock(class);
        r
    }
    #[inline]
    fn try_with(&self, class: Class) -> bool {
        let ok = self.try_lock(class);
        if ok {
            self.unlock(class);
        }
        ok
    }
    fn size() -> usize {
        std::mem::size_of::<Self>()
    }
}

/// A short critical section: a few dozen cycles of work the compiler keeps.
#[inline]
pub fn short_work() {
    for i in 0..16u32 {
        std::hint::black_box(i);
    }
}
