//! A small userspace page cache over real files, with direct I/O that
//! bypasses it, built four ways to show the problem `two-state-lock` solves:
//!
//! - [`Variant::InvalidateTwice`]: no lock; a direct write evicts its range
//!   before and after (what mainline Linux does). Stale pages get in.
//! - [`Variant::RwLock`]: a `std::sync::RwLock` per file; adders take the read
//!   side, direct I/O the write side (Linux's `invalidate_lock`). Coherent,
//!   but direct writes to one file serialize.
//! - [`Variant::TwoState`]: a `TwoStateLock` per file; adders take `Add`,
//!   direct I/O takes `Block`. Coherent, and direct writes to one file run
//!   side by side; adds and direct I/O still exclude each other file-wide.
//! - [`Variant::TwoStateRange`]: one `LockTable` for all files, one stripe
//!   per page: adds and direct I/O exclude each other only where their pages
//!   meet.
//!
//! In every variant a cache hit takes no lock (as in Linux, where only
//! adding a page takes `invalidate_lock`): a page of a range under `Block`
//! was evicted and cannot come back while `Block` is held.
//!
//! The parts, one module each: `page` (the stamped page), `mapping` (a
//! file and its cache, write-back), `io` (the file I/O and the added
//! latency), `detector` (published versions and stale reads), `stats`,
//! `variant` (each variant's locking, one module per variant), and this
//! module, the engine's operations, which are the same for every variant.

#![warn(missing_docs)]

mod async_engine;
mod detector;
mod io;
mod mapping;
mod page;
mod stats;
mod variant;
pub mod workload;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use two_state_lock::{Class, FaultError};

pub use async_engine::{AsyncEngine, BlockOn};
use mapping::Mapping;
pub use page::{Block, PAGE};
pub use stats::{Stats, Waits};
use variant::{Faults, Hold, Locking};
pub use variant::{RANGE_TABLE_LOCKS, Variant};

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
    Io(std::io::Error),
}

impl From<std::io::Error> for OpError {
    fn from(e: std::io::Error) -> Self {
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
    /// [`TwoStateLock::fault_in`](two_state_lock::TwoStateLock::fault_in) (or [`LockTable::fault_in`](two_state_lock::LockTable::fault_in)), one page per
    /// call, for pages evicted since the source was faulted in before
    /// locking: every fault completes, at most one cycle per page.
    Total,
    /// The seed's [`TwoStateLock::lock_fault`](two_state_lock::TwoStateLock::lock_fault) with `retry_faults`: a
    /// source page mapped from the written range's lock fails with
    /// [`OpError::BadAddress`]; a cycle retries.
    Seed,
}

/// The page-cache engine. Shared by the example, the tests and the fuzz
/// target.
pub struct Engine {
    variant: Variant,
    locking: Box<dyn Locking>,
    cfg: Config,
    files: Vec<Mapping>,
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
    pub fn create(dir: &Path, variant: Variant, cfg: Config) -> std::io::Result<Engine> {
        let (files, direct_io) = mapping::create_all(dir, variant.name(), &cfg)?;
        Ok(Engine {
            variant,
            locking: variant.locking(cfg.files),
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

    /// Takes the variant's lock of `class` over pages `first..first + n` of
    /// `m`, and records how long that took.
    fn lock(&self, m: &Mapping, first: u64, n: u64, class: Class) -> Box<dyn Hold + '_> {
        let start = Instant::now();
        let held = self.locking.lock(m.index, first, n, class);
        if self.locking.is_lockless() {
            return held;
        }
        self.stats.waited(class, start.elapsed());
        held
    }

    /// The page from the cache, or read from the file and inserted: the
    /// "add" that `Add` (or the read side) covers, taken only on a miss.
    fn get_page(&self, m: &Mapping, page: u64) -> std::io::Result<Box<Block>> {
        if let Some(hit) = m.cached(page) {
            return Ok(hit);
        }
        let _held = self.lock(m, page, 1, Class::Add);
        m.read_in(page)
    }

    fn mapping(&self, file: usize) -> &Mapping {
        &self.files[file]
    }

    /// A buffered read of one page: a hit takes no lock, a miss takes `Add`
    /// on the page. Returns its version.
    pub fn read(&self, file: usize, page: u64) -> Result<Option<u64>, OpError> {
        let m = self.mapping(file);
        let noted = m.noted(page);
        let data = self.get_page(m, page)?;
        self.stats.buffered_reads.fetch_add(1, Ordering::Relaxed);
        Ok(m.check(&self.stats, page, &data, noted, false))
    }

    /// A buffered write of one page with `version`: `Add` on the page. The
    /// page is dirty in the cache until a direct I/O writes it back. The
    /// caller must be the page's only writer and give increasing versions.
    pub fn write(&self, file: usize, page: u64, version: u64) -> Result<(), OpError> {
        let m = self.mapping(file);
        let _held = self.lock(m, page, 1, Class::Add);
        m.write_cached(page, Block::stamped(file, page, version));
        m.publish(page, version, false);
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
        let noted: Vec<u64> = (first..first + n).map(|p| m.noted(p)).collect();
        let _held = self.lock(m, first, n, Class::Block);
        m.write_back(first, n, false)?;
        let mut blocks = vec![Block([0; PAGE]); n as usize];
        let overlapped = m.disk_read_direct(first, &mut blocks)?;
        self.stats.direct_reads.fetch_add(1, Ordering::Relaxed);
        Ok((0..blocks.len())
            .map(|i| {
                m.check(
                    &self.stats,
                    first + i as u64,
                    &blocks[i],
                    noted[i],
                    overlapped(i),
                )
            })
            .collect())
    }

    /// Punches a hole over `n` pages, as `version`: `Block` on the range.
    /// Same writer rule as [`write`](Self::write).
    pub fn punch_hole(&self, file: usize, first: u64, n: u64, version: u64) -> Result<(), OpError> {
        let m = self.mapping(file);
        let _held = self.lock(m, first, n, Class::Block);
        // The punch begins before it touches the pages: from here on, a
        // direct read of them in the same `Block` phase may find the hole,
        // and rightly so. Dirty pages are written back before they are
        // dropped: dropped unwritten, a direct read of this `Block` phase
        // would find the disk's older version before the hole (seen as a
        // stale read in the async run, where the window is wider).
        for p in first..first + n {
            m.punch_begun(p, version);
        }
        m.write_back(first, n, true)?;
        m.disk_punch(first, n)?;
        if self.locking.is_lockless() {
            m.evict(first, n);
        }
        for p in first..first + n {
            m.publish(p, version, true);
        }
        self.stats.punches.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Faults in one page of a mapped source buffer (a hit takes no lock, a
    /// miss takes `Add` on it) and copies it out.
    fn fault_page(&self, src: &Mapping, page: u64) -> std::io::Result<Box<Block>> {
        let noted = src.noted(page);
        let data = self.get_page(src, page)?;
        src.check(&self.stats, page, &data, noted, false);
        Ok(data)
    }

    /// The fault's own work on a page of `src` whose lock the caller took
    /// through the fault protocol: read it in if missing, copy it out.
    fn fault_page_locked(&self, src: &Mapping, page: u64, to: &mut Block) -> std::io::Result<()> {
        let noted = src.noted(page);
        let data = src.read_in(page)?;
        src.check(&self.stats, page, &data, noted, false);
        to.0.copy_from_slice(&data.0);
        Ok(())
    }

    /// Pins the source pages `sfirst..` into `bounce` under the two-state
    /// hold `held`, with the total protocol: a page still in the cache (it
    /// was faulted in before locking) is copied as it is; one evicted since
    /// goes through `fault_in`, each in its own scope so that cycles are
    /// counted. Returns the cycles (at most one per page).
    fn pin_total(
        &self,
        faults: &dyn Faults,
        held: &dyn Hold,
        src: &Mapping,
        sfirst: u64,
        bounce: &mut [Block],
    ) -> std::io::Result<u64> {
        let mut cycles = 0;
        for (i, to) in bounce.iter_mut().enumerate() {
            let q = sfirst + i as u64;
            if let Some(page) = src.cached(q) {
                to.0.copy_from_slice(&page.0);
                continue;
            }
            let mut copied = Ok(());
            let dropped = held.faults_disabled(&mut || {
                faults.fault_in(src.index, q, &mut || {
                    copied = self.fault_page_locked(src, q, to);
                })
            });
            cycles += u64::from(dropped);
            copied?;
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
        faults: &dyn Faults,
        held: &dyn Hold,
        src: &Mapping,
        sfirst: u64,
        bounce: &mut [Block],
    ) -> Result<u64, OpError> {
        let mut pinned = 0;
        let mut cycles = 0;
        let mut copied = Ok(());
        let mut step = || {
            while pinned < bounce.len() && copied.is_ok() {
                let q = sfirst + pinned as u64;
                let fault = faults.lock_fault(src.index, q)?;
                copied = self.fault_page_locked(src, q, &mut bounce[pinned]);
                drop(fault);
                pinned += 1;
            }
            Ok(())
        };
        match held.retry_faults(&mut || cycles += 1, &mut step) {
            Err(FaultError::SameMapping) => Err(OpError::BadAddress),
            Err(FaultError::OrderingViolation) => unreachable!("retry_faults retries these"),
            Ok(()) => {
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
                Some(faults),
                Source::Mapped {
                    file: sf,
                    first: sfirst,
                },
            ) = (self.locking.faults(), source)
            {
                let src = self.mapping(sf);
                let held = &*held;
                let cycles = match self.cfg.faults {
                    FaultProtocol::Total => {
                        self.pin_total(faults, held, src, sfirst, &mut bounce)?
                    }
                    FaultProtocol::Seed => self.pin_seed(faults, held, src, sfirst, &mut bounce)?,
                };
                self.stats.cycles.fetch_add(cycles, Ordering::Relaxed);
                self.stats
                    .max_cycles_per_write
                    .fetch_max(cycles, Ordering::Relaxed);
            }
            m.write_back(first, n, true)?;
            for (i, b) in bounce.iter_mut().enumerate() {
                b.set_stamp(file, first + i as u64, version);
                let fill = (version % 251) as u8;
                b.0[24..].fill(fill);
            }
            m.disk_write(first, &bounce)?;
            if self.locking.is_lockless() {
                m.write_back(first, n, true)?;
            }
            for p in first..first + n {
                m.publish(p, version, false);
            }
            Ok(())
        })();
        m.dio_in_flight.fetch_sub(1, Ordering::SeqCst);
        drop(held);
        self.stats.direct_write_done(n, since.elapsed(), &result);
        result
    }
}

/// The engine's operations as blocking calls, whichever engine runs them:
/// what the tests and the fuzz target drive both engines through.
pub trait PageCache: Send + Sync {
    /// [`Engine::read`].
    fn read(&self, file: usize, page: u64) -> Result<Option<u64>, OpError>;
    /// [`Engine::write`].
    fn write(&self, file: usize, page: u64, version: u64) -> Result<(), OpError>;
    /// [`Engine::direct_read`].
    fn direct_read(&self, file: usize, first: u64, n: u64) -> Result<Vec<Option<u64>>, OpError>;
    /// [`Engine::direct_write`].
    fn direct_write(
        &self,
        file: usize,
        first: u64,
        n: u64,
        source: Source,
        version: u64,
    ) -> Result<(), OpError>;
    /// [`Engine::punch_hole`].
    fn punch_hole(&self, file: usize, first: u64, n: u64, version: u64) -> Result<(), OpError>;
    /// What happened.
    fn stats(&self) -> &Stats;
}

impl PageCache for Engine {
    fn read(&self, file: usize, page: u64) -> Result<Option<u64>, OpError> {
        Engine::read(self, file, page)
    }
    fn write(&self, file: usize, page: u64, version: u64) -> Result<(), OpError> {
        Engine::write(self, file, page, version)
    }
    fn direct_read(&self, file: usize, first: u64, n: u64) -> Result<Vec<Option<u64>>, OpError> {
        Engine::direct_read(self, file, first, n)
    }
    fn direct_write(
        &self,
        file: usize,
        first: u64,
        n: u64,
        source: Source,
        version: u64,
    ) -> Result<(), OpError> {
        Engine::direct_write(self, file, first, n, source, version)
    }
    fn punch_hole(&self, file: usize, first: u64, n: u64, version: u64) -> Result<(), OpError> {
        Engine::punch_hole(self, file, first, n, version)
    }
    fn stats(&self) -> &Stats {
        &self.stats
    }
}
