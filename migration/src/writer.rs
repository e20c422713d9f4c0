//! Streaming checkpoint writer: one chunk buffer, never a second copy of the state.

use crate::error::WriteError;
use crate::format::{
    encode_header, encode_table, Header, RegionEntry, RegionKind, CHUNK_SIZE, CODEC_RAW, CRC32C,
    FORMAT_VERSION, MAX_BOARD, MAX_ISA, MAX_KIND, MAX_NAME, MAX_REGIONS, TRAILER_MAGIC,
};
use crate::io::Sink;
use crate::region::BulkSource;
use crate::region::ElemType;
use crate::task::{SnapBody, Snapshot, Task};
use alloc::string::String;
use alloc::vec::Vec;
use sha2::{Digest, Sha256};

/// Header fields supplied by the node that captures a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderInfo {
    /// Stable task-kind name.
    pub task_kind: String,
    /// Task-kind state version.
    pub task_version: u32,
    /// Equal computation progress now.
    pub progress: u64,
    /// Progress at completion.
    pub progress_total: u64,
    /// Ownership epoch.
    pub epoch: u64,
    /// Milliseconds since the Unix epoch (0 when the node has no wall clock).
    pub created_unix_ms: u64,
    /// This node's ISA.
    pub isa: String,
    /// This node's board.
    pub board: String,
}

impl HeaderInfo {
    /// The header of a checkpoint of `task` at its current migration point,
    /// captured in ownership `epoch` on a node of `isa` and `board`.
    pub fn for_task(
        task: &dyn Task,
        epoch: u64,
        created_unix_ms: u64,
        isa: &str,
        board: &str,
    ) -> Self {
        let p = task.progress();
        Self {
            task_kind: task.kind().into(),
            task_version: task.version(),
            progress: p.done,
            progress_total: p.total,
            epoch,
            created_unix_ms,
            isa: isa.into(),
            board: board.into(),
        }
    }
}

/// Full checkpoint, or delta holding only the chunks dirtied since the base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every chunk of every region.
    Full,
    /// Typed regions whole, bulk regions' dirty chunks only.
    Delta {
        /// SHA-256 of the base checkpoint.
        base_hash: [u8; 32],
    },
}

struct Hashing<'s, S: Sink> {
    sink: &'s mut S,
    hash: Sha256,
}

impl<S: Sink> Hashing<'_, S> {
    fn put(&mut self, b: &[u8]) -> Result<(), WriteError> {
        self.hash.update(b);
        self.sink.write_all(b)
    }
}

fn check_str(s: &str, max: usize, field: &'static str) -> Result<(), WriteError> {
    if s.is_empty() || s.len() > max {
        return Err(WriteError::BadString(field));
    }
    Ok(())
}

/// Writes `snap` as a checkpoint into `sink`; returns its SHA-256 (its identity).
///
/// In [`Mode::Delta`] a bulk region contributes only its dirty chunks: the caller
/// clears the dirty marks after each capture that becomes a base.
pub fn write_checkpoint<S: Sink>(
    sink: &mut S,
    info: &HeaderInfo,
    snap: &Snapshot<'_>,
    mode: Mode,
) -> Result<[u8; 32], WriteError> {
    check_str(&info.task_kind, MAX_KIND, "task_kind")?;
    check_str(&info.isa, MAX_ISA, "isa")?;
    check_str(&info.board, MAX_BOARD, "board")?;
    if snap.regions.len() > MAX_REGIONS {
        return Err(WriteError::TooLarge("region count"));
    }
    let delta = matches!(mode, Mode::Delta { .. });
    let mut entries = Vec::new();
    for (name, body) in &snap.regions {
        check_str(name, MAX_NAME, "region name")?;
        if entries.iter().any(|e: &RegionEntry| &e.name == name) {
            return Err(WriteError::DuplicateRegion(name.clone()));
        }
        let (kind, elem, len_bytes, present) = match body {
            SnapBody::Typed(b) => {
                let n = b.len().div_ceil(CHUNK_SIZE as usize);
                (RegionKind::Typed, ElemType::U8, b.len() as u64, n)
            }
            SnapBody::Bulk(r) => {
                let n = if delta {
                    (0..r.chunks()).filter(|i| r.dirty(*i)).count()
                } else {
                    r.chunks()
                };
                (RegionKind::Bulk, r.elem(), r.len_bytes(), n)
            }
        };
        entries.push(RegionEntry {
            name: name.clone(),
            kind,
            elem,
            codec: CODEC_RAW,
            len_bytes,
            chunk_size: CHUNK_SIZE,
            chunk_count: u32::try_from(present).map_err(|_| WriteError::TooLarge("region"))?,
        });
    }
    let header = Header {
        format_version: FORMAT_VERSION,
        delta,
        task_kind: info.task_kind.clone(),
        task_version: info.task_version,
        progress: info.progress,
        progress_total: info.progress_total,
        epoch: info.epoch,
        created_unix_ms: info.created_unix_ms,
        isa: info.isa.clone(),
        board: info.board.clone(),
        base_hash: match mode {
            Mode::Full => [0; 32],
            Mode::Delta { base_hash } => base_hash,
        },
    };
    let mut out = Hashing {
        sink,
        hash: Sha256::new(),
    };
    out.put(&encode_header(&header, entries.len() as u16))?;
    out.put(&encode_table(&entries))?;
    let mut buf = Vec::new();
    buf.try_reserve(CHUNK_SIZE as usize + 16)
        .map_err(|_| WriteError::OutOfMemory)?;
    let cs = CHUNK_SIZE as usize;
    for (ri, (_, body)) in snap.regions.iter().enumerate() {
        let chunks = match body {
            SnapBody::Typed(b) => b.len().div_ceil(cs),
            SnapBody::Bulk(r) => r.chunks(),
        };
        for ci in 0..chunks {
            buf.clear();
            buf.extend_from_slice(&(ri as u32).to_le_bytes());
            buf.extend_from_slice(&(ci as u32).to_le_bytes());
            buf.extend_from_slice(&[0; 4]);
            match body {
                SnapBody::Typed(b) => {
                    buf.extend_from_slice(&b[ci * cs..((ci + 1) * cs).min(b.len())]);
                }
                SnapBody::Bulk(r) => {
                    if delta && !r.dirty(ci) {
                        continue;
                    }
                    r.encode(ci, &mut buf);
                }
            }
            let len = (buf.len() - 12) as u32;
            buf[8..12].copy_from_slice(&len.to_le_bytes());
            let crc = CRC32C.checksum(&buf);
            buf.extend_from_slice(&crc.to_le_bytes());
            out.put(&buf)?;
        }
    }
    out.put(&TRAILER_MAGIC)?;
    let hash: [u8; 32] = out.hash.finalize().into();
    out.sink.write_all(&hash)?;
    Ok(hash)
}
