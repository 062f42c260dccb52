//! The demonstration workload: direct writers, buffered readers and writers,
//! direct reads and hole punches on a few files, run under one variant, with
//! a watchdog and a report; on threads ([`run`], the [`Engine`]) or as
//! tasks on a tokio runtime with 2 workers ([`run_tasks`], the
//! [`AsyncEngine`]). Both draw the same operations.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::{AsyncEngine, Config, Engine, OpError, Source, Variant};

/// Pages in a stripe; each stripe has one writer thread.
const STRIPE: u64 = 8;

/// Workload settings.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Engine settings (files, pages, race window, device delay).
    pub engine: Config,
    /// Threads doing direct writes (and the buffered writes, direct reads
    /// and hole punches of their own pages).
    pub writers: usize,
    /// Threads doing buffered reads.
    pub readers: usize,
    /// Tasks doing what `writers` do, in [`run_tasks`].
    pub writer_tasks: usize,
    /// Tasks doing buffered reads, in [`run_tasks`].
    pub reader_tasks: usize,
    /// How long each variant runs.
    pub duration: Duration,
    /// Percent of direct writes whose source is mapped from another file.
    pub cross_source_pct: u8,
    /// Percent of direct writes whose source is mapped from the same file.
    pub same_source_pct: u8,
    /// Writer threads do direct writes only (no buffered writes, direct
    /// reads or hole punches).
    pub direct_only: bool,
    /// Print a progress line every second.
    pub progress: bool,
}

/// What one run measured.
#[derive(Clone, Debug)]
pub struct Report {
    /// The variant.
    pub variant: Variant,
    /// Run as tasks on the async engine (else threads on the threaded one).
    pub tasks: bool,
    /// Whether the files were really open with `O_DIRECT`.
    pub direct_io: bool,
    /// Wall time of the run.
    pub wall: Duration,
    /// Direct-write throughput, MiB/s.
    pub direct_write_mib_s: f64,
    /// Buffered reads and writes per second.
    pub buffered_ops_s: f64,
    /// Direct writes completed.
    pub direct_writes: u64,
    /// Direct writes in flight per file, on average over the run.
    pub mean_dio_in_flight: f64,
    /// The most direct writes in flight on one file at once.
    pub max_dio_in_flight: usize,
    /// Stale (or malformed) pages read.
    pub stale_reads: u64,
    /// Pages a direct read saw torn by a write of that page in flight.
    pub torn_direct_reads: u64,
    /// Direct writes refused with a bad address (source mapped from the same
    /// file; only with the seed's fault protocol).
    pub bad_address: u64,
    /// Fault cycles (ordering violations, each followed by a retry).
    pub cycles: u64,
    /// The most cycles one direct write needed.
    pub max_cycles_per_write: u64,
    /// Mean and longest wait for a lock to add pages (`None`: no lock).
    pub add_wait: Option<(Duration, Duration)>,
    /// Mean and longest wait for a lock to keep pages out.
    pub block_wait: Option<(Duration, Duration)>,
    /// Threads (or tasks) still stuck when the watchdog fired.
    pub deadlocked_threads: usize,
    /// The first I/O error, if any.
    pub io_error: Option<String>,
}

/// Set (by a signal handler, say) to end a run early: every thread stops
/// after its current operation.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// When a run ends: its deadline, an interruption, or a thread's I/O error
/// (the others stop too, so the table never shows a half-run variant).
struct End {
    deadline: Instant,
    failed: AtomicBool,
}

impl End {
    /// Whether the run should go on.
    fn running(&self) -> bool {
        Instant::now() < self.deadline && !INTERRUPTED.load(Relaxed) && !self.failed.load(Relaxed)
    }
}

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory under `parent`.
    pub fn new(parent: &Path) -> std::io::Result<TempDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = parent.join(format!("pagecache-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Counts finished threads, so the watchdog can wait with a deadline.
#[derive(Default)]
struct Finished {
    count: Mutex<usize>,
    changed: Condvar,
}

impl Finished {
    fn one(&self) {
        *self.count.lock().unwrap() += 1;
        self.changed.notify_all();
    }
}

/// The pages `writer` owns: stripes `writer, writer + writers, ...`.
fn owned_range(
    rng: &mut fastrand::Rng,
    writer: usize,
    writers: usize,
    pages: u64,
    max_len: u64,
) -> (u64, u64) {
    let stripes = (pages / STRIPE) as usize;
    let mine = (stripes - writer).div_ceil(writers);
    let stripe = (writer + writers * rng.usize(..mine)) as u64;
    let n = rng.u64(1..=max_len.min(STRIPE));
    let first = stripe * STRIPE + rng.u64(..=STRIPE - n);
    (first, n)
}

/// One operation of a writer.
enum Op {
    DirectWrite {
        file: usize,
        first: u64,
        n: u64,
        source: Source,
    },
    Write {
        file: usize,
        page: u64,
    },
    DirectRead {
        file: usize,
        first: u64,
        n: u64,
    },
    Punch {
        file: usize,
        first: u64,
        n: u64,
    },
}

/// A writer's operations: direct writes (70%, some from mapped sources),
/// buffered writes, direct reads and hole punches of its own pages.
struct Writer {
    rng: fastrand::Rng,
    id: usize,
    writers: usize,
    version: u64,
}

impl Writer {
    fn new(id: usize, writers: usize) -> Self {
        Writer {
            rng: fastrand::Rng::with_seed(0x5eed + id as u64),
            id,
            writers,
            version: 1,
        }
    }

    /// The next operation, and the version it writes.
    fn next(&mut self, w: &Workload) -> (Op, u64) {
        let rng = &mut self.rng;
        let files = w.engine.files;
        let pages = w.engine.pages;
        self.version += 1;
        let file = rng.usize(..files);
        let (first, n) = owned_range(rng, self.id, self.writers, pages, 4);
        let roll = if w.direct_only { 0 } else { rng.u8(..100) };
        let op = match roll {
            0..70 => {
                let roll = rng.u8(..100);
                let source = if roll < w.same_source_pct {
                    Source::Mapped {
                        file,
                        first: rng.u64(..=pages - n),
                    }
                } else if roll < w.same_source_pct + w.cross_source_pct && files > 1 {
                    let other = (file + 1 + rng.usize(..files - 1)) % files;
                    Source::Mapped {
                        file: other,
                        first: rng.u64(..=pages - n),
                    }
                } else {
                    Source::Memory
                };
                Op::DirectWrite {
                    file,
                    first,
                    n,
                    source,
                }
            }
            70..85 => Op::Write { file, page: first },
            85..95 => Op::DirectRead {
                file,
                first: rng.u64(..=pages - n),
                n,
            },
            _ => Op::Punch { file, first, n },
        };
        (op, self.version)
    }
}

fn writer_loop(engine: &Engine, w: &Workload, id: usize, end: &End) -> Result<(), OpError> {
    let mut writer = Writer::new(id, w.writers);
    while end.running() {
        match writer.next(w) {
            (
                Op::DirectWrite {
                    file,
                    first,
                    n,
                    source,
                },
                v,
            ) => match engine.direct_write(file, first, n, source, v) {
                Ok(()) | Err(OpError::BadAddress) => {}
                Err(e) => return Err(e),
            },
            (Op::Write { file, page }, v) => engine.write(file, page, v)?,
            (Op::DirectRead { file, first, n }, _) => drop(engine.direct_read(file, first, n)?),
            (Op::Punch { file, first, n }, v) => engine.punch_hole(file, first, n, v)?,
        }
    }
    Ok(())
}

fn reader_loop(engine: &Engine, w: &Workload, id: usize, end: &End) -> Result<(), OpError> {
    let mut rng = fastrand::Rng::with_seed(0xbead + id as u64);
    while end.running() {
        engine.read(rng.usize(..w.engine.files), rng.u64(..w.engine.pages))?;
    }
    Ok(())
}

async fn writer_task(
    engine: &AsyncEngine,
    w: &Workload,
    id: usize,
    end: &End,
) -> Result<(), OpError> {
    let mut writer = Writer::new(id, w.writer_tasks);
    while end.running() {
        match writer.next(w) {
            (
                Op::DirectWrite {
                    file,
                    first,
                    n,
                    source,
                },
                v,
            ) => match engine.direct_write(file, first, n, source, v).await {
                Ok(()) | Err(OpError::BadAddress) => {}
                Err(e) => return Err(e),
            },
            (Op::Write { file, page }, v) => engine.write(file, page, v).await?,
            (Op::DirectRead { file, first, n }, _) => {
                drop(engine.direct_read(file, first, n).await?)
            }
            (Op::Punch { file, first, n }, v) => engine.punch_hole(file, first, n, v).await?,
        }
    }
    Ok(())
}

async fn reader_task(
    engine: &AsyncEngine,
    w: &Workload,
    id: usize,
    end: &End,
) -> Result<(), OpError> {
    let mut rng = fastrand::Rng::with_seed(0xbead + id as u64);
    let mut reads = 0u32;
    while end.running() {
        engine
            .read(rng.usize(..w.engine.files), rng.u64(..w.engine.pages))
            .await?;
        // A cache hit never awaits: let the other tasks of this worker run.
        reads += 1;
        if reads % 16 == 0 {
            tokio::task::yield_now().await;
        }
    }
    Ok(())
}

/// Runs the workload under `variant` in `dir` and reports. A run whose
/// threads have not all finished 10 s after the deadline is reported as
/// deadlocked; its stuck threads are left behind.
pub fn run(dir: &Path, variant: Variant, w: &Workload) -> std::io::Result<Report> {
    assert!(
        w.engine.pages >= STRIPE * w.writers as u64,
        "need at least {STRIPE} pages per writer"
    );
    let engine = Arc::new(Engine::create(dir, variant, w.engine.clone())?);
    let run = Run::begin(w);
    let threads = w.writers + w.readers;
    for id in 0..threads {
        let (engine, finished, error, w, end) = run.for_one(&engine, w);
        thread::spawn(move || {
            let r = if id < w.writers {
                writer_loop(&engine, &w, id, &end)
            } else {
                reader_loop(&engine, &w, id - w.writers, &end)
            };
            if let Err(e) = r {
                error.lock().unwrap().get_or_insert(e.to_string());
                end.failed.store(true, Relaxed);
            }
            finished.one();
        });
    }
    let stuck = run.watch(threads, variant.name(), &engine.stats, w);
    let report = run.report(variant, false, engine.direct_io(), &engine.stats, w, stuck);
    if stuck > 0 {
        // The stuck threads still use the engine: never drop it.
        std::mem::forget(engine);
    }
    Ok(report)
}

/// What the threads or tasks of one run share, and the run's clock.
struct Run {
    finished: Arc<Finished>,
    error: Arc<Mutex<Option<String>>>,
    end: Arc<End>,
    start: Instant,
}

/// What one thread or task of a run gets.
type Share<E> = (
    Arc<E>,
    Arc<Finished>,
    Arc<Mutex<Option<String>>>,
    Workload,
    Arc<End>,
);

impl Run {
    fn begin(w: &Workload) -> Run {
        let start = Instant::now();
        Run {
            finished: Arc::default(),
            error: Arc::default(),
            end: Arc::new(End {
                deadline: start + w.duration,
                failed: AtomicBool::new(false),
            }),
            start,
        }
    }

    /// The share of one thread or task.
    fn for_one<E>(&self, engine: &Arc<E>, w: &Workload) -> Share<E> {
        (
            engine.clone(),
            self.finished.clone(),
            self.error.clone(),
            w.clone(),
            self.end.clone(),
        )
    }

    /// Waits for `threads` to finish, until 10 s after the deadline (sooner
    /// once interrupted), printing progress; returns how many did not.
    fn watch(&self, threads: usize, variant: &str, stats: &crate::Stats, w: &Workload) -> usize {
        let (finished, start) = (&self.finished, self.start);
        let mut give_up = self.end.deadline + Duration::from_secs(10);
        let mut done = finished.count.lock().unwrap();
        let mut last_print = start;
        while *done < threads && Instant::now() < give_up {
            if INTERRUPTED.load(Relaxed) {
                give_up = give_up.min(Instant::now() + Duration::from_secs(10));
            }
            done = finished
                .changed
                .wait_timeout(done, Duration::from_millis(100))
                .unwrap()
                .0;
            if w.progress && last_print.elapsed() >= Duration::from_secs(1) {
                last_print = Instant::now();
                eprintln!(
                    "  {:<22} {:>5.1} s  direct writes {:>7}  buffered reads {:>8}  stale {:>5}  cycles {:>5}",
                    variant,
                    start.elapsed().as_secs_f64(),
                    stats.direct_writes.load(Relaxed),
                    stats.buffered_reads.load(Relaxed),
                    stats.stale_reads.load(Relaxed),
                    stats.cycles.load(Relaxed),
                );
            }
        }
        threads - *done
    }

    /// The run's report.
    fn report(
        &self,
        variant: Variant,
        tasks: bool,
        direct_io: bool,
        s: &crate::Stats,
        w: &Workload,
        stuck: usize,
    ) -> Report {
        let (wall, error) = (self.start.elapsed(), &self.error);
        let secs = wall
            .min(w.duration.max(Duration::from_millis(1)))
            .as_secs_f64();
        let waits = |waits: &crate::Waits| {
            (variant != Variant::InvalidateTwice).then(|| (waits.mean(), waits.max()))
        };
        Report {
            variant,
            tasks,
            direct_io,
            wall,
            direct_write_mib_s: s.direct_bytes.load(Relaxed) as f64 / (1 << 20) as f64 / secs,
            buffered_ops_s: (s.buffered_reads.load(Relaxed) + s.buffered_writes.load(Relaxed))
                as f64
                / secs,
            direct_writes: s.direct_writes.load(Relaxed),
            mean_dio_in_flight: s.dio_busy_ns.load(Relaxed) as f64
                / 1e9
                / secs
                / w.engine.files as f64,
            max_dio_in_flight: s.max_dio_in_flight.load(Relaxed),
            stale_reads: s.stale_reads.load(Relaxed),
            torn_direct_reads: s.torn_direct_reads.load(Relaxed),
            bad_address: s.bad_address.load(Relaxed),
            cycles: s.cycles.load(Relaxed),
            max_cycles_per_write: s.max_cycles_per_write.load(Relaxed),
            add_wait: waits(&s.add_waits),
            block_wait: waits(&s.block_waits),
            deadlocked_threads: stuck,
            io_error: error.lock().unwrap().clone(),
        }
    }
}

/// Runs the workload under `variant` in `dir` as tasks on a tokio runtime
/// with 2 worker threads ([`Workload::writer_tasks`] and
/// [`Workload::reader_tasks`] of them, on the [`AsyncEngine`]), and
/// reports. Tasks not finished 10 s after the deadline are reported as
/// deadlocked and left behind with their runtime.
pub fn run_tasks(dir: &Path, variant: Variant, w: &Workload) -> std::io::Result<Report> {
    assert!(
        w.engine.pages >= STRIPE * w.writer_tasks as u64,
        "need at least {STRIPE} pages per writer task"
    );
    if w.engine.faults != crate::FaultProtocol::Total {
        return Err(std::io::Error::other(
            "the async engine has only the total fault protocol",
        ));
    }
    let engine = Arc::new(AsyncEngine::create(dir, variant, w.engine.clone())?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()?;
    let run = Run::begin(w);
    let tasks = w.writer_tasks + w.reader_tasks;
    for id in 0..tasks {
        let (engine, finished, error, w, end) = run.for_one(&engine, w);
        rt.spawn(async move {
            let r = if id < w.writer_tasks {
                writer_task(&engine, &w, id, &end).await
            } else {
                reader_task(&engine, &w, id - w.writer_tasks, &end).await
            };
            if let Err(e) = r {
                error.lock().unwrap().get_or_insert(e.to_string());
                end.failed.store(true, Relaxed);
            }
            finished.one();
        });
    }
    let name = format!("{} (tasks)", variant.async_name());
    let stuck = run.watch(tasks, &name, &engine.stats, w);
    let report = run.report(variant, true, engine.direct_io(), &engine.stats, w, stuck);
    if stuck > 0 {
        // The stuck tasks still use the engine and the runtime.
        std::mem::forget(rt);
        std::mem::forget(engine);
    }
    Ok(report)
}

/// A wait as the table shows it.
fn fmt_wait(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.0} us")
    }
}

/// The report as a markdown table.
pub fn table(reports: &[Report]) -> String {
    let mut out = String::from(
        "| variant | direct-write MiB/s | buffered ops/s | direct writes in flight per file: mean (max) | stale reads | torn direct reads | bad-address errors | fault cycles (max per write) | Add wait: mean (max) | Block wait: mean (max) | deadlocks | O_DIRECT | wall s |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |\n",
    );
    let wait = |w: Option<(Duration, Duration)>| match w {
        Some((mean, max)) => format!("{} ({})", fmt_wait(mean), fmt_wait(max)),
        None => "no lock".to_string(),
    };
    for r in reports {
        out += &format!(
            "| {} | {:.1} | {:.0} | {:.2} ({}) | {} | {} | {} | {} ({}) | {} | {} | {} | {} | {:.1} |\n",
            if r.tasks {
                r.variant.async_name()
            } else {
                r.variant.name()
            },
            r.direct_write_mib_s,
            r.buffered_ops_s,
            r.mean_dio_in_flight,
            r.max_dio_in_flight,
            r.stale_reads,
            r.torn_direct_reads,
            r.bad_address,
            r.cycles,
            r.max_cycles_per_write,
            wait(r.add_wait),
            wait(r.block_wait),
            r.deadlocked_threads,
            if r.direct_io { "yes" } else { "**no**" },
            r.wall.as_secs_f64(),
        );
    }
    out
}
