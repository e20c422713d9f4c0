//! The thesis's Table 5-3, reproduced in the simulator with the measured
//! timing table, and the migration scenario (a node joins mid-batch, one is
//! drained).
//!
//! `cargo bench -p tern-controller --bench table53 [-- --timings FILE] [--sizes 100,500,1000]
//!  [--seeds 1,2,3] [--json FILE]`
//!
//! Prints Markdown tables (`docs/benchmarks.md` has them) and writes every
//! row as JSON (default `target/controller-table53.json`).

use std::path::PathBuf;

use tern_controller::bench::{
    draw_tasks, run_set, table_5_2, ClusterModel, Row, MEASURED_MIGRATION,
};
use tern_controller::catalogue::Catalogue;
use tern_controller::model::PolicyKind;
use tern_controller::sched::SchedConfig;
use tern_controller::sim::{simulate, SimNode};
use tern_controller::timings::TimingTable;

fn list<T: std::str::FromStr>(text: &str) -> Vec<T> {
    text.split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = v.fold((0.0, 0), |(s, n), x| (s + x, n + 1));
    s / n.max(1) as f64
}

fn main() {
    let mut timings = TimingTable::bundled();
    let mut sizes = vec![100usize, 500, 1000];
    let mut seeds = vec![1u64, 2, 3];
    let mut json = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/controller-table53.json"
    ));
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--timings" => {
                let path = PathBuf::from(args.next().expect("--timings FILE"));
                timings = TimingTable::load(&path).unwrap_or_else(|e| panic!("{e}"));
            }
            "--sizes" => sizes = list(&args.next().expect("--sizes N,N")),
            "--seeds" => seeds = list(&args.next().expect("--seeds N,N")),
            "--json" => json = args.next().expect("--json FILE").into(),
            _ => {} // cargo bench's own flags
        }
    }
    let catalogue = Catalogue::thesis();
    println!(
        "timing table: {} ({})",
        timings.source.command, timings.source.measured_at
    );
    println!("catalogue: {}", catalogue.name);
    let models = [
        ClusterModel {
            name: "Table 5-2, all pc".into(),
            nodes: table_5_2(["pc"; 4]),
        },
        ClusterModel {
            name: "Table 5-2, pc local + virt, pc, virt".into(),
            nodes: table_5_2(["pc", "virt", "pc", "virt"]),
        },
    ];
    let config = SchedConfig {
        migration_s: MEASURED_MIGRATION.total_s,
        ..SchedConfig::default()
    };
    let mut rows: Vec<Row> = Vec::new();
    for model in &models {
        let boards: Vec<String> = {
            let mut b: Vec<String> = model.nodes.iter().map(|n| n.board.clone()).collect();
            b.sort();
            b.dedup();
            b
        };
        for &size in &sizes {
            for &seed in &seeds {
                let tasks = draw_tasks(&catalogue, &timings, &boards, size, seed)
                    .unwrap_or_else(|e| panic!("{e}"));
                let set = run_set(model, &tasks, size, seed, &PolicyKind::ALL, &config)
                    .unwrap_or_else(|e| panic!("{e}"));
                let tern = set.iter().find(|r| r.policy == "tern").expect("tern ran");
                eprintln!(
                    "{} n={size} seed={seed}: T_local {:.1} s, tern {:.1} s (A {:.2}%, ideal {:.2}%)",
                    model.name, tern.t_local, tern.t_off, tern.a, tern.a_ideal
                );
                rows.extend(set);
            }
        }
        println!("\n### {}\n", model.name);
        println!("| policy | A mean | A min | ideal A | makespan ÷ LB (mean, max) | Σ response ÷ LB (mean) | placement of {} tasks (ms) | migrations |", sizes.iter().max().unwrap_or(&0));
        println!("|---|---|---|---|---|---|---|---|");
        for policy in PolicyKind::ALL {
            let mine: Vec<&Row> = rows
                .iter()
                .filter(|r| r.cluster == model.name && r.policy == policy.name())
                .collect();
            let biggest = sizes.iter().max().copied().unwrap_or(0);
            println!(
                "| {} | {:.2}% | {:.2}% | {:.2}% | {:.3}, {:.3} | {:.3} | {:.1} | {:.1} |",
                policy.name(),
                mean(mine.iter().map(|r| r.a)),
                mine.iter().map(|r| r.a).fold(f64::INFINITY, f64::min),
                mean(mine.iter().map(|r| r.a_ideal)),
                mean(mine.iter().map(|r| r.makespan_ratio)),
                mine.iter().map(|r| r.makespan_ratio).fold(0.0, f64::max),
                mean(mine.iter().map(|r| r.sum_ratio)),
                mine.iter()
                    .filter(|r| r.size == biggest)
                    .map(|r| r.placement_ms)
                    .fold(0.0, f64::max),
                mean(mine.iter().map(|r| r.migrations as f64)),
            );
        }
        println!("\nPer set (Tern's default):\n");
        println!("| set | size | T_local (s) | T_off (s) | A | ideal A | makespan ÷ LB |");
        println!("|---|---|---|---|---|---|---|");
        for r in rows
            .iter()
            .filter(|r| r.cluster == model.name && r.policy == "tern")
        {
            println!(
                "| {}-{} | {} | {:.1} | {:.1} | {:.2}% | {:.2}% | {:.3} |",
                sizes.iter().position(|s| *s == r.size).unwrap_or(0) + 1,
                r.seed,
                r.size,
                r.t_local,
                r.t_off,
                r.a,
                r.a_ideal,
                r.makespan_ratio
            );
        }
    }
    scenario(&catalogue, &timings, &config);
    if let Some(dir) = json.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(
        &json,
        serde_json::to_string_pretty(&rows).expect("rows serialise"),
    )
    .unwrap_or_else(|e| panic!("writing {}: {e}", json.display()));
    println!("\nrows written to {}", json.display());
}

/// Migration as a scheduling tool: a fast node joins at 20% of the static
/// run's makespan and a node is drained at 40%; makespans with and without
/// migration (and of the other policies, which never migrate).
fn scenario(catalogue: &Catalogue, timings: &TimingTable, config: &SchedConfig) {
    let specs = table_5_2(["pc", "pc", "pc", "virt"]);
    let boards = vec!["pc".to_string(), "virt".to_string()];
    println!("\n### Migration as a scheduling tool\n");
    println!(
        "Nodes: local pc 4 cores, pc 8, pc 8 (drained at 40%), virt 4 (joins at 20%); 200 tasks.\n"
    );
    println!("| seed | tern with migration (s) | tern without (s) | saved | migrations | min-min (s) | ga (s) |");
    println!("|---|---|---|---|---|---|---|");
    for seed in [1u64, 2, 3] {
        let tasks =
            draw_tasks(catalogue, timings, &boards, 200, seed).unwrap_or_else(|e| panic!("{e}"));
        let static_nodes: Vec<SimNode> = specs.iter().cloned().map(SimNode::new).collect();
        let learn = simulate(
            &static_nodes,
            &tasks,
            PolicyKind::Local,
            config.clone(),
            Default::default(),
            MEASURED_MIGRATION,
        );
        let base = simulate(
            &static_nodes,
            &tasks,
            PolicyKind::Tern,
            config.clone(),
            learn.history.clone(),
            MEASURED_MIGRATION,
        );
        let mut nodes = static_nodes.clone();
        nodes[3].joins_at = 0.2 * base.makespan;
        nodes[2].drains_at = Some(0.4 * base.makespan);
        let run = |policy, migration| {
            let cfg = SchedConfig {
                migration,
                ..config.clone()
            };
            simulate(
                &nodes,
                &tasks,
                policy,
                cfg,
                learn.history.clone(),
                MEASURED_MIGRATION,
            )
        };
        let with = run(PolicyKind::Tern, true);
        let without = run(PolicyKind::Tern, false);
        let minmin = run(PolicyKind::MinMin, false);
        let ga = run(PolicyKind::Ga, false);
        for (name, out) in [
            ("with", &with),
            ("without", &without),
            ("min-min", &minmin),
            ("ga", &ga),
        ] {
            assert!(
                out.unfinished.is_empty(),
                "{name}: {:?}",
                out.unfinished.first()
            );
        }
        println!(
            "| {seed} | {:.1} | {:.1} | {:.1}% | {} | {:.1} | {:.1} |",
            with.makespan,
            without.makespan,
            100.0 * (without.makespan - with.makespan) / without.makespan,
            with.migrations.len(),
            minmin.makespan,
            ga.makespan
        );
    }
}
