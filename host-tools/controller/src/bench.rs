//! The thesis's evaluation (Table 5-3), reproduced in the simulator: task
//! sets drawn with a catalogue's probabilities (Table 5-1), a model of
//! Table 5-2's cluster, a local-only run first (the baseline, and where the
//! thesis's system learned its times), then every policy on the same set
//! with what the local run taught. Each policy is measured by the speedup
//! A = (T_local − T_off) / T_local, its makespan against a lower bound, its
//! sum of response times against a lower bound, and its placement time.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

use crate::catalogue::Catalogue;
use crate::estimate::History;
use crate::model::{NodeSpec, PolicyKind, TaskSpec};
use crate::sched::SchedConfig;
use crate::sim::{simulate, MigrationCost, SimNode, SimOutcome, SimTask};
use crate::timings::TimingTable;

/// A migration as measured by `tern demo` (NPB EP between the QEMU PC and
/// aarch64 nodes, `docs/benchmarks.md`): about a second in all, a tenth of
/// it stopped.
pub const MEASURED_MIGRATION: MigrationCost = MigrationCost {
    total_s: 1.0,
    downtime_s: 0.1,
};

/// Table 5-2's cluster: a 4-core local node (8 GB) and nodes of 8 (16 GB),
/// 8 (16 GB) and 4 cores (8 GB), on the given boards in that order.
pub fn table_5_2(boards: [&str; 4]) -> Vec<NodeSpec> {
    let shape = [(4.0, 8192), (8.0, 16384), (8.0, 16384), (4.0, 8192)];
    boards
        .iter()
        .zip(shape)
        .enumerate()
        .map(|(i, (board, (cores, memory_mb)))| NodeSpec {
            name: if i == 0 {
                "local".into()
            } else {
                format!("node{i}")
            },
            board: board.to_string(),
            cores,
            memory_mb,
            gpu: false,
            local: i == 0,
        })
        .collect()
}

/// Draws `n` tasks from `catalogue` with its probabilities; each task's
/// true time on each board is one of the table's samples for its program.
pub fn draw_tasks(
    catalogue: &Catalogue,
    timings: &TimingTable,
    boards: &[String],
    n: usize,
    seed: u64,
) -> Result<Vec<SimTask>, String> {
    let weighted = catalogue.weighted();
    let total: f64 = weighted.iter().map(|(_, w)| w).sum();
    if weighted.is_empty() || total <= 0.0 {
        return Err(format!("{}: no program has a weight", catalogue.name));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let mut x = rng.random::<f64>() * total;
            let program = weighted
                .iter()
                .find(|(_, w)| {
                    x -= w;
                    x < 0.0
                })
                .map_or(weighted[weighted.len() - 1].0, |(p, _)| p);
            let p = catalogue.get(program).expect("drawn from the catalogue");
            let key = catalogue.timing_key(program);
            let actual = boards
                .iter()
                .map(|b| {
                    let samples = timings
                        .samples(key, b)
                        .ok_or_else(|| format!("the timing table has no {key} on {b}"))?;
                    Ok((b.clone(), samples[rng.random_range(0..samples.len())]))
                })
                .collect::<Result<BTreeMap<_, _>, String>>()?;
            Ok(SimTask {
                id: i as i64 + 1,
                spec: TaskSpec {
                    name: format!("t{:04}", i + 1),
                    program: program.to_string(),
                    args: Vec::new(),
                    cpu: p.cpu,
                    memory_mb: p.memory_mb,
                    gpu: false,
                    offload: true,
                    robust: false,
                },
                actual,
            })
        })
        .collect()
}

/// The shortest time of each task over the boards of `nodes`.
fn fastest(tasks: &[SimTask], nodes: &[NodeSpec]) -> Vec<f64> {
    tasks
        .iter()
        .map(|t| {
            nodes
                .iter()
                .filter_map(|n| t.actual.get(&n.board))
                .copied()
                .fold(f64::INFINITY, f64::min)
        })
        .collect()
}

/// A lower bound on the makespan of `tasks` (all at 0) on `nodes`: the
/// longest task at its fastest, and the fluid bound (the work spread
/// perfectly over every core, each task's share of work at its board's
/// speed; exact for one or two boards, for more the work at its fastest
/// over all cores).
pub fn makespan_lower_bound(tasks: &[SimTask], nodes: &[NodeSpec]) -> f64 {
    let fast = fastest(tasks, nodes);
    let longest = fast.iter().copied().fold(0.0, f64::max);
    let mut capacity: BTreeMap<&str, f64> = BTreeMap::new();
    for n in nodes {
        *capacity.entry(n.board.as_str()).or_default() += n.cores;
    }
    let boards: Vec<(&str, f64)> = capacity.into_iter().collect();
    let fluid = match boards.as_slice() {
        [(_, c)] => fast.iter().sum::<f64>() / c,
        [(a, ca), (b, cb)] => {
            // Fill board a with the tasks it is relatively best at; is the rest done on b by T?
            let mut order: Vec<(f64, f64)> =
                tasks.iter().map(|t| (t.actual[*a], t.actual[*b])).collect();
            order.sort_by(|x, y| (x.0 / x.1).total_cmp(&(y.0 / y.1)));
            let feasible = |time: f64| {
                let mut room = ca * time;
                let mut on_b = 0.0;
                for (ta, tb) in &order {
                    if room >= *ta {
                        room -= ta;
                    } else {
                        let share = (room / ta).max(0.0);
                        room = 0.0;
                        on_b += (1.0 - share) * tb;
                    }
                }
                on_b <= cb * time
            };
            let (mut lo, mut hi) = (0.0, fast.iter().sum::<f64>() / ca.min(*cb).max(1e-9) + 1.0);
            for _ in 0..100 {
                let mid = (lo + hi) / 2.0;
                if feasible(mid) {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            hi
        }
        _ => fast.iter().sum::<f64>() / boards.iter().map(|b| b.1).sum::<f64>(),
    };
    fluid.max(longest)
}

/// A lower bound on the sum of completion times: every task at its
/// fastest, on identical cores as many as the cluster's, shortest first
/// (optimal there, preemption or not).
pub fn sum_lower_bound(tasks: &[SimTask], nodes: &[NodeSpec]) -> f64 {
    let mut fast = fastest(tasks, nodes);
    fast.sort_by(f64::total_cmp);
    let cores: usize = nodes
        .iter()
        .map(|n| crate::policy::NodeView::slots(n.cores))
        .sum();
    let n = fast.len();
    fast.iter()
        .enumerate()
        .map(|(i, t)| t * (n - i).div_ceil(cores.max(1)) as f64)
        .sum()
}

/// One policy on one task set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The cluster model.
    pub cluster: String,
    /// Tasks in the set.
    pub size: usize,
    /// The set's seed.
    pub seed: u64,
    /// The policy.
    pub policy: String,
    /// Makespan of the local-only run, seconds.
    pub t_local: f64,
    /// Makespan under the policy, seconds.
    pub t_off: f64,
    /// Speedup A, percent.
    pub a: f64,
    /// The best A the lower bound allows, percent.
    pub a_ideal: f64,
    /// Makespan ÷ its lower bound.
    pub makespan_ratio: f64,
    /// Sum of response times ÷ its lower bound.
    pub sum_ratio: f64,
    /// Wall time of the batch's placement, milliseconds.
    pub placement_ms: f64,
    /// Wall time in the scheduling core over the whole run, milliseconds.
    pub scheduling_ms: f64,
    /// Live migrations.
    pub migrations: usize,
}

/// A cluster model of the bench.
#[derive(Debug, Clone)]
pub struct ClusterModel {
    /// Its name in the tables.
    pub name: String,
    /// Its nodes.
    pub nodes: Vec<NodeSpec>,
}

/// Runs one set: local-only first, then each policy with what it taught.
pub fn run_set(
    model: &ClusterModel,
    tasks: &[SimTask],
    size: usize,
    seed: u64,
    policies: &[PolicyKind],
    config: &SchedConfig,
) -> Result<Vec<Row>, String> {
    let nodes: Vec<SimNode> = model.nodes.iter().cloned().map(SimNode::new).collect();
    let check = |out: &SimOutcome, what: &str| {
        if out.unfinished.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{what}: {} task(s) never finished, first: {:?}",
                out.unfinished.len(),
                out.unfinished[0]
            ))
        }
    };
    let local = simulate(
        &nodes,
        tasks,
        PolicyKind::Local,
        config.clone(),
        History::new(),
        MEASURED_MIGRATION,
    );
    check(&local, "local-only")?;
    let lb = makespan_lower_bound(tasks, &model.nodes);
    let sum_lb = sum_lower_bound(tasks, &model.nodes);
    let t_local = local.makespan;
    let mut rows = Vec::new();
    for &policy in policies {
        let mut cfg = config.clone();
        cfg.ga.seed = seed;
        let out = simulate(
            &nodes,
            tasks,
            policy,
            cfg,
            local.history.clone(),
            MEASURED_MIGRATION,
        );
        check(&out, policy.name())?;
        rows.push(Row {
            cluster: model.name.clone(),
            size,
            seed,
            policy: policy.name().into(),
            t_local,
            t_off: out.makespan,
            a: 100.0 * (t_local - out.makespan) / t_local,
            a_ideal: 100.0 * (t_local - lb) / t_local,
            makespan_ratio: out.makespan / lb,
            sum_ratio: out.sum_response() / sum_lb,
            placement_ms: out.placement.as_secs_f64() * 1e3,
            scheduling_ms: out.scheduling.as_secs_f64() * 1e3,
            migrations: out.migrations.len(),
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timings() -> TimingTable {
        TimingTable::from_json(
            "t",
            r#"{"source":{"command":"c","measured_at":"t","commit":"x","boards":{"pc":"x86_64","virt":"aarch64"},"note":"n"},
                "programs":{"ep-S":{"pc":[80.0,90.0],"virt":[6.0]},"is-S":{"pc":[0.3],"virt":[0.2]},
                            "cg-S":{"pc":[3.4],"virt":[0.8]},"ep-W":{"pc":[160.0],"virt":[12.0]},
                            "is-W":{"pc":[6.0],"virt":[2.0]},"cg-W":{"pc":[30.0],"virt":[8.0]}}}"#,
        )
        .unwrap()
    }

    #[test]
    fn draws_follow_the_catalogue_and_are_seeded() {
        let boards = vec!["pc".to_string(), "virt".to_string()];
        let a = draw_tasks(&Catalogue::thesis(), &timings(), &boards, 2000, 7).unwrap();
        assert_eq!(
            a,
            draw_tasks(&Catalogue::thesis(), &timings(), &boards, 2000, 7).unwrap()
        );
        let sha = a.iter().filter(|t| t.spec.program == "sha256").count() as f64 / 2000.0;
        assert!((sha - 0.30).abs() < 0.04, "sha256 drawn {sha}");
        assert!(a.iter().all(|t| t.actual.len() == 2));
        let missing = draw_tasks(&Catalogue::thesis(), &timings(), &["rpi4".into()], 1, 7);
        assert!(missing.unwrap_err().contains("no "));
    }

    #[test]
    fn lower_bounds_are_the_fluid_bound_and_spt() {
        let t = |id, pc: f64, virt: f64| SimTask {
            id,
            spec: TaskSpec {
                name: format!("t{id}"),
                program: "p".into(),
                args: vec![],
                cpu: 1.0,
                memory_mb: 1,
                gpu: false,
                offload: true,
                robust: false,
            },
            actual: [("pc".to_string(), pc), ("virt".to_string(), virt)].into(),
        };
        let one_board = table_5_2(["pc"; 4]);
        let tasks: Vec<_> = (0..48).map(|i| t(i, 10.0, 10.0)).collect();
        assert!((makespan_lower_bound(&tasks, &one_board) - 20.0).abs() < 1e-9);
        // 48 tasks of 10 s on 24 cores, shortest first: 24 at 10 s, 24 at 20 s.
        assert!((sum_lower_bound(&tasks, &one_board) - 720.0).abs() < 1e-9);
        // Two boards: 2 tasks, each 10 s on pc and 1 s on virt; 1 core of each.
        let two = vec![
            NodeSpec {
                cores: 1.0,
                ..one_board[0].clone()
            },
            NodeSpec {
                board: "virt".into(),
                cores: 1.0,
                ..one_board[1].clone()
            },
        ];
        let lb = makespan_lower_bound(&[t(1, 10.0, 1.0), t(2, 10.0, 1.0)], &two);
        // Fluid: virt does 2 s of work; pc can take x of one, 10x = T, 2 - x = T → T = 20/11.
        assert!((lb - 20.0 / 11.0).abs() < 1e-6, "{lb}");
    }

    #[test]
    fn a_small_set_runs_for_every_policy() {
        let model = ClusterModel {
            name: "t".into(),
            nodes: table_5_2(["pc", "virt", "pc", "virt"]),
        };
        let boards = vec!["pc".to_string(), "virt".to_string()];
        let tasks = draw_tasks(&Catalogue::thesis(), &timings(), &boards, 40, 1).unwrap();
        let config = SchedConfig {
            ga: crate::policy::GaConfig {
                generations: 20,
                ..Default::default()
            },
            ..Default::default()
        };
        let rows = run_set(&model, &tasks, 40, 1, &PolicyKind::ALL, &config).unwrap();
        assert_eq!(rows.len(), PolicyKind::ALL.len());
        for r in &rows {
            assert!(r.makespan_ratio >= 1.0 - 1e-9, "{r:?}");
            assert!(r.sum_ratio >= 1.0 - 1e-9, "{r:?}");
        }
        let local = rows.iter().find(|r| r.policy == "local").unwrap();
        assert!(local.a.abs() < 1e-9);
        let tern = rows.iter().find(|r| r.policy == "tern").unwrap();
        assert!(
            rows.iter().all(|r| tern.t_off <= r.t_off * 1.02),
            "{rows:#?}"
        );
    }
}
