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

    // ---- nodes -------------------------------------------------------

    /// A node joins (or rejoins after [`Scheduler::remove_node`]).
    pub fn add_node(&mut self, now: f64, id: NodeId, spec: NodeSpec) -> Vec<Action> {
        self.nodes.insert(
            id,
            Node {
                spec,
                state: NodeState::Up,
                queue: VecDeque::new(),
                holding: Vec::new(),
            },
        );
        self.dispatch(now)
    }

    /// A node that was down answers again.
    pub fn node_up(&mut self, now: f64, id: NodeId) -> Vec<Action> {
        if let Some(n) = self.nodes.get_mut(&id) {
            if n.state == NodeState::Down {
                n.state = NodeState::Up;
            }
        }
        self.dispatch(now)
    }

    /// Drains a node: nothing new starts there, its queue is placed
    /// again, and its running tasks leave by migration as cores elsewhere
    /// free up.
    pub fn drain(&mut self, now: f64, id: NodeId) -> Vec<Action> {
        if let Some(n) = self.nodes.get_mut(&id) {
            if n.state == NodeState::Up {
                n.state = NodeState::Draining;
            }
        }
        self.requeue_node_queue(id);
        self.dispatch(now)
    }

    /// A node stopped answering: its queue is placed again; its tasks
    /// restart elsewhere, except robust ones, which wait for their standby
    /// ([`Scheduler::failed_over`]).
    pub fn node_down(&mut self, now: f64, id: NodeId) -> Vec<Action> {
        let Some(node) = self.nodes.get_mut(&id) else {
            return Vec::new();
        };
        node.state = NodeState::Down;
        self.account(now, id);
        self.requeue_node_queue(id);
        let holding = std::mem::take(&mut self.nodes.get_mut(&id).expect("present").holding);
        for t in holding {
            let task = self.tasks.get_mut(&t).expect("held tasks exist");
            match task.phase.clone() {
                Phase::Migrating { from, .. } if from != id => {
                    // The target died: the task stays where it is.
                    task.phase = Phase::Running {
                        node: from,
                        since: now,
                        progress: 0.0,
                    };
                    task.hold_until = now + MIGRATION_BACKOFF_S;
                }
                Phase::Migrating { to, .. } => {
                    self.release(to, t);
                    self.restart_or_orphan(t, id);
                }
                Phase::Running { .. } | Phase::Starting { .. } => self.restart_or_orphan(t, id),
                _ => {}
            }
        }
        self.dispatch(now)
    }

    fn restart_or_orphan(&mut self, t: TaskId, node: NodeId) {
        let task = self.tasks.get_mut(&t).expect("exists");
        if task.spec.robust && matches!(task.phase, Phase::Running { .. }) {
            task.phase = Phase::Orphaned { node };
        } else {
            task.phase = Phase::Pending;
            task.core_secs = 0.0;
            task.moved = true;
            task.reason = None;
            self.waiting.push(t);
        }
    }

    /// Removes a node that holds no task.
    pub fn remove_node(&mut self, id: NodeId) -> Result<(), String> {
        let Some(n) = self.nodes.get(&id) else {
            return Ok(());
        };
        if !n.holding.is_empty() {
            return Err(format!(
                "{} still runs {} task(s): drain it first",
                n.spec.name,
                n.holding.len()
            ));
        }
        self.requeue_node_queue(id);
        self.nodes.remove(&id);
        Ok(())
    }

    fn requeue_node_queue(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        for t in std::mem::take(&mut node.queue) {
            if let Some(task) = self.tasks.get_mut(&t) {
                task.phase = Phase::Pending;
                self.waiting.push(t);
            }
        }
    }

    // ---- tasks -------------------------------------------------------

    /// Takes a submission; early-binding policies place it at once.
    pub fn submit(
        &mut self,
        now: f64,
        tasks: Vec<(TaskId, TaskSpec)>,
        policy: PolicyKind,
    ) -> Vec<Action> {
        for (id, spec) in tasks {
            self.tasks.insert(
                id,
                Task {
                    key: spec.timing_key(),
                    spec,
                    policy,
                    phase: Phase::Pending,
                    reason: None,
                    probe: false,
                    moved: false,
                    core_secs: 0.0,
                    accounted_at: now,
                    start_failures: 0,
                    hold_until: 0.0,
                },
            );
            self.waiting.push(id);
        }
        self.dispatch(now)
    }

    /// Puts a task back where a restarted controller found it: on `node`
    /// (running since `since`, `progress` done) or, with `None`, waiting.
    pub fn restore(
        &mut self,
        now: f64,
        id: TaskId,
        spec: TaskSpec,
        policy: PolicyKind,
        at: Option<(NodeId, f64, f64)>,
    ) {
        let phase = match at {
            Some((node, since, progress)) if self.nodes.contains_key(&node) => {
                self.nodes.get_mut(&node).expect("checked").holding.push(id);
                Phase::Running {
                    node,
                    since,
                    progress,
                }
            }
            _ => {
                self.waiting.push(id);
                Phase::Pending
            }
        };
        self.tasks.insert(
            id,
            Task {
                key: spec.timing_key(),
                spec,
                policy,
                phase,
                reason: None,
                probe: false,
                moved: at.is_some(),
                core_secs: 0.0,
                accounted_at: now,
                start_failures: 0,
                hold_until: 0.0,
            },
        );
    }

    /// The node confirmed the start.
    pub fn started(&mut self, now: f64, task: TaskId, node: NodeId) -> Vec<Action> {
        self.account(now, node);
        if let Some(t) = self.tasks.get_mut(&task) {
            if t.phase == (Phase::Starting { node }) {
                t.phase = Phase::Running {
                    node,
                    since: now,
                    progress: 0.0,
                };
                t.core_secs = 0.0;
                t.accounted_at = now;
            }
        }
        Vec::new()
    }

    /// The node refused or did not answer the start request; `given_up`:
    /// the request itself was at fault (its program's module refused, say),
    /// so the task fails now instead of being tried again.
    pub fn start_failed(
        &mut self,
        now: f64,
        task: TaskId,
        node: NodeId,
        why: &str,
        given_up: bool,
    ) -> Vec<Action> {
        self.release(node, task);
        let limit = if given_up {
            1
        } else {
            self.config.max_start_failures
        };
        let mut actions = Vec::new();
        if let Some(t) = self.tasks.get_mut(&task) {
            if t.phase != (Phase::Starting { node }) {
                return Vec::new();
            }
            t.start_failures += 1;
            if t.start_failures >= limit {
                t.phase = Phase::Over;
                t.reason = Some(if given_up {
                    format!("start refused: {why}")
                } else {
                    format!("{} start requests refused; last: {why}", t.start_failures)
                });
                actions.push(Action::GiveUp { task });
            } else {
                t.phase = Phase::Pending;
                t.reason = Some(format!("start refused: {why}"));
                self.waiting.insert(0, task);
            }
        }
        actions.extend(self.dispatch(now));
        actions
    }

    /// A running task's progress (0 to 1), as its node reports it.
    pub fn progress(&mut self, task: TaskId, fraction: f64) {
        if let Some(t) = self.tasks.get_mut(&task) {
            if let Phase::Running { progress, .. } | Phase::Migrating { progress, .. } =
                &mut t.phase
            {
                *progress = fraction.clamp(0.0, 1.0);
            }
        }
    }

    /// A task ended on `node` (`ok`: it verified). Its time there is
    /// learned, as core-seconds, unless it moved during the run.
    pub fn finished(&mut self, now: f64, task: TaskId, node: NodeId, ok: bool) -> Vec<Action> {
        let Some(t) = self.tasks.get(&task) else {
            return Vec::new();
        };
        let on_node = match t.phase {
            Phase::Running { node: n, .. } | Phase::Starting { node: n } => n == node,
            Phase::Migrating { from, .. } => from == node,
            Phase::Orphaned { .. } => true,
            _ => false,
        };
        if !on_node {
            return Vec::new();
        }
        self.account(now, node);
        let t = self.tasks.get_mut(&task).expect("checked");
        if let Phase::Migrating { to, .. } = t.phase {
            // It finished during the pre-copy: the target's place is free again.
            self.release(to, task);
        }
        let t = self.tasks.get_mut(&task).expect("checked");
        t.phase = Phase::Over;
        let (moved, key, secs) = (t.moved, t.key.clone(), t.core_secs);
        self.release(node, task);
        if ok && !moved && secs > 0.0 {
            if let Some(n) = self.nodes.get(&node) {
                let board = n.spec.board.clone();
                self.history.record(&key, &board, node, secs);
                self.learned.push(Learned {
                    task,
                    key,
                    board,
                    node,
                    secs,
                });
            }
        }
        self.dispatch(now)
    }

    /// A migration completed: the task runs on `to`.
    pub fn migrated(&mut self, now: f64, task: TaskId, from: NodeId, to: NodeId) -> Vec<Action> {
        self.account(now, from);
        if let Some(t) = self.tasks.get_mut(&task) {
            if let Phase::Migrating {
                from: f,
                to: dest,
                progress,
                ..
            } = t.phase
            {
                if f == from && dest == to {
                    t.phase = Phase::Running {
                        node: to,
                        since: now,
                        progress,
                    };
                    t.moved = true;
                    t.accounted_at = now;
                    self.release(from, task);
                }
            }
        }
        self.dispatch(now)
    }

    /// A migration failed: the task still runs on `from`.
    pub fn migration_failed(
        &mut self,
        now: f64,
        task: TaskId,
        from: NodeId,
        to: NodeId,
    ) -> Vec<Action> {
        if let Some(t) = self.tasks.get_mut(&task) {
            if let Phase::Migrating {
                from: f,
                since,
                progress,
                ..
            } = t.phase
            {
                if f == from {
                    t.phase = Phase::Running {
                        node: from,
                        since,
                        progress,
                    };
                    t.hold_until = now + MIGRATION_BACKOFF_S;
                    self.release(to, task);
                }
            }
        }
        self.dispatch(now)
    }

    /// A robust task's standby on `to` took over after its node died (or
    /// fell silent: the standby's lease may run out before the
    /// controller's, while the task still runs there as far as the core
    /// knows).
    pub fn failed_over(&mut self, now: f64, task: TaskId, to: NodeId) -> Vec<Action> {
        let left = match self.tasks.get(&task).map(|t| t.phase.clone()) {
            Some(Phase::Orphaned { .. }) => Vec::new(),
            Some(Phase::Running { node, .. }) if node != to => vec![node],
            Some(Phase::Migrating { from, to: dest, .. }) => vec![from, dest],
            _ => return Vec::new(),
        };
        for node in left {
            self.account(now, node);
            self.release(node, task);
        }
        self.account(now, to);
        if let Some(t) = self.tasks.get_mut(&task) {
            t.phase = Phase::Running {
                node: to,
                since: now,
                progress: 0.0,
            };
            t.moved = true;
            t.accounted_at = now;
            if let Some(n) = self.nodes.get_mut(&to) {
                n.holding.push(task);
            }
        }
        self.dispatch(now)
    }

    /// An orphaned task's standby never took over: it restarts.
    pub fn failover_missed(&mut self, now: f64, task: TaskId) -> Vec<Action> {
        if let Some(t) = self.tasks.get_mut(&task) {
            if let Phase::Orphaned { node } = t.phase {
                t.spec.robust = false;
                self.restart_or_orphan(task, node);
            }
        }
        self.dispatch(now)
    }

    /// Cancels a task; a running one is stopped on its node(s).
    pub fn cancel(&mut self, now: f64, task: TaskId) -> Vec<Action> {
        let Some(t) = self.tasks.get_mut(&task) else {
            return Vec::new();
        };
        let phase = std::mem::replace(&mut t.phase, Phase::Over);
        let mut actions = Vec::new();
        match phase {
            Phase::Pending => self.waiting.retain(|w| *w != task),
            Phase::Queued { node } => {
                if let Some(n) = self.nodes.get_mut(&node) {
                    n.queue.retain(|w| *w != task);
                }
            }
            Phase::Starting { node } | Phase::Running { node, .. } => {
                self.release(node, task);
                actions.push(Action::Stop { task, node });
            }
            Phase::Migrating { from, to, .. } => {
                self.release(from, task);
                self.release(to, task);
                actions.push(Action::Stop { task, node: from });
            }
            Phase::Orphaned { .. } | Phase::Over => {}
        }
        actions.extend(self.dispatch(now));
        actions
    }

    // ---- internals ---------------------------------------------------

    fn release(&mut self, node: NodeId, task: TaskId) {
        if let Some(n) = self.nodes.get_mut(&node) {
            n.holding.retain(|t| *t != task);
        }
    }

    /// Tasks executing on `node` now (running, or migrating away).
    fn executing(&self, node: NodeId) -> Vec<TaskId> {
        self.nodes.get(&node).map_or(Vec::new(), |n| {
            n.holding
                .iter()
                .copied()
                .filter(|t| match self.tasks[t].phase {
                    Phase::Running { node: at, .. } => at == node,
                    Phase::Migrating { from, .. } => from == node,
                    _ => false,
                })
                .collect()
        })
    }

    /// The share of a core each task executing on `node` gets.
    fn rate(&self, node: NodeId) -> f64 {
        let n = self.executing(node).len();
        let cores = self.nodes.get(&node).map_or(1.0, |x| x.spec.cores);
        if n == 0 {
            1.0
        } else {
            (cores / n as f64).min(1.0)
        }
    }

    /// Brings the core-seconds of the tasks executing on `node` up to `now`.
    fn account(&mut self, now: f64, node: NodeId) {
        let rate = self.rate(node);
        for t in self.executing(node) {
            let task = self.tasks.get_mut(&t).expect("exists");
            task.core_secs += (now - task.accounted_at).max(0.0) * rate;
            task.accounted_at = now;
        }
    }

    fn task_view(&self, id: TaskId) -> TaskView {
        let t = &self.tasks[&id];
        TaskView {
            id,
            key: t.key.clone(),
            cpu: t.spec.cpu,
            memory_mb: t.spec.memory_mb,
            gpu: t.spec.gpu,
            offload: t.spec.offload,
        }
    }

    fn running_view(&self, id: TaskId) -> Option<RunningView> {
        let t = &self.tasks[&id];
        let Phase::Running {
            node,
            since,
            progress,
        } = t.phase
        else {
            return None;
        };
        let n = self.nodes.get(&node)?;
        Some(RunningView {
            task: id,
            key: t.key.clone(),
            node,
            board: n.spec.board.clone(),
            since,
            progress,
            rate: self.rate(node),
            draining: n.state != NodeState::Up,
            view: self.task_view(id),
        })
    }

    /// Nodes that take new work, with predicted core ready times.
    fn node_views(&self, now: f64) -> Vec<NodeView> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.state == NodeState::Up)
            .map(|(&id, n)| {
                let slots = NodeView::slots(n.spec.cores);
                let mut ends: Vec<f64> = n
                    .holding
                    .iter()
                    .map(|&t| match self.running_view(t) {
                        Some(r) if r.node == id => {
                            now + tern::remaining_here(now, &r, &self.history)
                        }
                        // Starting here, or arriving by migration.
                        _ => {
                            now + self
                                .history
                                .predict(&self.tasks[&t].key, &n.spec.board)
                                .secs
                        }
                    })
                    .collect();
                ends.sort_by(f64::total_cmp);
                let mut ready = vec![now; slots];
                for (k, e) in ends.into_iter().enumerate() {
                    if k < slots {
                        ready[k] = e;
                    } else {
                        // More tasks than cores: they share; the earliest core absorbs it.
                        let min = min_index(&ready);
                        ready[min] += e - now;
                    }
                }
                for &t in &n.queue {
                    let min = min_index(&ready);
                    ready[min] += self
                        .history
                        .predict(&self.tasks[&t].key, &n.spec.board)
                        .secs;
                }
                ready.sort_by(f64::total_cmp);
                let (_, used) = self.node_usage(id);
                let queued: u64 = n.queue.iter().map(|t| self.tasks[t].spec.memory_mb).sum();
                NodeView {
                    id,
                    board: n.spec.board.clone(),
                    cores: n.spec.cores,
                    memory_mb: n.spec.memory_mb,
                    gpu: n.spec.gpu,
                    local: n.spec.local,
                    free_memory_mb: n.spec.memory_mb as i64 - used as i64 - queued as i64,
                    queue_len: n.queue.len(),
                    ready,
                }
            })
            .collect()
    }

    /// Why no node can hold `view`, counted over every known node.
    fn unfit_reason(&self, view: &TaskView) -> Option<String> {
        let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
        let mut fit = 0;
        for n in self.nodes.values() {
            let v = NodeView {
                id: 0,
                board: String::new(),
                cores: n.spec.cores,
                memory_mb: n.spec.memory_mb,
                gpu: n.spec.gpu,
                local: n.spec.local,
                free_memory_mb: 0,
                queue_len: 0,
                ready: Vec::new(),
            };
            let why = if !view.offload && !n.spec.local {
                Some("not local")
            } else if view.gpu && !n.spec.gpu {
                Some("gpu")
            } else if view.cpu > n.spec.cores + 1e-9 {
                Some("cpu")
            } else if view.memory_mb > n.spec.memory_mb {
                Some("memory")
            } else if n.state != NodeState::Up {
                Some(n.state.name())
            } else {
                debug_assert!(fits(view, &v));
                None
            };
            match why {
                Some(w) => *counts.entry(w).or_default() += 1,
                None => fit += 1,
            }
        }
        if fit > 0 {
            return None;
        }
        let total = self.nodes.len();
        if total == 0 {
            return Some("0/0 nodes: no node has joined".into());
        }
        let detail = if counts.len() == 1 {
            counts
                .keys()
                .next()
                .copied()
                .unwrap_or_default()
                .to_string()
        } else {
            counts
                .iter()
                .map(|(w, c)| format!("{c} {w}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        Some(format!("0/{total} nodes: {detail}"))
    }

    /// Whether `node` can start `task` now.
    fn can_start(&self, node: NodeId, task: TaskId, one_per_core: bool) -> bool {
        let Some(n) = self.nodes.get(&node) else {
            return false;
        };
        let spec = &self.tasks[&task].spec;
        let (cpu, mem) = self.node_usage(node);
        n.state == NodeState::Up
            && cpu + spec.cpu <= n.spec.cores + 1e-9
            && mem + spec.memory_mb <= n.spec.memory_mb
            && (!one_per_core || n.holding.len() < NodeView::slots(n.spec.cores))
    }

    fn start(&mut self, now: f64, task: TaskId, node: NodeId, probe: bool) -> Action {
        self.account(now, node);
        let t = self.tasks.get_mut(&task).expect("exists");
        t.phase = Phase::Starting { node };
        t.probe = probe;
        t.reason = None;
        self.nodes
            .get_mut(&node)
            .expect("exists")
            .holding
            .push(task);
        Action::Start { task, node }
    }

    /// Everything that can happen now: place waiting tasks, start queued
    /// and planned ones, migrate.
    fn dispatch(&mut self, now: f64) -> Vec<Action> {
        let mut actions = Vec::new();
        self.place_waiting(now);
        // Early binding: each node starts the head of its queue while it fits.
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for &id in &ids {
            while let Some(&head) = self.nodes[&id].queue.front() {
                if !self.can_start(id, head, false) {
                    break;
                }
                self.nodes.get_mut(&id).expect("exists").queue.pop_front();
                actions.push(self.start(now, head, id, false));
            }
        }
        self.dispatch_tern(now, &mut actions);
        actions
    }

    /// Places waiting early-binding tasks that some node can hold, and
    /// records why the others wait.
    fn place_waiting(&mut self, now: f64) {
        let mut by_policy: BTreeMap<PolicyKind, Vec<TaskView>> = BTreeMap::new();
        let waiting = std::mem::take(&mut self.waiting);
        let mut keep = Vec::new();
        for id in waiting {
            if self.tasks[&id].phase != Phase::Pending {
                continue;
            }
            let view = self.task_view(id);
            let reason = self.unfit_reason(&view);
            let task = self.tasks.get_mut(&id).expect("exists");
            if reason.is_some() || task.start_failures == 0 {
                task.reason = reason.clone();
            }
            if reason.is_none() && task.policy != PolicyKind::Tern {
                by_policy.entry(task.policy).or_default().push(view);
            } else {
                keep.push(id);
            }
        }
        self.waiting = keep;
        if by_policy.is_empty() {
            return;
        }
        let mut nodes = self.node_views(now);
        for (policy, tasks) in by_policy {
            // Tasks that may not leave the local node go there, whatever the policy.
            let (local, offload): (Vec<TaskView>, Vec<TaskView>) =
                tasks.into_iter().partition(|t| !t.offload);
            let mut placed = policy::place(
                PolicyKind::Local,
                &nodes,
                &local,
                &self.history,
                &self.config.ga,
            );
            placed.extend(policy::place(
                policy,
                &nodes,
                &offload,
                &self.history,
                &self.config.ga,
            ));
            for (t, n) in placed {
                self.tasks.get_mut(&t).expect("exists").phase = Phase::Queued { node: n };
                self.nodes
                    .get_mut(&n)
                    .expect("placed on a node")
                    .queue
                    .push_back(t);
            }
            // The next policy sees these queues.
            nodes = self.node_views(now);
        }
        // Anything a policy left out waits.
        let left: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(id, t)| t.phase == Phase::Pending && !self.waiting.contains(id))
            .map(|(id, _)| *id)
            .collect();
        self.waiting.extend(left);
    }

    /// Tern's dispatch: plan the waiting tasks; move running tasks that
    /// would otherwise finish after all of them (the makespan's critical
    /// ones, typically misplaced before their pair was known) to free cores
    /// first; start what the plan puts on a free core now; then any other
    /// move worth its cost.
    fn dispatch_tern(&mut self, now: f64, actions: &mut Vec<Action>) {
        let tern: Vec<TaskView> = self
            .waiting
            .iter()
            .filter(|id| {
                let t = &self.tasks[*id];
                t.policy == PolicyKind::Tern && t.reason.is_none()
            })
            .map(|&id| self.task_view(id))
            .collect();
        let plan = if tern.is_empty() {
            Vec::new()
        } else {
            let probing: Pairs = self
                .tasks
                .values()
                .filter(|t| t.probe && t.phase != Phase::Over)
                .filter_map(|t| match t.phase {
                    Phase::Starting { node } | Phase::Running { node, .. } => {
                        Some((t.key.clone(), self.nodes.get(&node)?.spec.board.clone()))
                    }
                    _ => None,
                })
                .collect();
            let nodes = self.node_views(now);
            tern::plan(now, &nodes, &tern, &self.history, &probing)
        };
        if self.config.migration {
            let last = plan.iter().map(|p| p.end).fold(now, f64::max);
            self.migrate(now, Some(last + self.config.migration_s), actions);
        }
        let mut started = Vec::new();
        for p in plan {
            if p.start <= now + 1e-9 && self.can_start(p.node, p.task, true) {
                actions.push(self.start(now, p.task, p.node, p.probe));
                started.push(p.task);
            }
        }
        self.waiting.retain(|id| !started.contains(id));
        if self.config.migration {
            self.migrate(now, None, actions);
        }
    }

    /// Live migrations onto free cores. With `critical_after`, only of
    /// tasks predicted to end after it (and of draining nodes' tasks).
    fn migrate(&mut self, now: f64, critical_after: Option<f64>, actions: &mut Vec<Action>) {
        let free: Vec<FreeNode> = self
            .node_views(now)
            .into_iter()
            .filter_map(|view| {
                let n = &self.nodes[&view.id];
                let slots = NodeView::slots(n.spec.cores);
                let cores = slots.saturating_sub(n.holding.len());
                let (_, used) = self.node_usage(view.id);
                (cores > 0).then(|| FreeNode {
                    memory_mb: n.spec.memory_mb as i64 - used as i64,
                    cores,
                    node: view,
                })
            })
            .collect();
        if free.is_empty() {
            return;
        }
        let running: Vec<RunningView> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.hold_until <= now)
            .filter_map(|(&id, t)| {
                let r = self.running_view(id)?;
                let critical = critical_after
                    .is_none_or(|after| now + tern::remaining_here(now, &r, &self.history) > after);
                (r.draining || (t.policy == PolicyKind::Tern && critical)).then_some(r)
            })
            .collect();
        for (task, from, to) in
            tern::migrations(now, &free, &running, &self.history, self.config.migration_s)
        {
            self.account(now, from);
            let t = self.tasks.get_mut(&task).expect("exists");
            if let Phase::Running {
                since, progress, ..
            } = t.phase
            {
                t.phase = Phase::Migrating {
                    from,
                    to,
                    since,
                    progress,
                };
                self.nodes.get_mut(&to).expect("exists").holding.push(task);
                actions.push(Action::Migrate { task, from, to });
            }
        }
    }
}

fn min_index(v: &[f64]) -> usize {
    (0..v.len())
        .min_by(|a, b| v[*a].total_cmp(&v[*b]))
        .unwrap_or(0)
}
