//! What the nodes report, through their agents: starts, ends, checkpoints,
//! migrations, failovers, statuses, and nodes lost.

use super::*;

impl Engine {
    pub(super) fn agent_event(&mut self, now: f64, node: NodeId, event: AgentEvent) {
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

    pub(super) fn finished(
        &mut self,
        now: f64,
        node: NodeId,
        tag: &str,
        ok: bool,
        output: &str,
        exec_s: f64,
    ) {
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

    pub(super) fn status(&mut self, now: f64, node: NodeId, status: NodeStatus) {
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
    pub(super) fn silent(&self, node: NodeId) -> bool {
        self.heard
            .get(&node)
            .is_none_or(|t| t.elapsed() > self.config.heartbeat * 2)
    }

    /// `task`'s run of `epoch` runs on `node` as `remote` now: its standby
    /// there took it over (or it moved there unseen).
    pub(super) fn taken_over(
        &mut self,
        now: f64,
        task: TaskId,
        epoch: i64,
        node: NodeId,
        remote: &str,
    ) {
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
    pub(super) fn confirm(
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

    pub(super) fn node_lost(&mut self, now: f64, node: NodeId, why: &str) {
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
