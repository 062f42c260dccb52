//! All four variants on real files, on both engines (threads, and tasks on
//! tokio): the locked ones stay coherent and deadlock-free, the two-state
//! ones run direct writes to one file side by side, and the unlocked one
//! shows the stale-page bug (which keeps the detector honest). Tests in the
//! style of xfstests generic/133, generic/418, generic/647 and generic/729,
//! and a hole-punch race.

use pagecache::workload::{self, Report, TempDir, Workload};
use pagecache::{BlockOn, Config, Engine, FaultProtocol, OpError, PageCache, Source, Variant};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// One engine under test, called from plain threads (the async engine
/// through [`BlockOn`]; the workload tests run it as tasks on a runtime's
/// workers).
fn under(dir: &std::path::Path, variant: Variant, cfg: Config, tasks: bool) -> Box<dyn PageCache> {
    if tasks {
        Box::new(BlockOn::create(dir, variant, cfg).unwrap())
    } else {
        Box::new(Engine::create(dir, variant, cfg).unwrap())
    }
}

/// Both engines.
const ENGINES: [bool; 2] = [false, true];

fn engine_name(tasks: bool) -> &'static str {
    if tasks { "tasks" } else { "threads" }
}

fn workload() -> Workload {
    Workload {
        engine: Config {
            files: 2,
            pages: 128,
            read_window: Duration::from_micros(300),
            io_delay: Duration::ZERO,
            faults: FaultProtocol::Total,
        },
        writers: 4,
        readers: 4,
        writer_tasks: 16,
        reader_tasks: 16,
        duration: Duration::from_secs(2),
        cross_source_pct: 35,
        same_source_pct: 5,
        direct_only: false,
        progress: false,
    }
}

fn run(variant: Variant, tasks: bool) -> Report {
    let dir = TempDir::new(&std::env::temp_dir()).unwrap();
    let run = if tasks {
        workload::run_tasks
    } else {
        workload::run
    };
    let r = run(dir.path(), variant, &workload()).unwrap();
    println!("{}", workload::table(std::slice::from_ref(&r)));
    assert!(r.io_error.is_none(), "{:?}", r.io_error);
    r
}

const LOCKED: [Variant; 3] = [Variant::RwLock, Variant::TwoState, Variant::TwoStateRange];

#[test]
fn locked_variants_are_coherent_and_deadlock_free() {
    for (variant, tasks) in LOCKED.into_iter().flat_map(|v| ENGINES.map(|t| (v, t))) {
        let r = run(variant, tasks);
        assert_eq!(r.deadlocked_threads, 0, "{variant:?} deadlocked");
        assert_eq!(r.stale_reads, 0, "{variant:?} read stale pages");
        assert!(r.direct_writes > 0);
        if variant == Variant::RwLock {
            assert_eq!(r.max_dio_in_flight, 1, "the write side is exclusive");
        }
    }
}

#[test]
fn two_state_variants_run_direct_writes_to_one_file_side_by_side() {
    for tasks in ENGINES {
        for variant in [Variant::TwoState, Variant::TwoStateRange] {
            let r = run(variant, tasks);
            assert!(r.max_dio_in_flight > 1, "{r:?}");
            // With fault_in, sources mapped from the written file complete, and
            // no write cycles more often than it has pages (at most 4 here).
            assert_eq!(r.bad_address, 0, "{r:?}");
            assert!(r.max_cycles_per_write <= 4, "{r:?}");
            assert_eq!(r.deadlocked_threads, 0);
        }
    }
}

#[test]
fn invalidate_twice_serves_stale_pages() {
    for tasks in ENGINES {
        let r = run(Variant::InvalidateTwice, tasks);
        assert!(
            r.stale_reads > 0,
            "the detector caught nothing ({}): {r:?}",
            engine_name(tasks)
        );
    }
}

#[test]
fn same_file_source_is_a_bad_address_only_with_the_seed_protocol() {
    let dir = TempDir::new(&std::env::temp_dir()).unwrap();
    for faults in [FaultProtocol::Total, FaultProtocol::Seed] {
        let cfg = Config {
            faults,
            ..workload().engine
        };
        for variant in Variant::ALL {
            let e = Engine::create(dir.path(), variant, cfg.clone()).unwrap();
            let same = Source::Mapped { file: 0, first: 16 };
            let r = e.direct_write(0, 0, 2, same, 2);
            match (variant, faults) {
                (Variant::TwoState, FaultProtocol::Seed) => {
                    assert!(matches!(r, Err(OpError::BadAddress)))
                }
                _ => assert!(r.is_ok(), "{variant:?} {faults:?}: {r:?}"),
            }
            // With a lock per page, the seed's protocol refuses only a
            // source page inside the written range.
            let overlapping = Source::Mapped { file: 0, first: 1 };
            let r = e.direct_write(0, 0, 2, overlapping, 2);
            match (variant, faults) {
                (Variant::TwoState | Variant::TwoStateRange, FaultProtocol::Seed) => {
                    assert!(matches!(r, Err(OpError::BadAddress)), "{variant:?}: {r:?}")
                }
                _ => assert!(r.is_ok(), "{variant:?} {faults:?}: {r:?}"),
            }
            // A source mapped from the other file works everywhere.
            e.direct_write(0, 0, 2, Source::Mapped { file: 1, first: 0 }, 3)
                .unwrap();
            assert_eq!(e.read(0, 1).unwrap(), Some(3));
            assert_eq!(e.direct_read(0, 0, 2).unwrap(), vec![Some(3), Some(3)]);
            e.write(0, 1, 4).unwrap();
            assert_eq!(
                e.direct_read(0, 0, 2).unwrap(),
                vec![Some(3), Some(4)],
                "dirty page written back first"
            );
            e.punch_hole(0, 0, 1, 5).unwrap();
            assert_eq!(e.read(0, 0).unwrap(), Some(0));
            assert_eq!(
                e.stats
                    .stale_reads
                    .load(std::sync::atomic::Ordering::Relaxed),
                0
            );
        }
    }
}

/// In the style of xfstests generic/647 and generic/729: direct writes whose
/// source buffer is mapped from the file being written, over a disjoint
/// range, an overlapping range, and the destination page itself. Each
/// completes; afterwards a buffered read (through the cache, which the
/// faults filled) and a direct read (from the file) return the new data.
#[test]
fn direct_writes_from_a_buffer_mapped_from_the_same_file_complete() {
    for (variant, tasks) in Variant::ALL
        .into_iter()
        .flat_map(|v| ENGINES.map(|t| (v, t)))
    {
        let dir = TempDir::new(&std::env::temp_dir()).unwrap();
        let e = under(dir.path(), variant, workload().engine, tasks);
        let cases = [
            ("disjoint", 0, 4, 32),    // write 0..4 from 32..36
            ("overlapping", 8, 4, 10), // write 8..12 from 10..14
            ("same page", 20, 1, 20),  // generic/729: a page onto itself
            ("same range", 24, 4, 24),
        ];
        let mut version = 10;
        for (what, first, n, from) in cases {
            version += 1;
            // Warm the source pages into the cache, as a mapping would be.
            for p in from..from + n {
                e.read(0, p).unwrap();
            }
            let source = Source::Mapped {
                file: 0,
                first: from,
            };
            e.direct_write(0, first, n, source, version)
                .unwrap_or_else(|err| panic!("{variant:?} {what}: {err}"));
            for p in first..first + n {
                assert_eq!(
                    e.read(0, p).unwrap(),
                    Some(version),
                    "{variant:?} {what}: buffered read of {p}"
                );
            }
            let direct = e.direct_read(0, first, n).unwrap();
            assert!(
                direct.iter().all(|v| *v == Some(version)),
                "{variant:?} {what}: direct read {direct:?}"
            );
        }
        let s = e.stats();
        assert_eq!(
            s.stale_reads.load(Relaxed),
            0,
            "{variant:?} on {}",
            engine_name(tasks)
        );
        assert_eq!(s.bad_address.load(Relaxed), 0);
    }
}

/// Direct reads share the `Block` phase with hole punches and with each
/// other's write-backs: a read may see a punch before it is published, and a
/// punch must not let an in-flight write-back land over its hole. Both once
/// showed up as stale reads in `two-state` only (the reader/writer lock never
/// runs two `Block` operations at once). A buffered write refills the hole
/// each time, and a buffered reader adds the page back between punches.
#[test]
fn hole_punches_racing_direct_reads_stay_coherent() {
    for (variant, tasks) in LOCKED.into_iter().flat_map(|v| ENGINES.map(|t| (v, t))) {
        let dir = TempDir::new(&std::env::temp_dir()).unwrap();
        let cfg = Config {
            files: 1,
            pages: 8,
            read_window: Duration::ZERO,
            io_delay: Duration::ZERO,
            faults: FaultProtocol::Total,
        };
        let e = under(dir.path(), variant, cfg, tasks);
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        let (mut punches, mut reads) = (0, 0);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut version = 1;
                while std::time::Instant::now() < deadline {
                    version += 2;
                    e.write(0, 3, version).unwrap();
                    e.punch_hole(0, 3, 1, version + 1).unwrap();
                    punches += 1;
                }
            });
            s.spawn(|| {
                while std::time::Instant::now() < deadline {
                    e.read(0, 3).unwrap();
                }
            });
            s.spawn(|| {
                while std::time::Instant::now() < deadline {
                    e.direct_read(0, 0, 8).unwrap();
                }
            });
            while std::time::Instant::now() < deadline {
                e.direct_read(0, 2, 3).unwrap();
                reads += 1;
            }
        });
        let stale = e.stats().stale_reads.load(Relaxed);
        let on = engine_name(tasks);
        println!("{variant:?} on {on}: {punches} punches, {reads}+ direct reads, {stale} stale");
        assert!(punches > 0 && reads > 0);
        assert_eq!(stale, 0, "{variant:?} on {on}");
    }
}

/// In the style of xfstests generic/133: buffered and direct readers and
/// writers on one file at once. No deadlock, no stale read, and at the end
/// every page holds its last version, on disk (a direct read) and in the
/// cache (a buffered read). (With `InvalidateTwice` in `LOCKED`, this test
/// and the one above fail on stale reads.)
#[test]
fn buffered_and_direct_readers_and_writers_on_one_file() {
    const PAGES: u64 = 64;
    const WRITERS: u64 = 4;
    for (variant, tasks) in LOCKED.into_iter().flat_map(|v| ENGINES.map(|t| (v, t))) {
        let dir = TempDir::new(&std::env::temp_dir()).unwrap();
        let cfg = Config {
            files: 1,
            pages: PAGES,
            read_window: Duration::from_micros(50),
            io_delay: Duration::ZERO,
            faults: FaultProtocol::Total,
        };
        let e = under(dir.path(), variant, cfg, tasks);
        let deadline = std::time::Instant::now() + Duration::from_millis(1500);
        let last: Vec<Vec<u64>> = std::thread::scope(|s| {
            // Readers: buffered and direct, anywhere in the file.
            for id in 0..4u64 {
                let e = &e;
                s.spawn(move || {
                    let mut rng = fastrand::Rng::with_seed(id);
                    while std::time::Instant::now() < deadline {
                        if id % 2 == 0 {
                            e.read(0, rng.u64(..PAGES)).unwrap();
                        } else {
                            e.direct_read(0, rng.u64(..PAGES - 4), 4).unwrap();
                        }
                    }
                });
            }
            // Writers: each owns the pages p with p % WRITERS == id, and
            // writes them buffered, direct, or direct from a buffer mapped
            // from the same file.
            let writers: Vec<_> = (0..WRITERS)
                .map(|id| {
                    let e = &e;
                    s.spawn(move || {
                        let mut rng = fastrand::Rng::with_seed(100 + id);
                        let mut last = vec![1u64; PAGES as usize];
                        let mut version = 1;
                        while std::time::Instant::now() < deadline {
                            version += 1;
                            let page = rng.u64(..PAGES / WRITERS) * WRITERS + id;
                            let mapped = Source::Mapped {
                                file: 0,
                                first: rng.u64(..PAGES),
                            };
                            match rng.u8(..3) {
                                0 => e.write(0, page, version).unwrap(),
                                1 => e.direct_write(0, page, 1, Source::Memory, version).unwrap(),
                                _ => e.direct_write(0, page, 1, mapped, version).unwrap(),
                            }
                            last[page as usize] = version;
                        }
                        last
                    })
                })
                .collect();
            writers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let expected: Vec<Option<u64>> = (0..PAGES)
            .map(|p| Some(last[(p % WRITERS) as usize][p as usize]))
            .collect();
        let on_disk = e.direct_read(0, 0, PAGES).unwrap();
        let on = engine_name(tasks);
        assert_eq!(on_disk, expected, "{variant:?} on {on}: on disk");
        let cached: Vec<Option<u64>> = (0..PAGES).map(|p| e.read(0, p).unwrap()).collect();
        assert_eq!(cached, expected, "{variant:?} on {on}: in the cache");
        let s = e.stats();
        assert_eq!(s.stale_reads.load(Relaxed), 0, "{variant:?} on {on}");
        println!(
            "{variant:?} on {on}: {} direct writes, {} buffered writes, {} reads",
            s.direct_writes.load(Relaxed),
            s.buffered_writes.load(Relaxed),
            s.buffered_reads.load(Relaxed) + s.direct_reads.load(Relaxed)
        );
    }
}

/// In the style of xfstests generic/418: several owners of interleaved pages
/// of one file, each mixing direct and buffered writes and reads of its own
/// pages and checking, after each write, that both a buffered read and a
/// direct read return what it wrote, while buffered readers of every page
/// race them. (`InvalidateTwice` fails it: a page a racing reader cached
/// during an owner's direct write is what the owner reads back.)
#[test]
fn owners_of_interleaved_pages_mixing_direct_and_buffered_io_read_their_own_data() {
    const PAGES: u64 = 32;
    const OWNERS: u64 = 4;
    for (variant, tasks) in LOCKED.into_iter().flat_map(|v| ENGINES.map(|t| (v, t))) {
        let dir = TempDir::new(&std::env::temp_dir()).unwrap();
        let cfg = Config {
            files: 1,
            pages: PAGES,
            read_window: Duration::from_micros(20),
            io_delay: Duration::ZERO,
            faults: FaultProtocol::Total,
        };
        let e = under(dir.path(), variant, cfg, tasks);
        let on = engine_name(tasks);
        let deadline = std::time::Instant::now() + Duration::from_millis(1000);
        let checked: u64 = std::thread::scope(|s| {
            // Buffered readers of every page, racing the owners' direct
            // writes (the stale-read detector checks what they read).
            for id in 0..2 {
                let e = &e;
                s.spawn(move || {
                    let mut rng = fastrand::Rng::with_seed(500 + id);
                    while std::time::Instant::now() < deadline {
                        e.read(0, rng.u64(..PAGES)).unwrap();
                    }
                });
            }
            let owners: Vec<_> = (0..OWNERS)
                .map(|id| {
                    let e = &e;
                    s.spawn(move || {
                        let mut rng = fastrand::Rng::with_seed(400 + id);
                        let (mut version, mut checked) = (1, 0);
                        while std::time::Instant::now() < deadline {
                            version += 1;
                            // One page, or a run of this owner's pages is
                            // not contiguous: one page at a time.
                            let page = rng.u64(..PAGES / OWNERS) * OWNERS + id;
                            if rng.bool() {
                                e.write(0, page, version).unwrap();
                            } else {
                                e.direct_write(0, page, 1, Source::Memory, version).unwrap();
                            }
                            assert_eq!(
                                e.read(0, page).unwrap(),
                                Some(version),
                                "{variant:?} on {on}: buffered"
                            );
                            assert_eq!(
                                e.direct_read(0, page, 1).unwrap(),
                                vec![Some(version)],
                                "{variant:?} on {on}: direct"
                            );
                            checked += 1;
                        }
                        checked
                    })
                })
                .collect();
            owners.into_iter().map(|o| o.join().unwrap()).sum()
        });
        println!("{variant:?} on {on}: {checked} writes read back both ways");
        assert!(checked > 0);
        assert_eq!(
            e.stats().stale_reads.load(Relaxed),
            0,
            "{variant:?} on {on}"
        );
    }
}
