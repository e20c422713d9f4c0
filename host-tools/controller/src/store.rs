//! The controller's state in an embedded SQLite database: nodes, batches,
//! tasks, their runs and migrations, results, the execution history and an
//! event log. WAL journal (readers do not block the writer), schema
//! migrations by `PRAGMA user_version`, every multi-row change in one
//! transaction, so a controller killed at any instant restarts with every
//! task accounted for.
//!
//! A result is recorded exactly once: `results` is keyed by task, and it is
//! written only together with the task's move to `done`, only while the
//! reporting run's epoch is the task's current one (each start, restart and
//! migration opens a new epoch).

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};
use serde::Serialize;
use thiserror::Error;

use crate::estimate::History;
use crate::model::{NodeId, NodeSpec, PolicyKind, TaskId, TaskSpec, TaskState};
use crate::sched::NodeState;

/// Why the store failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A task name is taken.
    #[error("task name {name} is already used by task {existing}")]
    DuplicateName {
        /// The name.
        name: String,
        /// The task holding it.
        existing: TaskId,
    },
    /// A node address is taken.
    #[error("node {addr} is already in the cluster (node {existing})")]
    DuplicateNode {
        /// The address.
        addr: String,
        /// The node holding it.
        existing: NodeId,
    },
    /// The database was written by a newer controller.
    #[error("the database has schema version {found}; this controller knows up to {known}")]
    TooNew {
        /// Its version.
        found: i64,
        /// Ours.
        known: i64,
    },
    /// A stored value does not decode.
    #[error("stored {what} is corrupt: {value}")]
    Corrupt {
        /// What.
        what: &'static str,
        /// The value.
        value: String,
    },
}

/// The schema, one entry per version: entry k brings version k to k + 1.
const MIGRATIONS: [&str; 1] = [r#"
CREATE TABLE nodes (
    id          INTEGER PRIMARY KEY,
    addr        TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    board       TEXT NOT NULL,
    isa         TEXT NOT NULL,
    cores       REAL NOT NULL,
    memory_mb   INTEGER NOT NULL,
    gpu         INTEGER NOT NULL,
    local       INTEGER NOT NULL,
    state       TEXT NOT NULL,
    added_at    REAL NOT NULL,
    last_seen   REAL,
    removed     INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE batches (
    id           INTEGER PRIMARY KEY,
    policy       TEXT NOT NULL,
    submitted_at REAL NOT NULL,
    tasks        INTEGER NOT NULL,
    placement_ms REAL
);
CREATE TABLE tasks (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    batch_id     INTEGER NOT NULL REFERENCES batches(id),
    program      TEXT NOT NULL,
    args         TEXT NOT NULL,
    cpu          REAL NOT NULL,
    memory_mb    INTEGER NOT NULL,
    gpu          INTEGER NOT NULL,
    offload      INTEGER NOT NULL,
    robust       INTEGER NOT NULL,
    policy       TEXT NOT NULL,
    state        TEXT NOT NULL,
    reason       TEXT,
    node_id      INTEGER REFERENCES nodes(id),
    remote       TEXT,
    epoch        INTEGER NOT NULL DEFAULT 0,
    attempts     INTEGER NOT NULL DEFAULT 0,
    progress     REAL NOT NULL DEFAULT 0,
    submitted_at REAL NOT NULL,
    started_at   REAL,
    finished_at  REAL
);
CREATE INDEX tasks_state ON tasks(state);
CREATE TABLE runs (
    id       INTEGER PRIMARY KEY,
    task_id  INTEGER NOT NULL REFERENCES tasks(id),
    node_id  INTEGER NOT NULL REFERENCES nodes(id),
    epoch    INTEGER NOT NULL,
    start    REAL NOT NULL,
    end      REAL,
    outcome  TEXT
);
CREATE INDEX runs_task ON runs(task_id);
CREATE TABLE migrations (
    id           INTEGER PRIMARY KEY,
    task_id      INTEGER NOT NULL REFERENCES tasks(id),
    from_node    INTEGER NOT NULL REFERENCES nodes(id),
    to_node      INTEGER NOT NULL REFERENCES nodes(id),
    requested_at REAL NOT NULL,
    done_at      REAL,
    ok           INTEGER,
    total_ms     INTEGER,
    downtime_ms  INTEGER,
    detail       TEXT
);
CREATE TABLE results (
    task_id     INTEGER PRIMARY KEY REFERENCES tasks(id),
    epoch       INTEGER NOT NULL,
    node_id     INTEGER NOT NULL REFERENCES nodes(id),
    ok          INTEGER NOT NULL,
    output      TEXT NOT NULL,
    exec_s      REAL NOT NULL,
    recorded_at REAL NOT NULL
);
CREATE TABLE history (
    id          INTEGER PRIMARY KEY,
    program     TEXT NOT NULL,
    board       TEXT NOT NULL,
    node_id     INTEGER NOT NULL,
    secs        REAL NOT NULL,
    task_id     INTEGER,
    recorded_at REAL NOT NULL
);
CREATE TABLE events (
    id      INTEGER PRIMARY KEY,
    at      REAL NOT NULL,
    kind    TEXT NOT NULL,
    task_id INTEGER,
    node_id INTEGER,
    detail  TEXT NOT NULL
);
"#];

/// A node as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeRow {
    /// Its id.
    pub id: NodeId,
    /// Its control address (`host:port`).
    pub addr: String,
    /// What it offers.
    pub spec: NodeSpec,
    /// Its ISA.
    pub isa: String,
    /// Up, draining or down.
    pub state: NodeState,
    /// When it was added.
    pub added_at: f64,
    /// When it last answered.
    pub last_seen: Option<f64>,
}

/// A task as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskRow {
    /// Its id.
    pub id: TaskId,
    /// Its batch.
    pub batch_id: i64,
    /// What was submitted.
    pub spec: TaskSpec,
    /// Its policy.
    pub policy: PolicyKind,
    /// Its state.
    pub state: TaskState,
    /// Why it waits or failed.
    pub reason: Option<String>,
    /// Its node, when placed.
    pub node_id: Option<NodeId>,
    /// The node's handle of it.
    pub remote: Option<String>,
    /// Its current epoch.
    pub epoch: i64,
    /// Starts so far.
    pub attempts: i64,
    /// Share of the work done, 0 to 1.
    pub progress: f64,
    /// Submission time (Unix seconds).
    pub submitted_at: f64,
    /// First start.
    pub started_at: Option<f64>,
    /// End.
    pub finished_at: Option<f64>,
}

/// A recorded result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResultRow {
    /// The task.
    pub task_id: TaskId,
    /// The epoch that produced it.
    pub epoch: i64,
    /// The node that ran it.
    pub node_id: NodeId,
    /// Whether it verified.
    pub ok: bool,
    /// Its output (verdict line, or the module's result).
    pub output: String,
    /// Seconds it ran.
    pub exec_s: f64,
}

/// One stretch of a task on a node (the timeline's bars).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRow {
    /// The task.
    pub task_id: TaskId,
    /// The node.
    pub node_id: NodeId,
    /// Its epoch.
    pub epoch: i64,
    /// From.
    pub start: f64,
    /// To (open while running).
    pub end: Option<f64>,
    /// How it ended: finished, failed, migrated, lost, cancelled.
    pub outcome: Option<String>,
}

/// One migration (the timeline's arrows).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MigrationRow {
    /// The task.
    pub task_id: TaskId,
    /// From.
    pub from_node: NodeId,
    /// To.
    pub to_node: NodeId,
    /// Requested at.
    pub requested_at: f64,
    /// Done at.
    pub done_at: Option<f64>,
    /// Whether it succeeded.
    pub ok: Option<bool>,
    /// Its total time, ms.
    pub total_ms: Option<i64>,
    /// Its downtime, ms.
    pub downtime_ms: Option<i64>,
}

/// A batch as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchRow {
    /// Its id.
    pub id: i64,
    /// Its policy.
    pub policy: PolicyKind,
    /// When.
    pub submitted_at: f64,
    /// Its tasks.
    pub tasks: i64,
    /// Wall time of its placement, ms.
    pub placement_ms: Option<f64>,
}

/// The database.
pub struct Store {
    conn: Connection,
}

fn node_state(s: &str) -> Result<NodeState, StoreError> {
    match s {
        "up" => Ok(NodeState::Up),
        "draining" => Ok(NodeState::Draining),
        "down" => Ok(NodeState::Down),
        other => Err(StoreError::Corrupt {
            what: "node state",
            value: other.into(),
        }),
    }
}

const TASK_COLUMNS: &str = "id, batch_id, name, program, args, cpu, memory_mb, gpu, offload, robust, policy, state, reason, node_id, remote, epoch, attempts, progress, submitted_at, started_at, finished_at";

fn task_row(r: &Row<'_>) -> rusqlite::Result<(TaskRow, String, String, String)> {
    let args: String = r.get(4)?;
    Ok((
        TaskRow {
            id: r.get(0)?,
            batch_id: r.get(1)?,
            spec: TaskSpec {
                name: r.get(2)?,
                program: r.get(3)?,
                args: Vec::new(),
                cpu: r.get(5)?,
                memory_mb: r.get::<_, i64>(6)? as u64,
                gpu: r.get(7)?,
                offload: r.get(8)?,
                robust: r.get(9)?,
            },
            policy: PolicyKind::Tern,
            state: TaskState::Queued,
            reason: r.get(12)?,
            node_id: r.get(13)?,
            remote: r.get(14)?,
            epoch: r.get(15)?,
            attempts: r.get(16)?,
            progress: r.get(17)?,
            submitted_at: r.get(18)?,
            started_at: r.get(19)?,
            finished_at: r.get(20)?,
        },
        args,
        r.get(10)?,
        r.get(11)?,
    ))
}

fn finish_task_row(parts: (TaskRow, String, String, String)) -> Result<TaskRow, StoreError> {
    let (mut row, args, policy, state) = parts;
    row.spec.args = serde_json::from_str(&args).map_err(|_| StoreError::Corrupt {
        what: "task arguments",
        value: args.clone(),
    })?;
    row.policy = PolicyKind::parse(&policy).ok_or(StoreError::Corrupt {
        what: "policy",
        value: policy.clone(),
    })?;
    row.state = TaskState::parse(&state).ok_or(StoreError::Corrupt {
        what: "task state",
        value: state.clone(),
    })?;
    Ok(row)
}

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::setup(Connection::open(path)?)
    }

    /// A private in-memory database (tests, simulations).
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::setup(Connection::open_in_memory()?)
    }

    fn setup(conn: Connection) -> Result<Self, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mut store = Self { conn };
        store.migrate()?;
        Ok(store)
    }

    /// The schema version in force.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let found = self.schema_version()?;
        let known = MIGRATIONS.len() as i64;
        if found > known {
            return Err(StoreError::TooNew { found, known });
        }
        for (v, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", v as i64 + 1)?;
            tx.commit()?;
        }
        Ok(())
    }

    // ---- nodes -------------------------------------------------------

    /// Adds a node; its address must be new (a removed node's may be reused).
    pub fn add_node(
        &mut self,
        addr: &str,
        spec: &NodeSpec,
        isa: &str,
        now: f64,
    ) -> Result<NodeId, StoreError> {
        let tx = self.conn.transaction()?;
        let existing: Option<(NodeId, bool)> = tx
            .query_row(
                "SELECT id, removed FROM nodes WHERE addr = ?1",
                [addr],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let id = match existing {
            Some((existing, false)) => {
                return Err(StoreError::DuplicateNode {
                    addr: addr.into(),
                    existing,
                })
            }
            Some((id, true)) => {
                tx.execute(
                    "UPDATE nodes SET name=?2, board=?3, isa=?4, cores=?5, memory_mb=?6, gpu=?7, local=?8,
                     state='up', added_at=?9, last_seen=?9, removed=0 WHERE id=?1",
                    params![id, spec.name, spec.board, isa, spec.cores, spec.memory_mb as i64, spec.gpu, spec.local, now],
                )?;
                id
            }
            None => {
                tx.execute(
                    "INSERT INTO nodes (addr, name, board, isa, cores, memory_mb, gpu, local, state, added_at, last_seen)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'up', ?9, ?9)",
                    params![addr, spec.name, spec.board, isa, spec.cores, spec.memory_mb as i64, spec.gpu, spec.local, now],
                )?;
                tx.last_insert_rowid()
            }
        };
        log(
            &tx,
            now,
            "node_added",
            None,
            Some(id),
            &serde_json::json!({ "addr": addr }),
        )?;
        tx.commit()?;
        Ok(id)
    }

    /// Sets a node's state (and when it was last seen, if it answered).
    pub fn set_node_state(
        &self,
        id: NodeId,
        state: NodeState,
        seen: Option<f64>,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE nodes SET state = ?2, last_seen = COALESCE(?3, last_seen) WHERE id = ?1",
            params![id, state.name(), seen],
        )?;
        Ok(())
    }

    /// Marks a node removed (its rows stay for the timeline).
    pub fn remove_node(&self, id: NodeId, now: f64) -> Result<(), StoreError> {
        self.conn
            .execute("UPDATE nodes SET removed = 1 WHERE id = ?1", [id])?;
        log(
            &self.conn,
            now,
            "node_removed",
            None,
            Some(id),
            &serde_json::json!({}),
        )?;
        Ok(())
    }

    /// The nodes not removed.
    pub fn nodes(&self) -> Result<Vec<NodeRow>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, addr, name, board, isa, cores, memory_mb, gpu, local, state, added_at, last_seen
             FROM nodes WHERE removed = 0 ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                NodeRow {
                    id: r.get(0)?,
                    addr: r.get(1)?,
                    spec: NodeSpec {
                        name: r.get(2)?,
                        board: r.get(3)?,
                        cores: r.get(5)?,
                        memory_mb: r.get::<_, i64>(6)? as u64,
                        gpu: r.get(7)?,
                        local: r.get(8)?,
                    },
                    isa: r.get(4)?,
                    state: NodeState::Up,
                    added_at: r.get(10)?,
                    last_seen: r.get(11)?,
                },
                r.get::<_, String>(9)?,
            ))
        })?;
        rows.map(|r| {
            let (mut row, state) = r?;
            row.state = node_state(&state)?;
            Ok(row)
        })
        .collect()
    }

    // ---- tasks -------------------------------------------------------

    /// Stores a submission, all or nothing: a name already used makes it fail whole.
    pub fn insert_batch(
        &mut self,
        policy: PolicyKind,
        tasks: &[TaskSpec],
        now: f64,
    ) -> Result<(i64, Vec<TaskId>), StoreError> {
        let tx = self.conn.transaction()?;
        for t in tasks {
            let existing: Option<TaskId> = tx
                .query_row("SELECT id FROM tasks WHERE name = ?1", [&t.name], |r| {
                    r.get(0)
                })
                .optional()?;
            if let Some(existing) = existing {
                return Err(StoreError::DuplicateName {
                    name: t.name.clone(),
                    existing,
                });
            }
        }
        tx.execute(
            "INSERT INTO batches (policy, submitted_at, tasks) VALUES (?1, ?2, ?3)",
            params![policy.name(), now, tasks.len() as i64],
        )?;
        let batch = tx.last_insert_rowid();
        let mut ids = Vec::with_capacity(tasks.len());
        {
            let mut stmt = tx.prepare(
                "INSERT INTO tasks (name, batch_id, program, args, cpu, memory_mb, gpu, offload, robust, policy, state, submitted_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'queued', ?11)",
            )?;
            for t in tasks {
                stmt.execute(params![
                    t.name,
                    batch,
                    t.program,
                    serde_json::to_string(&t.args).expect("strings serialise"),
                    t.cpu,
                    t.memory_mb as i64,
                    t.gpu,
                    t.offload,
                    t.robust,
                    policy.name(),
                    now
                ])?;
                ids.push(tx.last_insert_rowid());
            }
        }
        log(
            &tx,
            now,
            "batch",
            None,
            None,
            &serde_json::json!({ "batch": batch, "tasks": tasks.len(), "policy": policy.name() }),
        )?;
        tx.commit()?;
        Ok((batch, ids))
    }

    /// Records how long a batch's placement took.
    pub fn set_placement_ms(&self, batch: i64, ms: f64) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE batches SET placement_ms = ?2 WHERE id = ?1",
            params![batch, ms],
        )?;
        Ok(())
    }

    /// The batches, newest first.
    pub fn batches(&self) -> Result<Vec<BatchRow>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, policy, submitted_at, tasks, placement_ms FROM batches ORDER BY id DESC",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, f64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<f64>>(4)?,
            ))
        })?;
        rows.map(|r| {
            let (id, policy, submitted_at, tasks, placement_ms) = r?;
            Ok(BatchRow {
                id,
                policy: PolicyKind::parse(&policy).ok_or(StoreError::Corrupt {
                    what: "policy",
                    value: policy.clone(),
                })?,
                submitted_at,
                tasks,
                placement_ms,
            })
        })
        .collect()
    }

    /// One task.
    pub fn task(&self, id: TaskId) -> Result<Option<TaskRow>, StoreError> {
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1");
        self.conn
            .query_row(&sql, [id], task_row)
            .optional()?
            .map(finish_task_row)
            .transpose()
    }

    /// A task by name.
    pub fn task_by_name(&self, name: &str) -> Result<Option<TaskRow>, StoreError> {
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE name = ?1");
        self.conn
            .query_row(&sql, [name], task_row)
            .optional()?
            .map(finish_task_row)
            .transpose()
    }

    /// Every task, oldest first.
    pub fn tasks(&self) -> Result<Vec<TaskRow>, StoreError> {
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks ORDER BY id");
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map([], task_row)?;
        rows.map(|r| finish_task_row(r?)).collect()
    }

    /// Sets a waiting task's state and reason (queued, or failed/cancelled).
    pub fn set_task_state(
        &self,
        id: TaskId,
        state: TaskState,
        reason: Option<&str>,
        now: f64,
    ) -> Result<(), StoreError> {
        let fin = state.is_final().then_some(now);
        self.conn.execute(
            "UPDATE tasks SET state = ?2, reason = ?3, finished_at = COALESCE(finished_at, ?4) WHERE id = ?1 AND state NOT IN ('done', 'failed', 'cancelled')",
            params![id, state.name(), reason, fin],
        )?;
        Ok(())
    }

    /// Records that a start request for `task` goes to `node`: a new epoch,
    /// written before the request leaves so that a restart finds it.
    pub fn task_starting(&mut self, id: TaskId, node: NodeId, now: f64) -> Result<i64, StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "UPDATE tasks SET state = 'starting', node_id = ?2, reason = NULL, remote = NULL,
             epoch = epoch + 1, attempts = attempts + 1, progress = 0 WHERE id = ?1",
            params![id, node],
        )?;
        let epoch: i64 =
            tx.query_row("SELECT epoch FROM tasks WHERE id = ?1", [id], |r| r.get(0))?;
        log(
            &tx,
            now,
            "starting",
            Some(id),
            Some(node),
            &serde_json::json!({ "epoch": epoch }),
        )?;
        tx.commit()?;
        Ok(epoch)
    }

    /// The node took the task: it runs, under the node's handle `remote`.
    pub fn task_running(
        &mut self,
        id: TaskId,
        node: NodeId,
        remote: &str,
        now: f64,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        let epoch: i64 =
            tx.query_row("SELECT epoch FROM tasks WHERE id = ?1", [id], |r| r.get(0))?;
        tx.execute(
            "UPDATE tasks SET state = 'running', node_id = ?2, remote = ?3, started_at = COALESCE(started_at, ?4) WHERE id = ?1",
            params![id, node, remote, now],
        )?;
        tx.execute(
            "INSERT INTO runs (task_id, node_id, epoch, start) VALUES (?1, ?2, ?3, ?4)",
            params![id, node, epoch, now],
        )?;
        log(
            &tx,
            now,
            "started",
            Some(id),
            Some(node),
            &serde_json::json!({ "remote": remote, "epoch": epoch }),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// A task's progress.
    pub fn set_progress(&self, id: TaskId, progress: f64) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE tasks SET progress = ?2 WHERE id = ?1 AND state IN ('running', 'migrating')",
            params![id, progress],
        )?;
        Ok(())
    }

    /// A running task goes back to the queue (its node died or refused):
    /// its open run ends as `outcome`.
    pub fn task_requeued(
        &mut self,
        id: TaskId,
        outcome: &str,
        reason: &str,
        now: f64,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        close_run(&tx, id, outcome, now)?;
        tx.execute(
            "UPDATE tasks SET state = 'queued', node_id = NULL, remote = NULL, reason = ?2 WHERE id = ?1 AND state NOT IN ('done', 'failed', 'cancelled')",
            params![id, reason],
        )?;
        log(
            &tx,
            now,
            "requeued",
            Some(id),
            None,
            &serde_json::json!({ "reason": reason }),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// A migration was requested.
    pub fn migration_started(
        &mut self,
        id: TaskId,
        from: NodeId,
        to: NodeId,
        now: f64,
    ) -> Result<i64, StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "UPDATE tasks SET state = 'migrating' WHERE id = ?1 AND state = 'running'",
            [id],
        )?;
        tx.execute(
            "INSERT INTO migrations (task_id, from_node, to_node, requested_at) VALUES (?1, ?2, ?3, ?4)",
            params![id, from, to, now],
        )?;
        let mig = tx.last_insert_rowid();
        tx.commit()?;
        Ok(mig)
    }

    /// A migration ended: on success the task runs on `to` under `remote`
    /// (same epoch: the nodes' ownership epochs order the move itself);
    /// else it still runs on `from`.
    #[allow(clippy::too_many_arguments)]
    pub fn migration_done(
        &mut self,
        id: TaskId,
        from: NodeId,
        to: NodeId,
        ok: bool,
        remote: Option<&str>,
        times_ms: Option<(i64, i64)>,
        detail: &str,
        now: f64,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "UPDATE migrations SET done_at = ?5, ok = ?4, total_ms = ?6, downtime_ms = ?7, detail = ?8
             WHERE id = (SELECT MAX(id) FROM migrations WHERE task_id = ?1 AND from_node = ?2 AND to_node = ?3)",
            params![id, from, to, ok, now, times_ms.map(|t| t.0), times_ms.map(|t| t.1), detail],
        )?;
        if ok {
            close_run(&tx, id, "migrated", now)?;
            tx.execute(
                "UPDATE tasks SET state = 'running', node_id = ?2, remote = COALESCE(?3, remote) WHERE id = ?1 AND state = 'migrating'",
                params![id, to, remote],
            )?;
            let epoch: i64 =
                tx.query_row("SELECT epoch FROM tasks WHERE id = ?1", [id], |r| r.get(0))?;
            tx.execute(
                "INSERT INTO runs (task_id, node_id, epoch, start) VALUES (?1, ?2, ?3, ?4)",
                params![id, to, epoch, now],
            )?;
        } else {
            tx.execute(
                "UPDATE tasks SET state = 'running' WHERE id = ?1 AND state = 'migrating'",
                [id],
            )?;
        }
        log(
            &tx,
            now,
            if ok { "migrated" } else { "migration_failed" },
            Some(id),
            Some(to),
            &serde_json::json!({ "from": from, "to": to, "detail": detail }),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Records a task's result, exactly once: only for the task's current
    /// `epoch` and only if no result is recorded. Returns whether this call
    /// recorded it.
    #[allow(clippy::too_many_arguments)]
    pub fn record_result(
        &mut self,
        id: TaskId,
        epoch: i64,
        node: NodeId,
        ok: bool,
        output: &str,
        exec_s: f64,
        now: f64,
    ) -> Result<bool, StoreError> {
        let tx = self.conn.transaction()?;
        let current: Option<(i64, String)> = tx
            .query_row("SELECT epoch, state FROM tasks WHERE id = ?1", [id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let Some((current, state)) = current else {
            return Ok(false);
        };
        if current != epoch || TaskState::parse(&state).is_none_or(TaskState::is_final) {
            return Ok(false);
        }
        let inserted = tx.execute(
            "INSERT INTO results (task_id, epoch, node_id, ok, output, exec_s, recorded_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(task_id) DO NOTHING",
            params![id, epoch, node, ok, output, exec_s, now],
        )?;
        if inserted == 0 {
            return Ok(false);
        }
        close_run(&tx, id, if ok { "finished" } else { "failed" }, now)?;
        tx.execute(
            "UPDATE tasks SET state = ?2, progress = 1, finished_at = ?3, reason = ?4 WHERE id = ?1",
            params![id, if ok { "done" } else { "failed" }, now, (!ok).then_some(output)],
        )?;
        log(
            &tx,
            now,
            "finished",
            Some(id),
            Some(node),
            &serde_json::json!({ "ok": ok, "epoch": epoch }),
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// A task's result, if recorded.
    pub fn result(&self, id: TaskId) -> Result<Option<ResultRow>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT task_id, epoch, node_id, ok, output, exec_s FROM results WHERE task_id = ?1",
                [id],
                |r| {
                    Ok(ResultRow {
                        task_id: r.get(0)?,
                        epoch: r.get(1)?,
                        node_id: r.get(2)?,
                        ok: r.get(3)?,
                        output: r.get(4)?,
                        exec_s: r.get(5)?,
                    })
                },
            )
            .optional()?)
    }

    /// Cancels a task: its open run ends.
    pub fn task_cancelled(&mut self, id: TaskId, now: f64) -> Result<bool, StoreError> {
        let tx = self.conn.transaction()?;
        close_run(&tx, id, "cancelled", now)?;
        let n = tx.execute(
            "UPDATE tasks SET state = 'cancelled', finished_at = ?2 WHERE id = ?1 AND state NOT IN ('done', 'failed', 'cancelled')",
            params![id, now],
        )?;
        log(
            &tx,
            now,
            "cancelled",
            Some(id),
            None,
            &serde_json::json!({}),
        )?;
        tx.commit()?;
        Ok(n > 0)
    }

    // ---- history, timeline, events ---------------------------------

    /// Adds a run to the execution history.
    pub fn record_history(
        &self,
        key: &str,
        board: &str,
        node: NodeId,
        secs: f64,
        task: TaskId,
        now: f64,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO history (program, board, node_id, secs, task_id, recorded_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![key, board, node, secs, task, now],
        )?;
        Ok(())
    }

    /// The execution history, replayed oldest first.
    pub fn load_history(&self) -> Result<History, StoreError> {
        let mut h = History::new();
        let mut stmt = self
            .conn
            .prepare("SELECT program, board, node_id, secs FROM history ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, NodeId>(2)?,
                r.get::<_, f64>(3)?,
            ))
        })?;
        for r in rows {
            let (key, board, node, secs) = r?;
            h.record(&key, &board, node, secs);
        }
        Ok(h)
    }

    /// Every run (the timeline's bars).
    pub fn runs(&self) -> Result<Vec<RunRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT task_id, node_id, epoch, start, end, outcome FROM runs ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok(RunRow {
                task_id: r.get(0)?,
                node_id: r.get(1)?,
                epoch: r.get(2)?,
                start: r.get(3)?,
                end: r.get(4)?,
                outcome: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every migration (the timeline's arrows).
    pub fn migrations(&self) -> Result<Vec<MigrationRow>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT task_id, from_node, to_node, requested_at, done_at, ok, total_ms, downtime_ms FROM migrations ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(MigrationRow {
                task_id: r.get(0)?,
                from_node: r.get(1)?,
                to_node: r.get(2)?,
                requested_at: r.get(3)?,
                done_at: r.get(4)?,
                ok: r.get(5)?,
                total_ms: r.get(6)?,
                downtime_ms: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The event log of a task (its "log" in the UI), oldest first.
    pub fn task_events(&self, id: TaskId) -> Result<Vec<(f64, String, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT at, kind, detail FROM events WHERE task_id = ?1 ORDER BY id")?;
        let rows = stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Appends to the event log.
    pub fn log_event(
        &self,
        now: f64,
        kind: &str,
        task: Option<TaskId>,
        node: Option<NodeId>,
        detail: &serde_json::Value,
    ) -> Result<(), StoreError> {
        log(&self.conn, now, kind, task, node, detail)
    }
}

fn close_run(
    tx: &Transaction<'_>,
    task: TaskId,
    outcome: &str,
    now: f64,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE runs SET end = ?3, outcome = ?2 WHERE task_id = ?1 AND end IS NULL",
        params![task, outcome, now],
    )?;
    Ok(())
}

fn log(
    conn: &Connection,
    now: f64,
    kind: &str,
    task: Option<TaskId>,
    node: Option<NodeId>,
    detail: &serde_json::Value,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO events (at, kind, task_id, node_id, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![now, kind, task, node, detail.to_string()],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> TaskSpec {
        TaskSpec {
            name: name.into(),
            program: "ep-S".into(),
            args: vec!["a b".into()],
            cpu: 0.5,
            memory_mb: 64,
            gpu: false,
            offload: true,
            robust: true,
        }
    }

    fn node() -> NodeSpec {
        NodeSpec {
            name: "n".into(),
            board: "pc".into(),
            cores: 4.0,
            memory_mb: 512,
            gpu: false,
            local: true,
        }
    }

    #[test]
    fn a_batch_is_stored_whole_or_not_at_all() {
        let mut s = Store::in_memory().unwrap();
        let (_, ids) = s
            .insert_batch(PolicyKind::Ga, &[spec("a"), spec("b")], 1.0)
            .unwrap();
        assert_eq!(ids.len(), 2);
        let e = s
            .insert_batch(PolicyKind::Tern, &[spec("c"), spec("a")], 2.0)
            .unwrap_err();
        assert!(
            matches!(e, StoreError::DuplicateName { ref name, existing } if name == "a" && existing == ids[0]),
            "{e}"
        );
        assert_eq!(s.tasks().unwrap().len(), 2, "c was not stored");
        let a = s.task(ids[0]).unwrap().unwrap();
        assert_eq!(a.spec, spec("a"));
        assert_eq!(a.policy, PolicyKind::Ga);
        assert_eq!(a.state, TaskState::Queued);
        assert_eq!(s.task_by_name("b").unwrap().unwrap().id, ids[1]);
    }

    #[test]
    fn results_are_recorded_once_and_only_for_the_current_epoch() {
        let mut s = Store::in_memory().unwrap();
        let n = s.add_node("10.0.2.2:4470", &node(), "x86_64", 0.0).unwrap();
        let m = s
            .add_node("10.0.2.3:4470", &node(), "aarch64", 0.0)
            .unwrap();
        let (_, ids) = s.insert_batch(PolicyKind::Tern, &[spec("a")], 1.0).unwrap();
        let t = ids[0];
        let e1 = s.task_starting(t, n, 2.0).unwrap();
        s.task_running(t, n, "r1", 2.0).unwrap();
        // Its node died: it starts again elsewhere, in a new epoch.
        s.task_requeued(t, "lost", "node died", 3.0).unwrap();
        let e2 = s.task_starting(t, m, 4.0).unwrap();
        assert_eq!(e2, e1 + 1);
        s.task_running(t, m, "r2", 4.0).unwrap();
        s.migration_started(t, m, n, 5.0).unwrap();
        s.migration_done(t, m, n, true, Some("r2"), Some((900, 100)), "ok", 6.0)
            .unwrap();
        assert_eq!(
            s.task(t).unwrap().unwrap().epoch,
            e2,
            "a migration keeps the epoch"
        );
        assert!(
            !s.record_result(t, e1, n, true, "stale", 1.0, 7.0).unwrap(),
            "old epoch"
        );
        assert!(s
            .record_result(t, e2, n, true, "VERIFICATION SUCCESSFUL", 2.5, 8.0)
            .unwrap());
        assert!(
            !s.record_result(t, e2, n, true, "again", 2.5, 9.0).unwrap(),
            "twice"
        );
        let r = s.result(t).unwrap().unwrap();
        assert_eq!(r.output, "VERIFICATION SUCCESSFUL");
        let row = s.task(t).unwrap().unwrap();
        assert_eq!(row.state, TaskState::Done);
        assert_eq!(row.finished_at, Some(8.0));
        let outcomes: Vec<_> = s
            .runs()
            .unwrap()
            .into_iter()
            .map(|r| r.outcome.unwrap())
            .collect();
        assert_eq!(outcomes, ["lost", "migrated", "finished"]);
        assert_eq!(s.migrations().unwrap()[0].downtime_ms, Some(100));
        assert!(
            !s.task_cancelled(t, 10.0).unwrap(),
            "a done task stays done"
        );
        assert!(s.task_events(t).unwrap().len() >= 4);
    }

    #[test]
    fn the_database_survives_reopening_and_refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        {
            let mut s = Store::open(&path).unwrap();
            s.insert_batch(PolicyKind::Tern, &[spec("a")], 1.0).unwrap();
            s.record_history("ep-S", "pc", 1, 80.0, 1, 1.0).unwrap();
            assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(s.tasks().unwrap().len(), 1);
        assert_eq!(
            s.load_history().unwrap().pair_mean("ep-S", "pc"),
            Some(80.0)
        );
        s.conn.pragma_update(None, "user_version", 99).unwrap();
        drop(s);
        assert!(matches!(
            Store::open(&path),
            Err(StoreError::TooNew { found: 99, .. })
        ));
    }

    #[test]
    fn nodes_are_unique_by_address_until_removed() {
        let mut s = Store::in_memory().unwrap();
        let a = s.add_node("h:1", &node(), "x86_64", 0.0).unwrap();
        assert!(matches!(
            s.add_node("h:1", &node(), "x86_64", 1.0),
            Err(StoreError::DuplicateNode { existing, .. }) if existing == a
        ));
        s.set_node_state(a, NodeState::Draining, Some(2.0)).unwrap();
        assert_eq!(s.nodes().unwrap()[0].state, NodeState::Draining);
        s.remove_node(a, 3.0).unwrap();
        assert!(s.nodes().unwrap().is_empty());
        assert_eq!(
            s.add_node("h:1", &node(), "x86_64", 4.0).unwrap(),
            a,
            "re-added under its id"
        );
    }
}
