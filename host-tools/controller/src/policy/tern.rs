//! Tern's default policy.
//!
//! It keeps tasks at the controller until a core is free (late binding)
//! and plans, at every change, when and where each waiting task would
//! finish: every node is a set of single-task cores with predicted ready
//! times, a task's time is predicted per (program, board) from the history
//! ([`History::predict`]), and each task in turn takes the core where it is
//! predicted to *complete* first. Several task orders are planned — longest
//! first (the makespan's friend), shortest first (the sum of response
//! times' friend) and mixtures that put only the tasks long enough to
//! threaten the makespan first — and the plan with the smallest predicted
//! sum of completion times among those within 1% of the best predicted
//! makespan wins. Tasks whose planned core is free now start now.
//!
//! A (program, board) pair without history is probed: one task of the
//! program is planned first on a node of that board, and its progress
//! refines the prediction while it runs.
//!
//! When a core is free and nothing waiting wants it, running tasks move to
//! it by live migration where that is predicted to finish them sooner by
//! more than the migration costs (a faster board, a node that is shared
//! too thinly), and every task of a draining node moves as soon as a core
//! elsewhere is free.

use std::collections::{HashMap, HashSet};

use super::{fits, NodeView, TaskView};
use crate::estimate::History;
use crate::model::{NodeId, TaskId};

/// One task's place in the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// The task.
    pub task: TaskId,
    /// Its node.
    pub node: NodeId,
    /// Predicted start.
    pub start: f64,
    /// Predicted completion.
    pub end: f64,
    /// Whether it probes an unknown (program, board) pair.
    pub probe: bool,
}

/// Plans of makespans within this factor of the best count as equal.
const MAKESPAN_TOLERANCE: f64 = 1.01;

/// (program key, board) pairs.
pub type Pairs = HashSet<(String, String)>;

/// Plans every waiting task; `probing` holds the pairs a running probe
/// already explores.
pub fn plan(
    now: f64,
    nodes: &[NodeView],
    tasks: &[TaskView],
    history: &History,
    probing: &Pairs,
) -> Vec<Planned> {
    if tasks.is_empty() || nodes.is_empty() {
        return Vec::new();
    }
    // Predicted time of every task on every node (None where it cannot run).
    let pred: Vec<Vec<Option<f64>>> = tasks
        .iter()
        .map(|t| {
            nodes
                .iter()
                .map(|n| fits(t, n).then(|| history.predict(&t.key, &n.board).secs))
                .collect()
        })
        .collect();
    let probes = choose_probes(nodes, tasks, history, probing);
    let best: Vec<f64> = pred
        .iter()
        .map(|p| p.iter().flatten().copied().fold(f64::INFINITY, f64::min))
        .collect();
    let slots: usize = nodes.iter().map(|n| n.ready.len()).sum();
    let per_core = best.iter().filter(|b| b.is_finite()).sum::<f64>() / slots.max(1) as f64;
    let probe_first = |order: &mut Vec<usize>| {
        order.sort_by_key(|i| !probes.iter().any(|(p, _)| p == i));
    };
    let mut candidates = Vec::new();
    // Longest first, shortest first, and the long ones (over a share of the
    // per-core load) first then the rest shortest first.
    for threshold in [0.0, f64::INFINITY, 0.25, 0.5] {
        let mut order: Vec<usize> = (0..tasks.len()).collect();
        let long = |i: usize| threshold == 0.0 || best[i] > threshold * per_core;
        order.sort_by(|&a, &b| {
            let (la, lb) = (long(a), long(b));
            lb.cmp(&la)
                .then_with(|| {
                    if la {
                        best[b].total_cmp(&best[a])
                    } else {
                        best[a].total_cmp(&best[b])
                    }
                })
                .then(a.cmp(&b))
        });
        probe_first(&mut order);
        candidates.push(list_schedule(now, nodes, tasks, &pred, &probes, &order));
    }
    let score = |plan: &[Planned]| {
        let makespan = plan.iter().map(|p| p.end).fold(now, f64::max);
        let sum: f64 = plan.iter().map(|p| p.end - now).sum();
        (makespan, sum)
    };
    let scores: Vec<(f64, f64)> = candidates.iter().map(|c| score(c)).collect();
    let best_makespan = scores.iter().map(|s| s.0).fold(f64::INFINITY, f64::min);
    let chosen = (0..candidates.len())
        .filter(|&k| scores[k].0 - now <= (best_makespan - now) * MAKESPAN_TOLERANCE + 1e-9)
        .min_by(|&a, &b| scores[a].1.total_cmp(&scores[b].1))
        .unwrap_or(0);
    candidates.swap_remove(chosen)
}

/// One probe per unknown (program, board) pair not already being probed:
/// a waiting task of the program that fits a node of that board, as long as
/// the board has a core for it (running probes included: a probe queued
/// behind another teaches nothing sooner, and pinned to its board it would
/// keep the task from a better one). A task whose program is unknown on
/// several boards probes the one with the fewest probes so far, so that a
/// batch of programs never seen spreads over the boards instead of all
/// probing the first.
fn choose_probes(
    nodes: &[NodeView],
    tasks: &[TaskView],
    history: &History,
    probing: &Pairs,
) -> Vec<(usize, String)> {
    let mut boards: Vec<&str> = nodes.iter().map(|n| n.board.as_str()).collect();
    boards.sort_unstable();
    boards.dedup();
    let mut load: HashMap<&str, usize> = boards.iter().map(|b| (*b, 0)).collect();
    let mut cores: HashMap<&str, usize> = HashMap::new();
    for n in nodes {
        *cores.entry(n.board.as_str()).or_default() += n.ready.len();
    }
    for (_, board) in probing {
        if let Some(n) = load.get_mut(board.as_str()) {
            *n += 1;
        }
    }
    let mut chosen: Pairs = HashSet::new();
    let mut probes = Vec::new();
    for (i, t) in tasks.iter().enumerate() {
        let open = boards.iter().copied().filter(|board| {
            let pair = (t.key.clone(), board.to_string());
            history.pair_mean(&t.key, board).is_none()
                && load[board] < cores[board]
                && !probing.contains(&pair)
                && !chosen.contains(&pair)
                && nodes.iter().any(|n| n.board == *board && fits(t, n))
        });
        // The first of the least probed (boards are in order).
        let Some(board) = open.min_by_key(|b| load[b]) else {
            continue;
        };
        *load.get_mut(board).expect("a listed board") += 1;
        chosen.insert((t.key.clone(), board.to_string()));
        probes.push((i, board.to_string()));
    }
    probes
}

/// List scheduling in `order`: each task takes the core where it completes first.
fn list_schedule(
    now: f64,
    nodes: &[NodeView],
    tasks: &[TaskView],
    pred: &[Vec<Option<f64>>],
    probes: &[(usize, String)],
    order: &[usize],
) -> Vec<Planned> {
    let mut ready: Vec<Vec<f64>> = nodes
        .iter()
        .map(|n| n.ready.iter().map(|r| r.max(now)).collect())
        .collect();
    let mut out = Vec::with_capacity(order.len());
    for &i in order {
        let probe = probes
            .iter()
            .find(|(p, _)| *p == i)
            .map(|(_, b)| b.as_str());
        let mut best: Option<(usize, usize, f64, f64)> = None; // node, core, start, end
        for (j, node) in nodes.iter().enumerate() {
            let Some(t) = pred[i][j] else { continue };
            if probe.is_some_and(|b| b != node.board) {
                continue;
            }
            let Some((core, start)) = ready[j]
                .iter()
                .copied()
                .enumerate()
                .min_by(|a, b| a.1.total_cmp(&b.1))
            else {
                continue;
            };
            let end = start + t;
            if best.is_none_or(|b| end < b.3 - 1e-9) {
                best = Some((j, core, start, end));
            }
        }
        if let Some((j, core, start, end)) = best {
            ready[j][core] = end;
            out.push(Planned {
                task: tasks[i].id,
                node: nodes[j].id,
                start,
                end,
                probe: probe.is_some(),
            });
        }
    }
    out
}

/// A running task, as the migration choice sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningView {
    /// The task.
    pub task: TaskId,
    /// Its timing key.
    pub key: String,
    /// Its node.
    pub node: NodeId,
    /// That node's board.
    pub board: String,
    /// When it started there.
    pub since: f64,
    /// Share of its work done (0 to 1).
    pub progress: f64,
    /// Share of a core it gets there (1 unless the node runs more tasks than cores).
    pub rate: f64,
    /// Whether its node is draining (it must leave).
    pub draining: bool,
    /// Its memory need (the target must hold it).
    pub view: TaskView,
}

/// A node with cores free now that no waiting task takes.
#[derive(Debug, Clone, PartialEq)]
pub struct FreeNode {
    /// The node.
    pub node: NodeView,
    /// Free cores.
    pub cores: usize,
    /// Memory free now, in MB.
    pub memory_mb: i64,
}

/// The predicted seconds `r` still needs where it runs.
pub fn remaining_here(now: f64, r: &RunningView, history: &History) -> f64 {
    let p = history.predict(&r.key, &r.board);
    // A probe's own progress is the best estimate of its pair.
    let total = if !p.known && r.progress >= 0.05 {
        (now - r.since) * r.rate / r.progress
    } else {
        p.secs
    };
    (1.0 - r.progress).max(0.0) * total / r.rate.max(1e-6)
}

/// The migrations to start now: `(task, from, to)`.
pub fn migrations(
    now: f64,
    free: &[FreeNode],
    running: &[RunningView],
    history: &History,
    cost_s: f64,
) -> Vec<(TaskId, NodeId, NodeId)> {
    let mut free = free.to_vec();
    let mut moved: HashSet<TaskId> = HashSet::new();
    let mut out = Vec::new();
    loop {
        // (gain, task index, free index); draining tasks outrank any gain.
        let mut best: Option<(bool, f64, usize, usize)> = None;
        for (k, r) in running.iter().enumerate() {
            if moved.contains(&r.task) {
                continue;
            }
            let here = remaining_here(now, r, history);
            for (f, slot) in free.iter().enumerate() {
                if slot.cores == 0
                    || slot.node.id == r.node
                    || slot.memory_mb < r.view.memory_mb as i64
                    || !fits(&r.view, &slot.node)
                {
                    continue;
                }
                let there = cost_s
                    + (1.0 - r.progress).max(0.0) * history.predict(&r.key, &slot.node.board).secs;
                let gain = here - there;
                if !r.draining && gain <= cost_s.max(0.1 * here) {
                    continue;
                }
                // Draining tasks first, then the largest gain.
                if best.is_none_or(|b| (r.draining, gain) > (b.0, b.1)) {
                    best = Some((r.draining, gain, k, f));
                }
            }
        }
        let Some((_, _, k, f)) = best else { break };
        let r = &running[k];
        moved.insert(r.task);
        free[f].cores -= 1;
        free[f].memory_mb -= r.view.memory_mb as i64;
        out.push((r.task, r.node, free[f].node.id));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testing::{node, task};
    use super::*;

    #[test]
    fn plans_follow_per_board_times_and_finish_early() {
        let nodes = vec![
            node(1, "pc", 1.0, 1000, true),
            node(2, "virt", 2.0, 1000, false),
        ];
        let mut h = History::new();
        h.record("fp", "pc", 1, 50.0);
        h.record("fp", "virt", 2, 5.0);
        let tasks: Vec<_> = (0..4).map(|i| task(i, "fp")).collect();
        let plan = plan(0.0, &nodes, &tasks, &h, &HashSet::new());
        // The aarch64 node is ten times faster at this program: all four go there.
        assert!(plan.iter().all(|p| p.node == 2), "{plan:?}");
        let makespan = plan.iter().map(|p| p.end).fold(0.0, f64::max);
        assert_eq!(makespan, 10.0);
    }

    #[test]
    fn unknown_pairs_are_probed_once() {
        let nodes = vec![
            node(1, "pc", 2.0, 1000, true),
            node(2, "virt", 2.0, 1000, false),
        ];
        let mut h = History::new();
        h.record("a", "pc", 1, 10.0);
        let tasks: Vec<_> = (0..4).map(|i| task(i, "a")).collect();
        let p = plan(0.0, &nodes, &tasks, &h, &HashSet::new());
        let probes: Vec<_> = p.iter().filter(|p| p.probe).collect();
        assert_eq!(probes.len(), 1, "{p:?}");
        assert_eq!(probes[0].node, 2);
        assert_eq!(probes[0].start, 0.0);
        let busy: Pairs = [("a".to_string(), "virt".to_string())].into();
        assert!(plan(0.0, &nodes, &tasks, &h, &busy)
            .iter()
            .all(|p| !p.probe));
    }

    #[test]
    fn programs_never_seen_probe_every_board_not_only_the_first() {
        let nodes = vec![
            node(1, "pc", 1.0, 1000, true),
            node(2, "virt", 1.0, 1000, false),
        ];
        let h = History::new();
        let programs = ["a", "b", "c", "d", "e", "f"];
        let tasks: Vec<_> = programs
            .iter()
            .enumerate()
            .map(|(i, p)| task(i as TaskId, p))
            .collect();
        let p = plan(0.0, &nodes, &tasks, &h, &HashSet::new());
        let probes = |p: &[Planned], n| p.iter().filter(|p| p.probe && p.node == n).count();
        // One probe per core of each board, the rest spread by prediction.
        assert_eq!((probes(&p, 1), probes(&p, 2)), (1, 1), "{p:?}");
        let on = |n| p.iter().filter(|p| p.node == n).count();
        assert_eq!((on(1), on(2)), (3, 3), "{p:?}");
        // Probes already running count: the next ones go to the other board.
        let busy: Pairs = [("x".to_string(), "pc".to_string())].into();
        let p = plan(0.0, &nodes, &tasks[..1], &h, &busy);
        assert!(p[0].probe && p[0].node == 2, "{p:?}");
        // Known on the PC, unknown on the aarch64 node's single core: one
        // probe there, not six queued behind each other.
        let mut h = History::new();
        for prog in programs {
            h.record(prog, "pc", 1, 3.0);
        }
        let p = plan(0.0, &nodes, &tasks, &h, &HashSet::new());
        assert_eq!(probes(&p, 2), 1, "{p:?}");
        assert!(p.iter().filter(|p| p.node == 1).count() >= 2, "{p:?}");
    }

    #[test]
    fn long_tasks_start_first_when_the_makespan_needs_it() {
        let nodes = vec![node(1, "pc", 2.0, 1000, true)];
        let mut h = History::new();
        h.record("long", "pc", 1, 10.0);
        h.record("short", "pc", 1, 1.0);
        let mut tasks: Vec<_> = (0..10).map(|i| task(i, "short")).collect();
        tasks.push(task(10, "long"));
        let p = plan(0.0, &nodes, &tasks, &h, &HashSet::new());
        let long = p.iter().find(|p| p.task == 10).unwrap();
        assert_eq!(long.start, 0.0, "{p:?}");
        assert_eq!(p.iter().map(|p| p.end).fold(0.0, f64::max), 10.0);
        // Without a long task, the short ones go shortest first (sum of completions).
        let mut h2 = History::new();
        h2.record("a", "pc", 1, 1.0);
        h2.record("b", "pc", 1, 3.0);
        let mixed = vec![task(0, "b"), task(1, "a"), task(2, "a"), task(3, "b")];
        let p = plan(0.0, &node_list(), &mixed, &h2, &HashSet::new());
        let first: Vec<_> = p
            .iter()
            .filter(|p| p.start == 0.0)
            .map(|p| p.task)
            .collect();
        assert_eq!(first, vec![1, 2], "{p:?}");
    }

    fn node_list() -> Vec<NodeView> {
        vec![node(1, "pc", 2.0, 1000, true)]
    }

    #[test]
    fn running_tasks_move_to_faster_free_cores_and_drained_ones_leave() {
        let mut h = History::new();
        h.record("fp", "pc", 1, 100.0);
        h.record("fp", "virt", 2, 10.0);
        let r = RunningView {
            task: 7,
            key: "fp".into(),
            node: 1,
            board: "pc".into(),
            since: 0.0,
            progress: 0.1,
            rate: 1.0,
            draining: false,
            view: task(7, "fp"),
        };
        let free = vec![FreeNode {
            node: node(2, "virt", 1.0, 1000, false),
            cores: 1,
            memory_mb: 1000,
        }];
        assert_eq!(
            migrations(10.0, &free, std::slice::from_ref(&r), &h, 1.0),
            vec![(7, 1, 2)]
        );
        // Nearly done: not worth it.
        let late = RunningView {
            progress: 0.995,
            ..r.clone()
        };
        assert!(migrations(10.0, &free, std::slice::from_ref(&late), &h, 1.0).is_empty());
        // Draining: it leaves anyway.
        let drained = RunningView {
            draining: true,
            ..late
        };
        assert_eq!(migrations(10.0, &free, &[drained], &h, 1.0).len(), 1);
        // No room: stays.
        let full = vec![FreeNode {
            memory_mb: 10,
            ..free[0].clone()
        }];
        assert!(migrations(10.0, &full, &[r], &h, 1.0).is_empty());
    }
}
