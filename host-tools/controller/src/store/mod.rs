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

mod checkpoints;
mod history;
mod nodes;
mod tasks;

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
const MIGRATIONS: [&str; 2] = [
    r#"
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
"#,
    r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO meta (key, value) VALUES ('run_prefix', lower(hex(randomblob(4))));
CREATE TABLE checkpoints (
    task_id  INTEGER PRIMARY KEY REFERENCES tasks(id),
    epoch    INTEGER NOT NULL,
    node_id  INTEGER NOT NULL REFERENCES nodes(id),
    remote   TEXT NOT NULL,
    progress REAL NOT NULL,
    taken_at REAL NOT NULL,
    bytes    BLOB NOT NULL
);
"#,
];

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

/// The last checkpoint fetched of a task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckpointRow {
    /// The task.
    pub task_id: TaskId,
    /// The epoch of the run it was taken from.
    pub epoch: i64,
    /// The node it was taken on.
    pub node_id: NodeId,
    /// The task's handle on the nodes.
    pub remote: String,
    /// Share of the work it holds done.
    pub progress: f64,
    /// When it was taken.
    pub taken_at: f64,
    /// The checkpoint.
    #[serde(skip)]
    pub bytes: Vec<u8>,
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

    /// This database's run prefix: random, made with the database, so
    /// that the tags of its runs are its own on every node (another
    /// controller's runs, or an earlier database's, are not taken for its).
    pub fn run_prefix(&self) -> Result<String, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'run_prefix'", [], |r| {
                r.get(0)
            })?)
    }
}

/// Begins a run of `task` on `node` at the task's current epoch; returns
/// that epoch.
fn open_run(tx: &Transaction<'_>, task: TaskId, node: NodeId, now: f64) -> Result<i64, StoreError> {
    let epoch: i64 = tx.query_row("SELECT epoch FROM tasks WHERE id = ?1", [task], |r| {
        r.get(0)
    })?;
    tx.execute(
        "INSERT INTO runs (task_id, node_id, epoch, start) VALUES (?1, ?2, ?3, ?4)",
        params![task, node, epoch, now],
    )?;
    Ok(epoch)
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
    fn checkpoints_are_kept_for_the_current_run_only_and_dropped_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let mut s = Store::open(&path).unwrap();
        let prefix = s.run_prefix().unwrap();
        assert_eq!(prefix.len(), 8);
        assert_ne!(prefix, Store::in_memory().unwrap().run_prefix().unwrap());
        let n = s.add_node("h:1", &node(), "x86_64", 0.0).unwrap();
        let plain = TaskSpec {
            robust: false,
            ..spec("a")
        };
        let (_, ids) = s
            .insert_batch(PolicyKind::Tern, &[plain, spec("b")], 1.0)
            .unwrap();
        let (a, b) = (ids[0], ids[1]);
        let e = s.task_starting(a, n, 2.0).unwrap();
        assert!(
            !s.save_checkpoint(a, e, n, "0x1", 0.1, b"x", 2.5).unwrap(),
            "not running yet"
        );
        s.task_running(a, n, "0x1", 3.0).unwrap();
        s.task_starting(b, n, 3.0).unwrap();
        s.task_running(b, n, "0x2", 3.0).unwrap();
        assert_eq!(
            s.checkpointable().unwrap(),
            [(a, n, "0x1".to_string(), e)],
            "robust tasks have standbys instead"
        );
        assert!(s.save_checkpoint(a, e, n, "0x1", 0.2, b"one", 4.0).unwrap());
        assert!(s.save_checkpoint(a, e, n, "0x1", 0.4, b"two", 5.0).unwrap());
        assert!(!s
            .save_checkpoint(a, e + 1, n, "0x1", 0.6, b"stale", 6.0)
            .unwrap());
        let c = s.checkpoint(a).unwrap().unwrap();
        assert_eq!(
            (c.bytes.as_slice(), c.progress, c.epoch),
            (&b"two"[..], 0.4, e)
        );
        drop(s);
        let mut s = Store::open(&path).unwrap();
        assert_eq!(s.run_prefix().unwrap(), prefix, "kept with the database");
        assert!(s.checkpoint(a).unwrap().is_some(), "kept across restarts");
        s.record_result(a, e, n, true, "ok", 1.0, 7.0).unwrap();
        assert!(s.checkpoint(a).unwrap().is_none());
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
