//! The scheduler's node events: joins, comebacks, drains, deaths, removals.

use super::*;

impl Scheduler {
    /// A node joins (or rejoins after [`Scheduler::remove_node`]).
    pub fn add_node(&mut self, now: f64, id: NodeId, spec: NodeSpec) -> Vec<Action> {
        self.nodes.insert(
            id,
            Node {
                spec,
                state: NodeState::Up,
                queue: VecDeque::new(),
                holding: Vec::new(),
            },
        );
        self.dispatch(now)
    }

    /// A node that was down answers again.
    pub fn node_up(&mut self, now: f64, id: NodeId) -> Vec<Action> {
        if let Some(n) = self.nodes.get_mut(&id) {
            if n.state == NodeState::Down {
                n.state = NodeState::Up;
            }
        }
        self.dispatch(now)
    }

    /// Drains a node: nothing new starts there, its queue is placed
    /// again, and its running tasks leave by migration as cores elsewhere
    /// free up.
    pub fn drain(&mut self, now: f64, id: NodeId) -> Vec<Action> {
        if let Some(n) = self.nodes.get_mut(&id) {
            if n.state == NodeState::Up {
                n.state = NodeState::Draining;
            }
        }
        self.requeue_node_queue(id);
        self.dispatch(now)
    }

    /// A node stopped answering: its queue is placed again; its tasks
    /// restart elsewhere, except robust ones, which wait for their standby
    /// ([`Scheduler::failed_over`]).
    pub fn node_down(&mut self, now: f64, id: NodeId) -> Vec<Action> {
        let Some(node) = self.nodes.get_mut(&id) else {
            return Vec::new();
        };
        node.state = NodeState::Down;
        self.account(now, id);
        self.requeue_node_queue(id);
        let holding = std::mem::take(&mut self.nodes.get_mut(&id).expect("present").holding);
        for t in holding {
            let task = self.tasks.get_mut(&t).expect("held tasks exist");
            match task.phase.clone() {
                Phase::Migrating { from, .. } if from != id => {
                    // The target died: the task stays where it is.
                    task.phase = Phase::Running {
                        node: from,
                        since: now,
                        progress: 0.0,
                    };
                    task.hold_until = now + MIGRATION_BACKOFF_S;
                }
                Phase::Migrating { to, .. } => {
                    self.release(to, t);
                    self.restart_or_orphan(t, id);
                }
                Phase::Running { .. } | Phase::Starting { .. } => self.restart_or_orphan(t, id),
                _ => {}
            }
        }
        self.dispatch(now)
    }

    pub(super) fn restart_or_orphan(&mut self, t: TaskId, node: NodeId) {
        let task = self.tasks.get_mut(&t).expect("exists");
        if task.spec.robust && matches!(task.phase, Phase::Running { .. }) {
            task.phase = Phase::Orphaned { node };
        } else {
            task.phase = Phase::Pending;
            task.core_secs = 0.0;
            task.moved = true;
            task.reason = None;
            self.waiting.push(t);
        }
    }

    /// Removes a node that holds no task.
    pub fn remove_node(&mut self, id: NodeId) -> Result<(), String> {
        let Some(n) = self.nodes.get(&id) else {
            return Ok(());
        };
        if !n.holding.is_empty() {
            return Err(format!(
                "{} still runs {} task(s): drain it first",
                n.spec.name,
                n.holding.len()
            ));
        }
        self.requeue_node_queue(id);
        self.nodes.remove(&id);
        Ok(())
    }

    pub(super) fn requeue_node_queue(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        for t in std::mem::take(&mut node.queue) {
            if let Some(task) = self.tasks.get_mut(&t) {
                task.phase = Phase::Pending;
                self.waiting.push(t);
            }
        }
    }
}
