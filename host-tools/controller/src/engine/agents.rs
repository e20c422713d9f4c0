//! The agent thread of each node: its control connection, the engine's
//! commands carried out on it, its events and status passed on, and its
//! lease.

use super::*;

/// A node's agent: owns its connection, runs the engine's commands, passes
/// on its events and status, reconnects, and declares it lost once it has
/// not answered for a lease.
#[allow(clippy::too_many_arguments)]
pub(super) fn agent(
    node: NodeId,
    addr: String,
    connector: Arc<dyn Connector>,
    mut link: Option<Box<dyn NodeLink>>,
    rx: Receiver<AgentCmd>,
    engine: Sender<Msg>,
    lease: Duration,
    heartbeat: Duration,
) {
    let send = |e: AgentEvent| engine.send(Msg::Agent(node, e)).is_ok();
    let mut last_ok = Instant::now();
    let mut last_status: Option<Instant> = None;
    let mut last_try = Instant::now() - heartbeat;
    let mut lost = false;
    loop {
        loop {
            let cmd = match rx.try_recv() {
                Ok(cmd) => cmd,
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => return,
            };
            if matches!(cmd, AgentCmd::Stop) {
                return;
            }
            let (events, broken) = match link.as_mut() {
                Some(l) => carry_out(cmd, l.as_mut()),
                None => (not_connected(cmd, &addr).into_iter().collect(), false),
            };
            for event in events {
                if !send(event) {
                    return;
                }
            }
            if broken {
                // Later commands fail at once; the lease decides below.
                link = None;
            }
        }
        if let Some(l) = link.as_mut() {
            let mut ok = true;
            match l.events(Duration::from_millis(50)) {
                Ok(events) => {
                    for e in events {
                        if !send(AgentEvent::Event(e)) {
                            return;
                        }
                    }
                }
                Err(_) => ok = false,
            }
            if ok && last_status.is_none_or(|t| t.elapsed() >= heartbeat) {
                match l.status() {
                    Ok(s) => {
                        last_status = Some(Instant::now());
                        if !send(AgentEvent::Status(s)) {
                            return;
                        }
                    }
                    Err(_) => ok = false,
                }
            }
            if ok {
                last_ok = Instant::now();
            } else {
                link = None;
            }
        } else {
            if last_try.elapsed() >= heartbeat {
                last_try = Instant::now();
                if let Ok(l) = connector.connect(&addr) {
                    link = Some(l);
                    last_ok = Instant::now();
                    last_status = None;
                    if lost {
                        lost = false;
                        if !send(AgentEvent::Back) {
                            return;
                        }
                    }
                    continue;
                }
            }
            if !lost && last_ok.elapsed() > lease {
                lost = true;
                if !send(AgentEvent::Lost(format!(
                    "{addr} has not answered for {:.1} s",
                    last_ok.elapsed().as_secs_f64()
                ))) {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Carries `cmd` out on a connected node: what it tells the engine, and
/// whether the node stopped answering (the connection is given up).
fn carry_out(cmd: AgentCmd, l: &mut dyn NodeLink) -> (Vec<AgentEvent>, bool) {
    let mut broken = false;
    let mut failed = |e: DriverError| {
        broken |= matches!(e, DriverError::Unreachable { .. });
        e.to_string()
    };
    let events = match cmd {
        AgentCmd::Stop => Vec::new(),
        AgentCmd::Start(req, epoch) => match l.start(&req) {
            Ok(remote) => {
                let standby = req
                    .standby
                    .as_deref()
                    .map(|to| l.standby(&remote, Some(to)));
                let mut events = vec![AgentEvent::Started {
                    task: req.task,
                    epoch,
                    remote,
                    resumed: req.checkpoint.as_ref().map(|c| c.progress),
                }];
                if let Some(Err(e)) = standby {
                    events.push(AgentEvent::StandbyFailed {
                        task: req.task,
                        error: failed(e),
                    });
                }
                events
            }
            Err(e) => vec![AgentEvent::StartFailed {
                task: req.task,
                epoch,
                given_up: e.is_final(),
                error: failed(e),
                resumed: req.checkpoint.is_some(),
            }],
        },
        AgentCmd::Standby { task, remote, to } => match l.standby(&remote, Some(&to)) {
            Ok(()) => Vec::new(),
            Err(e) => vec![AgentEvent::StandbyFailed {
                task,
                error: failed(e),
            }],
        },
        AgentCmd::Checkpoint {
            task,
            epoch,
            remote,
        } => vec![match l.checkpoint(&remote) {
            Ok(checkpoint) => AgentEvent::Checkpointed {
                task,
                epoch,
                checkpoint,
            },
            Err(e) => AgentEvent::CheckpointFailed {
                task,
                error: failed(e),
            },
        }],
        AgentCmd::Migrate {
            task,
            remote,
            to,
            to_addr,
        } => vec![match l.migrate(&remote, &to_addr) {
            Ok(moved) => AgentEvent::Migrated { task, to, moved },
            Err(e) => AgentEvent::MigrationFailed {
                task,
                to,
                error: failed(e),
            },
        }],
        AgentCmd::Cancel(remote) => {
            if let Err(e) = l.cancel(&remote) {
                failed(e);
            }
            Vec::new()
        }
    };
    (events, broken)
}

/// What the engine hears of `cmd` when the node is not connected.
fn not_connected(cmd: AgentCmd, addr: &str) -> Option<AgentEvent> {
    let error = format!("{addr} is not connected");
    match cmd {
        AgentCmd::Start(req, epoch) => Some(AgentEvent::StartFailed {
            task: req.task,
            epoch,
            error,
            resumed: false,
            given_up: false,
        }),
        AgentCmd::Standby { task, .. } => Some(AgentEvent::StandbyFailed { task, error }),
        AgentCmd::Migrate { task, to, .. } => Some(AgentEvent::MigrationFailed { task, to, error }),
        // A checkpoint is asked for again next round; a stale run is
        // stopped when its node is heard again.
        AgentCmd::Checkpoint { task, .. } => Some(AgentEvent::CheckpointFailed { task, error }),
        AgentCmd::Cancel(_) | AgentCmd::Stop => None,
    }
}
