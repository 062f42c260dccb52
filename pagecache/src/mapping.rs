//! One file of the engine (a "mapping"): the file, its page cache, and
//! write-back of dirty pages. Pages are added to the cache only under the
//! variant's `Add` (or read side); a hit takes no lock.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::Config;
use crate::page::{Block, PAGE, as_bytes};

pub(crate) struct CachedPage {
    pub(crate) data: Box<Block>,
    pub(crate) dirty: bool,
    /// A write-back of this page is in flight (outside the cache mutex).
    pub(crate) writing: bool,
    /// Bumped by every buffered write: a write-back only cleans the page if
    /// nothing was written since its snapshot.
    pub(crate) generation: u64,
}

impl CachedPage {
    fn clean(data: Box<Block>) -> Self {
        CachedPage {
            data,
            dirty: false,
            writing: false,
            generation: 0,
        }
    }
}

/// One file and its cache.
pub(crate) struct Mapping {
    pub(crate) index: usize,
    pub(crate) file: File,
    cache: Mutex<HashMap<u64, CachedPage>>,
    /// Signalled when a write-back completes.
    written_back: Condvar,
    /// Per page: `version << 1 | punched`, published when durable.
    pub(crate) published: Vec<AtomicU64>,
    /// Per page: the version of the latest hole punch begun.
    pub(crate) last_punch: Vec<AtomicU64>,
    /// Per page: bumped before and after every write to the file (odd while
    /// one is in flight), so a direct read can tell a torn page from a stale
    /// one.
    pub(crate) disk_writes: Vec<AtomicU64>,
    pub(crate) dio_in_flight: AtomicUsize,
    /// Extra latency of every access to the file.
    pub(crate) io_delay: Duration,
    /// Pause between reading a missing page and inserting it.
    read_window: Duration,
}

/// Creates the `cfg.files` files of an engine named `name` in `dir`; the
/// second value says whether all are open with `O_DIRECT`.
pub(crate) fn create_all(dir: &Path, name: &str, cfg: &Config) -> io::Result<(Vec<Mapping>, bool)> {
    let mut direct_io = true;
    let mut files = Vec::new();
    for index in 0..cfg.files {
        let path = dir.join(format!("{name}-{index}.dat"));
        let (mapping, direct) =
            Mapping::create(&path, index, cfg.pages, cfg.io_delay, cfg.read_window)?;
        direct_io &= direct;
        files.push(mapping);
    }
    Ok((files, direct_io))
}

impl Mapping {
    /// Creates file `index` of `pages` pages at `path`, every page stamped
    /// with version 1 and written (allocated) on disk, and opens it with
    /// `O_DIRECT`, or without if the file system refuses it (then the
    /// second value is `false`).
    fn create(
        path: &Path,
        index: usize,
        pages: u64,
        io_delay: Duration,
        read_window: Duration,
    ) -> io::Result<(Mapping, bool)> {
        let file = File::create(path)?;
        // A chunk at a time: memory stays small whatever the size.
        const CHUNK: u64 = 256;
        let mut chunk = Vec::with_capacity(CHUNK as usize);
        for start in (0..pages).step_by(CHUNK as usize) {
            chunk.clear();
            chunk.extend((start..pages.min(start + CHUNK)).map(|p| *Block::stamped(index, p, 1)));
            file.write_all_at(as_bytes(&chunk), start * PAGE as u64)?;
        }
        drop(file);
        let open = |flags| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(flags)
                .open(path)
        };
        let (file, direct_io) = match open(libc::O_DIRECT) {
            Ok(f) => (f, true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (open(0)?, false),
            Err(e) => return Err(e),
        };
        let per_page = |v: u64| (0..pages).map(|_| AtomicU64::new(v)).collect();
        let mapping = Mapping {
            index,
            file,
            cache: Mutex::new(HashMap::new()),
            written_back: Condvar::new(),
            published: per_page(1 << 1),
            last_punch: per_page(0),
            disk_writes: per_page(0),
            dio_in_flight: AtomicUsize::new(0),
            io_delay,
            read_window,
        };
        Ok((mapping, direct_io))
    }

    pub(crate) fn cache(&self) -> MutexGuard<'_, HashMap<u64, CachedPage>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The page if it is in the cache. Takes no lock: a page of a range
    /// under `Block` was evicted and cannot be re-added while it holds.
    pub(crate) fn cached(&self, page: u64) -> Option<Box<Block>> {
        self.cache().get(&page).map(|hit| hit.data.clone())
    }

    /// A miss: reads the page from the file and inserts it, unless it was
    /// added meanwhile. The caller covers the add (holds `Add` on the page).
    pub(crate) fn read_in(&self, page: u64) -> io::Result<Box<Block>> {
        if let Some(hit) = self.cached(page) {
            return Ok(hit);
        }
        let mut fresh = Box::new(Block([0; PAGE]));
        self.disk_read(page, std::slice::from_mut(&mut *fresh))?;
        // The window in which a direct write can complete, be evicted, and
        // leave us inserting the old block.
        if !self.read_window.is_zero() {
            std::thread::sleep(self.read_window);
        }
        let mut cache = self.cache();
        let entry = cache.entry(page).or_insert(CachedPage::clean(fresh));
        Ok(entry.data.clone())
    }

    /// A buffered write of `data` to `page`: dirty in the cache until a
    /// direct I/O writes it back. The caller covers the add.
    pub(crate) fn write_cached(&self, page: u64, data: Box<Block>) {
        let mut cache = self.cache();
        let c = cache
            .entry(page)
            .or_insert(CachedPage::clean(Box::new(Block([0; PAGE]))));
        c.data = data;
        c.dirty = true;
        c.generation += 1;
    }

    /// The cache, once no write-back of the range is in flight.
    fn cache_written_back(
        &self,
        range: std::ops::Range<u64>,
    ) -> MutexGuard<'_, HashMap<u64, CachedPage>> {
        let mut cache = self.cache();
        while range
            .clone()
            .any(|p| cache.get(&p).is_some_and(|c| c.writing))
        {
            cache = self
                .written_back
                .wait(cache)
                .unwrap_or_else(|e| e.into_inner());
        }
        cache
    }

    /// Writes the dirty pages of the range back to the file and waits for any
    /// write-back of the range already in flight, so that on return the file
    /// holds every page the cache had dirty; then evicts the range if
    /// `evict`. The disk writes run outside the cache mutex; a page is never
    /// written back by two threads at once, and is marked clean only once its
    /// write has landed.
    pub(crate) fn write_back(&self, first: u64, n: u64, evict: bool) -> io::Result<()> {
        let range = first..first + n;
        let mut cache = self.cache_written_back(range.clone());
        let mut mine = Vec::new();
        for p in range.clone() {
            if let Some(c) = cache.get_mut(&p).filter(|c| c.dirty) {
                c.writing = true;
                mine.push((p, c.generation, c.data.clone()));
            }
        }
        drop(cache);
        let result = mine
            .iter()
            .try_for_each(|(p, _, data)| self.disk_write(*p, std::slice::from_ref(&**data)));
        let mut cache = self.cache();
        for (p, generation, _) in &mine {
            if let Some(c) = cache.get_mut(p) {
                c.writing = false;
                if result.is_ok() && c.generation == *generation {
                    c.dirty = false;
                }
            }
        }
        if evict && result.is_ok() {
            for p in range {
                if cache.get(&p).is_some_and(|c| !c.writing) {
                    cache.remove(&p);
                }
            }
        }
        drop(cache);
        self.written_back.notify_all();
        result
    }

    /// Drops the range from the cache, dirty or not (its data is going away),
    /// once no write-back of it is in flight: one landing later would bring
    /// the old data back over a hole (a direct read of another range may be
    /// writing these pages back under the same `Block` phase).
    pub(crate) fn evict(&self, first: u64, n: u64) {
        let mut cache = self.cache_written_back(first..first + n);
        for p in first..first + n {
            cache.remove(&p);
        }
    }
}
