//! The scheduler's task events: submissions, restores, starts, progress,
//! ends, migrations, failovers and cancellations.

use super::*;

impl Scheduler {
    /// Takes a submission; early-binding policies place it at once.
    pub fn submit(
        &mut self,
        now: f64,
        tasks: Vec<(TaskId, TaskSpec)>,
        policy: PolicyKind,
    ) -> Vec<Action> {
        for (id, spec) in tasks {
            self.tasks
                .insert(id, Task::new(spec, policy, Phase::Pending, false, now));
            self.waiting.push(id);
        }
        self.dispatch(now)
    }

    /// Puts a task back where a restarted controller found it: on `node`
    /// (running since `since`, `progress` done) or, with `None`, waiting.
    pub fn restore(
        &mut self,
        now: f64,
        id: TaskId,
        spec: TaskSpec,
        policy: PolicyKind,
        at: Option<(NodeId, f64, f64)>,
    ) {
        let phase = match at {
            Some((node, since, progress)) if self.nodes.contains_key(&node) => {
                self.nodes.get_mut(&node).expect("checked").holding.push(id);
                Phase::Running {
                    node,
                    since,
                    progress,
                }
            }
            _ => {
                self.waiting.push(id);
                Phase::Pending
            }
        };
        self.tasks
            .insert(id, Task::new(spec, policy, phase, at.is_some(), now));
    }

    /// The node confirmed the start.
    pub fn started(&mut self, now: f64, task: TaskId, node: NodeId) -> Vec<Action> {
        self.account(now, node);
        if let Some(t) = self.tasks.get_mut(&task) {
            if t.phase == (Phase::Starting { node }) {
                t.phase = Phase::Running {
                    node,
                    since: now,
                    progress: 0.0,
                };
                t.core_secs = 0.0;
                t.accounted_at = now;
            }
        }
        Vec::new()
    }

    /// The node refused or did not answer the start request; `given_up`:
    /// the request itself was at fault (its program's module refused, say),
    /// so the task fails now instead of being tried again.
    pub fn start_failed(
        &mut self,
        now: f64,
        task: TaskId,
        node: NodeId,
        why: &str,
        given_up: bool,
    ) -> Vec<Action> {
        self.release(node, task);
        let limit = if given_up {
            1
        } else {
            self.config.max_start_failures
        };
        let mut actions = Vec::new();
        if let Some(t) = self.tasks.get_mut(&task) {
            if t.phase != (Phase::Starting { node }) {
                return Vec::new();
            }
            t.start_failures += 1;
            if t.start_failures >= limit {
                t.phase = Phase::Over;
                t.reason = Some(if given_up {
                    format!("start refused: {why}")
                } else {
                    format!("{} start requests refused; last: {why}", t.start_failures)
                });
                actions.push(Action::GiveUp { task });
            } else {
                t.phase = Phase::Pending;
                t.reason = Some(format!("start refused: {why}"));
                self.waiting.insert(0, task);
            }
        }
        actions.extend(self.dispatch(now));
        actions
    }

    /// A running task's progress (0 to 1), as its node reports it.
    pub fn progress(&mut self, task: TaskId, fraction: f64) {
        if let Some(t) = self.tasks.get_mut(&task) {
            if let Phase::Running { progress, .. } | Phase::Migrating { progress, .. } =
                &mut t.phase
            {
                *progress = fraction.clamp(0.0, 1.0);
            }
        }
    }

    /// A task ended on `node` (`ok`: it verified). Its time there is
    /// learned, as core-seconds, unless it moved during the run.
    pub fn finished(&mut self, now: f64, task: TaskId, node: NodeId, ok: bool) -> Vec<Action> {
        let Some(t) = self.tasks.get(&task) else {
            return Vec::new();
        };
        let on_node = match t.phase {
            Phase::Running { node: n, .. } | Phase::Starting { node: n } => n == node,
            Phase::Migrating { from, .. } => from == node,
            Phase::Orphaned { .. } => true,
            _ => false,
        };
        if !on_node {
            return Vec::new();
        }
        self.account(now, node);
        let t = self.tasks.get_mut(&task).expect("checked");
        if let Phase::Migrating { to, .. } = t.phase {
            // It finished during the pre-copy: the target's place is free again.
            self.release(to, task);
        }
        let t = self.tasks.get_mut(&task).expect("checked");
        t.phase = Phase::Over;
        let (moved, key, secs) = (t.moved, t.key.clone(), t.core_secs);
        self.release(node, task);
        if ok && !moved && secs > 0.0 {
            if let Some(n) = self.nodes.get(&node) {
                let board = n.spec.board.clone();
                self.history.record(&key, &board, node, secs);
                self.learned.push(Learned {
                    task,
                    key,
                    board,
                    node,
                    secs,
                });
            }
        }
        self.dispatch(now)
    }

    /// A migration completed: the task runs on `to`.
    pub fn migrated(&mut self, now: f64, task: TaskId, from: NodeId, to: NodeId) -> Vec<Action> {
        self.account(now, from);
        if let Some(t) = self.tasks.get_mut(&task) {
            if let Phase::Migrating {
                from: f,
                to: dest,
                progress,
                ..
            } = t.phase
            {
                if f == from && dest == to {
                    t.phase = Phase::Running {
                        node: to,
                        since: now,
                        progress,
                    };
                    t.moved = true;
                    t.accounted_at = now;
                    self.release(from, task);
                }
            }
        }
        self.dispatch(now)
    }

    /// A migration failed: the task still runs on `from`.
    pub fn migration_failed(
        &mut self,
        now: f64,
        task: TaskId,
        from: NodeId,
        to: NodeId,
    ) -> Vec<Action> {
        if let Some(t) = self.tasks.get_mut(&task) {
            if let Phase::Migrating {
                from: f,
                since,
                progress,
                ..
            } = t.phase
            {
                if f == from {
                    t.phase = Phase::Running {
                        node: from,
                        since,
                        progress,
                    };
                    t.hold_until = now + MIGRATION_BACKOFF_S;
                    self.release(to, task);
                }
            }
        }
        self.dispatch(now)
    }

    /// A robust task's standby on `to` took over after its node died (or
    /// fell silent: the standby's lease may run out before the
    /// controller's, while the task still runs there as far as the core
    /// knows).
    pub fn failed_over(&mut self, now: f64, task: TaskId, to: NodeId) -> Vec<Action> {
        let left = match self.tasks.get(&task).map(|t| t.phase.clone()) {
            Some(Phase::Orphaned { .. }) => Vec::new(),
            Some(Phase::Running { node, .. }) if node != to => vec![node],
            Some(Phase::Migrating { from, to: dest, .. }) => vec![from, dest],
            _ => return Vec::new(),
        };
        for node in left {
            self.account(now, node);
            self.release(node, task);
        }
        self.account(now, to);
        if let Some(t) = self.tasks.get_mut(&task) {
            t.phase = Phase::Running {
                node: to,
                since: now,
                progress: 0.0,
            };
            t.moved = true;
            t.accounted_at = now;
            if let Some(n) = self.nodes.get_mut(&to) {
                n.holding.push(task);
            }
        }
        self.dispatch(now)
    }

    /// An orphaned task's standby never took over: it restarts.
    pub fn failover_missed(&mut self, now: f64, task: TaskId) -> Vec<Action> {
        if let Some(t) = self.tasks.get_mut(&task) {
            if let Phase::Orphaned { node } = t.phase {
                t.spec.robust = false;
                self.restart_or_orphan(task, node);
            }
        }
        self.dispatch(now)
    }

    /// Cancels a task; a running one is stopped on its node(s).
    pub fn cancel(&mut self, now: f64, task: TaskId) -> Vec<Action> {
        let Some(t) = self.tasks.get_mut(&task) else {
            return Vec::new();
        };
        let phase = std::mem::replace(&mut t.phase, Phase::Over);
        let mut actions = Vec::new();
        match phase {
            Phase::Pending => self.waiting.retain(|w| *w != task),
            Phase::Queued { node } => {
                if let Some(n) = self.nodes.get_mut(&node) {
                    n.queue.retain(|w| *w != task);
                }
            }
            Phase::Starting { node } | Phase::Running { node, .. } => {
                self.release(node, task);
                actions.push(Action::Stop { task, node });
            }
            Phase::Migrating { from, to, .. } => {
                self.release(from, task);
                self.release(to, task);
                actions.push(Action::Stop { task, node: from });
            }
            Phase::Orphaned { .. } | Phase::Over => {}
        }
        actions.extend(self.dispatch(now));
        actions
    }
}
