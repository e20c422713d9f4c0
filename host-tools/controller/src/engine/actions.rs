//! The scheduling core's actions carried out: starts (with their epochs,
//! standbys and checkpoints), migrations, stops, tasks given up.

use super::*;

impl Engine {
    pub(super) fn execute(&mut self, now: f64, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Start { task, node } => self.start(now, task, node),
                Action::Migrate { task, from, to } => {
                    let remote = self.store.task(task).ok().flatten().and_then(|r| r.remote);
                    let (Some(remote), Some(to_addr)) =
                        (remote, self.agents.get(&to).map(|a| a.addr.clone()))
                    else {
                        let actions = self.sched.migration_failed(now, task, from, to);
                        self.execute(now, actions);
                        continue;
                    };
                    let _ = self.store.migration_started(task, from, to, now);
                    self.emit(Change::Migration {
                        task,
                        from,
                        to,
                        phase: "started",
                    });
                    self.emit_task(task);
                    if let Some(agent) = self.agents.get(&from) {
                        let _ = agent.tx.send(AgentCmd::Migrate {
                            task,
                            remote,
                            to,
                            to_addr,
                        });
                    }
                }
                Action::Stop { task, node } => {
                    let remote = self.store.task(task).ok().flatten().and_then(|r| r.remote);
                    if let (Some(remote), Some(agent)) = (remote, self.agents.get(&node)) {
                        let _ = agent.tx.send(AgentCmd::Cancel(remote));
                    }
                }
                Action::GiveUp { task } => {
                    let reason = self.sched.reason(task).unwrap_or("refused").to_string();
                    let _ = self
                        .store
                        .set_task_state(task, TaskState::Failed, Some(&reason), now);
                    self.emit_task(task);
                }
            }
        }
    }

    pub(super) fn start(&mut self, now: f64, task: TaskId, node: NodeId) {
        let row = match self.store.task(task) {
            Ok(Some(row)) => row,
            _ => return,
        };
        let Some(program) = self.catalogue.get(&row.spec.program) else {
            let actions =
                self.sched
                    .start_failed(now, task, node, "program left the catalogue", true);
            self.execute(now, actions);
            return;
        };
        let epoch = match self.store.task_starting(task, node, now) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("controller: {e}");
                return;
            }
        };
        self.send_start(now, &row, program.runner.clone(), node, epoch);
    }

    /// Sends the start request of `row`'s run in `epoch` to `node`.
    pub(super) fn send_start(
        &mut self,
        now: f64,
        row: &TaskRow,
        runner: crate::catalogue::Runner,
        node: NodeId,
        epoch: i64,
    ) {
        let task = row.id;
        let standby = row.spec.robust.then(|| self.standby_for(node)).flatten();
        let checkpoint = match self.store.checkpoint(task) {
            Ok(c) => c.map(|c| Checkpoint {
                remote: c.remote,
                bytes: c.bytes,
                progress: c.progress,
            }),
            Err(e) => {
                eprintln!("controller: {e}");
                None
            }
        };
        let request = StartRequest {
            tag: tag(&self.prefix, task, epoch),
            task,
            program: row.spec.program.clone(),
            runner,
            args: row.spec.args.clone(),
            standby,
            checkpoint,
        };
        self.emit_task(task);
        match self.agents.get(&node) {
            Some(agent) => {
                let _ = agent.tx.send(AgentCmd::Start(request, epoch));
            }
            None => {
                let actions =
                    self.sched
                        .start_failed(now, task, node, "no agent for the node", false);
                self.execute(now, actions);
            }
        }
    }

    /// A checkpoint request of `task` was answered: the next may go.
    pub(super) fn checkpoint_answered(&mut self, task: TaskId) {
        if let Some((_, out)) = self.checkpointed.get_mut(&task) {
            *out = false;
        }
    }

    /// Asks `node`, where robust `task` now runs as `remote`, to keep a
    /// standby of it (after a migration or a failover).
    pub(super) fn keep_standby(&self, task: TaskId, node: NodeId, remote: &str) {
        let robust = self
            .store
            .task(task)
            .ok()
            .flatten()
            .is_some_and(|r| r.spec.robust);
        if let (true, Some(to), Some(agent)) =
            (robust, self.standby_for(node), self.agents.get(&node))
        {
            let _ = agent.tx.send(AgentCmd::Standby {
                task,
                remote: remote.to_string(),
                to,
            });
        }
    }

    /// The node a robust task's standby goes to: another up node, the one
    /// with the most memory.
    pub(super) fn standby_for(&self, owner: NodeId) -> Option<String> {
        self.agents
            .iter()
            .filter(|(id, _)| **id != owner && self.sched.node_state(**id) == Some(NodeState::Up))
            .max_by_key(|(id, _)| self.sched.node_spec(**id).map_or(0, |s| s.memory_mb))
            .map(|(_, a)| a.addr.clone())
    }

    /// The task a tag names, if the tag is its current run on `node`.
    pub(super) fn current(&self, node: NodeId, tag: &str) -> Option<(TaskRow, i64)> {
        let (task, epoch) = parse_tag(&self.prefix, tag)?;
        let row = self.store.task(task).ok().flatten()?;
        (row.epoch == epoch && row.node_id == Some(node)).then_some((row, epoch))
    }
}
