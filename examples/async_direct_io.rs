//! Direct I/O and buffered reads as tasks on tokio, sharing one file's
//! `TwoStateLock`.
//!
//! Writer tasks do direct writes: each holds `Block` across the I/O's
//! `.await` (a 1 ms sleep, then the write to "disk"), after evicting the
//! pages it writes. Reader tasks do buffered reads, adding a page on a miss
//! under `Add`. Direct writes run side by side (the example checks that
//! they overlapped), the runtime's two workers never block, and at the end
//! every cached page matches the disk. Last, a `tokio::time::timeout`
//! around an acquisition gives up on a stuck direct write and leaves the
//! lock as it was.
//!
//! cargo run --release --example async_direct_io

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use two_state_lock::{Class, TwoStateLock};

const PAGES: u64 = 64;
const WRITERS: u64 = 16;
const READERS: u64 = 16;
const WRITES_PER_TASK: u64 = 40;
const READS_PER_TASK: u64 = 2_000;

/// A file: its blocks on "disk" (a version per page), its page cache and
/// its lock.
struct File {
    disk: Vec<AtomicU64>,
    cache: Mutex<HashMap<u64, u64>>,
    lock: TwoStateLock,
    /// Direct writes in flight now, and the most at once.
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

impl File {
    /// A buffered read: a hit takes no lock (a page under `Block` was
    /// evicted and cannot come back while `Block` is held); a miss reads the
    /// disk and inserts the page under `Add`.
    async fn buffered_read(&self, page: u64) -> u64 {
        if let Some(&v) = self.cache.lock().unwrap().get(&page) {
            return v;
        }
        let _add = self.lock.lock_async(Class::Add).await;
        let v = self.disk[page as usize].load(Relaxed);
        *self.cache.lock().unwrap().entry(page).or_insert(v)
    }

    /// A direct write of `pages`: evict them, then the I/O, all under
    /// `Block`, held across the I/O's await.
    async fn direct_write(&self, pages: std::ops::Range<u64>) {
        let _dio = self.lock.lock_async(Class::Block).await;
        let now = self.in_flight.fetch_add(1, Relaxed) + 1;
        self.most_in_flight.fetch_max(now, Relaxed);
        self.cache.lock().unwrap().retain(|p, _| !pages.contains(p));
        tokio::time::sleep(Duration::from_millis(1)).await; // the device
        for p in pages {
            self.disk[p as usize].fetch_add(1, Relaxed);
        }
        self.in_flight.fetch_sub(1, Relaxed);
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let file = Arc::new(File {
        disk: (0..PAGES).map(|_| AtomicU64::new(0)).collect(),
        cache: Mutex::new(HashMap::new()),
        lock: TwoStateLock::new(),
        in_flight: AtomicUsize::new(0),
        most_in_flight: AtomicUsize::new(0),
    });
    let start = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let file = file.clone();
            tasks.push(tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(w);
                for _ in 0..WRITES_PER_TASK {
                    let first = rng.u64(..PAGES - 4);
                    file.direct_write(first..first + 4).await;
                }
            }));
        }
        for r in 0..READERS {
            let file = file.clone();
            tasks.push(tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(1000 + r);
                for i in 0..READS_PER_TASK {
                    file.buffered_read(rng.u64(..PAGES)).await;
                    if i % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let elapsed = start.elapsed();
    // Coherence: every cached page is the disk's version.
    let cache = file.cache.lock().unwrap();
    let stale = cache
        .iter()
        .filter(|&(&p, &v)| file.disk[p as usize].load(Relaxed) != v)
        .count();
    let most = file.most_in_flight.load(Relaxed);
    let writes = WRITERS * WRITES_PER_TASK;
    println!(
        "{writes} direct writes (1 ms each) and {} buffered reads by {} tasks on 2 workers in {:.0} ms; \
         at most {most} direct writes in flight at once; {} pages cached, {stale} stale",
        READERS * READS_PER_TASK,
        WRITERS + READERS,
        elapsed.as_secs_f64() * 1e3,
        cache.len(),
    );
    assert_eq!(stale, 0, "a cached page differs from the disk");
    assert!(most > 1, "direct writes never overlapped");
    drop(cache);

    // A stuck direct write: a read with a deadline gives up and leaves no
    // trace in the lock.
    let file2 = file.clone();
    rt.block_on(async move {
        let stuck = file2.lock.lock_async(Class::Block).await;
        let read =
            tokio::time::timeout(Duration::from_millis(20), file2.lock.lock_async(Class::Add))
                .await;
        assert!(read.is_err(), "the read got in past a held Block");
        assert_eq!(file2.lock.state().add_waiters, 0);
        drop(stuck);
        println!("a read with a 20 ms deadline gave up on a stuck direct write, and left no trace");
    });
}
