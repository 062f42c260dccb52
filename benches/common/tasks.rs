//! The async locks under comparison, behind one interface: hold `class`
//! while a future runs (or, from a thread outside the runtime, while a
//! closure runs). A reader/writer lock maps `Add` to read and `Block` to
//! write.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use two_state_lock::{Class, TwoStateLock};

pub trait AsyncSubject: Send + Sync + Default + 'static {
    const NAME: &'static str;
    /// Holds `class` while the future `f` makes runs. (`f` is called once
    /// the hold is taken: a `tokio::time::sleep` made before would count
    /// the wait for the lock as part of the sleep.)
    fn with<F: Future + Send>(
        &self,
        class: Class,
        f: impl FnOnce() -> F + Send,
    ) -> impl Future<Output = F::Output> + Send;
    /// Holds `class` while `f` runs, blocking this thread (not a runtime
    /// worker) while it waits.
    fn with_blocking<R>(&self, class: Class, f: impl FnOnce() -> R) -> R;
    fn size() -> usize;
}

impl AsyncSubject for TwoStateLock {
    const NAME: &'static str = "two-state";
    async fn with<F: Future + Send>(
        &self,
        class: Class,
        f: impl FnOnce() -> F + Send,
    ) -> F::Output {
        {
            let _g = self.lock_async(class).await;
            f().await
        }
    }
    fn with_blocking<R>(&self, class: Class, f: impl FnOnce() -> R) -> R {
        let _g = self.lock(class);
        f()
    }
    fn size() -> usize {
        std::mem::size_of::<Self>()
    }
}

#[derive(Default)]
pub struct TokioRwLock(tokio::sync::RwLock<()>);

impl AsyncSubject for TokioRwLock {
    const NAME: &'static str = "tokio RwLock";
    async fn with<F: Future + Send>(
        &self,
        class: Class,
        f: impl FnOnce() -> F + Send,
    ) -> F::Output {
        {
            match class {
                Class::Add => {
                    let _g = self.0.read().await;
                    f().await
                }
                Class::Block => {
                    let _g = self.0.write().await;
                    f().await
                }
            }
        }
    }
    fn with_blocking<R>(&self, class: Class, f: impl FnOnce() -> R) -> R {
        match class {
            Class::Add => {
                let _g = self.0.blocking_read();
                f()
            }
            Class::Block => {
                let _g = self.0.blocking_write();
                f()
            }
        }
    }
    fn size() -> usize {
        std::mem::size_of::<tokio::sync::RwLock<()>>()
    }
}

#[derive(Default)]
pub struct AsyncLockRwLock(async_lock::RwLock<()>);

impl AsyncSubject for AsyncLockRwLock {
    const NAME: &'static str = "async-lock RwLock";
    async fn with<F: Future + Send>(
        &self,
        class: Class,
        f: impl FnOnce() -> F + Send,
    ) -> F::Output {
        {
            match class {
                Class::Add => {
                    let _g = self.0.read().await;
                    f().await
                }
                Class::Block => {
                    let _g = self.0.write().await;
                    f().await
                }
            }
        }
    }
    fn with_blocking<R>(&self, class: Class, f: impl FnOnce() -> R) -> R {
        match class {
            Class::Add => {
                let _g = self.0.read_blocking();
                f()
            }
            Class::Block => {
                let _g = self.0.write_blocking();
                f()
            }
        }
    }
    fn size() -> usize {
        std::mem::size_of::<async_lock::RwLock<()>>()
    }
}

/// Polls `f` once, outside any runtime; it must be ready (an uncontended
/// acquisition is).
#[inline]
pub fn ready<F: Future>(f: F) -> F::Output {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("an uncontended acquisition was pending"),
    }
}
