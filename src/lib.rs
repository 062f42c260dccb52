#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod fault;
mod guard;
mod lock;
mod raw;
mod sync;
mod table;
mod thread;
mod validate;

pub use fault::FaultError;
pub use guard::{ArcGuard, Guard};
pub use lock::TwoStateLock;
pub use raw::{Class, LockState, MAX_HOLDERS, MAX_WAITERS};
pub use table::{LockTable, RangeGuard};
pub use thread::Scoped;
