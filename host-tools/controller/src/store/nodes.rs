//! The store's nodes: added, seen, drained, down, removed.

use super::*;

impl Store {
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
}
