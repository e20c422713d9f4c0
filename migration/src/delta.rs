//! Applying a delta checkpoint to a restored base.

use crate::error::ReadError;
use crate::format::{ChunkCheck, RegionKind};
use crate::io::Source;
use crate::reader::{Limits, Reader, Restored};
use alloc::vec::Vec;

/// Applies the delta read from `src` to `base`. The delta is read and verified
/// completely (staging only its own chunks) before `base` is modified; on any
/// error `base` is unchanged. Afterwards `base` carries the delta's header and
/// hash, so the next delta in the chain names it as its base.
pub fn apply_delta<S: Source>(
    base: &mut Restored,
    src: S,
    limits: &Limits,
) -> Result<(), ReadError> {
    let mut r = Reader::open(src, limits)?;
    let h = r.header().clone();
    if !h.delta {
        return Err(ReadError::WrongMode { expected: "delta" });
    }
    if h.base_hash != base.hash
        || h.task_kind != base.header.task_kind
        || h.task_version != base.header.task_version
    {
        return Err(ReadError::BaseMismatch);
    }
    let table = r.regions().to_vec();
    if table.len() != base.regions.len() {
        return Err(ReadError::BaseMismatch);
    }
    for (e, b) in table.iter().zip(&base.regions) {
        let same = e.name == b.name
            && e.kind == b.kind
            && e.elem == b.data.elem()
            && (e.kind == RegionKind::Typed || e.len_bytes == b.data.len_bytes());
        if !same {
            return Err(ReadError::RegionMismatch(e.name.clone()));
        }
    }
    let mut staged: Vec<(u32, u32, Vec<u8>, ChunkCheck)> = Vec::new();
    let mut buf = Vec::new();
    while let Some(c) = r.next_chunk(&mut buf)? {
        staged.try_reserve(1).map_err(|_| ReadError::OutOfMemory)?;
        staged.push((c.region, c.chunk, core::mem::take(&mut buf), c.check));
    }
    let hash = r.finish()?;
    // Verified: now modify the base.
    for (e, b) in table.iter().zip(base.regions.iter_mut()) {
        if e.kind == RegionKind::Typed {
            b.data.truncate(0);
        }
    }
    for (ri, ci, bytes, check) in staged {
        let e = &table[ri as usize];
        let region = &mut base.regions[ri as usize];
        match e.kind {
            // Typed regions arrive whole, chunks in order.
            RegionKind::Typed => region.data.extend_le(&bytes),
            RegionKind::Bulk => {
                let at = ci as usize * e.chunk_size as usize / e.elem.size();
                region.data.overwrite_le(at, &bytes);
                // The base's verified hashes follow its contents; a delta
                // of another format version leaves the base without them.
                match (check, region.chunk_hashes.get_mut(ci as usize)) {
                    (ChunkCheck::Blake3(h), Some(slot)) => *slot = h,
                    _ => region.chunk_hashes.clear(),
                }
            }
        }
    }
    base.header = h;
    base.header.delta = false;
    base.header.base_hash = [0; 32];
    base.hash = hash;
    Ok(())
}
