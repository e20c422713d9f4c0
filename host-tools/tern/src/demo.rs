//! The demonstration: a running task moves x86_64 → aarch64 → x86_64 over
//! TCP between two QEMU nodes and still passes NPB's verification. The
//! default, NPB EP class S, lasts one to two minutes in QEMU here:
//! long enough for both migrations mid-run.
//!
//! Node 0 is a PC (`q35`, virtio-net-pci), node 1 a `virt` aarch64 machine
//! (virtio-net over MMIO), both on the bridge of a fresh network namespace
//! (`tern_lab::netlab`, so it needs root) that acts as an office LAN: a DHCP
//! server gives the nodes their addresses and an SNTP server their clocks
//! (`tern_lab::lan`). No serial console is used: the kernels are keyed with
//! a fresh random key at flash time (their boot-command slot), the host
//! finds the nodes by their beacons, and everything goes through the nodes'
//! control service, by node id: the task starts with `StartTask`, the host
//! follows its progress (`List`), requests the migrations (`MigrateTo` to
//! the other node's id, which the sender resolves from the beacons it hears;
//! answered by the sender's migration report) and reads the task's end from
//! the nodes' typed events.
//!
//! The way back is planned from the task's measured rate on the aarch64
//! node, so that it leaves time for the migration; if the task ends there
//! first anyway (a short class), the report says so, with NPB's verdict.

use std::time::{Duration, Instant};

use serde::Serialize;
use tern_client::random_key;
use tern_flash::Board;
use tern_lab::cluster::{Cluster, ClusterError, EventWatch};
use tern_lab::netlab::{self, NetlabError};
use tern_protocol::{
    format_node_id, MigrationReport, NodeEvent, Psk, RoundReport, StageTimes, StopReason, TaskRole,
    TaskStatus, TaskSummary,
};
use thiserror::Error;

use crate::standby::{StandbyReport, SyncRecord};

/// The demo's settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// NPB workload (`ep`, `is`, `cg`).
    pub workload: String,
    /// NPB class (`S`, `W`, `A`, `B`).
    pub class: String,
    /// A Wasm task of the task set to migrate instead of NPB (its name).
    pub wasm: Option<String>,
    /// The Wasm task's arguments (none: the program's defaults).
    pub wasm_args: Vec<String>,
    /// Progress (percent) at which the task leaves the PC.
    pub first_at: f64,
    /// Percentage points the task runs on the aarch64 node before it comes
    /// back (the aarch64 QEMU node computes several times faster than the
    /// PC one, whose x86_64 kernel target has no SSE: soft floating point).
    pub run_there: f64,
    /// Longest wait for the whole run.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            workload: "ep".into(),
            class: "S".into(),
            wasm: None,
            wasm_args: Vec::new(),
            first_at: 20.0,
            run_there: 40.0,
            timeout: Duration::from_secs(600),
        }
    }
}

/// Why the demo failed.
#[derive(Debug, Error)]
pub enum DemoError {
    /// Not root, or `ip` missing.
    #[error(transparent)]
    Lab(#[from] NetlabError),
    /// The nodes failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The OS random generator failed.
    #[error("OS random generator: {0}")]
    Random(String),
    /// The task was not where it should be.
    #[error("{0}")]
    Task(String),
    /// The Wasm task could not be built or sent.
    #[error(transparent)]
    Wasm(#[from] crate::task::TaskError),
    /// A step failed while the nodes ran: the error and their consoles.
    #[error("{source}\n{consoles}")]
    Nodes {
        /// What failed.
        source: Box<DemoError>,
        /// The nodes' console output that explains it.
        consoles: String,
    },
}

/// One migration as the report shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Migration {
    /// Sender's ISA.
    pub from_isa: String,
    /// Receiver's ISA.
    pub to_isa: String,
    /// Size of the final checkpoint.
    pub state_bytes: u64,
    /// Bytes the sender wrote for the whole migration.
    pub wire_bytes: u64,
    /// Request to ack, in milliseconds.
    pub total_ms: u64,
    /// Time the task did not run, in milliseconds.
    pub downtime_ms: u64,
    /// Pre-copy rounds before the stop-and-copy.
    pub precopy_rounds: u32,
    /// Progress (percent) when the migration was requested.
    pub at_percent: f64,
    /// The downtime the stop-and-copy was allowed, in milliseconds.
    pub downtime_limit_ms: u64,
    /// Why the pre-copy ended.
    pub stop: StopReason,
    /// Each round (the last is the stop-and-copy): the chunks and bytes
    /// written since the round before, those sent, its time.
    pub rounds: Vec<RoundReport>,
    /// Where the time went (capture, hash, compress, seal, send, the
    /// receiver's check and rebuild), in microseconds.
    pub stages: StageTimes,
}

impl Migration {
    fn new(r: &MigrationReport, at_percent: f64) -> Self {
        Self {
            from_isa: r.from_isa.clone(),
            to_isa: r.to_isa.clone(),
            state_bytes: r.state_bytes,
            wire_bytes: r.wire_bytes,
            total_ms: r.total_ms,
            downtime_ms: r.downtime_ms,
            precopy_rounds: r.precopy_rounds,
            at_percent,
            downtime_limit_ms: r.downtime_limit_ms,
            stop: r.stop,
            rounds: r.rounds.clone(),
            stages: r.stages,
        }
    }
}

/// The demo's result (`--report FILE` writes it as JSON).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Which scenario ran: `migrate` or `sync`.
    pub scenario: &'static str,
    /// NPB workload.
    pub workload: String,
    /// NPB class.
    pub class: String,
    /// Whether the task passed NPB's verification at the end.
    pub verified: bool,
    /// The migrations, in order.
    pub migrations: Vec<Migration>,
    /// Global id of the task.
    pub task_id: u64,
    /// Wall time from the task's start to its end, in seconds.
    pub run_s: f64,
    /// The sync scenario's account (`tern demo --sync`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub standby: Option<StandbyReport>,
    /// When the task ended before a planned migration: what happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_early: Option<String>,
    /// ISA of the node the task finished on.
    pub finished_on: String,
}

/// What the demo tells its user while it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A step begins.
    Stage(String),
    /// The task's progress on the node of this ISA.
    Progress {
        /// ISA of the node running the task.
        isa: &'static str,
        /// Percent done.
        percent: f64,
    },
    /// A migration finished.
    Migrated(Migration),
    /// A sync reached the standby.
    Synced(SyncRecord),
}

/// The nodes: the PC first, then the aarch64 machine.
pub const BOARDS: [Board; 2] = [Board::Pc, Board::Virt];

/// The network lab's tag (its namespace is `netlab::lab_name(LAB)`).
pub const LAB: &str = "demo";

/// The report's class of a Wasm task (its workload is the program's name).
pub const WASM_CLASS: &str = "wasm";

/// How often the host polls the task's progress.
pub(crate) const POLL: Duration = Duration::from_millis(300);

/// Longest wait for one control answer.
pub(crate) const ANSWER: Duration = Duration::from_secs(20);

/// Runs the demo; `on_event` sees its progress. Returns the report and the
/// cluster (still running, for `--keep`) with the key its nodes use.
pub fn run(
    options: &Options,
    on_event: &mut dyn FnMut(Event),
) -> Result<(Report, Cluster, Psk), DemoError> {
    let (mut cluster, key) = start_nodes(on_event)?;
    let result = drive(options, &mut cluster, on_event);
    let report = with_consoles(&cluster, result)?;
    Ok((report, cluster, key))
}

/// Boots the two nodes of [`BOARDS`] on a fresh LAN-like lab, keyed at
/// flash time with a fresh random key, and finds them by their beacons.
pub(crate) fn start_nodes(on_event: &mut dyn FnMut(Event)) -> Result<(Cluster, Psk), DemoError> {
    netlab::require_root()?;
    let key = random_key().map_err(|e| DemoError::Random(e.to_string()))?;
    on_event(Event::Stage(
        "building the pc and virt kernels, keying them, booting both nodes (DHCP, no console)"
            .into(),
    ));
    let cluster = Cluster::start_lan(LAB, &BOARDS, &key)?;
    for (i, board) in BOARDS.iter().enumerate() {
        on_event(Event::Stage(format!(
            "node {}: {} ({}) heard at {}",
            node_name(i),
            board.name(),
            board.isa(),
            cluster.endpoint(i)
        )));
    }
    Ok((cluster, key))
}

/// Node `i`'s id as tools take it.
pub fn node_name(i: usize) -> String {
    format_node_id(Cluster::node_id(i))
}

/// How many times its own duration a migration's remaining run must last
/// at the planned point, so the task does not end while it moves.
const MIGRATION_MARGIN: f64 = 3.0;

/// Where to send the task back from, in percent: `run_there` points after
/// it arrived at `arrived`, but early enough that at `rate` (percent per
/// second) the rest of the run lasts [`MIGRATION_MARGIN`] migrations of
/// `migration_s`, and never past the middle of what is left.
pub fn plan_return(arrived: f64, run_there: f64, rate: f64, migration_s: f64) -> f64 {
    let left = 100.0 - arrived;
    let latest = 100.0 - MIGRATION_MARGIN * rate.max(0.0) * migration_s;
    (arrived + run_there)
        .min(latest)
        .min(arrived + left / 2.0)
        .max(arrived)
}

/// A failed run's error, with the nodes' consoles that explain it.
pub(crate) fn with_consoles<T>(
    cluster: &Cluster,
    result: Result<T, DemoError>,
) -> Result<T, DemoError> {
    result.map_err(|e| DemoError::Nodes {
        source: Box::new(e),
        consoles: cluster.consoles(),
    })
}

/// Starts the task `args` name (those of the node's `run`) on node `i`;
/// returns its local id there and its global id.
pub(crate) fn start_task(
    cluster: &mut Cluster,
    watch: &mut EventWatch,
    i: usize,
    args: &[&str],
) -> Result<(u32, u64), DemoError> {
    let task_id = cluster
        .client(i, ANSWER)?
        .start_task(args)
        .map_err(ClusterError::from)?;
    let local = watch.wait(cluster, i, "the started task", ANSWER, |e| match e {
        NodeEvent::TaskStarted { task, .. } if task.task_id == task_id => Some(task.local_id),
        _ => None,
    })?;
    Ok((local, task_id))
}

/// Starts the task on node 0, migrates it there and back, waits for its end.
fn drive(
    options: &Options,
    cluster: &mut Cluster,
    on_event: &mut dyn FnMut(Event),
) -> Result<Report, DemoError> {
    let started = Instant::now();
    let mut watch = cluster.watch();
    let (workload, class, id) = match &options.wasm {
        None => {
            let args = [options.workload.as_str(), options.class.as_str()];
            let (_, id) = start_task(cluster, &mut watch, 0, &args)?;
            (options.workload.clone(), options.class.clone(), id)
        }
        Some(name) => {
            // Built here with its reference answer, which the node checks.
            let run = crate::task::Run::of(name, options.wasm_args.clone(), None)?;
            let module = cluster
                .client(0, ANSWER)?
                .put_module(&run.module)
                .map_err(ClusterError::from)?;
            let args = run.start_args(&module);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (_, id) = start_task(cluster, &mut watch, 0, &args)?;
            (run.name.clone(), WASM_CLASS.into(), id)
        }
    };
    on_event(Event::Stage(format!("{workload} ({class}) runs on the PC")));
    let deadline = started + options.timeout;

    let mut migrations = Vec::new();
    let mut at = options.first_at;
    // Where the task runs, and why it did not come back, if it did not.
    let mut owner = 0;
    let mut ended_early = None;
    for (from, to) in [(0, 1), (1, 0)] {
        let task = follow(cluster, from, id, deadline, on_event, |t, _| {
            percent(t) >= at || matches!(t.status, TaskStatus::Finished { .. })
        })?;
        if matches!(task.status, TaskStatus::Finished { .. }) {
            ended_early = Some(format!(
                "the task finished on the {} node before {at:.1}%, where it was to leave",
                BOARDS[from].isa()
            ));
            break;
        }
        on_event(Event::Stage(format!(
            "migrating at {:.1}%: {} -> {} (node {})",
            percent(&task),
            BOARDS[from].isa(),
            BOARDS[to].isa(),
            node_name(to)
        )));
        let moved = cluster.client(from, ANSWER)?.migrate(
            id,
            &node_name(to),
            deadline.saturating_duration_since(Instant::now()),
        );
        let report = match moved {
            Ok(report) => report,
            Err(error) => {
                // A task that ended while it moved stays where it ran.
                let now = cluster
                    .client(from, ANSWER)?
                    .list()
                    .map_err(ClusterError::from)?;
                let finished = now
                    .iter()
                    .any(|t| t.task_id == id && matches!(t.status, TaskStatus::Finished { .. }));
                if !finished {
                    return Err(ClusterError::from(error).into());
                }
                ended_early = Some(format!(
                    "the task finished on the {} node while it migrated ({error})",
                    BOARDS[from].isa()
                ));
                break;
            }
        };
        let migration = Migration::new(&report, percent(&task));
        on_event(Event::Migrated(migration.clone()));
        migrations.push(migration);
        owner = to;
        // The way back: planned from the rate measured on the new node.
        let arrived = follow(cluster, to, id, deadline, on_event, |_, _| true)?;
        let t0 = Instant::now();
        let sample = follow(cluster, to, id, deadline, on_event, |t, _| {
            t0.elapsed() >= RATE_SAMPLE || matches!(t.status, TaskStatus::Finished { .. })
        })?;
        let rate = (percent(&sample) - percent(&arrived)) / t0.elapsed().as_secs_f64();
        at = plan_return(
            percent(&sample),
            options.run_there,
            rate,
            report.total_ms as f64 / 1e3,
        );
    }
    let done = follow(cluster, owner, id, deadline, on_event, |t, _| {
        matches!(t.status, TaskStatus::Finished { .. })
    })?;
    let run_s = started.elapsed().as_secs_f64();
    let verified = verified(cluster, &mut watch, owner, &done)?;
    if let Some(what) = &ended_early {
        on_event(Event::Stage(format!("{what}; it stays there")));
    }
    Ok(Report {
        scenario: "migrate",
        workload,
        class,
        verified,
        migrations,
        task_id: id,
        run_s,
        standby: None,
        ended_early,
        finished_on: BOARDS[owner].isa().into(),
    })
}

/// How long the rate on the receiving node is measured before the way back
/// is planned.
const RATE_SAMPLE: Duration = Duration::from_secs(2);

/// Whether the finished task `done` passed its verification on node `i`:
/// its status says so and the node's event of its end carries the verdict.
pub(crate) fn verified(
    cluster: &Cluster,
    watch: &mut EventWatch,
    i: usize,
    done: &TaskSummary,
) -> Result<bool, DemoError> {
    let id = done.task_id;
    let event = watch.wait(cluster, i, "the task's end", ANSWER, |e| match e {
        NodeEvent::TaskFinished { task, verified, .. } if task.task_id == id => Some(*verified),
        _ => None,
    })?;
    Ok(event && matches!(done.status, TaskStatus::Finished { verified: true }))
}

/// Progress of a listed task, in percent.
pub(crate) fn percent(t: &TaskSummary) -> f64 {
    if t.progress_total == 0 {
        100.0
    } else {
        t.progress as f64 * 100.0 / t.progress_total as f64
    }
}

/// Follows task `id` on node `i` (which must own it) until `until` holds;
/// `until` may tell `on_event` more between polls.
pub(crate) fn follow(
    cluster: &Cluster,
    i: usize,
    id: u64,
    deadline: Instant,
    on_event: &mut dyn FnMut(Event),
    mut until: impl FnMut(&TaskSummary, &mut dyn FnMut(Event)) -> bool,
) -> Result<TaskSummary, DemoError> {
    let isa = BOARDS[i].isa();
    let timeout = deadline.saturating_duration_since(Instant::now());
    let task = cluster.wait_for_task(i, "the task's progress", timeout, POLL, |tasks| {
        let t = tasks
            .iter()
            .find(|t| t.task_id == id && t.role == TaskRole::Owner)?;
        on_event(Event::Progress {
            isa,
            percent: percent(t),
        });
        until(t, on_event).then(|| t.clone())
    })?;
    Ok(task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_has_the_documented_json_shape() {
        let report = Report {
            scenario: "migrate",
            workload: "ep".into(),
            class: "S".into(),
            verified: true,
            migrations: vec![Migration::new(
                &MigrationReport {
                    task_id: 7,
                    epoch: 2,
                    from_isa: "x86_64".into(),
                    to_isa: "aarch64".into(),
                    state_bytes: 225,
                    wire_bytes: 1452,
                    precopy_rounds: 2,
                    total_ms: 1006,
                    downtime_ms: 102,
                    chunks: 3,
                    stop_copy_chunks: 2,
                    codec: "none".into(),
                    ratio_milli: 1000,
                    downtime_limit_ms: 300,
                    stop: StopReason::DowntimeFits { predicted_ms: 4 },
                    rounds: vec![RoundReport {
                        round: 1,
                        dirty_chunks: 1,
                        dirty_bytes: 40,
                        chunks_sent: 1,
                        wire_bytes: 700,
                        ms: 12,
                    }],
                    stages: StageTimes {
                        hash_us: 5,
                        ..StageTimes::default()
                    },
                },
                20.7,
            )],
            task_id: 7,
            run_s: 41.6,
            standby: None,
            ended_early: None,
            finished_on: "x86_64".into(),
        };
        let json = serde_json::to_value(&report).unwrap();
        assert!(json.get("standby").is_none(), "{json}");
        assert_eq!(json["workload"], "ep");
        assert_eq!(json["class"], "S");
        assert_eq!(json["verified"], true);
        let m = &json["migrations"][0];
        for (key, value) in [
            ("from_isa", serde_json::json!("x86_64")),
            ("to_isa", serde_json::json!("aarch64")),
            ("state_bytes", serde_json::json!(225)),
            ("wire_bytes", serde_json::json!(1452)),
            ("total_ms", serde_json::json!(1006)),
            ("downtime_ms", serde_json::json!(102)),
            ("downtime_limit_ms", serde_json::json!(300)),
            (
                "stop",
                serde_json::json!({"DowntimeFits": {"predicted_ms": 4}}),
            ),
        ] {
            assert_eq!(m[key], value, "{key}");
        }
        assert_eq!(m["rounds"][0]["dirty_bytes"], 40);
        assert_eq!(m["stages"]["hash_us"], 5);
        assert_eq!(m["stages"]["rebuild_us"], 0);
    }

    #[test]
    fn the_way_back_leaves_time_for_the_migration() {
        // A slow task: the planned 40 points.
        assert_eq!(plan_return(20.0, 40.0, 0.5, 1.0), 60.0);
        // A fast one (10 %/s, 2 s migrations): leaves at 40%, so that the
        // last 60 points last three migrations.
        assert_eq!(plan_return(20.0, 40.0, 10.0, 2.0), 40.0);
        // Never past the middle of what is left, never before the arrival.
        assert_eq!(plan_return(90.0, 40.0, 0.1, 1.0), 95.0);
        assert_eq!(plan_return(90.0, 40.0, 50.0, 1.0), 90.0);
    }

    #[test]
    fn progress_is_a_percentage_of_the_total() {
        let mut t = TaskSummary {
            task_id: 1,
            kind: "npb-ep".into(),
            progress: 256,
            progress_total: 1024,
            owner: 2,
            epoch: 1,
            role: TaskRole::Owner,
            status: TaskStatus::Running,
            last_sync_ms_ago: None,
            policy: None,
            tag: None,
        };
        assert_eq!(percent(&t), 25.0);
        t.progress_total = 0;
        assert_eq!(percent(&t), 100.0);
    }
}
