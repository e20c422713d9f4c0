//! The task runner: migratable tasks stepped by the run loop.
//!
//! The [`TaskTable`] is shared ([`SharedTasks`]) by the [`TaskRunner`]
//! service, which steps every running task in turn until the run loop's
//! deadline so that the shell stays responsive, by the shell commands
//! ([`commands`]) and by the control service. Tasks are made and rebuilt by
//! the board's [`TaskCatalog`]: the kernel names no workload. Checkpoints
//! are taken between two polls, so a task is always at a migration point
//! when anyone else sees it.

mod commands;

use alloc::boxed::Box;
use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::fmt;

use tern_hal::{BoardFacts, MonotonicClock};
use tern_migration::{
    capture_timed, read_checkpoint, write_checkpoint, Capture, HeaderInfo, Limits, Manifest, Mode,
    NewTask, Restored, ResumeError, Snapshot, Step, Task, TaskCatalog,
};
use tern_protocol::{NodeEvent, TaskRef};

use crate::kernel::{Kernel, Service, ServiceStatus, Turn};

pub use commands::commands;

/// Where a task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskState {
    /// Stepped by the runner.
    Running,
    /// Waiting at a migration point for `cont`, `checkpoint` or `kill`.
    Paused,
    /// Paused at a migration point while a network migration's
    /// stop-and-copy runs: the receiver's ack moves it away, a failure
    /// before the commit gives it back its earlier state.
    Migrating,
    /// Done; `verified` tells whether its self-check passed.
    Finished {
        /// The workload's verification verdict.
        verified: bool,
    },
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Migrating => "migrating",
            Self::Finished { verified: true } => "verified",
            Self::Finished { verified: false } => "failed",
        })
    }
}

/// One task of the table.
pub struct TaskEntry {
    /// Number shown by `ps` and used by the commands.
    pub id: u32,
    /// Identity across nodes, kept by migrations: the protocol names the
    /// task by it (see [`TaskTable::global_id`]).
    pub task_id: u64,
    /// What the task is, as its catalog names it (`is S`).
    pub name: String,
    /// The task itself.
    pub task: Box<dyn Task>,
    /// Running, paused or finished.
    pub state: TaskState,
    /// Pause at the first migration point at or past this percentage.
    pub pause_at: Option<f64>,
    /// Ownership epoch: 1 for a fresh run, one more than the checkpoint's
    /// for a resumed one (as the host runner counts).
    pub epoch: u64,
    /// The name a client started the task under, if any: it travels with the
    /// task's checkpoints (region [`TAG_REGION`]).
    pub tag: Option<String>,
    /// A capture waits for the task's step to end: once it has, the runner
    /// begins no new step until its next poll (see
    /// [`TaskEntry::ready_for_capture`]).
    held: bool,
}

/// The checkpoint region that carries a task's tag: the kernel's, not the
/// task kind's (catalogs ignore regions they do not know).
pub const TAG_REGION: &str = "tern.tag";

impl TaskEntry {
    /// `task 3 (is S)`: how messages name the task.
    pub fn label(&self) -> String {
        format!("task {} ({})", self.id, self.name)
    }

    /// The task as events name it.
    pub fn task_ref(&self) -> TaskRef {
        TaskRef {
            task_id: self.task_id,
            local_id: self.id,
            name: self.name.clone(),
            tag: self.tag.clone(),
        }
    }

    /// Whether the task is at a migration point: only then can it be
    /// captured (a Wasm step that ran out of its budget ends on a later
    /// turn, and its `save` refuses meanwhile).
    pub fn at_migration_point(&self) -> bool {
        self.task.at_migration_point()
    }

    /// Whether the task can be captured now; if its step has not ended, the
    /// runner ends it and then keeps the task at that migration point until
    /// the run loop's next turn, so a capture that asks each turn gets it.
    /// (A runner that began the next step at once would leave a task whose
    /// step needs more than one budget mid-step at the end of every turn.)
    pub fn ready_for_capture(&mut self) -> bool {
        let ready = self.at_migration_point();
        self.held |= !ready;
        ready
    }

    /// The task's regions and its tag, at this migration point.
    fn snapshot(&self) -> Result<Snapshot<'_>, String> {
        let id = self.id;
        let mut snap = Snapshot::new();
        self.task
            .save(&mut snap)
            .map_err(|e| format!("capturing task {id}: {e}"))?;
        if let Some(tag) = &self.tag {
            snap.typed(TAG_REGION, tag)
                .map_err(|e| format!("capturing task {id}: {e}"))?;
        }
        Ok(snap)
    }

    fn header(&self, epoch: u64, facts: &BoardFacts) -> HeaderInfo {
        // The wall clock once SNTP set it; 0 ("unknown") before.
        HeaderInfo::for_task(
            &*self.task,
            epoch,
            crate::wallclock::now_unix_ms(),
            facts.isa.name(),
            facts.board,
        )
    }

    /// A checkpoint of the task at `epoch`, written on `facts`'s board, as a
    /// manifest and chunks: against `since` (the previous capture, whose
    /// chunks the receiver holds) only the chunks that changed are copied.
    /// Only chunks written since they were last hashed are hashed (timed
    /// on `clock`). Tasks are only stepped between polls; a task whose step
    /// has not ended ([`TaskEntry::at_migration_point`]) refuses.
    pub fn capture(
        &self,
        epoch: u64,
        facts: &BoardFacts,
        since: Option<&Manifest>,
        clock: &dyn MonotonicClock,
    ) -> Result<Capture, String> {
        let snap = self.snapshot()?;
        capture_timed(&self.header(epoch, facts), &snap, since, &|| clock.now_ns())
            .map_err(|e| format!("capturing task {}: {e}", self.id))
    }

    /// The chunks written since the last capture hashed them, and their
    /// bytes (see [`Snapshot::unhashed`]).
    pub fn unhashed(&self) -> (u32, u64) {
        self.snapshot().map_or((0, 0), |s| s.unhashed())
    }

    /// A full checkpoint file of the task at `epoch` (the serial console's
    /// transfers).
    pub fn checkpoint_file(&self, epoch: u64, facts: &BoardFacts) -> Result<Vec<u8>, String> {
        let snap = self.snapshot()?;
        let mut bytes = Vec::new();
        write_checkpoint(&mut bytes, &self.header(epoch, facts), &snap, Mode::Full)
            .map_err(|e| format!("writing the checkpoint of task {}: {e}", self.id))?;
        Ok(bytes)
    }
}

/// A task rebuilt from a checkpoint, ready to be added to the table.
pub struct Resumed {
    /// The task and its name.
    pub task: NewTask,
    /// `isa/board` of the node that wrote the checkpoint.
    pub from: String,
    /// The checkpoint's epoch.
    pub epoch: u64,
    /// The task's tag, if its checkpoint carried one.
    pub tag: Option<String>,
}

/// The node's tasks, in start order, and the catalog that makes them.
pub struct TaskTable {
    entries: Vec<TaskEntry>,
    next_id: u32,
    node_id: u64,
    catalog: Rc<dyn TaskCatalog>,
    /// Time the runner spent stepping tasks since boot.
    ran_ns: u64,
}

/// The task table as its users share it.
pub type SharedTasks = Rc<RefCell<TaskTable>>;

impl fmt::Debug for TaskTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<u32> = self.entries.iter().map(|e| e.id).collect();
        f.debug_struct("TaskTable").field("ids", &ids).finish()
    }
}

impl TaskTable {
    /// An empty table of the node `node_id` (see [`TaskTable::global_id`])
    /// whose tasks `catalog` makes.
    pub fn new(node_id: u64, catalog: Rc<dyn TaskCatalog>) -> Self {
        Self {
            entries: Vec::new(),
            next_id: 1,
            node_id,
            catalog,
            ran_ns: 0,
        }
    }

    /// Time the runner spent stepping tasks since boot (what a service
    /// waits for between two of its turns).
    pub fn ran_ns(&self) -> u64 {
        self.ran_ns
    }

    /// The catalog of task kinds this node runs.
    pub fn catalog(&self) -> &Rc<dyn TaskCatalog> {
        &self.catalog
    }

    /// Sets the node identity (once the network device's MAC is known).
    pub fn set_node_id(&mut self, node_id: u64) {
        self.node_id = node_id;
    }

    /// The global id of a task started here with local id `id`: the node
    /// id (48 bits, from the MAC) in the high bits, the low 16 bits of the
    /// local id below, so ids started on different nodes never collide.
    pub fn global_id(&self, id: u32) -> u64 {
        (self.node_id << 16) | u64::from(id & 0xffff)
    }

    /// Starts the task `args` name (the catalog's `run` arguments), under
    /// `tag` if given, if its state fits in `free_bytes`; returns its local id.
    pub fn start(
        &mut self,
        args: &[&str],
        pause_at: Option<f64>,
        free_bytes: u64,
        tag: Option<String>,
    ) -> Result<u32, String> {
        let plan = self.catalog.plan(args)?;
        if plan.state_bytes > free_bytes {
            return Err(format!(
                "{} needs {} KiB of memory, the heap has {} KiB free",
                plan.name,
                plan.state_bytes.div_ceil(1024),
                free_bytes / 1024
            ));
        }
        let task = self.catalog.start(args)?;
        Ok(self.add(task, pause_at, 1, tag))
    }

    /// Validates `bytes` completely and rebuilds its task with the catalog.
    pub fn resume(&self, bytes: &[u8], limits: &Limits) -> Result<Resumed, ResumeError> {
        let restored =
            read_checkpoint(bytes, limits).map_err(|e| format!("bad checkpoint: {e}"))?;
        self.resume_restored(restored)
    }

    /// Rebuilds the task of a validated checkpoint with the catalog.
    pub fn resume_restored(&self, restored: Restored) -> Result<Resumed, ResumeError> {
        let from = format!("{}/{}", restored.header.isa, restored.header.board);
        let epoch = restored.header.epoch;
        let tag = restored.typed::<String>(TAG_REGION).ok();
        let task = self.catalog.resume(restored)?;
        Ok(Resumed {
            task,
            from,
            epoch,
            tag,
        })
    }

    /// Adds a task started here, in state `Running`; returns its id.
    pub fn add(
        &mut self,
        task: NewTask,
        pause_at: Option<f64>,
        epoch: u64,
        tag: Option<String>,
    ) -> u32 {
        let task_id = self.global_id(self.next_id);
        self.add_with_id(task, pause_at, epoch, task_id, tag)
    }

    /// Adds a task that keeps its global id `task_id` (a migrated one), in
    /// state `Running`; returns its local id.
    pub fn add_with_id(
        &mut self,
        task: NewTask,
        pause_at: Option<f64>,
        epoch: u64,
        task_id: u64,
        tag: Option<String>,
    ) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        self.entries.push(TaskEntry {
            id,
            task_id,
            name: task.name,
            task: task.task,
            state: TaskState::Running,
            pause_at,
            epoch,
            tag,
            held: false,
        });
        id
    }

    /// The task started under `tag`, if one is here.
    pub fn by_tag(&mut self, tag: &str) -> Option<&mut TaskEntry> {
        self.entries
            .iter_mut()
            .find(|e| e.tag.as_deref() == Some(tag))
    }

    /// The task with this id.
    pub fn get_mut(&mut self, id: u32) -> Option<&mut TaskEntry> {
        self.entries.iter_mut().find(|e| e.id == id)
    }

    /// The task with this global id.
    pub fn by_task_id(&mut self, task_id: u64) -> Option<&mut TaskEntry> {
        self.entries.iter_mut().find(|e| e.task_id == task_id)
    }

    /// Drops the task with this id; returns it.
    pub fn remove(&mut self, id: u32) -> Option<TaskEntry> {
        let i = self.entries.iter().position(|e| e.id == id)?;
        Some(self.entries.remove(i))
    }

    /// Every task, in start order.
    pub fn entries(&self) -> &[TaskEntry] {
        &self.entries
    }

    /// Lets the runner step again the tasks a capture held at a migration
    /// point a turn ago (captured or not: a capture that gave up must not
    /// freeze its task).
    fn release_held(&mut self) {
        for entry in &mut self.entries {
            entry.held &= !entry.at_migration_point();
        }
    }

    /// Advances every running task by one step (but for one a capture holds
    /// at its migration point), and every task whose last step has not ended
    /// (a paused or migrating one too: a capture waits for it), reporting a task that finishes, reaches its pause point or logs;
    /// returns whether any task ran.
    pub fn step_all(&mut self, turn: &mut Turn<'_>) -> bool {
        let mut ran = false;
        for entry in &mut self.entries {
            let mid_step = !entry.task.at_migration_point();
            if (entry.state != TaskState::Running || entry.held) && !mid_step {
                continue;
            }
            ran = true;
            let step = entry.task.step();
            for line in entry.task.take_log() {
                turn.publish(NodeEvent::TaskLog {
                    task: entry.task_ref(),
                    line,
                });
            }
            match step {
                Step::Running => {
                    let progress = entry.task.progress();
                    let pause = entry.state == TaskState::Running
                        && entry.task.at_migration_point()
                        && entry.pause_at.is_some_and(|pct| progress.reached(pct));
                    if pause {
                        entry.pause_at = None;
                        entry.state = TaskState::Paused;
                        turn.publish(NodeEvent::TaskPaused {
                            task: entry.task_ref(),
                            progress: progress.done,
                            progress_total: progress.total,
                        });
                    }
                }
                Step::Finished { verified, report } => {
                    entry.state = TaskState::Finished { verified };
                    // The workload's own verdict line, e.g. NPB's
                    // "VERIFICATION SUCCESSFUL"; its full report is long.
                    let verdict = report
                        .lines()
                        .find(|l| l.contains("VERIFICATION"))
                        .map(str::trim)
                        .unwrap_or(if verified { "verified" } else { "failed" });
                    turn.publish(NodeEvent::TaskFinished {
                        task: entry.task_ref(),
                        epoch: entry.epoch,
                        verified,
                        verdict: verdict.into(),
                    });
                }
            }
        }
        ran
    }
}

/// The run-loop service that steps the shared [`TaskTable`].
pub struct TaskRunner {
    table: SharedTasks,
    clock: &'static dyn MonotonicClock,
}

impl TaskRunner {
    /// A runner stepping the tasks of `table`, timed by `clock`.
    pub fn new(table: SharedTasks, clock: &'static dyn MonotonicClock) -> Self {
        Self { table, clock }
    }
}

impl Service for TaskRunner {
    fn name(&self) -> &'static str {
        "tasks"
    }

    fn poll(&mut self, turn: &mut Turn<'_>) -> ServiceStatus {
        // Borrowed means a command holds the table: nothing to do now.
        let Ok(mut table) = self.table.try_borrow_mut() else {
            return ServiceStatus::Idle;
        };
        table.release_held();
        let started_ns = self.clock.now_ns();
        let mut ran = false;
        while table.step_all(turn) {
            ran = true;
            if self.clock.now_ns() >= turn.deadline_ns {
                break;
            }
        }
        table.ran_ns += self.clock.now_ns().saturating_sub(started_ns);
        if ran {
            ServiceStatus::Busy
        } else {
            ServiceStatus::Idle
        }
    }
}

/// Adds the task table to `kernel`: its runner and its shell commands.
/// Returns the table, for the other subsystems that use it.
pub fn install(kernel: &mut Kernel, node_id: u64, catalog: Rc<dyn TaskCatalog>) -> SharedTasks {
    let tasks = Rc::new(RefCell::new(TaskTable::new(node_id, catalog)));
    kernel.add_service(Box::new(TaskRunner::new(
        tasks.clone(),
        kernel.board().clock(),
    )));
    for command in commands(&tasks) {
        kernel.add_command(command);
    }
    tasks
}

/// Bytes the heap can still hand out.
pub fn free_heap(board: &dyn tern_hal::Board) -> u64 {
    let stats = board.heap_stats();
    stats.total_bytes.saturating_sub(stats.used_bytes)
}

/// Parses a task id argument.
pub(crate) fn parse_id(args: &[&str], usage: &str) -> Result<u32, String> {
    match args {
        [id] => id
            .parse::<u32>()
            .map_err(|_| format!("'{id}' is not a task id")),
        _ => Err(format!("usage: {usage}")),
    }
}
