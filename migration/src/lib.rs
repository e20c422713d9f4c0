//! Tasks with migration points and ISA-neutral checkpoints.
//!
//! A [`Task`] advances by [`Task::step`]; between two steps its whole state is
//! data, split into named regions: *typed* regions (serde + postcard) and *bulk*
//! regions ([`BulkRegion`], little-endian arrays with per-chunk dirty tracking).
//! [`write_checkpoint`] streams a task's regions into checkpoint format v2
//! (see `docs/checkpoint-format.md`), [`read_checkpoint`] validates and decodes
//! one (v1 or v2), [`Registry`] turns a decoded checkpoint back into a running
//! task, and [`apply_delta`] brings a replica forward with a delta checkpoint.
//! [`capture`] takes a checkpoint as a [`Manifest`] and chunks, the form live
//! migrations move: bulk chunks are hashed once per write, and a round copies
//! only the chunks that changed since the previous one.
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

mod delta;
mod error;
mod format;
mod io;
mod manifest;
mod reader;
mod region;
pub mod serial_transfer;
#[cfg(feature = "std")]
pub mod std_io;
mod task;
mod writer;

pub use delta::apply_delta;
pub use error::{ReadError, WriteError};
pub use format::{
    chunk_hash, ChunkCheck, ChunkHash, ChunkRecord, Header, RegionEntry, RegionKind, RootHasher,
    CHUNK_SIZE, FORMAT_V1, FORMAT_VERSION, MAGIC, RECORD_FRAMING_V2, TRAILER_LEN, TRAILER_MAGIC,
};
pub use io::{Sink, Source};
pub use manifest::{capture, capture_timed, Capture, Layout, Manifest, Slot};
pub use reader::{read_checkpoint, Limits, Reader, RegionData, Restored};
pub use region::{BulkData, BulkRegion, Elem, ElemType};
pub use task::{
    describe_typed, hex_prefix, Catalogs, LoadError, ModuleId, ModuleRefusal, NewTask, Progress,
    Registry, ResumeError, Snapshot, Step, Task, TaskCatalog, TaskKind, TaskPlan,
};
pub use writer::{write_checkpoint, HeaderInfo, Mode};
