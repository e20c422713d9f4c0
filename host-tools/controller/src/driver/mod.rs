//! The node layer: what the controller needs from a node, behind a trait,
//! so that the service runs on real Tern nodes over the authenticated
//! control protocol ([`live`]) and on a simulated cluster ([`sim`]) alike.
//!
//! A run on a node is named by a *tag* the controller chooses,
//! `<database>.t<task>e<epoch>`: it survives migrations, syncs and
//! failovers, lets a restarted controller find its runs in the nodes'
//! status, lets it recognise (and stop) a stale run of an older epoch, and
//! (by the database's own prefix) never mistakes another controller's run,
//! or one of an earlier database on the same nodes, for its own.

pub mod live;
pub mod sim;
pub mod wasm;

use std::time::Duration;

use serde::Serialize;
use thiserror::Error;

use crate::catalogue::Runner;
use crate::model::TaskId;

/// Why a node could not be reached or refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DriverError {
    /// Nothing answers at the address (refused, unreachable, timed out).
    #[error("{addr} does not answer: {detail}")]
    Unreachable {
        /// The address.
        addr: String,
        /// What the network said.
        detail: String,
    },
    /// The node does not know the controller's key.
    #[error("{addr} refused the key (wrong cluster key?)")]
    WrongKey {
        /// The address.
        addr: String,
    },
    /// The node answered but refused the request.
    #[error("{addr} refused: {detail}")]
    Refused {
        /// The address.
        addr: String,
        /// Its reason.
        detail: String,
    },
    /// The request cannot be carried out as asked (a program without a
    /// module, arguments without a reference answer): asking again, there
    /// or elsewhere, changes nothing.
    #[error("{addr}: {detail}")]
    Unsupported {
        /// The address.
        addr: String,
        /// What is missing.
        detail: String,
    },
    /// The node refused a program's Wasm module (`ModuleRejected`).
    #[error("{addr} refused {program}'s module: {reason} ({detail})")]
    ModuleRefused {
        /// The address.
        addr: String,
        /// The program.
        program: String,
        /// The node's typed reason (`ModuleRefusal`).
        reason: String,
        /// What exactly.
        detail: String,
    },
}

impl DriverError {
    /// Whether a start that failed so is given up at once: the request
    /// itself is at fault (the module, the arguments), so another attempt
    /// would fail alike.
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Unsupported { .. } | Self::ModuleRefused { .. })
    }
}

/// A run's state on a node.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RunState {
    /// Running (it owns the task).
    Running,
    /// Ended.
    Finished {
        /// Whether it verified.
        ok: bool,
        /// Its output or verdict.
        output: String,
        /// Seconds it ran there.
        exec_s: f64,
    },
    /// A standby replica, not running.
    Standby,
}

/// A run as a node reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RemoteRun {
    /// The node's handle of it.
    pub remote: String,
    /// The controller's tag.
    pub tag: String,
    /// Share done, 0 to 1.
    pub progress: f64,
    /// Its state.
    pub state: RunState,
}

/// A node's status answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeStatus {
    /// Its ISA.
    pub isa: String,
    /// Its board.
    pub board: String,
    /// Its cores.
    pub cores: f64,
    /// Its memory, MB.
    pub memory_mb: u64,
    /// Its free memory, MB.
    pub memory_free_mb: u64,
    /// Whether it has a GPU.
    pub gpu: bool,
    /// Its runs.
    pub runs: Vec<RemoteRun>,
}

/// A copy of a run's state, taken while it ran: a task that loses its node
/// resumes from it elsewhere instead of starting over.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The task's handle on the nodes (a migrated or resumed task keeps it).
    pub remote: String,
    /// The checkpoint (for real nodes, checkpoint format v1).
    pub bytes: Vec<u8>,
    /// Share of the work it holds done, 0 to 1.
    pub progress: f64,
}

/// What a start request carries.
#[derive(Debug, Clone, PartialEq)]
pub struct StartRequest {
    /// The controller's tag for the run.
    pub tag: String,
    /// The task.
    pub task: TaskId,
    /// The program's name.
    pub program: String,
    /// How the node runs it.
    pub runner: Runner,
    /// Its arguments.
    pub args: Vec<String>,
    /// A standby replica on this node (`host:port`) for a robust task.
    pub standby: Option<String>,
    /// Resume from this checkpoint (under the new tag, at the next
    /// ownership epoch) instead of starting from the beginning.
    pub checkpoint: Option<Checkpoint>,
}

/// A finished live migration.
#[derive(Debug, Clone, PartialEq)]
pub struct Moved {
    /// The target's handle of the task.
    pub remote: String,
    /// Request to acknowledgement, ms.
    pub total_ms: i64,
    /// Time the task did not run, ms.
    pub downtime_ms: i64,
}

/// Something a node reports on its own.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeEvent {
    /// A run's progress.
    Progress {
        /// The run.
        tag: String,
        /// Share done.
        progress: f64,
    },
    /// A run ended.
    Finished {
        /// The run.
        tag: String,
        /// Whether it verified.
        ok: bool,
        /// Its output.
        output: String,
        /// Seconds it ran there.
        exec_s: f64,
    },
    /// This node's standby of a run took over (its owner fell silent).
    FailedOver {
        /// The run.
        tag: String,
        /// The node's handle of it.
        remote: String,
    },
}

/// An open control connection to one node.
pub trait NodeLink: Send {
    /// The node's status (resources and runs).
    fn status(&mut self) -> Result<NodeStatus, DriverError>;
    /// Starts a run (or resumes it from the request's checkpoint); returns
    /// the node's handle of it. Asking again under the same tag is safe.
    fn start(&mut self, request: &StartRequest) -> Result<String, DriverError>;
    /// Keeps a standby replica of a run on the node at `to` (`host:port`),
    /// which takes the run over if this node dies; `None` ends it.
    fn standby(&mut self, remote: &str, to: Option<&str>) -> Result<(), DriverError>;
    /// A checkpoint of a run as it is now (it keeps running).
    fn checkpoint(&mut self, remote: &str) -> Result<Checkpoint, DriverError>;
    /// Moves a run to the node at `to` by live migration.
    fn migrate(&mut self, remote: &str, to: &str) -> Result<Moved, DriverError>;
    /// Stops a run.
    fn cancel(&mut self, remote: &str) -> Result<(), DriverError>;
    /// Events since the last call, waiting at most `wait` for the first.
    fn events(&mut self, wait: Duration) -> Result<Vec<NodeEvent>, DriverError>;
}

/// Opens control connections.
pub trait Connector: Send + Sync {
    /// Connects to the node at `addr` (`host:port`) and authenticates.
    fn connect(&self, addr: &str) -> Result<Box<dyn NodeLink>, DriverError>;
}

/// The tag of `task`'s run in `epoch`, for the database whose run prefix
/// is `prefix`.
pub fn tag(prefix: &str, task: TaskId, epoch: i64) -> String {
    format!("{prefix}.t{task}e{epoch}")
}

/// The task and epoch of a tag of the database whose run prefix is
/// `prefix`; `None` for anyone else's tag.
pub fn parse_tag(prefix: &str, tag: &str) -> Option<(TaskId, i64)> {
    let rest = tag.strip_prefix(prefix)?.strip_prefix(".t")?;
    let (task, epoch) = rest.split_once('e')?;
    Some((task.parse().ok()?, epoch.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_and_other_databases_tags_are_not_ours() {
        assert_eq!(parse_tag("ab12", &tag("ab12", 42, 3)), Some((42, 3)));
        assert!(tag("ab12", 123_456_789, 1_000_000).len() <= 64);
        assert_eq!(parse_tag("ab12", &tag("cd34", 42, 3)), None);
        assert_eq!(parse_tag("ab12", "ab12.x42e3"), None);
        assert_eq!(parse_tag("ab12", "ab12.t42"), None);
        assert_eq!(parse_tag("ab12", "ab12.tae1"), None);
        assert_eq!(parse_tag("ab12", "t42e3"), None);
    }
}
