//! Streaming checkpoint reader: validates as it goes, one chunk at a time.

use crate::error::ReadError;
use crate::format::{
    ChunkRecord, Header, RegionEntry, RegionKind, CODEC_RAW, CRC32C, FLAG_DELTA, FORMAT_VERSION,
    MAGIC, MAX_BOARD, MAX_CHUNK, MAX_ISA, MAX_KIND, MAX_NAME, MAX_REGIONS, MIN_CHUNK,
    TRAILER_MAGIC,
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

/// Low-level streaming reader. [`open`](Self::open) validates header and region
/// table; [`next_chunk`](Self::next_chunk) yields checked chunks in file order;
/// [`finish`](Self::finish) checks the trailer and the whole-file hash.
pub struct Reader<S: Source> {
    src: S,
    hash: Sha256,
    header: Header,
    regions: Vec<RegionEntry>,
    cur: usize,
    seen: u32,
    last: Option<u32>,
}

/// Reads through the hash, optionally recording bytes for a section CRC.
struct Rd<'a, S: Source> {
    src: &'a mut S,
    hash: &'a mut Sha256,
    rec: Vec<u8>,
}

impl<S: Source> Rd<'_, S> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], ReadError> {
        let mut b = [0u8; N];
        self.src.read_exact(&mut b)?;
        self.hash.update(b);
        self.rec.extend_from_slice(&b);
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
        self.hash.update(&b[..n]);
        self.rec.extend_from_slice(&b[..n]);
        core::str::from_utf8(&b[..n])
            .map(String::from)
            .map_err(|_| ReadError::BadString(field))
    }
    /// Checks a stored CRC-32C against the bytes recorded since the last check.
    fn crc(&mut self, err: ReadError) -> Result<(), ReadError> {
        let want = CRC32C.checksum(&self.rec);
        if self.u32()? != want {
            return Err(err);
        }
        self.rec.clear();
        Ok(())
    }
}

fn too_large(what: &'static str, value: u64, limit: u64) -> ReadError {
    ReadError::TooLarge { what, value, limit }
}

impl<S: Source> Reader<S> {
    /// Reads and validates header and region table.
    pub fn open(mut src: S, limits: &Limits) -> Result<Self, ReadError> {
        let mut hash = Sha256::new();
        let mut rd = Rd {
            src: &mut src,
            hash: &mut hash,
            rec: Vec::new(),
        };
        if rd.bytes::<8>()? != MAGIC {
            return Err(ReadError::BadMagic);
        }
        let format_version = rd.u16()?;
        if format_version != FORMAT_VERSION {
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
        Ok(Self {
            src,
            hash,
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

    /// Reads the next chunk into `buf` (replacing its contents), checking order,
    /// length and CRC-32C; `None` once every chunk announced by the table was read.
    pub fn next_chunk(&mut self, buf: &mut Vec<u8>) -> Result<Option<ChunkRecord>, ReadError> {
        while self.cur < self.regions.len() && self.seen == self.regions[self.cur].chunk_count {
            self.cur += 1;
            self.seen = 0;
            self.last = None;
        }
        if self.cur == self.regions.len() {
            return Ok(None);
        }
        let mut rd = Rd {
            src: &mut self.src,
            hash: &mut self.hash,
            rec: Vec::new(),
        };
        let region = rd.u32()?;
        let chunk = rd.u32()?;
        let len = rd.u32()?;
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
        buf.clear();
        buf.try_reserve(len as usize)
            .map_err(|_| ReadError::OutOfMemory)?;
        buf.resize(len as usize, 0);
        self.src.read_exact(buf)?;
        self.hash.update(&*buf);
        let mut crc_b = [0u8; 4];
        self.src.read_exact(&mut crc_b)?;
        self.hash.update(crc_b);
        let crc = u32::from_le_bytes(crc_b);
        let mut digest = CRC32C.digest();
        digest.update(&region.to_le_bytes());
        digest.update(&chunk.to_le_bytes());
        digest.update(&len.to_le_bytes());
        digest.update(buf);
        if digest.finalize() != crc {
            return Err(ReadError::ChunkCrc {
                region: e.name.clone(),
                chunk,
            });
        }
        self.seen += 1;
        self.last = Some(chunk);
        Ok(Some(ChunkRecord { region, chunk, crc }))
    }

    /// Reads the trailer after the last chunk and checks the whole-file SHA-256;
    /// returns it (the checkpoint's identity).
    pub fn finish(mut self) -> Result<[u8; 32], ReadError> {
        let mut scratch = Vec::new();
        if self.next_chunk(&mut scratch)?.is_some() {
            return Err(ReadError::BadTrailer);
        }
        let mut m = [0u8; 8];
        self.src.read_exact(&mut m)?;
        if m != TRAILER_MAGIC {
            return Err(ReadError::BadTrailer);
        }
        self.hash.update(m);
        let mut stored = [0u8; 32];
        self.src.read_exact(&mut stored)?;
        let computed: [u8; 32] = self.hash.finalize().into();
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
}

/// A fully validated full checkpoint, decoded into fresh memory (the running
/// state is untouched until a loader consumes this).
#[derive(Debug, Clone, PartialEq)]
pub struct Restored {
    /// Its header.
    pub header: Header,
    /// Its SHA-256 (the base hash for the next delta).
    pub hash: [u8; 32],
    /// Its regions, in table order.
    pub regions: Vec<RegionData>,
}

/// Reads and validates a whole full checkpoint from `src`.
pub fn read_checkpoint<S: Source>(src: S, limits: &Limits) -> Result<Restored, ReadError> {
    let mut r = Reader::open(src, limits)?;
    if r.header().delta {
        return Err(ReadError::WrongMode { expected: "full" });
    }
    let mut regions = Vec::new();
    for e in r.regions() {
        let mut data = BulkData::empty(e.elem);
        // len_bytes is bounded by limits.max_total_bytes.
        if !data.try_reserve_bytes(e.len_bytes as usize) {
            return Err(ReadError::OutOfMemory);
        }
        regions.push(RegionData {
            name: e.name.clone(),
            kind: e.kind,
            data,
        });
    }
    let mut buf = Vec::new();
    while let Some(c) = r.next_chunk(&mut buf)? {
        regions[c.region as usize].data.extend_le(&buf);
    }
    let header = r.header().clone();
    let hash = r.finish()?;
    Ok(Restored {
        header,
        hash,
        regions,
    })
}
