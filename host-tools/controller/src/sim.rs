//! A discrete-event simulator of a cluster that runs the controller's own
//! scheduling core ([`Scheduler`]) in simulated time.
//!
//! Each node shares its cores among the tasks it runs (processor sharing:
//! with n tasks on c cores each gets min(1, c/n) of a core), a task's work
//! on a board is its measured time alone there ([`SimTask::actual`], drawn
//! from the timing table), a live migration keeps the task running on its
//! node for the pre-copy, then stops it for the downtime and resumes it on
//! the target with the work it had left. Nodes can join, drain or die at
//! given times.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::estimate::History;
use crate::model::{NodeId, NodeSpec, PolicyKind, TaskId, TaskSpec};
use crate::sched::{Action, SchedConfig, Scheduler};

/// A simulated node and what happens to it.
#[derive(Debug, Clone, PartialEq)]
pub struct SimNode {
    /// What it offers.
    pub spec: NodeSpec,
    /// When it joins (0: from the start).
    pub joins_at: f64,
    /// When it is drained, if ever.
    pub drains_at: Option<f64>,
    /// When it dies, if ever.
    pub dies_at: Option<f64>,
}

impl SimNode {
    /// A node present from the start to the end.
    pub fn new(spec: NodeSpec) -> Self {
        Self {
            spec,
            joins_at: 0.0,
            drains_at: None,
            dies_at: None,
        }
    }
}

/// What a live migration costs: the whole of it, and the part the task is
/// stopped (measured: `docs/benchmarks.md`, `tern demo`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MigrationCost {
    /// Request to acknowledgement, seconds.
    pub total_s: f64,
    /// Time the task does not run, seconds.
    pub downtime_s: f64,
}

/// A task and its true times.
#[derive(Debug, Clone, PartialEq)]
pub struct SimTask {
    /// Its id.
    pub id: TaskId,
    /// What was submitted.
    pub spec: TaskSpec,
    /// Board → seconds it takes alone on one core there.
    pub actual: BTreeMap<String, f64>,
}

/// One stretch of a task on a node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Segment {
    /// The task.
    pub task: TaskId,
    /// The node.
    pub node: NodeId,
    /// From.
    pub start: f64,
    /// To.
    pub end: f64,
}

/// One migration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimMigration {
    /// The task.
    pub task: TaskId,
    /// From.
    pub from: NodeId,
    /// To.
    pub to: NodeId,
    /// Requested at.
    pub at: f64,
}

/// What a simulated run gave.
#[derive(Debug, Clone)]
pub struct SimOutcome {
    /// When the last task finished.
    pub makespan: f64,
    /// Completion time of each finished task (all submitted at 0).
    pub completions: BTreeMap<TaskId, f64>,
    /// Wall time of the submission's placement (the core's `submit`).
    pub placement: Duration,
    /// Wall time spent in the core over the whole run.
    pub scheduling: Duration,
    /// Where each task ran when.
    pub segments: Vec<Segment>,
    /// The migrations.
    pub migrations: Vec<SimMigration>,
    /// The history after the run.
    pub history: History,
    /// Tasks that never finished, with the reason.
    pub unfinished: Vec<(TaskId, String)>,
}

impl SimOutcome {
    /// The sum of response times.
    pub fn sum_response(&self) -> f64 {
        self.completions.values().sum()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Join(usize),
    Drain(usize),
    Die(usize),
    Cutover {
        task: TaskId,
        from: NodeId,
        to: NodeId,
    },
    Arrive {
        task: TaskId,
        from: NodeId,
        to: NodeId,
        left: f64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Timed {
    at: f64,
    seq: u64,
    kind: Kind,
}

impl Eq for Timed {}
impl Ord for Timed {
    fn cmp(&self, other: &Self) -> Ordering {
        // Earliest first from a max-heap.
        other.at.total_cmp(&self.at).then(other.seq.cmp(&self.seq))
    }
}
impl PartialOrd for Timed {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A task executing on a node.
#[derive(Debug, Clone)]
struct Exec {
    task: TaskId,
    /// Share of the work left, 1 to 0.
    left: f64,
    /// Seconds alone on a core of this board.
    alone: f64,
    since: f64,
}

struct World<'a> {
    nodes: &'a [SimNode],
    tasks: BTreeMap<TaskId, &'a SimTask>,
    exec: Vec<Vec<Exec>>,
    alive: Vec<bool>,
    events: BinaryHeap<Timed>,
    seq: u64,
    cost: MigrationCost,
    out: SimOutcome,
}

fn node_id(index: usize) -> NodeId {
    index as NodeId + 1
}

fn index(id: NodeId) -> usize {
    (id - 1) as usize
}

impl World<'_> {
    fn push(&mut self, at: f64, kind: Kind) {
        self.seq += 1;
        self.events.push(Timed {
            at,
            seq: self.seq,
            kind,
        });
    }

    fn rate(&self, j: usize) -> f64 {
        let n = self.exec[j].len();
        if n == 0 {
            1.0
        } else {
            (self.nodes[j].spec.cores / n as f64).min(1.0)
        }
    }

    fn next_finish(&self) -> Option<f64> {
        (0..self.exec.len())
            .flat_map(|j| {
                let rate = self.rate(j);
                self.exec[j].iter().map(move |e| e.left * e.alone / rate)
            })
            .fold(None, |m: Option<f64>, d| Some(m.map_or(d, |m| m.min(d))))
    }

    fn advance(&mut self, dt: f64) {
        for j in 0..self.exec.len() {
            let rate = self.rate(j);
            for e in &mut self.exec[j] {
                e.left -= dt * rate / e.alone;
            }
        }
    }

    fn begin(&mut self, now: f64, task: TaskId, node: NodeId, left: f64) {
        let board = &self.nodes[index(node)].spec.board;
        let alone = self.tasks[&task]
            .actual
            .get(board)
            .copied()
            .unwrap_or_else(|| {
                // A board the table lacks: the slowest known time (never optimistic).
                self.tasks[&task]
                    .actual
                    .values()
                    .copied()
                    .fold(1.0, f64::max)
            });
        self.exec[index(node)].push(Exec {
            task,
            left,
            alone,
            since: now,
        });
    }

    /// Takes `task` off `node`, closing its segment; returns the work left.
    fn end(&mut self, now: f64, task: TaskId, node: NodeId) -> Option<f64> {
        let list = &mut self.exec[index(node)];
        let at = list.iter().position(|e| e.task == task)?;
        let e = list.swap_remove(at);
        self.out.segments.push(Segment {
            task,
            node,
            start: e.since,
            end: now,
        });
        Some(e.left.max(0.0))
    }

    fn apply(&mut self, now: f64, sched: &mut Scheduler, actions: Vec<Action>) {
        let mut queue = actions;
        while !queue.is_empty() {
            let mut next = Vec::new();
            for action in queue {
                match action {
                    Action::Start { task, node } => {
                        if self.alive[index(node)] {
                            self.begin(now, task, node, 1.0);
                            next.extend(timed(&mut self.out, || sched.started(now, task, node)));
                        } else {
                            next.extend(timed(&mut self.out, || {
                                sched.start_failed(now, task, node, "node is down", false)
                            }));
                        }
                    }
                    Action::Migrate { task, from, to } => {
                        self.out.migrations.push(SimMigration {
                            task,
                            from,
                            to,
                            at: now,
                        });
                        let pre = (self.cost.total_s - self.cost.downtime_s).max(0.0);
                        self.push(now + pre, Kind::Cutover { task, from, to });
                    }
                    Action::Stop { task, node } => {
                        self.end(now, task, node);
                    }
                    Action::GiveUp { task } => {
                        self.out
                            .unfinished
                            .push((task, "start refused too often".into()));
                    }
                }
            }
            queue = next;
        }
    }
}

/// Runs the core's wall-clock timer around `f`.
fn timed<T>(out: &mut SimOutcome, f: impl FnOnce() -> T) -> T {
    let t0 = Instant::now();
    let r = f();
    out.scheduling += t0.elapsed();
    r
}

/// Simulates `tasks`, all submitted at time 0 under `policy`, on `nodes`.
pub fn simulate(
    nodes: &[SimNode],
    tasks: &[SimTask],
    policy: PolicyKind,
    config: SchedConfig,
    history: History,
    cost: MigrationCost,
) -> SimOutcome {
    let mut sched = Scheduler::new(config, history);
    let mut w = World {
        nodes,
        tasks: tasks.iter().map(|t| (t.id, t)).collect(),
        exec: vec![Vec::new(); nodes.len()],
        alive: vec![false; nodes.len()],
        events: BinaryHeap::new(),
        seq: 0,
        cost,
        out: SimOutcome {
            makespan: 0.0,
            completions: BTreeMap::new(),
            placement: Duration::ZERO,
            scheduling: Duration::ZERO,
            segments: Vec::new(),
            migrations: Vec::new(),
            history: History::new(),
            unfinished: Vec::new(),
        },
    };
    for (j, n) in nodes.iter().enumerate() {
        if n.joins_at <= 0.0 {
            w.alive[j] = true;
            sched.add_node(0.0, node_id(j), n.spec.clone());
        } else {
            w.push(n.joins_at, Kind::Join(j));
        }
        if let Some(at) = n.drains_at {
            w.push(at, Kind::Drain(j));
        }
        if let Some(at) = n.dies_at {
            w.push(at, Kind::Die(j));
        }
    }
    let batch: Vec<(TaskId, TaskSpec)> = tasks.iter().map(|t| (t.id, t.spec.clone())).collect();
    let t0 = Instant::now();
    let actions = sched.submit(0.0, batch, policy);
    w.out.placement = t0.elapsed();
    w.out.scheduling = w.out.placement;
    let mut now = 0.0;
    w.apply(now, &mut sched, actions);
    loop {
        let finish = w.next_finish().map(|d| now + d);
        let event = w.events.peek().map(|e| e.at);
        let t = match (finish, event) {
            (None, None) => break,
            (Some(f), None) => f,
            (None, Some(e)) => e,
            (Some(f), Some(e)) => f.min(e),
        };
        w.advance(t - now);
        now = t;
        for j in 0..w.exec.len() {
            for e in &w.exec[j] {
                sched.progress(e.task, 1.0 - e.left);
            }
        }
        if finish.is_some_and(|f| f <= t) {
            let done: Vec<(TaskId, NodeId)> = (0..w.exec.len())
                .flat_map(|j| {
                    w.exec[j]
                        .iter()
                        .filter(|e| e.left <= 1e-9)
                        .map(move |e| (e.task, node_id(j)))
                })
                .collect();
            for (task, node) in done {
                w.end(now, task, node);
                w.out.completions.insert(task, now);
                w.out.makespan = w.out.makespan.max(now);
                let actions = timed(&mut w.out, || sched.finished(now, task, node, true));
                w.apply(now, &mut sched, actions);
            }
            continue;
        }
        let Timed { kind, .. } = w.events.pop().expect("peeked");
        let actions = match kind {
            Kind::Join(j) => {
                w.alive[j] = true;
                timed(&mut w.out, || {
                    sched.add_node(now, node_id(j), nodes[j].spec.clone())
                })
            }
            Kind::Drain(j) => timed(&mut w.out, || sched.drain(now, node_id(j))),
            Kind::Die(j) => {
                w.alive[j] = false;
                let lost: Vec<TaskId> = w.exec[j].iter().map(|e| e.task).collect();
                for task in lost {
                    w.end(now, task, node_id(j));
                }
                timed(&mut w.out, || sched.node_down(now, node_id(j)))
            }
            Kind::Cutover { task, from, to } => match w.end(now, task, from) {
                Some(left) => {
                    w.push(
                        now + cost.downtime_s,
                        Kind::Arrive {
                            task,
                            from,
                            to,
                            left,
                        },
                    );
                    Vec::new()
                }
                // It finished (or its node died) during the pre-copy.
                None => Vec::new(),
            },
            Kind::Arrive {
                task,
                from,
                to,
                left,
            } => {
                if w.alive[index(to)] {
                    w.begin(now, task, to, left);
                    timed(&mut w.out, || sched.migrated(now, task, from, to))
                } else if w.alive[index(from)] {
                    w.begin(now, task, from, left);
                    timed(&mut w.out, || sched.migration_failed(now, task, from, to))
                } else {
                    Vec::new()
                }
            }
        };
        w.apply(now, &mut sched, actions);
    }
    for t in tasks {
        if !w.out.completions.contains_key(&t.id) && !w.out.unfinished.iter().any(|u| u.0 == t.id) {
            let why = sched.reason(t.id).unwrap_or("never started").to_string();
            w.out.unfinished.push((t.id, why));
        }
    }
    w.out.history = sched.history().clone();
    w.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, board: &str, cores: f64, local: bool) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            board: board.into(),
            cores,
            memory_mb: 4096,
            gpu: false,
            local,
        }
    }

    fn task(id: TaskId, program: &str, pc: f64, virt: f64) -> SimTask {
        SimTask {
            id,
            spec: TaskSpec {
                name: format!("t{id}"),
                program: program.into(),
                args: Vec::new(),
                cpu: 1.0,
                memory_mb: 64,
                gpu: false,
                offload: true,
                robust: false,
            },
            actual: [("pc".to_string(), pc), ("virt".to_string(), virt)].into(),
        }
    }

    const COST: MigrationCost = MigrationCost {
        total_s: 1.0,
        downtime_s: 0.1,
    };

    #[test]
    fn a_start_refused_for_good_fails_the_task_at_once_and_others_retry() {
        let mut sched = Scheduler::new(SchedConfig::default(), History::new());
        sched.add_node(0.0, 1, spec("local", "pc", 1.0, true));
        let tasks = |ids: &[TaskId]| {
            ids.iter()
                .map(|i| (*i, task(*i, "a", 1.0, 1.0).spec))
                .collect::<Vec<_>>()
        };
        let started = |actions: &[Action], id: TaskId| {
            actions
                .iter()
                .any(|a| matches!(a, Action::Start { task, node: 1 } if *task == id))
        };
        let actions = sched.submit(0.0, tasks(&[1]), PolicyKind::MemoryFirst);
        assert!(started(&actions, 1), "{actions:?}");
        sched.started(0.0, 1, 1);
        // A node that did not answer: tried again.
        let actions = sched.submit(0.0, tasks(&[2]), PolicyKind::MemoryFirst);
        assert!(!started(&actions, 2), "the core is busy");
        sched.finished(1.0, 1, 1, true);
        let actions = sched.start_failed(1.0, 2, 1, "node is down", false);
        assert!(started(&actions, 2), "{actions:?}");
        // The request itself was wrong: given up, not tried again.
        let actions = sched.start_failed(1.0, 2, 1, "module refused", true);
        assert!(
            actions.contains(&Action::GiveUp { task: 2 }) && !started(&actions, 2),
            "{actions:?}"
        );
        assert_eq!(sched.reason(2), Some("start refused: module refused"));
    }

    #[test]
    fn local_only_runs_everything_on_the_local_node_with_processor_sharing() {
        let nodes = [
            SimNode::new(spec("local", "pc", 2.0, true)),
            SimNode::new(spec("far", "pc", 8.0, false)),
        ];
        let tasks: Vec<_> = (1..=4).map(|i| task(i, "a", 10.0, 10.0)).collect();
        let out = simulate(
            &nodes,
            &tasks,
            PolicyKind::Local,
            SchedConfig::default(),
            History::new(),
            COST,
        );
        assert!(out.unfinished.is_empty());
        assert!(out.segments.iter().all(|s| s.node == 1));
        assert!((out.makespan - 20.0).abs() < 1e-6, "{}", out.makespan);
        // It learned a's time on pc as core-seconds, not the shared wall time.
        let learned = out.history.pair_mean("a", "pc").unwrap();
        assert!((learned - 10.0).abs() < 1e-6, "{learned}");
    }

    #[test]
    fn tern_learns_probes_and_uses_the_faster_board() {
        let nodes = [
            SimNode::new(spec("local", "pc", 1.0, true)),
            SimNode::new(spec("arm", "virt", 2.0, false)),
        ];
        let tasks: Vec<_> = (1..=8).map(|i| task(i, "fp", 40.0, 4.0)).collect();
        let mut h = History::new();
        h.record("fp", "pc", 1, 40.0);
        let out = simulate(
            &nodes,
            &tasks,
            PolicyKind::Tern,
            SchedConfig::default(),
            h,
            COST,
        );
        assert!(out.unfinished.is_empty(), "{:?}", out.unfinished);
        assert!(out.history.pair_mean("fp", "virt").is_some(), "probed");
        // 8 tasks of 4 s on 2 fast cores: 16 s; the slow core would take 40 s a task.
        assert!(out.makespan < 20.0, "{}", out.makespan);
    }

    #[test]
    fn a_joining_fast_node_takes_running_work_by_migration() {
        let mut arm = SimNode::new(spec("arm", "virt", 1.0, false));
        arm.joins_at = 5.0;
        let nodes = [SimNode::new(spec("local", "pc", 1.0, true)), arm];
        let tasks = vec![task(1, "fp", 100.0, 10.0)];
        let mut h = History::new();
        h.record("fp", "pc", 1, 100.0);
        h.record("fp", "virt", 2, 10.0);
        let with = simulate(
            &nodes,
            &tasks,
            PolicyKind::Tern,
            SchedConfig::default(),
            h.clone(),
            COST,
        );
        assert_eq!(with.migrations.len(), 1);
        // 5 s on pc (5% done), 1 s of migration, 95% of 10 s on virt.
        assert!(
            (with.makespan - (5.0 + 1.0 + 9.5)).abs() < 0.2,
            "{}",
            with.makespan
        );
        let config = SchedConfig {
            migration: false,
            ..SchedConfig::default()
        };
        let without = simulate(&nodes, &tasks, PolicyKind::Tern, config, h, COST);
        assert!(without.migrations.is_empty());
        assert!((without.makespan - 100.0).abs() < 1e-6);
    }

    #[test]
    fn a_drained_node_empties_and_a_dead_one_restarts_its_tasks() {
        let mut old = SimNode::new(spec("old", "pc", 1.0, true));
        old.drains_at = Some(1.0);
        let nodes = [old, SimNode::new(spec("new", "pc", 2.0, false))];
        let mut tasks: Vec<_> = (1..=3).map(|i| task(i, "a", 10.0, 10.0)).collect();
        tasks[0] = task(1, "long", 30.0, 30.0);
        let mut h = History::new();
        h.record("a", "pc", 1, 10.0);
        h.record("long", "pc", 1, 30.0);
        let out = simulate(
            &nodes,
            &tasks,
            PolicyKind::Tern,
            SchedConfig::default(),
            h.clone(),
            COST,
        );
        assert!(out.unfinished.is_empty());
        // The drained node's long task left once the new node had a free core (at 10 s).
        assert_eq!(
            out.migrations.len(),
            1,
            "{:?} {:?}",
            out.migrations,
            out.segments
        );
        assert!(out.segments.iter().all(|s| s.node == 2 || s.end <= 11.0));
        // It ran on during the pre-copy: only the downtime is lost.
        assert!((out.makespan - 30.1).abs() < 1e-6, "{}", out.makespan);

        let mut dying = SimNode::new(spec("dying", "pc", 2.0, true));
        dying.dies_at = Some(5.0);
        let nodes = [dying, SimNode::new(spec("other", "pc", 1.0, false))];
        let out = simulate(
            &nodes,
            &tasks,
            PolicyKind::Tern,
            SchedConfig::default(),
            h,
            COST,
        );
        assert!(out.unfinished.is_empty(), "{:?}", out.unfinished);
        assert_eq!(out.completions.len(), 3);
        assert!(out.makespan > 10.0);
    }

    #[test]
    fn a_task_no_node_can_hold_is_reported_with_its_reason() {
        let nodes = [
            SimNode::new(spec("a", "pc", 2.0, true)),
            SimNode::new(spec("b", "pc", 2.0, false)),
            SimNode::new(spec("c", "virt", 2.0, false)),
        ];
        let mut big = task(1, "a", 1.0, 1.0);
        big.spec.memory_mb = 1 << 20;
        let out = simulate(
            &nodes,
            &[big],
            PolicyKind::MinMin,
            SchedConfig::default(),
            History::new(),
            COST,
        );
        assert_eq!(out.unfinished, vec![(1, "0/3 nodes: memory".to_string())]);
    }
}
