//! `tokio-rwlock`, for tasks: a `tokio::sync::RwLock` per file; adders
//! take the read side, direct I/O the write side. The only async lock on
//! offer before this crate: coherent, but direct writes to one file
//! serialize. Mapped sources are copied before locking, as `rwlock` does.

use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use two_state_lock::Class;

use super::{AsyncHold, AsyncLocking, BoxFuture};

pub(crate) struct PerFile(Vec<RwLock<()>>);

impl PerFile {
    pub(crate) fn new(files: usize) -> Self {
        PerFile((0..files).map(|_| RwLock::new(())).collect())
    }
}

impl AsyncHold for RwLockReadGuard<'_, ()> {}
impl AsyncHold for RwLockWriteGuard<'_, ()> {}

impl AsyncLocking for PerFile {
    fn lock(
        &self,
        file: usize,
        _: u64,
        _: u64,
        class: Class,
    ) -> BoxFuture<'_, Box<dyn AsyncHold + '_>> {
        let lock = &self.0[file];
        Box::pin(async move {
            match class {
                Class::Add => Box::new(lock.read().await) as Box<dyn AsyncHold>,
                Class::Block => Box::new(lock.write().await),
            }
        })
    }
}
