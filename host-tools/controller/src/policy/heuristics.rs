//! The classic batch-mode mapping heuristics (Braun et al. 2001) on the
//! same predictions Tern uses: each node is a set of cores with predicted
//! ready times; a task's completion time on a node is the earliest ready
//! core plus its predicted time on the node's board.
//!
//! - **min-min**: of every task's best completion time, take the smallest;
//! - **max-min**: take the largest (long tasks first);
//! - **sufferage**: take the task that would lose most if denied its best
//!   node (second-best minus best completion time).

use super::{fits, NodeView, TaskView};
use crate::estimate::History;
use crate::model::{NodeId, TaskId};

/// Which task a round assigns.
#[derive(Clone, Copy)]
enum Rule {
    MinMin,
    MaxMin,
    Sufferage,
}

/// Min-min.
pub fn min_min(nodes: &[NodeView], tasks: &[TaskView], h: &History) -> Vec<(TaskId, NodeId)> {
    batch(nodes, tasks, h, Rule::MinMin)
}

/// Max-min.
pub fn max_min(nodes: &[NodeView], tasks: &[TaskView], h: &History) -> Vec<(TaskId, NodeId)> {
    batch(nodes, tasks, h, Rule::MaxMin)
}

/// Sufferage.
pub fn sufferage(nodes: &[NodeView], tasks: &[TaskView], h: &History) -> Vec<(TaskId, NodeId)> {
    batch(nodes, tasks, h, Rule::Sufferage)
}

fn batch(
    nodes: &[NodeView],
    tasks: &[TaskView],
    history: &History,
    rule: Rule,
) -> Vec<(TaskId, NodeId)> {
    // Expected time to compute, per task and node (infinite where it cannot run).
    let etc: Vec<Vec<f64>> = tasks
        .iter()
        .map(|t| {
            nodes
                .iter()
                .map(|n| {
                    if fits(t, n) {
                        history.predict(&t.key, &n.board).secs
                    } else {
                        f64::INFINITY
                    }
                })
                .collect()
        })
        .collect();
    let mut ready: Vec<Vec<f64>> = nodes.iter().map(|n| n.ready.clone()).collect();
    let mut left: Vec<usize> = (0..tasks.len()).collect();
    let mut out = Vec::with_capacity(tasks.len());
    while !left.is_empty() {
        // The earliest core of each node.
        let earliest: Vec<(usize, f64)> = ready
            .iter()
            .map(|cores| {
                cores
                    .iter()
                    .copied()
                    .enumerate()
                    .min_by(|a, b| a.1.total_cmp(&b.1))
                    .unwrap_or((0, f64::INFINITY))
            })
            .collect();
        let mut chosen: Option<(usize, usize, f64, f64)> = None; // (slot in left, node, best ct, score)
        for (k, &i) in left.iter().enumerate() {
            let (mut best, mut second, mut at) = (f64::INFINITY, f64::INFINITY, 0);
            for (j, (_, r)) in earliest.iter().enumerate() {
                let ct = r + etc[i][j];
                if ct < best {
                    second = best;
                    best = ct;
                    at = j;
                } else if ct < second {
                    second = ct;
                }
            }
            if !best.is_finite() {
                continue;
            }
            let score = match rule {
                Rule::MinMin => -best,
                Rule::MaxMin => best,
                // A task with one possible node suffers without bound.
                Rule::Sufferage => {
                    if second.is_finite() {
                        second - best
                    } else {
                        f64::MAX
                    }
                }
            };
            if chosen.is_none_or(|c| score > c.3) {
                chosen = Some((k, at, best, score));
            }
        }
        let Some((k, j, ct, _)) = chosen else { break };
        let i = left.swap_remove(k);
        ready[j][earliest[j].0] = ct;
        out.push((tasks[i].id, nodes[j].id));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testing::{makespan, node, task};
    use super::*;

    fn setup() -> (Vec<NodeView>, Vec<TaskView>, History) {
        let nodes = vec![
            node(1, "pc", 1.0, 1000, true),
            node(2, "virt", 1.0, 1000, false),
        ];
        let mut h = History::new();
        h.record("long", "pc", 1, 20.0);
        h.record("long", "virt", 2, 10.0);
        h.record("short", "pc", 1, 2.0);
        h.record("short", "virt", 2, 1.0);
        let tasks = vec![
            task(1, "long"),
            task(2, "short"),
            task(3, "short"),
            task(4, "short"),
        ];
        (nodes, tasks, h)
    }

    #[test]
    fn min_min_takes_short_tasks_first_and_max_min_long_ones() {
        let (nodes, tasks, h) = setup();
        let mm = min_min(&nodes, &tasks, &h);
        assert_eq!(mm[0].0, 2, "{mm:?}");
        assert_eq!(mm.last().unwrap().0, 1, "the long task last: {mm:?}");
        let xm = max_min(&nodes, &tasks, &h);
        assert_eq!(
            xm[0],
            (1, 2),
            "the long task first, on the fast node: {xm:?}"
        );
        // Max-min balances this set better: the long task does not wait.
        assert!(makespan(&nodes, &tasks, &xm, &h) <= makespan(&nodes, &tasks, &mm, &h));
    }

    #[test]
    fn sufferage_gives_the_contested_node_to_who_loses_most() {
        let (nodes, tasks, h) = setup();
        let s = sufferage(&nodes, &tasks, &h);
        assert_eq!(s[0], (1, 2), "{s:?}");
        assert_eq!(s.len(), 4);
        // A task that fits nowhere is left out; one that fits one node goes there.
        let mut big = task(9, "short");
        big.memory_mb = 5000;
        assert!(min_min(&nodes, &[big.clone()], &h).is_empty());
        big.memory_mb = 10;
        big.offload = false;
        assert_eq!(sufferage(&nodes, &[big], &h), vec![(9, 1)]);
    }
}
