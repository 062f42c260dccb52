//! Ranges over a `LockTable`: direct writes, buffered reads and a truncate
//! of several files, on threads, with one fixed table of locks for all.
//!
//! Direct writes take `Block` on the stripes they write, buffered reads
//! `Add` on the stripe of the page they add, and a truncate `Block` on the
//! whole file (`0..u64::MAX`, which takes the whole table). Direct writes
//! to different parts of one file, and reads of parts no write touches, run
//! side by side; the program reports how many direct writes to one file
//! were in flight at once, and checks that no read ever saw a page being
//! written.
//!
//! cargo run --release --example ranges

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering::SeqCst};
use std::thread;
use std::time::Duration;

use two_state_lock::{Class, LockTable};

const FILES: u64 = 4;
/// Pages a file, one stripe a page.
const PAGES: u64 = 256;

fn main() {
    let table = LockTable::new(1024); // 16 KiB, for every file
    // Per page: > 0 while a direct write holds it, < 0 while a read adds it.
    let pages: Vec<AtomicI64> = (0..FILES * PAGES).map(|_| AtomicI64::new(0)).collect();
    let page = |file: u64, p: u64| &pages[(file * PAGES + p) as usize];
    let in_flight: Vec<AtomicUsize> = (0..FILES).map(|_| AtomicUsize::new(0)).collect();
    let most_in_flight = AtomicUsize::new(0);
    let truncates = AtomicUsize::new(0);
    thread::scope(|s| {
        for w in 0..4u64 {
            let (table, in_flight, most_in_flight) = (&table, &in_flight, &most_in_flight);
            s.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(w);
                for _ in 0..300 {
                    let (file, first, len) = (rng.u64(0..2), rng.u64(0..PAGES - 8), rng.u64(1..=8));
                    let dio = table.lock_range(file, first..first + len, Class::Block);
                    let now = in_flight[file as usize].fetch_add(1, SeqCst) + 1;
                    most_in_flight.fetch_max(now, SeqCst);
                    for p in first..first + len {
                        assert!(
                            page(file, p).fetch_add(1, SeqCst) >= 0,
                            "a read is adding it"
                        );
                    }
                    thread::sleep(Duration::from_micros(100)); // the I/O
                    for p in first..first + len {
                        page(file, p).fetch_sub(1, SeqCst);
                    }
                    in_flight[file as usize].fetch_sub(1, SeqCst);
                    drop(dio);
                }
            });
        }
        for r in 0..4u64 {
            let table = &table;
            s.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(100 + r);
                for _ in 0..3000 {
                    let (file, p) = (rng.u64(0..FILES), rng.u64(0..PAGES));
                    let add = table.lock_range(file, p..p + 1, Class::Add);
                    assert!(page(file, p).fetch_sub(1, SeqCst) <= 0, "a write holds it");
                    page(file, p).fetch_add(1, SeqCst);
                    drop(add);
                }
            });
        }
        let (table, truncates) = (&table, &truncates);
        s.spawn(move || {
            for i in 0..20 {
                let file = i % FILES;
                let truncate = table.lock_range(file, 0..u64::MAX, Class::Block);
                assert_eq!(truncate.lock_count(), table.size());
                for p in 0..PAGES {
                    assert!(page(file, p).load(SeqCst) >= 0, "a read is adding it");
                }
                truncates.fetch_add(1, SeqCst);
                drop(truncate);
                thread::sleep(Duration::from_millis(2));
            }
        });
    });
    println!(
        "1200 direct writes to 2 files, up to {} in flight on one file at once; 12000 buffered page additions; {} whole-file truncates; no page was added while a write held it",
        most_in_flight.load(SeqCst),
        truncates.load(SeqCst),
    );
    assert!(pages.iter().all(|p| p.load(SeqCst) == 0));
}
