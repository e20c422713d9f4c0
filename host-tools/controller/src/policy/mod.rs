//! The placement policies. Each one sees the same picture of the cluster
//! ([`NodeView`]) and of the tasks to place ([`TaskView`]), built by the
//! scheduling core ([`crate::sched`]), and answers with decisions; none of
//! them does I/O, so the live controller and the simulator share them.
//!
//! - [`thesis`]: memory-first and the genetic algorithm, as published;
//! - [`heuristics`]: min-min, max-min and sufferage;
//! - [`tern`]: Tern's default (predicted completion times, probes, migration).

pub mod heuristics;
pub mod tern;
pub mod thesis;

use crate::estimate::History;
use crate::model::{NodeId, PolicyKind, TaskId};

/// A node as the policies see it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    /// Its id.
    pub id: NodeId,
    /// Its board.
    pub board: String,
    /// Its cores.
    pub cores: f64,
    /// Its memory in MB.
    pub memory_mb: u64,
    /// Whether it has a GPU.
    pub gpu: bool,
    /// Whether it is the local node.
    pub local: bool,
    /// Memory not claimed by tasks running or queued there (may be negative).
    pub free_memory_mb: i64,
    /// Tasks waiting in its queue.
    pub queue_len: usize,
    /// When each core is predicted to be free, ascending (one entry per
    /// whole core, at least one).
    pub ready: Vec<f64>,
}

impl NodeView {
    /// Whole cores (a task is single-threaded: one core each), at least one.
    pub fn slots(cores: f64) -> usize {
        (cores.floor() as usize).max(1)
    }
}

/// A task to place, as the policies see it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskView {
    /// Its id.
    pub id: TaskId,
    /// Its timing key (program and arguments).
    pub key: String,
    /// CPU need in cores.
    pub cpu: f64,
    /// Memory need in MB.
    pub memory_mb: u64,
    /// Whether it needs a GPU.
    pub gpu: bool,
    /// Whether it may leave the local node.
    pub offload: bool,
}

/// Whether `node` can ever hold `task` (its whole capacity, not what is free now).
pub fn fits(task: &TaskView, node: &NodeView) -> bool {
    task.cpu <= node.cores + 1e-9
        && task.memory_mb <= node.memory_mb
        && (node.gpu || !task.gpu)
        && (task.offload || node.local)
}

/// The genetic algorithm's parameters. The thesis publishes the selection,
/// the survival and mutation rates, the crossover and the generations; it
/// does not publish the population size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GaConfig {
    /// Individuals per generation (not published: our choice).
    pub population: usize,
    /// Generations (published: 500).
    pub generations: usize,
    /// Share of a generation that survives by roulette selection (published: 30%).
    pub survive: f64,
    /// Probability that a new individual mutates (published: 30%).
    pub mutation: f64,
    /// Seed of its random choices.
    pub seed: u64,
}

impl Default for GaConfig {
    fn default() -> Self {
        Self {
            population: 100,
            generations: 500,
            survive: 0.3,
            mutation: 0.3,
            seed: 1,
        }
    }
}

/// Places `tasks` (all placeable somewhere) on `nodes` with an early-binding
/// policy: each task goes to one node's queue, in the returned order.
/// [`PolicyKind::Tern`] plans late ([`tern::plan`]) and is not handled here.
pub fn place(
    kind: PolicyKind,
    nodes: &[NodeView],
    tasks: &[TaskView],
    history: &History,
    ga: &GaConfig,
) -> Vec<(TaskId, NodeId)> {
    match kind {
        PolicyKind::MemoryFirst => thesis::memory_first(nodes, tasks),
        PolicyKind::Ga => thesis::ga_policy(nodes, tasks, history, ga),
        PolicyKind::MinMin => heuristics::min_min(nodes, tasks, history),
        PolicyKind::MaxMin => heuristics::max_min(nodes, tasks, history),
        PolicyKind::Sufferage => heuristics::sufferage(nodes, tasks, history),
        PolicyKind::Local => tasks
            .iter()
            .filter_map(|t| nodes.iter().find(|n| n.local).map(|n| (t.id, n.id)))
            .collect(),
        PolicyKind::Tern => tern::plan(0.0, nodes, tasks, history, &Default::default())
            .into_iter()
            .map(|p| (p.task, p.node))
            .collect(),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Small pictures for the policies' tests.
    use super::*;

    pub fn node(id: NodeId, board: &str, cores: f64, memory_mb: u64, local: bool) -> NodeView {
        NodeView {
            id,
            board: board.into(),
            cores,
            memory_mb,
            gpu: false,
            local,
            free_memory_mb: memory_mb as i64,
            queue_len: 0,
            ready: vec![0.0; NodeView::slots(cores)],
        }
    }

    pub fn task(id: TaskId, key: &str) -> TaskView {
        TaskView {
            id,
            key: key.into(),
            cpu: 1.0,
            memory_mb: 100,
            gpu: false,
            offload: true,
        }
    }

    /// Predicted makespan of an assignment, list-scheduled in order on
    /// each node's cores with the history's per-board predictions.
    pub fn makespan(
        nodes: &[NodeView],
        tasks: &[TaskView],
        placed: &[(TaskId, NodeId)],
        history: &History,
    ) -> f64 {
        let mut ready: Vec<Vec<f64>> = nodes.iter().map(|n| n.ready.clone()).collect();
        let mut end: f64 = 0.0;
        for (t, n) in placed {
            let task = tasks.iter().find(|x| x.id == *t).unwrap();
            let j = nodes.iter().position(|x| x.id == *n).unwrap();
            let core = (0..ready[j].len())
                .min_by(|a, b| ready[j][*a].total_cmp(&ready[j][*b]))
                .unwrap();
            ready[j][core] += history.predict(&task.key, &nodes[j].board).secs;
            end = end.max(ready[j][core]);
        }
        end
    }
}
