//! Checkpoint formats v1 and v2: constants, header, region table, chunk
//! hashes and the hash tree (see `docs/checkpoint-format.md`).

use crate::region::ElemType;
use alloc::string::String;
use alloc::vec::Vec;

/// First 8 bytes of every checkpoint.
pub const MAGIC: [u8; 8] = *b"TERNCKPT";
/// Marks the end of the chunk records, before the SHA-256.
pub const TRAILER_MAGIC: [u8; 8] = *b"TERNEND\0";
/// The format version this crate writes (it reads this one and [`FORMAT_V1`]).
pub const FORMAT_VERSION: u16 = 2;
/// The first format version: CRC-32C per chunk, SHA-256 over the whole file.
pub const FORMAT_V1: u16 = 1;
/// Bytes of a v2 chunk record besides its data: region, chunk, len, hash.
pub const RECORD_FRAMING_V2: u32 = 12 + 32;
/// Bytes of the trailer: magic and the 32-byte identity.
pub const TRAILER_LEN: u32 = 40;
/// Chunk size used by this writer (bytes). Readers accept any power of two in
/// [`MIN_CHUNK`, `MAX_CHUNK`].
pub const CHUNK_SIZE: u32 = 64 * 1024;
pub(crate) const MIN_CHUNK: u32 = 1024;
pub(crate) const MAX_CHUNK: u32 = 16 * 1024 * 1024;
/// Header flag: this checkpoint is a delta against `base_hash`.
pub(crate) const FLAG_DELTA: u16 = 1;
pub(crate) const MAX_KIND: usize = 64;
pub(crate) const MAX_ISA: usize = 32;
pub(crate) const MAX_BOARD: usize = 64;
pub(crate) const MAX_NAME: usize = 64;
pub(crate) const MAX_REGIONS: usize = 1024;
pub(crate) const CODEC_RAW: u8 = 0;

/// CRC-32C (Castagnoli), as used for chunks, header and table.
/// Slice-by-16 tables (16 KiB): several times faster than the byte-wise table.
pub(crate) const CRC32C: crc::Crc<u32, crc::Table<16>> =
    crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);

/// What a region holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionKind {
    /// postcard-encoded structured state (element type u8).
    Typed,
    /// Little-endian array of fixed-width numbers.
    Bulk,
}

impl RegionKind {
    /// Lowercase name, as shown by `inspect`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Typed => "typed",
            Self::Bulk => "bulk",
        }
    }
}

/// The checkpoint header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Format version (1 or 2).
    pub format_version: u16,
    /// True for a delta checkpoint.
    pub delta: bool,
    /// Stable task-kind name (e.g. `npb-ep.S`).
    pub task_kind: String,
    /// Version of the task kind's state layout.
    pub task_version: u32,
    /// Equal computation progress at the migration point.
    pub progress: u64,
    /// Progress value at completion.
    pub progress_total: u64,
    /// Ownership epoch.
    pub epoch: u64,
    /// Creation time, milliseconds since the Unix epoch (0 when unknown).
    pub created_unix_ms: u64,
    /// ISA of the node that wrote it (`x86_64`, `aarch64`).
    pub isa: String,
    /// Board or host that wrote it.
    pub board: String,
    /// Identity of the base checkpoint (zero unless `delta`).
    pub base_hash: [u8; 32],
}

/// One region table entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionEntry {
    /// Region name, unique within the checkpoint.
    pub name: String,
    /// Typed or bulk.
    pub kind: RegionKind,
    /// Element type (u8 for typed regions).
    pub elem: ElemType,
    /// Chunk codec (0 = raw, the only one in v1 and v2).
    pub codec: u8,
    /// Logical length of the region in bytes.
    pub len_bytes: u64,
    /// Chunk size in bytes.
    pub chunk_size: u32,
    /// Chunk records present for this region.
    pub chunk_count: u32,
}

impl RegionEntry {
    /// Number of chunks the whole region spans.
    pub fn total_chunks(&self) -> u64 {
        self.len_bytes.div_ceil(u64::from(self.chunk_size))
    }
    /// Length of chunk `i` (the last one may be short).
    pub fn chunk_len(&self, i: u64) -> u64 {
        let start = i * u64::from(self.chunk_size);
        self.len_bytes
            .saturating_sub(start)
            .min(u64::from(self.chunk_size))
    }
}

/// A chunk's BLAKE3 hash (v2): its identity, whatever its position.
pub type ChunkHash = [u8; 32];

/// The BLAKE3 hash of a chunk's bytes.
pub fn chunk_hash(data: &[u8]) -> ChunkHash {
    blake3::hash(data).into()
}

/// The integrity check a chunk record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkCheck {
    /// v1: CRC-32C of the record's header and data.
    Crc32c(u32),
    /// v2: BLAKE3 of the data.
    Blake3(ChunkHash),
}

/// Header of one chunk record as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRecord {
    /// Index into the region table.
    pub region: u32,
    /// Chunk index within the region.
    pub chunk: u32,
    /// Its check value, verified against the data.
    pub check: ChunkCheck,
}

/// BLAKE3 key-derivation context of the v2 root: the hash tree's domain.
const ROOT_CONTEXT: &str = "tern checkpoint v2 root";

/// The v2 identity of a checkpoint: a two-level hash tree whose leaves are
/// the chunk hashes. Fed the header and region table bytes, then each
/// record's position, length and hash in file order; it never sees chunk
/// data, so a node that caches chunk hashes gets the root for the cost of a
/// few bytes per chunk.
pub struct RootHasher(blake3::Hasher);

impl RootHasher {
    /// Starts a root over `prefix` (the header and region table, CRCs included).
    pub fn new(prefix: &[u8]) -> Self {
        let mut h = blake3::Hasher::new_derive_key(ROOT_CONTEXT);
        h.update(&(prefix.len() as u64).to_le_bytes());
        h.update(prefix);
        Self(h)
    }
    /// Adds the next chunk record's leaf.
    pub fn leaf(&mut self, region: u32, chunk: u32, len: u32, hash: &ChunkHash) {
        self.0.update(&region.to_le_bytes());
        self.0.update(&chunk.to_le_bytes());
        self.0.update(&len.to_le_bytes());
        self.0.update(hash);
    }
    /// The root.
    pub fn finish(&self) -> ChunkHash {
        self.0.finalize().into()
    }
}

/// Little-endian field appender.
pub(crate) struct Enc(pub Vec<u8>);

impl Enc {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v)
    }
    pub fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes())
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes())
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes())
    }
    /// A string with a one-byte length prefix.
    pub fn str(&mut self, s: &str) {
        self.0.push(s.len() as u8);
        self.0.extend_from_slice(s.as_bytes())
    }
}

/// Encodes the header (with its CRC).
pub(crate) fn encode_header(h: &Header, regions: u16) -> Vec<u8> {
    let mut e = Enc(Vec::new());
    e.0.extend_from_slice(&MAGIC);
    e.u16(h.format_version);
    e.u16(if h.delta { FLAG_DELTA } else { 0 });
    e.str(&h.task_kind);
    e.u32(h.task_version);
    e.u64(h.progress);
    e.u64(h.progress_total);
    e.u64(h.epoch);
    e.u64(h.created_unix_ms);
    e.str(&h.isa);
    e.str(&h.board);
    e.0.extend_from_slice(&h.base_hash);
    e.u16(regions);
    let crc = CRC32C.checksum(&e.0);
    e.u32(crc);
    e.0
}

/// Encodes the region table (with its CRC).
pub(crate) fn encode_table(regions: &[RegionEntry]) -> Vec<u8> {
    let mut e = Enc(Vec::new());
    for r in regions {
        e.str(&r.name);
        e.u8(match r.kind {
            RegionKind::Typed => 0,
            RegionKind::Bulk => 1,
        });
        e.u8(r.elem as u8);
        e.u8(r.codec);
        e.u64(r.len_bytes);
        e.u32(r.chunk_size);
        e.u32(r.chunk_count);
    }
    let crc = CRC32C.checksum(&e.0);
    e.u32(crc);
    e.0
}
