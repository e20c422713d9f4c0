//! The store's execution history, timeline and event log.

use super::*;

impl Store {
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
