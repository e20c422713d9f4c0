//! The scheduler's decisions: placing waiting tasks, starting them, and
//! Tern's policy's starts and live migrations.

use super::*;

impl Scheduler {
    pub(super) fn start(&mut self, now: f64, task: TaskId, node: NodeId, probe: bool) -> Action {
        self.account(now, node);
        let t = self.tasks.get_mut(&task).expect("exists");
        t.phase = Phase::Starting { node };
        t.probe = probe;
        t.reason = None;
        self.nodes
            .get_mut(&node)
            .expect("exists")
            .holding
            .push(task);
        Action::Start { task, node }
    }

    /// Everything that can happen now: place waiting tasks, start queued
    /// and planned ones, migrate.
    pub(super) fn dispatch(&mut self, now: f64) -> Vec<Action> {
        let mut actions = Vec::new();
        self.place_waiting(now);
        // Early binding: each node starts the head of its queue while it fits.
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for &id in &ids {
            while let Some(&head) = self.nodes[&id].queue.front() {
                if !self.can_start(id, head, false) {
                    break;
                }
                self.nodes.get_mut(&id).expect("exists").queue.pop_front();
                actions.push(self.start(now, head, id, false));
            }
        }
        self.dispatch_tern(now, &mut actions);
        actions
    }

    /// Places waiting early-binding tasks that some node can hold, and
    /// records why the others wait.
    pub(super) fn place_waiting(&mut self, now: f64) {
        let mut by_policy: BTreeMap<PolicyKind, Vec<TaskView>> = BTreeMap::new();
        let waiting = std::mem::take(&mut self.waiting);
        let mut keep = Vec::new();
        for id in waiting {
            if self.tasks[&id].phase != Phase::Pending {
                continue;
            }
            let view = self.task_view(id);
            let reason = self.unfit_reason(&view);
            let task = self.tasks.get_mut(&id).expect("exists");
            if reason.is_some() || task.start_failures == 0 {
                task.reason = reason.clone();
            }
            if reason.is_none() && task.policy != PolicyKind::Tern {
                by_policy.entry(task.policy).or_default().push(view);
            } else {
                keep.push(id);
            }
        }
        self.waiting = keep;
        if by_policy.is_empty() {
            return;
        }
        let mut nodes = self.node_views(now);
        for (policy, tasks) in by_policy {
            // Tasks that may not leave the local node go there, whatever the policy.
            let (local, offload): (Vec<TaskView>, Vec<TaskView>) =
                tasks.into_iter().partition(|t| !t.offload);
            let mut placed = policy::place(
                PolicyKind::Local,
                &nodes,
                &local,
                &self.history,
                &self.config.ga,
            );
            placed.extend(policy::place(
                policy,
                &nodes,
                &offload,
                &self.history,
                &self.config.ga,
            ));
            for (t, n) in placed {
                self.tasks.get_mut(&t).expect("exists").phase = Phase::Queued { node: n };
                self.nodes
                    .get_mut(&n)
                    .expect("placed on a node")
                    .queue
                    .push_back(t);
            }
            // The next policy sees these queues.
            nodes = self.node_views(now);
        }
        // Anything a policy left out waits.
        let left: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(id, t)| t.phase == Phase::Pending && !self.waiting.contains(id))
            .map(|(id, _)| *id)
            .collect();
        self.waiting.extend(left);
    }

    /// Tern's dispatch: plan the waiting tasks; move running tasks that
    /// would otherwise finish after all of them (the makespan's critical
    /// ones, typically misplaced before their pair was known) to free cores
    /// first; start what the plan puts on a free core now; then any other
    /// move worth its cost.
    pub(super) fn dispatch_tern(&mut self, now: f64, actions: &mut Vec<Action>) {
        let tern: Vec<TaskView> = self
            .waiting
            .iter()
            .filter(|id| {
                let t = &self.tasks[*id];
                t.policy == PolicyKind::Tern && t.reason.is_none()
            })
            .map(|&id| self.task_view(id))
            .collect();
        let plan = if tern.is_empty() {
            Vec::new()
        } else {
            let probing: Pairs = self
                .tasks
                .values()
                .filter(|t| t.probe && t.phase != Phase::Over)
                .filter_map(|t| match t.phase {
                    Phase::Starting { node } | Phase::Running { node, .. } => {
                        Some((t.key.clone(), self.nodes.get(&node)?.spec.board.clone()))
                    }
                    _ => None,
                })
                .collect();
            let nodes = self.node_views(now);
            tern::plan(now, &nodes, &tern, &self.history, &probing)
        };
        if self.config.migration {
            let last = plan.iter().map(|p| p.end).fold(now, f64::max);
            self.migrate(now, Some(last + self.config.migration_s), actions);
        }
        let mut started = Vec::new();
        for p in plan {
            if p.start <= now + 1e-9 && self.can_start(p.node, p.task, true) {
                actions.push(self.start(now, p.task, p.node, p.probe));
                started.push(p.task);
            }
        }
        self.waiting.retain(|id| !started.contains(id));
        if self.config.migration {
            self.migrate(now, None, actions);
        }
    }

    /// Live migrations onto free cores. With `critical_after`, only of
    /// tasks predicted to end after it (and of draining nodes' tasks).
    pub(super) fn migrate(
        &mut self,
        now: f64,
        critical_after: Option<f64>,
        actions: &mut Vec<Action>,
    ) {
        let free: Vec<FreeNode> = self
            .node_views(now)
            .into_iter()
            .filter_map(|view| {
                let n = &self.nodes[&view.id];
                let slots = NodeView::slots(n.spec.cores);
                let cores = slots.saturating_sub(n.holding.len());
                let (_, used) = self.node_usage(view.id);
                (cores > 0).then(|| FreeNode {
                    memory_mb: n.spec.memory_mb as i64 - used as i64,
                    cores,
                    node: view,
                })
            })
            .collect();
        if free.is_empty() {
            return;
        }
        let running: Vec<RunningView> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.hold_until <= now)
            .filter_map(|(&id, t)| {
                let r = self.running_view(id)?;
                let critical = critical_after
                    .is_none_or(|after| now + tern::remaining_here(now, &r, &self.history) > after);
                (r.draining || (t.policy == PolicyKind::Tern && critical)).then_some(r)
            })
            .collect();
        for (task, from, to) in
            tern::migrations(now, &free, &running, &self.history, self.config.migration_s)
        {
            self.account(now, from);
            let t = self.tasks.get_mut(&task).expect("exists");
            if let Phase::Running {
                since, progress, ..
            } = t.phase
            {
                t.phase = Phase::Migrating {
                    from,
                    to,
                    since,
                    progress,
                };
                self.nodes.get_mut(&to).expect("exists").holding.push(task);
                actions.push(Action::Migrate { task, from, to });
            }
        }
    }
}
