//! A format-v2 checkpoint as a list of chunks: its [`Layout`] (header and
//! region table, and which chunk each record is), the chunks' hashes and
//! the root over them ([`Manifest`]). A live migration moves checkpoints in
//! this form: [`capture`] hashes only the chunks written since they were last
//! hashed and copies only those a round must send, a receiver checks each
//! chunk against its hash as it arrives and the whole against the root
//! ([`Manifest::new`]), and rebuilds the task from chunks already checked
//! ([`Manifest::restore`]) without reading the state a second time.

use crate::error::{ReadError, WriteError};
use crate::format::{
    ChunkCheck, ChunkHash, Header, RegionEntry, RootHasher, FORMAT_VERSION, TRAILER_MAGIC,
};
use crate::io::Sink;
use crate::reader::{read_prefix, Limits, RegionData, Restored};
use crate::region::BulkSource;
use crate::task::{SnapBody, Snapshot};
use crate::writer::{encode_chunk, hash_chunk, HeaderInfo, Mode, Plan};
use alloc::vec::Vec;

/// One chunk record's place: region index, chunk index, length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Index of the region in the table.
    pub region: u32,
    /// Chunk index within the region.
    pub chunk: u32,
    /// Length of the chunk in bytes.
    pub len: u32,
}

/// The header and region table of a full v2 checkpoint, validated, and the
/// chunk records they announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    prefix: Vec<u8>,
    header: Header,
    regions: Vec<RegionEntry>,
    slots: Vec<Slot>,
}

impl Layout {
    /// Validates `prefix` (header and region table of a full v2 checkpoint,
    /// nothing after them) under `limits`.
    pub fn parse(prefix: Vec<u8>, limits: &Limits) -> Result<Self, ReadError> {
        let mut src = &prefix[..];
        let p = read_prefix(&mut src, limits)?;
        if !src.is_empty() {
            return Err(ReadError::TrailingBytes);
        }
        if p.header.format_version != FORMAT_VERSION {
            return Err(ReadError::UnsupportedVersion(p.header.format_version));
        }
        if p.header.delta {
            return Err(ReadError::WrongMode { expected: "full" });
        }
        let slots = slots(&p.regions);
        Ok(Self {
            prefix,
            header: p.header,
            regions: p.regions,
            slots,
        })
    }

    /// Header and region table bytes.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }
    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }
    /// The region table.
    pub fn regions(&self) -> &[RegionEntry] {
        &self.regions
    }
    /// Every chunk record, in file order.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }
    /// Whether `other` has the same chunk records (region and chunk index,
    /// in order; lengths may differ), so chunk `i` of one is chunk `i` of
    /// the other and a round can name the chunks that changed by position.
    pub fn same_records(&self, other: &Layout) -> bool {
        self.slots.len() == other.slots.len()
            && self
                .slots
                .iter()
                .zip(&other.slots)
                .all(|(a, b)| (a.region, a.chunk) == (b.region, b.chunk))
    }
    /// Bytes of the checkpoint as a v2 file.
    pub fn file_len(&self) -> u64 {
        let records: u64 = self
            .slots
            .iter()
            .map(|s| u64::from(s.len) + u64::from(crate::format::RECORD_FRAMING_V2))
            .sum();
        self.prefix.len() as u64 + records + u64::from(crate::format::TRAILER_LEN)
    }
}

/// The chunk records a full checkpoint with this table holds.
fn slots(regions: &[RegionEntry]) -> Vec<Slot> {
    let mut out = Vec::new();
    for (ri, e) in regions.iter().enumerate() {
        for ci in 0..e.total_chunks() {
            out.push(Slot {
                region: ri as u32,
                chunk: ci as u32,
                len: e.chunk_len(ci) as u32,
            });
        }
    }
    out
}

/// A full v2 checkpoint without its chunk data: layout, chunk hashes, root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    layout: Layout,
    hashes: Vec<ChunkHash>,
    root: ChunkHash,
}

impl Manifest {
    /// The manifest of `layout` with these chunk hashes (one per slot).
    pub fn new(layout: Layout, hashes: Vec<ChunkHash>) -> Result<Self, ReadError> {
        if hashes.len() != layout.slots.len() {
            return Err(ReadError::BadChunkCount {
                region: alloc::string::String::from("*"),
                count: hashes.len() as u32,
                expected: layout.slots.len() as u32,
            });
        }
        let mut root = RootHasher::new(&layout.prefix);
        for (s, h) in layout.slots.iter().zip(&hashes) {
            root.leaf(s.region, s.chunk, s.len, h);
        }
        let root = root.finish();
        Ok(Self {
            layout,
            hashes,
            root,
        })
    }
    /// Its layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }
    /// The header.
    pub fn header(&self) -> &Header {
        &self.layout.header
    }
    /// Each chunk's hash, in file order.
    pub fn hashes(&self) -> &[ChunkHash] {
        &self.hashes
    }
    /// The checkpoint's identity: the root over its chunk hashes.
    pub fn root(&self) -> ChunkHash {
        self.root
    }

    /// Rebuilds the state from `chunks` (chunk `i`'s bytes for slot `i`),
    /// which the caller has checked against [`Manifest::hashes`] (a receiver
    /// checks each chunk as it arrives): nothing is hashed again, only
    /// lengths are checked. Rebuilt bulk regions keep the hashes.
    pub fn restore<'c>(
        &self,
        chunks: impl Iterator<Item = &'c [u8]>,
    ) -> Result<Restored, ReadError> {
        let mut regions = self
            .layout
            .regions
            .iter()
            .map(RegionData::reserve)
            .collect::<Result<Vec<_>, _>>()?;
        let mut n = 0;
        for ((s, h), bytes) in self.layout.slots.iter().zip(&self.hashes).zip(chunks) {
            if bytes.len() != s.len as usize {
                return Err(ReadError::ChunkLength {
                    region: self.layout.regions[s.region as usize].name.clone(),
                    chunk: s.chunk,
                    len: bytes.len() as u32,
                    expected: s.len,
                });
            }
            regions[s.region as usize].push(bytes, ChunkCheck::Blake3(*h));
            n += 1;
        }
        if n != self.layout.slots.len() {
            return Err(ReadError::Truncated);
        }
        Ok(Restored {
            header: self.layout.header.clone(),
            hash: self.root,
            regions,
        })
    }

    /// Writes the checkpoint as a v2 file from `chunks` (as for
    /// [`Manifest::restore`]).
    pub fn write_file<'c, S: Sink>(
        &self,
        chunks: impl Iterator<Item = &'c [u8]>,
        sink: &mut S,
    ) -> Result<(), WriteError> {
        sink.write_all(&self.layout.prefix)?;
        for ((s, h), bytes) in self.layout.slots.iter().zip(&self.hashes).zip(chunks) {
            sink.write_all(&s.region.to_le_bytes())?;
            sink.write_all(&s.chunk.to_le_bytes())?;
            sink.write_all(&(bytes.len() as u32).to_le_bytes())?;
            sink.write_all(bytes)?;
            sink.write_all(h)?;
        }
        sink.write_all(&TRAILER_MAGIC)?;
        sink.write_all(&self.root)
    }
}

/// A checkpoint captured at a migration point: its manifest, and the bytes
/// of the chunks the capture copied (`None` where it did not need to).
#[derive(Debug, Clone)]
pub struct Capture {
    /// The checkpoint.
    pub manifest: Manifest,
    /// Chunk `i`'s bytes, where copied.
    pub data: Vec<Option<Vec<u8>>>,
    /// Time spent hashing chunks, on the clock [`capture_timed`] was given.
    pub hash_ns: u64,
}

impl Capture {
    /// Bytes of chunk data copied.
    pub fn copied_bytes(&self) -> u64 {
        self.data.iter().flatten().map(|d| d.len() as u64).sum()
    }
}

/// Captures `snap` as a full v2 checkpoint. Each bulk chunk's hash comes
/// from its region's cache unless the chunk was written since it was last
/// hashed. With `since` (the previous capture of the same task, whose
/// chunks the receiver holds), only the chunks whose hash differs from the
/// chunk at the same place in `since` are copied; without it, or when the
/// records differ, every chunk is.
pub fn capture(
    info: &HeaderInfo,
    snap: &Snapshot<'_>,
    since: Option<&Manifest>,
) -> Result<Capture, WriteError> {
    capture_timed(info, snap, since, &|| 0)
}

/// [`capture`], timing the hashing with `now_ns` (a monotonic clock in
/// nanoseconds): what a migration reports as its hash stage.
pub fn capture_timed(
    info: &HeaderInfo,
    snap: &Snapshot<'_>,
    since: Option<&Manifest>,
    now_ns: &dyn Fn() -> u64,
) -> Result<Capture, WriteError> {
    let plan = Plan::new(info, snap, Mode::Full)?;
    let layout = Layout {
        slots: slots(&plan.entries),
        prefix: plan.prefix,
        header: plan.header,
        regions: plan.entries,
    };
    let since = since.filter(|m| m.layout.same_records(&layout));
    let mut hashes = Vec::with_capacity(layout.slots.len());
    let mut data = Vec::with_capacity(layout.slots.len());
    let mut hash_ns = 0;
    for (i, s) in layout.slots.iter().enumerate() {
        let body = &snap.regions[s.region as usize].1;
        let ci = s.chunk as usize;
        let before = since.map(|m| m.hashes[i]);
        // A bulk chunk whose cached hash equals the one the receiver
        // holds is neither encoded nor hashed.
        if let (SnapBody::Bulk(r), Some(before)) = (body, before) {
            if r.cached(ci) == Some(before) {
                hashes.push(before);
                data.push(None);
                continue;
            }
        }
        let mut bytes = Vec::new();
        bytes
            .try_reserve_exact(s.len as usize)
            .map_err(|_| WriteError::OutOfMemory)?;
        encode_chunk(body, ci, &mut bytes);
        let start = now_ns();
        let hash = hash_chunk(body, ci, &bytes);
        hash_ns += now_ns().saturating_sub(start);
        data.push((before != Some(hash)).then_some(bytes));
        hashes.push(hash);
    }
    let manifest = Manifest::new(layout, hashes).map_err(|_| WriteError::TooLarge("state"))?;
    Ok(Capture {
        manifest,
        data,
        hash_ns,
    })
}
