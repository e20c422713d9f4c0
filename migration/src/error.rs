//! Typed errors of the checkpoint reader and writer.

use alloc::string::String;

/// Why a checkpoint (or delta) was rejected. Every malformed input maps to one of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The input ended before the structure did.
    #[error("input truncated")]
    Truncated,
    /// An I/O error of the underlying source (message from the host).
    #[error("I/O error: {0}")]
    Io(String),
    /// The first 8 bytes are not `TERNCKPT`.
    #[error("not a Tern checkpoint (bad magic)")]
    BadMagic,
    /// A format version this reader does not know.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u16),
    /// Flag bits this reader does not know.
    #[error("unknown header flags {0:#06x}")]
    UnknownFlags(u16),
    /// The header CRC-32C does not match.
    #[error("header checksum mismatch")]
    HeaderCrc,
    /// The region table CRC-32C does not match.
    #[error("region table checksum mismatch")]
    TableCrc,
    /// A string field is empty, too long or not UTF-8.
    #[error("bad string in field {0}")]
    BadString(&'static str),
    /// A size exceeds the reader's limits or the format's bounds.
    #[error("{what} too large: {value} (limit {limit})")]
    TooLarge {
        /// Which quantity.
        what: &'static str,
        /// Value found.
        value: u64,
        /// Limit applied.
        limit: u64,
    },
    /// Unknown region kind byte.
    #[error("region {region}: unknown kind {value}")]
    BadRegionKind {
        /// Region name.
        region: String,
        /// Byte found.
        value: u8,
    },
    /// Unknown element type byte, or one not allowed for the region kind.
    #[error("region {region}: bad element type {value}")]
    BadElem {
        /// Region name.
        region: String,
        /// Byte found.
        value: u8,
    },
    /// Unknown codec byte (v1 and v2 know only raw).
    #[error("region {region}: unknown codec {value}")]
    BadCodec {
        /// Region name.
        region: String,
        /// Byte found.
        value: u8,
    },
    /// Chunk size not a power of two within bounds.
    #[error("region {region}: bad chunk size {value}")]
    BadChunkSize {
        /// Region name.
        region: String,
        /// Value found.
        value: u32,
    },
    /// Region byte length not a multiple of its element size.
    #[error("region {region}: length {len} is not a multiple of the element size")]
    RaggedLength {
        /// Region name.
        region: String,
        /// Byte length found.
        len: u64,
    },
    /// The chunk count does not fit the region (too many, or a full checkpoint missing some).
    #[error("region {region}: chunk count {count} does not fit (expected {expected})")]
    BadChunkCount {
        /// Region name.
        region: String,
        /// Count found.
        count: u32,
        /// Count expected (the maximum for a delta).
        expected: u32,
    },
    /// Two regions share a name.
    #[error("duplicate region {0}")]
    DuplicateRegion(String),
    /// A chunk record is out of order or names a region/chunk that does not exist.
    #[error("unexpected chunk record (region index {region}, chunk {chunk})")]
    UnexpectedChunk {
        /// Region index found in the record.
        region: u32,
        /// Chunk index found in the record.
        chunk: u32,
    },
    /// A chunk's length differs from what its region and index imply.
    #[error("region {region} chunk {chunk}: length {len}, expected {expected}")]
    ChunkLength {
        /// Region name.
        region: String,
        /// Chunk index.
        chunk: u32,
        /// Length found.
        len: u32,
        /// Length expected.
        expected: u32,
    },
    /// A chunk's CRC-32C does not match its bytes.
    #[error("region {region} chunk {chunk}: checksum mismatch")]
    ChunkCrc {
        /// Region name.
        region: String,
        /// Chunk index.
        chunk: u32,
    },
    /// A chunk's BLAKE3 hash (v2) does not match its bytes.
    #[error("region {region} chunk {chunk}: hash mismatch")]
    ChunkHash {
        /// Region name.
        region: String,
        /// Chunk index.
        chunk: u32,
    },
    /// The trailer magic is missing.
    #[error("bad trailer")]
    BadTrailer,
    /// The whole-checkpoint identity (v1: SHA-256, v2: root) does not match.
    #[error("whole-checkpoint hash mismatch")]
    HashMismatch,
    /// Bytes follow the trailer.
    #[error("trailing bytes after the checkpoint")]
    TrailingBytes,
    /// Memory for the decoded state could not be reserved.
    #[error("out of memory")]
    OutOfMemory,
    /// A delta was given where a full checkpoint is needed, or the reverse.
    #[error("expected a {expected} checkpoint")]
    WrongMode {
        /// "full" or "delta".
        expected: &'static str,
    },
    /// The delta was made against another base.
    #[error("delta base hash does not match the base checkpoint")]
    BaseMismatch,
    /// The delta's region layout does not match the base.
    #[error("region {0} does not match the base")]
    RegionMismatch(String),
}

/// Why a checkpoint could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The sink failed (message from the host).
    #[error("I/O error: {0}")]
    Io(String),
    /// A string is empty or longer than the format allows.
    #[error("bad string in field {0}")]
    BadString(&'static str),
    /// Too many regions or a region too large for the format.
    #[error("{0} too large for the format")]
    TooLarge(&'static str),
    /// Two regions share a name.
    #[error("duplicate region {0}")]
    DuplicateRegion(String),
    /// A typed region failed to serialize.
    #[error("region {0}: serialization failed")]
    Encode(String),
    /// Memory could not be reserved.
    #[error("out of memory")]
    OutOfMemory,
    /// The task's step has not ended: its state is not a consistent whole.
    #[error("the task is not at a migration point")]
    NotAtMigrationPoint,
}
