//! Lock validation (SPEC §10): reports a self-deadlock, and a lock-order
//! inversion when it first becomes possible, by panicking before the
//! acquisition that would hang (or could, on another day).
//!
//! On (`cfg(validate)`, set by `build.rs`) in builds with debug assertions
//! and with the `validate` feature; off, every function here is an empty
//! `#[inline(always)]` one and `Site` is a zero-sized type, so the lock's
//! paths are what they are without it.
//!
//! What is recorded: this thread's holds (through `Guard`s and
//! `RangeGuard`s: an `ArcGuard` may be released on another thread, so it is
//! not this thread's), each with the place it was taken; and, once per
//! pair, every "held X in class h while taking Y in class w" of a blocking
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
//! `lock_nested` (for holders of locks this crate cannot see), the fault
//! protocol's own acquisitions (they handle order themselves) and `lock_arc`
//! holds. A lock that is dropped takes its pairs with it, so a new lock at
//! the same address starts clean. A lock *moved* after it was used keeps
//! its history at the old address, until a lock there is dropped.
//!
//! Bounds: a thread's first 64 holds are tracked (more are not, with one
//! warning); ranges of more than 16 locks are not tracked; the graph keeps
//! up to 65536 pairs (then stops learning, with one warning). Cost, on: a
//! thread-local push and pop per acquisition; per blocking acquisition while
//! holding others, a thread-local hash lookup per lock held (the first time
//! a pair is seen: the global graph, under a mutex, and a search of it).

#[cfg(validate)]
pub(crate) use on::*;

#[cfg(not(validate))]
pub(crate) use off::*;

#[cfg(not(validate))]
mod off {
    use crate::raw::{Class, RawLock};

    /// Where an acquisition was asked for: nothing, with validation off.
    #[derive(Clone, Copy)]
    pub(crate) struct Site;

    impl Site {
        #[inline(always)]
        pub(crate) fn caller() -> Site {
            Site
        }
    }

    /// This thread's record of a hold: nothing, with validation off.
    #[derive(Clone, Copy)]
    pub(crate) struct Record;

    impl Record {
        pub(crate) const NONE: Record = Record;
        #[inline(always)]
        pub(crate) fn nth(self, _: usize) -> Record {
            Record
        }
    }

    #[inline(always)]
    pub(crate) fn tracks_range(_: u32) -> bool {
        false
    }
    #[inline(always)]
    pub(crate) fn before_blocking(_: &RawLock, _: Class, _: Site, _: bool) {}
    #[inline(always)]
    pub(crate) fn acquired(_: &RawLock, _: Class, _: Site) -> Record {
        Record
    }
    #[inline(always)]
    pub(crate) fn released(_: Record) {}
    #[inline(always)]
    pub(crate) fn cycle_released(_: Record) {}
    #[inline(always)]
    pub(crate) fn cycle_retaken(_: Record) {}
}

#[cfg(validate)]
mod on {
    use std::cell::RefCell;
    use std::collections::{HashMap, HashSet, VecDeque};
    use std::fmt::Write;
    use std::panic::Location;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};

    use crate::raw::{Class, RawLock};

    /// The most holds tracked per thread.
    const MAX_HELD: usize = 64;
    /// The most locks of one range tracked (a larger range is not).
    const MAX_RANGE: u32 = 16;
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
        fn new(lock: &RawLock, class: Class) -> Node {
            Node {
                lock: lock as *const RawLock as usize,
                class,
            }
        }
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

    /// This thread's record of one hold: the guard (or scope) that holds
    /// it knows its number. 0: not recorded.
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub(crate) struct Record(u64);

    impl Record {
        pub(crate) const NONE: Record = Record(0);

        /// The record `n` after this one (a range's locks are recorded one
        /// after another).
        #[inline]
        pub(crate) fn nth(self, n: usize) -> Record {
            if self == Record::NONE {
                self
            } else {
                Record(self.0 + n as u64)
            }
        }
    }

    /// One hold of this thread.
    struct Held {
        record: Record,
        node: Node,
        site: Site,
        /// Released for the moment by a fault cycle.
        suspended: bool,
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

    /// Whether the holds of a range of `locks` locks are tracked: a range of
    /// up to 16, when this thread's list has room for all of them (so that
    /// their records follow each other).
    #[inline]
    pub(crate) fn tracks_range(locks: u32) -> bool {
        locks <= MAX_RANGE && HELD.with(|h| h.borrow().len() + locks as usize <= MAX_HELD)
    }

    /// Checks a blocking acquisition of `lock` in `class` before it waits:
    /// panics if this thread holds `lock` in the other class (it would wait
    /// for itself), or, when `order` counts, if a pair "held X, took `lock`"
    /// closes a possible deadlock with what any thread did before.
    pub(crate) fn before_blocking(lock: &RawLock, class: Class, site: Site, order: bool) {
        let target = Node::new(lock, class);
        // `learn` does not touch `HELD`, so the list stays borrowed (and a
        // panic releases the borrow as it unwinds).
        HELD.with(|h| {
            let h = h.borrow();
            let live = || h.iter().filter(|h| !h.suspended);
            if let Some(hold) = live().find(|h| h.node == target.other()) {
                let (node, at) = (hold.node, hold.site);
                panic!(
                    "two-state-lock: self-deadlock: this thread takes {target} at {site} but holds {node} (taken at {at}); it would wait for itself forever"
                );
            }
            if !order || live().any(|h| h.node == target) {
                // Not counted, or a re-entry in a class this thread holds,
                // which never waits.
                return;
            }
            for hold in live().filter(|h| h.node.lock != target.lock) {
                learn(hold.node, hold.site, target, site);
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

    /// This thread now holds `lock` in `class`, taken at `site`. Returns the
    /// record, for the guard to release it by (`NONE` when not tracked).
    pub(crate) fn acquired(lock: &RawLock, class: Class, site: Site) -> Record {
        HELD.with(|h| {
            let mut h = h.borrow_mut();
            if h.len() < MAX_HELD {
                let record = Record(NEXT.with(|n| n.replace(n.get() + 1)));
                h.push(Held {
                    record,
                    node: Node::new(lock, class),
                    site,
                    suspended: false,
                });
                record
            } else {
                if !HELD_FULL.swap(true, Relaxed) {
                    eprintln!(
                        "two-state-lock: a thread holds more than {MAX_HELD} locks; lock validation does not track the rest"
                    );
                }
                Record::NONE
            }
        })
    }

    /// Calls `f` on this thread's hold recorded as `record`, if tracked.
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

    /// This thread released the hold recorded as `record`.
    pub(crate) fn released(record: Record) {
        with_record(record, |h, i| {
            h.remove(i);
        });
    }

    /// A fault cycle released the hold recorded as `record` for the moment.
    pub(crate) fn cycle_released(record: Record) {
        with_record(record, |h, i| h[i].suspended = true);
    }

    /// A fault cycle took it back.
    pub(crate) fn cycle_retaken(record: Record) {
        with_record(record, |h, i| h[i].suspended = false);
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
