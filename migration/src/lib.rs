//! Tasks with migration points and ISA-neutral checkpoints.
//!
//! A [`Task`] advances by [`Task::step`]; between two steps its whole state is
//! data, split into named regions: *typed* regions (serde + postcard) and *bulk*
//! regions ([`BulkRegion`], little-endian arrays with per-chunk dirty tracking).
//! [`write_checkpoint`] streams a task's regions into checkpoint format v1
//! (see `docs/checkpoint-format.md`), [`read_checkpoint`] validates and decodes
//! one, [`Registry`] turns a decoded checkpoint back into a running task, and
//! [`apply_delta`] brings a replica forward with a delta checkpoint.
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

mod delta;
mod error;
mod format;
mod io;
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
    ChunkRecord, Header, RegionEntry, RegionKind, CHUNK_SIZE, FORMAT_VERSION, MAGIC, TRAILER_MAGIC,
};
pub use io::{Sink, Source};
pub use reader::{read_checkpoint, Limits, Reader, RegionData, Restored};
pub use region::{BulkData, BulkRegion, Elem, ElemType};
pub use task::{
    describe_typed, hex_prefix, Catalogs, LoadError, ModuleId, ModuleRefusal, NewTask, Progress,
    Registry, ResumeError, Snapshot, Step, Task, TaskCatalog, TaskKind, TaskPlan,
};
pub use writer::{write_checkpoint, HeaderInfo, Mode};
