//! What the fuzz targets share.

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;
use two_state_lock::Class;

/// A [`Class`] the fuzzer can generate.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum C {
    Add,
    Block,
}

impl From<C> for Class {
    fn from(c: C) -> Class {
        match c {
            C::Add => Class::Add,
            C::Block => Class::Block,
        }
    }
}

/// Wakes the thread that polls.
struct Unparker(std::thread::Thread);

impl Wake for Unparker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `f` on this thread: at most `polls` times (`None`: until ready,
/// parked between polls until woken, so a lost wake-up hangs and the
/// watchdog reports it).
pub fn poll_by_hand<F: Future + Unpin>(f: &mut F, polls: Option<u32>) -> Option<F::Output> {
    let waker = Waker::from(Arc::new(Unparker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut n = 0;
    loop {
        if let Poll::Ready(v) = Pin::new(&mut *f).poll(&mut cx) {
            return Some(v);
        }
        n += 1;
        match polls {
            Some(max) if n >= max => return None,
            Some(_) => std::thread::park_timeout(Duration::from_micros(20)),
            None => std::thread::park(),
        }
    }
}
