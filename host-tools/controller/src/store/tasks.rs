//! The store's batches, tasks, runs, migrations and results: every move of
//! a task, each in one transaction.

use super::*;

impl Store {
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
        if state.is_final() {
            self.drop_checkpoint(id)?;
        }
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
        tx.execute(
            "UPDATE tasks SET state = 'running', node_id = ?2, remote = ?3, started_at = COALESCE(started_at, ?4) WHERE id = ?1",
            params![id, node, remote, now],
        )?;
        let epoch = open_run(&tx, id, node, now)?;
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

    /// The task's run moved to `node` (as `remote`) without a migration
    /// the controller asked for: a standby took it over. Its run there
    /// ends as `failed_over`, one on `node` begins, in the same epoch.
    pub fn task_taken_over(
        &mut self,
        id: TaskId,
        node: NodeId,
        remote: &str,
        now: f64,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        close_run(&tx, id, "failed_over", now)?;
        tx.execute(
            "UPDATE tasks SET state = 'running', node_id = ?2, remote = ?3, reason = NULL WHERE id = ?1",
            params![id, node, remote],
        )?;
        let epoch = open_run(&tx, id, node, now)?;
        log(
            &tx,
            now,
            "failed_over",
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
        tx.execute("DELETE FROM checkpoints WHERE task_id = ?1", [id])?;
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
        tx.execute("DELETE FROM checkpoints WHERE task_id = ?1", [id])?;
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
}
