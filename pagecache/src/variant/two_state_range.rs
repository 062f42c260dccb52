//! `two-state-range`: one `LockTable` for all files, one stripe per page:
//! adds and direct I/O exclude each other only where their pages meet.
//! Mapped sources are pinned under `Block` with the table's fault protocol.

use two_state_lock::{AsyncRangeGuard, Class, FaultError, LockTable, RangeGuard};

use super::{AsyncFaults, AsyncHold, AsyncLocking, BoxFuture, Faults, Hold, Locking};

pub(crate) struct Table(LockTable);

impl Table {
    pub(crate) fn new(locks: usize) -> Self {
        Table(LockTable::new(locks))
    }
}

impl Hold for RangeGuard<'_> {
    fn faults_disabled(&self, f: &mut dyn FnMut()) -> bool {
        RangeGuard::faults_disabled(self, f).locks_dropped
    }

    fn retry_faults(
        &self,
        revalidate: &mut dyn FnMut(),
        step: &mut dyn FnMut() -> Result<(), FaultError>,
    ) -> Result<(), FaultError> {
        RangeGuard::retry_faults(self, revalidate, step)
    }
}

impl Locking for Table {
    fn lock(&self, file: usize, first: u64, n: u64, class: Class) -> Box<dyn Hold + '_> {
        Box::new(self.0.lock_range(file as u64, first..first + n, class))
    }

    fn faults(&self) -> Option<&dyn Faults> {
        Some(self)
    }
}

impl Faults for Table {
    fn fault_in(&self, file: usize, page: u64, f: &mut dyn FnMut()) {
        self.0.fault_in(file as u64, page, f)
    }

    fn lock_fault(&self, file: usize, page: u64) -> Result<Box<dyn Hold + '_>, FaultError> {
        Ok(Box::new(self.0.lock_fault(file as u64, page)?))
    }
}

impl AsyncHold for AsyncRangeGuard<'_> {
    fn faults_disabled<'a>(&'a self, f: BoxFuture<'a, ()>) -> BoxFuture<'a, bool> {
        Box::pin(async move { self.faults_disabled_async(f).await.locks_dropped })
    }
}

impl AsyncLocking for Table {
    fn lock(
        &self,
        file: usize,
        first: u64,
        n: u64,
        class: Class,
    ) -> BoxFuture<'_, Box<dyn AsyncHold + '_>> {
        Box::pin(async move {
            Box::new(
                self.0
                    .lock_range_async(file as u64, first..first + n, class)
                    .await,
            ) as Box<dyn AsyncHold>
        })
    }

    fn faults(&self) -> Option<&dyn AsyncFaults> {
        Some(self)
    }
}

impl AsyncFaults for Table {
    fn fault_in<'a>(
        &'a self,
        file: usize,
        page: u64,
        work: BoxFuture<'a, ()>,
    ) -> BoxFuture<'a, ()> {
        Box::pin(self.0.fault_in_async(file as u64, page, || work))
    }
}
