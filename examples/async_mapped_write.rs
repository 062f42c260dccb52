//! Direct writes from memory-mapped buffers, as tasks on tokio: the task
//! holds its held mapping (SPEC §11.3).
//!
//! Two files, A and B. Writer tasks do direct writes of 4 pages, to one file
//! from a buffer mapped from the other (crossing) or from the same file
//! (xfstests generic/647). Each holds `Block` on its file across the I/O's
//! `.await`, evicts the range, and pins the source one page at a time inside
//! `faults_disabled_async`: the pin is a page fault on the source file,
//! `fault_in_async`, whose work reads the page in and adds it to the source
//! file's cache under `Add`. Every pin completes: a same-file or
//! out-of-order fault cycles the write's hold, and then the write evicts its
//! range again before it writes. Reader tasks do buffered reads meanwhile.
//!
//! At the end every cached page matches the disk, no write failed, and no
//! write cycled more than once a page. The tasks move between the two
//! workers while they hold their scopes.
//!
//! cargo run --release --example async_mapped_write

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use two_state_lock::{Class, TwoStateLock};

const PAGES: u64 = 32;
const WRITERS: u64 = 16;
const READERS: u64 = 8;
const WRITES_PER_TASK: u64 = 25;
const READS_PER_TASK: u64 = 1_000;

/// A file: its blocks on "disk" (a version per page), its page cache and
/// its lock.
struct File {
    disk: Vec<AtomicU64>,
    cache: Mutex<HashMap<u64, u64>>,
    lock: TwoStateLock,
}

impl File {
    fn new() -> File {
        File {
            disk: (0..PAGES).map(|_| AtomicU64::new(0)).collect(),
            cache: Mutex::new(HashMap::new()),
            lock: TwoStateLock::new(),
        }
    }

    /// Reads `page` from disk into the cache; the caller holds `Add`.
    async fn add_page(&self, page: u64) -> u64 {
        tokio::task::yield_now().await; // the read's I/O
        let v = self.disk[page as usize].load(Relaxed);
        *self.cache.lock().unwrap().entry(page).or_insert(v)
    }

    /// A buffered read: a hit takes no lock; a miss adds under `Add`.
    async fn buffered_read(&self, page: u64) -> u64 {
        if let Some(&v) = self.cache.lock().unwrap().get(&page) {
            return v;
        }
        let _add = self.lock.lock_async(Class::Add).await;
        self.add_page(page).await
    }

    fn evict(&self, pages: &std::ops::Range<u64>) {
        self.cache.lock().unwrap().retain(|p, _| !pages.contains(p));
    }
}

/// Counts of what the direct writes did.
#[derive(Default)]
struct Counts {
    writes: AtomicUsize,
    pins: AtomicUsize,
    cycled_pins: AtomicUsize,
    re_evictions: AtomicUsize,
}

/// A direct write of `pages` of `file` from a buffer mapped from the same
/// pages of `source`.
async fn direct_write(file: &File, source: &File, pages: std::ops::Range<u64>, counts: &Counts) {
    let dio = file.lock.lock_async(Class::Block).await;
    file.evict(&pages);
    // Pin the source, a page a fault, each inside a scope that makes the
    // write's hold a held mapping of this task, wherever it runs.
    let mut cycles = 0;
    for page in pages.clone() {
        let pinned = dio
            .faults_disabled_async(source.lock.fault_in_async(|| source.add_page(page)))
            .await;
        cycles += usize::from(pinned.locks_dropped);
    }
    counts.pins.fetch_add(pages.clone().count(), Relaxed);
    counts.cycled_pins.fetch_add(cycles, Relaxed);
    assert!(
        cycles <= pages.clone().count(),
        "more than one cycle a page"
    );
    if cycles > 0 {
        // Pages may have been added while the hold was down.
        counts.re_evictions.fetch_add(1, Relaxed);
        file.evict(&pages);
    }
    tokio::time::sleep(Duration::from_micros(200)).await; // the device
    for p in pages {
        file.disk[p as usize].fetch_add(1, Relaxed);
    }
    counts.writes.fetch_add(1, Relaxed);
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let files = Arc::new([File::new(), File::new()]);
    let counts = Arc::new(Counts::default());
    let start = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let (files, counts) = (files.clone(), counts.clone());
            tasks.push(tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(w);
                for _ in 0..WRITES_PER_TASK {
                    // Half the writes cross files, a quarter each write
                    // A or B from a buffer mapped from itself.
                    let to = rng.usize(..2);
                    let from = if rng.bool() { 1 - to } else { to };
                    let first = rng.u64(..PAGES - 4);
                    direct_write(&files[to], &files[from], first..first + 4, &counts).await;
                }
            }));
        }
        for r in 0..READERS {
            let files = files.clone();
            tasks.push(tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(1000 + r);
                for _ in 0..READS_PER_TASK {
                    files[rng.usize(..2)].buffered_read(rng.u64(..PAGES)).await;
                }
            }));
        }
        let all = async {
            for t in tasks {
                t.await.unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(60), all)
            .await
            .expect("the tasks did not finish in 60 s: a deadlock");
    });
    let elapsed = start.elapsed();
    let stale: usize = files
        .iter()
        .map(|f| {
            let cache = f.cache.lock().unwrap();
            cache
                .iter()
                .filter(|&(&p, &v)| f.disk[p as usize].load(Relaxed) != v)
                .count()
        })
        .sum();
    let writes = counts.writes.load(Relaxed);
    let pins = counts.pins.load(Relaxed);
    let re_evictions = counts.re_evictions.load(Relaxed);
    let cycled = counts.cycled_pins.load(Relaxed);
    println!(
        "{writes} direct writes from mapped buffers ({pins} pinned pages, {cycled} of them cycled \
         the write's hold) and {} buffered reads by {} tasks on 2 workers in {:.0} ms; \
         {re_evictions} writes re-evicted after a cycle; {stale} stale pages",
        READERS * READS_PER_TASK,
        WRITERS + READERS,
        elapsed.as_secs_f64() * 1e3,
    );
    assert_eq!(writes as u64, WRITERS * WRITES_PER_TASK, "a write failed");
    assert_eq!(stale, 0, "a cached page differs from the disk");
    assert!(
        re_evictions > 0,
        "no same-file write cycled: the example shows nothing"
    );
    for f in files.iter() {
        assert_eq!(f.lock.state().holders, 0);
    }
}
