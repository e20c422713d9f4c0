//! Wasm benchmark (issue 13): what the interpreter costs against native code
//! in the kernel, and the migration of a Wasm task with tens of MB of memory
//! against a built-in task of the same state size, on a PC and an aarch64
//! `virt` node (QEMU, TCG), all in one run.
//!
//! Run with `sudo cargo bench -p tern-ci --bench wasm [-- [--rounds N]
//! [--matrix N] [WORKLOAD CLASS]...]` (root: the nodes sit in a network
//! namespace; default `cg S is W`, 3 rounds, matrix 1150).
//!
//! 1. Interpreter overhead. The `npb` Wasm task (`tasks/programs/npb`) is
//!    the kernels' own NPB code (`tern-workloads`) compiled to wasm32
//!    through the task SDK; the node runs it in wasmi. On each node, in
//!    each round, the kernel's native `run WORKLOAD CLASS` and the Wasm task
//!    with the same arguments run one after the other, each alone, timed
//!    between the node's own `TaskStarted` and `TaskFinished` events. Ratio
//!    = Wasm ÷ native. Every run must verify: the native one by NPB's
//!    reference values, the Wasm one by its report, byte for byte the
//!    report of the same code run natively on the host (NPB's verification
//!    line included).
//! 2. Migration. The `matrix` Wasm task with n = N keeps its two n × n f64
//!    matrices in linear memory (16 n² bytes: 21 MB at 1150); the kernel's
//!    `cg A` holds 22.9 MB. Each round, each task starts on the PC node,
//!    migrates to the virt node once it has passed its set-up, and back once
//!    it runs there; the sending nodes' migration reports give state bytes,
//!    wire bytes, total time and downtime. The task is then killed: matrix
//!    1150 computes for longer than the bench should (its migrations are
//!    checked bit for bit by `ci/tests/wasm.rs`).
//!
//! 0. Control, on the host's own CPU without an emulator: the same module in
//!    the same interpreter (`tern-wasm`, in-process, release build) against
//!    the NPB code called directly, one run each per round. `--host` runs
//!    this part alone (no root, no nodes).
//!
//! The load average is printed at the start and the end: the machine may be
//! shared, so read the ratios within the run.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tern_client::{hex, random_key};
use tern_flash::build::Workspace;
use tern_flash::Board;
use tern_lab::cluster::Cluster;
use tern_protocol::{MigrationReport, Security, TaskRole, TaskStatus, TaskSummary};
use tern_tasks::{build, program, Built};

/// The nodes: a PC (index 0) and a virt (1).
const BOARDS: [Board; 2] = [Board::Pc, Board::Virt];
/// Bounds one run or one migration.
const RUN_TIMEOUT: Duration = Duration::from_secs(1800);
/// Longest wait for one control answer.
const ANSWER: Duration = Duration::from_secs(30);

/// What the command line asks for.
struct Options {
    host_only: bool,
    rounds: usize,
    matrix: usize,
    workloads: Vec<(String, String)>,
}

fn options() -> Options {
    let mut o = Options {
        host_only: false,
        rounds: 3,
        matrix: 1150,
        workloads: Vec::new(),
    };
    // `cargo bench` adds `--bench`; other flags are ours.
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let mut words = Vec::new();
    while let Some(a) = args.next() {
        let mut number = |what: &str| -> usize {
            args.next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{what} takes a number"))
        };
        match a.as_str() {
            "--rounds" => o.rounds = number("--rounds"),
            "--matrix" => o.matrix = number("--matrix"),
            "--host" => o.host_only = true,
            _ => words.push(a),
        }
    }
    assert!(
        words.len() % 2 == 0,
        "workloads come as WORKLOAD CLASS pairs"
    );
    o.workloads = words
        .chunks(2)
        .map(|p| (p[0].clone(), p[1].clone()))
        .collect();
    if o.workloads.is_empty() {
        o.workloads = [("cg", "S"), ("is", "W")]
            .map(|(w, c)| (w.to_string(), c.to_string()))
            .into();
    }
    o
}

/// The host's load average (1, 5, 15 minutes), as `uptime` shows it.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

/// `StartTask` arguments of `built`, held by the nodes as `id`; with its
/// reference answer as `--expect` when `verify`.
fn wasm_args(built: &Built, id: &[u8; 32], verify: bool) -> Vec<String> {
    let mut args = vec!["wasm".into(), hex(id), "--name".into(), built.name.clone()];
    if verify {
        args.extend(["--expect".into(), hex(built.expected.as_bytes())]);
    }
    args.push("--".into());
    args.extend(built.args.iter().cloned());
    args
}

/// Uploads `built`'s module to every node; its identity (alike on all).
fn upload(cluster: &Cluster, built: &Built) -> [u8; 32] {
    let bytes = std::fs::read(&built.wasm).unwrap();
    let ids: Vec<[u8; 32]> = (0..BOARDS.len())
        .map(|i| {
            cluster
                .client(i, ANSWER)
                .unwrap()
                .put_module(&bytes)
                .unwrap()
        })
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "nodes name it alike");
    ids[0]
}

/// Runs `args` on node `node` to its end; its time in seconds, which must
/// have verified.
fn seconds(cluster: &Cluster, node: usize, args: &[String]) -> f64 {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = tern_ci::timed_run(cluster, node, &args, RUN_TIMEOUT)
        .unwrap_or_else(|e| panic!("{args:?} on node {node}: {e}\n{}", cluster.consoles()));
    assert!(
        run.verified,
        "{args:?} on node {node}: {}\n{}",
        run.verdict,
        cluster.consoles()
    );
    run.time
        .expect("TaskStarted comes before TaskFinished")
        .as_secs_f64()
}

/// Median of `v` (not empty).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The host's clock, for the interpreter's fuel gauge.
struct HostClock;

impl tern_hal::MonotonicClock for HostClock {
    fn now_ns(&self) -> u64 {
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }
    fn counter_hz(&self) -> u64 {
        1_000_000_000
    }
}

/// Steps `task` to its end; its time, which must have verified.
fn run_here(mut task: Box<dyn tern_migration::Task>, what: &str) -> f64 {
    let start = Instant::now();
    loop {
        if let tern_migration::Step::Finished { verified, report } = task.step() {
            assert!(verified, "{what}: {report}");
            return start.elapsed().as_secs_f64();
        }
    }
}

/// Part 0: each workload natively and interpreted on the host's CPU.
fn host_overhead(ws: &Workspace, o: &Options) {
    use tern_migration::TaskCatalog;
    println!("control on the host CPU: the same NPB code called directly and interpreted");
    println!(
        "{:<6} {:<6} {:>6} {:>10} {:>10} {:>8}",
        "task", "where", "round", "native s", "wasm s", "ratio"
    );
    let catalog = tern_wasm::WasmCatalog::new(&HostClock, tern_wasm::Limits::default());
    for (workload, class) in &o.workloads {
        let built = build(
            ws,
            program("npb").unwrap(),
            Some(&[workload.as_str(), class.as_str()]),
        )
        .unwrap();
        let id = catalog
            .add_module(&std::fs::read(&built.wasm).unwrap())
            .unwrap();
        let args = wasm_args(&built, &id, true);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let npb = tern_workloads::Workload::parse(workload).expect("a workload");
        let npb_class = tern_workloads::Class::parse(class).expect("a class");
        for round in 1..=o.rounds {
            let n = run_here(npb.start(npb_class), "native");
            let w = run_here(catalog.start(&args).unwrap().task, "wasm");
            println!(
                "{:<6} {:<6} {:>6} {:>10.3} {:>10.3} {:>8.2}",
                format!("{workload} {class}"),
                "host",
                round,
                n,
                w,
                w / n
            );
        }
    }
    println!("(load {})\n", load());
}

/// Part 1: each workload natively and as the `npb` Wasm task, per node.
fn interpreter_overhead(cluster: &Cluster, ws: &Workspace, o: &Options) {
    println!("interpreter overhead: the same NPB code natively and as a Wasm task");
    println!(
        "{:<6} {:<6} {:>6} {:>10} {:>10} {:>8}",
        "task", "board", "round", "native s", "wasm s", "ratio"
    );
    let npb = program("npb").unwrap();
    for (workload, class) in &o.workloads {
        let built = build(ws, npb, Some(&[workload.as_str(), class.as_str()])).unwrap();
        let id = upload(cluster, &built);
        let wasm = wasm_args(&built, &id, true);
        let native = [workload.clone(), class.clone()];
        for (node, board) in BOARDS.iter().enumerate() {
            let mut ratios = Vec::new();
            for round in 1..=o.rounds {
                let n = seconds(cluster, node, &native);
                let w = seconds(cluster, node, &wasm);
                ratios.push(w / n);
                println!(
                    "{:<6} {:<6} {:>6} {:>10.2} {:>10.2} {:>8.2}",
                    format!("{workload} {class}"),
                    board.name(),
                    round,
                    n,
                    w,
                    w / n
                );
            }
            println!(
                "{:<6} {:<6} median ratio {:.2} (load {})",
                format!("{workload} {class}"),
                board.name(),
                median(ratios),
                load()
            );
        }
    }
}

/// How far a listed task is, in percent.
fn percent(t: &TaskSummary) -> f64 {
    t.progress as f64 * 100.0 / t.progress_total.max(1) as f64
}

/// Task `id` as node `i` lists it once `until` holds for its progress
/// (percent) while it runs there as owner.
fn running(cluster: &Cluster, i: usize, id: u64, until: impl Fn(f64) -> bool) -> TaskSummary {
    let task = cluster
        .wait_for_task(
            i,
            "the task's progress",
            RUN_TIMEOUT,
            Duration::from_millis(200),
            |tasks| {
                let t = tasks
                    .iter()
                    .find(|t| t.task_id == id && t.role == TaskRole::Owner)?;
                let ended = matches!(t.status, TaskStatus::Finished { .. });
                (ended || until(percent(t))).then(|| t.clone())
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.consoles()));
    assert!(
        matches!(task.status, TaskStatus::Running),
        "task {id:#x} must still run to be migrated: {task:?}"
    );
    task
}

/// Migrates task `id` from node `from` to node `to`: the sender's report.
fn migrate(cluster: &Cluster, from: usize, to: usize, id: u64) -> MigrationReport {
    cluster
        .client(from, ANSWER)
        .unwrap()
        .migrate(id, &Cluster::control(to).to_string(), RUN_TIMEOUT)
        .unwrap_or_else(|e| panic!("migrating {id:#x}: {e}\n{}", cluster.consoles()))
}

/// Part 2: a Wasm task with tens of MB of memory and `cg A`, each migrated
/// PC → virt → PC in every round.
fn migrations(cluster: &Cluster, ws: &Workspace, o: &Options) {
    let (pc, virt) = (0, 1);
    let n = o.matrix.to_string();
    let matrix = build(ws, program("matrix").unwrap(), Some(&[n.as_str(), "5"])).unwrap();
    let id = upload(cluster, &matrix);
    // Not verified: the run is killed after its migrations.
    let matrix_args = wasm_args(&matrix, &id, false);
    let native_args = ["cg".to_string(), "A".to_string()];
    // Where each leaves the PC: past its set-up (matrix: init fills both
    // matrices before the first step counts; cg A: assembly is the first
    // 4% of its steps).
    let tasks: [(String, &[String], f64); 2] = [
        (format!("wasm matrix {n}"), &matrix_args, 0.0),
        ("cg A".to_string(), &native_args, 10.0),
    ];
    println!("\nmigration: a Wasm task with tens of MB of memory against cg A");
    println!(
        "{:<16} {:>5} {:<18} {:>7} {:>12} {:>12} {:>9} {:>9} {:>7}",
        "task",
        "round",
        "direction",
        "at %",
        "state bytes",
        "wire bytes",
        "total ms",
        "down ms",
        "rounds"
    );
    for round in 1..=o.rounds {
        for (name, args, out_at) in &tasks {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let task = cluster
                .client(pc, ANSWER)
                .unwrap()
                .start_task(&args)
                .unwrap_or_else(|e| panic!("{name}: {e}\n{}", cluster.consoles()));
            for (from, to, at) in [(pc, virt, *out_at), (virt, pc, 0.0)] {
                // `> at`: a Wasm task shows progress only once init is done.
                let pct = percent(&running(cluster, from, task, |p| p > at));
                let r = migrate(cluster, from, to, task);
                println!(
                    "{:<16} {:>5} {:<18} {:>7.2} {:>12} {:>12} {:>9} {:>9} {:>7}",
                    name,
                    round,
                    format!("{} -> {}", r.from_isa, r.to_isa),
                    pct,
                    r.state_bytes,
                    r.wire_bytes,
                    r.total_ms,
                    r.downtime_ms,
                    r.precopy_rounds
                );
                println!("    {}", tern_ci::migration_stages(&r));
            }
            // Back on the PC and computing again (its progress moves), then
            // ended.
            let back = percent(&running(cluster, pc, task, |_| true));
            running(cluster, pc, task, |p| p > back);
            cluster.client(pc, ANSWER).unwrap().kill_task(task).unwrap();
        }
        println!("    (load {})", load());
    }
}

fn main() {
    let o = options();
    let ws = Workspace::locate().expect("in the workspace");
    println!("load average at the start: {}", load());
    host_overhead(&ws, &o);
    if o.host_only {
        return;
    }
    let cluster = Cluster::start("wasmbench", &BOARDS, Security::Key(random_key().unwrap()))
        .expect("the nodes boot");
    interpreter_overhead(&cluster, &ws, &o);
    migrations(&cluster, &ws, &o);
    println!("load average at the end: {}", load());
}
