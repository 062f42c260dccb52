//! Pages: the block the engine reads and writes, aligned for `O_DIRECT`,
//! and the stamp every page carries (file, page, version), which the
//! stale-read detector checks.

/// Bytes in a page.
pub const PAGE: usize = 4096;
const MAGIC: u32 = 0x5453_4c50; // "TSLP"

/// One page, aligned for `O_DIRECT`.
#[derive(Clone)]
#[repr(C, align(4096))]
pub struct Block(pub [u8; PAGE]);

impl Block {
    /// A page stamped with `(file, page, version)`; the rest is a pattern of
    /// the version, so torn or mixed pages are caught too.
    pub fn stamped(file: usize, page: u64, version: u64) -> Box<Block> {
        let mut b = Box::new(Block([(version % 251) as u8; PAGE]));
        b.set_stamp(file, page, version);
        b
    }

    pub(crate) fn set_stamp(&mut self, file: usize, page: u64, version: u64) {
        self.0[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        self.0[4..8].copy_from_slice(&(file as u32).to_le_bytes());
        self.0[8..16].copy_from_slice(&page.to_le_bytes());
        self.0[16..24].copy_from_slice(&version.to_le_bytes());
    }

    /// The page's version: 0 for a hole (all zeros); `None` if the page is
    /// neither a hole nor a well-formed stamp of `(file, page)`.
    pub fn version(&self, file: usize, page: u64) -> Option<u64> {
        let b = &self.0;
        if b.iter().all(|&x| x == 0) {
            return Some(0);
        }
        let word = |r: std::ops::Range<usize>| {
            let mut v = [0u8; 8];
            v[..r.len()].copy_from_slice(&b[r]);
            u64::from_le_bytes(v)
        };
        let version = word(16..24);
        let fill = (version % 251) as u8;
        let ok = word(0..4) == MAGIC as u64
            && word(4..8) == file as u64
            && word(8..16) == page
            && b[24..].iter().all(|&x| x == fill);
        ok.then_some(version)
    }
}

pub(crate) fn as_bytes(blocks: &[Block]) -> &[u8] {
    // SAFETY: `Block` is `repr(C)` over `[u8; PAGE]` with no padding (its
    // size equals its alignment), so a slice of blocks is that many bytes.
    unsafe { std::slice::from_raw_parts(blocks.as_ptr().cast(), blocks.len() * PAGE) }
}

pub(crate) fn as_bytes_mut(blocks: &mut [Block]) -> &mut [u8] {
    // SAFETY: as in `as_bytes`; every byte pattern is a valid `Block`.
    unsafe { std::slice::from_raw_parts_mut(blocks.as_mut_ptr().cast(), blocks.len() * PAGE) }
}
