//! Lock validation (SPEC §10): reports a self-deadlock, and a lock-order
//! inversion when it first becomes possible, by panicking before the
//! acquisition that would hang (or could, on another day).
//!
//! On (`cfg(validate)`, set by `build.rs`) in builds with debug assertions
//! and with the `validate` feature; off, every function here is an empty
//! `#[inline(always)]` one and `Site` is a zero-sized type, so the lock's
//! paths are what they are without it.
//!
//! What is recorded: this thread's holds, one entry per guard (`Guard`,
//! `RangeGuard`: an `ArcGuard` may be released on another thread, so it is
//! not this thread's), each a set of locks (one, or a range's at most two
//! runs of addresses) with the place it was taken; and, once per pair,
//! every "held X in class h while taking Y in class w" of a blocking
//! acquisition, in one graph for all threads. Nodes are (lock, class), not
//! locks: this lock's nested acquisitions wait only while the *other* class
//! holds (SPEC §3.1.3), so a thread blocked taking Y in w waits for a thread
//! holding Y in the other class. A new pair closes a possible deadlock when,
//! from (Y, not w), following "held then took" pairs (each time switching
//! to the other class of the lock taken) leads back to (X, h). Two adders
//! crossing two files (X then Y, Y then X, both `Add`) cannot deadlock and
//! are not reported; an adder X then Y against a blocker Y then X is.
//!
//! Not counted: `try_lock` (it never waits; its hold still counts as held),
//! `lock_nested` (for holders of locks this crate cannot see), timed
//! acquisitions (they cannot wait forever; a self-deadlock is still
//! reported) and `lock_arc` holds. Counted: the fault protocol's blocking
//! acquisitions, in lock order (the "all order before L" row, deadlock-free
//! only if every thread takes locks in address order) and in a cycle,
//! against what the thread still holds while it waits (a cycle's released
//! holds are marked so and not held). A
//! lock that is dropped takes its pairs with it, so a new lock at the same
//! address starts clean. A lock *moved* after it was used keeps its history
//! at the old address, until a lock there is dropped.
//!
//! Bounds: a thread's first 64 guards are tracked (more are not, with one
//! warning). A self-deadlock through a range of any length is reported (a
//! set is two runs, so the check is a few comparisons per guard held), but
//! the orders of ranges of more than 16 locks are not learned (one
//! warning). The graph keeps up to 65536 pairs (then stops learning, with
//! one warning). Cost, on: a thread-local push and pop per guard; per
//! blocking acquisition while holding others, a thread-local hash lookup
//! per pair of locks (the first time a pair is seen: the global graph,
//! under a mutex, and a search of it).

#[cfg(validate)]
pub(crate) use on::*;

#[cfg(not(validate))]
pub(crate) use off::*;

#[cfg(not(validate))]
mod off {
    use crate::lockset::LockSet;
    use crate::raw::Class;

    /// Where an acquisition was asked for: nothing, with validation off.
    #[derive(Clone, Copy)]
    pub(crate) struct Site;

    impl Site {
        #[inline(always)]
        pub(crate) fn caller() -> Site {
            Site
        }
    }

    /// This thread's record of a guard's holds: nothing, with validation
    /// off.
    #[derive(Clone, Copy)]
    pub(crate) struct Record;

    impl Record {
        pub(crate) const NONE: Record = Record;
    }

    #[inline(always)]
    pub(crate) fn before_blocking(_: LockSet<'_>, _: Class, _: Site, _: bool) {}
    #[inline(always)]
    pub(crate) fn acquired(_: LockSet<'_>, _: Class, _: Site) -> Record {
        Record
    }
    #[inline(always)]
    pub(crate) fn released(_: Record) {}
    #[inline(always)]
    pub(crate) fn cycle_released(_: Record, _: usize) {}
    #[inline(always)]
    pub(crate) fn cycle_retaken(_: Record, _: usize) {}
}

#[cfg(validate)]
mod on {
    use std::cell::RefCell;
    use std::collections::{HashMap, HashSet, VecDeque};
    use std::fmt::Write;
    use std::panic::Location;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};

    use crate::lockset::{LockAddrs, LockSet};
    use crate::raw::{Class, RawLock};

    /// The most guards tracked per thread.
    const MAX_HELD: usize = 64;
    /// The most locks of one guard whose orders are learned (a larger
    /// range's self-deadlocks are still reported).
    const MAX_ORDERED: usize = 16;
    /// The most "held then took" pairs the graph keeps.
    const MAX_PAIRS: usize = 1 << 16;
    /// The most pairs a thread remembers having seen (then it forgets them
    /// all and asks the graph again).
    const MAX_KNOWN: usize = 4096;

    /// Where an acquisition was asked for.
    #[derive(Clone, Copy)]
    pub(crate) struct Site(&'static Location<'static>);

    impl Site {
        #[track_caller]
        #[inline(always)]
        pub(crate) fn caller() -> Site {
            Site(Location::caller())
        }
    }

    impl std::fmt::Display for Site {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}", self.0)
        }
    }

    /// A lock in one class: a node of the graph.
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
    struct Node {
        lock: usize,
        class: Class,
    }

    impl Node {
        fn other(self) -> Node {
            Node {
                lock: self.lock,
                class: self.class.other(),
            }
        }
    }

    impl std::fmt::Display for Node {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "lock {:#x} in {:?}", self.lock, self.class)
        }
    }

    /// This thread's record of one guard's holds: the guard (or scope)
    /// that holds them knows its number. 0: not recorded.
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub(crate) struct Record(u64);

    impl Record {
        pub(crate) const NONE: Record = Record(0);
    }

    /// One guard's holds, on this thread.
    struct Held {
        record: Record,
        locks: LockAddrs,
        class: Class,
        site: Site,
        /// Positions `live..` are released for the moment by a fault cycle
        /// (always a suffix).
        live: usize,
    }

    impl Held {
        /// The locks held now.
        fn live(&self) -> LockAddrs {
            self.locks.prefix(self.live)
        }
    }

    /// "A thread held `from` (taken at `held_at`) while it took `to` (at
    /// `taken_at`)".
    struct Pair {
        to: Node,
        held_at: Site,
        taken_at: Site,
        thread: String,
    }

    #[derive(Default)]
    struct Graph {
        out: HashMap<Node, Vec<Pair>>,
        /// For each lock, the nodes with pairs into or out of it.
        touching: HashMap<usize, HashSet<Node>>,
        pairs: usize,
    }

    static GRAPH: Mutex<Option<Graph>> = Mutex::new(None);
    /// Pairs in the graph, read without the mutex.
    static PAIRS: AtomicUsize = AtomicUsize::new(0);
    /// Bumped whenever pairs leave the graph, so that threads forget the
    /// pairs they have seen.
    static EPOCH: AtomicU64 = AtomicU64::new(0);
    static GRAPH_FULL: AtomicBool = AtomicBool::new(false);
    static HELD_FULL: AtomicBool = AtomicBool::new(false);
    static LONG_RANGE: AtomicBool = AtomicBool::new(false);

    thread_local! {
        static HELD: RefCell<Vec<Held>> = const { RefCell::new(Vec::new()) };
        /// The number of the next record (0 is "none").
        static NEXT: std::cell::Cell<u64> = const { std::cell::Cell::new(1) };
        static KNOWN: RefCell<(u64, HashSet<(Node, Node)>)> = RefCell::new((0, HashSet::new()));
    }

    fn graph() -> std::sync::MutexGuard<'static, Option<Graph>> {
        GRAPH.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn thread_name() -> String {
        let t = std::thread::current();
        match t.name() {
            Some(name) => format!("thread '{name}'"),
            None => format!("thread {:?}", t.id()),
        }
    }

    /// Warns, once per process, that the orders of a long range are not
    /// learned.
    fn long_range() {
        if !LONG_RANGE.swap(true, Relaxed) {
            eprintln!(
                "two-state-lock: lock validation does not learn the lock orders of ranges of more than {MAX_ORDERED} locks; self-deadlocks through them are still reported"
            );
        }
    }

    /// Checks a blocking acquisition of `locks` (one lock, or a range taken
    /// in ascending order) in `class` before it waits: panics if this
    /// thread holds one of them in the other class (it would wait for
    /// itself), or, when `order` counts, if a pair "held X, took one of
    /// them" closes a possible deadlock with what any thread did before.
    pub(crate) fn before_blocking(locks: LockSet<'_>, class: Class, site: Site, order: bool) {
        let target = locks.addrs();
        // `learn` does not touch `HELD`, so the list stays borrowed (and a
        // panic releases the borrow as it unwinds).
        HELD.with(|h| {
            let h = h.borrow();
            for hold in h.iter().filter(|h| h.class != class) {
                if let Some(lock) = hold.live().first_shared(&target) {
                    let (taking, node, at) = (Node { lock, class }, Node { lock, class: hold.class }, hold.site);
                    panic!(
                        "two-state-lock: self-deadlock: this thread takes {taking} at {site} but holds {node} (taken at {at}); it would wait for itself forever"
                    );
                }
            }
            if !order {
                return;
            }
            if target.len() > MAX_ORDERED {
                long_range();
                return;
            }
            for (position, lock) in target.iter().enumerate() {
                let to = Node { lock, class };
                if h.iter().any(|h| h.class == class && h.live().contains(lock)) {
                    // A re-entry in a class this thread holds never waits.
                    continue;
                }
                for hold in h.iter() {
                    let held = hold.live();
                    if held.len() > MAX_ORDERED {
                        long_range();
                        continue;
                    }
                    for from in held.iter().filter(|&from| from != lock) {
                        learn(Node { lock: from, class: hold.class }, hold.site, to, site);
                    }
                }
                // The range's own locks before this one, held by now.
                for from in target.iter().take(position) {
                    learn(Node { lock: from, class }, site, to, site);
                }
            }
        });
    }

    /// Records the pair `from` -> `to` unless known; panics if it closes a
    /// possible deadlock.
    fn learn(from: Node, held_at: Site, to: Node, taken_at: Site) {
        let epoch = EPOCH.load(Relaxed);
        let known = KNOWN.with(|k| {
            let mut k = k.borrow_mut();
            if k.0 != epoch || k.1.len() >= MAX_KNOWN {
                *k = (epoch, HashSet::new());
            }
            k.1.contains(&(from, to))
        });
        if known {
            return;
        }
        let mut guard = graph();
        let g = guard.get_or_insert_with(Graph::default);
        let exists = g
            .out
            .get(&from)
            .is_some_and(|pairs| pairs.iter().any(|p| p.to == to));
        if !exists {
            if let Some(report) = deadlock_report(g, from, held_at, to, taken_at) {
                drop(guard);
                panic!("{report}");
            }
            if g.pairs >= MAX_PAIRS {
                if !GRAPH_FULL.swap(true, Relaxed) {
                    eprintln!(
                        "two-state-lock: lock validation has recorded {MAX_PAIRS} lock orders; new orders are no longer checked"
                    );
                }
                return;
            }
            g.out.entry(from).or_default().push(Pair {
                to,
                held_at,
                taken_at,
                thread: thread_name(),
            });
            for node in [from, to] {
                g.touching.entry(node.lock).or_default().insert(from);
            }
            g.pairs += 1;
            PAIRS.store(g.pairs, Relaxed);
        }
        drop(guard);
        KNOWN.with(|k| k.borrow_mut().1.insert((from, to)));
    }

    /// If the new pair `from` -> `to` closes a cycle of waits, the report.
    fn deadlock_report(
        g: &Graph,
        from: Node,
        held_at: Site,
        to: Node,
        taken_at: Site,
    ) -> Option<String> {
        // A thread taking `to` waits for one holding `to.other()`, which
        // may be waiting for the next lock it took while holding it, and so
        // on: a search from `to.other()`, reaching `from` closes the cycle.
        let start = to.other();
        let mut parent: HashMap<Node, (Node, &Pair)> = HashMap::new();
        let mut queue = VecDeque::from([start]);
        let mut seen = HashSet::from([start]);
        while let Some(node) = queue.pop_front() {
            for pair in g.out.get(&node).into_iter().flatten() {
                let next = pair.to.other();
                if !seen.insert(next) {
                    continue;
                }
                parent.insert(next, (node, pair));
                if next == from {
                    return Some(report(&parent, start, from, held_at, to, taken_at));
                }
                queue.push_back(next);
            }
        }
        None
    }

    fn report(
        parent: &HashMap<Node, (Node, &Pair)>,
        start: Node,
        from: Node,
        held_at: Site,
        to: Node,
        taken_at: Site,
    ) -> String {
        let mut chain = Vec::new();
        let mut node = from;
        while node != start {
            let (prev, pair) = parent[&node];
            chain.push((prev, pair));
            node = prev;
        }
        chain.reverse();
        let mut out = String::from("two-state-lock: possible deadlock (lock order inversion)\n");
        let _ = writeln!(
            out,
            "  {} holds {from} (taken at {held_at})\n    and takes {to} at {taken_at};",
            thread_name()
        );
        for (held, pair) in chain {
            let _ = writeln!(
                out,
                "  earlier, {} held {held} (taken at {})\n    and took {} at {};",
                pair.thread, pair.held_at, pair.to, pair.taken_at
            );
        }
        out.push_str(
            "  threads doing these at once would each wait for the next (a blocked taker of a lock waits for its holders in the other class).",
        );
        out
    }

    /// This thread now holds `locks` in `class`, taken at `site`, through
    /// one guard. Returns the record, for the guard to release it by (`NONE`
    /// when not tracked).
    pub(crate) fn acquired(locks: LockSet<'_>, class: Class, site: Site) -> Record {
        HELD.with(|h| {
            let mut h = h.borrow_mut();
            if h.len() < MAX_HELD {
                let record = Record(NEXT.with(|n| n.replace(n.get() + 1)));
                h.push(Held {
                    record,
                    locks: locks.addrs(),
                    class,
                    site,
                    live: locks.len(),
                });
                record
            } else {
                if !HELD_FULL.swap(true, Relaxed) {
                    eprintln!(
                        "two-state-lock: a thread holds more than {MAX_HELD} guards; lock validation does not track the rest"
                    );
                }
                Record::NONE
            }
        })
    }

    /// Calls `f` on this thread's holds recorded as `record`, if tracked.
    fn with_record(record: Record, f: impl FnOnce(&mut Vec<Held>, usize)) {
        if record == Record::NONE {
            return;
        }
        HELD.with(|h| {
            let mut h = h.borrow_mut();
            if let Some(i) = h.iter().rposition(|h| h.record == record) {
                f(&mut h, i);
            }
        });
    }

    /// This thread released the holds recorded as `record`.
    pub(crate) fn released(record: Record) {
        with_record(record, |h, i| {
            h.remove(i);
        });
    }

    /// A fault cycle released positions `from..` of the holds recorded as
    /// `record`, for the moment.
    pub(crate) fn cycle_released(record: Record, from: usize) {
        with_record(record, |h, i| h[i].live = from);
    }

    /// A fault cycle took position `position` of them back.
    pub(crate) fn cycle_retaken(record: Record, position: usize) {
        with_record(record, |h, i| h[i].live = position + 1);
    }

    /// A lock is gone: its pairs go with it, so that a new lock at the same
    /// address starts with none.
    pub(crate) fn lock_dropped(lock: &RawLock) {
        if PAIRS.load(Relaxed) == 0 {
            return;
        }
        let addr = lock as *const RawLock as usize;
        let mut guard = graph();
        let Some(g) = guard.as_mut() else { return };
        let Some(nodes) = g.touching.remove(&addr) else {
            return;
        };
        for node in nodes {
            if node.lock == addr {
                let pairs = g.out.remove(&node).unwrap_or_default();
                g.pairs -= pairs.len();
                for pair in pairs {
                    if let Some(set) = g.touching.get_mut(&pair.to.lock) {
                        set.remove(&node);
                    }
                }
            } else if let Some(pairs) = g.out.get_mut(&node) {
                let before = pairs.len();
                pairs.retain(|p| p.to.lock != addr);
                g.pairs -= before - pairs.len();
            }
        }
        PAIRS.store(g.pairs, Relaxed);
        EPOCH.fetch_add(1, Relaxed);
    }
}
