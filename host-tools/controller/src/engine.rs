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

    fn command(&mut self, now: f64, cmd: Command) {
        match cmd {
            Command::Submit(body, reply) => {
                let _ = reply.send(self.submit(now, &body));
            }
            Command::Cancel(task, reply) => {
                let _ = reply.send(self.cancel(now, task));
            }
            Command::AddNode(addr, local, reply) => {
                if let Some(existing) = self
                    .store
                    .nodes()
                    .ok()
                    .and_then(|n| n.into_iter().find(|n| n.addr == addr))
                {
                    let _ = reply.send(Err(format!(
                        "{addr} is already in the cluster (node {})",
                        existing.id
                    )));
                    return;
                }
                // Connecting may take a while: not on this thread.
                let connector = self.connector.clone();
                let tx = self.tx.clone();
                std::thread::spawn(move || {
                    let result = connector
                        .connect(&addr)
                        .and_then(|mut link| link.status().map(|s| (link, s)));
                    let _ = tx.send(Msg::Connected {
                        addr,
                        local,
                        result,
                        reply,
                    });
                });
            }
            Command::Drain(node, reply) => {
                let r = if self.sched.node_state(node).is_none() {
                    Err(format!("no node {node}"))
                } else {
                    self.store
                        .set_node_state(node, NodeState::Draining, None)
                        .map_err(db_error)
                        .map(|()| {
                            let actions = self.sched.drain(now, node);
                            self.emit(Change::Node {
                                id: node,
                                state: NodeState::Draining,
                            });
                            self.execute(now, actions);
                        })
                };
                let _ = reply.send(r);
            }
            Command::Remove(node, reply) => {
                let r = self.sched.remove_node(node).and_then(|()| {
                    self.store.remove_node(node, now).map_err(db_error)?;
                    if let Some(agent) = self.agents.remove(&node) {
                        let _ = agent.tx.send(AgentCmd::Stop);
                    }
                    Ok(())
                });
                let _ = reply.send(r);
            }
            Command::Shutdown => {}
        }
    }

    fn node_connected(
        &mut self,
        now: f64,
        addr: &str,
        local: bool,
        result: Result<(Box<dyn NodeLink>, NodeStatus), DriverError>,
    ) -> Result<NodeId, String> {
        let (link, status) = result.map_err(|e| e.to_string())?;
        let local = local
            && !self
                .store
                .nodes()
                .map_err(db_error)?
                .iter()
                .any(|n| n.spec.local);
        let spec = NodeSpec {
            name: addr.to_string(),
            board: status.board.clone(),
            cores: status.cores,
            memory_mb: status.memory_mb,
            gpu: status.gpu,
            local,
        };
        let id = self
            .store
            .add_node(addr, &spec, &status.isa, now)
            .map_err(|e| e.to_string())?;
        if local {
            self.set_local_board(&spec.board);
        }
        self.reported.insert(id);
        let actions = self.sched.add_node(now, id, spec);
        self.spawn_agent(id, addr.to_string(), Some(link));
        self.emit(Change::Node {
            id,
            state: NodeState::Up,
        });
        self.execute(now, actions);
        Ok(id)
    }

    fn spawn_agent(&mut self, node: NodeId, addr: String, link: Option<Box<dyn NodeLink>>) {
        let (tx, rx) = mpsc::channel();
        let engine = self.tx.clone();
        let connector = self.connector.clone();
        let (lease, heartbeat) = (self.config.lease, self.config.heartbeat);
        let a = addr.clone();
        let thread = std::thread::Builder::new()
            .name(format!("node-{node}"))
            .spawn(move || agent(node, a, connector, link, rx, engine, lease, heartbeat))
            .expect("spawning a node agent");
        self.agents.insert(
            node,
            Agent {
                addr,
                tx,
                thread: Some(thread),
            },
        );
    }

    fn submit(&mut self, now: f64, body: &[u8]) -> Result<Submitted, SubmitError> {
        let sub = parse_submission(body, &self.catalogue, self.config.default_policy)
            .map_err(SubmitError::Invalid)?;
        let (batch, ids) = match self.store.insert_batch(sub.policy, &sub.tasks, now) {
            Ok(x) => x,
            Err(StoreError::DuplicateName { name, existing }) => {
                let i = sub.tasks.iter().position(|t| t.name == name).unwrap_or(0);
                let path = if sub.tasks.len() == 1 {
                    "name".to_string()
                } else {
                    format!("tasks[{i}].name")
                };
                return Err(SubmitError::Conflict(vec![FieldError {
                    path,
                    message: format!("name {name} is already used by task {existing}"),
                }]));
            }
            Err(e) => return Err(SubmitError::Internal(e.to_string())),
        };
        let t0 = Instant::now();
        let actions = self.sched.submit(
            now,
            ids.iter().copied().zip(sub.tasks.iter().cloned()).collect(),
            sub.policy,
        );
        let placement_ms = t0.elapsed().as_secs_f64() * 1e3;
        let _ = self.store.set_placement_ms(batch, placement_ms);
        let mut waiting = Vec::new();
        for (id, spec) in ids.iter().zip(&sub.tasks) {
            if let Some(reason) = self.sched.reason(*id) {
                let _ = self
                    .store
                    .set_task_state(*id, TaskState::Queued, Some(reason), now);
                waiting.push((spec.name.clone(), reason.to_string()));
            }
        }
        self.emit(Change::Batch { id: batch });
        self.execute(now, actions);
        Ok(Submitted {
            batch,
            tasks: ids,
            policy: sub.policy,
            placement_ms,
            waiting,
        })
    }

    fn cancel(&mut self, now: f64, task: TaskId) -> Result<(), String> {
        let row = self
            .store
            .task(task)
            .map_err(db_error)?
            .ok_or_else(|| format!("no task {task}"))?;
        if row.state.is_final() {
            return Err(format!("task {task} is already {}", row.state.name()));
        }
        self.store.task_cancelled(task, now).map_err(db_error)?;
        self.unconfirmed.remove(&task);
        let actions = self.sched.cancel(now, task);
        for a in &actions {
            if let Action::Stop { node, .. } = a {
                if let (Some(remote), Some(agent)) = (&row.remote, self.agents.get(node)) {
                    let _ = agent.tx.send(AgentCmd::Cancel(remote.clone()));
                }
            }
        }
        self.emit_task(task);
        let rest = actions
            .into_iter()
            .filter(|a| !matches!(a, Action::Stop { .. }))
            .collect();
        self.execute(now, rest);
        Ok(())
    }

    fn execute(&mut self, now: f64, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Start { task, node } => self.start(now, task, node),
                Action::Migrate { task, from, to } => {
                    let remote = self.store.task(task).ok().flatten().and_then(|r| r.remote);
                    let (Some(remote), Some(to_addr)) =
                        (remote, self.agents.get(&to).map(|a| a.addr.clone()))
                    else {
                        let actions = self.sched.migration_failed(now, task, from, to);
                        self.execute(now, actions);
                        continue;
                    };
                    let _ = self.store.migration_started(task, from, to, now);
                    self.emit(Change::Migration {
                        task,
                        from,
                        to,
                        phase: "started",
                    });
                    self.emit_task(task);
                    if let Some(agent) = self.agents.get(&from) {
                        let _ = agent.tx.send(AgentCmd::Migrate {
                            task,
                            remote,
                            to,
                            to_addr,
                        });
                    }
                }
                Action::Stop { task, node } => {
                    let remote = self.store.task(task).ok().flatten().and_then(|r| r.remote);
                    if let (Some(remote), Some(agent)) = (remote, self.agents.get(&node)) {
                        let _ = agent.tx.send(AgentCmd::Cancel(remote));
                    }
                }
                Action::GiveUp { task } => {
                    let reason = self.sched.reason(task).unwrap_or("refused").to_string();
                    let _ = self
                        .store
                        .set_task_state(task, TaskState::Failed, Some(&reason), now);
                    self.emit_task(task);
                }
            }
        }
    }

    fn start(&mut self, now: f64, task: TaskId, node: NodeId) {
        let row = match self.store.task(task) {
            Ok(Some(row)) => row,
            _ => return,
        };
        let Some(program) = self.catalogue.get(&row.spec.program) else {
            let actions =
                self.sched
                    .start_failed(now, task, node, "program left the catalogue", true);
            self.execute(now, actions);
            return;
        };
        let epoch = match self.store.task_starting(task, node, now) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("controller: {e}");
                return;
            }
        };
        self.send_start(now, &row, program.runner.clone(), node, epoch);
    }

    /// Sends the start request of `row`'s run in `epoch` to `node`.
    fn send_start(
        &mut self,
        now: f64,
        row: &TaskRow,
        runner: crate::catalogue::Runner,
        node: NodeId,
        epoch: i64,
    ) {
        let task = row.id;
        let standby = row.spec.robust.then(|| self.standby_for(node)).flatten();
        let checkpoint = match self.store.checkpoint(task) {
            Ok(c) => c.map(|c| Checkpoint {
                remote: c.remote,
                bytes: c.bytes,
                progress: c.progress,
            }),
            Err(e) => {
                eprintln!("controller: {e}");
                None
            }
        };
        let request = StartRequest {
            tag: tag(&self.prefix, task, epoch),
            task,
            program: row.spec.program.clone(),
            runner,
            args: row.spec.args.clone(),
            standby,
            checkpoint,
        };
        self.emit_task(task);
        match self.agents.get(&node) {
            Some(agent) => {
                let _ = agent.tx.send(AgentCmd::Start(request, epoch));
            }
            None => {
                let actions =
                    self.sched
                        .start_failed(now, task, node, "no agent for the node", false);
                self.execute(now, actions);
            }
        }
    }

    /// A checkpoint request of `task` was answered: the next may go.
    fn checkpoint_answered(&mut self, task: TaskId) {
        if let Some((_, out)) = self.checkpointed.get_mut(&task) {
            *out = false;
        }
    }

    /// Asks `node`, where robust `task` now runs as `remote`, to keep a
    /// standby of it (after a migration or a failover).
    fn keep_standby(&self, task: TaskId, node: NodeId, remote: &str) {
        let robust = self
            .store
            .task(task)
            .ok()
            .flatten()
            .is_some_and(|r| r.spec.robust);
        if let (true, Some(to), Some(agent)) =
            (robust, self.standby_for(node), self.agents.get(&node))
        {
            let _ = agent.tx.send(AgentCmd::Standby {
                task,
                remote: remote.to_string(),
                to,
            });
        }
    }

    /// The node a robust task's standby goes to: another up node, the one
    /// with the most memory.
    fn standby_for(&self, owner: NodeId) -> Option<String> {
        self.agents
            .iter()
            .filter(|(id, _)| **id != owner && self.sched.node_state(**id) == Some(NodeState::Up))
            .max_by_key(|(id, _)| self.sched.node_spec(**id).map_or(0, |s| s.memory_mb))
            .map(|(_, a)| a.addr.clone())
    }

    /// The task a tag names, if the tag is its current run on `node`.
    fn current(&self, node: NodeId, tag: &str) -> Option<(TaskRow, i64)> {
        let (task, epoch) = parse_tag(&self.prefix, tag)?;
        let row = self.store.task(task).ok().flatten()?;
        (row.epoch == epoch && row.node_id == Some(node)).then_some((row, epoch))
    }

    fn agent_event(&mut self, now: f64, node: NodeId, event: AgentEvent) {
        match event {
            AgentEvent::Started {
                task,
                epoch,
                remote,
                resumed,
            } => {
                let current = self.start_pending(task, epoch);
                if current {
                    let _ = self.store.task_running(task, node, &remote, now);
                    let actions = self.sched.started(now, task, node);
                    if let Some(progress) = resumed {
                        let _ = self.store.set_progress(task, progress);
                        self.sched.progress(task, progress);
                        let _ = self.store.log_event(
                            now,
                            "resumed",
                            Some(task),
                            Some(node),
                            &serde_json::json!({ "from_checkpoint_at": progress }),
                        );
                    }
                    self.execute(now, actions);
                } else if let Some(agent) = self.agents.get(&node) {
                    // Cancelled meanwhile: the run must not go on.
                    let _ = agent.tx.send(AgentCmd::Cancel(remote));
                }
                self.emit_task(task);
            }
            AgentEvent::StartFailed {
                task,
                epoch,
                error,
                resumed,
                given_up,
            } => {
                let current = self.start_pending(task, epoch);
                if current {
                    if resumed {
                        // The next attempt starts from the beginning.
                        let _ = self.store.drop_checkpoint(task);
                    }
                    self.requeue(now, task, "refused", &format!("start refused: {error}"));
                    let actions = self.sched.start_failed(now, task, node, &error, given_up);
                    self.execute(now, actions);
                }
            }
            AgentEvent::StandbyFailed { task, error } => {
                let _ = self.store.log_event(
                    now,
                    "standby_refused",
                    Some(task),
                    Some(node),
                    &serde_json::json!({ "error": error }),
                );
            }
            AgentEvent::Checkpointed {
                task,
                epoch,
                checkpoint,
            } => {
                self.checkpoint_answered(task);
                let _ = self.store.save_checkpoint(
                    task,
                    epoch,
                    node,
                    &checkpoint.remote,
                    checkpoint.progress,
                    &checkpoint.bytes,
                    now,
                );
            }
            AgentEvent::CheckpointFailed { task, error } => {
                self.checkpoint_answered(task);
                let _ = self.store.log_event(
                    now,
                    "checkpoint_failed",
                    Some(task),
                    Some(node),
                    &serde_json::json!({ "error": error }),
                );
            }
            AgentEvent::Migrated { task, to, moved } => {
                let _ = self.store.migration_done(
                    task,
                    node,
                    to,
                    true,
                    Some(&moved.remote),
                    Some((moved.total_ms, moved.downtime_ms)),
                    "ok",
                    now,
                );
                self.emit(Change::Migration {
                    task,
                    from: node,
                    to,
                    phase: "done",
                });
                self.emit_task(task);
                // The session of a robust task ends with its move: the new
                // owner keeps a standby of its own.
                self.keep_standby(task, to, &moved.remote);
                let actions = self.sched.migrated(now, task, node, to);
                self.execute(now, actions);
            }
            AgentEvent::MigrationFailed { task, to, error } => {
                let _ = self
                    .store
                    .migration_done(task, node, to, false, None, None, &error, now);
                self.emit(Change::Migration {
                    task,
                    from: node,
                    to,
                    phase: "failed",
                });
                self.emit_task(task);
                let actions = self.sched.migration_failed(now, task, node, to);
                self.execute(now, actions);
            }
            AgentEvent::Event(NodeEvent::Progress { tag, progress }) => {
                if let Some((row, _)) = self.current(node, &tag) {
                    self.sched.progress(row.id, progress);
                    let last = self.progress.get(&row.id).copied().unwrap_or(-1.0);
                    if (progress - last).abs() >= 0.01 {
                        self.progress.insert(row.id, progress);
                        let _ = self.store.set_progress(row.id, progress);
                        self.emit_task(row.id);
                    }
                }
            }
            AgentEvent::Event(NodeEvent::Finished {
                tag,
                ok,
                output,
                exec_s,
            }) => self.finished(now, node, &tag, ok, &output, exec_s),
            AgentEvent::Event(NodeEvent::FailedOver { tag, remote }) => {
                if let Some((task, epoch)) = parse_tag(&self.prefix, &tag) {
                    self.taken_over(now, task, epoch, node, &remote);
                }
            }
            AgentEvent::Status(status) => self.status(now, node, status),
            AgentEvent::Lost(why) => self.node_lost(now, node, &why),
            AgentEvent::Back => {
                let _ = self.store.set_node_state(node, NodeState::Up, Some(now));
                let _ = self.store.log_event(
                    now,
                    "node_back",
                    None,
                    Some(node),
                    &serde_json::json!({}),
                );
                let actions = self.sched.node_up(now, node);
                self.emit(Change::Node {
                    id: node,
                    state: NodeState::Up,
                });
                self.execute(now, actions);
            }
        }
    }

    fn finished(&mut self, now: f64, node: NodeId, tag: &str, ok: bool, output: &str, exec_s: f64) {
        let Some((row, epoch)) = self.current(node, tag) else {
            let _ = self.store.log_event(
                now,
                "stale_result",
                parse_tag(&self.prefix, tag).map(|t| t.0),
                Some(node),
                &serde_json::json!({ "tag": tag }),
            );
            return;
        };
        match self
            .store
            .record_result(row.id, epoch, node, ok, output, exec_s, now)
        {
            Ok(true) => {
                self.unconfirmed.remove(&row.id);
                self.progress.remove(&row.id);
                self.checkpointed.remove(&row.id);
                // The node need not keep the ended run any longer.
                if let (Some(remote), Some(agent)) = (&row.remote, self.agents.get(&node)) {
                    let _ = agent.tx.send(AgentCmd::Cancel(remote.clone()));
                }
                let actions = self.sched.finished(now, row.id, node, ok);
                for l in self.sched.take_learned() {
                    let _ = self
                        .store
                        .record_history(&l.key, &l.board, l.node, l.secs, l.task, now);
                }
                self.emit_task(row.id);
                self.execute(now, actions);
            }
            Ok(false) => {}
            Err(e) => eprintln!("controller: {e}"),
        }
    }

    fn status(&mut self, now: f64, node: NodeId, status: NodeStatus) {
        let _ = self.store.set_node_state(
            node,
            self.sched.node_state(node).unwrap_or(NodeState::Up),
            Some(now),
        );
        self.reported.insert(node);
        self.heard.insert(node, Instant::now());
        for run in &status.runs {
            let Some((task, epoch)) = parse_tag(&self.prefix, &run.tag) else {
                continue;
            };
            if let Some((expected, t)) = self.unconfirmed.get(&task).cloned() {
                if t == run.tag {
                    self.confirm(now, task, epoch, expected, node, run);
                    continue;
                }
            }
            let Some(row) = self.store.task(task).ok().flatten() else {
                continue;
            };
            let current = !row.state.is_final() && row.epoch == epoch;
            let here = row.node_id == Some(node);
            match &run.state {
                // Its end, if its event was missed.
                RunState::Finished { ok, output, exec_s } if current && here => {
                    self.finished(now, node, &run.tag, *ok, output, *exec_s);
                }
                // The run moved here behind the controller's back (a
                // standby took over, or a migration's answer was lost)
                // while the node it was on fell silent.
                RunState::Running
                    if current
                        && !here
                        && row.state != TaskState::Migrating
                        && row.node_id.is_none_or(|n| self.silent(n)) =>
                {
                    self.taken_over(now, task, epoch, node, &run.remote);
                }
                RunState::Running | RunState::Finished { .. }
                    if !(current && (here || row.state == TaskState::Migrating)) =>
                {
                    // Not the run the controller considers current: a stale
                    // copy, stopped (or, ended, dropped).
                    if let Some(agent) = self.agents.get(&node) {
                        let _ = agent.tx.send(AgentCmd::Cancel(run.remote.clone()));
                    }
                    if run.state == RunState::Running {
                        let _ = self.store.log_event(
                            now,
                            "stale_run_stopped",
                            Some(task),
                            Some(node),
                            &serde_json::json!({ "tag": run.tag }),
                        );
                    }
                }
                _ => {}
            }
        }
    }

    /// Whether `node` has not reported its status for two heartbeats.
    fn silent(&self, node: NodeId) -> bool {
        self.heard
            .get(&node)
            .is_none_or(|t| t.elapsed() > self.config.heartbeat * 2)
    }

    /// `task`'s run of `epoch` runs on `node` as `remote` now: its standby
    /// there took it over (or it moved there unseen).
    fn taken_over(&mut self, now: f64, task: TaskId, epoch: i64, node: NodeId, remote: &str) {
        let Some(row) = self.store.task(task).ok().flatten() else {
            return;
        };
        if row.epoch != epoch || row.state.is_final() || row.node_id == Some(node) {
            return;
        }
        self.orphans.remove(&task);
        let _ = self.store.task_taken_over(task, node, remote, now);
        self.keep_standby(task, node, remote);
        let actions = self.sched.failed_over(now, task, node);
        self.execute(now, actions);
        self.emit_task(task);
    }

    /// A restarted controller found a run it had lost sight of.
    fn confirm(
        &mut self,
        now: f64,
        task: TaskId,
        epoch: i64,
        expected: NodeId,
        node: NodeId,
        run: &crate::driver::RemoteRun,
    ) {
        self.unconfirmed.remove(&task);
        if node != expected {
            // It moved just before the restart.
            let _ = self.store.migration_done(
                task,
                expected,
                node,
                true,
                Some(&run.remote),
                None,
                "found after restart",
                now,
            );
            self.sched.relocate(now, task, node);
        }
        match &run.state {
            RunState::Finished { ok, output, exec_s } => {
                self.finished(now, node, &run.tag, *ok, output, *exec_s);
            }
            _ => {
                let row = self.store.task(task).ok().flatten();
                if row.is_some_and(|r| r.state == TaskState::Starting) {
                    let _ = self.store.task_running(task, node, &run.remote, now);
                }
                let _ = self.store.log_event(
                    now,
                    "found_after_restart",
                    Some(task),
                    Some(node),
                    &serde_json::json!({ "epoch": epoch }),
                );
            }
        }
        self.emit_task(task);
    }

    fn node_lost(&mut self, now: f64, node: NodeId, why: &str) {
        let _ = self.store.set_node_state(node, NodeState::Down, None);
        let _ = self.store.log_event(
            now,
            "node_down",
            None,
            Some(node),
            &serde_json::json!({ "why": why }),
        );
        let affected: Vec<TaskId> = self
            .store
            .tasks()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| {
                r.node_id == Some(node)
                    && matches!(
                        r.state,
                        TaskState::Starting | TaskState::Running | TaskState::Migrating
                    )
            })
            .map(|r| r.id)
            .collect();
        let actions = self.sched.node_down(now, node);
        for task in affected {
            match self.sched.phase(task) {
                Some(Phase::Pending) => {
                    self.unconfirmed.remove(&task);
                    self.requeue(now, task, "lost", &format!("node {node} died; restarting"));
                }
                Some(Phase::Orphaned { .. }) => {
                    self.orphans.insert(task, Instant::now());
                }
                _ => {}
            }
        }
        self.emit(Change::Node {
            id: node,
            state: NodeState::Down,
        });
        self.execute(now, actions);
    }
}

/// A node's agent: owns its connection, runs the engine's commands, passes
/// on its events and status, reconnects, and declares it lost once it has
/// not answered for a lease.
#[allow(clippy::too_many_arguments)]
fn agent(
    node: NodeId,
    addr: String,
    connector: Arc<dyn Connector>,
    mut link: Option<Box<dyn NodeLink>>,
    rx: Receiver<AgentCmd>,
    engine: Sender<Msg>,
    lease: Duration,
    heartbeat: Duration,
) {
    let send = |e: AgentEvent| engine.send(Msg::Agent(node, e)).is_ok();
    let mut last_ok = Instant::now();
    let mut last_status: Option<Instant> = None;
    let mut last_try = Instant::now() - heartbeat;
    let mut lost = false;
    loop {
        loop {
            let cmd = match rx.try_recv() {
                Ok(cmd) => cmd,
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => return,
            };
            if matches!(cmd, AgentCmd::Stop) {
                return;
            }
            let (events, broken) = match link.as_mut() {
                Some(l) => carry_out(cmd, l.as_mut()),
                None => (not_connected(cmd, &addr).into_iter().collect(), false),
            };
            for event in events {
                if !send(event) {
                    return;
                }
            }
            if broken {
                // Later commands fail at once; the lease decides below.
                link = None;
            }
        }
        if let Some(l) = link.as_mut() {
            let mut ok = true;
            match l.events(Duration::from_millis(50)) {
                Ok(events) => {
                    for e in events {
                        if !send(AgentEvent::Event(e)) {
                            return;
                        }
                    }
                }
                Err(_) => ok = false,
            }
            if ok && last_status.is_none_or(|t| t.elapsed() >= heartbeat) {
                match l.status() {
                    Ok(s) => {
                        last_status = Some(Instant::now());
                        if !send(AgentEvent::Status(s)) {
                            return;
                        }
                    }
                    Err(_) => ok = false,
                }
            }
            if ok {
                last_ok = Instant::now();
            } else {
                link = None;
            }
        } else {
            if last_try.elapsed() >= heartbeat {
                last_try = Instant::now();
                if let Ok(l) = connector.connect(&addr) {
                    link = Some(l);
                    last_ok = Instant::now();
                    last_status = None;
                    if lost {
                        lost = false;
                        if !send(AgentEvent::Back) {
                            return;
                        }
                    }
                    continue;
                }
            }
            if !lost && last_ok.elapsed() > lease {
                lost = true;
                if !send(AgentEvent::Lost(format!(
                    "{addr} has not answered for {:.1} s",
                    last_ok.elapsed().as_secs_f64()
                ))) {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Carries `cmd` out on a connected node: what it tells the engine, and
/// whether the node stopped answering (the connection is given up).
fn carry_out(cmd: AgentCmd, l: &mut dyn NodeLink) -> (Vec<AgentEvent>, bool) {
    let mut broken = false;
    let mut failed = |e: DriverError| {
        broken |= matches!(e, DriverError::Unreachable { .. });
        e.to_string()
    };
    let events = match cmd {
        AgentCmd::Stop => Vec::new(),
        AgentCmd::Start(req, epoch) => match l.start(&req) {
            Ok(remote) => {
                let standby = req
                    .standby
                    .as_deref()
                    .map(|to| l.standby(&remote, Some(to)));
                let mut events = vec![AgentEvent::Started {
                    task: req.task,
                    epoch,
                    remote,
                    resumed: req.checkpoint.as_ref().map(|c| c.progress),
                }];
                if let Some(Err(e)) = standby {
                    events.push(AgentEvent::StandbyFailed {
                        task: req.task,
                        error: failed(e),
                    });
                }
                events
            }
            Err(e) => vec![AgentEvent::StartFailed {
                task: req.task,
                epoch,
                given_up: e.is_final(),
                error: failed(e),
                resumed: req.checkpoint.is_some(),
            }],
        },
        AgentCmd::Standby { task, remote, to } => match l.standby(&remote, Some(&to)) {
            Ok(()) => Vec::new(),
            Err(e) => vec![AgentEvent::StandbyFailed {
                task,
                error: failed(e),
            }],
        },
        AgentCmd::Checkpoint {
            task,
            epoch,
            remote,
        } => vec![match l.checkpoint(&remote) {
            Ok(checkpoint) => AgentEvent::Checkpointed {
                task,
                epoch,
                checkpoint,
            },
            Err(e) => AgentEvent::CheckpointFailed {
                task,
                error: failed(e),
            },
        }],
        AgentCmd::Migrate {
            task,
            remote,
            to,
            to_addr,
        } => vec![match l.migrate(&remote, &to_addr) {
            Ok(moved) => AgentEvent::Migrated { task, to, moved },
            Err(e) => AgentEvent::MigrationFailed {
                task,
                to,
                error: failed(e),
            },
        }],
        AgentCmd::Cancel(remote) => {
            if let Err(e) = l.cancel(&remote) {
                failed(e);
            }
            Vec::new()
        }
    };
    (events, broken)
}

/// What the engine hears of `cmd` when the node is not connected.
fn not_connected(cmd: AgentCmd, addr: &str) -> Option<AgentEvent> {
    let error = format!("{addr} is not connected");
    match cmd {
        AgentCmd::Start(req, epoch) => Some(AgentEvent::StartFailed {
            task: req.task,
            epoch,
            error,
            resumed: false,
            given_up: false,
        }),
        AgentCmd::Standby { task, .. } => Some(AgentEvent::StandbyFailed { task, error }),
        AgentCmd::Migrate { task, to, .. } => Some(AgentEvent::MigrationFailed { task, to, error }),
        // A checkpoint is asked for again next round; a stale run is
        // stopped when its node is heard again.
        AgentCmd::Checkpoint { task, .. } => Some(AgentEvent::CheckpointFailed { task, error }),
        AgentCmd::Cancel(_) | AgentCmd::Stop => None,
    }
}

/// Where the controller keeps its database by default.
pub fn default_db() -> PathBuf {
    PathBuf::from("tern-controller.db")
}
