//! A small userspace page cache over real files, with direct I/O that
//! bypasses it, built four ways to show the problem `two-state-lock` solves:
//!
//! - [`Variant::InvalidateTwice`]: no lock; a direct write evicts its range
//!   before and after (what mainline Linux does). Stale pages get in.
//! - [`Variant::RwLock`]: a `std::sync::RwLock` per file; adders take the read
//!   side, direct I/O the write side (Linux's `invalidate_lock`). Coherent,
//!   but direct writes to one file serialize.
//! - [`Variant::TwoState`]: a [`TwoStateLock`] per file; adders take `Add`,
//!   direct I/O takes `Block`. Coherent, and direct writes to one file run
//!   side by side; adds and direct I/O still exclude each other file-wide.
//! - [`Variant::TwoStateRange`]: one [`LockTable`] for all files, one stripe
//!   per page: adds and direct I/O exclude each other only where their pages
//!   meet.
//!
//! In every variant a cache hit takes no lock (as in Linux, where only
//! adding a page takes `invalidate_lock`): a page of a range under `Block`
//! was evicted and cannot come back while `Block` is held.
//!
//! Every page carries a stamp (file, page, version). Each page has one
//! writer at a time (the workload gives each writer thread its own pages),
//! which publishes the version after the write is durable; a reader notes
//! the published version before it starts and must see at least that
//! version. Anything older is a **stale read**, the bug of the seed.

#![warn(missing_docs)]

pub mod workload;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use two_state_lock::{Class, FaultError, Guard, LockTable, RangeGuard, Scoped, TwoStateLock};

/// Bytes in a page.
pub const PAGE: usize = 4096;
const MAGIC: u32 = 0x5453_4c50; // "TSLP"

/// One page, aligned for `O_DIRECT`.
#[derive(Clone)]
#[repr(C, align(4096))]
pub struct Block(pub [u8; PAGE]);

impl Block {
    /// A page stamped with `(file, page, version)`; the rest is a pattern of
    /// the version, so torn or mixed pages are caught too.
    pub fn stamped(file: usize, page: u64, version: u64) -> Box<Block> {
        let mut b = Box::new(Block([(version % 251) as u8; PAGE]));
        b.set_stamp(file, page, version);
        b
    }

    fn set_stamp(&mut self, file: usize, page: u64, version: u64) {
        self.0[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        self.0[4..8].copy_from_slice(&(file as u32).to_le_bytes());
        self.0[8..16].copy_from_slice(&page.to_le_bytes());
        self.0[16..24].copy_from_slice(&version.to_le_bytes());
    }

    /// The page's version: 0 for a hole (all zeros); `None` if the page is
    /// neither a hole nor a well-formed stamp of `(file, page)`.
    pub fn version(&self, file: usize, page: u64) -> Option<u64> {
        let b = &self.0;
        if b.iter().all(|&x| x == 0) {
            return Some(0);
        }
        let word = |r: std::ops::Range<usize>| {
            let mut v = [0u8; 8];
            v[..r.len()].copy_from_slice(&b[r]);
            u64::from_le_bytes(v)
        };
        let version = word(16..24);
        let fill = (version % 251) as u8;
        let ok = word(0..4) == MAGIC as u64
            && word(4..8) == file as u64
            && word(8..16) == page
            && b[24..].iter().all(|&x| x == fill);
        ok.then_some(version)
    }
}

fn as_bytes(blocks: &[Block]) -> &[u8] {
    // SAFETY: `Block` is `repr(C)` over `[u8; PAGE]` with no padding (its
    // size equals its alignment), so a slice of blocks is that many bytes.
    unsafe { std::slice::from_raw_parts(blocks.as_ptr().cast(), blocks.len() * PAGE) }
}

fn as_bytes_mut(blocks: &mut [Block]) -> &mut [u8] {
    // SAFETY: as in `as_bytes`; every byte pattern is a valid `Block`.
    unsafe { std::slice::from_raw_parts_mut(blocks.as_mut_ptr().cast(), blocks.len() * PAGE) }
}

/// How the cache keeps direct I/O and page additions apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// No lock: evict before and after each direct write.
    InvalidateTwice,
    /// `std::sync::RwLock`: adders read, direct I/O writes.
    RwLock,
    /// `TwoStateLock` per file: adders `Add`, direct I/O `Block`.
    TwoState,
    /// A `LockTable` of [`RANGE_TABLE_LOCKS`] locks keyed by (file, page):
    /// adders take `Add` on their page, direct I/O `Block` on its range.
    TwoStateRange,
}

/// Locks in the `two-state-range` table, shared by all files (64 KiB). A
/// stripe is one page.
pub const RANGE_TABLE_LOCKS: usize = 4096;

impl Variant {
    /// All variants, in table order.
    pub const ALL: [Variant; 4] = [
        Variant::InvalidateTwice,
        Variant::RwLock,
        Variant::TwoState,
        Variant::TwoStateRange,
    ];

    /// The name used on the command line and in the table.
    pub fn name(self) -> &'static str {
        match self {
            Variant::InvalidateTwice => "invalidate-twice",
            Variant::RwLock => "rwlock",
            Variant::TwoState => "two-state",
            Variant::TwoStateRange => "two-state-range",
        }
    }

    /// Whether the variant pins mapped sources under its lock with the
    /// fault protocol (the two-state ones), or copies them before locking.
    pub fn pins_under_lock(self) -> bool {
        matches!(self, Variant::TwoState | Variant::TwoStateRange)
    }

    /// Parses [`name`](Self::name).
    pub fn parse(s: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.name() == s)
    }
}

/// Where a direct write's data comes from.
#[derive(Clone, Copy, Debug)]
pub enum Source {
    /// Plain memory: no faults.
    Memory,
    /// A buffer mapped from `pages` pages of file `file` starting at `first`:
    /// touching it faults those pages into `file`'s cache.
    Mapped {
        /// The file the buffer is mapped from (may be the written file).
        file: usize,
        /// Its first page.
        first: u64,
    },
}

/// Why an operation failed.
#[derive(Debug)]
pub enum OpError {
    /// The source buffer is mapped from the file being written (`EFAULT`):
    /// only with the seed's fault protocol ([`FaultProtocol::Seed`]).
    BadAddress,
    /// The file system said no.
    Io(io::Error),
}

impl From<io::Error> for OpError {
    fn from(e: io::Error) -> Self {
        OpError::Io(e)
    }
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpError::BadAddress => {
                f.write_str("bad address: source buffer is mapped from the file being written")
            }
            OpError::Io(e) => write!(f, "I/O error: {e}"),
        }
    }
}

impl std::error::Error for OpError {}

/// Counters the workload reports.
#[derive(Default, Debug)]
pub struct Stats {
    /// Pages read that were older than the version published before the read.
    pub stale_reads: AtomicU64,
    /// Pages a direct read saw half old, half new because a write of that
    /// page was in flight during the read: concurrent direct I/O to one page
    /// is not atomic (in Linux neither), so these are not stale reads.
    pub torn_direct_reads: AtomicU64,
    /// Direct writes refused because the source was mapped from the same file.
    pub bad_address: AtomicU64,
    /// Fault cycles (`OrderingViolation`): holds dropped and re-taken.
    pub cycles: AtomicU64,
    /// The most cycles one direct write needed.
    pub max_cycles_per_write: AtomicU64,
    /// Direct writes completed, and their bytes.
    pub direct_writes: AtomicU64,
    /// Bytes written by direct writes.
    pub direct_bytes: AtomicU64,
    /// Direct reads completed.
    pub direct_reads: AtomicU64,
    /// Buffered reads completed.
    pub buffered_reads: AtomicU64,
    /// Buffered writes completed.
    pub buffered_writes: AtomicU64,
    /// Holes punched.
    pub punches: AtomicU64,
    /// The most direct writes in flight on one file at once.
    pub max_dio_in_flight: AtomicUsize,
    /// Nanoseconds direct writes spent holding their lock, summed: divided
    /// by the run time and the files, the mean number in flight per file.
    pub dio_busy_ns: AtomicU64,
    /// Waits for a lock to add pages (`Add`, a reader/writer lock's read
    /// side): buffered writes and cache misses.
    pub add_waits: Waits,
    /// Waits for a lock to keep pages out (`Block`, the write side): direct
    /// I/O and hole punches.
    pub block_waits: Waits,
}

/// How long acquisitions of one class waited for their lock.
#[derive(Default, Debug)]
pub struct Waits {
    /// Acquisitions.
    pub count: AtomicU64,
    /// Nanoseconds waited, summed.
    pub total_ns: AtomicU64,
    /// The longest wait, in nanoseconds.
    pub max_ns: AtomicU64,
}

impl Waits {
    fn record(&self, waited: Duration) {
        let ns = waited.as_nanos().min(u128::from(u64::MAX)) as u64;
        self.count.fetch_add(1, Ordering::Relaxed);
        self.total_ns.fetch_add(ns, Ordering::Relaxed);
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    /// The mean wait (zero if none).
    pub fn mean(&self) -> Duration {
        let n = self.count.load(Ordering::Relaxed);
        Duration::from_nanos(
            self.total_ns
                .load(Ordering::Relaxed)
                .checked_div(n)
                .unwrap_or(0),
        )
    }

    /// The longest wait.
    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max_ns.load(Ordering::Relaxed))
    }
}

/// Engine settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Files ("mappings").
    pub files: usize,
    /// Pages per file.
    pub pages: u64,
    /// Pause between reading a missing page from the file and inserting it
    /// into the cache: widens the race window `InvalidateTwice` loses.
    pub read_window: Duration,
    /// Extra latency added to every access to the files (a miss, a
    /// write-back, a direct I/O, a punch), to model a slower device (0: the
    /// real device only).
    pub io_delay: Duration,
    /// How the two-state variants pin a mapped source under their `Block`.
    pub faults: FaultProtocol,
}

/// The fault protocol the two-state variants pin mapped sources with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultProtocol {
    /// [`TwoStateLock::fault_in`] (or [`LockTable::fault_in`]), one page per
    /// call, for pages evicted since the source was faulted in before
    /// locking: every fault completes, at most one cycle per page.
    Total,
    /// The seed's [`TwoStateLock::lock_fault`] with `retry_faults`: a
    /// source page mapped from the written range's lock fails with
    /// [`OpError::BadAddress`]; a cycle retries.
    Seed,
}

struct CachedPage {
    data: Box<Block>,
    dirty: bool,
    /// A write-back of this page is in flight (outside the cache mutex).
    writing: bool,
    /// Bumped by every buffered write: a write-back only cleans the page if
    /// nothing was written since its snapshot.
    generation: u64,
}

/// One file and its cache.
struct Mapping {
    index: usize,
    file: File,
    cache: Mutex<HashMap<u64, CachedPage>>,
    /// Signalled when a write-back completes.
    written_back: Condvar,
    two_state: TwoStateLock,
    rwlock: RwLock<()>,
    /// Per page: `version << 1 | punched`, published when durable.
    published: Vec<AtomicU64>,
    /// Per page: the version of the latest hole punch begun.
    last_punch: Vec<AtomicU64>,
    /// Per page: bumped before and after every write to the file (odd while
    /// one is in flight), so a direct read can tell a torn page from a stale
    /// one.
    disk_writes: Vec<AtomicU64>,
    dio_in_flight: AtomicUsize,
}

/// What a variant holds while it works on a file.
enum Held<'a> {
    Nothing,
    Read(#[allow(dead_code)] std::sync::RwLockReadGuard<'a, ()>),
    Write(#[allow(dead_code)] std::sync::RwLockWriteGuard<'a, ()>),
    Two(Guard<'a>),
    Range(RangeGuard<'a>),
}

/// The page-cache engine. Shared by the example, the tests and the fuzz
/// target.
pub struct Engine {
    variant: Variant,
    cfg: Config,
    files: Vec<Mapping>,
    /// `TwoStateRange`'s locks: object = file index, stripe = page.
    table: Option<LockTable>,
    direct_io: bool,
    /// What happened, for the report.
    pub stats: Stats,
}

impl Engine {
    /// Creates `cfg.files` files of `cfg.pages` pages in `dir`, every page
    /// stamped with version 1 and written (allocated) on disk.
    ///
    /// Files are opened with `O_DIRECT`; if the file system refuses it, they
    /// are opened without, and [`direct_io`](Self::direct_io) says so.
    pub fn create(dir: &Path, variant: Variant, cfg: Config) -> io::Result<Engine> {
        let mut direct_io = true;
        let mut files = Vec::new();
        for index in 0..cfg.files {
            let path = dir.join(format!("{}-{index}.dat", variant.name()));
            let file = File::create(&path)?;
            // A chunk at a time: memory stays small whatever the size.
            const CHUNK: u64 = 256;
            let mut chunk = Vec::with_capacity(CHUNK as usize);
            for start in (0..cfg.pages).step_by(CHUNK as usize) {
                chunk.clear();
                chunk.extend(
                    (start..cfg.pages.min(start + CHUNK)).map(|p| *Block::stamped(index, p, 1)),
                );
                file.write_all_at(as_bytes(&chunk), start * PAGE as u64)?;
            }
            drop(file);
            let open = |flags| {
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(flags)
                    .open(&path)
            };
            let file = match open(libc::O_DIRECT) {
                Ok(f) => f,
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    direct_io = false;
                    open(0)?
                }
                Err(e) => return Err(e),
            };
            files.push(Mapping {
                index,
                file,
                cache: Mutex::new(HashMap::new()),
                written_back: Condvar::new(),
                two_state: TwoStateLock::new(),
                rwlock: RwLock::new(()),
                published: (0..cfg.pages).map(|_| AtomicU64::new(1 << 1)).collect(),
                last_punch: (0..cfg.pages).map(|_| AtomicU64::new(0)).collect(),
                disk_writes: (0..cfg.pages).map(|_| AtomicU64::new(0)).collect(),
                dio_in_flight: AtomicUsize::new(0),
            });
        }
        Ok(Engine {
            variant,
            table: (variant == Variant::TwoStateRange).then(|| LockTable::new(RANGE_TABLE_LOCKS)),
            cfg,
            files,
            direct_io,
            stats: Stats::default(),
        })
    }

    /// Whether the files are really open with `O_DIRECT`.
    pub fn direct_io(&self) -> bool {
        self.direct_io
    }

    /// The variant.
    pub fn variant(&self) -> Variant {
        self.variant
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    fn table(&self) -> &LockTable {
        self.table
            .as_ref()
            .expect("only TwoStateRange locks by range")
    }

    /// Takes the variant's lock of `class` over pages `first..first + n` of
    /// `m`, and records how long that took.
    fn lock<'a>(&'a self, m: &'a Mapping, first: u64, n: u64, class: Class) -> Held<'a> {
        let start = Instant::now();
        let held = match (self.variant, class) {
            (Variant::InvalidateTwice, _) => return Held::Nothing,
            (Variant::RwLock, Class::Add) => Held::Read(m.rwlock.read().unwrap()),
            (Variant::RwLock, Class::Block) => Held::Write(m.rwlock.write().unwrap()),
            (Variant::TwoState, class) => Held::Two(m.two_state.lock(class)),
            (Variant::TwoStateRange, class) => Held::Range(self.table().lock_range(
                m.index as u64,
                first..first + n,
                class,
            )),
        };
        let waits = match class {
            Class::Add => &self.stats.add_waits,
            Class::Block => &self.stats.block_waits,
        };
        waits.record(start.elapsed());
        held
    }

    fn cache<'a>(&self, m: &'a Mapping) -> MutexGuard<'a, HashMap<u64, CachedPage>> {
        m.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn disk_read(&self, m: &Mapping, first: u64, blocks: &mut [Block]) -> io::Result<()> {
        m.file
            .read_exact_at(as_bytes_mut(blocks), first * PAGE as u64)?;
        std::thread::sleep(self.cfg.io_delay);
        Ok(())
    }

    fn disk_write(&self, m: &Mapping, first: u64, blocks: &[Block]) -> io::Result<()> {
        self.modifying_disk(m, first, blocks.len() as u64, || {
            m.file.write_all_at(as_bytes(blocks), first * PAGE as u64)
        })?;
        std::thread::sleep(self.cfg.io_delay);
        Ok(())
    }

    /// Runs `write`, a change to the file's pages `first..first + n`, with
    /// their `disk_writes` counters odd.
    fn modifying_disk<T>(&self, m: &Mapping, first: u64, n: u64, write: impl FnOnce() -> T) -> T {
        let pages = &m.disk_writes[first as usize..(first + n) as usize];
        // SeqCst: a direct read that sees the counters unchanged around its
        // read of the file did not overlap this write.
        for c in pages {
            c.fetch_add(1, Ordering::SeqCst);
        }
        let r = write();
        for c in pages {
            c.fetch_add(1, Ordering::SeqCst);
        }
        r
    }

    /// The page if it is in the cache. Takes no lock: a page of a range
    /// under `Block` was evicted and cannot be re-added while it holds.
    fn cached(&self, m: &Mapping, page: u64) -> Option<Box<Block>> {
        self.cache(m).get(&page).map(|hit| hit.data.clone())
    }

    /// The page from the cache, or read from the file and inserted: the
    /// "add" that `Add` (or the read side) covers, taken only on a miss.
    fn get_page(&self, m: &Mapping, page: u64) -> io::Result<Box<Block>> {
        if let Some(hit) = self.cached(m, page) {
            return Ok(hit);
        }
        let _held = self.lock(m, page, 1, Class::Add);
        self.read_in(m, page)
    }

    /// A miss: reads the page from the file and inserts it, unless it was
    /// added meanwhile. The caller covers the add (holds `Add` on the page).
    fn read_in(&self, m: &Mapping, page: u64) -> io::Result<Box<Block>> {
        if let Some(hit) = self.cached(m, page) {
            return Ok(hit);
        }
        let mut fresh = Box::new(Block([0; PAGE]));
        self.disk_read(m, page, std::slice::from_mut(&mut *fresh))?;
        // The window in which a direct write can complete, be evicted, and
        // leave us inserting the old block.
        if !self.cfg.read_window.is_zero() {
            std::thread::sleep(self.cfg.read_window);
        }
        let mut cache = self.cache(m);
        let entry = cache.entry(page).or_insert(CachedPage {
            data: fresh,
            dirty: false,
            writing: false,
            generation: 0,
        });
        Ok(entry.data.clone())
    }

    /// Counts `data` as stale if it is older than `noted` (published before
    /// the read started), or as torn if it is malformed and `overlapped` (a
    /// write of the page was in flight while it was read from the file).
    /// Returns its version (`None`: malformed, counted).
    fn check(
        &self,
        m: &Mapping,
        page: u64,
        data: &Block,
        noted: u64,
        overlapped: bool,
    ) -> Option<u64> {
        let want = noted >> 1;
        let got = data.version(m.index, page);
        let counter = match got {
            Some(v) if v >= want => None,
            // A hole is current if a punch at least that recent has begun.
            Some(0) if m.last_punch[page as usize].load(Ordering::Acquire) >= want => None,
            None if overlapped => Some(&self.stats.torn_direct_reads),
            _ => Some(&self.stats.stale_reads),
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        got
    }

    fn publish(&self, m: &Mapping, page: u64, version: u64, punched: bool) {
        m.published[page as usize].store(version << 1 | u64::from(punched), Ordering::Release);
    }

    fn noted(&self, m: &Mapping, page: u64) -> u64 {
        m.published[page as usize].load(Ordering::Acquire)
    }

    /// The cache, once no write-back of the range is in flight.
    fn cache_written_back<'a>(
        &self,
        m: &'a Mapping,
        range: std::ops::Range<u64>,
    ) -> MutexGuard<'a, HashMap<u64, CachedPage>> {
        let mut cache = self.cache(m);
        while range
            .clone()
            .any(|p| cache.get(&p).is_some_and(|c| c.writing))
        {
            cache = m
                .written_back
                .wait(cache)
                .unwrap_or_else(|e| e.into_inner());
        }
        cache
    }

    /// Writes the dirty pages of the range back to the file and waits for any
    /// write-back of the range already in flight, so that on return the file
    /// holds every page the cache had dirty; then evicts the range if
    /// `evict`. The disk writes run outside the cache mutex; a page is never
    /// written back by two threads at once, and is marked clean only once its
    /// write has landed.
    fn write_back(&self, m: &Mapping, first: u64, n: u64, evict: bool) -> io::Result<()> {
        let range = first..first + n;
        let mut cache = self.cache_written_back(m, range.clone());
        let mut mine = Vec::new();
        for p in range.clone() {
            if let Some(c) = cache.get_mut(&p).filter(|c| c.dirty) {
                c.writing = true;
                mine.push((p, c.generation, c.data.clone()));
            }
        }
        drop(cache);
        let result = mine
            .iter()
            .try_for_each(|(p, _, data)| self.disk_write(m, *p, std::slice::from_ref(&**data)));
        let mut cache = self.cache(m);
        for (p, generation, _) in &mine {
            if let Some(c) = cache.get_mut(p) {
                c.writing = false;
                if result.is_ok() && c.generation == *generation {
                    c.dirty = false;
                }
            }
        }
        if evict && result.is_ok() {
            for p in range {
                if cache.get(&p).is_some_and(|c| !c.writing) {
                    cache.remove(&p);
                }
            }
        }
        drop(cache);
        m.written_back.notify_all();
        result
    }

    /// Drops the range from the cache, dirty or not (its data is going away),
    /// once no write-back of it is in flight: one landing later would bring
    /// the old data back over a hole (a direct read of another range may be
    /// writing these pages back under the same `Block` phase).
    fn evict(&self, m: &Mapping, first: u64, n: u64) {
        let mut cache = self.cache_written_back(m, first..first + n);
        for p in first..first + n {
            cache.remove(&p);
        }
    }

    fn mapping(&self, file: usize) -> &Mapping {
        &self.files[file]
    }

    /// A buffered read of one page: a hit takes no lock, a miss takes `Add`
    /// on the page. Returns its version.
    pub fn read(&self, file: usize, page: u64) -> Result<Option<u64>, OpError> {
        let m = self.mapping(file);
        let noted = self.noted(m, page);
        let data = self.get_page(m, page)?;
        self.stats.buffered_reads.fetch_add(1, Ordering::Relaxed);
        Ok(self.check(m, page, &data, noted, false))
    }

    /// A buffered write of one page with `version`: `Add` on the page. The
    /// page is dirty in the cache until a direct I/O writes it back. The
    /// caller must be the page's only writer and give increasing versions.
    pub fn write(&self, file: usize, page: u64, version: u64) -> Result<(), OpError> {
        let m = self.mapping(file);
        let _held = self.lock(m, page, 1, Class::Add);
        let data = Block::stamped(file, page, version);
        {
            let mut cache = self.cache(m);
            let c = cache.entry(page).or_insert(CachedPage {
                data: Box::new(Block([0; PAGE])),
                dirty: false,
                writing: false,
                generation: 0,
            });
            c.data = data;
            c.dirty = true;
            c.generation += 1;
        }
        self.publish(m, page, version, false);
        self.stats.buffered_writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// A direct read of `n` pages: `Block` on the range; writes back the
    /// dirty pages of the range, then reads the file with `O_DIRECT`.
    /// Returns the versions read.
    pub fn direct_read(
        &self,
        file: usize,
        first: u64,
        n: u64,
    ) -> Result<Vec<Option<u64>>, OpError> {
        let m = self.mapping(file);
        let noted: Vec<u64> = (first..first + n).map(|p| self.noted(m, p)).collect();
        let _held = self.lock(m, first, n, Class::Block);
        self.write_back(m, first, n, false)?;
        let mut blocks = vec![Block([0; PAGE]); n as usize];
        let writes = &m.disk_writes[first as usize..(first + n) as usize];
        let before: Vec<u64> = writes.iter().map(|c| c.load(Ordering::SeqCst)).collect();
        self.disk_read(m, first, &mut blocks)?;
        self.stats.direct_reads.fetch_add(1, Ordering::Relaxed);
        Ok((0..blocks.len())
            .map(|i| {
                let overlapped =
                    before[i] % 2 == 1 || writes[i].load(Ordering::SeqCst) != before[i];
                self.check(m, first + i as u64, &blocks[i], noted[i], overlapped)
            })
            .collect())
    }

    /// Punches a hole over `n` pages, as `version`: `Block` on the range.
    /// Same writer rule as [`write`](Self::write).
    pub fn punch_hole(&self, file: usize, first: u64, n: u64, version: u64) -> Result<(), OpError> {
        let m = self.mapping(file);
        let _held = self.lock(m, first, n, Class::Block);
        // The punch begins before it drops the cached pages: from here on, a
        // direct read of these pages in the same `Block` phase may find the
        // hole (or the old hole where dirty data was dropped), and rightly so.
        for p in first..first + n {
            m.last_punch[p as usize].store(version, Ordering::Release);
        }
        self.evict(m, first, n);
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        let (off, len) = (
            (first * PAGE as u64) as libc::off_t,
            (n * PAGE as u64) as libc::off_t,
        );
        self.modifying_disk(m, first, n, || {
            // SAFETY: a plain system call on a file descriptor we own.
            match unsafe { libc::fallocate(m.file.as_raw_fd(), mode, off, len) } {
                0 => Ok(()),
                _ => Err(io::Error::last_os_error()),
            }
        })?;
        std::thread::sleep(self.cfg.io_delay);
        if self.variant == Variant::InvalidateTwice {
            self.evict(m, first, n);
        }
        for p in first..first + n {
            self.publish(m, p, version, true);
        }
        self.stats.punches.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Faults in one page of a mapped source buffer (a hit takes no lock, a
    /// miss takes `Add` on it) and copies it out.
    fn fault_page(&self, src: &Mapping, page: u64) -> io::Result<Box<Block>> {
        let noted = self.noted(src, page);
        let data = self.get_page(src, page)?;
        self.check(src, page, &data, noted, false);
        Ok(data)
    }

    /// The fault's own work on a page of `src` whose lock the caller took
    /// through the fault protocol: read it in if missing, copy it out.
    fn fault_page_locked(&self, src: &Mapping, page: u64, to: &mut Block) -> io::Result<()> {
        let noted = self.noted(src, page);
        let data = self.read_in(src, page)?;
        self.check(src, page, &data, noted, false);
        to.0.copy_from_slice(&data.0);
        Ok(())
    }

    /// Runs `f` in a `faults_disabled` scope of the two-state hold `held`.
    fn scoped<R>(&self, held: &Held<'_>, f: impl FnOnce() -> R) -> Scoped<R> {
        match held {
            Held::Two(g) => g.faults_disabled(f),
            Held::Range(g) => g.faults_disabled(f),
            _ => unreachable!("only the two-state variants pin under their lock"),
        }
    }

    /// `fault_in` on the lock that covers page `page` of `src`.
    fn fault_in<R>(&self, src: &Mapping, page: u64, f: impl FnOnce() -> R) -> R {
        match self.variant {
            Variant::TwoStateRange => self.table().fault_in(src.index as u64, page, f),
            _ => src.two_state.fault_in(f),
        }
    }

    /// Pins the source pages `sfirst..` into `bounce` under the two-state
    /// hold `held`, with the total protocol: a page still in the cache (it
    /// was faulted in before locking) is copied as it is; one evicted since
    /// goes through `fault_in`, each in its own scope so that cycles are
    /// counted. Returns the cycles (at most one per page).
    fn pin_total(
        &self,
        held: &Held<'_>,
        src: &Mapping,
        sfirst: u64,
        bounce: &mut [Block],
    ) -> io::Result<u64> {
        let mut cycles = 0;
        for (i, to) in bounce.iter_mut().enumerate() {
            let q = sfirst + i as u64;
            if let Some(page) = self.cached(src, q) {
                to.0.copy_from_slice(&page.0);
                continue;
            }
            let pinned = self.scoped(held, || {
                self.fault_in(src, q, || self.fault_page_locked(src, q, to))
            });
            cycles += u64::from(pinned.locks_dropped);
            pinned.value?;
        }
        Ok(cycles)
    }

    /// Pins as [`pin_total`](Self::pin_total) does, with the seed's
    /// protocol, every page through `lock_fault` (as this engine did before
    /// `fault_in`): the `retry_faults` loop retries after a cycle (the
    /// range is invalidated after the pinning, so a cycle needs nothing
    /// more). Returns the cycles, or [`OpError::BadAddress`] for a page
    /// whose lock the write holds.
    fn pin_seed(
        &self,
        held: &Held<'_>,
        src: &Mapping,
        sfirst: u64,
        bounce: &mut [Block],
    ) -> Result<u64, OpError> {
        let mut pinned = 0;
        let mut cycles = 0;
        let mut step = || {
            while pinned < bounce.len() {
                let q = sfirst + pinned as u64;
                let fault = match self.variant {
                    Variant::TwoStateRange => self.table().lock_fault(src.index as u64, q)?,
                    _ => src.two_state.lock_fault()?,
                };
                let copied = self.fault_page_locked(src, q, &mut bounce[pinned]);
                drop(fault);
                if let Err(e) = copied {
                    return Ok(Err(e));
                }
                pinned += 1;
            }
            Ok(Ok(()))
        };
        let revalidate = || cycles += 1;
        let pinning = match held {
            Held::Two(g) => g.retry_faults(revalidate, &mut step),
            Held::Range(g) => g.retry_faults(revalidate, &mut step),
            _ => unreachable!("only the two-state variants pin under their lock"),
        };
        match pinning {
            Err(FaultError::SameMapping) => Err(OpError::BadAddress),
            Err(FaultError::OrderingViolation) => unreachable!("retry_faults retries these"),
            Ok(copied) => {
                copied?;
                Ok(cycles)
            }
        }
    }

    /// A direct write of `n` pages at `first` with `version`, from `source`.
    /// The caller must be the only writer of those pages.
    ///
    /// A mapped source is faulted in before locking (as gfs2 and btrfs do).
    /// The variants that cannot fault under their lock (a fault under the
    /// write side of a reader/writer lock would deadlock on a source mapped
    /// from the same file) write that copy. The two-state variants pin the
    /// source again under `Block` with the fault protocol of
    /// [`Config::faults`]: with [`FaultProtocol::Total`] every write
    /// completes, a source mapped from the written file included; with
    /// [`FaultProtocol::Seed`] a source page under the write's own lock
    /// fails it with [`OpError::BadAddress`]. The range is invalidated once
    /// the source is pinned, so that whatever a fault cycle let in is
    /// evicted before the write; `InvalidateTwice` evicts again after it.
    pub fn direct_write(
        &self,
        file: usize,
        first: u64,
        n: u64,
        source: Source,
        version: u64,
    ) -> Result<(), OpError> {
        let m = self.mapping(file);
        let mut bounce = vec![Block([0; PAGE]); n as usize];
        if let Source::Mapped {
            file: sf,
            first: sfirst,
        } = source
        {
            let src = self.mapping(sf);
            for (i, to) in bounce.iter_mut().enumerate() {
                to.0.copy_from_slice(&self.fault_page(src, sfirst + i as u64)?.0);
            }
        }
        let held = self.lock(m, first, n, Class::Block);
        let since = Instant::now();
        let in_flight = m.dio_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.stats
            .max_dio_in_flight
            .fetch_max(in_flight, Ordering::Relaxed);
        let result = (|| {
            if let (
                true,
                Source::Mapped {
                    file: sf,
                    first: sfirst,
                },
            ) = (self.variant.pins_under_lock(), source)
            {
                let src = self.mapping(sf);
                let cycles = match self.cfg.faults {
                    FaultProtocol::Total => self.pin_total(&held, src, sfirst, &mut bounce)?,
                    FaultProtocol::Seed => self.pin_seed(&held, src, sfirst, &mut bounce)?,
                };
                self.stats.cycles.fetch_add(cycles, Ordering::Relaxed);
                self.stats
                    .max_cycles_per_write
                    .fetch_max(cycles, Ordering::Relaxed);
            }
            self.write_back(m, first, n, true)?;
            for (i, b) in bounce.iter_mut().enumerate() {
                b.set_stamp(file, first + i as u64, version);
                let fill = (version % 251) as u8;
                b.0[24..].fill(fill);
            }
            self.disk_write(m, first, &bounce)?;
            if self.variant == Variant::InvalidateTwice {
                self.write_back(m, first, n, true)?;
            }
            for p in first..first + n {
                self.publish(m, p, version, false);
            }
            Ok(())
        })();
        m.dio_in_flight.fetch_sub(1, Ordering::SeqCst);
        self.stats
            .dio_busy_ns
            .fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
        drop(held);
        match &result {
            Ok(()) => {
                self.stats.direct_writes.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .direct_bytes
                    .fetch_add(n * PAGE as u64, Ordering::Relaxed);
            }
            Err(OpError::BadAddress) => {
                self.stats.bad_address.fetch_add(1, Ordering::Relaxed);
            }
            Err(OpError::Io(_)) => {}
        }
        result
    }
}
