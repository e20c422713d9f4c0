//! The task runner: migratable tasks stepped by the run loop, and the shell
//! commands that start, list, continue and stop them.
//!
//! The [`TaskTable`] is shared (`Rc<RefCell<…>>`) by the [`TaskRunner`]
//! service, which advances every running task by one step per poll so that
//! the shell stays responsive, and by the shell commands, which reach it
//! through [`Kernel::tasks`]. Checkpoints are taken between two polls, so a
//! task is always at a migration point when a command sees it.

use alloc::boxed::Box;
use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::fmt::{self, Write};

use tern_hal::MonotonicClock;
use tern_migration::{Step, Task};
use tern_workloads::{Class, Workload};

use crate::kernel::{Kernel, Service, ServiceStatus};
use crate::shell::{Command, CommandResult};

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
    /// The NPB workload.
    pub workload: Workload,
    /// Its problem class.
    pub class: Class,
    /// The task itself.
    pub task: Box<dyn Task>,
    /// Running, paused or finished.
    pub state: TaskState,
    /// Pause at the first migration point at or past this percentage.
    pub pause_at: Option<f64>,
    /// Ownership epoch: 1 for a fresh run, one more than the checkpoint's
    /// for a resumed one (as the host runner counts).
    pub epoch: u64,
}

impl TaskEntry {
    /// `task 3 (is S)`: how messages name the task.
    pub fn label(&self) -> String {
        format!(
            "task {} ({} {})",
            self.id,
            self.workload.name(),
            self.class.letter()
        )
    }
}

/// The node's tasks, in start order.
#[derive(Default)]
pub struct TaskTable {
    entries: Vec<TaskEntry>,
    next_id: u32,
    node_id: u64,
}

impl fmt::Debug for TaskTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<u32> = self.entries.iter().map(|e| e.id).collect();
        f.debug_struct("TaskTable").field("ids", &ids).finish()
    }
}

impl TaskTable {
    /// An empty table of the node `node_id` (see [`TaskTable::global_id`]).
    pub fn new(node_id: u64) -> Self {
        Self {
            entries: Vec::new(),
            next_id: 1,
            node_id,
        }
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

    /// Adds a task started here, in state `Running`; returns its id.
    pub fn add(
        &mut self,
        workload: Workload,
        class: Class,
        task: Box<dyn Task>,
        pause_at: Option<f64>,
        epoch: u64,
    ) -> u32 {
        let task_id = self.global_id(self.next_id);
        self.add_with_id(workload, class, task, pause_at, epoch, task_id)
    }

    /// Adds a task that keeps its global id `task_id` (a migrated one), in
    /// state `Running`; returns its local id.
    pub fn add_with_id(
        &mut self,
        workload: Workload,
        class: Class,
        task: Box<dyn Task>,
        pause_at: Option<f64>,
        epoch: u64,
        task_id: u64,
    ) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        self.entries.push(TaskEntry {
            id,
            task_id,
            workload,
            class,
            task,
            state: TaskState::Running,
            pause_at,
            epoch,
        });
        id
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

    /// Advances every running task by one step, printing to `out` when one
    /// finishes or reaches its pause point; returns whether any task ran.
    pub fn step_all(&mut self, out: &mut dyn Write) -> bool {
        let mut ran = false;
        for entry in &mut self.entries {
            if entry.state != TaskState::Running {
                continue;
            }
            ran = true;
            match entry.task.step() {
                Step::Running => {
                    let progress = entry.task.progress();
                    if entry.pause_at.is_some_and(|pct| progress.reached(pct)) {
                        entry.pause_at = None;
                        entry.state = TaskState::Paused;
                        let _ = writeln!(
                            out,
                            "{} paused at {:.1}%\r",
                            entry.label(),
                            progress.percent()
                        );
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
                    let _ = writeln!(out, "{}: {verdict}\r", entry.label());
                }
            }
        }
        ran
    }
}

/// How long the runner keeps stepping the tasks in one turn of the run
/// loop. A fast node takes many short steps per turn, so the other services
/// cost little beside them; a slow node takes one or two. (On the QEMU PC
/// node a turn of the other services costs about 0.5 ms: with 2 ms slices
/// NPB EP class S took 95 s there, with 10 ms 89 s.)
pub const SLICE_NS: u64 = 10_000_000;

/// The run-loop service that steps the shared [`TaskTable`].
pub struct TaskRunner {
    table: Rc<RefCell<TaskTable>>,
    clock: &'static dyn MonotonicClock,
}

impl TaskRunner {
    /// A runner stepping the tasks of `table` for slices timed by `clock`.
    pub fn new(table: Rc<RefCell<TaskTable>>, clock: &'static dyn MonotonicClock) -> Self {
        Self { table, clock }
    }
}

impl Service for TaskRunner {
    fn name(&self) -> &'static str {
        "tasks"
    }

    fn poll(&mut self, now_ns: u64, out: &mut dyn Write) -> ServiceStatus {
        // Borrowed means a command holds the table: nothing to do now.
        let Ok(mut table) = self.table.try_borrow_mut() else {
            return ServiceStatus::Idle;
        };
        let mut ran = false;
        while table.step_all(out) {
            ran = true;
            if self.clock.now_ns().saturating_sub(now_ns) >= SLICE_NS {
                break;
            }
        }
        if ran {
            ServiceStatus::Busy
        } else {
            ServiceStatus::Idle
        }
    }
}

/// The task commands: `run`, `ps`, `cont`, `kill`.
pub fn commands() -> [Command; 4] {
    [
        Command {
            name: "run",
            usage: "<ep|is|cg> <S|W|A|B> [--pause-at <percent>]",
            help: "start an NPB task",
            run,
        },
        Command {
            name: "ps",
            usage: "",
            help: "list tasks: id, workload, class, progress, state",
            run: ps,
        },
        Command {
            name: "cont",
            usage: "<id>",
            help: "continue a paused task",
            run: cont,
        },
        Command {
            name: "kill",
            usage: "<id>",
            help: "drop a task",
            run: kill,
        },
    ]
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

fn run(kernel: &mut Kernel, args: &[&str], out: &mut dyn Write) -> CommandResult {
    const USAGE: &str = "usage: run <ep|is|cg> <S|W|A|B> [--pause-at <percent>]";
    let (workload, class, pause_at) = match args {
        [w, c] => (w, c, None),
        [w, c, "--pause-at", pct] => (w, c, Some(pct)),
        _ => return Err(USAGE.into()),
    };
    let workload = Workload::parse(workload)
        .ok_or_else(|| format!("unknown workload '{workload}' (ep, is or cg)"))?;
    let class =
        Class::parse(class).ok_or_else(|| format!("unknown class '{class}' (S, W, A or B)"))?;
    let pause_at = match pause_at {
        Some(pct) => Some(
            pct.parse::<f64>()
                .ok()
                .filter(|p| (0.0..=100.0).contains(p))
                .ok_or_else(|| format!("'{pct}' is not a percentage (0 to 100)"))?,
        ),
        None => None,
    };
    let heap = kernel.board().heap_stats();
    let free = heap.total_bytes.saturating_sub(heap.used_bytes);
    let needed = workload.state_bytes(class);
    if needed > free {
        return Err(format!(
            "{} class {} needs {} KiB of memory, the heap has {} KiB free",
            workload.name(),
            class.letter(),
            needed.div_ceil(1024),
            free / 1024
        ));
    }
    let mut tasks = kernel.tasks().borrow_mut();
    let id = tasks.add(workload, class, workload.start(class), pause_at, 1);
    let _ = writeln!(
        out,
        "task {id} ({} {}) started\r",
        workload.name(),
        class.letter()
    );
    Ok(())
}

fn ps(kernel: &mut Kernel, _: &[&str], out: &mut dyn Write) -> CommandResult {
    let tasks = kernel.tasks().borrow();
    if tasks.entries().is_empty() {
        let _ = writeln!(out, "no tasks\r");
        return Ok(());
    }
    let _ = writeln!(
        out,
        "  id  task  class  progress  state      epoch  global id\r"
    );
    for e in tasks.entries() {
        let _ = writeln!(
            out,
            "{:>4}  {:<4}  {:<5}  {:>7.1}%  {:<9}  {:>5}  {:016x}\r",
            e.id,
            e.workload.name(),
            e.class.letter(),
            e.task.progress().percent(),
            e.state,
            e.epoch,
            e.task_id
        );
    }
    Ok(())
}

fn cont(kernel: &mut Kernel, args: &[&str], out: &mut dyn Write) -> CommandResult {
    let id = parse_id(args, "cont <id>")?;
    let mut tasks = kernel.tasks().borrow_mut();
    let entry = tasks.get_mut(id).ok_or_else(|| format!("no task {id}"))?;
    match entry.state {
        TaskState::Paused => {
            entry.state = TaskState::Running;
            let _ = writeln!(out, "{} continues\r", entry.label());
            Ok(())
        }
        state => Err(format!("task {id} is {state}, not paused")),
    }
}

fn kill(kernel: &mut Kernel, args: &[&str], out: &mut dyn Write) -> CommandResult {
    let id = parse_id(args, "kill <id>")?;
    let mut tasks = kernel.tasks().borrow_mut();
    let state = tasks
        .get_mut(id)
        .ok_or_else(|| format!("no task {id}"))?
        .state;
    // Until the receiver answers, the migration decides who owns the task.
    if state == TaskState::Migrating {
        return Err(format!(
            "task {id} is migrating; its owner is being decided"
        ));
    }
    let entry = tasks.remove(id).ok_or_else(|| format!("no task {id}"))?;
    let _ = writeln!(out, "{} killed\r", entry.label());
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::testing::{exec, run_tasks, FakeBoard};
    use crate::Kernel;
    use tern_hal::Isa;

    /// More polls than any class S run takes.
    const MAX_POLLS: usize = 1_000_000;

    #[test]
    fn run_is_s_verifies_and_ps_shows_it() {
        let mut kernel = Kernel::new(FakeBoard::leak());
        assert_eq!(exec(&mut kernel, "ps"), "no tasks\r\n");
        assert_eq!(exec(&mut kernel, "run is S"), "task 1 (is S) started\r\n");
        let ps = exec(&mut kernel, "ps");
        assert!(ps.contains("   1  is    S          0.0%  running"), "{ps}");
        let out = run_tasks(&mut kernel, MAX_POLLS);
        assert_eq!(out, "task 1 (is S): VERIFICATION SUCCESSFUL\r\n");
        let ps = exec(&mut kernel, "ps");
        assert!(ps.contains("   1  is    S        100.0%  verified"), "{ps}");
    }

    #[test]
    fn pause_at_cont_and_kill() {
        let mut kernel = Kernel::new(FakeBoard::leak());
        exec(&mut kernel, "run cg S --pause-at 25");
        exec(&mut kernel, "run is S --pause-at 40.5");
        let out = run_tasks(&mut kernel, MAX_POLLS);
        assert!(out.contains("task 1 (cg S) paused at 25."), "{out}");
        assert!(out.contains("task 2 (is S) paused at 4"), "{out}");
        let ps = exec(&mut kernel, "ps");
        assert_eq!(ps.matches("paused").count(), 2, "{ps}");
        assert_eq!(exec(&mut kernel, "cont 2"), "task 2 (is S) continues\r\n");
        assert_eq!(
            exec(&mut kernel, "cont 2"),
            "error: cont: task 2 is running, not paused\r\n"
        );
        assert_eq!(exec(&mut kernel, "kill 1"), "task 1 (cg S) killed\r\n");
        assert_eq!(exec(&mut kernel, "kill 1"), "error: kill: no task 1\r\n");
        let out = run_tasks(&mut kernel, MAX_POLLS);
        assert_eq!(out, "task 2 (is S): VERIFICATION SUCCESSFUL\r\n");
        assert_eq!(
            exec(&mut kernel, "cont 2"),
            "error: cont: task 2 is verified, not paused\r\n"
        );
        assert_eq!(
            exec(&mut kernel, "cont x"),
            "error: cont: 'x' is not a task id\r\n"
        );
    }

    #[test]
    fn run_rejects_bad_arguments() {
        let mut kernel = Kernel::new(FakeBoard::leak());
        for (line, error) in [
            ("run", "usage: run <ep|is|cg>"),
            ("run mg S", "unknown workload 'mg'"),
            ("run is Z", "unknown class 'Z'"),
            ("run is S --pause-at 150", "'150' is not a percentage"),
            ("run is S --stop 50", "usage: run"),
        ] {
            let out = exec(&mut kernel, line);
            assert!(
                out.starts_with("error: run: ") && out.contains(error),
                "{line}: {out}"
            );
        }
        assert_eq!(exec(&mut kernel, "ps"), "no tasks\r\n");
    }

    #[test]
    fn run_refuses_a_class_that_does_not_fit_the_heap() {
        let mut kernel = Kernel::new(FakeBoard::leak_with(Isa::X86_64, "pc", 16 << 20));
        // IS W needs 12 MiB: it fits in the 15 MiB free; CG A does not.
        assert_eq!(exec(&mut kernel, "run is W"), "task 1 (is W) started\r\n");
        let out = exec(&mut kernel, "run cg A");
        assert!(
            out.starts_with("error: run: cg class A needs ")
                && out.ends_with(" KiB of memory, the heap has 15360 KiB free\r\n"),
            "{out}"
        );
        assert_eq!(exec(&mut kernel, "kill 2"), "error: kill: no task 2\r\n");
    }
}
