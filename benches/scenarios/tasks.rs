//! The async sections of the scenario runner: tasks on a tokio runtime with
//! 2 worker threads, for `TwoStateLock`, `tokio::sync::RwLock` and
//! `async_lock::RwLock`. Direct-I/O concurrency, mixed throughput, and
//! fairness across kinds of waiter (a periodic task against a stream of
//! blocking threads, and a periodic thread against a stream of tasks).

use super::{HOLD, PERIOD, STREAMERS, Settings, fmt_wait, median};
use crate::common::short_work;
use crate::common::tasks::{AsyncLockRwLock, AsyncSubject, TokioRwLock};
use hdrhistogram::Histogram;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread;
use std::time::{Duration, Instant};
use two_state_lock::{Class, TwoStateLock};

/// Worker threads of the runtime.
const WORKERS: usize = 2;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_time()
        .build()
        .unwrap()
}

/// Runs `tasks` tasks doing `op` back to back for `run` on one lock; ops/s.
fn task_throughput<S, F>(tasks: usize, run: Duration, op: fn(Arc<S>, u64) -> F) -> f64
where
    S: AsyncSubject,
    F: Future<Output = ()> + Send + 'static,
{
    let lock = Arc::new(S::default());
    runtime().block_on(async {
        let start = Instant::now();
        let deadline = start + run;
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let lock = lock.clone();
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while n % 16 != 0 || Instant::now() < deadline {
                        op(lock.clone(), (t as u64) << 32 | n).await;
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let mut ops = 0;
        for h in handles {
            ops += h.await.unwrap();
        }
        ops as f64 / start.elapsed().as_secs_f64()
    })
}

// ---------------------------------------------------------------- direct I/O

const AIO: Duration = Duration::from_millis(1);
const AIO_TASKS: [usize; 4] = [1, 2, 8, 32];

async fn direct_io_op<S: AsyncSubject>(lock: Arc<S>, _: u64) {
    lock.with(Class::Block, || tokio::time::sleep(AIO)).await;
}

fn direct_io<S: AsyncSubject>(s: &Settings) -> (&'static str, Vec<f64>) {
    let rates = AIO_TASKS
        .iter()
        .map(|&n| task_throughput::<S, _>(n, s.run, direct_io_op::<S>))
        .collect();
    (S::NAME, rates)
}

pub fn print_direct_io(s: &Settings) {
    println!("## Direct-I/O concurrency, tasks\n");
    println!(
        "N tasks on a tokio runtime with {WORKERS} worker threads, one lock, each holding `Block` (a reader/writer lock: write) across a {} ms `tokio::time::sleep` standing for the I/O (tokio's timer has 1 ms resolution). Operations/s, and in brackets the fraction of the ideal N x (N times the same lock's 1-task rate).\n",
        AIO.as_millis()
    );
    let rows = vec![
        direct_io::<TwoStateLock>(s),
        direct_io::<TokioRwLock>(s),
        direct_io::<AsyncLockRwLock>(s),
    ];
    let last = AIO_TASKS.len() - 1;
    print!("| lock |");
    AIO_TASKS.iter().for_each(|n| print!(" N={n} |"));
    println!(" N={} vs tokio RwLock |", AIO_TASKS[last]);
    println!("| --- |{} ---: |", " ---: |".repeat(AIO_TASKS.len()));
    let tokio = rows[1].1[last];
    for (name, rates) in &rows {
        print!("| {name} |");
        for (i, r) in rates.iter().enumerate() {
            print!(" {:.0} ({:.2}) |", r, r / (rates[0] * AIO_TASKS[i] as f64));
        }
        println!(" {:.2}x |", rates[last] / tokio);
    }
    println!();
}

// ------------------------------------------------------------------- mixed

const MIX_TASKS: usize = 8;
const TASK_MIXES: [(&str, u32); 2] = [("90:10", 90), ("50:50", 50)];

/// One op: `Add` with probability `ADD_PCT` % around a short critical
/// section; every 16th op of a task yields to the runtime, so that all the
/// tasks take turns on the two workers (an uncontended acquisition never
/// suspends a task).
async fn mixed_op<S: AsyncSubject, const ADD_PCT: u32>(lock: Arc<S>, seq: u64) {
    let class = if fastrand::u32(..100) < ADD_PCT {
        Class::Add
    } else {
        Class::Block
    };
    lock.with(class, || async { short_work() }).await;
    if seq % 16 == 15 {
        tokio::task::yield_now().await;
    }
}

fn mixed<S: AsyncSubject>(add_pct: u32, run: Duration) -> f64 {
    let rate = match add_pct {
        90 => task_throughput::<S, _>(MIX_TASKS, run, mixed_op::<S, 90>),
        50 => task_throughput::<S, _>(MIX_TASKS, run, mixed_op::<S, 50>),
        _ => unreachable!(),
    };
    rate / 1e6
}

pub fn print_mixed(s: &Settings) {
    println!("## Contended throughput, tasks\n");
    let (rounds, slice) = if s.run < Duration::from_secs(1) {
        (1, Duration::from_millis(50))
    } else {
        (6, Duration::from_millis(300))
    };
    println!(
        "{MIX_TASKS} tasks on a tokio runtime with {WORKERS} worker threads, one lock; each op takes `Add` (read) or `Block` (write) at the given ratio around a short critical section, and every 16th op of a task yields. Million ops/s over {} ms, median of {rounds} rounds, the locks taking turns within a round. Last row: `two-state` against the better of tokio's and async-lock's.\n",
        slice.as_millis()
    );
    print!("| lock |");
    TASK_MIXES.iter().for_each(|(l, _)| print!(" {l} |"));
    println!();
    println!("| --- |{}", " ---: |".repeat(TASK_MIXES.len()));
    let names = [TwoStateLock::NAME, TokioRwLock::NAME, AsyncLockRwLock::NAME];
    let mut table = vec![Vec::new(); names.len()];
    for &(_, pct) in &TASK_MIXES {
        let mut samples = vec![Vec::new(); names.len()];
        for round in 0..rounds {
            for k in 0..names.len() {
                let i = (round + k) % names.len();
                samples[i].push(match i {
                    0 => mixed::<TwoStateLock>(pct, slice),
                    1 => mixed::<TokioRwLock>(pct, slice),
                    _ => mixed::<AsyncLockRwLock>(pct, slice),
                });
            }
        }
        for (i, v) in samples.into_iter().enumerate() {
            table[i].push(median(v));
        }
    }
    for (name, row) in names.iter().zip(&table) {
        print!("| {name} |");
        row.iter().for_each(|r| print!(" {r:.2} |"));
        println!();
    }
    print!("| two-state vs best peer |");
    for ((ours, tokio), async_lock) in table[0].iter().zip(&table[1]).zip(&table[2]) {
        print!(" {:.2}x |", ours / tokio.max(*async_lock));
    }
    println!("\n");
}

// ------------------------------------------------------------------ fairness

struct KindFairness {
    name: &'static str,
    /// Waits of the periodic waiter, in microseconds.
    waits: Histogram<u64>,
    streamed: u64,
}

/// `STREAMERS` blocking threads take `stream` back to back, each holding
/// it for a `HOLD` sleep; one task takes `stream.other()` every `PERIOD`
/// and records how long it waited. With `tasks_stream`, the other way
/// round: `STREAMERS` tasks stream (holding across a sleep of at least
/// tokio's 1 ms), and a thread waits periodically.
fn kind_fairness<S: AsyncSubject>(s: &Settings, stream: Class, tasks_stream: bool) -> KindFairness {
    let lock = Arc::new(S::default());
    let stop = Arc::new(AtomicBool::new(false));
    let streamed = Arc::new(AtomicU64::new(0));
    let rt = runtime();
    let mut waits = Histogram::<u64>::new(3).unwrap();
    let end = Instant::now() + s.fairness_run;
    let stopper = {
        let stop = stop.clone();
        thread::spawn(move || {
            thread::sleep(end.saturating_duration_since(Instant::now()));
            stop.store(true, Relaxed);
        })
    };
    if tasks_stream {
        let streamers: Vec<_> = (0..STREAMERS)
            .map(|_| {
                let (lock, stop, streamed) = (lock.clone(), stop.clone(), streamed.clone());
                rt.spawn(async move {
                    while !stop.load(Relaxed) {
                        lock.with(stream, || tokio::time::sleep(HOLD)).await;
                        streamed.fetch_add(1, Relaxed);
                    }
                })
            })
            .collect();
        thread::sleep(Duration::from_millis(20));
        while Instant::now() < end {
            let t = Instant::now();
            lock.with_blocking(stream.other(), short_work);
            waits.record(t.elapsed().as_micros() as u64).unwrap();
            thread::sleep(PERIOD);
        }
        stop.store(true, Relaxed);
        rt.block_on(async {
            for h in streamers {
                h.await.unwrap();
            }
        });
    } else {
        let streamers: Vec<_> = (0..STREAMERS)
            .map(|i| {
                let (lock, stop, streamed) = (lock.clone(), stop.clone(), streamed.clone());
                thread::spawn(move || {
                    thread::sleep(HOLD * i as u32 / STREAMERS as u32);
                    while !stop.load(Relaxed) {
                        lock.with_blocking(stream, || thread::sleep(HOLD));
                        streamed.fetch_add(1, Relaxed);
                    }
                })
            })
            .collect();
        let l = lock.clone();
        waits = rt.block_on(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let mut waits = Histogram::<u64>::new(3).unwrap();
            while Instant::now() < end {
                let t = Instant::now();
                l.with(stream.other(), || async { short_work() }).await;
                waits.record(t.elapsed().as_micros() as u64).unwrap();
                tokio::time::sleep(PERIOD).await;
            }
            waits
        });
        stop.store(true, Relaxed);
        streamers.into_iter().for_each(|h| h.join().unwrap());
    }
    stopper.join().unwrap();
    KindFairness {
        name: S::NAME,
        waits,
        streamed: streamed.load(Relaxed),
    }
}

pub fn print_fairness(s: &Settings) {
    println!("## Fairness across kinds of waiter\n");
    println!(
        "One lock shared by blocking threads and tasks on a tokio runtime with {WORKERS} worker threads. {STREAMERS} streamers take the streaming class back to back, each holding it for a {} us sleep (a task's sleep lasts at least tokio's 1 ms); one periodic waiter takes the other class every {} ms and records its wait, over {:.1} s per lock.\n",
        HOLD.as_micros(),
        PERIOD.as_millis(),
        s.fairness_run.as_secs_f64()
    );
    for tasks_stream in [false, true] {
        for stream in [Class::Add, Class::Block] {
            let (streamers, periodic) = if tasks_stream {
                ("tasks", "thread")
            } else {
                ("threads", "task")
            };
            println!(
                "Streaming `{stream:?}` {streamers}, a periodic `{:?}` {periodic}:\n",
                stream.other()
            );
            println!(
                "| lock | periodic acquisitions | wait p50 | wait p99 | wait max | streamed acquisitions |"
            );
            println!("| --- | ---: | ---: | ---: | ---: | ---: |");
            let rows = [
                kind_fairness::<TwoStateLock>(s, stream, tasks_stream),
                kind_fairness::<TokioRwLock>(s, stream, tasks_stream),
                kind_fairness::<AsyncLockRwLock>(s, stream, tasks_stream),
            ];
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
        }
    }
}
