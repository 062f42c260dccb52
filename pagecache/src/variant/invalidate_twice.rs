//! `invalidate-twice`: no lock; a direct write (or a punch) evicts its range
//! before and after, as mainline Linux does. Stale pages get in.

use two_state_lock::Class;

use super::{AsyncHold, AsyncLocking, BoxFuture, Hold, Locking};

pub(crate) struct InvalidateTwice;

struct Nothing;

impl Hold for Nothing {}
impl AsyncHold for Nothing {}

impl Locking for InvalidateTwice {
    fn lock(&self, _: usize, _: u64, _: u64, _: Class) -> Box<dyn Hold + '_> {
        Box::new(Nothing)
    }

    fn is_lockless(&self) -> bool {
        true
    }
}

impl AsyncLocking for InvalidateTwice {
    fn lock(&self, _: usize, _: u64, _: u64, _: Class) -> BoxFuture<'_, Box<dyn AsyncHold + '_>> {
        Box::pin(async { Box::new(Nothing) as Box<dyn AsyncHold> })
    }

    fn is_lockless(&self) -> bool {
        true
    }
}
