//! `rwlock`: a `std::sync::RwLock` per file; adders take the read side,
//! direct I/O the write side (Linux's `invalidate_lock`). Coherent, but
//! direct writes to one file serialize. It cannot fault under its write
//! side (a source mapped from the same file would deadlock), so mapped
//! sources are copied before locking.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use two_state_lock::Class;

use super::{Hold, Locking};

pub(crate) struct PerFile(Vec<RwLock<()>>);

impl PerFile {
    pub(crate) fn new(files: usize) -> Self {
        PerFile((0..files).map(|_| RwLock::new(())).collect())
    }
}

impl Hold for RwLockReadGuard<'_, ()> {}
impl Hold for RwLockWriteGuard<'_, ()> {}

impl Locking for PerFile {
    fn lock(&self, file: usize, _: u64, _: u64, class: Class) -> Box<dyn Hold + '_> {
        let lock = &self.0[file];
        match class {
            Class::Add => Box::new(lock.read().unwrap_or_else(|e| e.into_inner())),
            Class::Block => Box::new(lock.write().unwrap_or_else(|e| e.into_inner())),
        }
    }
}
