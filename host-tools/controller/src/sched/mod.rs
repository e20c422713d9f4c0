//! The scheduling core: the cluster and the tasks as the controller
//! believes them to be, and the decisions that follow from each change.
//!
//! It is sans-IO: every method takes the current time, updates the state
//! and returns [`Action`]s (start this task there, migrate that one, stop
//! another) for its caller to carry out; the caller reports back what
//! happened (started, finished, migrated, failed). The live controller
//! ([`crate::engine`]) carries the actions out on real nodes, the simulator
//! ([`crate::sim`]) in simulated time: both run this code.
//!
//! Early-binding policies (the thesis's, the list heuristics, local-only)
//! put each task in one node's queue when it is submitted; a node starts
//! the head of its queue when its free CPU and memory hold it (the
//! thesis's platform: needs are reservations). Tern's policy keeps tasks
//! here and starts each on the core where it is predicted to finish first,
//! as cores free up, and moves running tasks by live migration
//! ([`crate::policy::tern`]).

mod dispatch;
mod nodes;
mod tasks;
mod views;

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::estimate::History;
use crate::model::{NodeId, NodeSpec, PolicyKind, TaskId, TaskSpec};
use crate::policy::tern::{self, FreeNode, Pairs, RunningView};
use crate::policy::{self, fits, GaConfig, NodeView, TaskView};

/// The core's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedConfig {
    /// Whether Tern's policy may move running tasks by live migration.
    pub migration: bool,
    /// The predicted cost of one live migration, in seconds.
    pub migration_s: f64,
    /// The genetic algorithm's parameters.
    pub ga: GaConfig,
    /// Start requests a task may see refused before it is given up.
    pub max_start_failures: u32,
}

impl Default for SchedConfig {
    fn default() -> Self {
        Self {
            migration: true,
            migration_s: 1.0,
            ga: GaConfig::default(),
            max_start_failures: 3,
        }
    }
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Start `task` on `node`.
    Start {
        /// The task.
        task: TaskId,
        /// The node.
        node: NodeId,
    },
    /// Move running `task` from `from` to `to` by live migration.
    Migrate {
        /// The task.
        task: TaskId,
        /// Its node.
        from: NodeId,
        /// The node it moves to.
        to: NodeId,
    },
    /// Stop `task` on `node` (cancelled).
    Stop {
        /// The task.
        task: TaskId,
        /// Its node.
        node: NodeId,
    },
    /// `task` cannot be run (refused too often); record it as failed.
    GiveUp {
        /// The task.
        task: TaskId,
    },
}

/// A node's availability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Takes work.
    Up,
    /// Takes no new work; its tasks leave.
    Draining,
    /// Unreachable (its lease expired).
    Down,
}

impl NodeState {
    /// The name used in JSON and the UI.
    pub fn name(self) -> &'static str {
        match self {
            NodeState::Up => "up",
            NodeState::Draining => "draining",
            NodeState::Down => "down",
        }
    }
}

/// Where a task is, as the core sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// Waiting at the controller (Tern's queue, or no node fits yet).
    Pending,
    /// In a node's queue (early-binding policies).
    Queued {
        /// The node.
        node: NodeId,
    },
    /// A start request is out.
    Starting {
        /// The node.
        node: NodeId,
    },
    /// Running.
    Running {
        /// The node.
        node: NodeId,
        /// Since when (there).
        since: f64,
        /// Share of the work done, 0 to 1.
        progress: f64,
    },
    /// Moving by live migration (it runs on `from` until the cut-over).
    Migrating {
        /// The node it leaves.
        from: NodeId,
        /// The node it goes to.
        to: NodeId,
        /// When it started on `from`.
        since: f64,
        /// Share of the work done.
        progress: f64,
    },
    /// Its node died; a standby replica is expected to take over.
    Orphaned {
        /// The dead node.
        node: NodeId,
    },
    /// Finished, failed or cancelled: out of the core.
    Over,
}

#[derive(Debug, Clone)]
struct Node {
    spec: NodeSpec,
    state: NodeState,
    /// Waiting tasks placed here by an early-binding policy, in order.
    queue: VecDeque<TaskId>,
    /// Tasks holding its resources (starting, running, migrating in or out).
    holding: Vec<TaskId>,
}

#[derive(Debug, Clone)]
struct Task {
    spec: TaskSpec,
    key: String,
    policy: PolicyKind,
    phase: Phase,
    /// Why it waits, when no node can hold it.
    reason: Option<String>,
    /// Whether it probes its (program, board) pair.
    probe: bool,
    /// Whether it ran on more than one node (its time is not learned).
    moved: bool,
    /// Core-seconds of work done in its current run (its share of the
    /// node's cores integrated over time).
    core_secs: f64,
    /// When `core_secs` was last brought up to date.
    accounted_at: f64,
    /// Refused start requests.
    start_failures: u32,
    /// No migration of it is tried before this time (after a failed one).
    hold_until: f64,
}

impl Task {
    /// A task of `spec` under `policy`, in `phase` since `now`, with
    /// nothing done, probed or refused yet; `moved` when it ran elsewhere
    /// before (a restored run).
    fn new(spec: TaskSpec, policy: PolicyKind, phase: Phase, moved: bool, now: f64) -> Self {
        Self {
            key: spec.timing_key(),
            spec,
            policy,
            phase,
            reason: None,
            probe: false,
            moved,
            core_secs: 0.0,
            accounted_at: now,
            start_failures: 0,
            hold_until: 0.0,
        }
    }
}

/// The scheduling core.
#[derive(Debug, Clone)]
pub struct Scheduler {
    config: SchedConfig,
    history: History,
    nodes: BTreeMap<NodeId, Node>,
    tasks: BTreeMap<TaskId, Task>,
    /// Tasks in [`Phase::Pending`], in submission order.
    waiting: Vec<TaskId>,
    /// Runs learned since the last [`Scheduler::take_learned`].
    learned: Vec<Learned>,
}

/// A run the history learned from (for the caller to persist).
#[derive(Debug, Clone, PartialEq)]
pub struct Learned {
    /// The task.
    pub task: TaskId,
    /// Its timing key.
    pub key: String,
    /// The board.
    pub board: String,
    /// The node.
    pub node: NodeId,
    /// Core-seconds it took.
    pub secs: f64,
}

/// Why a refused migration is not retried for a while, in seconds.
const MIGRATION_BACKOFF_S: f64 = 30.0;

impl Scheduler {
    /// An empty core that starts from `history`.
    pub fn new(config: SchedConfig, history: History) -> Self {
        Self {
            config,
            history,
            nodes: BTreeMap::new(),
            tasks: BTreeMap::new(),
            waiting: Vec::new(),
            learned: Vec::new(),
        }
    }

    /// The runs learned since the last call.
    pub fn take_learned(&mut self) -> Vec<Learned> {
        std::mem::take(&mut self.learned)
    }

    /// Reconsiders everything (after [`Scheduler::restore`]).
    pub fn tick(&mut self, now: f64) -> Vec<Action> {
        self.dispatch(now)
    }

    /// A restarted controller found a task on `node`, not where it left it
    /// (it moved just before): it runs there.
    pub fn relocate(&mut self, now: f64, task: TaskId, node: NodeId) {
        let (old, progress) = match self.tasks.get(&task).map(|t| t.phase.clone()) {
            Some(Phase::Running {
                node: n, progress, ..
            }) => (n, progress),
            Some(Phase::Starting { node: n }) => (n, 0.0),
            Some(Phase::Migrating {
                from, to, progress, ..
            }) => {
                self.release(to, task);
                (from, progress)
            }
            _ => return,
        };
        self.release(old, task);
        if let Some(n) = self.nodes.get_mut(&node) {
            n.holding.push(task);
        }
        let t = self.tasks.get_mut(&task).expect("exists");
        t.phase = Phase::Running {
            node,
            since: now,
            progress,
        };
        t.moved = true;
        t.accounted_at = now;
    }

    /// A task its node no longer has (found missing after a restart): it
    /// waits to start again.
    pub fn lost(&mut self, now: f64, task: TaskId) -> Vec<Action> {
        let at = match self.tasks.get(&task).map(|t| t.phase.clone()) {
            Some(Phase::Running { node, .. }) | Some(Phase::Starting { node }) => node,
            Some(Phase::Migrating { from, to, .. }) => {
                self.release(to, task);
                from
            }
            _ => return Vec::new(),
        };
        self.release(at, task);
        let t = self.tasks.get_mut(&task).expect("exists");
        t.phase = Phase::Pending;
        t.moved = true;
        self.waiting.push(task);
        self.dispatch(now)
    }

    /// The settings.
    pub fn config(&self) -> &SchedConfig {
        &self.config
    }

    /// What has been learned.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// A task's phase, if the core knows it.
    pub fn phase(&self, task: TaskId) -> Option<&Phase> {
        self.tasks.get(&task).map(|t| &t.phase)
    }

    /// Why a waiting task waits, if no node can hold it.
    pub fn reason(&self, task: TaskId) -> Option<&str> {
        self.tasks.get(&task).and_then(|t| t.reason.as_deref())
    }

    /// Whether a task was started as a probe of its (program, board) pair.
    pub fn is_probe(&self, task: TaskId) -> bool {
        self.tasks.get(&task).is_some_and(|t| t.probe)
    }

    /// A node's state.
    pub fn node_state(&self, node: NodeId) -> Option<NodeState> {
        self.nodes.get(&node).map(|n| n.state)
    }

    /// A node's description.
    pub fn node_spec(&self, node: NodeId) -> Option<&NodeSpec> {
        self.nodes.get(&node).map(|n| &n.spec)
    }

    /// Cores and memory (MB) claimed on a node by the tasks holding it.
    pub fn node_usage(&self, node: NodeId) -> (f64, u64) {
        self.nodes.get(&node).map_or((0.0, 0), |n| {
            n.holding.iter().fold((0.0, 0), |(c, m), t| {
                let s = &self.tasks[t].spec;
                (c + s.cpu, m + s.memory_mb)
            })
        })
    }

    /// Whether every task is over.
    pub fn is_idle(&self) -> bool {
        self.tasks.values().all(|t| t.phase == Phase::Over)
    }

    /// Tasks not over.
    pub fn active(&self) -> usize {
        self.tasks
            .values()
            .filter(|t| t.phase != Phase::Over)
            .count()
    }
}
