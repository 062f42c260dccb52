//! `two-state-range`: one `LockTable` for all files, one stripe per page:
//! adds and direct I/O exclude each other only where their pages meet.
//! Mapped sources are pinned under `Block` with the table's fault protocol.

use two_state_lock::{Class, FaultError, LockTable, RangeGuard};

use super::{Faults, Hold, Locking};

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
