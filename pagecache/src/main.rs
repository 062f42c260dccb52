//! The page-cache demonstration: the same workload under invalidate-twice, a
//! reader/writer lock and `two-state-lock`, one table.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use pagecache::workload::{self, TempDir, Workload};
use pagecache::{Config, FaultProtocol, Variant};

const USAGE: &str = "\
usage: pagecache [options]

Runs one workload (direct writes from plain and memory-mapped buffers,
buffered reads and writes, direct reads, hole punches) over real files with
O_DIRECT under each variant, and prints a table.

options:
  --variants LIST      comma-separated: invalidate-twice,rwlock,two-state (default: all)
  --seconds N          run time per variant (default 5)
  --files N            files, each with its own lock (default 2)
  --pages N            4 KiB pages per file (default 256)
  --writers N          direct-writer threads (default 4)
  --readers N          buffered-reader threads (default 4)
  --read-window-us N   pause between reading a missing page and caching it,
                       widening the stale-page race (default 300; 0 = off)
  --io-delay-us N      extra latency per direct I/O, modelling a slower device (default 0)
  --cross-pct N        percent of direct writes from a buffer mapped from another file (default 35)
  --same-pct N         percent of direct writes from a buffer mapped from the same file (default 5)
  --direct-only        writers do direct writes only (no buffered writes, direct reads, punches)
  --fault-protocol P   how two-state pins mapped sources: total (fault_in, default) or
                       seed (lock_fault + retry_faults: same-file sources fail with EFAULT)
  --dir PATH           where to create the files (default: the system temp directory)
  --quiet              no progress lines
  -h, --help           this text
";

fn parse(args: &[String]) -> Result<(Workload, Vec<Variant>, PathBuf), String> {
    let mut w = Workload {
        engine: Config {
            files: 2,
            pages: 256,
            read_window: Duration::from_micros(300),
            io_delay: Duration::ZERO,
            faults: FaultProtocol::Total,
        },
        writers: 4,
        readers: 4,
        duration: Duration::from_secs(5),
        cross_source_pct: 35,
        same_source_pct: 5,
        direct_only: false,
        progress: true,
    };
    let mut variants = Variant::ALL.to_vec();
    let mut dir = std::env::temp_dir();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--quiet" {
            w.progress = false;
            continue;
        }
        if flag == "--direct-only" {
            w.direct_only = true;
            continue;
        }
        const WITH_VALUE: [&str; 12] = [
            "--fault-protocol",
            "--variants",
            "--seconds",
            "--files",
            "--pages",
            "--writers",
            "--readers",
            "--read-window-us",
            "--io-delay-us",
            "--cross-pct",
            "--same-pct",
            "--dir",
        ];
        if !WITH_VALUE.contains(&flag.as_str()) {
            return Err(format!("unknown option '{flag}'"));
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || -> Result<u64, String> {
            value
                .parse()
                .map_err(|_| format!("{flag}: '{value}' is not a whole number"))
        };
        match flag.as_str() {
            "--variants" => {
                variants = value
                    .split(',')
                    .map(|v| {
                        Variant::parse(v)
                            .ok_or_else(|| format!("--variants: unknown variant '{v}'"))
                    })
                    .collect::<Result<_, _>>()?
            }
            "--seconds" => w.duration = Duration::from_secs(number()?),
            "--files" => w.engine.files = number()? as usize,
            "--pages" => w.engine.pages = number()?,
            "--writers" => w.writers = number()? as usize,
            "--readers" => w.readers = number()? as usize,
            "--read-window-us" => w.engine.read_window = Duration::from_micros(number()?),
            "--io-delay-us" => w.engine.io_delay = Duration::from_micros(number()?),
            "--cross-pct" => w.cross_source_pct = number()?.min(100) as u8,
            "--same-pct" => w.same_source_pct = number()?.min(100) as u8,
            "--dir" => dir = PathBuf::from(value),
            "--fault-protocol" => {
                w.engine.faults = match value.as_str() {
                    "total" => FaultProtocol::Total,
                    "seed" => FaultProtocol::Seed,
                    _ => return Err(format!("--fault-protocol: '{value}' is not total or seed")),
                }
            }
            _ => return Err(format!("unknown option '{flag}'")),
        }
    }
    if w.engine.files == 0 || w.writers == 0 || w.duration.is_zero() {
        return Err("--files, --writers and --seconds must be at least 1".into());
    }
    if w.engine.pages < 8 * w.writers as u64 || !w.engine.pages.is_multiple_of(8) {
        return Err(format!(
            "--pages must be a multiple of 8, at least 8 per writer ({})",
            8 * w.writers
        ));
    }
    if w.cross_source_pct as u16 + w.same_source_pct as u16 > 100 {
        return Err("--cross-pct plus --same-pct must be at most 100".into());
    }
    Ok((w, variants, dir))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let (w, variants, dir) = match parse(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("pagecache: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
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
    println!(
        "{} files x {} pages, {} direct writers{}, {} buffered readers, {:?} per variant, read window {:?}, extra I/O delay {:?}, {:?} fault protocol, in {}",
        w.engine.files,
        w.engine.pages,
        w.writers,
        if w.direct_only {
            " (direct writes only)"
        } else {
            ""
        },
        w.readers,
        w.duration,
        w.engine.read_window,
        w.engine.io_delay,
        w.engine.faults,
        tmp.path().display()
    );
    let mut reports = Vec::new();
    for v in variants {
        match workload::run(tmp.path(), v, &w) {
            Ok(r) => {
                if !r.direct_io {
                    eprintln!(
                        "pagecache: WARNING: the file system in {} refused O_DIRECT; '{}' ran with buffered file I/O",
                        tmp.path().display(),
                        v.name()
                    );
                }
                if let Some(e) = &r.io_error {
                    eprintln!("pagecache: '{}' stopped on an I/O error: {e}", v.name());
                }
                reports.push(r);
            }
            Err(e) => {
                eprintln!("pagecache: cannot set up '{}': {e}", v.name());
                return ExitCode::FAILURE;
            }
        }
    }
    println!("\n{}", workload::table(&reports));
    let deadlocked = reports.iter().any(|r| r.deadlocked_threads > 0);
    if deadlocked {
        eprintln!(
            "pagecache: a variant deadlocked (threads still stuck; see the deadlocks column)"
        );
        // Stuck threads would keep the process alive.
        std::process::exit(3);
    }
    ExitCode::SUCCESS
}
