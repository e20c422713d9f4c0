//! Live nodes as the inspector shows them: the task table of `inspect --node
//! … list` and its `--json` form. The connection itself is `tern-client`'s.

use serde::Serialize;
use tern_protocol::{TaskRole, TaskStatus, TaskSummary};

/// One task as the inspector shows it (table and `--json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskView {
    /// Global task id.
    pub task_id: u64,
    /// Task kind.
    pub kind: String,
    /// Progress done.
    pub progress: u64,
    /// Progress at completion.
    pub progress_total: u64,
    /// Progress in percent.
    pub percent: f64,
    /// `owner` or `standby`.
    pub role: &'static str,
    /// `running`, `paused`, `migrating`, `finished`, `replica`.
    pub status: &'static str,
    /// For a finished task: whether it verified.
    pub verified: Option<bool>,
    /// Owner's node id.
    pub owner: u64,
    /// Ownership epoch.
    pub epoch: u64,
    /// Milliseconds since the last sync, if synced.
    pub last_sync_ms_ago: Option<u64>,
    /// Sync policy, if synced.
    pub policy: Option<String>,
}

impl From<&TaskSummary> for TaskView {
    fn from(t: &TaskSummary) -> Self {
        let (status, verified) = match t.status {
            TaskStatus::Running => ("running", None),
            TaskStatus::Paused => ("paused", None),
            TaskStatus::Migrating => ("migrating", None),
            TaskStatus::Finished { verified } => ("finished", Some(verified)),
            TaskStatus::Replica => ("replica", None),
        };
        Self {
            task_id: t.task_id,
            kind: t.kind.clone(),
            progress: t.progress,
            progress_total: t.progress_total,
            percent: if t.progress_total == 0 {
                100.0
            } else {
                t.progress as f64 * 100.0 / t.progress_total as f64
            },
            role: match t.role {
                TaskRole::Owner => "owner",
                TaskRole::Standby => "standby",
            },
            status,
            verified,
            owner: t.owner,
            epoch: t.epoch,
            last_sync_ms_ago: t.last_sync_ms_ago,
            policy: t.policy.clone(),
        }
    }
}

/// Renders tasks as the `list` table.
pub fn task_table(tasks: &[TaskView]) -> String {
    let mut out = format!(
        "{:>20}  {:<8} {:>7}  {:<8} {:<10} {:>20} {:>6} {:>10}  {}\n",
        "task", "kind", "progress", "role", "status", "owner", "epoch", "last sync", "policy"
    );
    for t in tasks {
        let status = match t.verified {
            Some(true) => "verified",
            Some(false) => "failed",
            None => t.status,
        };
        let sync = t
            .last_sync_ms_ago
            .map_or("-".to_string(), |ms| format!("{ms} ms"));
        out.push_str(&format!(
            "{:>20}  {:<8} {:>7.1}%  {:<8} {:<10} {:>20} {:>6} {:>10}  {}\n",
            format!("{:#x}", t.task_id),
            t.kind,
            t.percent,
            t.role,
            status,
            format!("{:016x}", t.owner),
            t.epoch,
            sync,
            t.policy.as_deref().unwrap_or("-")
        ));
    }
    out
}
