//! The page-cache demonstration: the same workload under invalidate-twice, a
//! reader/writer lock, a two-state lock per file and a two-state lock table,
//! on threads and as tasks on tokio: two tables.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use pagecache::workload::{self, INTERRUPTED, TempDir, Workload};
use pagecache::{Config, FaultProtocol, PAGE, Variant};

const USAGE: &str = "\
usage: pagecache [options]

Runs one workload (direct writes from plain and memory-mapped buffers,
buffered reads and writes, direct reads, hole punches) over real files with
O_DIRECT under each variant, on threads and as tasks on a tokio runtime with
2 worker threads, and prints a table for each. (As tasks, rwlock is tokio's
RwLock, and file I/O runs on tokio's blocking pool.)

options:
  --variants LIST      comma-separated: invalidate-twice,rwlock,two-state,two-state-range
                       (default: all)
  --seconds N          run time per variant, 1-3600 (default 5)
  --files N            files, 1-256 (default 2)
  --pages N            4 KiB pages per file, a multiple of 8, at least 8 per writer
                       thread and per writer task (default 256)
  --writers N          direct-writer threads, 1-256 (default 4)
  --readers N          buffered-reader threads, 0-256 (default 4)
  --writer-tasks N     direct-writer tasks, 1-1024 (default 32)
  --reader-tasks N     buffered-reader tasks, 0-1024 (default 32)
  --engines LIST       comma-separated: threads,tasks (default: both)
  --read-window-us N   pause between reading a missing page and caching it,
                       widening the stale-page race, 0-1000000 (default 300)
  --io-delay-us N      latency added to every access to the files, modelling a
                       slower device, 0-1000000 (default 200)
  --cross-pct N        percent of direct writes from a buffer mapped from another file (default 35)
  --same-pct N         percent of direct writes from a buffer mapped from the same file (default 5)
  --direct-only        writers do direct writes only (no buffered writes, direct reads, punches)
  --fault-protocol P   how the two-state variants pin mapped sources: total (fault_in, default)
                       or seed (lock_fault + retry_faults: a page under the write's own lock
                       fails the write with EFAULT; threads only)
  --dir PATH           where to create the files (default: the system temp directory)
  --quiet              no progress lines
  -h, --help           this text

Exit status: 0 done, 2 bad arguments or a --dir that cannot punch holes
(nothing is left behind), 3 a variant deadlocked, 1 an I/O error (the
variant stops at once), 130 interrupted (what the run made is removed).
";

/// Which engines run.
#[derive(Clone, Copy)]
struct Engines {
    threads: bool,
    tasks: bool,
}

/// Parses the arguments and checks every value against its range, the free
/// space of `--dir` and the memory available: nothing is created on error.
fn parse(args: &[String]) -> Result<(Workload, Vec<Variant>, Engines, PathBuf), String> {
    let mut w = Workload {
        engine: Config {
            files: 2,
            pages: 256,
            read_window: Duration::from_micros(300),
            io_delay: Duration::from_micros(200),
            faults: FaultProtocol::Total,
        },
        writers: 4,
        readers: 4,
        writer_tasks: 32,
        reader_tasks: 32,
        duration: Duration::from_secs(5),
        cross_source_pct: 35,
        same_source_pct: 5,
        direct_only: false,
        progress: true,
    };
    let mut variants = Variant::ALL.to_vec();
    let mut engines = Engines {
        threads: true,
        tasks: true,
    };
    let mut dir = std::env::temp_dir();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--quiet" => {
                w.progress = false;
                continue;
            }
            "--direct-only" => {
                w.direct_only = true;
                continue;
            }
            _ => {}
        }
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |value: &str, range: std::ops::RangeInclusive<u64>| -> Result<u64, String> {
            let n: u64 = value
                .parse()
                .map_err(|_| format!("{flag}: '{value}' is not a whole number"))?;
            if !range.contains(&n) {
                return Err(format!(
                    "{flag}: {n} is out of range ({}-{})",
                    range.start(),
                    range.end()
                ));
            }
            Ok(n)
        };
        match flag.as_str() {
            "--variants" => {
                variants = value()?
                    .split(',')
                    .map(|v| {
                        Variant::parse(v)
                            .ok_or_else(|| format!("--variants: unknown variant '{v}'"))
                    })
                    .collect::<Result<_, _>>()?
            }
            "--seconds" => w.duration = Duration::from_secs(number(value()?, 1..=3600)?),
            "--files" => w.engine.files = number(value()?, 1..=256)? as usize,
            "--pages" => w.engine.pages = number(value()?, 8..=u64::MAX / PAGE as u64)?,
            "--writers" => w.writers = number(value()?, 1..=256)? as usize,
            "--readers" => w.readers = number(value()?, 0..=256)? as usize,
            "--writer-tasks" => w.writer_tasks = number(value()?, 1..=1024)? as usize,
            "--reader-tasks" => w.reader_tasks = number(value()?, 0..=1024)? as usize,
            "--engines" => {
                engines = Engines {
                    threads: false,
                    tasks: false,
                };
                for e in value()?.split(',') {
                    match e {
                        "threads" => engines.threads = true,
                        "tasks" => engines.tasks = true,
                        other => {
                            return Err(format!("--engines: '{other}' is not threads or tasks"));
                        }
                    }
                }
            }
            "--read-window-us" => {
                w.engine.read_window = Duration::from_micros(number(value()?, 0..=1_000_000)?)
            }
            "--io-delay-us" => {
                w.engine.io_delay = Duration::from_micros(number(value()?, 0..=1_000_000)?)
            }
            "--cross-pct" => w.cross_source_pct = number(value()?, 0..=100)? as u8,
            "--same-pct" => w.same_source_pct = number(value()?, 0..=100)? as u8,
            "--dir" => dir = PathBuf::from(value()?),
            "--fault-protocol" => {
                w.engine.faults = match value()?.as_str() {
                    "total" => FaultProtocol::Total,
                    "seed" => FaultProtocol::Seed,
                    other => {
                        return Err(format!("--fault-protocol: '{other}' is not total or seed"));
                    }
                }
            }
            _ => return Err(format!("unknown option '{flag}'")),
        }
    }
    let writers = match (engines.threads, engines.tasks) {
        (true, true) => w.writers.max(w.writer_tasks),
        (true, false) => w.writers,
        _ => w.writer_tasks,
    };
    if w.engine.pages < 8 * writers as u64 || w.engine.pages % 8 != 0 {
        return Err(format!(
            "--pages must be a multiple of 8, at least 8 per writer thread and task ({})",
            8 * writers
        ));
    }
    if engines.tasks && w.engine.faults == FaultProtocol::Seed {
        return Err("--fault-protocol seed is for threads only: add --engines threads".into());
    }
    if w.cross_source_pct as u16 + w.same_source_pct as u16 > 100 {
        return Err("--cross-pct plus --same-pct must be at most 100".into());
    }
    if variants.is_empty() {
        return Err("--variants: name at least one".into());
    }
    let runs = variants.len() * (usize::from(engines.threads) + usize::from(engines.tasks));
    check_resources(&w, runs, &dir)?;
    Ok((w, variants, engines, dir))
}

/// The run keeps every variant's files until it ends, and one variant's
/// cache (at most every page) in memory at a time.
fn check_resources(w: &Workload, variants: usize, dir: &Path) -> Result<(), String> {
    let bytes_per_variant = (w.engine.files as u64)
        .checked_mul(w.engine.pages)
        .and_then(|p| p.checked_mul(PAGE as u64))
        .ok_or("--files x --pages is too large")?;
    if !dir.is_dir() {
        return Err(format!("--dir: {} is not a directory", dir.display()));
    }
    let disk = bytes_per_variant.saturating_mul(variants as u64);
    let free = free_space(dir).map_err(|e| format!("--dir: {}: {e}", dir.display()))?;
    // A file system that reports no size at all (ramfs) is not checked.
    if let Some(free) = free
        && disk > free / 10 * 9
    {
        return Err(format!(
            "the files need {} in {} but only {} is free",
            size(disk),
            dir.display(),
            size(free)
        ));
    }
    // A cached page is its 4 KiB and about 80 bytes of map entry; every
    // page also has 24 bytes of counters.
    let memory = (w.engine.files as u64)
        .saturating_mul(w.engine.pages)
        .saturating_mul(PAGE as u64 + 104);
    if let Some(available) = available_memory()
        && memory > available / 2
    {
        return Err(format!(
            "the page cache may need {} of memory but only {} is available",
            size(memory),
            size(available)
        ));
    }
    Ok(())
}

/// Bytes free for us under `dir`; `None` if its file system keeps no count.
fn free_space(dir: &Path) -> std::io::Result<Option<u64>> {
    let path = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("a NUL in the path"))?;
    // SAFETY: statvfs fills the struct we pass; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((st.f_blocks != 0).then(|| st.f_bavail as u64 * st.f_frsize as u64))
}

/// `MemAvailable` from /proc/meminfo, in bytes.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Whether the file system under `dir` takes `O_DIRECT` (ramfs does not;
/// tmpfs does since Linux 6.6); an error if it cannot punch holes, which the
/// workload needs.
fn probe_file_system(dir: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::io::AsRawFd;
    let probe = dir.join("probe");
    let open = |flags| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(flags)
            .open(&probe)
    };
    let (file, direct) = match open(libc::O_DIRECT) {
        Ok(f) => (f, true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (open(0)?, false),
        Err(e) => return Err(e),
    };
    file.set_len(2 * PAGE as u64)?;
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: a plain system call on a file descriptor we own.
    let punched = unsafe { libc::fallocate(file.as_raw_fd(), mode, 0, PAGE as libc::off_t) };
    let punch_error = std::io::Error::last_os_error();
    drop(file);
    std::fs::remove_file(&probe)?;
    if punched != 0 {
        return Err(std::io::Error::new(
            punch_error.kind(),
            format!("the file system cannot punch holes ({punch_error})"),
        ));
    }
    Ok(direct)
}

extern "C" fn on_interrupt(_: libc::c_int) {
    // Async-signal-safe: one atomic store. The run stops after the current
    // operations and removes its files; a second signal kills at once.
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn catch_interrupts() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installs a handler that only stores to an atomic; the
        // handler is reset to the default after it runs once.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_interrupt as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_RESETHAND;
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let (w, variants, engines, dir) = match parse(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("pagecache: {e} (see --help)");
            return ExitCode::from(2);
        }
    };
    catch_interrupts();
    let tmp = match TempDir::new(&dir) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "pagecache: cannot create a directory in {}: {e}",
                dir.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let direct = match probe_file_system(tmp.path()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("pagecache: --dir: {}: {e}", dir.display());
            drop(tmp);
            return ExitCode::from(2);
        }
    };
    println!(
        "{}{} files x {} pages, {:?} per variant, read window {:?}, added device delay {:?}, {:?} fault protocol, in {}",
        if direct {
            ""
        } else {
            "NO DIRECT I/O: the file system refuses O_DIRECT, so the files use buffered I/O. "
        },
        w.engine.files,
        w.engine.pages,
        w.duration,
        w.engine.read_window,
        w.engine.io_delay,
        w.engine.faults,
        tmp.path().display()
    );
    let only = if w.direct_only {
        " (direct writes only)"
    } else {
        ""
    };
    let mut tables = Vec::new();
    for tasks in [false, true] {
        if !(if tasks {
            engines.tasks
        } else {
            engines.threads
        }) {
            continue;
        }
        let title = if tasks {
            format!(
                "As tasks on tokio (2 worker threads): {} direct-writer tasks{only}, {} buffered-reader tasks",
                w.writer_tasks, w.reader_tasks
            )
        } else {
            format!(
                "On threads: {} direct-writer threads{only}, {} buffered-reader threads",
                w.writers, w.readers
            )
        };
        let mut reports = Vec::new();
        for &v in &variants {
            let name = if tasks { v.async_name() } else { v.name() };
            let run = if tasks {
                workload::run_tasks
            } else {
                workload::run
            };
            match run(tmp.path(), v, &w) {
                Ok(r) => {
                    if let Some(e) = &r.io_error {
                        eprintln!("pagecache: '{name}' stopped on an I/O error: {e}");
                    }
                    reports.push(r);
                }
                Err(e) => {
                    eprintln!("pagecache: cannot set up '{name}': {e}");
                    return ExitCode::FAILURE;
                }
            }
            if INTERRUPTED.load(Ordering::Relaxed) {
                break;
            }
        }
        tables.push((title, reports));
        if INTERRUPTED.load(Ordering::Relaxed) {
            break;
        }
    }
    if INTERRUPTED.load(Ordering::Relaxed) {
        let path = tmp.path().display().to_string();
        drop(tmp);
        eprintln!("pagecache: interrupted; removed {path}");
        return ExitCode::from(130);
    }
    for (title, reports) in &tables {
        println!("\n{title}\n\n{}", workload::table(reports));
    }
    if !direct {
        println!("No real direct I/O in this run: the file system refused O_DIRECT.");
    }
    let reports: Vec<_> = tables.iter().flat_map(|(_, r)| r).collect();
    let deadlocked = reports.iter().any(|r| r.deadlocked_threads > 0);
    if deadlocked {
        eprintln!(
            "pagecache: a variant deadlocked (threads still stuck; see the deadlocks column)"
        );
        drop(tmp);
        // Stuck threads would keep the process alive.
        std::process::exit(3);
    }
    if reports.iter().any(|r| r.io_error.is_some()) {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
