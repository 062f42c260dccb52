//! The scenario runner: `cargo bench --bench scenarios` prints markdown tables
//! (and writes `docs/fairness.svg`); `-- --smoke` runs each scenario briefly;
//! naming sections (`-- mixed ranges`) runs only those.
//!
//! Scenarios: direct-I/O concurrency, fairness in both directions, mixed
//! throughput at several Add:Block ratios, lock sizes, and range locking
//! with a `LockTable` against a lock per object, for
//! `TwoStateLock`, `std::sync::RwLock`, `parking_lot::RwLock` and the
//! reference algorithm; and the same with tasks on tokio (`tasks`), against
//! tokio's and async-lock's `RwLock`. A reader/writer lock's read side stands for `Add`,
//! its write side for `Block`.

mod common;
#[path = "scenarios/tasks.rs"]
mod tasks;

use common::reference::Reference;
use common::tasks::{AsyncLockRwLock, AsyncSubject, TokioRwLock};
use common::{ParkingLotRwLock, StdRwLock, Subject, short_work};
use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};
use two_state_lock::{Class, TwoStateLock};

struct Settings {
    /// Run length of one measurement.
    run: Duration,
    /// Run length of one fairness measurement: longer, because its p99 is
    /// the tail of a wait that is sampled only every `PERIOD`.
    fairness_run: Duration,
    /// Write the fairness chart here.
    svg: Option<String>,
}

/// Runs `f` once per lock under comparison, collecting a row each.
macro_rules! for_each_lock {
    ($f:ident, $($arg:expr),*) => {
        vec![
            $f::<TwoStateLock>($($arg),*),
            $f::<StdRwLock>($($arg),*),
            $f::<ParkingLotRwLock>($($arg),*),
            $f::<Reference>($($arg),*),
        ]
    };
}

/// Runs `threads` threads doing `op` back to back for `run`; returns the
/// operations completed per second.
fn throughput<S: Subject>(
    threads: usize,
    run: Duration,
    op: impl Fn(&S, &mut fastrand::Rng) + Send + Sync + 'static,
) -> f64 {
    let op = Arc::new(op);
    let (ops, span) = run_threads::<S>(threads, move |lock, _, rng| {
        let deadline = Instant::now() + run;
        let mut n = 0;
        // The clock is read every 64 ops: reading it costs about as much as
        // an uncontended lock and unlock.
        while n % 64 != 0 || Instant::now() < deadline {
            op(lock, rng);
            n += 1;
        }
        n
    });
    ops as f64 / span.as_secs_f64()
}

/// Runs `body` (given the lock, the thread's index and a random number
/// generator) on `threads` threads over one lock, started together, and
/// returns the operations they report and the time from the first start to
/// the last finish, as the threads saw it (the main thread may be scheduled
/// late on a busy machine, so it does not hold the clock).
fn run_threads<S: Subject>(
    threads: usize,
    body: impl Fn(&S, usize, &mut fastrand::Rng) -> u64 + Send + Sync + 'static,
) -> (u64, Duration) {
    // On its own cache line, away from the other allocations.
    let lock = Arc::new(CachePadded::new(S::default()));
    let body = Arc::new(body);
    let start = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (lock, body, start) = (lock.clone(), body.clone(), start.clone());
            thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(t as u64);
                start.wait();
                let began = Instant::now();
                let ops = body(&lock, t, &mut rng);
                (ops, began, Instant::now())
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let first = results.iter().map(|r| r.1).min().unwrap();
    let last = results.iter().map(|r| r.2).max().unwrap();
    (results.iter().map(|r| r.0).sum(), last - first)
}

// ---------------------------------------------------------------- direct I/O

const IO: Duration = Duration::from_micros(200);
const IO_THREADS: [usize; 4] = [1, 2, 4, 8];

/// Ops/s for each thread count, each thread holding `Block` for a 200 us sleep.
fn direct_io<S: Subject>(s: &Settings) -> (&'static str, Vec<f64>) {
    let rates = IO_THREADS
        .iter()
        .map(|&n| throughput::<S>(n, s.run, |l, _| l.with(Class::Block, || thread::sleep(IO))))
        .collect();
    (S::NAME, rates)
}

fn print_direct_io(s: &Settings) {
    println!("## Direct-I/O concurrency\n");
    println!(
        "N threads on one lock, each holding `Block` (a reader/writer lock: write) around a {} us sleep standing for the I/O. Operations/s, and in brackets the fraction of the ideal N x (N times the same lock's 1-thread rate).\n",
        IO.as_micros()
    );
    let rows = for_each_lock!(direct_io, s);
    print!("| lock |");
    IO_THREADS.iter().for_each(|n| print!(" N={n} |"));
    println!(" N=8 vs std RwLock |");
    println!("| --- |{} ---: |", " ---: |".repeat(IO_THREADS.len()));
    let std_8 = rows[1].1[IO_THREADS.len() - 1];
    for (name, rates) in &rows {
        print!("| {name} |");
        for (i, r) in rates.iter().enumerate() {
            print!(" {:.0} ({:.2}) |", r, r / (rates[0] * IO_THREADS[i] as f64));
        }
        println!(" {:.2}x |", rates[IO_THREADS.len() - 1] / std_8);
    }
    println!();
}

// ------------------------------------------------------------------ fairness

const STREAMERS: usize = 3;
const HOLD: Duration = Duration::from_micros(100);
const PERIOD: Duration = Duration::from_millis(2);

struct Fairness {
    name: &'static str,
    /// Waits of the periodic thread, in microseconds.
    waits: Histogram<u64>,
    /// Acquisitions by the streamers.
    streamed: u64,
}

/// `STREAMERS` threads take `stream` back to back, each holding it for a
/// `HOLD` sleep (top-level, overlapping, so the lock is never free unless
/// fairness makes it so); one thread takes `stream.other()` every `PERIOD`
/// and records how long it waited.
fn fairness<S: Subject>(s: &Settings, stream: Class) -> Fairness {
    let lock = Arc::new(S::default());
    let stop = Arc::new(AtomicBool::new(false));
    let streamed = Arc::new(AtomicU64::new(0));
    let streamers: Vec<_> = (0..STREAMERS)
        .map(|i| {
            let (lock, stop, streamed) = (lock.clone(), stop.clone(), streamed.clone());
            thread::spawn(move || {
                // Staggered starts so the holds overlap.
                thread::sleep(HOLD * i as u32 / STREAMERS as u32);
                while !stop.load(Relaxed) {
                    lock.with(stream, || thread::sleep(HOLD));
                    streamed.fetch_add(1, Relaxed);
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(20));
    let mut waits = Histogram::<u64>::new(3).unwrap();
    let end = Instant::now() + s.fairness_run;
    // Ends the stream at the end of the run, even while the periodic thread
    // is starved: its wait is then recorded in full.
    let stopper = {
        let stop = stop.clone();
        thread::spawn(move || {
            thread::sleep(end.saturating_duration_since(Instant::now()));
            stop.store(true, Relaxed);
        })
    };
    while Instant::now() < end {
        let t = Instant::now();
        lock.with(stream.other(), short_work);
        waits.record(t.elapsed().as_micros() as u64).unwrap();
        thread::sleep(PERIOD);
    }
    stopper.join().unwrap();
    stop.store(true, Relaxed);
    streamers.into_iter().for_each(|h| h.join().unwrap());
    Fairness {
        name: S::NAME,
        waits,
        streamed: streamed.load(Relaxed),
    }
}

fn fmt_wait(us: u64, run: Duration) -> String {
    if us as u128 >= run.as_micros() / 2 {
        format!("**{:.2} s (starved)**", us as f64 / 1e6)
    } else if us >= 10_000 {
        format!("{:.1} ms", us as f64 / 1e3)
    } else {
        format!("{us} us")
    }
}

fn print_fairness(s: &Settings) -> Vec<(Class, Vec<Fairness>)> {
    println!("## Fairness\n");
    println!(
        "{STREAMERS} threads take the streaming class back to back, each holding it for a {} us sleep; one thread takes the other class every {} ms. Its wait, over {:.1} s per lock (a wait of half the run or more means it was starved until the stream stopped).\n",
        HOLD.as_micros(),
        PERIOD.as_millis(),
        s.fairness_run.as_secs_f64()
    );
    let mut all = Vec::new();
    for stream in [Class::Add, Class::Block] {
        let rows = for_each_lock!(fairness, s, stream);
        println!(
            "Streaming `{stream:?}` (rwlock: {}), periodic `{:?}` (rwlock: {}):\n",
            if stream == Class::Add {
                "readers"
            } else {
                "writers"
            },
            stream.other(),
            if stream == Class::Add {
                "writer"
            } else {
                "reader"
            },
        );
        println!(
            "| lock | periodic acquisitions | wait p50 | wait p99 | wait max | streamed acquisitions |"
        );
        println!("| --- | ---: | ---: | ---: | ---: | ---: |");
        for r in &rows {
            println!(
                "| {} | {} | {} | {} | {} | {} |",
                r.name,
                r.waits.len(),
                fmt_wait(r.waits.value_at_quantile(0.5), s.fairness_run),
                fmt_wait(r.waits.value_at_quantile(0.99), s.fairness_run),
                fmt_wait(r.waits.max(), s.fairness_run),
                r.streamed
            );
        }
        println!();
        all.push((stream, rows));
    }
    all
}

fn plot_fairness(
    path: &str,
    run: Duration,
    data: &[(Class, Vec<Fairness>)],
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1100, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, 2));
    let colors = [
        RGBColor(0, 114, 178),
        RGBColor(230, 159, 0),
        RGBColor(0, 158, 115),
        RGBColor(204, 121, 167),
    ];
    for ((stream, rows), panel) in data.iter().zip(panels.iter()) {
        let max = rows
            .iter()
            .map(|r| r.waits.max())
            .max()
            .unwrap_or(1)
            .max(10) as f64;
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("{:?} wait under a {stream:?} stream", stream.other()),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..100f64, (1f64..max * 2.0).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("percentile of waits")
            .y_desc("wait (us, log)")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()?;
        for (r, color) in rows.iter().zip(colors) {
            let points: Vec<(f64, f64)> = (0..=200)
                .map(|i| {
                    let q = i as f64 / 200.0;
                    (q * 100.0, r.waits.value_at_quantile(q).max(1) as f64)
                })
                .collect();
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                .label(if r.waits.max() as u128 >= run.as_micros() / 2 {
                    format!("{} (starved)", r.name)
                } else {
                    r.name.to_string()
                })
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

// ------------------------------------------------------------------- mixed

/// One contended workload: `threads` threads, each op takes `Add` with
/// probability `add_pct` % (else `Block`) around a short critical section.
#[derive(Clone, Copy)]
struct Mix {
    label: &'static str,
    threads: usize,
    add_pct: u32,
}

const MIXES: [Mix; 5] = [
    Mix {
        label: "Add only, 2 threads",
        threads: 2,
        add_pct: 100,
    },
    Mix {
        label: "Add only, 4 threads",
        threads: 4,
        add_pct: 100,
    },
    Mix {
        label: "99:1, 4 threads",
        threads: 4,
        add_pct: 99,
    },
    Mix {
        label: "90:10, 4 threads",
        threads: 4,
        add_pct: 90,
    },
    Mix {
        label: "50:50, 4 threads",
        threads: 4,
        add_pct: 50,
    },
];

#[inline]
fn mixed_op<S: Subject>(lock: &S, rng: &mut fastrand::Rng, add_pct: u32) {
    let class = if add_pct == 100 || rng.u32(..100) < add_pct {
        Class::Add
    } else {
        Class::Block
    };
    lock.with(class, short_work);
}

/// Fixed time: every thread runs for `run`. Million ops/s.
fn mixed_fixed_time<S: Subject>(mix: Mix, run: Duration) -> f64 {
    throughput::<S>(mix.threads, run, move |l, rng| {
        mixed_op(l, rng, mix.add_pct)
    }) / 1e6
}

/// Fixed work: every thread does `ops` operations; the time is until the
/// last one finishes, so a thread the lock starves holds the result back.
/// Million ops/s.
fn mixed_fixed_work<S: Subject>(mix: Mix, ops: u64) -> f64 {
    let (done, span) = run_threads::<S>(mix.threads, move |lock, _, rng| {
        for _ in 0..ops {
            mixed_op(lock, rng, mix.add_pct);
        }
        ops
    });
    done as f64 / span.as_secs_f64() / 1e6
}

/// The median; of an even count, the mean of the middle two.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 0 {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}

fn print_mixed(s: &Settings) {
    println!("## Contended throughput\n");
    // Interleaved rounds, each lock once per round, medians: on a shared
    // machine the speed of contended cache lines drifts by 2-3x over a run,
    // and running one lock after another would compare the drift. Eight
    // rounds: each of the four locks runs twice in each position. The fixed
    // work takes tens to hundreds of milliseconds, like the fixed time: at
    // 300,000 ops the fastest runs took about 10 ms, and one slow
    // scheduling slice of the host decided them (two threads, `Add` only:
    // 0.40-1.16x the best peer in six runs of the same code, against
    // 0.87-1.26x at 3,000,000 in four).
    let (rounds, slice, ops) = if s.run < Duration::from_secs(1) {
        (2, Duration::from_millis(50), 20_000)
    } else {
        (8, Duration::from_millis(150), 3_000_000)
    };
    println!(
        "Threads on one lock; each op takes `Add` (a reader/writer lock: read) or `Block` (write) at the given ratio around a short critical section. Million ops/s, higher is better, in two views: **fixed time** (every thread runs for {} ms; a lock that lets some threads hog it can score high) and **fixed work** (every thread does {ops} ops; the time is until the last finishes, so starving a thread costs). Each figure is the median of {rounds} rounds, the locks taking turns within a round and each round starting with the next lock. Last row: `two-state` against the best of std and parking_lot.\n",
        slice.as_millis()
    );
    type Measure = fn(Mix, Duration, u64) -> f64;
    fn measures<S: Subject>() -> [Measure; 2] {
        [
            |m, slice, _| mixed_fixed_time::<S>(m, slice),
            |m, _, ops| mixed_fixed_work::<S>(m, ops),
        ]
    }
    let locks: [(&str, [Measure; 2]); 4] = [
        (<TwoStateLock as Subject>::NAME, measures::<TwoStateLock>()),
        (<StdRwLock as Subject>::NAME, measures::<StdRwLock>()),
        (ParkingLotRwLock::NAME, measures::<ParkingLotRwLock>()),
        (Reference::NAME, measures::<Reference>()),
    ];
    for (view, label) in ["fixed time", "fixed work"].into_iter().enumerate() {
        // medians[lock][mix]
        let mut medians = vec![vec![0.0; MIXES.len()]; locks.len()];
        for (m, &mix) in MIXES.iter().enumerate() {
            let mut samples = vec![Vec::new(); locks.len()];
            for round in 0..rounds {
                // Each round starts with the next lock, so that every lock
                // runs in every position equally often.
                for k in 0..locks.len() {
                    let l = (round + k) % locks.len();
                    samples[l].push(locks[l].1[view](mix, slice, ops));
                }
            }
            for (l, v) in samples.into_iter().enumerate() {
                medians[l][m] = median(v);
            }
        }
        print!("| {label} |");
        MIXES.iter().for_each(|m| print!(" {} |", m.label));
        println!();
        println!("| --- |{}", " ---: |".repeat(MIXES.len()));
        for (l, (name, _)) in locks.iter().enumerate() {
            print!("| {name} |");
            medians[l].iter().for_each(|v| print!(" {v:.2} |"));
            println!();
        }
        print!("| two-state vs best of std, parking_lot |");
        for ((ours, std), pl) in medians[0].iter().zip(&medians[1]).zip(&medians[2]) {
            print!(" {:.2}x |", ours / std.max(*pl));
        }
        println!("\n");
    }
}

// ------------------------------------------------------------------- ranges

const RANGE_HOLD: Duration = Duration::from_micros(200);
const RANGE_THREADS: [usize; 3] = [1, 2, 4];
/// Locks in the table under test (16 KiB).
const TABLE_LOCKS: usize = 1024;

/// How one object (a file) is locked for a range of its stripes.
trait RangeLocking: Send + Sync + 'static {
    const NAME: &'static str;
    fn create() -> Self;
    fn with(&self, stripes: std::ops::Range<u64>, class: Class, f: impl FnOnce());
}

impl RangeLocking for two_state_lock::LockTable {
    const NAME: &'static str = "LockTable (1024 locks)";
    fn create() -> Self {
        two_state_lock::LockTable::new(TABLE_LOCKS)
    }
    fn with(&self, stripes: std::ops::Range<u64>, class: Class, f: impl FnOnce()) {
        let _g = self.lock_range(7, stripes, class);
        f()
    }
}

impl RangeLocking for TwoStateLock {
    const NAME: &'static str = "one TwoStateLock per object";
    fn create() -> Self {
        TwoStateLock::new()
    }
    fn with(&self, _: std::ops::Range<u64>, class: Class, f: impl FnOnce()) {
        Subject::with(self, class, f)
    }
}

impl RangeLocking for StdRwLock {
    const NAME: &'static str = "one std RwLock per object";
    fn create() -> Self {
        StdRwLock::default()
    }
    fn with(&self, _: std::ops::Range<u64>, class: Class, f: impl FnOnce()) {
        Subject::with(self, class, f)
    }
}

/// `n` threads take `Block` on ranges of 1-4 stripes inside their own
/// 8-stripe region of one object (direct writes), and `n` threads take
/// `Add` on 1-4 stripes from 1000 on (buffered reads adding pages); each
/// holds for `RANGE_HOLD`. Operations/s of both together.
fn disjoint_ranges<S: RangeLocking>(n: usize, run: Duration) -> f64 {
    let lock = Arc::new(S::create());
    let start = Arc::new(Barrier::new(2 * n));
    let handles: Vec<_> = (0..2 * n)
        .map(|t| {
            let (lock, start) = (lock.clone(), start.clone());
            thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(t as u64);
                start.wait();
                let began = Instant::now();
                let deadline = began + run;
                let mut done = 0;
                while Instant::now() < deadline {
                    let len = rng.u64(1..=4);
                    let (class, first) = if t < n {
                        (Class::Block, t as u64 * 8 + rng.u64(..=8 - len))
                    } else {
                        (Class::Add, 1000 + rng.u64(..1000))
                    };
                    lock.with(first..first + len, class, || thread::sleep(RANGE_HOLD));
                    done += 1;
                }
                (done, began, Instant::now())
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let first = results.iter().map(|r| r.1).min().unwrap();
    let last = results.iter().map(|r| r.2).max().unwrap();
    results.iter().map(|r| r.0).sum::<u64>() as f64 / (last - first).as_secs_f64()
}

fn print_ranges(s: &Settings) {
    println!(
        "## Range locking
"
    );
    println!(
        "N threads take `Block` on ranges of 1-4 stripes, each inside its own 8-stripe region of one object (direct writes), while N more take `Add` on 1-4 stripes elsewhere in the same object (buffered reads adding pages); every hold is a {} us sleep. Operations/s of all 2N threads (ideal: 2N / {} us), and against one `TwoStateLock` and one `std::sync::RwLock` per object (`Add` = read, `Block` = write).\n",
        RANGE_HOLD.as_micros(),
        RANGE_HOLD.as_micros()
    );
    let rows: Vec<(&str, Vec<f64>)> = vec![
        (
            two_state_lock::LockTable::NAME,
            RANGE_THREADS
                .iter()
                .map(|&n| disjoint_ranges::<two_state_lock::LockTable>(n, s.run))
                .collect(),
        ),
        (
            <TwoStateLock as RangeLocking>::NAME,
            RANGE_THREADS
                .iter()
                .map(|&n| disjoint_ranges::<TwoStateLock>(n, s.run))
                .collect(),
        ),
        (
            <StdRwLock as RangeLocking>::NAME,
            RANGE_THREADS
                .iter()
                .map(|&n| disjoint_ranges::<StdRwLock>(n, s.run))
                .collect(),
        ),
    ];
    print!("| locking |");
    RANGE_THREADS.iter().for_each(|n| print!(" N={n} |"));
    println!(" N=4: table vs this |");
    println!("| --- |{} ---: |", " ---: |".repeat(RANGE_THREADS.len()));
    let table = rows[0].1[RANGE_THREADS.len() - 1];
    for (name, rates) in &rows {
        print!("| {name} |");
        rates.iter().for_each(|r| print!(" {r:.0} |"));
        println!(" {:.2}x |", table / rates[RANGE_THREADS.len() - 1]);
    }
    println!();
}

fn tasks_size<S: AsyncSubject>() -> usize {
    S::size()
}

fn print_sizes() {
    println!("## Size\n");
    println!("| lock | bytes |\n| --- | ---: |");
    println!("| two-state | {} |", <TwoStateLock as Subject>::size());
    println!("| std RwLock<()> | {} |", StdRwLock::size());
    println!("| parking_lot RwLock<()> | {} |", ParkingLotRwLock::size());
    println!("| reference (bcachefs port) | {} |", Reference::size());
    println!("| tokio RwLock<()> | {} |", tasks_size::<TokioRwLock>());
    println!(
        "| async-lock RwLock<()> | {} |",
        tasks_size::<AsyncLockRwLock>()
    );
    println!();
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let smoke = args.iter().any(|a| a == "--smoke");
    let settings = Settings {
        run: if smoke {
            Duration::from_millis(150)
        } else {
            Duration::from_secs(2)
        },
        fairness_run: if smoke {
            Duration::from_millis(150)
        } else {
            Duration::from_secs(8)
        },
        svg: (!smoke)
            .then(|| concat!(env!("CARGO_MANIFEST_DIR"), "/docs/fairness.svg").to_string()),
    };
    const SECTIONS: [&str; 8] = [
        "sizes",
        "direct-io",
        "fairness",
        "mixed",
        "ranges",
        "async-direct-io",
        "async-mixed",
        "async-fairness",
    ];
    let chosen: Vec<&str> = args
        .iter()
        .filter(|a| *a != "--smoke")
        .map(String::as_str)
        .collect();
    if let Some(bad) = chosen.iter().find(|a| !SECTIONS.contains(a)) {
        eprintln!(
            "scenarios: unknown argument '{bad}' (--smoke, and sections to run: {})",
            SECTIONS.join(", ")
        );
        std::process::exit(2);
    }
    let run = |section: &str| chosen.is_empty() || chosen.contains(&section);
    println!(
        "# Scenarios ({} per measurement, {} CPUs)\n",
        if smoke {
            "150 ms smoke run"
        } else {
            "2 s (fairness: 8 s)"
        },
        thread::available_parallelism().map_or(0, |n| n.get())
    );
    if run("sizes") {
        print_sizes();
    }
    if run("direct-io") {
        print_direct_io(&settings);
    }
    let fairness = run("fairness").then(|| print_fairness(&settings));
    if run("mixed") {
        print_mixed(&settings);
    }
    if run("ranges") {
        print_ranges(&settings);
    }
    if run("async-direct-io") {
        tasks::print_direct_io(&settings);
    }
    if run("async-mixed") {
        tasks::print_mixed(&settings);
    }
    if run("async-fairness") {
        tasks::print_fairness(&settings);
    }
    let fairness = match fairness {
        Some(f) => f,
        None => return,
    };
    if let Some(path) = settings.svg {
        match plot_fairness(&path, settings.fairness_run, &fairness) {
            Ok(()) => println!("Fairness chart written to {path}"),
            Err(e) => eprintln!("scenarios: cannot write {path}: {e}"),
        }
    }
}
