//! The live controller: one thread owns the scheduling core and the
//! database and carries the core's actions out on the nodes; one agent
//! thread per node owns its control connection (commands, events, a status
//! poll that doubles as the node's lease). The HTTP API talks to it through
//! a [`Controller`] handle: commands with replies, a read-only database
//! connection for queries, and a broadcast of changes for the UI.
//!
//! Every change is written to the database before it is acted on (a start
//! request's epoch before the request leaves), so a controller killed at
//! any point and started again on the same database finds every task done,
//! running on a node (its run is looked up by tag in the nodes' status), or
//! waiting; a run it cannot find anywhere starts again, a stale one it finds
//! (an older epoch) is stopped, and a result is recorded once.

mod actions;
mod agents;
mod commands;
mod reports;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{broadcast, oneshot};

use crate::catalogue::Catalogue;
use crate::driver::{
    parse_tag, tag, Checkpoint, Connector, DriverError, Moved, NodeEvent, NodeLink, NodeStatus,
    RunState, StartRequest,
};
use crate::model::{parse_submission, FieldError, NodeId, NodeSpec, PolicyKind, TaskId, TaskState};
use crate::sched::{Action, NodeState, Phase, SchedConfig, Scheduler};
use crate::store::{Store, StoreError, TaskRow};

use agents::agent;

/// Seconds since the Unix epoch.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The service's settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// A node that has not answered for this long is down.
    pub lease: Duration,
    /// How often each node's status is read.
    pub heartbeat: Duration,
    /// The scheduling core's settings.
    pub sched: SchedConfig,
    /// The policy of a submission that names none.
    pub default_policy: PolicyKind,
    /// How often a checkpoint of each running task that is not robust is
    /// taken (it resumes from the last one if its node dies); `None`: never.
    pub checkpoint_every: Option<Duration>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(3),
            heartbeat: Duration::from_millis(500),
            sched: SchedConfig::default(),
            default_policy: PolicyKind::Tern,
            checkpoint_every: Some(Duration::from_secs(10)),
        }
    }
}

/// Why a submission was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum SubmitError {
    /// Malformed: each mistake at its field.
    Invalid(Vec<FieldError>),
    /// A name is already taken.
    Conflict(Vec<FieldError>),
    /// The database failed.
    Internal(String),
}

/// An accepted submission.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Submitted {
    /// Its batch.
    pub batch: i64,
    /// Its tasks' ids, in order.
    pub tasks: Vec<TaskId>,
    /// Its policy.
    pub policy: PolicyKind,
    /// Wall time of its placement, ms.
    pub placement_ms: f64,
    /// Tasks no node can hold now, with the reason (they wait).
    pub waiting: Vec<(String, String)>,
}

type Reply<T> = oneshot::Sender<T>;

/// What the API asks of the engine.
enum Command {
    Submit(Vec<u8>, Reply<Result<Submitted, SubmitError>>),
    Cancel(TaskId, Reply<Result<(), String>>),
    AddNode(String, bool, Reply<Result<NodeId, String>>),
    Drain(NodeId, Reply<Result<(), String>>),
    Remove(NodeId, Reply<Result<(), String>>),
    Shutdown,
}

/// What a node's agent tells the engine.
#[derive(Debug)]
enum AgentEvent {
    Started {
        task: TaskId,
        epoch: i64,
        remote: String,
        /// The progress of the checkpoint it resumed from, if it did.
        resumed: Option<f64>,
    },
    StartFailed {
        task: TaskId,
        epoch: i64,
        error: String,
        /// Whether it was to resume from a checkpoint.
        resumed: bool,
        /// Whether the request itself was at fault (given up at once).
        given_up: bool,
    },
    StandbyFailed {
        task: TaskId,
        error: String,
    },
    Checkpointed {
        task: TaskId,
        epoch: i64,
        checkpoint: Checkpoint,
    },
    CheckpointFailed {
        task: TaskId,
        error: String,
    },
    Migrated {
        task: TaskId,
        to: NodeId,
        moved: Moved,
    },
    MigrationFailed {
        task: TaskId,
        to: NodeId,
        error: String,
    },
    Event(NodeEvent),
    Status(NodeStatus),
    Lost(String),
    Back,
}

enum Msg {
    Command(Command),
    Agent(NodeId, AgentEvent),
    Connected {
        addr: String,
        local: bool,
        result: Result<(Box<dyn NodeLink>, NodeStatus), DriverError>,
        reply: Reply<Result<NodeId, String>>,
    },
}

/// What the engine asks of an agent.
enum AgentCmd {
    Start(StartRequest, i64),
    Standby {
        task: TaskId,
        remote: String,
        to: String,
    },
    Checkpoint {
        task: TaskId,
        epoch: i64,
        remote: String,
    },
    Migrate {
        task: TaskId,
        remote: String,
        to: NodeId,
        to_addr: String,
    },
    Cancel(String),
    Stop,
}

/// A change, as the UI's event stream carries it (JSON).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Change {
    /// A task changed.
    Task {
        /// Its id.
        id: TaskId,
        /// Its state.
        state: TaskState,
        /// Its node.
        node_id: Option<NodeId>,
        /// Its progress.
        progress: f64,
        /// Why it waits.
        reason: Option<String>,
    },
    /// A node changed.
    Node {
        /// Its id.
        id: NodeId,
        /// Its state.
        state: NodeState,
    },
    /// A batch arrived.
    Batch {
        /// Its id.
        id: i64,
    },
    /// A migration started or ended.
    Migration {
        /// The task.
        task: TaskId,
        /// From.
        from: NodeId,
        /// To.
        to: NodeId,
        /// `started`, `done`, `failed`.
        phase: &'static str,
    },
}

/// The handle the API uses.
#[derive(Clone)]
pub struct Controller {
    tx: Sender<Msg>,
    reader: Arc<Mutex<Store>>,
    changes: broadcast::Sender<String>,
    catalogue: Arc<Catalogue>,
    local_board: Arc<Mutex<Option<String>>>,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The running service: its handle and its thread.
pub struct Service {
    /// The handle.
    pub controller: Controller,
    thread: Option<JoinHandle<()>>,
}

impl Service {
    /// Stops the engine and its agents (runs on the nodes go on) and waits.
    pub fn shutdown(mut self) {
        let _ = self.controller.tx.send(Msg::Command(Command::Shutdown));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Controller {
    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Msg::Command(make(tx))).ok()?;
        rx.await.ok()
    }

    /// Submits a body (one task, an array, or a batch with a policy).
    pub async fn submit(&self, body: Vec<u8>) -> Result<Submitted, SubmitError> {
        self.ask(|r| Command::Submit(body, r))
            .await
            .unwrap_or_else(|| Err(SubmitError::Internal("the controller stopped".into())))
    }

    /// Cancels a task.
    pub async fn cancel(&self, task: TaskId) -> Result<(), String> {
        self.ask(|r| Command::Cancel(task, r))
            .await
            .unwrap_or_else(|| Err("the controller stopped".into()))
    }

    /// Adds the node at `addr` (`host:port`); `local` marks the local node.
    pub async fn add_node(&self, addr: String, local: bool) -> Result<NodeId, String> {
        self.ask(|r| Command::AddNode(addr, local, r))
            .await
            .unwrap_or_else(|| Err("the controller stopped".into()))
    }

    /// Drains a node.
    pub async fn drain(&self, node: NodeId) -> Result<(), String> {
        self.ask(|r| Command::Drain(node, r))
            .await
            .unwrap_or_else(|| Err("the controller stopped".into()))
    }

    /// Removes a node that runs nothing.
    pub async fn remove(&self, node: NodeId) -> Result<(), String> {
        self.ask(|r| Command::Remove(node, r))
            .await
            .unwrap_or_else(|| Err("the controller stopped".into()))
    }

    /// The read-only view of the database.
    pub fn read(&self) -> MutexGuard<'_, Store> {
        self.reader.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stream of changes (JSON [`Change`]s).
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.changes.subscribe()
    }

    /// The program catalogue.
    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    /// The local node's board, once a local node has joined.
    pub fn local_board(&self) -> Option<String> {
        self.local_board.lock().ok().and_then(|b| b.clone())
    }
}

/// Starts the service on the database at `db`.
pub fn start(
    db: &Path,
    config: EngineConfig,
    connector: Arc<dyn Connector>,
    catalogue: Catalogue,
) -> Result<Service, EngineError> {
    let store = Store::open(db)?;
    let reader = Store::open(db)?;
    let (tx, rx) = mpsc::channel();
    let (changes, _) = broadcast::channel(4096);
    let controller = Controller {
        tx: tx.clone(),
        reader: Arc::new(Mutex::new(reader)),
        changes: changes.clone(),
        catalogue: Arc::new(catalogue.clone()),
        local_board: Arc::new(Mutex::new(None)),
    };
    let mut engine = Engine::new(
        store,
        config,
        connector,
        catalogue,
        tx,
        changes,
        controller.local_board.clone(),
    )?;
    let thread = std::thread::Builder::new()
        .name("controller".into())
        .spawn(move || engine.run(rx))
        .expect("spawning the controller thread");
    Ok(Service {
        controller,
        thread: Some(thread),
    })
}

struct Agent {
    addr: String,
    tx: Sender<AgentCmd>,
    thread: Option<JoinHandle<()>>,
}

struct Engine {
    store: Store,
    sched: Scheduler,
    config: EngineConfig,
    connector: Arc<dyn Connector>,
    catalogue: Catalogue,
    agents: HashMap<NodeId, Agent>,
    tx: Sender<Msg>,
    changes: broadcast::Sender<String>,
    local_board: Arc<Mutex<Option<String>>>,
    /// Runs a restart has not found on a node yet: task → (node, tag).
    unconfirmed: HashMap<TaskId, (NodeId, String)>,
    /// Nodes that answered since the restart.
    reported: HashSet<NodeId>,
    /// When the engine started (unconfirmed runs are given up after a lease).
    born: Instant,
    /// Robust tasks whose node died, and when their failover is due by.
    orphans: HashMap<TaskId, Instant>,
    /// Last progress written per task (writes are throttled).
    progress: HashMap<TaskId, f64>,
    /// The prefix of this database's run tags.
    prefix: String,
    /// When each running task's last checkpoint was asked for (or, before
    /// the first, when it was first seen running), and whether that request
    /// is still out (the next waits for its answer).
    checkpointed: HashMap<TaskId, (Instant, bool)>,
    /// When each node's status was last read.
    heard: HashMap<NodeId, Instant>,
}

fn db_error(e: StoreError) -> String {
    format!("database: {e}")
}

impl Engine {
    fn new(
        store: Store,
        config: EngineConfig,
        connector: Arc<dyn Connector>,
        catalogue: Catalogue,
        tx: Sender<Msg>,
        changes: broadcast::Sender<String>,
        local_board: Arc<Mutex<Option<String>>>,
    ) -> Result<Self, StoreError> {
        let sched = Scheduler::new(config.sched.clone(), store.load_history()?);
        let prefix = store.run_prefix()?;
        let mut engine = Self {
            store,
            sched,
            config,
            connector,
            catalogue,
            agents: HashMap::new(),
            tx,
            changes,
            local_board,
            unconfirmed: HashMap::new(),
            reported: HashSet::new(),
            born: Instant::now(),
            orphans: HashMap::new(),
            progress: HashMap::new(),
            prefix,
            checkpointed: HashMap::new(),
            heard: HashMap::new(),
        };
        engine.restore()?;
        Ok(engine)
    }

    /// Rebuilds the core from the database after a (re)start.
    fn restore(&mut self) -> Result<(), StoreError> {
        let now = now();
        for node in self.store.nodes()? {
            self.sched.add_node(now, node.id, node.spec.clone());
            if node.state == NodeState::Draining {
                self.sched.drain(now, node.id);
            }
            if node.spec.local {
                self.set_local_board(&node.spec.board);
            }
            self.spawn_agent(node.id, node.addr.clone(), None);
        }
        for row in self.store.tasks()? {
            if row.state.is_final() {
                continue;
            }
            let at = match (row.state, row.node_id) {
                (TaskState::Starting | TaskState::Running | TaskState::Migrating, Some(node)) => {
                    self.unconfirmed
                        .insert(row.id, (node, tag(&self.prefix, row.id, row.epoch)));
                    Some((node, row.started_at.unwrap_or(now), row.progress))
                }
                _ => None,
            };
            self.sched.restore(now, row.id, row.spec, row.policy, at);
        }
        let actions = self.sched.tick(now);
        self.execute(now, actions);
        Ok(())
    }

    fn set_local_board(&self, board: &str) {
        if let Ok(mut b) = self.local_board.lock() {
            *b = Some(board.to_string());
        }
    }

    fn emit(&self, change: Change) {
        if let Ok(json) = serde_json::to_string(&change) {
            let _ = self.changes.send(json);
        }
    }

    fn emit_task(&self, id: TaskId) {
        if let Ok(Some(row)) = self.store.task(id) {
            self.emit(Change::Task {
                id,
                state: row.state,
                node_id: row.node_id,
                progress: row.progress,
                reason: row.reason,
            });
        }
    }

    fn run(&mut self, rx: Receiver<Msg>) {
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(Msg::Command(Command::Shutdown)) | Err(RecvTimeoutError::Disconnected) => break,
                Ok(msg) => self.handle(msg),
                Err(RecvTimeoutError::Timeout) => {}
            }
            self.housekeeping();
        }
        for (_, agent) in self.agents.drain() {
            let _ = agent.tx.send(AgentCmd::Stop);
            if let Some(t) = agent.thread {
                let _ = t.join();
            }
        }
    }

    fn handle(&mut self, msg: Msg) {
        let now = now();
        match msg {
            Msg::Command(cmd) => self.command(now, cmd),
            Msg::Agent(node, event) => self.agent_event(now, node, event),
            Msg::Connected {
                addr,
                local,
                result,
                reply,
            } => {
                let _ = reply.send(self.node_connected(now, &addr, local, result));
            }
        }
    }

    /// Gives up on runs a restart could not find, and on failovers that never came.
    fn housekeeping(&mut self) {
        let now = now();
        let lease = self.config.lease;
        let all_reported = self.agents.keys().all(|n| self.reported.contains(n));
        if !self.unconfirmed.is_empty() && (all_reported || self.born.elapsed() > lease * 2) {
            let missing: Vec<(TaskId, NodeId)> =
                self.unconfirmed.drain().map(|(t, (n, _))| (t, n)).collect();
            for (task, node) in missing {
                if self.start_again(now, task, node) {
                    continue;
                }
                self.requeue(
                    now,
                    task,
                    "lost",
                    "its node no longer has it (controller restart)",
                );
                let actions = self.sched.lost(now, task);
                self.execute(now, actions);
            }
        }
        let due: Vec<TaskId> = self
            .orphans
            .iter()
            .filter(|(_, at)| at.elapsed() > lease * 2)
            .map(|(t, _)| *t)
            .collect();
        for task in due {
            self.orphans.remove(&task);
            self.requeue(now, task, "lost", "its node died and no standby took over");
            let actions = self.sched.failover_missed(now, task);
            self.execute(now, actions);
        }
        self.take_checkpoints();
    }

    /// Asks for a checkpoint of every running task that is not robust
    /// once per `checkpoint_every` (the first one interval after it was
    /// first seen running), so that it resumes from there if its node dies.
    fn take_checkpoints(&mut self) {
        let Some(every) = self.config.checkpoint_every else {
            return;
        };
        let running = match self.store.checkpointable() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("controller: {e}");
                return;
            }
        };
        let now = Instant::now();
        let live: HashSet<TaskId> = running.iter().map(|r| r.0).collect();
        self.checkpointed.retain(|t, _| live.contains(t));
        for (task, node, remote, epoch) in running {
            let (since, out) = *self.checkpointed.entry(task).or_insert((now, false));
            if out || since.elapsed() < every {
                continue;
            }
            if let Some(agent) = self.agents.get(&node) {
                self.checkpointed.insert(task, (now, true));
                let _ = agent.tx.send(AgentCmd::Checkpoint {
                    task,
                    epoch,
                    remote,
                });
            }
        }
    }

    /// A run the restart could not find that was only `starting` on a node
    /// that answers: its start request may have died with the old
    /// controller, or may still reach the node after its status. It is
    /// asked for again under the same tag — a node that has it answers with
    /// it, one that has not starts it — so it runs once either way (a new
    /// epoch could run it twice). Returns whether it was.
    fn start_again(&mut self, now: f64, task: TaskId, node: NodeId) -> bool {
        let Some(row) = self.store.task(task).ok().flatten() else {
            return false;
        };
        let runner = self
            .catalogue
            .get(&row.spec.program)
            .map(|p| p.runner.clone());
        let (Some(runner), TaskState::Starting, Some(n)) = (runner, row.state, row.node_id) else {
            return false;
        };
        if n != node || !self.reported.contains(&node) || !self.agents.contains_key(&node) {
            return false;
        }
        let _ = self.store.log_event(
            now,
            "start_asked_again",
            Some(task),
            Some(node),
            &serde_json::json!({ "epoch": row.epoch }),
        );
        self.send_start(now, &row, runner, node, row.epoch);
        true
    }

    /// Whether `task` still waits for the start of its run in `epoch` (a
    /// node's answer about an older run, or a cancelled task, is stale).
    fn start_pending(&self, task: TaskId, epoch: i64) -> bool {
        self.store
            .task(task)
            .ok()
            .flatten()
            .is_some_and(|r| r.epoch == epoch && r.state == TaskState::Starting)
    }

    fn requeue(&mut self, now: f64, task: TaskId, outcome: &str, reason: &str) {
        if let Err(e) = self.store.task_requeued(task, outcome, reason, now) {
            eprintln!("controller: {e}");
        }
        self.emit_task(task);
    }
}

/// Where the controller keeps its database by default.
pub fn default_db() -> PathBuf {
    PathBuf::from("tern-controller.db")
}
