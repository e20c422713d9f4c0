//! Streaming checkpoint writer (format v2): one chunk buffer, never a second
//! copy of the state; each bulk chunk's hash comes from the region's cache
//! when the chunk was not written since it was last hashed.

use crate::error::WriteError;
use crate::format::{
    chunk_hash, encode_header, encode_table, ChunkHash, Header, RegionEntry, RegionKind,
    RootHasher, CHUNK_SIZE, CODEC_RAW, FORMAT_VERSION, MAX_BOARD, MAX_ISA, MAX_KIND, MAX_NAME,
    MAX_REGIONS, TRAILER_MAGIC,
};
use crate::io::Sink;
use crate::region::BulkSource;
use crate::region::ElemType;
use crate::task::{SnapBody, Snapshot, Task};
use alloc::string::String;
use alloc::vec::Vec;

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
        /// Identity of the base checkpoint.
        base_hash: [u8; 32],
    },
}

fn check_str(s: &str, max: usize, field: &'static str) -> Result<(), WriteError> {
    if s.is_empty() || s.len() > max {
        return Err(WriteError::BadString(field));
    }
    Ok(())
}

/// What a snapshot becomes before any chunk is written: its header and
/// region table, encoded, and which chunk of which region each record is.
pub(crate) struct Plan {
    /// Header and region table bytes, CRCs included.
    pub prefix: Vec<u8>,
    /// The header.
    pub header: Header,
    /// The region table.
    pub entries: Vec<RegionEntry>,
    /// `(region, chunk)` of each record, in file order.
    pub records: Vec<(u32, u32)>,
}

impl Plan {
    pub(crate) fn new(
        info: &HeaderInfo,
        snap: &Snapshot<'_>,
        mode: Mode,
    ) -> Result<Self, WriteError> {
        check_str(&info.task_kind, MAX_KIND, "task_kind")?;
        check_str(&info.isa, MAX_ISA, "isa")?;
        check_str(&info.board, MAX_BOARD, "board")?;
        if snap.regions.len() > MAX_REGIONS {
            return Err(WriteError::TooLarge("region count"));
        }
        let delta = matches!(mode, Mode::Delta { .. });
        let mut entries = Vec::new();
        let mut records = Vec::new();
        for (ri, (name, body)) in snap.regions.iter().enumerate() {
            check_str(name, MAX_NAME, "region name")?;
            if entries.iter().any(|e: &RegionEntry| &e.name == name) {
                return Err(WriteError::DuplicateRegion(name.clone()));
            }
            let (kind, elem, len_bytes, chunks) = match body {
                SnapBody::Typed(b) => (
                    RegionKind::Typed,
                    ElemType::U8,
                    b.len() as u64,
                    b.len().div_ceil(CHUNK_SIZE as usize),
                ),
                SnapBody::Bulk(r) => (RegionKind::Bulk, r.elem(), r.len_bytes(), r.chunks()),
            };
            let before = records.len();
            for ci in 0..chunks {
                if delta && matches!(body, SnapBody::Bulk(r) if !r.dirty(ci)) {
                    continue;
                }
                let ci = u32::try_from(ci).map_err(|_| WriteError::TooLarge("region"))?;
                records.push((ri as u32, ci));
            }
            entries.push(RegionEntry {
                name: name.clone(),
                kind,
                elem,
                codec: CODEC_RAW,
                len_bytes,
                chunk_size: CHUNK_SIZE,
                chunk_count: u32::try_from(records.len() - before)
                    .map_err(|_| WriteError::TooLarge("region"))?,
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
        let mut prefix = encode_header(&header, entries.len() as u16);
        prefix.extend_from_slice(&encode_table(&entries));
        Ok(Self {
            prefix,
            header,
            entries,
            records,
        })
    }
}

/// Appends chunk `ci` of `body` to `out`.
pub(crate) fn encode_chunk(body: &SnapBody<'_>, ci: usize, out: &mut Vec<u8>) {
    match body {
        SnapBody::Typed(b) => {
            let cs = CHUNK_SIZE as usize;
            out.extend_from_slice(&b[ci * cs..((ci + 1) * cs).min(b.len())]);
        }
        SnapBody::Bulk(r) => r.encode(ci, out),
    }
}

/// The hash of chunk `ci` of `body`, whose bytes are `encoded`: a bulk
/// region's cached one, or computed now (and cached).
pub(crate) fn hash_chunk(body: &SnapBody<'_>, ci: usize, encoded: &[u8]) -> ChunkHash {
    match body {
        SnapBody::Typed(_) => chunk_hash(encoded),
        SnapBody::Bulk(r) => r.hash_of(ci, encoded),
    }
}

/// Writes `snap` as a format-v2 checkpoint into `sink`; returns its identity
/// (the root of its hash tree).
///
/// In [`Mode::Delta`] a bulk region contributes only its dirty chunks: the caller
/// clears the dirty marks after each capture that becomes a base.
pub fn write_checkpoint<S: Sink>(
    sink: &mut S,
    info: &HeaderInfo,
    snap: &Snapshot<'_>,
    mode: Mode,
) -> Result<[u8; 32], WriteError> {
    let plan = Plan::new(info, snap, mode)?;
    let mut root = RootHasher::new(&plan.prefix);
    sink.write_all(&plan.prefix)?;
    let mut buf = Vec::new();
    buf.try_reserve(CHUNK_SIZE as usize + 44)
        .map_err(|_| WriteError::OutOfMemory)?;
    for &(ri, ci) in &plan.records {
        let body = &snap.regions[ri as usize].1;
        buf.clear();
        buf.extend_from_slice(&ri.to_le_bytes());
        buf.extend_from_slice(&ci.to_le_bytes());
        buf.extend_from_slice(&[0; 4]);
        encode_chunk(body, ci as usize, &mut buf);
        let hash = hash_chunk(body, ci as usize, &buf[12..]);
        let len = (buf.len() - 12) as u32;
        buf[8..12].copy_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(&hash);
        root.leaf(ri, ci, len, &hash);
        sink.write_all(&buf)?;
    }
    let root = root.finish();
    sink.write_all(&TRAILER_MAGIC)?;
    sink.write_all(&root)?;
    Ok(root)
}
