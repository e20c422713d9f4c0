//! The scheduler's bookkeeping and the views its policies plan on: what
//! runs where, at which rate, what fits, and why a task fits nowhere.

use super::*;

impl Scheduler {
    pub(super) fn release(&mut self, node: NodeId, task: TaskId) {
        if let Some(n) = self.nodes.get_mut(&node) {
            n.holding.retain(|t| *t != task);
        }
    }

    /// Tasks executing on `node` now (running, or migrating away).
    pub(super) fn executing(&self, node: NodeId) -> Vec<TaskId> {
        self.nodes.get(&node).map_or(Vec::new(), |n| {
            n.holding
                .iter()
                .copied()
                .filter(|t| match self.tasks[t].phase {
                    Phase::Running { node: at, .. } => at == node,
                    Phase::Migrating { from, .. } => from == node,
                    _ => false,
                })
                .collect()
        })
    }

    /// The share of a core each task executing on `node` gets.
    pub(super) fn rate(&self, node: NodeId) -> f64 {
        let n = self.executing(node).len();
        let cores = self.nodes.get(&node).map_or(1.0, |x| x.spec.cores);
        if n == 0 {
            1.0
        } else {
            (cores / n as f64).min(1.0)
        }
    }

    /// Brings the core-seconds of the tasks executing on `node` up to `now`.
    pub(super) fn account(&mut self, now: f64, node: NodeId) {
        let rate = self.rate(node);
        for t in self.executing(node) {
            let task = self.tasks.get_mut(&t).expect("exists");
            task.core_secs += (now - task.accounted_at).max(0.0) * rate;
            task.accounted_at = now;
        }
    }

    pub(super) fn task_view(&self, id: TaskId) -> TaskView {
        let t = &self.tasks[&id];
        TaskView {
            id,
            key: t.key.clone(),
            cpu: t.spec.cpu,
            memory_mb: t.spec.memory_mb,
            gpu: t.spec.gpu,
            offload: t.spec.offload,
        }
    }

    pub(super) fn running_view(&self, id: TaskId) -> Option<RunningView> {
        let t = &self.tasks[&id];
        let Phase::Running {
            node,
            since,
            progress,
        } = t.phase
        else {
            return None;
        };
        let n = self.nodes.get(&node)?;
        Some(RunningView {
            task: id,
            key: t.key.clone(),
            node,
            board: n.spec.board.clone(),
            since,
            progress,
            rate: self.rate(node),
            draining: n.state != NodeState::Up,
            view: self.task_view(id),
        })
    }

    /// Nodes that take new work, with predicted core ready times.
    pub(super) fn node_views(&self, now: f64) -> Vec<NodeView> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.state == NodeState::Up)
            .map(|(&id, n)| {
                let slots = NodeView::slots(n.spec.cores);
                let mut ends: Vec<f64> = n
                    .holding
                    .iter()
                    .map(|&t| match self.running_view(t) {
                        Some(r) if r.node == id => {
                            now + tern::remaining_here(now, &r, &self.history)
                        }
                        // Starting here, or arriving by migration.
                        _ => {
                            now + self
                                .history
                                .predict(&self.tasks[&t].key, &n.spec.board)
                                .secs
                        }
                    })
                    .collect();
                ends.sort_by(f64::total_cmp);
                let mut ready = vec![now; slots];
                for (k, e) in ends.into_iter().enumerate() {
                    if k < slots {
                        ready[k] = e;
                    } else {
                        // More tasks than cores: they share; the earliest core absorbs it.
                        let min = min_index(&ready);
                        ready[min] += e - now;
                    }
                }
                for &t in &n.queue {
                    let min = min_index(&ready);
                    ready[min] += self
                        .history
                        .predict(&self.tasks[&t].key, &n.spec.board)
                        .secs;
                }
                ready.sort_by(f64::total_cmp);
                let (_, used) = self.node_usage(id);
                let queued: u64 = n.queue.iter().map(|t| self.tasks[t].spec.memory_mb).sum();
                NodeView {
                    id,
                    board: n.spec.board.clone(),
                    cores: n.spec.cores,
                    memory_mb: n.spec.memory_mb,
                    gpu: n.spec.gpu,
                    local: n.spec.local,
                    free_memory_mb: n.spec.memory_mb as i64 - used as i64 - queued as i64,
                    queue_len: n.queue.len(),
                    ready,
                }
            })
            .collect()
    }

    /// Why no node can hold `view`, counted over every known node.
    pub(super) fn unfit_reason(&self, view: &TaskView) -> Option<String> {
        let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
        let mut fit = 0;
        for n in self.nodes.values() {
            let v = NodeView {
                id: 0,
                board: String::new(),
                cores: n.spec.cores,
                memory_mb: n.spec.memory_mb,
                gpu: n.spec.gpu,
                local: n.spec.local,
                free_memory_mb: 0,
                queue_len: 0,
                ready: Vec::new(),
            };
            let why = if !view.offload && !n.spec.local {
                Some("not local")
            } else if view.gpu && !n.spec.gpu {
                Some("gpu")
            } else if view.cpu > n.spec.cores + 1e-9 {
                Some("cpu")
            } else if view.memory_mb > n.spec.memory_mb {
                Some("memory")
            } else if n.state != NodeState::Up {
                Some(n.state.name())
            } else {
                debug_assert!(fits(view, &v));
                None
            };
            match why {
                Some(w) => *counts.entry(w).or_default() += 1,
                None => fit += 1,
            }
        }
        if fit > 0 {
            return None;
        }
        let total = self.nodes.len();
        if total == 0 {
            return Some("0/0 nodes: no node has joined".into());
        }
        let detail = if counts.len() == 1 {
            counts
                .keys()
                .next()
                .copied()
                .unwrap_or_default()
                .to_string()
        } else {
            counts
                .iter()
                .map(|(w, c)| format!("{c} {w}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        Some(format!("0/{total} nodes: {detail}"))
    }

    /// Whether `node` can start `task` now.
    pub(super) fn can_start(&self, node: NodeId, task: TaskId, one_per_core: bool) -> bool {
        let Some(n) = self.nodes.get(&node) else {
            return false;
        };
        let spec = &self.tasks[&task].spec;
        let (cpu, mem) = self.node_usage(node);
        n.state == NodeState::Up
            && cpu + spec.cpu <= n.spec.cores + 1e-9
            && mem + spec.memory_mb <= n.spec.memory_mb
            && (!one_per_core || n.holding.len() < NodeView::slots(n.spec.cores))
    }
}

/// The index of the smallest value (0 when empty).
fn min_index(v: &[f64]) -> usize {
    (0..v.len())
        .min_by(|a, b| v[*a].total_cmp(&v[*b]))
        .unwrap_or(0)
}
