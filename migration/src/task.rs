//! The task API (steps, migration points, progress) and the registry of task kinds.

use crate::error::WriteError;
use crate::reader::Restored;
use crate::region::{BulkRef, BulkRegion, BulkSource, Elem};
use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{de::DeserializeOwned, Serialize};

/// Equal computation progress (thesis def. 3.1): `done` means the same amount of
/// work on every ISA; it only grows, and equals `total` at completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Work units done.
    pub done: u64,
    /// Work units of the whole task.
    pub total: u64,
}

impl Progress {
    /// Progress in percent (0 to 100; 100 for an empty task).
    pub fn percent(&self) -> f64 {
        if self.total == 0 {
            100.0
        } else {
            self.done as f64 * 100.0 / self.total as f64
        }
    }
    /// Whether at least `percent` of the work is done: the test that decides
    /// where a run stops for a migration ("stop at 50%").
    pub fn reached(&self, percent: f64) -> bool {
        self.done as f64 * 100.0 >= percent * self.total as f64
    }
}

/// What a step left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// More steps to go; the task is at a migration point.
    Running,
    /// The task is complete; `verified` tells whether its self-check passed, and
    /// `report` is the human-readable result.
    Finished {
        /// Whether the result passed verification.
        verified: bool,
        /// Result lines (e.g. NPB's `VERIFICATION SUCCESSFUL`).
        report: String,
    },
}

/// A migratable task: a state machine advanced by short steps. Between two steps
/// (a migration point) its whole state is the regions it saves.
pub trait Task {
    /// Stable task-kind name (registry key).
    fn kind(&self) -> &'static str;
    /// Version of the state layout (registry key with the name).
    fn version(&self) -> u32;
    /// Does a bounded amount of work (a few milliseconds at most).
    fn step(&mut self) -> Step;
    /// Progress at this migration point.
    fn progress(&self) -> Progress;
    /// Adds every region of the state to `snap` (typed regions are encoded now,
    /// bulk regions are borrowed and encoded chunk by chunk by the writer).
    fn save<'a>(&'a self, snap: &mut Snapshot<'a>) -> Result<(), WriteError>;
    /// Forgets the bulk regions' dirty marks (after a capture that becomes a base).
    fn clear_dirty(&mut self);
    /// Whether the task is at a migration point. A task whose step ran out
    /// of its time budget part-way (an interpreted one) is not, until a
    /// later [`Task::step`] ends that step: the runner keeps stepping it even
    /// when paused, and a capture waits for it.
    fn at_migration_point(&self) -> bool {
        true
    }
    /// The content-addressed module the task's code comes from, which a node
    /// must hold to resume it (`None`: code built into the kernel).
    fn module(&self) -> Option<ModuleId> {
        None
    }
    /// Lines the task logged since the last call (its own diagnostics).
    fn take_log(&mut self) -> Vec<String> {
        Vec::new()
    }
}

/// Identity of a task module: the SHA-256 of its bytes as a node stores them.
pub type ModuleId = [u8; 32];

/// Why a node refuses a task module (typed, so a peer can tell the cases
/// apart; a text with the details travels beside it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, thiserror::Error)]
pub enum ModuleRefusal {
    /// The node runs no task kind made from modules.
    #[error("this node runs no task modules")]
    Unsupported,
    /// Not a WebAssembly module this node's validator accepts.
    #[error("not a valid module")]
    Malformed,
    /// Larger than the node accepts.
    #[error("module too large")]
    TooLarge,
    /// It imports something other than the task ABI's imports.
    #[error("unknown import")]
    UnknownImport,
    /// It has a start function (code would run at instantiation).
    #[error("start function")]
    StartFunction,
    /// Its code changes a table, whose contents a checkpoint does not hold.
    #[error("table mutation")]
    TableMutation,
    /// Its code drops a data or element segment (state outside memory and globals).
    #[error("segment drop")]
    SegmentDrop,
    /// A function of the task ABI is not exported.
    #[error("missing export")]
    MissingExport,
    /// An export of the task ABI has the wrong type.
    #[error("export of the wrong type")]
    WrongExportType,
    /// Not exactly one 32-bit, unshared memory defined and exported as `memory`.
    #[error("unsupported memory")]
    Memory,
    /// Its initial memory is larger than a task may use here.
    #[error("memory over the limit")]
    MemoryTooLarge,
    /// A mutable global of a type a checkpoint cannot hold (references, vectors).
    #[error("unsupported mutable global")]
    UnsupportedGlobal,
    /// The node has no memory left to keep it.
    #[error("out of memory")]
    OutOfMemory,
}

/// Why a catalog could not rebuild a task from a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    /// The task's code is a module this node does not hold.
    #[error("the task's module {} is not held here", hex_prefix(.0))]
    MissingModule(ModuleId),
    /// Any other reason (the text says which).
    #[error("{0}")]
    Refused(String),
}

impl From<String> for ResumeError {
    fn from(why: String) -> Self {
        Self::Refused(why)
    }
}

impl From<&str> for ResumeError {
    fn from(why: &str) -> Self {
        Self::Refused(why.into())
    }
}

/// The first 8 bytes of a module id in hex, as messages name a module.
pub fn hex_prefix(id: &ModuleId) -> String {
    id[..8].iter().map(|b| alloc::format!("{b:02x}")).collect()
}

pub(crate) enum SnapBody<'a> {
    Typed(Vec<u8>),
    Bulk(BulkRef<'a>),
}

/// The regions of a task at a migration point, as handed to the writer.
#[derive(Default)]
pub struct Snapshot<'a> {
    pub(crate) regions: Vec<(String, SnapBody<'a>)>,
}

impl<'a> Snapshot<'a> {
    /// An empty snapshot.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a typed region (postcard encoding of `value`).
    pub fn typed<T: Serialize>(&mut self, name: &str, value: &T) -> Result<(), WriteError> {
        let bytes =
            postcard::to_allocvec(value).map_err(|_| WriteError::Encode(String::from(name)))?;
        self.regions
            .push((String::from(name), SnapBody::Typed(bytes)));
        Ok(())
    }
    /// Adds a bulk region (borrowed; encoded chunk by chunk while writing).
    pub fn bulk<T: Elem>(&mut self, name: &str, region: &'a BulkRegion<T>) {
        self.regions
            .push((String::from(name), SnapBody::Bulk(BulkRef::Region(region))));
    }
    /// Adds a bulk region of bytes the task does not own as a
    /// [`BulkRegion`] (an interpreter's linear memory): borrowed, encoded
    /// chunk by chunk while writing, every chunk counted as changed.
    pub fn bulk_bytes(&mut self, name: &str, bytes: &'a [u8]) {
        self.regions
            .push((String::from(name), SnapBody::Bulk(BulkRef::Bytes(bytes))));
    }
    /// Chunks written since they were last hashed, and their bytes: what a
    /// capture now would have to hash, an upper bound of what changed since
    /// the last capture (a typed region counts whole: it is encoded anew
    /// each time).
    pub fn unhashed(&self) -> (u32, u64) {
        let mut chunks = 0u32;
        let mut bytes = 0u64;
        for (_, body) in &self.regions {
            match body {
                SnapBody::Typed(b) => {
                    chunks += b.len().div_ceil(crate::CHUNK_SIZE as usize) as u32;
                    bytes += b.len() as u64;
                }
                SnapBody::Bulk(r) => {
                    let cs = u64::from(crate::CHUNK_SIZE);
                    for i in 0..r.chunks() {
                        if r.cached(i).is_none() {
                            chunks += 1;
                            bytes += (r.len_bytes() - i as u64 * cs).min(cs);
                        }
                    }
                }
            }
        }
        (chunks, bytes)
    }
    /// Total bytes of state in the snapshot (raw, before framing).
    pub fn state_bytes(&self) -> u64 {
        self.regions
            .iter()
            .map(|(_, b)| match b {
                SnapBody::Typed(v) => v.len() as u64,
                SnapBody::Bulk(r) => r.len_bytes(),
            })
            .sum()
    }
}

/// Why a validated checkpoint could not become a task.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// No registered task kind has this name.
    #[error("unknown task kind {0}")]
    UnknownKind(String),
    /// The kind is known but not at this version.
    #[error("task kind {kind}: version {found} not supported (this node has {supported})")]
    WrongVersion {
        /// Kind name.
        kind: String,
        /// Version in the checkpoint.
        found: u32,
        /// Version registered here.
        supported: u32,
    },
    /// A delta was given; only full checkpoints (or applied deltas) load.
    #[error("a delta checkpoint cannot be loaded on its own")]
    IsDelta,
    /// A region the task needs is absent.
    #[error("missing region {0}")]
    MissingRegion(String),
    /// A region has the wrong kind, element type or size.
    #[error("region {0} has the wrong shape")]
    BadRegion(String),
    /// A typed region does not decode.
    #[error("region {0} does not decode")]
    Decode(String),
    /// The decoded state is inconsistent (the message says how).
    #[error("inconsistent state: {0}")]
    Inconsistent(&'static str),
}

impl Restored {
    fn region(&self, name: &str) -> Result<usize, LoadError> {
        self.regions
            .iter()
            .position(|r| r.name == name)
            .ok_or_else(|| LoadError::MissingRegion(String::from(name)))
    }
    /// Decodes typed region `name`.
    pub fn typed<T: DeserializeOwned>(&self, name: &str) -> Result<T, LoadError> {
        let r = &self.regions[self.region(name)?];
        match (&r.kind, &r.data) {
            (crate::RegionKind::Typed, crate::BulkData::U8(b)) => {
                postcard::from_bytes(b).map_err(|_| LoadError::Decode(String::from(name)))
            }
            _ => Err(LoadError::BadRegion(String::from(name))),
        }
    }
    /// Moves bulk region `name` out (no copy) as a clean [`BulkRegion`] of `len` elements.
    pub fn take_bulk<T: Elem>(
        &mut self,
        name: &str,
        len: usize,
    ) -> Result<BulkRegion<T>, LoadError> {
        let i = self.region(name)?;
        let bad = || LoadError::BadRegion(String::from(name));
        if self.regions[i].kind != crate::RegionKind::Bulk {
            return Err(bad());
        }
        let data = core::mem::replace(&mut self.regions[i].data, crate::BulkData::U8(Vec::new()));
        let v = T::unwrap(data).ok_or_else(bad)?;
        if v.len() != len {
            return Err(bad());
        }
        Ok(BulkRegion::restored_with_hashes(
            v,
            &self.regions[i].chunk_hashes,
        ))
    }
}

/// A task kind a node can resume: stable name + version → loader.
#[derive(Clone, Copy)]
pub struct TaskKind {
    /// Stable name, as in checkpoints.
    pub name: &'static str,
    /// State layout version.
    pub version: u32,
    /// Rebuilds the task from a validated checkpoint.
    pub load: fn(Restored) -> Result<Box<dyn Task>, LoadError>,
    /// Human-readable decoding of one typed region (for `inspect`); `None` when
    /// the region is unknown to the kind.
    pub describe: fn(&str, &[u8]) -> Option<String>,
}

/// Maps task-kind names and versions to loaders, so a node can resume a task it
/// never started.
#[derive(Default, Clone)]
pub struct Registry {
    kinds: Vec<TaskKind>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }
    /// Registers a kind (a later registration of the same name replaces it).
    pub fn register(&mut self, kind: TaskKind) {
        self.kinds.retain(|k| k.name != kind.name);
        self.kinds.push(kind);
    }
    /// The kind registered under `name`.
    pub fn get(&self, name: &str) -> Option<&TaskKind> {
        self.kinds.iter().find(|k| k.name == name)
    }
    /// All registered kinds.
    pub fn kinds(&self) -> &[TaskKind] {
        &self.kinds
    }
    /// Checks kind and version, then lets the kind's loader rebuild the task.
    pub fn load(&self, restored: Restored) -> Result<Box<dyn Task>, LoadError> {
        if restored.header.delta {
            return Err(LoadError::IsDelta);
        }
        let h = &restored.header;
        let k = self
            .get(&h.task_kind)
            .ok_or_else(|| LoadError::UnknownKind(h.task_kind.clone()))?;
        if k.version != h.task_version {
            return Err(LoadError::WrongVersion {
                kind: h.task_kind.clone(),
                found: h.task_version,
                supported: k.version,
            });
        }
        (k.load)(restored)
    }
}

/// What a [`TaskCatalog`] would make of `run`'s arguments, before it
/// allocates anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskPlan {
    /// How messages name the task (`ep S`).
    pub name: String,
    /// Bytes its state will take, so a node can refuse a task that does
    /// not fit before starting it.
    pub state_bytes: u64,
}

/// A task a [`TaskCatalog`] made or rebuilt, with its name.
pub struct NewTask {
    /// How messages name the task (`ep S`).
    pub name: String,
    /// The task, at a migration point.
    pub task: Box<dyn Task>,
}

/// The task kinds a node can start (shell `run`, a peer's `StartTask`) and
/// resume from checkpoints. The board hands its catalog to the kernel, so
/// the kernel itself names no workload.
pub trait TaskCatalog {
    /// The arguments the catalog takes, for `run`'s usage line
    /// (`<ep|is|cg> <S|W|A|B>`).
    fn usage(&self) -> &str;
    /// Checks `args`; what they would start.
    fn plan(&self, args: &[&str]) -> Result<TaskPlan, String>;
    /// Starts the task `args` name (checked by [`TaskCatalog::plan`] first).
    fn start(&self, args: &[&str]) -> Result<NewTask, String>;
    /// Rebuilds the task of a validated checkpoint.
    fn resume(&self, restored: Restored) -> Result<NewTask, ResumeError>;
    /// The kinds and state versions this catalog resumes.
    fn kinds(&self) -> Vec<(String, u32)>;
    /// Whether `run`'s arguments `args` are for this catalog (a
    /// [`Catalogs`] asks its members in turn).
    fn claims(&self, args: &[&str]) -> bool {
        let _ = args;
        true
    }
    /// Checks a task module and keeps it; returns its identity (the same
    /// module offered again is kept once).
    fn add_module(&self, bytes: &[u8]) -> Result<ModuleId, (ModuleRefusal, String)> {
        let _ = bytes;
        Err((
            ModuleRefusal::Unsupported,
            "no task kind here runs modules".into(),
        ))
    }
    /// The bytes of module `id`, if this node holds it (to send it to a peer).
    fn module(&self, id: &ModuleId) -> Option<Rc<[u8]>> {
        let _ = id;
        None
    }
}

/// Several catalogs as one: `run`'s arguments go to the first member that
/// claims them, a checkpoint to the member that names its kind, a module to
/// the first member that takes modules.
pub struct Catalogs {
    members: Vec<Rc<dyn TaskCatalog>>,
    usage: String,
}

impl Catalogs {
    /// The catalogs `members`, asked in this order.
    pub fn new(members: Vec<Rc<dyn TaskCatalog>>) -> Self {
        let usage = members
            .iter()
            .map(|c| c.usage())
            .collect::<Vec<_>>()
            .join(" | ");
        Self { members, usage }
    }

    fn for_args(&self, args: &[&str]) -> Result<&Rc<dyn TaskCatalog>, String> {
        self.members
            .iter()
            .find(|c| c.claims(args))
            .ok_or_else(|| alloc::format!("{} expected", self.usage()))
    }
}

impl TaskCatalog for Catalogs {
    fn usage(&self) -> &str {
        &self.usage
    }
    fn plan(&self, args: &[&str]) -> Result<TaskPlan, String> {
        self.for_args(args)?.plan(args)
    }
    fn start(&self, args: &[&str]) -> Result<NewTask, String> {
        self.for_args(args)?.start(args)
    }
    fn resume(&self, restored: Restored) -> Result<NewTask, ResumeError> {
        let kind = restored.header.task_kind.clone();
        let member = self
            .members
            .iter()
            .find(|c| c.kinds().iter().any(|(k, _)| *k == kind))
            .ok_or_else(|| alloc::format!("unknown task kind {kind}"))?;
        member.resume(restored)
    }
    fn kinds(&self) -> Vec<(String, u32)> {
        self.members.iter().flat_map(|c| c.kinds()).collect()
    }
    fn claims(&self, args: &[&str]) -> bool {
        self.members.iter().any(|c| c.claims(args))
    }
    fn add_module(&self, bytes: &[u8]) -> Result<ModuleId, (ModuleRefusal, String)> {
        let mut refusal = (
            ModuleRefusal::Unsupported,
            String::from("no task kind here runs modules"),
        );
        for c in &self.members {
            match c.add_module(bytes) {
                Err((ModuleRefusal::Unsupported, _)) => {}
                Err(other) => refusal = other,
                Ok(id) => return Ok(id),
            }
        }
        Err(refusal)
    }
    fn module(&self, id: &ModuleId) -> Option<Rc<[u8]>> {
        self.members.iter().find_map(|c| c.module(id))
    }
}

/// Renders a typed region's postcard bytes as `T`'s `Debug` form (a helper for
/// [`TaskKind::describe`]).
pub fn describe_typed<T: DeserializeOwned + core::fmt::Debug>(bytes: &[u8]) -> String {
    match postcard::from_bytes::<T>(bytes) {
        Ok(v) => alloc::format!("{v:?}"),
        Err(_) => String::from("<does not decode>"),
    }
}
