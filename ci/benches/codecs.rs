//! Adaptive compression against fixed codecs on the real migration path: a
//! PC node and an aarch64 `virt` node on one lab (`tern_lab::netlab`,
//! needs root) whose taps are shaped by `tc` to 10, 30, 60, 90 and 120 MB/s.
//! At each rate, for each codec mode of the sender (`codec none|lz4|
//! zstd-1|zstd-3|zstd-9|adaptive` on its shell; the order rotates from rate to rate
//! and round to round), a fresh NPB task (default CG class A: 22.9 MB of
//! floating-point state) runs on the PC and migrates live to the `virt`
//! node, which holds no replica of it, so every trial moves the whole
//! state. The sender's migration report gives total time, downtime and bytes
//! on the wire; the task is then killed on the receiver.
//!
//! Run with `cargo bench -p tern-ci --bench codecs` (optionally `--
//! ROUNDS`, default 1; `--rates 10,30` and `--modes none,adaptive` restrict
//! the grid; `--task "is W"` migrates another workload). Every trial is
//! printed, then per rate the medians and the adaptive mode's ratios
//! against no compression and the best fixed codec of the same run.

use std::collections::BTreeMap;
use std::time::Duration;

use tern_client::random_key;
use tern_flash::Board;
use tern_lab::cluster::{Cluster, ClusterError};
use tern_protocol::{MigrationReport, Security, TaskRole, TaskStatus};

/// Shaped link rates, MB/s (10^6 bytes per second).
const RATES: [u64; 5] = [10, 30, 60, 90, 120];

/// The sender's codec modes.
const MODES: [&str; 6] = ["none", "lz4", "zstd-1", "zstd-3", "zstd-9", "adaptive"];

/// The task each trial migrates, by default.
const TASK: &str = "cg A";

/// Progress (percent) the task reaches on the PC before it migrates: past
/// the matrix set-up (about 3%), so pre-copy rounds after the first send
/// only what the iterations change.
const START_AT: f64 = 6.0;

const POLL: Duration = Duration::from_millis(300);
const ANSWER: Duration = Duration::from_secs(20);

/// What the command line asks for.
struct Grid {
    rounds: usize,
    rates: Vec<u64>,
    modes: Vec<String>,
    /// Workload and class, as `run` takes them.
    task: String,
}

/// One trial's (total ms, downtime ms, wire bytes), filed by rate and mode.
type Trial = (f64, f64, f64);

fn grid() -> Grid {
    let mut grid = Grid {
        rounds: 1,
        rates: RATES.to_vec(),
        modes: MODES.iter().map(|m| m.to_string()).collect(),
        task: TASK.into(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rates" => {
                let list = args.next().expect("--rates takes a list like 10,30");
                grid.rates = list
                    .split(',')
                    .map(|r| r.parse().expect("a rate in MB/s"))
                    .collect();
            }
            "--task" => grid.task = args.next().expect("--task takes a workload and class"),
            "--modes" => {
                let list = args
                    .next()
                    .expect("--modes takes a list like none,adaptive");
                grid.modes = list.split(',').map(str::to_owned).collect();
            }
            // cargo bench passes --bench; a bare number is the rounds.
            other => {
                if let Ok(rounds) = other.parse() {
                    grid.rounds = rounds;
                }
            }
        }
    }
    grid
}

/// Starts a fresh task on the PC, lets it reach [`START_AT`], migrates it
/// to the `virt` node with the PC's codec set to `mode`, kills it there.
fn trial(cluster: &mut Cluster, task: &str, mode: &str) -> Result<MigrationReport, ClusterError> {
    let kind = format!("npb-{}", task.split_whitespace().next().unwrap_or_default());
    cluster.shell(0, &format!("codec {mode}"))?;
    let known: Vec<u64> = cluster
        .client(0, ANSWER)?
        .list()?
        .iter()
        .map(|t| t.task_id)
        .collect();
    cluster.shell(0, &format!("run {task}"))?;
    let task = cluster.wait_for_task(
        0,
        "the task at its start mark",
        Duration::from_secs(300),
        POLL,
        |tasks| {
            tasks
                .iter()
                .find(|t| {
                    t.kind == kind
                        && t.role == TaskRole::Owner
                        && !known.contains(&t.task_id)
                        && t.status == TaskStatus::Running
                        && t.progress as f64 * 100.0 >= START_AT * t.progress_total as f64
                })
                .cloned()
        },
    )?;
    let report = cluster.client(0, ANSWER)?.migrate(
        task.task_id,
        &Cluster::control(1).to_string(),
        Duration::from_secs(600),
    );
    // Stop the task wherever it runs now, so the next trial's nodes are
    // not computing (nor holding its memory).
    for node in 0..2 {
        kill(cluster, node, task.task_id)?;
    }
    Ok(report?)
}

/// Kills task `task_id` on node `node` if it runs there.
fn kill(cluster: &mut Cluster, node: usize, task_id: u64) -> Result<(), ClusterError> {
    let ps = cluster.shell(node, "ps")?;
    let global = format!("{task_id:016x}");
    if let Some(local) = ps
        .lines()
        .find(|l| l.trim_end().ends_with(&global))
        .and_then(|l| l.split_whitespace().next())
    {
        cluster.shell(node, &format!("kill {local}"))?;
    }
    Ok(())
}

/// The median (the mean of the middle two of an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n.is_multiple_of(2) {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    } else {
        v[n / 2]
    }
}

fn main() {
    let grid = grid();
    let key = random_key().expect("OS random generator");
    let mut cluster = Cluster::start("codecs", &[Board::Pc, Board::Virt], Security::Key(key))
        .expect("nodes boot on the lab");
    let shaper = cluster.lab().shaper();
    println!(
        "live migration of {} (fresh task at {START_AT}%, no replica at the receiver), pc -> virt",
        grid.task
    );
    println!(
        "{:>8} {:>13} {:>6} {:>12} {:>12} {:>9} {:>9} {:>11} {:>7}",
        "MB/s",
        "codec",
        "round",
        "state B",
        "wire B",
        "total ms",
        "down ms",
        "pre-copies",
        "wire/state"
    );
    let mut results: BTreeMap<u64, BTreeMap<String, Vec<Trial>>> = BTreeMap::new();
    let mut turn = 0;
    for &rate in &grid.rates {
        shaper
            .set_rate(Some(rate * 1_000_000))
            .expect("shaping the lab's taps");
        for round in 0..grid.rounds {
            let n = grid.modes.len();
            for k in 0..n {
                let mode = &grid.modes[(k + turn) % n];
                match trial(&mut cluster, &grid.task, mode) {
                    Ok(r) => {
                        if std::env::var_os("TERN_BENCH_CONSOLES").is_some() {
                            println!("{}", cluster.consoles());
                        }
                        println!(
                            "{rate:>8} {mode:>13} {round:>6} {:>12} {:>12} {:>9} {:>9} {:>11} {:>7.2}",
                            r.state_bytes,
                            r.wire_bytes,
                            r.total_ms,
                            r.downtime_ms,
                            r.precopy_rounds,
                            r.wire_bytes as f64 / r.state_bytes.max(1) as f64
                        );
                        results
                            .entry(rate)
                            .or_default()
                            .entry(mode.clone())
                            .or_default()
                            .push((r.total_ms as f64, r.downtime_ms as f64, r.wire_bytes as f64));
                    }
                    Err(e) => println!(
                        "{rate:>8} {mode:>13} {round:>6} failed: {e}\n{}",
                        cluster.consoles()
                    ),
                }
            }
            turn += 1;
        }
    }
    shaper.set_rate(None).expect("lifting the shaping");

    println!(
        "\nmedians per rate; adaptive against none and against the best fixed codec of the run:"
    );
    println!(
        "{:>8} {:>13} {:>10} {:>10} {:>12} | {:>22} {:>22}",
        "MB/s",
        "codec",
        "total ms",
        "down ms",
        "wire B",
        "adaptive/none t,d,B",
        "adaptive/best t,d,B"
    );
    for (rate, modes) in &results {
        let med: BTreeMap<&str, (f64, f64, f64)> = modes
            .iter()
            .map(|(m, v)| {
                (
                    m.as_str(),
                    (
                        median(v.iter().map(|x| x.0).collect()),
                        median(v.iter().map(|x| x.1).collect()),
                        median(v.iter().map(|x| x.2).collect()),
                    ),
                )
            })
            .collect();
        for (mode, (t, d, b)) in &med {
            println!("{rate:>8} {mode:>13} {t:>10.0} {d:>10.0} {b:>12.0} |");
        }
        let ratio = |a: (f64, f64, f64), b: (f64, f64, f64)| {
            format!("{:.3}, {:.3}, {:.3}", a.0 / b.0, a.1 / b.1, a.2 / b.2)
        };
        if let Some(&adaptive) = med.get("adaptive") {
            let against_none = med.get("none").map(|&n| ratio(adaptive, n));
            // The fixed codec with the shortest total time at this rate.
            let best = med
                .iter()
                .filter(|(m, _)| **m != "adaptive")
                .min_by(|a, b| a.1 .0.total_cmp(&b.1 .0));
            println!(
                "{rate:>8} {:>13} {:>10} {:>10} {:>12} | {:>22} {:>22}",
                "",
                "",
                "",
                "",
                against_none.unwrap_or_default(),
                best.map(|(m, &v)| format!("{} ({m})", ratio(adaptive, v)))
                    .unwrap_or_default()
            );
        }
    }
}
