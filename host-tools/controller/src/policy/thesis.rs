//! The thesis's two policies, as published (§5.1.2).
//!
//! **Memory-first**: a task runs locally if the local node's free memory
//! holds it; otherwise the nodes are sorted by free memory, most first, and
//! the queue is handed out in order.
//!
//! **The genetic algorithm** (for tasks whose program has history): an
//! individual assigns every task a node; its cost is
//! C(X) = Σ x_ij (t_ij^exec + q_j · T_j^avg) + Σ_j E_j^cpu + Σ_j E_j^mem
//! (eq. 5-1…5-5), where t^exec is the program's learned time, q_j the
//! length of node j's waiting queue, T_j^avg the mean execution time on
//! node j, and the penalties (eq. 5-7, 5-8) are, for a node whose assigned
//! needs exceed its resources, the excess divided by the mean need of the
//! tasks assigned to it, times T_j^avg. Fitness is 1/C (eq. 5-6);
//! selection by roulette; 30% of each generation survive; the rest are
//! children of single-point crossover; 30% of them mutate; 500 generations.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::{fits, GaConfig, NodeView, TaskView};
use crate::estimate::History;
use crate::model::{NodeId, TaskId};

/// Memory-first placement of `tasks` in queue order.
pub fn memory_first(nodes: &[NodeView], tasks: &[TaskView]) -> Vec<(TaskId, NodeId)> {
    let mut free: Vec<i64> = nodes.iter().map(|n| n.free_memory_mb).collect();
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        let need = task.memory_mb as i64;
        let local = nodes
            .iter()
            .position(|n| n.local && fits(task, n))
            .filter(|&j| free[j] >= need);
        let chosen = local.or_else(|| {
            (0..nodes.len())
                .filter(|&j| fits(task, &nodes[j]))
                .max_by_key(|&j| (free[j], std::cmp::Reverse(j)))
        });
        if let Some(j) = chosen {
            free[j] -= need;
            out.push((task.id, nodes[j].id));
        }
    }
    out
}

/// The thesis's policy: the genetic algorithm for tasks whose program has
/// history, memory-first for the others (placed first, in queue order).
pub fn ga_policy(
    nodes: &[NodeView],
    tasks: &[TaskView],
    history: &History,
    config: &GaConfig,
) -> Vec<(TaskId, NodeId)> {
    let (known, unknown): (Vec<TaskView>, Vec<TaskView>) = tasks
        .iter()
        .cloned()
        .partition(|t| history.knows_program(&t.key));
    let mut out = memory_first(nodes, &unknown);
    out.extend(genetic(nodes, &known, history, config));
    out
}

/// What the cost function needs, computed once per batch.
struct Problem<'a> {
    nodes: &'a [NodeView],
    /// Per task: its learned execution time (the same on every node).
    exec: Vec<f64>,
    cpu: Vec<f64>,
    mem: Vec<f64>,
    /// Per task: the nodes that can hold it (indices into `nodes`).
    allowed: Vec<Vec<usize>>,
    /// Per node: q_j · T_j^avg.
    wait: Vec<f64>,
    /// Per node: T_j^avg.
    avg: Vec<f64>,
}

impl Problem<'_> {
    /// C(X) of eq. 5-5.
    fn cost(&self, genes: &[usize]) -> f64 {
        let m = self.nodes.len();
        let mut count = vec![0usize; m];
        let mut cpu = vec![0.0; m];
        let mut mem = vec![0.0; m];
        let mut total = 0.0;
        for (i, &j) in genes.iter().enumerate() {
            total += self.exec[i] + self.wait[j];
            count[j] += 1;
            cpu[j] += self.cpu[i];
            mem[j] += self.mem[i];
        }
        for j in 0..m {
            if count[j] == 0 {
                continue;
            }
            let n = count[j] as f64;
            // Eq. 5-7 and 5-8: the excess in units of the mean need, times T_j^avg.
            let over = |need: f64, have: f64| {
                if need > have {
                    (need - have) / (need / n) * self.avg[j]
                } else {
                    0.0
                }
            };
            total += over(cpu[j], self.nodes[j].cores);
            total += over(mem[j], self.nodes[j].memory_mb as f64);
        }
        total
    }

    fn random_individual(&self, rng: &mut StdRng) -> Vec<usize> {
        self.allowed
            .iter()
            .map(|a| a[rng.random_range(0..a.len())])
            .collect()
    }
}

/// Roulette selection: an index drawn with probability proportional to its fitness.
fn roulette(fitness: &[f64], total: f64, rng: &mut StdRng) -> usize {
    let mut x = rng.random::<f64>() * total;
    for (i, f) in fitness.iter().enumerate() {
        if x < *f {
            return i;
        }
        x -= f;
    }
    fitness.len() - 1
}

/// The genetic algorithm over `tasks` (each of which fits some node);
/// returns the best individual seen, in queue order.
pub fn genetic(
    nodes: &[NodeView],
    tasks: &[TaskView],
    history: &History,
    config: &GaConfig,
) -> Vec<(TaskId, NodeId)> {
    if tasks.is_empty() || nodes.is_empty() {
        return Vec::new();
    }
    let exec: Vec<f64> = tasks
        .iter()
        .map(|t| history.program_mean(&t.key).unwrap_or(1.0))
        .collect();
    let batch_avg = exec.iter().sum::<f64>() / exec.len() as f64;
    let avg: Vec<f64> = nodes
        .iter()
        .map(|n| history.node_mean(n.id).unwrap_or(batch_avg))
        .collect();
    let problem = Problem {
        nodes,
        cpu: tasks.iter().map(|t| t.cpu).collect(),
        mem: tasks.iter().map(|t| t.memory_mb as f64).collect(),
        allowed: tasks
            .iter()
            .map(|t| (0..nodes.len()).filter(|&j| fits(t, &nodes[j])).collect())
            .collect(),
        wait: nodes
            .iter()
            .zip(&avg)
            .map(|(n, a)| n.queue_len as f64 * a)
            .collect(),
        avg,
        exec,
    };
    if problem.allowed.iter().any(Vec::is_empty) {
        // The core never asks this: unplaceable tasks are held back.
        return Vec::new();
    }
    let mut rng = StdRng::seed_from_u64(config.seed);
    let size = config.population.max(2);
    let mut population: Vec<Vec<usize>> = (0..size)
        .map(|_| problem.random_individual(&mut rng))
        .collect();
    let mut best = population[0].clone();
    let mut best_cost = f64::INFINITY;
    let survivors = ((size as f64 * config.survive).round() as usize).clamp(1, size);
    for _ in 0..config.generations {
        let costs: Vec<f64> = population.iter().map(|g| problem.cost(g)).collect();
        for (g, c) in population.iter().zip(&costs) {
            if *c < best_cost {
                best_cost = *c;
                best.clone_from(g);
            }
        }
        let fitness: Vec<f64> = costs.iter().map(|c| 1.0 / c.max(1e-12)).collect();
        let total: f64 = fitness.iter().sum();
        let mut next: Vec<Vec<usize>> = (0..survivors)
            .map(|_| population[roulette(&fitness, total, &mut rng)].clone())
            .collect();
        while next.len() < size {
            let a = &population[roulette(&fitness, total, &mut rng)];
            let b = &population[roulette(&fitness, total, &mut rng)];
            let cut = rng.random_range(0..=a.len());
            let mut child: Vec<usize> = a[..cut].iter().chain(&b[cut..]).copied().collect();
            if rng.random::<f64>() < config.mutation {
                let i = rng.random_range(0..child.len());
                let allowed = &problem.allowed[i];
                child[i] = allowed[rng.random_range(0..allowed.len())];
            }
            next.push(child);
        }
        population = next;
    }
    for g in &population {
        if problem.cost(g) < best_cost {
            best_cost = problem.cost(g);
            best.clone_from(g);
        }
    }
    tasks
        .iter()
        .zip(best)
        .map(|(t, j)| (t.id, nodes[j].id))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::testing::{node, task};
    use super::*;

    #[test]
    fn memory_first_runs_locally_while_memory_lasts_then_spreads() {
        let nodes = [
            node(1, "pc", 4.0, 250, true),
            node(2, "pc", 8.0, 1000, false),
            node(3, "pc", 8.0, 600, false),
        ];
        let tasks: Vec<_> = (0..5).map(|i| task(i, "a")).collect();
        let placed = memory_first(&nodes, &tasks);
        let on: Vec<NodeId> = placed.iter().map(|p| p.1).collect();
        // 250 MB local: two tasks of 100; then the node with most free memory.
        assert_eq!(on, vec![1, 1, 2, 2, 2]);
        let mut no_local = task(9, "a");
        no_local.offload = false;
        assert_eq!(memory_first(&nodes, &[no_local])[0].1, 1);
    }

    #[test]
    fn the_cost_is_eq_5_5_with_the_overload_penalties() {
        let nodes = [
            node(1, "pc", 2.0, 1000, true),
            node(2, "pc", 8.0, 1000, false),
        ];
        let tasks: Vec<_> = (0..4).map(|i| task(i, "a")).collect();
        let mut h = History::new();
        h.record("a", "pc", 1, 10.0);
        let p = Problem {
            nodes: &nodes,
            exec: vec![10.0; 4],
            cpu: vec![1.0; 4],
            mem: vec![100.0; 4],
            allowed: vec![vec![0, 1]; 4],
            wait: vec![0.0, 0.0],
            avg: vec![10.0, 10.0],
        };
        // All four on the 2-core node: 40 + (4-2)/(4/4)·10 = 60.
        assert_eq!(p.cost(&[0, 0, 0, 0]), 60.0);
        assert_eq!(p.cost(&[0, 0, 1, 1]), 40.0);
        let placed = genetic(&nodes, &tasks, &h, &GaConfig::default());
        let local = placed.iter().filter(|p| p.1 == 1).count();
        assert!(
            local <= 2,
            "the penalty keeps the 2-core node at 2: {placed:?}"
        );
    }

    #[test]
    fn the_ga_is_seeded_and_memory_first_takes_unknown_programs() {
        let nodes = [
            node(1, "pc", 4.0, 1000, true),
            node(2, "pc", 8.0, 1000, false),
        ];
        let tasks: Vec<_> = (0..20)
            .map(|i| task(i, if i % 2 == 0 { "a" } else { "new" }))
            .collect();
        let mut h = History::new();
        h.record("a", "pc", 1, 5.0);
        let cfg = GaConfig {
            generations: 50,
            ..GaConfig::default()
        };
        let one = ga_policy(&nodes, &tasks, &h, &cfg);
        assert_eq!(one, ga_policy(&nodes, &tasks, &h, &cfg));
        assert_eq!(one.len(), 20);
        // The unknown programs come first, by memory-first.
        assert!(one[..10].iter().all(|(t, _)| t % 2 == 1));
    }
}
