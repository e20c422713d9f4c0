//! The node layer: what the controller needs from a node, behind a trait,
//! so that the service runs on real Tern nodes (over the authenticated
//! control protocol) and on a simulated cluster ([`sim`]) alike.
//!
//! A run on a node is named by a *tag* the controller chooses,
//! `t<task>e<epoch>`: it survives migrations, lets a restarted controller
//! find its runs in the nodes' status, and lets it recognise (and stop) a
//! stale run of an older epoch.

pub mod sim;

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
    /// The node does not support the request (yet).
    #[error("{addr}: {detail}")]
    Unsupported {
        /// The address.
        addr: String,
        /// What is missing.
        detail: String,
    },
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
    /// Starts a run; returns the node's handle of it.
    fn start(&mut self, request: &StartRequest) -> Result<String, DriverError>;
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

/// The tag of `task`'s run in `epoch`.
pub fn tag(task: TaskId, epoch: i64) -> String {
    format!("t{task}e{epoch}")
}

/// The task and epoch of a tag.
pub fn parse_tag(tag: &str) -> Option<(TaskId, i64)> {
    let rest = tag.strip_prefix('t')?;
    let (task, epoch) = rest.split_once('e')?;
    Some((task.parse().ok()?, epoch.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip() {
        assert_eq!(parse_tag(&tag(42, 3)), Some((42, 3)));
        assert_eq!(parse_tag("x42e3"), None);
        assert_eq!(parse_tag("t42"), None);
        assert_eq!(parse_tag("tae1"), None);
    }
}
