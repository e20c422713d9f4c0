//! `tern`: the project's front door.
//!
//! `tern demo [--workload ep] [--class S] [--report FILE] [--keep]` boots an
//! x86_64 and an aarch64 node in QEMU on a private network namespace (needs
//! root), migrates a running NPB task x86_64 → aarch64 → x86_64 and prints
//! the verification result and what each migration cost. With `--sync` the
//! task keeps a standby replica on the aarch64 node over a link shaped after
//! a bandwidth trace, the PC's link is cut mid-run, and the report tells the
//! syncs, the lost progress, the failover and the failback. With `--wasm
//! NAME` the demo migrates a Wasm task of the task set instead of NPB.
//!
//! `tern task run FILE.wasm|NAME [ARGS] --node ADDR` uploads a module to a
//! live node, starts it, follows it and prints the node's verdict (exit 0
//! when verified, 1 when not, 2 on an error); `tern task build` builds the
//! task set.
//!
//! `tern controller`, `tern submit`, `tern tasks`, `tern nodes` and `tern
//! cancel` run and drive the offloading controller (`tern-controller`).
//!
//! `tern nodes discover` lists the nodes whose beacons it hears on the LAN;
//! `tern console --node ID|ADDR` opens a node's shell over its
//! authenticated control channel.

use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tern::demo::{self, Event, Options, Report, BOARDS};
use tern::lan;
use tern::standby::{self, StandbyReport};
use tern::task::Progress;
use tern_client::key_hex;
use tern_lab::cluster::Cluster;
use tern_lab::netlab;
use tern_lab::trace::Trace;

/// Command line.
#[derive(Parser, Debug)]
#[command(
    name = "tern",
    about = "Tern: a portable unikernel whose tasks move between ISAs"
)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Migrate a running NPB (or --wasm: Wasm) task x86_64 -> aarch64 -> x86_64 between two QEMU nodes, or with
    /// --sync keep a standby of it on the aarch64 node through an outage (needs root).
    Demo(DemoArgs),
    /// Wasm tasks: run one on a live node, or build the task set.
    Task {
        #[command(subcommand)]
        verb: TaskCmd,
    },
    /// Run the offloading controller: web UI, JSON API, scheduler (docs/controller.md).
    Controller(tern_controller::cli::ServeArgs),
    /// Submit a batch file or one task to the controller.
    Submit(tern_controller::cli::SubmitArgs),
    /// List the controller's tasks.
    Tasks(tern_controller::cli::TasksArgs),
    /// List, add, drain or remove the controller's nodes; discover the nodes on the LAN.
    Nodes(NodesCmd),
    /// A node's shell over its authenticated control channel (Ctrl-] exits).
    Console(lan::ConsoleArgs),
    /// Cancel a task.
    Cancel(tern_controller::cli::CancelArgs),
}

/// `tern nodes …`: the controller's verbs, and `discover`.
#[derive(clap::Args, Debug)]
struct NodesCmd {
    /// What to do (default: list the controller's nodes).
    #[command(subcommand)]
    action: Option<NodesVerb>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    at: tern_controller::cli::ControllerAddr,
}

#[derive(Subcommand, Debug)]
enum NodesVerb {
    /// List the nodes heard on the LAN (their discovery beacons).
    Discover(lan::DiscoverArgs),
    #[command(flatten)]
    Controller(tern_controller::cli::NodesAction),
}

fn nodes(cmd: NodesCmd) -> Result<()> {
    let action = match cmd.action {
        Some(NodesVerb::Discover(args)) => return lan::discover(&args),
        Some(NodesVerb::Controller(action)) => Some(action),
        None => None,
    };
    tern_controller::cli::nodes(tern_controller::cli::NodesArgs {
        action,
        json: cmd.json,
        at: cmd.at,
    })
}

#[derive(Subcommand, Debug)]
enum TaskCmd {
    /// Upload a module to a node, start it, follow it and print the node's verdict.
    Run {
        /// A module file, or a program of the task set by name (built here, with its reference).
        what: String,
        /// The task's arguments.
        args: Vec<String>,
        /// The node's control service, `ADDR:PORT`.
        #[arg(long)]
        node: String,
        /// The expected result (text); a program of the task set knows its own.
        #[arg(long)]
        expect: Option<String>,
        /// File holding the cluster key as 64 hex digits (else `TERN_KEY`).
        #[arg(long, conflicts_with = "insecure")]
        key_file: Option<PathBuf>,
        /// Talk to a node running without a key (no authentication, no secrecy).
        #[arg(long)]
        insecure: bool,
        /// Seconds to wait for the task's end.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// Print the verdict as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Build the task set's modules and their reference answers (target/wasm-tasks/manifest.json).
    Build,
}

fn main() -> ExitCode {
    let done = |r: Result<()>| r.map(|()| ExitCode::SUCCESS);
    let result = match Args::parse().command {
        Cmd::Task { verb } => task(verb),
        Cmd::Controller(args) => done(tern_controller::cli::serve(args)),
        Cmd::Submit(args) => done(tern_controller::cli::submit(args)),
        Cmd::Tasks(args) => done(tern_controller::cli::tasks(args)),
        Cmd::Nodes(cmd) => done(nodes(cmd)),
        Cmd::Console(args) => done(lan::console(&args)),
        Cmd::Cancel(args) => done(tern_controller::cli::cancel(args)),
        Cmd::Demo(args) => done(demo(args)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tern: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `tern task …`.
fn task(verb: TaskCmd) -> Result<ExitCode> {
    match verb {
        TaskCmd::Build => {
            let ws = tern_flash::build::Workspace::locate()?;
            let manifest = tern_tasks::build_all(&ws)?;
            for t in &manifest.tasks {
                println!("{:<10} {}  {}", t.name, t.wasm.display(), t.expected);
            }
            println!("manifest: {}", tern_tasks::manifest_path(&ws).display());
            Ok(ExitCode::SUCCESS)
        }
        TaskCmd::Run {
            what,
            args,
            node,
            expect,
            key_file,
            insecure,
            timeout,
            json,
        } => {
            let run = tern::task::Run::of(&what, args, expect)?;
            let security = tern_client::security(key_file.as_deref(), insecure)?;
            let mut client = tern::task::connect(&node, security, Duration::from_secs(30))?;
            let verdict = tern::task::run(
                &mut client,
                &run,
                Duration::from_secs(timeout),
                &mut |p| match p {
                    Progress::Uploaded(id) => {
                        eprintln!("tern: module {} held by {node}", tern_client::hex(&id))
                    }
                    Progress::Started(id) => eprintln!("tern: task {id:#x} ({}) started", run.name),
                    Progress::Percent(pct) => eprintln!("tern: {pct:5.1}%"),
                    Progress::Log(line) => eprintln!("tern: log: {line}"),
                },
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&verdict)?);
            } else {
                println!(
                    "task {:#x} ({}): {} ({:.1} s)",
                    verdict.task_id, run.name, verdict.verdict, verdict.seconds
                );
            }
            let skipped = run.expect.is_none() && verdict.verdict.contains("SKIPPED");
            Ok(if verdict.verified || skipped {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

/// `tern demo`'s options.
#[derive(clap::Args, Debug)]
struct DemoArgs {
    /// NPB workload: ep, is or cg.
    #[arg(long, default_value = "ep")]
    workload: String,
    /// NPB class: S, W, A or B (default: S; W with --sync).
    #[arg(long)]
    class: Option<String>,
    /// Write the report as JSON to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Keep the nodes running afterwards (until Enter) to explore them with `inspect`.
    #[arg(long)]
    keep: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// The sync scenario: a standby on the aarch64 node, a shaped link, an outage.
    #[arg(long)]
    sync: bool,
    /// --sync: the bandwidth trace the link follows (`<seconds> <Mbit/s>` lines;
    /// default: a Norway 3G bus trace compiled in).
    #[arg(long, requires = "sync")]
    trace: Option<PathBuf>,
    /// --sync: factor on the trace's throughput.
    #[arg(long, default_value_t = 1.0, requires = "sync")]
    trace_scale: f64,
    /// --sync: cut the PC's link once the task has reached this percentage.
    #[arg(long, default_value_t = 30.0, requires = "sync")]
    outage_at: f64,
    /// --sync: seconds the link stays cut (more than the standby's 3 s lease).
    #[arg(long, default_value_t = 6.0, requires = "sync")]
    outage_s: f64,
    /// Migrate a Wasm task of the task set (`maze`, `sha256`, ... `matrix`) instead of NPB.
    #[arg(long, conflicts_with_all = ["sync", "cluster"])]
    wasm: Option<String>,
    /// --wasm: the task's arguments, space-separated (default: the program's own).
    #[arg(long, requires = "wasm", value_delimiter = ' ')]
    wasm_args: Vec<String>,
    /// The offloading controller on both nodes: a batch of tasks, the policy's decisions,
    /// the speedup against the local node alone, the web UI to watch it.
    #[arg(long, conflicts_with = "sync")]
    cluster: bool,
    /// --cluster: the batch file (as `tern submit` takes it; default: the thesis's nine
    /// Wasm programs, each once).
    #[arg(long, requires = "cluster")]
    batch: Option<PathBuf>,
    /// --cluster: ten NPB tasks (CG and IS, classes S and W) instead of the nine programs.
    #[arg(long, requires = "cluster", conflicts_with = "batch")]
    npb: bool,
    /// --cluster: the aarch64 node joins this many seconds after the submission.
    #[arg(long, requires = "cluster")]
    join_after: Option<f64>,
    /// --cluster: the local node is drained this many seconds after the submission.
    #[arg(long, requires = "cluster")]
    drain_after: Option<f64>,
    /// --cluster: Tern's policy never moves a running task (joins and drains included).
    #[arg(long, requires = "cluster")]
    no_migration: bool,
    /// --cluster: the policy (tern, memory-first, ga, min-min, max-min, sufferage, local).
    #[arg(long, default_value = "tern", requires = "cluster")]
    policy: String,
    /// --cluster: where the web UI and the API listen.
    #[arg(long, default_value = "127.0.0.1:4480", requires = "cluster")]
    listen: std::net::SocketAddr,
    /// --cluster: the controller's database (default: a fresh one, removed at the end).
    #[arg(long, requires = "cluster")]
    db: Option<PathBuf>,
}

/// `tern demo`.
fn demo(d: DemoArgs) -> Result<()> {
    let DemoArgs {
        workload,
        class,
        report,
        keep,
        timeout,
        sync,
        trace,
        trace_scale,
        outage_at,
        outage_s,
        wasm,
        wasm_args,
        cluster,
        batch,
        npb,
        join_after,
        drain_after,
        no_migration,
        policy,
        listen,
        db,
    } = d;
    let timeout = Duration::from_secs(timeout);
    let scenario = if cluster {
        let batch = match &batch {
            Some(path) => {
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
            }
            None if npb => tern::cluster::NPB_BATCH.as_bytes().to_vec(),
            None => tern::cluster::DEFAULT_BATCH.as_bytes().to_vec(),
        };
        let seconds = |s: Option<f64>, what: &str| {
            s.map(|s| {
                anyhow::ensure!(
                    s.is_finite() && s >= 0.0,
                    "{what} takes a number of seconds"
                );
                Ok(Duration::from_secs_f64(s))
            })
            .transpose()
        };
        Scenario::Cluster(tern::cluster::Options {
            batch,
            policy,
            listen,
            db,
            timeout,
            join_after: seconds(join_after, "--join-after")?,
            drain_after: seconds(drain_after, "--drain-after")?,
            migration: !no_migration,
        })
    } else if sync {
        let mut options = standby::Options::with_default_trace();
        if let Some(path) = trace {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading trace {}", path.display()))?;
            options.trace = Trace::parse(&path, &text)?;
            options.trace_name = path.display().to_string();
        }
        anyhow::ensure!(
            trace_scale.is_finite() && trace_scale > 0.0,
            "--trace-scale must be a positive number"
        );
        anyhow::ensure!(
            outage_s.is_finite() && outage_s > 0.0,
            "--outage-s must be a positive number of seconds"
        );
        Scenario::Sync(standby::Options {
            workload,
            class: class.unwrap_or(options.class.clone()),
            trace_scale,
            outage_at,
            outage: Duration::from_secs_f64(outage_s),
            timeout,
            ..options
        })
    } else {
        let defaults = Options::default();
        Scenario::Migrate(Options {
            workload,
            class: class.unwrap_or(defaults.class.clone()),
            wasm,
            wasm_args,
            timeout,
            ..defaults
        })
    };
    // A signal would end the process without the cluster's drop: tear the
    // lab down (its QEMU nodes, the namespace) here, then exit.
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("installing signal handlers")?;
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            eprintln!("tern: interrupted, stopping the nodes");
            netlab::remove_namespace(&netlab::lab_name(demo::LAB));
            std::process::exit(128 + signal);
        }
    });
    let bar = ProgressBar::new(1000);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:40}] {msg} {elapsed}")
            .context("progress bar template")?
            .progress_chars("=> "),
    );
    // Without a terminal the bar is hidden, and so is its println.
    let say = |text: String| {
        if bar.is_hidden() {
            println!("{text}");
        } else {
            bar.println(text);
        }
    };
    let mut on_event = |event: Event| {
        match event {
        Event::Stage(text) => say(format!("tern: {text}")),
        Event::Progress { isa, percent } => {
            bar.set_prefix(isa);
            bar.set_position((percent * 10.0) as u64);
            bar.set_message(format!("{percent:5.1}%"));
        }
        Event::Migrated(m) => say(format!(
            "tern: migrated {} -> {}: {} ms total, {} ms downtime, {} state bytes, {} wire bytes",
            m.from_isa, m.to_isa, m.total_ms, m.downtime_ms, m.state_bytes, m.wire_bytes
        )),
        Event::Synced(s) => say(format!(
            "tern: sync {} from {} at {:.1}% (epoch {}): {} of {} chunks, {} B in {} ms, {} x{:.2}; next in {:.1} s",
            s.number,
            s.from_isa,
            s.at_percent,
            s.epoch,
            s.chunks_sent,
            s.chunks,
            s.wire_bytes,
            s.ms,
            s.codec,
            s.ratio,
            s.next_s
        )),
    }
    };
    let (result, cluster, key) = match &scenario {
        Scenario::Migrate(options) => demo::run(options, &mut on_event)?,
        Scenario::Sync(options) => standby::run(options, &mut on_event)?,
        Scenario::Cluster(options) => {
            let (result, running) = tern::cluster::run(options, &mut on_event)?;
            bar.finish_and_clear();
            print_cluster(&result);
            if let Some(path) = &report {
                write_report(path, &result)?;
                println!("report written to {}", path.display());
            }
            if keep {
                println!(
                    "\nthe controller and the nodes keep running: {}\npress Enter to stop them",
                    result.ui
                );
                let mut line = String::new();
                std::io::stdin()
                    .lock()
                    .read_line(&mut line)
                    .context("reading stdin")?;
            }
            drop(running);
            if !result.all_done {
                anyhow::bail!("not every task of the batch verified");
            }
            return Ok(());
        }
    };
    bar.finish_and_clear();
    print_report(&result);
    if let Some(path) = &report {
        write_report(path, &result)?;
        println!("report written to {}", path.display());
    }
    if keep {
        explore(&cluster, &key)?;
    }
    if !result.verified {
        anyhow::bail!("the task did not verify");
    }
    Ok(())
}

/// What `tern demo` runs.
enum Scenario {
    /// Two live migrations.
    Migrate(Options),
    /// A standby through an outage.
    Sync(standby::Options),
    /// The offloading controller on both nodes.
    Cluster(tern::cluster::Options),
}

fn print_cluster(r: &tern::cluster::ClusterReport) {
    let s = &r.timeline.summary;
    let secs = |t: Option<f64>| t.map_or_else(|| "-".into(), |t| format!("{t:.1} s"));
    println!(
        "batch {}: {} tasks, {} done, {} failed, {} migrations; policy {}",
        s.batch.unwrap_or_default(),
        s.tasks,
        s.done,
        s.failed,
        s.migrations,
        s.policy.map_or("-", |p| p.name())
    );
    println!(
        "makespan T_off {}, local-only T_local {} (simulated from the learned times on the local node's board)",
        secs(s.t_off),
        secs(s.t_local)
    );
    match s.speedup {
        Some(a) => println!("speedup A = (T_local - T_off) / T_local = {a:.1}%"),
        None => println!("speedup A: not known (no local node, or the batch did not end)"),
    }
    if let Some(ratio) = r.makespan_ratio {
        println!("makespan / lower bound (with the times this run measured) = {ratio:.2}");
    }
    if let Some(p) = &r.predicted {
        println!(
            "simulator's prediction for this set on these nodes ({}): T_off {:.1} s, T_local {:.1} s, A {:.1}% (ideal {:.1}%), makespan / lower bound {:.2}",
            p.policy, p.t_off, p.t_local, p.a, p.a_ideal, p.makespan_ratio
        );
    }
    println!(
        "{:<10} {:<6} {:<8} {:>8} {:>6}  node",
        "task", "prog", "state", "time", "starts"
    );
    for t in &r.tasks {
        println!(
            "{:<10} {:<6} {:<8} {:>8} {:>6}  {}",
            t.name,
            t.program,
            t.state.name(),
            t.completion_s
                .map_or_else(|| "-".into(), |c| format!("{c:.1} s")),
            t.attempts,
            t.node.as_deref().unwrap_or("-")
        );
    }
    println!("web UI (while the controller runs): {}", r.ui);
}

fn print_report(r: &Report) {
    let what = if r.class == tern::demo::WASM_CLASS {
        format!("Wasm task {}", r.workload)
    } else {
        format!("{} class {}", r.workload, r.class)
    };
    println!(
        "{what}: {} ({:.1} s)",
        match (r.verified, &r.standby) {
            (false, _) => "VERIFICATION FAILED",
            (true, None) => "VERIFICATION SUCCESSFUL after migrating",
            (true, Some(_)) => "VERIFICATION SUCCESSFUL after failover and failback",
        },
        r.run_s
    );
    if let Some(what) = &r.ended_early {
        println!(
            "note: {what}; it finished on the {} node ({} of 2 migrations)",
            r.finished_on,
            r.migrations.len()
        );
    }
    if let Some(s) = &r.standby {
        print_standby(s);
        return;
    }
    println!(
        "{:<20} {:>8} {:>10} {:>12} {:>12} {:>8}",
        "migration", "at", "total ms", "downtime ms", "state bytes", "wire bytes"
    );
    for m in &r.migrations {
        println!(
            "{:<20} {:>7.1}% {:>10} {:>12} {:>12} {:>8}",
            format!("{} -> {}", m.from_isa, m.to_isa),
            m.at_percent,
            m.total_ms,
            m.downtime_ms,
            m.state_bytes,
            m.wire_bytes
        );
    }
}

fn print_standby(s: &StandbyReport) {
    println!(
        "link: {} x{} (mean {:.2} Mbit/s while shaped)",
        s.trace, s.trace_scale, s.link_mean_mbps
    );
    println!(
        "syncs: {} ({} B on the wire); outage of {} ms cut the PC's link at {:.1}%",
        s.syncs.len(),
        s.sync_bytes,
        s.outage_ms,
        s.cut_at_percent
    );
    println!(
        "failover: {} ms after the cut, the aarch64 node resumed at {:.1}% (lost {:.1} points; one sync interval is {:.1})",
        s.failover_ms, s.resumed_at_percent, s.lost_progress, s.interval_progress
    );
    println!(
        "failback: {} ms after the link returned, the PC stood down at {:.1}%; finished on {}",
        s.failback_ms, s.stopped_at_percent, s.finished_on
    );
}

/// Writes the report through a temporary file and a rename.
fn write_report(path: &Path, r: &impl serde::Serialize) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec_pretty(r)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// `--keep`: tells how to reach the nodes, then waits for Enter.
fn explore(cluster: &Cluster, key: &tern_protocol::Psk) -> Result<()> {
    let key_file = std::env::temp_dir().join(format!("tern-demo-{}.key", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_file)
        .with_context(|| format!("creating {}", key_file.display()))?;
    writeln!(f, "{}", key_hex(key))?;
    let ns = cluster.lab().netns().name();
    println!("\nthe nodes keep running; from another shell:");
    println!(
        "  sudo ip netns exec {ns} cargo run --bin tern -- nodes discover --key-file {}",
        key_file.display()
    );
    for (i, board) in BOARDS.iter().enumerate() {
        let id = demo::node_name(i);
        println!(
            "  sudo ip netns exec {ns} cargo run --bin inspect -- --node {id} --key-file {} list   # {} at {}",
            key_file.display(),
            board.name(),
            cluster.endpoint(i)
        );
        println!(
            "  sudo ip netns exec {ns} cargo run --bin tern -- console --node {id} --key-file {}",
            key_file.display()
        );
    }
    println!("press Enter to stop them");
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    let _ = std::fs::remove_file(&key_file);
    read.map(drop).context("reading stdin")
}
