//! One validating pass over a checkpoint that records what it saw instead of
//! stopping at the first error silently: the base of show, verify, diff, export.

use crate::origin::Origin;
use anyhow::Result;
use serde::Serialize;
use std::io::Write;
use tern_migration::std_io::ReadSource;
use tern_migration::{
    ChunkCheck, Header, Limits, ReadError, Reader, RegionEntry, RegionKind, FORMAT_V1,
};

/// What was found about one region.
pub struct RegionInfo {
    /// Its table entry.
    pub entry: RegionEntry,
    /// Chunks read with a valid checksum.
    pub chunks_ok: u32,
    /// Stored check per chunk index: CRC-32C (v1) or BLAKE3 hash (v2)
    /// (`None`: absent from a delta, or unread).
    pub chunk_checks: Vec<Option<ChunkCheck>>,
    /// True when the failure happened in this region.
    pub failed: bool,
    /// Typed region rendered by its task kind.
    pub decoded: Option<String>,
}

impl RegionInfo {
    /// Checksum state for humans.
    pub fn state(&self) -> String {
        if self.failed {
            "BAD".into()
        } else if self.chunks_ok == self.entry.chunk_count {
            "ok".into()
        } else {
            format!(
                "unread ({} of {} checked)",
                self.chunks_ok, self.entry.chunk_count
            )
        }
    }
    fn ok(&self) -> bool {
        !self.failed && self.chunks_ok == self.entry.chunk_count
    }
}

/// Where validation failed.
pub struct Failure {
    /// Region, when the failure is inside one.
    pub region: Option<String>,
    /// Chunk index, when known.
    pub chunk: Option<u32>,
    /// The reader's error.
    pub error: ReadError,
}

impl Failure {
    /// One-line description naming region and chunk.
    pub fn describe(&self) -> String {
        if matches!(
            self.error,
            ReadError::ChunkCrc { .. }
                | ReadError::ChunkHash { .. }
                | ReadError::ChunkLength { .. }
        ) {
            // These errors name region and chunk themselves.
            return self.error.to_string();
        }
        match (&self.region, self.chunk) {
            (Some(r), Some(c)) => format!("region {r} chunk {c}: {}", self.error),
            (Some(r), None) => format!("region {r}: {}", self.error),
            _ => self.error.to_string(),
        }
    }
}

/// Result of a walk.
pub struct Walk {
    /// Header, when it validated.
    pub header: Option<Header>,
    /// Regions, when the table validated.
    pub regions: Vec<RegionInfo>,
    /// The checkpoint's identity when it matched: v1's whole-file SHA-256,
    /// v2's root over the chunk hashes.
    pub hash: Option<[u8; 32]>,
    /// The first failure, if any.
    pub failure: Option<Failure>,
}

/// Reads the checkpoint from `origin`, checking everything; with `export`, the
/// named region's chunk bytes are written to the writer as they pass.
pub fn walk(origin: &dyn Origin, mut export: Option<(&str, &mut dyn Write)>) -> Result<Walk> {
    let src = ReadSource(origin.open()?);
    let mut w = Walk {
        header: None,
        regions: Vec::new(),
        hash: None,
        failure: None,
    };
    let mut reader = match Reader::open(src, &Limits::default()) {
        Ok(r) => r,
        Err(error) => {
            w.failure = Some(Failure {
                region: None,
                chunk: None,
                error,
            });
            return Ok(w);
        }
    };
    w.header = Some(reader.header().clone());
    for e in reader.regions() {
        w.regions.push(RegionInfo {
            entry: e.clone(),
            chunks_ok: 0,
            chunk_checks: vec![None; e.total_chunks() as usize],
            failed: false,
            decoded: None,
        });
    }
    let registry = tern_workloads::registry();
    let task_kind = &reader.header().task_kind;
    // Wasm tasks are no compiled-in kind: their regions decode alike
    // whatever the module.
    let describe: Option<Describe> = match registry.get(task_kind) {
        Some(k) => Some(k.describe),
        None if task_kind == tern_wasm::KIND => Some(tern_wasm::describe),
        None => None,
    };
    let mut typed: Vec<Vec<u8>> = vec![Vec::new(); w.regions.len()];
    let mut buf = Vec::new();
    loop {
        match reader.next_chunk(&mut buf) {
            Ok(Some(c)) => {
                let ri = c.region as usize;
                let r = &mut w.regions[ri];
                r.chunks_ok += 1;
                r.chunk_checks[c.chunk as usize] = Some(c.check);
                if r.entry.kind == RegionKind::Typed {
                    typed[ri].extend_from_slice(&buf);
                }
                if let Some((name, out)) = export.as_mut() {
                    if *name == r.entry.name {
                        out.write_all(&buf)?;
                    }
                }
            }
            Ok(None) => break,
            Err(error) => {
                // The chunk expected next: the first region not complete yet.
                let at = w
                    .regions
                    .iter()
                    .position(|r| r.chunks_ok < r.entry.chunk_count);
                let (region, chunk) = match at {
                    Some(i) => {
                        w.regions[i].failed = true;
                        let r = &w.regions[i];
                        let idx =
                            (!w.header.as_ref().is_some_and(|h| h.delta)).then_some(r.chunks_ok);
                        (Some(r.entry.name.clone()), idx)
                    }
                    None => (None, None),
                };
                w.failure = Some(Failure {
                    region,
                    chunk,
                    error,
                });
                return Ok(w);
            }
        }
    }
    match reader.finish() {
        Ok(h) => w.hash = Some(h),
        Err(error) => {
            w.failure = Some(Failure {
                region: None,
                chunk: None,
                error,
            })
        }
    }
    if let Some(describe) = describe {
        for (r, bytes) in w.regions.iter_mut().zip(&typed) {
            if r.entry.kind == RegionKind::Typed && r.ok() {
                r.decoded = describe(&r.entry.name, bytes);
            }
        }
    }
    Ok(w)
}

/// Renders a typed region of a task kind for people (region name, bytes).
type Describe = fn(&str, &[u8]) -> Option<String>;

/// `show --json`: the stable, documented form (docs/checkpoint-format.md).
#[derive(Serialize)]
pub struct ShowJson {
    format_version: Option<u16>,
    ok: bool,
    error: Option<String>,
    delta: Option<bool>,
    sha256: Option<String>,
    base_sha256: Option<String>,
    root: Option<String>,
    base_root: Option<String>,
    task: Option<TaskJson>,
    progress: Option<u64>,
    progress_total: Option<u64>,
    epoch: Option<u64>,
    created_unix_ms: Option<u64>,
    source: Option<SourceJson>,
    regions: Vec<RegionJson>,
}

#[derive(Serialize)]
struct TaskJson {
    kind: String,
    version: u32,
}

#[derive(Serialize)]
struct SourceJson {
    isa: String,
    board: String,
}

#[derive(Serialize)]
struct RegionJson {
    name: String,
    kind: &'static str,
    elem: &'static str,
    codec: &'static str,
    bytes: u64,
    chunk_size: u32,
    chunks: u32,
    chunks_ok: u32,
    ok: bool,
    decoded: Option<String>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Walk {
    /// What the identity is called in this checkpoint's format version.
    pub fn identity_name(&self) -> &'static str {
        match self.header.as_ref().map(|h| h.format_version) {
            Some(FORMAT_V1) => "sha256",
            _ => "root",
        }
    }

    /// The JSON document of `show --json`.
    pub fn json(&self) -> ShowJson {
        let h = self.header.as_ref();
        let v1 = h.is_some_and(|h| h.format_version == FORMAT_V1);
        ShowJson {
            format_version: h.map(|h| h.format_version),
            ok: self.failure.is_none(),
            error: self.failure.as_ref().map(Failure::describe),
            delta: h.map(|h| h.delta),
            sha256: self.hash.as_ref().filter(|_| v1).map(|x| hex(x)),
            base_sha256: h.filter(|h| h.delta && v1).map(|h| hex(&h.base_hash)),
            root: self.hash.as_ref().filter(|_| !v1).map(|x| hex(x)),
            base_root: h.filter(|h| h.delta && !v1).map(|h| hex(&h.base_hash)),
            task: h.map(|h| TaskJson {
                kind: h.task_kind.clone(),
                version: h.task_version,
            }),
            progress: h.map(|h| h.progress),
            progress_total: h.map(|h| h.progress_total),
            epoch: h.map(|h| h.epoch),
            created_unix_ms: h.map(|h| h.created_unix_ms),
            source: h.map(|h| SourceJson {
                isa: h.isa.clone(),
                board: h.board.clone(),
            }),
            regions: self
                .regions
                .iter()
                .map(|r| RegionJson {
                    name: r.entry.name.clone(),
                    kind: r.entry.kind.name(),
                    elem: r.entry.elem.name(),
                    codec: "raw",
                    bytes: r.entry.len_bytes,
                    chunk_size: r.entry.chunk_size,
                    chunks: r.entry.chunk_count,
                    chunks_ok: r.chunks_ok,
                    ok: r.ok(),
                    decoded: r.decoded.clone(),
                })
                .collect(),
        }
    }
}
