//! `two-state`: a `TwoStateLock` per file; adders take `Add`, direct I/O
//! takes `Block`. Coherent, and direct writes to one file run side by side;
//! adds and direct I/O still exclude each other file-wide. Mapped sources
//! are pinned under `Block` with the fault protocol.

use two_state_lock::{AsyncGuard, Class, FaultError, Guard, TwoStateLock};

use super::{AsyncFaults, AsyncHold, AsyncLocking, BoxFuture, Faults, Hold, Locking};

pub(crate) struct PerFile(Vec<TwoStateLock>);

impl PerFile {
    pub(crate) fn new(files: usize) -> Self {
        PerFile((0..files).map(|_| TwoStateLock::new()).collect())
    }
}

impl Hold for Guard<'_> {
    fn faults_disabled(&self, f: &mut dyn FnMut()) -> bool {
        Guard::faults_disabled(self, f).locks_dropped
    }

    fn retry_faults(
        &self,
        revalidate: &mut dyn FnMut(),
        step: &mut dyn FnMut() -> Result<(), FaultError>,
    ) -> Result<(), FaultError> {
        Guard::retry_faults(self, revalidate, step)
    }
}

impl Locking for PerFile {
    fn lock(&self, file: usize, _: u64, _: u64, class: Class) -> Box<dyn Hold + '_> {
        Box::new(self.0[file].lock(class))
    }

    fn faults(&self) -> Option<&dyn Faults> {
        Some(self)
    }
}

impl Faults for PerFile {
    fn fault_in(&self, file: usize, _: u64, f: &mut dyn FnMut()) {
        self.0[file].fault_in(f)
    }

    fn lock_fault(&self, file: usize, _: u64) -> Result<Box<dyn Hold + '_>, FaultError> {
        Ok(Box::new(self.0[file].lock_fault()?))
    }
}

impl AsyncHold for AsyncGuard<'_> {
    fn faults_disabled<'a>(&'a self, f: BoxFuture<'a, ()>) -> BoxFuture<'a, bool> {
        Box::pin(async move { self.faults_disabled_async(f).await.locks_dropped })
    }
}

impl AsyncLocking for PerFile {
    fn lock(
        &self,
        file: usize,
        _: u64,
        _: u64,
        class: Class,
    ) -> BoxFuture<'_, Box<dyn AsyncHold + '_>> {
        let lock = &self.0[file];
        Box::pin(async move { Box::new(lock.lock_async(class).await) as Box<dyn AsyncHold> })
    }

    fn faults(&self) -> Option<&dyn AsyncFaults> {
        Some(self)
    }
}

impl AsyncFaults for PerFile {
    fn fault_in<'a>(&'a self, file: usize, _: u64, work: BoxFuture<'a, ()>) -> BoxFuture<'a, ()> {
        Box::pin(self.0[file].fault_in_async(|| work))
    }
}
