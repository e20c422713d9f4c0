//! Measures the timing table the simulator reads: every program of a
//! catalogue, run alone on a QEMU `pc` node and a QEMU `virt` node (both at
//! once, one task per node), timed from the task's start (the shell's
//! answer to `run` for an NPB kernel; the answer to `StartTask` for a Wasm
//! program, its module uploaded before, run with its reference arguments
//! and answer from the task set's manifest, built here) to the control
//! service listing it as finished and verified (read every 50 ms). Needs root (the nodes sit on a network
//! namespace's bridge). The table is written after every program, so an
//! interrupted run keeps what it measured; `--merge FILE` starts from an
//! earlier table and `--programs a,b` measures only those rows.
//!
//! `sudo cargo run -p tern-controller --example measure_timings -- \
//!     --catalogue host-tools/controller/data/npb.json --repeat 3 \
//!     --out host-tools/controller/data/timings.json`

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use tern_client::{random_key, NodeClient};
use tern_controller::catalogue::{Catalogue, Runner};
use tern_controller::driver::wasm::WasmSet;
use tern_controller::timings::{TimingSource, TimingTable};
use tern_flash::Board;
use tern_lab::cluster::Cluster;
use tern_protocol::{Security, TaskRole, TaskStatus};

/// The boards measured: one of each ISA.
const BOARDS: [Board; 2] = [Board::Pc, Board::Virt];

/// How often the task lists are read.
const POLL: Duration = Duration::from_millis(50);

/// Longest run of one program.
const LIMIT: Duration = Duration::from_secs(1200);

struct Args {
    catalogue: PathBuf,
    repeat: usize,
    out: PathBuf,
    merge: Option<PathBuf>,
    programs: Option<Vec<String>>,
}

fn args() -> Result<Args> {
    let mut args = Args {
        catalogue: "host-tools/controller/data/npb.json".into(),
        repeat: 3,
        out: "timings.json".into(),
        merge: None,
        programs: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--catalogue" => args.catalogue = value.into(),
            "--repeat" => args.repeat = value.parse().context("--repeat")?,
            "--out" => args.out = value.into(),
            "--merge" => args.merge = Some(value.into()),
            "--programs" => args.programs = Some(value.split(',').map(String::from).collect()),
            other => {
                bail!("unknown flag {other} (--catalogue, --repeat, --out, --merge, --programs)")
            }
        }
    }
    ensure!(args.repeat > 0, "--repeat must be at least 1");
    Ok(args)
}

fn command_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// How a program is started on node `i`: its task's id when the start
/// tells it (else it is the first new task of its kind listed).
type Start<'a> = dyn FnMut(usize, &mut Cluster, &mut NodeClient) -> Result<Option<u64>> + 'a;

/// Starts a program (`kind` on the nodes, `class` in messages) on every
/// node at once and returns each node's seconds from its start to the task
/// listed as finished and verified.
fn run_once(
    cluster: &mut Cluster,
    clients: &mut [NodeClient],
    seen: &mut [HashSet<u64>],
    kind: &str,
    class: &str,
    start: &mut Start<'_>,
) -> Result<Vec<f64>> {
    let mut since = Vec::new();
    let mut ids: Vec<Option<u64>> = Vec::new();
    for (i, client) in clients.iter_mut().enumerate() {
        ids.push(start(i, cluster, client)?);
        since.push(Instant::now());
    }
    let mut took: Vec<Option<f64>> = vec![None; clients.len()];
    let deadline = Instant::now() + LIMIT;
    while took.iter().any(Option::is_none) {
        ensure!(
            Instant::now() < deadline,
            "{kind} {class} ran past {LIMIT:?}"
        );
        for (i, client) in clients.iter_mut().enumerate() {
            if took[i].is_some() {
                continue;
            }
            let tasks = client.list()?;
            let now = Instant::now();
            let mine = match ids[i] {
                Some(id) => tasks.iter().find(|t| t.task_id == id),
                None => tasks.iter().find(|t| {
                    t.kind == kind && t.role == TaskRole::Owner && !seen[i].contains(&t.task_id)
                }),
            };
            let Some(task) = mine else { continue };
            ids[i] = Some(task.task_id);
            seen[i].insert(task.task_id);
            if let TaskStatus::Finished { verified } = task.status {
                ensure!(verified, "{kind} {class} did not verify on node {i}");
                took[i] = Some(now.duration_since(since[i]).as_secs_f64());
            }
        }
        std::thread::sleep(POLL);
    }
    Ok(took.into_iter().flatten().collect())
}

fn main() -> Result<()> {
    let args = args()?;
    let catalogue = Catalogue::load(&args.catalogue)?;
    let mut table = match &args.merge {
        Some(path) => TimingTable::load(path)?,
        None => TimingTable {
            source: TimingSource {
                command: String::new(),
                measured_at: String::new(),
                commit: String::new(),
                boards: BTreeMap::new(),
                note: String::new(),
            },
            programs: BTreeMap::new(),
        },
    };
    let command = format!(
        "cargo run -p tern-controller --example measure_timings -- --catalogue {} --repeat {}{}",
        args.catalogue.display(),
        args.repeat,
        args.programs
            .as_ref()
            .map(|p| format!(" --programs {}", p.join(",")))
            .unwrap_or_default()
    );
    let rows = |names: Vec<&String>| {
        names
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let todo: Vec<(&String, &Runner)> = catalogue
        .programs
        .iter()
        .filter(|(name, _)| args.programs.as_ref().is_none_or(|p| p.contains(name)))
        .map(|(name, p)| (name, &p.runner))
        .collect();
    let wasm = if todo.iter().any(|(_, r)| matches!(r, Runner::Wasm { .. })) {
        eprintln!("measure: building the Wasm task set");
        let ws = tern_flash::build::Workspace::locate()?;
        WasmSet::from_manifest(&tern_tasks::build_all(&ws)?).map_err(anyhow::Error::msg)?
    } else {
        WasmSet::default()
    };
    let entry = format!(
        "{} ({}, commit {}): rows {}",
        command,
        command_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        command_line("git", &["rev-parse", "--short", "HEAD"]),
        rows(todo.iter().map(|t| t.0).collect())
    );
    let source = &mut table.source;
    source.command = if source.command.is_empty() {
        entry
    } else {
        format!("{}; then {entry}", source.command)
    };
    source.measured_at = command_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]);
    source.commit = command_line("git", &["rev-parse", "--short", "HEAD"]);
    for b in BOARDS {
        source
            .boards
            .insert(b.name().to_string(), b.isa().to_string());
    }
    source.note = "seconds from the task's start (the shell's answer to `run` for NPB, the answer to `StartTask` for a Wasm \
         program) to the control service listing the task as finished and verified \
         (read every 50 ms, so a run shorter than that reads as one poll); one task per single-core QEMU node, \
         the pc and virt nodes running at once on a shared 2-core host"
        .to_string();
    let key = random_key().context("OS random generator")?;
    eprintln!("measure: booting {BOARDS:?}");
    let mut cluster = Cluster::start("ctlmeasure", &BOARDS, Security::Key(key))?;
    let mut clients = (0..BOARDS.len())
        .map(|i| cluster.client(i, Duration::from_secs(20)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut seen = vec![HashSet::new(); BOARDS.len()];
    for (name, runner) in todo {
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); BOARDS.len()];
        for round in 0..args.repeat {
            let took = match runner {
                Runner::Npb { workload, class } => run_once(
                    &mut cluster,
                    &mut clients,
                    &mut seen,
                    &format!("npb-{workload}"),
                    class,
                    &mut |i, cluster, _| {
                        cluster.shell(i, &format!("run {workload} {class}"))?;
                        Ok(None)
                    },
                ),
                Runner::Wasm { .. } => {
                    let run = wasm.run(name, &[]).map_err(anyhow::Error::msg)?;
                    run_once(
                        &mut cluster,
                        &mut clients,
                        &mut seen,
                        "wasm",
                        name,
                        &mut |_, _, client| {
                            let id = client.put_module(&run.module.bytes)?;
                            let args = run.start_args(&id, name);
                            let args: Vec<&str> = args.iter().map(String::as_str).collect();
                            Ok(Some(client.start_task(&args)?))
                        },
                    )
                }
            }
            .with_context(|| format!("{name} round {round}\n{}", cluster.consoles()))?;
            for (i, secs) in took.iter().enumerate() {
                eprintln!("measure: {name} on {}: {secs:.3} s", BOARDS[i].name());
                samples[i].push((secs * 1000.0).round() / 1000.0);
            }
        }
        let row = table.programs.entry(name.clone()).or_default();
        for (board, s) in BOARDS.iter().zip(samples) {
            row.insert(board.name().to_string(), s);
        }
        let json = serde_json::to_string_pretty(&table)? + "\n";
        TimingTable::from_json("measured", &json)?;
        let tmp = args.out.with_extension("tmp");
        std::fs::write(&tmp, &json).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &args.out)
            .with_context(|| format!("renaming to {}", args.out.display()))?;
        eprintln!("measure: {name} written to {}", args.out.display());
    }
    Ok(())
}
