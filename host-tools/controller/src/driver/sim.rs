//! A simulated cluster behind the node layer's traits: nodes that run
//! programs in wall-clock time, each run lasting a measured time of its
//! program on the node's board ([`TimingTable`]) divided by a speed-up
//! factor, sharing the node's cores among its runs. It answers status,
//! start, migrate and cancel like a node would, refuses a wrong key, stops
//! answering when killed (its robust runs fail over to their standby at
//! their last sync), and counts the starts of every task so that tests can
//! check that none ran twice.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::{
    Connector, DriverError, Moved, NodeEvent, NodeLink, NodeStatus, RemoteRun, RunState,
    StartRequest,
};
use crate::catalogue::Catalogue;
use crate::model::TaskId;
use crate::timings::TimingTable;

/// Progress a standby replica has: its owner's progress at the last sync,
/// taken every tenth of the work.
const SYNC_STEP: f64 = 0.1;

#[derive(Debug, Clone)]
struct Run {
    remote: String,
    tag: String,
    /// Share of the work left, 1 to 0.
    left: f64,
    /// Wall seconds it takes alone on a core here.
    alone: f64,
    started: Instant,
    finished: bool,
    standby: Option<String>,
    timing_key: String,
}

#[derive(Debug)]
struct Node {
    board: String,
    isa: String,
    cores: f64,
    memory_mb: u64,
    key: String,
    alive: bool,
    runs: Vec<Run>,
    events: Vec<NodeEvent>,
    last: Instant,
}

struct World {
    nodes: BTreeMap<String, Node>,
    catalogue: Catalogue,
    timings: TimingTable,
    speed: f64,
    rng: StdRng,
    next_remote: u64,
    starts: HashMap<TaskId, u32>,
    migration: Duration,
}

impl World {
    fn advance(&mut self, now: Instant) {
        for node in self.nodes.values_mut() {
            let dt = now.saturating_duration_since(node.last).as_secs_f64();
            node.last = now;
            if !node.alive {
                continue;
            }
            let running = node.runs.iter().filter(|r| !r.finished).count();
            let rate = if running == 0 {
                1.0
            } else {
                (node.cores / running as f64).min(1.0)
            };
            for run in node.runs.iter_mut().filter(|r| !r.finished) {
                run.left -= dt * rate / run.alone;
                if run.left <= 0.0 {
                    run.left = 0.0;
                    run.finished = true;
                    node.events.push(NodeEvent::Finished {
                        tag: run.tag.clone(),
                        ok: true,
                        output: "VERIFICATION SUCCESSFUL".into(),
                        exec_s: now.duration_since(run.started).as_secs_f64(),
                    });
                }
            }
        }
    }

    /// Wall seconds `timing_key` takes alone on `board`: one measured sample over the speed-up.
    fn duration(&mut self, timing_key: &str, board: &str) -> Option<f64> {
        let samples = self.timings.samples(timing_key, board)?;
        let s = samples[self.rng.random_range(0..samples.len())];
        Some(s / self.speed)
    }

    fn node(&mut self, addr: &str) -> Result<&mut Node, DriverError> {
        match self.nodes.get_mut(addr) {
            Some(n) if n.alive => Ok(n),
            _ => Err(DriverError::Unreachable {
                addr: addr.into(),
                detail: "connection refused (simulated node absent or dead)".into(),
            }),
        }
    }
}

/// A simulated cluster (cheap to clone: the clones share it).
#[derive(Clone)]
pub struct SimCluster {
    world: Arc<Mutex<World>>,
}

impl SimCluster {
    /// A cluster whose programs run `speed` times faster than `timings` measured.
    pub fn new(catalogue: Catalogue, timings: TimingTable, speed: f64, seed: u64) -> Self {
        Self {
            world: Arc::new(Mutex::new(World {
                nodes: BTreeMap::new(),
                catalogue,
                timings,
                speed: speed.max(1e-6),
                rng: StdRng::seed_from_u64(seed),
                next_remote: 1,
                starts: HashMap::new(),
                migration: Duration::from_secs_f64(1.0 / speed.max(1e-6)),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, World> {
        // A panicking test thread must not wedge the others.
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a node at `addr` that accepts `key`.
    pub fn add_node(
        &self,
        addr: &str,
        board: &str,
        isa: &str,
        cores: f64,
        memory_mb: u64,
        key: &str,
    ) {
        self.lock().nodes.insert(
            addr.into(),
            Node {
                board: board.into(),
                isa: isa.into(),
                cores,
                memory_mb,
                key: key.into(),
                alive: true,
                runs: Vec::new(),
                events: Vec::new(),
                last: Instant::now(),
            },
        );
    }

    /// Kills a node: it stops answering and its runs are lost, except
    /// those with a standby, which resume there from their last sync.
    pub fn kill(&self, addr: &str) {
        let mut w = self.lock();
        w.advance(Instant::now());
        let Some(node) = w.nodes.get_mut(addr) else {
            return;
        };
        node.alive = false;
        let runs = std::mem::take(&mut node.runs);
        for run in runs.into_iter().filter(|r| !r.finished) {
            let Some(standby) = run.standby.clone() else {
                continue;
            };
            let board = match w.nodes.get(&standby) {
                Some(n) if n.alive => n.board.clone(),
                _ => continue,
            };
            let Some(alone) = w.duration(&run.timing_key, &board) else {
                continue;
            };
            let left = ((run.left / SYNC_STEP).ceil() * SYNC_STEP).min(1.0);
            let node = w.nodes.get_mut(&standby).expect("checked");
            node.events.push(NodeEvent::FailedOver {
                tag: run.tag.clone(),
                remote: run.remote.clone(),
            });
            node.runs.push(Run {
                left,
                alone,
                started: Instant::now(),
                standby: None,
                ..run
            });
        }
    }

    /// Brings a killed node back, empty.
    pub fn revive(&self, addr: &str) {
        let mut w = self.lock();
        if let Some(n) = w.nodes.get_mut(addr) {
            n.alive = true;
            n.last = Instant::now();
        }
    }

    /// How many runs of `task` were started, in all.
    pub fn starts(&self, task: TaskId) -> u32 {
        self.lock().starts.get(&task).copied().unwrap_or(0)
    }

    /// A connector that presents `key`.
    pub fn connector(&self, key: &str) -> SimConnector {
        SimConnector {
            cluster: self.clone(),
            key: key.into(),
        }
    }
}

/// Connects to the simulated nodes.
pub struct SimConnector {
    cluster: SimCluster,
    key: String,
}

impl Connector for SimConnector {
    fn connect(&self, addr: &str) -> Result<Box<dyn NodeLink>, DriverError> {
        let mut w = self.cluster.lock();
        let node = w.node(addr)?;
        if node.key != self.key {
            return Err(DriverError::WrongKey { addr: addr.into() });
        }
        Ok(Box::new(SimLink {
            cluster: self.cluster.clone(),
            addr: addr.into(),
        }))
    }
}

/// A connection to one simulated node.
pub struct SimLink {
    cluster: SimCluster,
    addr: String,
}

impl NodeLink for SimLink {
    fn status(&mut self) -> Result<NodeStatus, DriverError> {
        let mut w = self.cluster.lock();
        w.advance(Instant::now());
        let node = w.node(&self.addr)?;
        Ok(NodeStatus {
            isa: node.isa.clone(),
            board: node.board.clone(),
            cores: node.cores,
            memory_mb: node.memory_mb,
            // Simulated runs claim no memory of their own.
            memory_free_mb: node.memory_mb,
            gpu: false,
            runs: node
                .runs
                .iter()
                .map(|r| RemoteRun {
                    remote: r.remote.clone(),
                    tag: r.tag.clone(),
                    progress: 1.0 - r.left,
                    state: if r.finished {
                        RunState::Finished {
                            ok: true,
                            output: "VERIFICATION SUCCESSFUL".into(),
                            exec_s: 0.0,
                        }
                    } else {
                        RunState::Running
                    },
                })
                .collect(),
        })
    }

    fn start(&mut self, request: &StartRequest) -> Result<String, DriverError> {
        let mut w = self.cluster.lock();
        w.advance(Instant::now());
        let board = w.node(&self.addr)?.board.clone();
        let key = w.catalogue.timing_key(&request.program).to_string();
        let alone = w
            .duration(&key, &board)
            .ok_or_else(|| DriverError::Refused {
                addr: self.addr.clone(),
                detail: format!("no measured time of {key} on {board}"),
            })?;
        let remote = format!("{:#x}", w.next_remote);
        w.next_remote += 1;
        *w.starts.entry(request.task).or_default() += 1;
        let node = w.node(&self.addr)?;
        node.runs.push(Run {
            remote: remote.clone(),
            tag: request.tag.clone(),
            left: 1.0,
            alone,
            started: Instant::now(),
            finished: false,
            standby: request.standby.clone(),
            timing_key: key,
        });
        Ok(remote)
    }

    fn migrate(&mut self, remote: &str, to: &str) -> Result<Moved, DriverError> {
        let pre = self.cluster.lock().migration;
        let t0 = Instant::now();
        // The pre-copy: the run goes on here meanwhile.
        std::thread::sleep(pre.mul_f64(0.9));
        let mut w = self.cluster.lock();
        w.advance(Instant::now());
        let refuse = |detail: String| DriverError::Refused {
            addr: self.addr.clone(),
            detail,
        };
        let board = match w.nodes.get(to) {
            Some(n) if n.alive => n.board.clone(),
            _ => return Err(refuse(format!("migration failed: {to} does not answer"))),
        };
        let node = w.node(&self.addr)?;
        let at = node
            .runs
            .iter()
            .position(|r| r.remote == remote && !r.finished)
            .ok_or_else(|| refuse(format!("no running task {remote}")))?;
        let run = node.runs.remove(at);
        let Some(alone) = w.duration(&run.timing_key, &board) else {
            w.node(&self.addr)?.runs.push(run);
            return Err(refuse(format!("{to} cannot run it")));
        };
        let target = w.nodes.get_mut(to).expect("checked");
        target.runs.push(Run {
            alone,
            started: Instant::now(),
            ..run
        });
        Ok(Moved {
            remote: remote.into(),
            total_ms: t0.elapsed().as_millis() as i64 + (pre.as_millis() as i64 / 10),
            downtime_ms: pre.as_millis() as i64 / 10,
        })
    }

    fn cancel(&mut self, remote: &str) -> Result<(), DriverError> {
        let mut w = self.cluster.lock();
        let node = w.node(&self.addr)?;
        node.runs.retain(|r| r.remote != remote);
        Ok(())
    }

    fn events(&mut self, wait: Duration) -> Result<Vec<NodeEvent>, DriverError> {
        let deadline = Instant::now() + wait;
        loop {
            {
                let mut w = self.cluster.lock();
                w.advance(Instant::now());
                let node = w.node(&self.addr)?;
                let mut events = std::mem::take(&mut node.events);
                if !events.is_empty() || Instant::now() >= deadline {
                    events.extend(node.runs.iter().filter(|r| !r.finished).map(|r| {
                        NodeEvent::Progress {
                            tag: r.tag.clone(),
                            progress: 1.0 - r.left,
                        }
                    }));
                    return Ok(events);
                }
            }
            std::thread::sleep(Duration::from_millis(10).min(wait));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::Runner;

    fn cluster() -> SimCluster {
        let timings = TimingTable::from_json(
            "t",
            r#"{"source":{"command":"c","measured_at":"t","commit":"x","boards":{"pc":"x86_64","virt":"aarch64"},"note":"n"},
                "programs":{"is-S":{"pc":[2.0],"virt":[1.0]}}}"#,
        )
        .unwrap();
        let c = SimCluster::new(Catalogue::npb(), timings, 20.0, 1);
        c.add_node("a:1", "pc", "x86_64", 1.0, 512, "k");
        c.add_node("b:1", "virt", "aarch64", 1.0, 1024, "k");
        c
    }

    fn request(task: TaskId, standby: Option<&str>) -> StartRequest {
        StartRequest {
            tag: crate::driver::tag(task, 1),
            task,
            program: "is-S".into(),
            runner: Runner::Npb {
                workload: "is".into(),
                class: "S".into(),
            },
            args: Vec::new(),
            standby: standby.map(String::from),
        }
    }

    #[test]
    fn runs_finish_after_their_measured_time_over_the_speed_up() {
        let c = cluster();
        assert!(matches!(
            c.connector("wrong").connect("a:1"),
            Err(DriverError::WrongKey { .. })
        ));
        assert!(matches!(
            c.connector("k").connect("nowhere:1"),
            Err(DriverError::Unreachable { .. })
        ));
        let mut a = c.connector("k").connect("a:1").unwrap();
        let t0 = Instant::now();
        a.start(&request(1, None)).unwrap();
        let mut done = None;
        while done.is_none() && t0.elapsed() < Duration::from_secs(5) {
            for e in a.events(Duration::from_millis(50)).unwrap() {
                if let NodeEvent::Finished { tag, exec_s, .. } = e {
                    done = Some((tag, exec_s));
                }
            }
        }
        let (tag, exec_s) = done.expect("finished");
        assert_eq!(tag, "t1e1");
        assert!(
            (0.09..0.5).contains(&exec_s),
            "2 s / 20 = 0.1 s, took {exec_s}"
        );
        assert_eq!(c.starts(1), 1);
    }

    #[test]
    fn migration_moves_the_run_and_a_killed_node_fails_over_robust_runs() {
        let c = cluster();
        let mut a = c.connector("k").connect("a:1").unwrap();
        let mut b = c.connector("k").connect("b:1").unwrap();
        let r = a.start(&request(1, None)).unwrap();
        let moved = a.migrate(&r, "b:1").unwrap();
        assert_eq!(moved.remote, r);
        assert!(a.status().unwrap().runs.is_empty());
        assert_eq!(b.status().unwrap().runs[0].tag, "t1e1");
        a.start(&request(2, Some("b:1"))).unwrap();
        a.start(&request(3, None)).unwrap();
        c.kill("a:1");
        assert!(matches!(a.status(), Err(DriverError::Unreachable { .. })));
        let events = b.events(Duration::from_millis(10)).unwrap();
        assert!(events
            .iter()
            .any(|e| matches!(e, NodeEvent::FailedOver { tag, .. } if tag == "t2e1")));
        let tags: Vec<String> = b
            .status()
            .unwrap()
            .runs
            .into_iter()
            .map(|r| r.tag)
            .collect();
        assert!(tags.contains(&"t2e1".to_string()) && !tags.contains(&"t3e1".to_string()));
    }
}
