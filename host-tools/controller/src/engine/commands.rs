//! The engine's commands from the API: nodes added, batches submitted,
//! tasks cancelled, and each node's agent started.

use super::*;

impl Engine {
    pub(super) fn command(&mut self, now: f64, cmd: Command) {
        match cmd {
            Command::Submit(body, reply) => {
                let _ = reply.send(self.submit(now, &body));
            }
            Command::Cancel(task, reply) => {
                let _ = reply.send(self.cancel(now, task));
            }
            Command::AddNode(addr, local, reply) => {
                if let Some(existing) = self
                    .store
                    .nodes()
                    .ok()
                    .and_then(|n| n.into_iter().find(|n| n.addr == addr))
                {
                    let _ = reply.send(Err(format!(
                        "{addr} is already in the cluster (node {})",
                        existing.id
                    )));
                    return;
                }
                // Connecting may take a while: not on this thread.
                let connector = self.connector.clone();
                let tx = self.tx.clone();
                std::thread::spawn(move || {
                    let result = connector
                        .connect(&addr)
                        .and_then(|mut link| link.status().map(|s| (link, s)));
                    let _ = tx.send(Msg::Connected {
                        addr,
                        local,
                        result,
                        reply,
                    });
                });
            }
            Command::Drain(node, reply) => {
                let r = if self.sched.node_state(node).is_none() {
                    Err(format!("no node {node}"))
                } else {
                    self.store
                        .set_node_state(node, NodeState::Draining, None)
                        .map_err(db_error)
                        .map(|()| {
                            let actions = self.sched.drain(now, node);
                            self.emit(Change::Node {
                                id: node,
                                state: NodeState::Draining,
                            });
                            self.execute(now, actions);
                        })
                };
                let _ = reply.send(r);
            }
            Command::Remove(node, reply) => {
                let r = self.sched.remove_node(node).and_then(|()| {
                    self.store.remove_node(node, now).map_err(db_error)?;
                    if let Some(agent) = self.agents.remove(&node) {
                        let _ = agent.tx.send(AgentCmd::Stop);
                    }
                    Ok(())
                });
                let _ = reply.send(r);
            }
            Command::Shutdown => {}
        }
    }

    pub(super) fn node_connected(
        &mut self,
        now: f64,
        addr: &str,
        local: bool,
        result: Result<(Box<dyn NodeLink>, NodeStatus), DriverError>,
    ) -> Result<NodeId, String> {
        let (link, status) = result.map_err(|e| e.to_string())?;
        let local = local
            && !self
                .store
                .nodes()
                .map_err(db_error)?
                .iter()
                .any(|n| n.spec.local);
        let spec = NodeSpec {
            name: addr.to_string(),
            board: status.board.clone(),
            cores: status.cores,
            memory_mb: status.memory_mb,
            gpu: status.gpu,
            local,
        };
        let id = self
            .store
            .add_node(addr, &spec, &status.isa, now)
            .map_err(|e| e.to_string())?;
        if local {
            self.set_local_board(&spec.board);
        }
        self.reported.insert(id);
        let actions = self.sched.add_node(now, id, spec);
        self.spawn_agent(id, addr.to_string(), Some(link));
        self.emit(Change::Node {
            id,
            state: NodeState::Up,
        });
        self.execute(now, actions);
        Ok(id)
    }

    pub(super) fn spawn_agent(
        &mut self,
        node: NodeId,
        addr: String,
        link: Option<Box<dyn NodeLink>>,
    ) {
        let (tx, rx) = mpsc::channel();
        let engine = self.tx.clone();
        let connector = self.connector.clone();
        let (lease, heartbeat) = (self.config.lease, self.config.heartbeat);
        let a = addr.clone();
        let thread = std::thread::Builder::new()
            .name(format!("node-{node}"))
            .spawn(move || agent(node, a, connector, link, rx, engine, lease, heartbeat))
            .expect("spawning a node agent");
        self.agents.insert(
            node,
            Agent {
                addr,
                tx,
                thread: Some(thread),
            },
        );
    }

    pub(super) fn submit(&mut self, now: f64, body: &[u8]) -> Result<Submitted, SubmitError> {
        let sub = parse_submission(body, &self.catalogue, self.config.default_policy)
            .map_err(SubmitError::Invalid)?;
        let (batch, ids) = match self.store.insert_batch(sub.policy, &sub.tasks, now) {
            Ok(x) => x,
            Err(StoreError::DuplicateName { name, existing }) => {
                let i = sub.tasks.iter().position(|t| t.name == name).unwrap_or(0);
                let path = if sub.tasks.len() == 1 {
                    "name".to_string()
                } else {
                    format!("tasks[{i}].name")
                };
                return Err(SubmitError::Conflict(vec![FieldError {
                    path,
                    message: format!("name {name} is already used by task {existing}"),
                }]));
            }
            Err(e) => return Err(SubmitError::Internal(e.to_string())),
        };
        let t0 = Instant::now();
        let actions = self.sched.submit(
            now,
            ids.iter().copied().zip(sub.tasks.iter().cloned()).collect(),
            sub.policy,
        );
        let placement_ms = t0.elapsed().as_secs_f64() * 1e3;
        let _ = self.store.set_placement_ms(batch, placement_ms);
        let mut waiting = Vec::new();
        for (id, spec) in ids.iter().zip(&sub.tasks) {
            if let Some(reason) = self.sched.reason(*id) {
                let _ = self
                    .store
                    .set_task_state(*id, TaskState::Queued, Some(reason), now);
                waiting.push((spec.name.clone(), reason.to_string()));
            }
        }
        self.emit(Change::Batch { id: batch });
        self.execute(now, actions);
        Ok(Submitted {
            batch,
            tasks: ids,
            policy: sub.policy,
            placement_ms,
            waiting,
        })
    }

    pub(super) fn cancel(&mut self, now: f64, task: TaskId) -> Result<(), String> {
        let row = self
            .store
            .task(task)
            .map_err(db_error)?
            .ok_or_else(|| format!("no task {task}"))?;
        if row.state.is_final() {
            return Err(format!("task {task} is already {}", row.state.name()));
        }
        self.store.task_cancelled(task, now).map_err(db_error)?;
        self.unconfirmed.remove(&task);
        let actions = self.sched.cancel(now, task);
        for a in &actions {
            if let Action::Stop { node, .. } = a {
                if let (Some(remote), Some(agent)) = (&row.remote, self.agents.get(node)) {
                    let _ = agent.tx.send(AgentCmd::Cancel(remote.clone()));
                }
            }
        }
        self.emit_task(task);
        let rest = actions
            .into_iter()
            .filter(|a| !matches!(a, Action::Stop { .. }))
            .collect();
        self.execute(now, rest);
        Ok(())
    }
}
