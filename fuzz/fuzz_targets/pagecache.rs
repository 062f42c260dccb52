//! Operation sequences on the page-cache engines (all four variants, both
//! fault protocols on threads, the async engine too; one thread, so all
//! must be exact), checked against an in-memory oracle of every page's
//! version.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use pagecache::workload::TempDir;
use pagecache::{BlockOn, Config, Engine, FaultProtocol, OpError, PageCache, Source, Variant};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

const FILES: usize = 2;
const PAGES: u64 = 16;

#[derive(Arbitrary, Debug)]
enum Op {
    Read {
        file: u8,
        page: u8,
    },
    Write {
        file: u8,
        page: u8,
    },
    DirectWrite {
        file: u8,
        first: u8,
        n: u8,
        source: Src,
    },
    DirectRead {
        file: u8,
        first: u8,
        n: u8,
    },
    Punch {
        file: u8,
        first: u8,
        n: u8,
    },
}

#[derive(Arbitrary, Debug)]
enum Src {
    Memory,
    Mapped { file: u8, first: u8 },
}

#[derive(Arbitrary, Debug)]
struct Input {
    variant: u8,
    /// `TwoState` pins with the seed's protocol instead of `fault_in`.
    seed_faults: bool,
    /// The async engine (its futures driven by a runtime's `block_on`; only
    /// the total fault protocol).
    tasks: bool,
    ops: Vec<Op>,
}

fuzz_target!(|input: Input| {
    let tasks = input.tasks && !input.seed_faults;
    let variant = Variant::ALL[input.variant as usize % Variant::ALL.len()];
    // tmpfs when there is one: the oracle checks the engine's logic, and
    // memory-speed files give the fuzzer ~50x the executions of a disk.
    let shm = std::path::Path::new("/dev/shm");
    let parent = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = TempDir::new(&parent).unwrap();
    let cfg = Config {
        files: FILES,
        pages: PAGES,
        read_window: Duration::ZERO,
        io_delay: Duration::ZERO,
        faults: if input.seed_faults {
            FaultProtocol::Seed
        } else {
            FaultProtocol::Total
        },
    };
    let engine: Box<dyn PageCache> = if tasks {
        Box::new(BlockOn::create(dir.path(), variant, cfg).unwrap())
    } else {
        Box::new(Engine::create(dir.path(), variant, cfg).unwrap())
    };
    // The oracle: every page's current version (0 for a hole).
    let mut oracle = [[1u64; PAGES as usize]; FILES];
    let mut version = 1;
    let range = |first: u8, n: u8| {
        let n = n as u64 % 4 + 1;
        (first as u64 % (PAGES - n + 1), n)
    };
    for op in input.ops.iter().take(64) {
        version += 1;
        match *op {
            Op::Read { file, page } => {
                let (f, p) = (file as usize % FILES, page as u64 % PAGES);
                assert_eq!(
                    engine.read(f, p).unwrap(),
                    Some(oracle[f][p as usize]),
                    "{op:?}"
                );
            }
            Op::Write { file, page } => {
                let (f, p) = (file as usize % FILES, page as u64 % PAGES);
                engine.write(f, p, version).unwrap();
                oracle[f][p as usize] = version;
            }
            Op::DirectWrite {
                file,
                first,
                n,
                ref source,
            } => {
                let f = file as usize % FILES;
                let (first, n) = range(first, n);
                let source = match *source {
                    Src::Memory => Source::Memory,
                    Src::Mapped {
                        file: sf,
                        first: sfirst,
                    } => Source::Mapped {
                        file: sf as usize % FILES,
                        first: range(sfirst, n as u8 - 1).0,
                    },
                };
                // Only the seed's protocol refuses a source page whose lock
                // the write holds: any page of the written file with a lock
                // per file, a page of the written range with the table (a
                // stripe is a page; this small a file never collides).
                let refused = input.seed_faults
                    && match (variant, source) {
                        (Variant::TwoState, Source::Mapped { file: sf, .. }) => sf == f,
                        (
                            Variant::TwoStateRange,
                            Source::Mapped {
                                file: sf,
                                first: sfirst,
                            },
                        ) => sf == f && sfirst < first + n && first < sfirst + n,
                        _ => false,
                    };
                match engine.direct_write(f, first, n, source, version) {
                    Ok(()) => {
                        assert!(!refused, "a same-file source must fail");
                        for p in first..first + n {
                            oracle[f][p as usize] = version;
                        }
                    }
                    Err(OpError::BadAddress) => assert!(refused, "{op:?} refused"),
                    Err(e) => panic!("{op:?}: {e}"),
                }
            }
            Op::DirectRead { file, first, n } => {
                let f = file as usize % FILES;
                let (first, n) = range(first, n);
                let want: Vec<_> = (first..first + n)
                    .map(|p| Some(oracle[f][p as usize]))
                    .collect();
                assert_eq!(engine.direct_read(f, first, n).unwrap(), want, "{op:?}");
            }
            Op::Punch { file, first, n } => {
                let f = file as usize % FILES;
                let (first, n) = range(first, n);
                engine.punch_hole(f, first, n, version).unwrap();
                for p in first..first + n {
                    oracle[f][p as usize] = 0;
                }
            }
        }
    }
    // Every page, from the cache and from the file, matches the oracle.
    for f in 0..FILES {
        let want: Vec<_> = oracle[f].iter().map(|&v| Some(v)).collect();
        assert_eq!(engine.direct_read(f, 0, PAGES).unwrap(), want);
        for p in 0..PAGES {
            assert_eq!(engine.read(f, p).unwrap(), Some(oracle[f][p as usize]));
        }
    }
    assert_eq!(engine.stats().stale_reads.load(Relaxed), 0);
});
