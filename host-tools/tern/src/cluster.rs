//! `tern demo --cluster`: the offloading controller (`tern-controller`) on
//! real nodes. A PC (x86_64, the local node) and an aarch64 `virt` node
//! boot in QEMU on a private network lab; the controller runs in this
//! process — its engine on the live driver, reaching the nodes from inside
//! the lab's namespace, its web UI and API on the host's loopback — and
//! takes a batch of the thesis's nine programs, Wasm modules the controller
//! uploads to the nodes with their reference answers (built first, `tern
//! task build`), or any batch of them and the NPB kernels (`--batch`). The
//! demo tells the policy's decisions (each
//! start and migration, as the controller's database records them) and the
//! batch's progress, and ends with its account: makespan, the local-only
//! baseline and the speedup A = (T_local − T_off) / T_local.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tern_controller::api;
use tern_controller::bench::{makespan_lower_bound, run_set, ClusterModel, Row};
use tern_controller::catalogue::Catalogue;
use tern_controller::driver::live::{in_netns, LiveConnector, Timeouts};
use tern_controller::driver::wasm::WasmSet;
use tern_controller::engine::{self, now, EngineConfig, Service, SubmitError};
use tern_controller::model::{NodeId, NodeSpec, PolicyKind, TaskId, TaskSpec, TaskState};
use tern_controller::sched::SchedConfig;
use tern_controller::sim::SimTask;
use tern_controller::store::{Store, StoreError, TaskRow};
use tern_controller::timings::TimingTable;
use tern_controller::views::{self, TaskJson, Timeline};
use tern_lab::cluster::Cluster;
use tern_protocol::Security;
use tokio::sync::oneshot;

use crate::demo::{start_nodes, with_consoles, DemoError, Event, BOARDS};

/// The default batch: the thesis's nine programs, each once.
pub const DEFAULT_BATCH: &str = r#"{"tasks": [
    {"name": "maze-1", "program": "maze"},
    {"name": "sha256-1", "program": "sha256"},
    {"name": "13queen-1", "program": "13queen"},
    {"name": "quicksort-1", "program": "quicksort"},
    {"name": "hashzip-1", "program": "hashzip"},
    {"name": "dynamic-1", "program": "dynamic"},
    {"name": "huffman-1", "program": "huffman"},
    {"name": "calcpi-1", "program": "calcpi"},
    {"name": "matrix-1", "program": "matrix"}
]}"#;

/// An NPB batch (`--batch` with this file's text): the kernels built into
/// the nodes, long and short ones mixed.
pub const NPB_BATCH: &str = r#"{"tasks": [
    {"name": "cg-W-1", "program": "cg-W"},
    {"name": "cg-W-2", "program": "cg-W"},
    {"name": "is-W-1", "program": "is-W"},
    {"name": "is-W-2", "program": "is-W"},
    {"name": "cg-S-1", "program": "cg-S"},
    {"name": "cg-S-2", "program": "cg-S"},
    {"name": "cg-S-3", "program": "cg-S"},
    {"name": "is-S-1", "program": "is-S"},
    {"name": "is-S-2", "program": "is-S"},
    {"name": "is-S-3", "program": "is-S"}
]}"#;

/// The cluster demo's settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// The batch, as `tern submit` takes it (a policy in it wins over
    /// [`Options::policy`]).
    pub batch: Vec<u8>,
    /// The policy of the batch when it names none.
    pub policy: String,
    /// Where the web UI and the API listen.
    pub listen: SocketAddr,
    /// The controller's database (a fresh one in a temporary directory
    /// when `None`).
    pub db: Option<PathBuf>,
    /// Longest wait for the whole batch.
    pub timeout: Duration,
    /// The aarch64 node joins this long after the submission (else it is
    /// there from the start).
    pub join_after: Option<Duration>,
    /// The local node is drained this long after the submission.
    pub drain_after: Option<Duration>,
    /// Whether Tern's policy may move running tasks by live migration.
    pub migration: bool,
}

/// The cluster demo's result (`--report FILE` writes it as JSON).
#[derive(Debug, Clone, Serialize)]
pub struct ClusterReport {
    /// Always `cluster`.
    pub scenario: &'static str,
    /// The web UI's address.
    pub ui: String,
    /// Seconds after the submission the aarch64 node joined, if it was
    /// not there from the start.
    pub join_after_s: Option<f64>,
    /// Seconds after the submission the local node was drained, if it was.
    pub drain_after_s: Option<f64>,
    /// Whether Tern's policy could move running tasks.
    pub migration: bool,
    /// Every task's end as the controller recorded it.
    pub all_done: bool,
    /// The policy's decisions in order: starts and migrations.
    pub decisions: Vec<String>,
    /// The tasks as the API lists them.
    pub tasks: Vec<TaskJson>,
    /// The batch's account (summary with T_off, T_local and the speedup),
    /// nodes, runs and migrations, as the UI's timeline shows them.
    pub timeline: Timeline,
    /// The measured makespan T_off ÷ the lower bound of the same set on
    /// these nodes, with the times this run taught the controller (those
    /// T_local is simulated with; pairs not run are inferred as the
    /// policy infers them).
    pub makespan_ratio: Option<f64>,
    /// The simulator's prediction for the same set on a model of these
    /// nodes with the timing table's means (`data/timings.json`), under the
    /// same policy: T_local, T_off, A, the ideal A and makespan ÷ lower
    /// bound; `None` when the table lacks a (program, board) pair.
    pub predicted: Option<Row>,
}

/// The controller and the nodes, still running (for `--keep`).
pub struct Running {
    /// The nodes.
    pub cluster: Cluster,
    service: Option<Service>,
    runtime: tokio::runtime::Runtime,
    stop_api: Option<oneshot::Sender<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop_api.take() {
            let _ = stop.send(());
        }
        if let Some(s) = self.service.take() {
            s.shutdown();
        }
    }
}

/// Runs the demo; `on_event` sees its progress. Returns the report and
/// what still runs (the controller serves its UI until it is dropped).
pub fn run(
    options: &Options,
    on_event: &mut dyn FnMut(Event),
) -> Result<(ClusterReport, Running), DemoError> {
    let (cluster, key) = start_nodes(on_event)?;
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| DemoError::Task(format!("starting the runtime: {e}")))?;
    let (dir, db) = match &options.db {
        Some(db) => (None, db.clone()),
        None => {
            let dir = tempfile::tempdir()
                .map_err(|e| DemoError::Task(format!("a temporary directory: {e}")))?;
            let db = dir.path().join("controller.db");
            (Some(dir), db)
        }
    };
    let mut running = Running {
        cluster,
        service: None,
        runtime,
        stop_api: None,
        _dir: dir,
    };
    let result = drive(options, &db, Security::Key(key), &mut running, on_event);
    let report = with_consoles(&running.cluster, result)?;
    Ok((report, running))
}

fn task_error(what: &str) -> impl Fn(String) -> DemoError + '_ {
    move |e| DemoError::Task(format!("{what}: {e}"))
}

fn store_error(e: StoreError) -> DemoError {
    DemoError::Task(format!("the controller's database: {e}"))
}

/// Starts the controller, adds the nodes, submits the batch, follows it.
fn drive(
    options: &Options,
    db: &Path,
    security: Security,
    running: &mut Running,
    on_event: &mut dyn FnMut(Event),
) -> Result<ClusterReport, DemoError> {
    on_event(Event::Stage("building the Wasm task set".into()));
    let ws = tern_flash::build::Workspace::locate()
        .map_err(|e| task_error("the workspace")(e.to_string()))?;
    let manifest =
        tern_tasks::build_all(&ws).map_err(|e| task_error("the Wasm task set")(e.to_string()))?;
    let wasm = WasmSet::from_manifest(&manifest).map_err(task_error("the Wasm task set"))?;
    on_event(Event::Stage(format!(
        "starting the controller (database {})",
        db.display()
    )));
    let connector = LiveConnector::new(
        security,
        in_netns(running.cluster.lab().netns().name().into()),
        Timeouts::default(),
    )
    .with_wasm(wasm);
    let config = EngineConfig {
        default_policy: PolicyKind::parse(&options.policy)
            .ok_or_else(|| DemoError::Task(format!("unknown policy {}", options.policy)))?,
        sched: SchedConfig {
            migration: options.migration,
            ..SchedConfig::default()
        },
        ..EngineConfig::default()
    };
    let service = engine::start(db, config, Arc::new(connector), Catalogue::nodes())
        .map_err(|e| task_error("starting the controller")(e.to_string()))?;
    let controller = service.controller.clone();
    running.service = Some(service);
    let listener = running
        .runtime
        .block_on(tokio::net::TcpListener::bind(options.listen))
        .map_err(|e| task_error("the web UI's address")(format!("{}: {e}", options.listen)))?;
    let (stop, stopped) = oneshot::channel::<()>();
    running.stop_api = Some(stop);
    let router = api::router(controller.clone(), None);
    running.runtime.spawn(api::serve(listener, router, async {
        let _ = stopped.await;
    }));
    let ui = format!("http://{}/", options.listen);
    on_event(Event::Stage(format!(
        "web UI: {ui} (timeline: {ui}timeline)"
    )));

    let add_node = |i: usize, on_event: &mut dyn FnMut(Event)| {
        let board = BOARDS[i];
        let addr = running.cluster.endpoint(i).to_string();
        let id = running
            .runtime
            .block_on(controller.add_node(addr.clone(), i == 0))
            .map_err(task_error("adding a node"))?;
        on_event(Event::Stage(format!(
            "node {id}: {} ({}) at {addr}{}",
            board.name(),
            board.isa(),
            if i == 0 { ", the local node" } else { "" }
        )));
        Ok::<_, DemoError>(id)
    };
    let local = add_node(0, on_event)?;
    let mut joining = options.join_after;
    if joining.is_none() {
        add_node(1, on_event)?;
    }
    let mut draining = options.drain_after;
    let submitted = running
        .runtime
        .block_on(controller.submit(options.batch.clone()))
        .map_err(|e| {
            let why = match e {
                SubmitError::Invalid(errors) | SubmitError::Conflict(errors) => errors
                    .iter()
                    .map(|f| format!("{}: {}", f.path, f.message))
                    .collect::<Vec<_>>()
                    .join("; "),
                SubmitError::Internal(e) => e,
            };
            DemoError::Task(format!("the batch was refused: {why}"))
        })?;
    on_event(Event::Stage(format!(
        "batch {}: {} tasks, policy {}, placed in {:.1} ms",
        submitted.batch,
        submitted.tasks.len(),
        submitted.policy.name(),
        submitted.placement_ms
    )));

    let mut follow = Follow::default();
    let t0 = Instant::now();
    let all_done = loop {
        if joining.is_some_and(|at| t0.elapsed() >= at) {
            joining = None;
            on_event(Event::Stage("the aarch64 node joins".into()));
            add_node(1, on_event)?;
        }
        if draining.is_some_and(|at| t0.elapsed() >= at) {
            draining = None;
            on_event(Event::Stage(format!(
                "draining node {local}, the local node"
            )));
            running
                .runtime
                .block_on(controller.drain(local))
                .map_err(task_error("draining the local node"))?;
        }
        let store = controller.read();
        for line in follow.news(&store, &submitted.tasks).map_err(store_error)? {
            on_event(Event::Stage(line));
        }
        let tasks = store.tasks().map_err(store_error)?;
        let ours: Vec<_> = tasks
            .iter()
            .filter(|t| submitted.tasks.contains(&t.id))
            .collect();
        let over = ours.iter().filter(|t| t.state.is_final()).count();
        let work: f64 = ours
            .iter()
            .map(|t| if t.state.is_final() { 1.0 } else { t.progress })
            .sum();
        drop(store);
        on_event(Event::Progress {
            isa: "batch",
            percent: 100.0 * work / ours.len().max(1) as f64,
        });
        if over == ours.len() {
            break ours.iter().all(|t| t.state == TaskState::Done);
        }
        if t0.elapsed() > options.timeout {
            return Err(DemoError::Task(format!(
                "the batch did not end within {} s ({over} of {} tasks over)",
                options.timeout.as_secs(),
                ours.len()
            )));
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let store = controller.read();
    let timeline = views::timeline(&store, Some(submitted.batch), now()).map_err(store_error)?;
    let tasks = views::tasks(&store)
        .map_err(store_error)?
        .into_iter()
        .filter(|t| submitted.tasks.contains(&t.id))
        .collect();
    let nodes: Vec<NodeSpec> = store
        .nodes()
        .map_err(store_error)?
        .into_iter()
        .map(|n| n.spec)
        .collect();
    let set: Vec<TaskRow> = store
        .tasks()
        .map_err(store_error)?
        .into_iter()
        .filter(|t| submitted.tasks.contains(&t.id))
        .collect();
    let learned = store.load_history().map_err(store_error)?;
    drop(store);
    let catalogue = controller.catalogue();
    // What the run taught, under the keys the controller learns by.
    let times =
        |task: &TaskSpec, board: &str| Some(learned.predict(&task.timing_key(), board).secs);
    let makespan_ratio = sim_tasks(&nodes, &set, times)
        .map(|tasks| makespan_lower_bound(&tasks, &nodes))
        .zip(timeline.summary.t_off)
        .map(|(bound, t_off)| t_off / bound);
    let table = TimingTable::bundled();
    // A program's own row when measured (the nine Wasm programs', the
    // NPB kernels'), else its stand-in's.
    let predicted = sim_tasks(&nodes, &set, |task, board| {
        table
            .mean(&task.program, board)
            .or_else(|| table.mean(catalogue.timing_key(&task.program), board))
    })
    .and_then(|tasks| predict(&nodes, &tasks, submitted.policy));
    Ok(ClusterReport {
        scenario: "cluster",
        ui,
        join_after_s: options.join_after.map(|d| d.as_secs_f64()),
        drain_after_s: options.drain_after.map(|d| d.as_secs_f64()),
        migration: options.migration,
        all_done,
        decisions: follow.decisions,
        tasks,
        timeline,
        makespan_ratio,
        predicted,
    })
}

/// `set` as the simulator takes it, each task taking `times(task, board)`
/// on each board of `nodes`; `None` when a time is unknown.
fn sim_tasks(
    nodes: &[NodeSpec],
    set: &[TaskRow],
    times: impl Fn(&TaskSpec, &str) -> Option<f64>,
) -> Option<Vec<SimTask>> {
    set.iter()
        .map(|t| {
            let actual = nodes
                .iter()
                .map(|n| Some((n.board.clone(), times(&t.spec, &n.board)?)))
                .collect::<Option<BTreeMap<_, _>>>()?;
            Some(SimTask {
                id: t.id,
                spec: t.spec.clone(),
                actual,
            })
        })
        .collect()
}

/// The simulator's run of `tasks` on `nodes` under `policy` (after a
/// local-only run, as the bench does).
fn predict(nodes: &[NodeSpec], tasks: &[SimTask], policy: PolicyKind) -> Option<Row> {
    let model = ClusterModel {
        name: "these nodes".into(),
        nodes: nodes.to_vec(),
    };
    run_set(
        &model,
        tasks,
        tasks.len(),
        0,
        &[policy],
        &SchedConfig::default(),
    )
    .ok()?
    .pop()
}

/// What the demo has told of the batch so far.
#[derive(Default)]
struct Follow {
    /// Each task's state and node when last seen.
    seen: std::collections::HashMap<TaskId, (TaskState, Option<NodeId>)>,
    /// Migrations told (their rows, in order).
    migrations: usize,
    /// The decisions told.
    decisions: Vec<String>,
}

impl Follow {
    /// Lines for what changed since the last call: starts and migrations
    /// (the decisions, also kept) and ends.
    fn news(&mut self, store: &Store, ours: &[TaskId]) -> Result<Vec<String>, StoreError> {
        let nodes: std::collections::HashMap<NodeId, String> = store
            .nodes()?
            .into_iter()
            .map(|n| (n.id, format!("node {} ({})", n.id, n.spec.board)))
            .collect();
        let node = |id: Option<NodeId>| {
            id.and_then(|id| nodes.get(&id).cloned())
                .unwrap_or_else(|| "no node".into())
        };
        let mut lines = Vec::new();
        let tasks = store.tasks()?;
        let name = |id: TaskId| {
            tasks
                .iter()
                .find(|t| t.id == id)
                .map_or_else(|| format!("task {id}"), |t| t.spec.name.clone())
        };
        for t in tasks.iter().filter(|t| ours.contains(&t.id)) {
            let now = (t.state, t.node_id);
            let before = self.seen.insert(t.id, now);
            if before == Some(now) {
                continue;
            }
            match t.state {
                // A start seen as it happens, or after it (a poll apart);
                // the end of a migration is not one.
                TaskState::Starting | TaskState::Running
                    if !matches!(
                        before,
                        Some((TaskState::Starting | TaskState::Running, n)) if n == t.node_id
                    ) && !matches!(before, Some((TaskState::Migrating, _))) =>
                {
                    let d = format!(
                        "decision: start {} ({}) on {} (epoch {})",
                        t.spec.name,
                        t.spec.program,
                        node(t.node_id),
                        t.epoch
                    );
                    self.decisions.push(d.clone());
                    lines.push(d);
                }
                TaskState::Done | TaskState::Failed => {
                    let r = store.result(t.id)?;
                    lines.push(format!(
                        "{} {} on {}{}",
                        t.spec.name,
                        if t.state == TaskState::Done {
                            "verified"
                        } else {
                            "FAILED"
                        },
                        node(t.node_id),
                        r.map(|r| format!(" in {:.1} s", r.exec_s))
                            .unwrap_or_default()
                    ));
                }
                TaskState::Queued if t.reason.is_some() => lines.push(format!(
                    "{} waits: {}",
                    t.spec.name,
                    t.reason.as_deref().unwrap_or_default()
                )),
                _ => {}
            }
        }
        let migrations = store.migrations()?;
        for m in migrations.iter().skip(self.migrations) {
            if !ours.contains(&m.task_id) {
                continue;
            }
            let d = format!(
                "decision: migrate {} from {} to {}",
                name(m.task_id),
                node(Some(m.from_node)),
                node(Some(m.to_node))
            );
            self.decisions.push(d.clone());
            lines.push(d);
        }
        self.migrations = migrations.len();
        Ok(lines)
    }
}
