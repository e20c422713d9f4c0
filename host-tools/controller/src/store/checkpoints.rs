//! The store's checkpoints: the last one of each running task that is not
//! robust, kept only while it is the task's current run.

use super::*;

impl Store {
    /// Keeps `bytes` as the last checkpoint of `task`, taken from its run
    /// in `epoch` on `node`, if that run is still the task's current one
    /// (a checkpoint of a stale run is not kept). Returns whether it was kept.
    #[allow(clippy::too_many_arguments)]
    pub fn save_checkpoint(
        &mut self,
        task: TaskId,
        epoch: i64,
        node: NodeId,
        remote: &str,
        progress: f64,
        bytes: &[u8],
        now: f64,
    ) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "INSERT OR REPLACE INTO checkpoints (task_id, epoch, node_id, remote, progress, taken_at, bytes)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 FROM tasks
             WHERE id = ?1 AND epoch = ?2 AND node_id = ?3 AND state IN ('running', 'migrating')",
            params![task, epoch, node, remote, progress, now, bytes],
        )?;
        Ok(n > 0)
    }

    /// The last checkpoint of `task`, if one was kept.
    pub fn checkpoint(&self, task: TaskId) -> Result<Option<CheckpointRow>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT task_id, epoch, node_id, remote, progress, taken_at, bytes FROM checkpoints WHERE task_id = ?1",
                [task],
                |r| {
                    Ok(CheckpointRow {
                        task_id: r.get(0)?,
                        epoch: r.get(1)?,
                        node_id: r.get(2)?,
                        remote: r.get(3)?,
                        progress: r.get(4)?,
                        taken_at: r.get(5)?,
                        bytes: r.get(6)?,
                    })
                },
            )
            .optional()?)
    }

    /// Forgets `task`'s checkpoint (it ended, or a node refused it).
    pub fn drop_checkpoint(&self, task: TaskId) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM checkpoints WHERE task_id = ?1", [task])?;
        Ok(())
    }

    /// Tasks running now and not robust (a standby covers those): id,
    /// node, handle, epoch — the runs whose checkpoints the controller takes.
    pub fn checkpointable(&self) -> Result<Vec<(TaskId, NodeId, String, i64)>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, node_id, remote, epoch FROM tasks
             WHERE state = 'running' AND robust = 0 AND node_id IS NOT NULL AND remote IS NOT NULL",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
