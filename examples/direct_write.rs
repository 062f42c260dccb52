//! Direct writes from memory-mapped buffers, on threads, with `fault_in`.
//!
//! Two files, each with a page cache and a `TwoStateLock`. Writer threads
//! do direct writes whose source buffer is mapped from the *other* file
//! (the AB-BA case) or from the written file itself (xfstests generic/647):
//! pinning each source page is a page fault that adds the page to the
//! buffer file's cache. Reader threads do buffered reads, adding pages on a
//! miss. At the end every cached page must match the disk: a direct write
//! whose hold was cycled while it pinned re-invalidates before writing.
//!
//! cargo run --release --example direct_write

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::thread;
use std::time::Duration;

use two_state_lock::{Class, TwoStateLock};

const PAGES: u64 = 64;
const WRITES: u64 = 2_000;
const READS: u64 = 20_000;

/// A file: its blocks on "disk" (a version per page), its page cache and
/// its lock.
struct File {
    disk: Vec<AtomicU64>,
    cache: Mutex<HashMap<u64, u64>>,
    lock: TwoStateLock,
}

impl File {
    fn new() -> Self {
        File {
            disk: (0..PAGES).map(|_| AtomicU64::new(0)).collect(),
            cache: Mutex::new(HashMap::new()),
            lock: TwoStateLock::new(),
        }
    }

    /// A buffered read of `page`: a hit takes no lock (a page under `Block`
    /// was evicted and cannot come back while `Block` is held); a miss reads
    /// the disk and inserts the page under `Add`.
    fn buffered_read(&self, page: u64) -> u64 {
        if let Some(&v) = self.cache.lock().unwrap().get(&page) {
            return v;
        }
        let _add = self.lock.lock(Class::Add);
        self.add_page(page)
    }

    /// Reads `page` from disk into the cache. The caller holds `Add`.
    fn add_page(&self, page: u64) -> u64 {
        let v = self.disk[page as usize].load(Relaxed);
        *self.cache.lock().unwrap().entry(page).or_insert(v)
    }

    fn evict(&self, pages: std::ops::Range<u64>) {
        self.cache.lock().unwrap().retain(|p, _| !pages.contains(p));
    }
}

/// A direct write of `len` pages at `first` to `file`, from a buffer mapped
/// from `source` at the same pages. Returns whether the write's hold was
/// cycled while it pinned the source.
fn direct_write(file: &File, source: &File, first: u64, len: u64, version: u64) -> bool {
    let pages = first..first + len;
    let dio = file.lock.lock(Class::Block);
    file.evict(pages.clone());
    let mut cycled = false;
    for page in pages.clone() {
        // Pin one source page: the fault adds it to the source's cache.
        let pinned = dio.faults_disabled(|| source.lock.fault_in(|| source.add_page(page)));
        cycled |= pinned.locks_dropped;
    }
    if cycled {
        // `Block` was down at times: pages may have been added meanwhile.
        file.evict(pages.clone());
    }
    for page in pages {
        file.disk[page as usize].store(version, Relaxed);
    }
    thread::sleep(Duration::from_micros(20)); // the device
    cycled
}

fn main() {
    let files = [File::new(), File::new()];
    let versions = AtomicU64::new(1);
    let cycled_writes = AtomicUsize::new(0);
    thread::scope(|s| {
        // (written file, source file): A from B, B from A, A from A.
        for (w, (to, from)) in [(0, 1), (1, 0), (0, 0)].into_iter().enumerate() {
            let (files, versions, cycled_writes) = (&files, &versions, &cycled_writes);
            s.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(w as u64);
                for _ in 0..WRITES {
                    let (first, len) = (rng.u64(0..PAGES - 4), rng.u64(1..=4));
                    let v = versions.fetch_add(1, Relaxed);
                    if direct_write(&files[to], &files[from], first, len, v) {
                        cycled_writes.fetch_add(1, Relaxed);
                    }
                }
            });
        }
        for r in 0..2 {
            let files = &files;
            s.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(100 + r);
                for _ in 0..READS {
                    files[rng.usize(0..2)].buffered_read(rng.u64(0..PAGES));
                }
            });
        }
    });
    let mut stale = 0;
    for file in &files {
        for (&page, &v) in file.cache.lock().unwrap().iter() {
            stale += usize::from(file.disk[page as usize].load(Relaxed) != v);
        }
    }
    println!(
        "{} direct writes ({} from the written file itself), {} of them cycled their hold while pinning; {} buffered reads; stale cached pages: {stale}",
        3 * WRITES,
        WRITES,
        cycled_writes.load(Relaxed),
        2 * READS,
    );
    assert_eq!(stale, 0, "a cached page is older than the disk");
}
