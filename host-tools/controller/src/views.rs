//! What the API, the UI and the CLI show, built from the database: tasks
//! with their node, nodes with their load, a batch's timeline and its
//! speedup against the local-only baseline.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::estimate::History;
use crate::model::{NodeId, PolicyKind, TaskId, TaskState};
use crate::sched::{NodeState, SchedConfig};
use crate::sim::{simulate, MigrationCost, SimNode, SimTask};
use crate::store::{MigrationRow, NodeRow, RunRow, Store, StoreError, TaskRow};

/// A task as shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskJson {
    /// Its id.
    pub id: TaskId,
    /// Its batch.
    pub batch_id: i64,
    /// Its name.
    pub name: String,
    /// Its program.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its policy.
    pub policy: PolicyKind,
    /// Its state.
    pub state: TaskState,
    /// Why it waits or failed.
    pub reason: Option<String>,
    /// Its node.
    pub node_id: Option<NodeId>,
    /// The node's name.
    pub node: Option<String>,
    /// The node's address.
    pub address: Option<String>,
    /// Whether it runs (or ran) off the local node.
    pub offloaded: bool,
    /// Share done, 0 to 1.
    pub progress: f64,
    /// CPU need.
    pub cpu: f64,
    /// Memory need, MB.
    pub memory_mb: u64,
    /// GPU need.
    pub gpu: bool,
    /// Robust (standby replica).
    pub robust: bool,
    /// Starts so far.
    pub attempts: i64,
    /// Submitted (Unix seconds).
    pub submitted_at: f64,
    /// First start.
    pub started_at: Option<f64>,
    /// End.
    pub finished_at: Option<f64>,
    /// Submission to end, seconds (the thesis's completion time).
    pub completion_s: Option<f64>,
}

/// A node as shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeJson {
    /// Its id.
    pub id: NodeId,
    /// Its control address.
    pub addr: String,
    /// Its name.
    pub name: String,
    /// Its board.
    pub board: String,
    /// Its ISA.
    pub isa: String,
    /// Its cores.
    pub cores: f64,
    /// Its memory, MB.
    pub memory_mb: u64,
    /// GPU.
    pub gpu: bool,
    /// The local node.
    pub local: bool,
    /// `up`, `draining`, `down`.
    pub state: NodeState,
    /// Seconds since it last answered.
    pub seen_s_ago: Option<f64>,
    /// Cores claimed by its tasks.
    pub used_cpu: f64,
    /// Memory claimed by its tasks, MB.
    pub used_memory_mb: u64,
    /// Its running tasks' names.
    pub tasks: Vec<String>,
}

/// A batch's account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The batch.
    pub batch: Option<i64>,
    /// Its policy.
    pub policy: Option<PolicyKind>,
    /// Tasks in it.
    pub tasks: usize,
    /// Done.
    pub done: usize,
    /// Running or migrating.
    pub running: usize,
    /// Waiting.
    pub queued: usize,
    /// Failed or cancelled.
    pub failed: usize,
    /// Wall time of its placement, ms.
    pub placement_ms: Option<f64>,
    /// Submission to the last end, seconds (once all ended).
    pub t_off: Option<f64>,
    /// The same batch on the local node alone, simulated with the learned
    /// times on its board, seconds.
    pub t_local: Option<f64>,
    /// Speedup A = (T_local − T_off) / T_local, percent.
    pub speedup: Option<f64>,
    /// Live migrations.
    pub migrations: usize,
}

/// A bar of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bar {
    /// The task.
    pub task_id: TaskId,
    /// Its name.
    pub name: String,
    /// Its program.
    pub program: String,
    /// The node.
    pub node_id: NodeId,
    /// From, seconds after the batch's submission.
    pub start: f64,
    /// To (now while running).
    pub end: f64,
    /// How it ended.
    pub outcome: Option<String>,
}

/// An arrow of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Arrow {
    /// The task.
    pub task_id: TaskId,
    /// From.
    pub from_node: NodeId,
    /// To.
    pub to_node: NodeId,
    /// Requested, seconds after the submission.
    pub start: f64,
    /// Done.
    pub end: Option<f64>,
    /// Whether it succeeded.
    pub ok: Option<bool>,
    /// Its downtime, ms.
    pub downtime_ms: Option<i64>,
}

/// A batch's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// The account.
    pub summary: Summary,
    /// The nodes (lanes).
    pub nodes: Vec<NodeJson>,
    /// The bars.
    pub bars: Vec<Bar>,
    /// The arrows.
    pub arrows: Vec<Arrow>,
}

fn task_json(t: TaskRow, nodes: &HashMap<NodeId, NodeRow>) -> TaskJson {
    let node = t.node_id.and_then(|n| nodes.get(&n));
    TaskJson {
        id: t.id,
        batch_id: t.batch_id,
        name: t.spec.name,
        program: t.spec.program,
        args: t.spec.args,
        policy: t.policy,
        state: t.state,
        reason: t.reason,
        node_id: t.node_id,
        node: node.map(|n| n.spec.name.clone()),
        address: node.map(|n| n.addr.clone()),
        offloaded: node.is_some_and(|n| !n.spec.local),
        progress: t.progress,
        cpu: t.spec.cpu,
        memory_mb: t.spec.memory_mb,
        gpu: t.spec.gpu,
        robust: t.spec.robust,
        attempts: t.attempts,
        submitted_at: t.submitted_at,
        started_at: t.started_at,
        finished_at: t.finished_at,
        completion_s: t.finished_at.map(|f| f - t.submitted_at),
    }
}

fn node_map(store: &Store) -> Result<HashMap<NodeId, NodeRow>, StoreError> {
    Ok(store.nodes()?.into_iter().map(|n| (n.id, n)).collect())
}

/// Every task.
pub fn tasks(store: &Store) -> Result<Vec<TaskJson>, StoreError> {
    let nodes = node_map(store)?;
    Ok(store
        .tasks()?
        .into_iter()
        .map(|t| task_json(t, &nodes))
        .collect())
}

/// One task.
pub fn task(store: &Store, id: TaskId) -> Result<Option<TaskJson>, StoreError> {
    let nodes = node_map(store)?;
    Ok(store.task(id)?.map(|t| task_json(t, &nodes)))
}

/// Every node with its load.
pub fn nodes(store: &Store, now: f64) -> Result<Vec<NodeJson>, StoreError> {
    let tasks = store.tasks()?;
    Ok(store
        .nodes()?
        .into_iter()
        .map(|n| {
            let mine: Vec<&TaskRow> = tasks
                .iter()
                .filter(|t| {
                    t.node_id == Some(n.id)
                        && matches!(
                            t.state,
                            TaskState::Starting | TaskState::Running | TaskState::Migrating
                        )
                })
                .collect();
            NodeJson {
                id: n.id,
                addr: n.addr,
                name: n.spec.name,
                board: n.spec.board,
                isa: n.isa,
                cores: n.spec.cores,
                memory_mb: n.spec.memory_mb,
                gpu: n.spec.gpu,
                local: n.spec.local,
                state: n.state,
                seen_s_ago: n.last_seen.map(|s| (now - s).max(0.0)),
                used_cpu: mine.iter().map(|t| t.spec.cpu).sum(),
                used_memory_mb: mine.iter().map(|t| t.spec.memory_mb).sum(),
                tasks: mine.iter().map(|t| t.spec.name.clone()).collect(),
            }
        })
        .collect())
}

/// Predicts the local-only makespan of `tasks` on `local`: the simulator
/// on that node alone, each task taking the learned time of its program on
/// the node's board.
fn local_makespan(local: &NodeRow, tasks: &[TaskRow], history: &History) -> f64 {
    let sims: Vec<SimTask> = tasks
        .iter()
        .map(|t| SimTask {
            id: t.id,
            spec: t.spec.clone(),
            actual: [(
                local.spec.board.clone(),
                history
                    .predict(&t.spec.timing_key(), &local.spec.board)
                    .secs,
            )]
            .into(),
        })
        .collect();
    let node = SimNode::new(local.spec.clone());
    simulate(
        &[node],
        &sims,
        PolicyKind::Local,
        SchedConfig::default(),
        history.clone(),
        MigrationCost {
            total_s: 0.0,
            downtime_s: 0.0,
        },
    )
    .makespan
}

/// The timeline of `batch` (the latest when `None`).
pub fn timeline(store: &Store, batch: Option<i64>, now: f64) -> Result<Timeline, StoreError> {
    let batches = store.batches()?;
    let batch = match batch {
        Some(b) => batches.into_iter().find(|x| x.id == b),
        None => batches.into_iter().next(),
    };
    let nodes_now = nodes(store, now)?;
    let Some(batch) = batch else {
        return Ok(Timeline {
            summary: Summary {
                batch: None,
                policy: None,
                tasks: 0,
                done: 0,
                running: 0,
                queued: 0,
                failed: 0,
                placement_ms: None,
                t_off: None,
                t_local: None,
                speedup: None,
                migrations: 0,
            },
            nodes: nodes_now,
            bars: Vec::new(),
            arrows: Vec::new(),
        });
    };
    let tasks: Vec<TaskRow> = store
        .tasks()?
        .into_iter()
        .filter(|t| t.batch_id == batch.id)
        .collect();
    let by_id: HashMap<TaskId, &TaskRow> = tasks.iter().map(|t| (t.id, t)).collect();
    let t0 = batch.submitted_at;
    let runs: Vec<RunRow> = store
        .runs()?
        .into_iter()
        .filter(|r| by_id.contains_key(&r.task_id))
        .collect();
    let migrations: Vec<MigrationRow> = store
        .migrations()?
        .into_iter()
        .filter(|m| by_id.contains_key(&m.task_id))
        .collect();
    let count = |f: &dyn Fn(TaskState) -> bool| tasks.iter().filter(|t| f(t.state)).count();
    let all_over = tasks.iter().all(|t| t.state.is_final());
    let t_off = all_over
        .then(|| {
            tasks
                .iter()
                .filter_map(|t| t.finished_at)
                .fold(None, |m: Option<f64>, f| Some(m.map_or(f, |m| m.max(f))))
                .map(|end| end - t0)
        })
        .flatten();
    let history = store.load_history()?;
    let t_local = store
        .nodes()?
        .into_iter()
        .find(|n| n.spec.local)
        .map(|local| local_makespan(&local, &tasks, &history))
        .filter(|t| *t > 0.0);
    let speedup = match (t_off, t_local) {
        (Some(off), Some(local)) => Some(100.0 * (local - off) / local),
        _ => None,
    };
    Ok(Timeline {
        summary: Summary {
            batch: Some(batch.id),
            policy: Some(batch.policy),
            tasks: tasks.len(),
            done: count(&|s| s == TaskState::Done),
            running: count(&|s| {
                matches!(
                    s,
                    TaskState::Starting | TaskState::Running | TaskState::Migrating
                )
            }),
            queued: count(&|s| s == TaskState::Queued),
            failed: count(&|s| matches!(s, TaskState::Failed | TaskState::Cancelled)),
            placement_ms: batch.placement_ms,
            t_off,
            t_local,
            speedup,
            migrations: migrations.iter().filter(|m| m.ok == Some(true)).count(),
        },
        nodes: nodes_now,
        bars: runs
            .into_iter()
            .map(|r| {
                let t = by_id[&r.task_id];
                Bar {
                    task_id: r.task_id,
                    name: t.spec.name.clone(),
                    program: t.spec.program.clone(),
                    node_id: r.node_id,
                    start: r.start - t0,
                    end: r.end.unwrap_or(now) - t0,
                    outcome: r.outcome,
                }
            })
            .collect(),
        arrows: migrations
            .into_iter()
            .map(|m| Arrow {
                task_id: m.task_id,
                from_node: m.from_node,
                to_node: m.to_node,
                start: m.requested_at - t0,
                end: m.done_at.map(|d| d - t0),
                ok: m.ok,
                downtime_ms: m.downtime_ms,
            })
            .collect(),
    })
}
