//! The engine for tasks: the same cache, page stamps, stale-read detector
//! and file I/O as [`Engine`](crate::Engine), with every operation an
//! `async fn` for a tokio runtime. The file I/O (and the added device
//! latency, slept there, so it keeps its microsecond resolution where
//! tokio's timer has 1 ms) runs on tokio's blocking pool, as `tokio::fs`
//! does, so it never blocks a worker thread; the variant's lock is held
//! across the I/O's await. The two-state variants pin mapped sources
//! under `Block` with `faults_disabled_async` and `fault_in_async`, so
//! same-file sources complete, as in the threaded engine. (Only the total
//! fault protocol: the seed's has no async form.)

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use two_state_lock::Class;

use crate::mapping::Mapping;
use crate::page::{Block, PAGE};
use crate::stats::Stats;
use crate::variant::{AsyncFaults, AsyncHold, AsyncLocking, Variant};
use crate::{Config, OpError, PageCache, Source};

/// Runs `f`, blocking file I/O, on tokio's blocking pool; a panic there
/// goes on in the caller.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// The page-cache engine for tasks on a tokio runtime (which must have the
/// blocking pool: any multi-thread or current-thread runtime does).
pub struct AsyncEngine {
    variant: Variant,
    locking: Box<dyn AsyncLocking>,
    cfg: Config,
    files: Vec<Arc<Mapping>>,
    direct_io: bool,
    /// What happened, for the report.
    pub stats: Stats,
}

impl AsyncEngine {
    /// As [`Engine::create`](crate::Engine::create). (Called outside the
    /// runtime or inside it: it does blocking I/O once, to create the
    /// files.)
    pub fn create(dir: &Path, variant: Variant, cfg: Config) -> io::Result<AsyncEngine> {
        let (files, direct_io) = crate::mapping::create_all(dir, variant.async_name(), &cfg)?;
        Ok(AsyncEngine {
            variant,
            locking: variant.async_locking(cfg.files),
            cfg,
            files: files.into_iter().map(Arc::new).collect(),
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

    fn mapping(&self, file: usize) -> &Arc<Mapping> {
        &self.files[file]
    }

    /// Takes the variant's lock of `class` over pages `first..first + n` of
    /// `m`, and records how long that took.
    async fn lock(&self, m: &Mapping, first: u64, n: u64, class: Class) -> Box<dyn AsyncHold + '_> {
        let start = Instant::now();
        let held = self.locking.lock(m.index, first, n, class).await;
        if !self.locking.is_lockless() {
            self.stats.waited(class, start.elapsed());
        }
        held
    }

    /// A miss: reads the page in on the blocking pool (the caller covers the
    /// add).
    async fn read_in(&self, m: &Arc<Mapping>, page: u64) -> io::Result<Box<Block>> {
        if let Some(hit) = m.cached(page) {
            return Ok(hit);
        }
        let m = m.clone();
        blocking(move || m.read_in(page)).await
    }

    /// The page from the cache, or read in under `Add`.
    async fn get_page(&self, m: &Arc<Mapping>, page: u64) -> io::Result<Box<Block>> {
        if let Some(hit) = m.cached(page) {
            return Ok(hit);
        }
        let _held = self.lock(m, page, 1, Class::Add).await;
        self.read_in(m, page).await
    }

    /// As [`Engine::read`](crate::Engine::read).
    pub async fn read(&self, file: usize, page: u64) -> Result<Option<u64>, OpError> {
        let m = self.mapping(file);
        let noted = m.noted(page);
        let data = self.get_page(m, page).await?;
        self.stats.buffered_reads.fetch_add(1, Ordering::Relaxed);
        Ok(m.check(&self.stats, page, &data, noted, false))
    }

    /// As [`Engine::write`](crate::Engine::write).
    pub async fn write(&self, file: usize, page: u64, version: u64) -> Result<(), OpError> {
        let m = self.mapping(file);
        let _held = self.lock(m, page, 1, Class::Add).await;
        m.write_cached(page, Block::stamped(file, page, version));
        m.publish(page, version, false);
        self.stats.buffered_writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// As [`Engine::direct_read`](crate::Engine::direct_read), `Block` held
    /// across the write-back's and the read's awaits.
    pub async fn direct_read(
        &self,
        file: usize,
        first: u64,
        n: u64,
    ) -> Result<Vec<Option<u64>>, OpError> {
        let m = self.mapping(file);
        let noted: Vec<u64> = (first..first + n).map(|p| m.noted(p)).collect();
        let _held = self.lock(m, first, n, Class::Block).await;
        let io = m.clone();
        let (blocks, overlapped) = blocking(move || {
            io.write_back(first, n, false)?;
            let mut blocks = vec![Block([0; PAGE]); n as usize];
            let overlapped = io.disk_read_direct(first, &mut blocks)?;
            let overlapped: Vec<bool> = (0..n as usize).map(overlapped).collect();
            Ok::<_, io::Error>((blocks, overlapped))
        })
        .await?;
        self.stats.direct_reads.fetch_add(1, Ordering::Relaxed);
        Ok((0..blocks.len())
            .map(|i| {
                m.check(
                    &self.stats,
                    first + i as u64,
                    &blocks[i],
                    noted[i],
                    overlapped[i],
                )
            })
            .collect())
    }

    /// As [`Engine::punch_hole`](crate::Engine::punch_hole).
    pub async fn punch_hole(
        &self,
        file: usize,
        first: u64,
        n: u64,
        version: u64,
    ) -> Result<(), OpError> {
        let m = self.mapping(file);
        let _held = self.lock(m, first, n, Class::Block).await;
        for p in first..first + n {
            m.punch_begun(p, version);
        }
        let (io, again) = (m.clone(), self.locking.is_lockless());
        blocking(move || {
            // As the threaded engine: written back, then dropped, then punched.
            io.write_back(first, n, true)?;
            io.disk_punch(first, n)?;
            if again {
                io.evict(first, n);
            }
            Ok::<_, io::Error>(())
        })
        .await?;
        for p in first..first + n {
            m.publish(p, version, true);
        }
        self.stats.punches.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Faults in one page of a mapped source buffer and copies it out.
    async fn fault_page(&self, src: &Arc<Mapping>, page: u64) -> io::Result<Box<Block>> {
        let noted = src.noted(page);
        let data = self.get_page(src, page).await?;
        src.check(&self.stats, page, &data, noted, false);
        Ok(data)
    }

    /// Pins the source pages `sfirst..` into `bounce` under `held` with
    /// `fault_in_async`, each evicted page in its own scope so that cycles
    /// are counted. Returns the cycles (at most one per page).
    async fn pin(
        &self,
        faults: &dyn AsyncFaults,
        held: &dyn AsyncHold,
        src: &Arc<Mapping>,
        sfirst: u64,
        bounce: &mut [Block],
    ) -> io::Result<u64> {
        let mut cycles = 0;
        for (i, to) in bounce.iter_mut().enumerate() {
            let q = sfirst + i as u64;
            if let Some(page) = src.cached(q) {
                to.0.copy_from_slice(&page.0);
                continue;
            }
            let mut copied = Ok(());
            let work = Box::pin(async {
                // The fault's own work, holding Add on the page's lock.
                let noted = src.noted(q);
                copied = self.read_in(src, q).await.map(|data| {
                    src.check(&self.stats, q, &data, noted, false);
                    to.0.copy_from_slice(&data.0);
                });
            });
            let dropped = held
                .faults_disabled(faults.fault_in(src.index, q, work))
                .await;
            cycles += u64::from(dropped);
            copied?;
        }
        Ok(cycles)
    }

    /// As [`Engine::direct_write`](crate::Engine::direct_write), with the
    /// total fault protocol; `Block` is held across the I/O's awaits.
    pub async fn direct_write(
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
                to.0.copy_from_slice(&self.fault_page(src, sfirst + i as u64).await?.0);
            }
        }
        let held = self.lock(m, first, n, Class::Block).await;
        let since = Instant::now();
        let in_flight = m.dio_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.stats
            .max_dio_in_flight
            .fetch_max(in_flight, Ordering::Relaxed);
        let result = async {
            if let (
                Some(faults),
                Source::Mapped {
                    file: sf,
                    first: sfirst,
                },
            ) = (self.locking.faults(), source)
            {
                let cycles = self
                    .pin(faults, &*held, self.mapping(sf), sfirst, &mut bounce)
                    .await?;
                self.stats.cycles.fetch_add(cycles, Ordering::Relaxed);
                self.stats
                    .max_cycles_per_write
                    .fetch_max(cycles, Ordering::Relaxed);
            }
            for (i, b) in bounce.iter_mut().enumerate() {
                b.set_stamp(file, first + i as u64, version);
                b.0[24..].fill((version % 251) as u8);
            }
            let (io, again) = (m.clone(), self.locking.is_lockless());
            blocking(move || {
                io.write_back(first, n, true)?;
                io.disk_write(first, &bounce)?;
                if again {
                    io.write_back(first, n, true)?;
                }
                Ok::<_, io::Error>(())
            })
            .await?;
            for p in first..first + n {
                m.publish(p, version, false);
            }
            Ok::<_, OpError>(())
        }
        .await;
        m.dio_in_flight.fetch_sub(1, Ordering::SeqCst);
        drop(held);
        self.stats.direct_write_done(n, since.elapsed(), &result);
        result
    }
}

/// An [`AsyncEngine`] with a tokio runtime of its own (2 worker threads),
/// whose operations are blocking calls: each is a future driven on the
/// calling thread by the runtime's `block_on`, its file I/O on the
/// runtime's blocking pool, its lock waits parked until another thread's
/// release wakes them. For tests and the fuzz target; the demonstration
/// runs the engine as tasks ([`run_tasks`](crate::workload::run_tasks)).
pub struct BlockOn {
    engine: AsyncEngine,
    rt: tokio::runtime::Runtime,
}

impl BlockOn {
    /// As [`AsyncEngine::create`], with a runtime.
    pub fn create(dir: &Path, variant: Variant, cfg: Config) -> io::Result<BlockOn> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()?;
        Ok(BlockOn {
            engine: AsyncEngine::create(dir, variant, cfg)?,
            rt,
        })
    }
}

impl PageCache for BlockOn {
    fn read(&self, file: usize, page: u64) -> Result<Option<u64>, OpError> {
        self.rt.block_on(self.engine.read(file, page))
    }
    fn write(&self, file: usize, page: u64, version: u64) -> Result<(), OpError> {
        self.rt.block_on(self.engine.write(file, page, version))
    }
    fn direct_read(&self, file: usize, first: u64, n: u64) -> Result<Vec<Option<u64>>, OpError> {
        self.rt.block_on(self.engine.direct_read(file, first, n))
    }
    fn direct_write(
        &self,
        file: usize,
        first: u64,
        n: u64,
        source: Source,
        version: u64,
    ) -> Result<(), OpError> {
        self.rt
            .block_on(self.engine.direct_write(file, first, n, source, version))
    }
    fn punch_hole(&self, file: usize, first: u64, n: u64, version: u64) -> Result<(), OpError> {
        self.rt
            .block_on(self.engine.punch_hole(file, first, n, version))
    }
    fn stats(&self) -> &Stats {
        &self.engine.stats
    }
}
