//! Streaming checkpoint reader for formats v1 and v2: validates as it goes,
//! one chunk at a time.

use crate::error::ReadError;
use crate::format::{
    chunk_hash, ChunkCheck, ChunkHash, ChunkRecord, Header, RegionEntry, RegionKind, RootHasher,
    CODEC_RAW, CRC32C, FLAG_DELTA, FORMAT_V1, FORMAT_VERSION, MAGIC, MAX_BOARD, MAX_CHUNK, MAX_ISA,
    MAX_KIND, MAX_NAME, MAX_REGIONS, MIN_CHUNK, TRAILER_MAGIC,
};
use crate::io::Source;
use crate::region::{BulkData, ElemType};
use alloc::string::String;
use alloc::vec::Vec;
use sha2::{Digest, Sha256};

/// Bounds the reader applies before allocating anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest total state (sum of region lengths) accepted, in bytes.
    pub max_total_bytes: u64,
}

impl Default for Limits {
    /// 1 GiB: above the largest NPB class run here, below a Pi 4's memory.
    fn default() -> Self {
        Self {
            max_total_bytes: 1 << 30,
        }
    }
}

/// How the whole checkpoint's identity is computed: v1 hashes every byte
/// with SHA-256, v2 builds a root over the chunk hashes.
enum Identity {
    Sha256(Sha256),
    /// Boxed: BLAKE3's hasher holds its chunk stack (about 2 KiB).
    Root(alloc::boxed::Box<RootHasher>),
}

/// Low-level streaming reader. [`open`](Self::open) validates header and region
/// table; [`next_chunk`](Self::next_chunk) yields checked chunks in file order;
/// [`finish`](Self::finish) checks the trailer and the whole-checkpoint identity.
pub struct Reader<S: Source> {
    src: S,
    prefix: Vec<u8>,
    identity: Identity,
    header: Header,
    regions: Vec<RegionEntry>,
    cur: usize,
    seen: u32,
    last: Option<u32>,
}

/// Reads header and table bytes, recording them for the section CRCs and
/// for the identity (v1 hashes them, v2 starts its root with them).
struct Rd<'a, S: Source> {
    src: &'a mut S,
    all: Vec<u8>,
    section: usize,
}

impl<S: Source> Rd<'_, S> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], ReadError> {
        let mut b = [0u8; N];
        self.src.read_exact(&mut b)?;
        self.all.extend_from_slice(&b);
        Ok(b)
    }
    fn u8(&mut self) -> Result<u8, ReadError> {
        Ok(self.bytes::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, ReadError> {
        Ok(u16::from_le_bytes(self.bytes()?))
    }
    fn u32(&mut self) -> Result<u32, ReadError> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }
    fn u64(&mut self) -> Result<u64, ReadError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }
    fn str(&mut self, max: usize, field: &'static str) -> Result<String, ReadError> {
        let n = usize::from(self.u8()?);
        if n == 0 || n > max {
            return Err(ReadError::BadString(field));
        }
        let mut b = [0u8; 255];
        self.src.read_exact(&mut b[..n])?;
        self.all.extend_from_slice(&b[..n]);
        core::str::from_utf8(&b[..n])
            .map(String::from)
            .map_err(|_| ReadError::BadString(field))
    }
    /// Checks a stored CRC-32C against the bytes read since the last check.
    fn crc(&mut self, err: ReadError) -> Result<(), ReadError> {
        let want = CRC32C.checksum(&self.all[self.section..]);
        if self.u32()? != want {
            return Err(err);
        }
        self.section = self.all.len();
        Ok(())
    }
}

fn too_large(what: &'static str, value: u64, limit: u64) -> ReadError {
    ReadError::TooLarge { what, value, limit }
}

/// A validated header and region table, and their bytes.
pub(crate) struct Prefix {
    pub bytes: Vec<u8>,
    pub header: Header,
    pub regions: Vec<RegionEntry>,
}

/// Reads and validates a header and region table of format v1 or v2.
pub(crate) fn read_prefix<S: Source>(src: &mut S, limits: &Limits) -> Result<Prefix, ReadError> {
    let mut rd = Rd {
        src,
        all: Vec::new(),
        section: 0,
    };
    if rd.bytes::<8>()? != MAGIC {
        return Err(ReadError::BadMagic);
    }
    let format_version = rd.u16()?;
    if format_version != FORMAT_VERSION && format_version != FORMAT_V1 {
        return Err(ReadError::UnsupportedVersion(format_version));
    }
    let flags = rd.u16()?;
    if flags & !FLAG_DELTA != 0 {
        return Err(ReadError::UnknownFlags(flags));
    }
    let task_kind = rd.str(MAX_KIND, "task_kind")?;
    let task_version = rd.u32()?;
    let progress = rd.u64()?;
    let progress_total = rd.u64()?;
    let epoch = rd.u64()?;
    let created_unix_ms = rd.u64()?;
    let isa = rd.str(MAX_ISA, "isa")?;
    let board = rd.str(MAX_BOARD, "board")?;
    let base_hash = rd.bytes::<32>()?;
    let count = usize::from(rd.u16()?);
    rd.crc(ReadError::HeaderCrc)?;
    if count > MAX_REGIONS {
        return Err(too_large("region count", count as u64, MAX_REGIONS as u64));
    }
    if progress > progress_total {
        return Err(too_large("progress", progress, progress_total));
    }
    let delta = flags & FLAG_DELTA != 0;
    let mut regions: Vec<RegionEntry> = Vec::new();
    let mut total = 0u64;
    for _ in 0..count {
        let name = rd.str(MAX_NAME, "region name")?;
        let kind = match rd.u8()? {
            0 => RegionKind::Typed,
            1 => RegionKind::Bulk,
            value => {
                return Err(ReadError::BadRegionKind {
                    region: name,
                    value,
                })
            }
        };
        let eb = rd.u8()?;
        let elem = match ElemType::from_u8(eb) {
            Some(e) if kind == RegionKind::Bulk || e == ElemType::U8 => e,
            _ => {
                return Err(ReadError::BadElem {
                    region: name,
                    value: eb,
                })
            }
        };
        let codec = rd.u8()?;
        if codec != CODEC_RAW {
            return Err(ReadError::BadCodec {
                region: name,
                value: codec,
            });
        }
        let len_bytes = rd.u64()?;
        let chunk_size = rd.u32()?;
        let chunk_count = rd.u32()?;
        if !chunk_size.is_power_of_two() || !(MIN_CHUNK..=MAX_CHUNK).contains(&chunk_size) {
            return Err(ReadError::BadChunkSize {
                region: name,
                value: chunk_size,
            });
        }
        total = total.saturating_add(len_bytes);
        if total > limits.max_total_bytes {
            return Err(too_large("state", total, limits.max_total_bytes));
        }
        if len_bytes % elem.size() as u64 != 0 {
            return Err(ReadError::RaggedLength {
                region: name,
                len: len_bytes,
            });
        }
        let e = RegionEntry {
            name,
            kind,
            elem,
            codec,
            len_bytes,
            chunk_size,
            chunk_count,
        };
        // Bounded by max_total_bytes / MIN_CHUNK, so it fits a u32.
        let all = e.total_chunks() as u32;
        let whole = !delta || kind == RegionKind::Typed;
        if (whole && chunk_count != all) || chunk_count > all {
            return Err(ReadError::BadChunkCount {
                region: e.name,
                count: chunk_count,
                expected: all,
            });
        }
        if regions.iter().any(|r| r.name == e.name) {
            return Err(ReadError::DuplicateRegion(e.name));
        }
        regions.push(e);
    }
    rd.crc(ReadError::TableCrc)?;
    Ok(Prefix {
        bytes: rd.all,
        header: Header {
            format_version,
            delta,
            task_kind,
            task_version,
            progress,
            progress_total,
            epoch,
            created_unix_ms,
            isa,
            board,
            base_hash,
        },
        regions,
    })
}

impl<S: Source> Reader<S> {
    /// Reads and validates header and region table.
    pub fn open(mut src: S, limits: &Limits) -> Result<Self, ReadError> {
        let prefix = read_prefix(&mut src, limits)?;
        let identity = if prefix.header.format_version == FORMAT_V1 {
            let mut h = Sha256::new();
            h.update(&prefix.bytes);
            Identity::Sha256(h)
        } else {
            Identity::Root(alloc::boxed::Box::new(RootHasher::new(&prefix.bytes)))
        };
        Ok(Self {
            src,
            prefix: prefix.bytes,
            identity,
            header: prefix.header,
            regions: prefix.regions,
            cur: 0,
            seen: 0,
            last: None,
        })
    }

    /// The validated header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The validated region table.
    pub fn regions(&self) -> &[RegionEntry] {
        &self.regions
    }

    /// The bytes of the header and the region table.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    fn read<const N: usize>(&mut self) -> Result<[u8; N], ReadError> {
        let mut b = [0u8; N];
        self.src.read_exact(&mut b)?;
        if let Identity::Sha256(h) = &mut self.identity {
            h.update(b);
        }
        Ok(b)
    }

    /// Reads the next chunk into `buf` (replacing its contents), checking order,
    /// length and its CRC-32C (v1) or BLAKE3 hash (v2); `None` once every chunk
    /// announced by the table was read.
    pub fn next_chunk(&mut self, buf: &mut Vec<u8>) -> Result<Option<ChunkRecord>, ReadError> {
        while self.cur < self.regions.len() && self.seen == self.regions[self.cur].chunk_count {
            self.cur += 1;
            self.seen = 0;
            self.last = None;
        }
        if self.cur == self.regions.len() {
            return Ok(None);
        }
        let region = u32::from_le_bytes(self.read()?);
        let chunk = u32::from_le_bytes(self.read()?);
        let len = u32::from_le_bytes(self.read()?);
        let e = &self.regions[self.cur];
        let in_order = self.last.is_none_or(|l| chunk > l);
        if region as usize != self.cur || !in_order || u64::from(chunk) >= e.total_chunks() {
            return Err(ReadError::UnexpectedChunk { region, chunk });
        }
        let expected = e.chunk_len(u64::from(chunk)) as u32;
        if len != expected {
            return Err(ReadError::ChunkLength {
                region: e.name.clone(),
                chunk,
                len,
                expected,
            });
        }
        // The buffer is reused chunk after chunk: only a longer chunk than
        // the last grows (and zeroes) it, as `read_exact` overwrites it all.
        let len_bytes = len as usize;
        buf.truncate(len_bytes);
        buf.try_reserve(len_bytes - buf.len())
            .map_err(|_| ReadError::OutOfMemory)?;
        buf.resize(len_bytes, 0);
        self.src.read_exact(buf)?;
        let check = if let Identity::Sha256(h) = &mut self.identity {
            h.update(&*buf);
            let mut digest = CRC32C.digest();
            digest.update(&region.to_le_bytes());
            digest.update(&chunk.to_le_bytes());
            digest.update(&len.to_le_bytes());
            digest.update(buf);
            let want = digest.finalize();
            let crc = u32::from_le_bytes(self.read()?);
            if crc != want {
                return Err(self.chunk_error(chunk, false));
            }
            ChunkCheck::Crc32c(crc)
        } else {
            let want = chunk_hash(buf);
            let stored: ChunkHash = self.read()?;
            if stored != want {
                return Err(self.chunk_error(chunk, true));
            }
            if let Identity::Root(root) = &mut self.identity {
                root.leaf(region, chunk, len, &stored);
            }
            ChunkCheck::Blake3(stored)
        };
        self.seen += 1;
        self.last = Some(chunk);
        Ok(Some(ChunkRecord {
            region,
            chunk,
            check,
        }))
    }

    fn chunk_error(&self, chunk: u32, v2: bool) -> ReadError {
        let region = self.regions[self.cur].name.clone();
        if v2 {
            ReadError::ChunkHash { region, chunk }
        } else {
            ReadError::ChunkCrc { region, chunk }
        }
    }

    /// Reads the trailer after the last chunk and checks the identity (v1:
    /// SHA-256 of the file, v2: the root over the chunk hashes); returns it.
    pub fn finish(mut self) -> Result<[u8; 32], ReadError> {
        let mut scratch = Vec::new();
        if self.next_chunk(&mut scratch)?.is_some() {
            return Err(ReadError::BadTrailer);
        }
        let m: [u8; 8] = self.read()?;
        if m != TRAILER_MAGIC {
            return Err(ReadError::BadTrailer);
        }
        let mut stored = [0u8; 32];
        self.src.read_exact(&mut stored)?;
        let computed: [u8; 32] = match self.identity {
            Identity::Sha256(h) => h.finalize().into(),
            Identity::Root(r) => r.finish(),
        };
        if stored != computed {
            return Err(ReadError::HashMismatch);
        }
        if !self.src.at_end()? {
            return Err(ReadError::TrailingBytes);
        }
        Ok(computed)
    }
}

/// One decoded region of a restored checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionData {
    /// Region name.
    pub name: String,
    /// Typed or bulk.
    pub kind: RegionKind,
    /// Contents (typed regions: postcard bytes as `BulkData::U8`).
    pub data: BulkData,
    /// The verified BLAKE3 hash of each chunk (v2 bulk regions; empty
    /// otherwise), handed to the rebuilt region so it need not hash again.
    pub chunk_hashes: Vec<ChunkHash>,
}

/// A fully validated full checkpoint, decoded into fresh memory (the running
/// state is untouched until a loader consumes this).
#[derive(Debug, Clone, PartialEq)]
pub struct Restored {
    /// Its header.
    pub header: Header,
    /// Its identity (v1: SHA-256, v2: root): the base of the next delta.
    pub hash: [u8; 32],
    /// Its regions, in table order.
    pub regions: Vec<RegionData>,
}

impl RegionData {
    /// An empty region with room for the table entry's bytes.
    pub(crate) fn reserve(e: &RegionEntry) -> Result<Self, ReadError> {
        let mut data = BulkData::empty(e.elem);
        // len_bytes is bounded by the reader's limits.
        if !data.try_reserve_bytes(e.len_bytes as usize) {
            return Err(ReadError::OutOfMemory);
        }
        Ok(Self {
            name: e.name.clone(),
            kind: e.kind,
            data,
            chunk_hashes: Vec::new(),
        })
    }

    /// Appends the next chunk's bytes (and its verified hash, for bulk regions).
    pub(crate) fn push(&mut self, bytes: &[u8], check: ChunkCheck) {
        self.data.extend_le(bytes);
        if let (RegionKind::Bulk, ChunkCheck::Blake3(h)) = (self.kind, check) {
            self.chunk_hashes.push(h);
        }
    }
}

/// Reads and validates a whole full checkpoint (v1 or v2) from `src`.
pub fn read_checkpoint<S: Source>(src: S, limits: &Limits) -> Result<Restored, ReadError> {
    let mut r = Reader::open(src, limits)?;
    if r.header().delta {
        return Err(ReadError::WrongMode { expected: "full" });
    }
    let mut regions = r
        .regions()
        .iter()
        .map(RegionData::reserve)
        .collect::<Result<Vec<_>, _>>()?;
    let mut buf = Vec::new();
    while let Some(c) = r.next_chunk(&mut buf)? {
        regions[c.region as usize].push(&buf, c.check);
    }
    let header = r.header().clone();
    let hash = r.finish()?;
    Ok(Restored {
        header,
        hash,
        regions,
    })
}
