//! The file I/O under the cache: reads and writes at page offsets (with
//! `O_DIRECT` where the file system allows it), hole punches, and the added
//! device latency. Every change to a page on disk runs with its
//! `disk_writes` counter odd, so a direct read can tell a torn page.

use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::Ordering;

use crate::mapping::Mapping;
use crate::page::{Block, PAGE, as_bytes, as_bytes_mut};

impl Mapping {
    pub(crate) fn disk_read(&self, first: u64, blocks: &mut [Block]) -> io::Result<()> {
        self.file
            .read_exact_at(as_bytes_mut(blocks), first * PAGE as u64)?;
        std::thread::sleep(self.io_delay);
        Ok(())
    }

    pub(crate) fn disk_write(&self, first: u64, blocks: &[Block]) -> io::Result<()> {
        self.modifying_disk(first, blocks.len() as u64, || {
            self.file
                .write_all_at(as_bytes(blocks), first * PAGE as u64)
        })?;
        std::thread::sleep(self.io_delay);
        Ok(())
    }

    /// Punches a hole over pages `first..first + n` (keeping the size).
    pub(crate) fn disk_punch(&self, first: u64, n: u64) -> io::Result<()> {
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        let (off, len) = (
            (first * PAGE as u64) as libc::off_t,
            (n * PAGE as u64) as libc::off_t,
        );
        self.modifying_disk(first, n, || {
            // SAFETY: a plain system call on a file descriptor we own.
            match unsafe { libc::fallocate(self.file.as_raw_fd(), mode, off, len) } {
                0 => Ok(()),
                _ => Err(io::Error::last_os_error()),
            }
        })?;
        std::thread::sleep(self.io_delay);
        Ok(())
    }

    /// Runs `write`, a change to the file's pages `first..first + n`, with
    /// their `disk_writes` counters odd.
    fn modifying_disk<T>(&self, first: u64, n: u64, write: impl FnOnce() -> T) -> T {
        let pages = &self.disk_writes[first as usize..(first + n) as usize];
        // SeqCst: a direct read that sees the counters unchanged around its
        // read of the file did not overlap this write.
        for c in pages {
            c.fetch_add(1, Ordering::SeqCst);
        }
        let r = write();
        for c in pages {
            c.fetch_add(1, Ordering::SeqCst);
        }
        r
    }

    /// A direct read of `blocks.len()` pages at `first`, after which
    /// `overlapped(i)` says whether a write of page `first + i` was in
    /// flight during it.
    pub(crate) fn disk_read_direct(
        &self,
        first: u64,
        blocks: &mut [Block],
    ) -> io::Result<impl Fn(usize) -> bool + '_> {
        let writes = &self.disk_writes[first as usize..first as usize + blocks.len()];
        let before: Vec<u64> = writes.iter().map(|c| c.load(Ordering::SeqCst)).collect();
        self.disk_read(first, blocks)?;
        Ok(move |i: usize| before[i] % 2 == 1 || writes[i].load(Ordering::SeqCst) != before[i])
    }
}
