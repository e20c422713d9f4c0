//! Real Tern nodes behind the node layer's traits, over the authenticated
//! control protocol (`tern-client`, `docs/protocol.md`).
//!
//! A connection learns the node's facts from its status (ISA, board,
//! cores, heap), then follows the node through one subscription to its
//! typed events on the same connection: a run's end is its `TaskFinished`
//! (verdict, and the seconds since its `TaskStarted`/`TaskArrived` there),
//! a standby's takeover its `FailedOver`; progress comes from the status the
//! engine reads every heartbeat. A connection that breaks is opened again
//! by the engine's agent; the connector remembers, per address, the last
//! event read, so the new subscription goes on after it (from the start if
//! the node rebooted). Runs start with `StartTask` under the controller's
//! tag (idempotent), robust ones get their standby with `SetStandby`,
//! checkpoints come by `Fetch`, and a run resumes elsewhere from one as a
//! `Migrate` transfer of that checkpoint rewritten at the next ownership
//! epoch under its new tag. A Wasm program's run first makes sure the node
//! holds its module (asked by identity, uploaded when missing; a refusal is
//! the start's typed failure) and passes the reference answer, so the node
//! verifies the result itself; migrations and standbys carry the module
//! from node to node on their own.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::ser::{Serialize, SerializeTuple, Serializer};
use tern_client::{describe_nack, parse_task_id, NodeClient, NodeError};
use tern_migration::{
    read_checkpoint, write_checkpoint, BulkData, BulkRegion, HeaderInfo, Limits, Mode, Reader,
    RegionKind, Snapshot,
};
use tern_protocol::{
    EventRecord, NackReason, NodeEvent as Event, Outgoing, Security, TaskRole, TaskStatus,
    TaskSummary, Transfer,
};

use super::wasm::WasmSet;
use super::{
    Checkpoint, Connector, DriverError, Moved, NodeEvent, NodeLink, NodeStatus, RemoteRun,
    RunState, StartRequest,
};
use crate::catalogue::Runner;

/// The checkpoint region in which a Tern node keeps a task's tag (the
/// kernel's `tasks::TAG_REGION`).
const TAG_REGION: &str = "tern.tag";

/// Opens a TCP connection to a node's control address within a timeout:
/// directly ([`direct`]), or from inside the network namespace the nodes
/// are on.
pub type Dial = Arc<dyn Fn(SocketAddr, Duration) -> io::Result<TcpStream> + Send + Sync>;

/// Connections from this process's own network.
pub fn direct() -> Dial {
    Arc::new(|addr, timeout| TcpStream::connect_timeout(&addr, timeout))
}

/// Connections from inside network namespace `name` (a lab's: the nodes
/// sit on its bridge), while the rest of the process stays where it is.
pub fn in_netns(name: String) -> Dial {
    Arc::new(move |addr, timeout| {
        tern_lab::netlab::connect_in(&name, addr, timeout)
            .map_err(|e| io::Error::other(e.to_string()))
    })
}

/// How long the driver waits for a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Connecting, and any one answer (status, start, kill, standby).
    pub answer: Duration,
    /// A live migration, from the request to the sender's report.
    pub migration: Duration,
    /// A checkpoint fetched from a node, or pushed to one to resume.
    pub transfer: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            answer: Duration::from_secs(3),
            migration: Duration::from_secs(180),
            transfer: Duration::from_secs(60),
        }
    }
}

/// Opens authenticated connections to Tern nodes with the cluster's key.
pub struct LiveConnector {
    security: Security,
    dial: Dial,
    timeouts: Timeouts,
    /// What was learned of each node, kept across its connections.
    memos: Arc<Mutex<HashMap<String, Memo>>>,
    /// The Wasm programs' modules.
    wasm: WasmSet,
}

impl LiveConnector {
    /// Connects with `security` through `dial`; runs no Wasm program until
    /// given their modules ([`LiveConnector::with_wasm`]).
    pub fn new(security: Security, dial: Dial, timeouts: Timeouts) -> Self {
        Self {
            security,
            dial,
            timeouts,
            memos: Arc::new(Mutex::new(HashMap::new())),
            wasm: WasmSet::default(),
        }
    }

    /// Runs the Wasm programs of `wasm` on the nodes.
    pub fn with_wasm(mut self, wasm: WasmSet) -> Self {
        self.wasm = wasm;
        self
    }
}

/// The typed error of a node's failure.
fn driver_error(addr: &str, e: NodeError) -> DriverError {
    let addr = addr.to_string();
    match e {
        NodeError::WrongKey { .. } | NodeError::HandshakeRefused { .. } => {
            DriverError::WrongKey { addr }
        }
        NodeError::Resolve { .. }
        | NodeError::Connect { .. }
        | NodeError::Timeout { .. }
        | NodeError::Closed { .. }
        | NodeError::Io { .. } => DriverError::Unreachable {
            addr,
            detail: e.to_string(),
        },
        NodeError::Refused { reason, .. } => DriverError::Refused {
            addr,
            detail: describe_nack(&reason),
        },
        other => DriverError::Refused {
            addr,
            detail: other.to_string(),
        },
    }
}

impl Connector for LiveConnector {
    fn connect(&self, addr: &str) -> Result<Box<dyn NodeLink>, DriverError> {
        let unreachable = |detail: String| DriverError::Unreachable {
            addr: addr.into(),
            detail,
        };
        let target = addr
            .to_socket_addrs()
            .map_err(|e| unreachable(format!("cannot resolve it: {e}")))?
            .next()
            .ok_or_else(|| unreachable("it resolves to no address".into()))?;
        let sock =
            (self.dial)(target, self.timeouts.answer).map_err(|e| unreachable(e.to_string()))?;
        let mut client =
            NodeClient::handshake(addr, sock, self.security.clone(), self.timeouts.answer)
                .map_err(|e| driver_error(addr, e))?;
        let status = client.status().map_err(|e| driver_error(addr, e))?;
        let mut memo = self
            .memos
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(addr)
            .unwrap_or_default();
        memo.meet(status.node_id, status.uptime_ms, status.next_event);
        client
            .subscribe(memo.seq)
            .map_err(|e| driver_error(addr, e))?;
        Ok(Box::new(LiveLink {
            addr: addr.into(),
            client,
            memo,
            memos: self.memos.clone(),
            timeouts: self.timeouts,
            wasm: self.wasm.clone(),
        }))
    }
}

/// What the driver learned of one node, kept across its connections.
#[derive(Debug, Default, Clone, PartialEq)]
struct Memo {
    /// The node's id (a different one at the address: another node).
    node_id: u64,
    /// Its uptime when last seen (less now: it rebooted).
    uptime_ms: u64,
    /// Sequence number of the last event read.
    seq: u64,
    /// When each tagged run started or arrived there (node milliseconds).
    since: HashMap<String, u64>,
    /// Runs that ended there: verified, verdict, seconds.
    ended: HashMap<String, (bool, String, f64)>,
    /// The progress last passed on, per tag.
    progress: HashMap<String, f64>,
    /// Statuses that listed a run finished whose end event was not read
    /// yet, per tag.
    unheard: HashMap<String, u32>,
    /// Events to pass on with the next read of the stream.
    pending: Vec<NodeEvent>,
}

/// Progress changes smaller than this are not passed on.
const PROGRESS_STEP: f64 = 0.002;

impl Memo {
    /// The node answered as `node_id` with this uptime and next event:
    /// what was learned of it holds unless it is another node or it
    /// rebooted (its event log starts again).
    fn meet(&mut self, node_id: u64, uptime_ms: u64, next_event: u64) {
        if node_id != self.node_id || uptime_ms < self.uptime_ms || next_event <= self.seq {
            *self = Self::default();
        }
        self.node_id = node_id;
        self.uptime_ms = uptime_ms;
    }

    /// The event the engine needs of `record`, if any.
    fn on_record(&mut self, record: &EventRecord) -> Option<NodeEvent> {
        self.seq = self.seq.max(record.seq);
        let at = record.at_ms;
        match &record.event {
            Event::TaskStarted { task, .. } | Event::TaskArrived { task, .. } => {
                self.since.insert(task.tag.clone()?, at);
                None
            }
            Event::FailedOver { task, .. } => {
                let tag = task.tag.clone()?;
                self.since.insert(tag.clone(), at);
                Some(NodeEvent::FailedOver {
                    tag,
                    remote: remote(task.task_id),
                })
            }
            Event::TaskFinished {
                task,
                verified,
                verdict,
                ..
            } => {
                let tag = task.tag.clone()?;
                // Unknown (0) when the node no longer had the start's event.
                let exec_s = self
                    .since
                    .remove(&tag)
                    .map_or(0.0, |s| at.saturating_sub(s) as f64 / 1e3);
                self.ended
                    .insert(tag.clone(), (*verified, verdict.clone(), exec_s));
                Some(NodeEvent::Finished {
                    tag,
                    ok: *verified,
                    output: verdict.clone(),
                    exec_s,
                })
            }
            _ => None,
        }
    }

    /// The node's tagged runs as the engine sees them at `uptime_ms`;
    /// progress changes are queued as events. Forgets the tags the node no
    /// longer lists.
    fn runs(&mut self, tasks: &[TaskSummary], uptime_ms: u64) -> Vec<RemoteRun> {
        let mut runs = Vec::new();
        for t in tasks {
            let Some(tag) = t.tag.clone() else { continue };
            let progress = if t.progress_total == 0 {
                1.0
            } else {
                t.progress as f64 / t.progress_total as f64
            };
            let state = match (t.role, t.status) {
                (TaskRole::Standby, _) | (_, TaskStatus::Replica) => RunState::Standby,
                (TaskRole::Owner, TaskStatus::Finished { verified }) => {
                    match self.ended.get(&tag).cloned() {
                        Some((ok, output, exec_s)) => RunState::Finished { ok, output, exec_s },
                        None => {
                            // The end event may be on its way (the status
                            // was read between the event and the stream's
                            // next read): the list's word is taken only
                            // from the second status on, when it was missed.
                            let seen = self.unheard.entry(tag.clone()).or_default();
                            *seen += 1;
                            if *seen < 2 {
                                RunState::Running
                            } else {
                                let said = if verified { "verified" } else { "failed" };
                                // At most this long: it ended before now.
                                let exec_s = self
                                    .since
                                    .get(&tag)
                                    .map_or(0.0, |s| uptime_ms.saturating_sub(*s) as f64 / 1e3);
                                RunState::Finished {
                                    ok: verified,
                                    output: format!("{said} (from the node's task list)"),
                                    exec_s,
                                }
                            }
                        }
                    }
                }
                (TaskRole::Owner, _) => {
                    let last = self.progress.get(&tag).copied().unwrap_or(-1.0);
                    if (progress - last).abs() >= PROGRESS_STEP {
                        self.progress.insert(tag.clone(), progress);
                        self.pending.push(NodeEvent::Progress {
                            tag: tag.clone(),
                            progress,
                        });
                    }
                    RunState::Running
                }
            };
            runs.push(RemoteRun {
                remote: remote(t.task_id),
                tag,
                progress,
                state,
            });
        }
        let listed: std::collections::HashSet<&str> = runs.iter().map(|r| r.tag.as_str()).collect();
        self.ended.retain(|t, _| listed.contains(t.as_str()));
        self.progress.retain(|t, _| listed.contains(t.as_str()));
        self.unheard.retain(|t, _| listed.contains(t.as_str()));
        runs
    }
}

/// A task's handle: its global id as `list` shows it.
fn remote(task_id: u64) -> String {
    format!("{task_id:#x}")
}

/// An open connection to one node, subscribed to its events.
pub struct LiveLink {
    addr: String,
    client: NodeClient,
    memo: Memo,
    memos: Arc<Mutex<HashMap<String, Memo>>>,
    timeouts: Timeouts,
    wasm: WasmSet,
}

impl Drop for LiveLink {
    fn drop(&mut self) {
        // The next connection to the node goes on from here.
        let memo = std::mem::take(&mut self.memo);
        self.memos
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.addr.clone(), memo);
    }
}

impl LiveLink {
    fn error(&self, e: NodeError) -> DriverError {
        driver_error(&self.addr, e)
    }

    fn task_id(&self, remote: &str) -> Result<u64, DriverError> {
        parse_task_id(remote).map_err(|detail| DriverError::Refused {
            addr: self.addr.clone(),
            detail,
        })
    }

    /// Makes sure the node holds `program`'s module; returns the identity
    /// it has there. Asked first when a node told it already (a module is
    /// sent only to a node that lacks it).
    fn ensure_module(&mut self, program: &str, bytes: &[u8]) -> Result<[u8; 32], DriverError> {
        if let Some(id) = self.wasm.id(program) {
            if self.client.has_module(&id).map_err(|e| self.error(e))? {
                return Ok(id);
            }
        }
        match self.client.put_module(bytes) {
            Ok(id) => {
                self.wasm.learn(program, id);
                Ok(id)
            }
            Err(NodeError::ModuleRejected { reason, detail, .. }) => {
                Err(DriverError::ModuleRefused {
                    addr: self.addr.clone(),
                    program: program.into(),
                    reason: format!("{reason:?}"),
                    detail,
                })
            }
            Err(e) => Err(self.error(e)),
        }
    }

    /// Resumes a run from `checkpoint` there: the checkpoint rewritten at
    /// the next ownership epoch under the run's new tag, sent as a
    /// migration (the task keeps its identity).
    fn resume(
        &mut self,
        request: &StartRequest,
        checkpoint: &Checkpoint,
    ) -> Result<String, DriverError> {
        let task_id = self.task_id(&checkpoint.remote)?;
        let refused = |detail: String| DriverError::Refused {
            addr: self.addr.clone(),
            detail,
        };
        let bytes = restamp(&checkpoint.bytes, &request.tag)
            .map_err(|e| refused(format!("the checkpoint cannot be resumed: {e}")))?;
        let outgoing = Outgoing::from_file(Transfer::Migrate, task_id, &bytes)
            .map_err(|e| refused(format!("the checkpoint cannot be sent: {e}")))?;
        self.client
            .push(outgoing, self.timeouts.transfer)
            .map_err(|e| self.error(e))?;
        Ok(remote(task_id))
    }
}

impl NodeLink for LiveLink {
    fn status(&mut self) -> Result<NodeStatus, DriverError> {
        let s = self.client.status().map_err(|e| self.error(e))?;
        self.memo.uptime_ms = s.uptime_ms;
        let runs = self.memo.runs(&s.tasks, s.uptime_ms);
        Ok(NodeStatus {
            isa: s.isa,
            board: s.board,
            cores: f64::from(s.cores),
            // Tasks and replicas live in the kernel's heap.
            memory_mb: s.heap_bytes >> 20,
            memory_free_mb: s.heap_free_bytes >> 20,
            gpu: false,
            runs,
        })
    }

    fn start(&mut self, request: &StartRequest) -> Result<String, DriverError> {
        let args = match &request.runner {
            Runner::Npb { workload, class } => {
                let mut args = vec![workload.clone(), class.clone()];
                args.extend(request.args.iter().cloned());
                args
            }
            Runner::Wasm { .. } => {
                let wasm = self.wasm.clone();
                let run = wasm
                    .run(&request.program, &request.args)
                    .map_err(|detail| DriverError::Unsupported {
                        addr: self.addr.clone(),
                        detail,
                    })?;
                // A resumed checkpoint needs its module there as well.
                let id = self.ensure_module(&request.program, &run.module.bytes)?;
                run.start_args(&id, &request.program)
            }
        };
        if let Some(checkpoint) = &request.checkpoint {
            return self.resume(request, checkpoint);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let task_id = self
            .client
            .start_tagged(&args, Some(&request.tag))
            .map_err(|e| self.error(e))?;
        Ok(remote(task_id))
    }

    fn standby(&mut self, remote: &str, to: Option<&str>) -> Result<(), DriverError> {
        let task_id = self.task_id(remote)?;
        self.client
            .set_standby(task_id, to)
            .map_err(|e| self.error(e))
    }

    fn checkpoint(&mut self, remote: &str) -> Result<Checkpoint, DriverError> {
        let task_id = self.task_id(remote)?;
        let bytes = self.client.fetch(task_id).map_err(|e| self.error(e))?;
        // The client checked the whole checkpoint: its header is sound.
        let header = Reader::open(bytes.as_slice(), &Limits::default())
            .map(|r| r.header().clone())
            .map_err(|e| DriverError::Refused {
                addr: self.addr.clone(),
                detail: format!("the fetched checkpoint: {e}"),
            })?;
        let progress = if header.progress_total == 0 {
            1.0
        } else {
            header.progress as f64 / header.progress_total as f64
        };
        Ok(Checkpoint {
            remote: remote.into(),
            bytes,
            progress,
        })
    }

    fn migrate(&mut self, remote: &str, to: &str) -> Result<Moved, DriverError> {
        let task_id = self.task_id(remote)?;
        let report = self
            .client
            .migrate(task_id, to, self.timeouts.migration)
            .map_err(|e| self.error(e))?;
        Ok(Moved {
            remote: self::remote(report.task_id),
            total_ms: report.total_ms as i64,
            downtime_ms: report.downtime_ms as i64,
        })
    }

    fn cancel(&mut self, remote: &str) -> Result<(), DriverError> {
        let task_id = self.task_id(remote)?;
        match self.client.kill_task(task_id) {
            // Gone already: what was asked.
            Ok(())
            | Err(NodeError::Refused {
                reason: NackReason::UnknownTask,
                ..
            }) => Ok(()),
            Err(e) => Err(self.error(e)),
        }
    }

    fn events(&mut self, wait: Duration) -> Result<Vec<NodeEvent>, DriverError> {
        let mut out = std::mem::take(&mut self.memo.pending);
        let mut wait = if out.is_empty() { wait } else { Duration::ZERO };
        loop {
            match self.client.next_event(wait) {
                Ok(record) => {
                    out.extend(self.memo.on_record(&record));
                    // Then only what has arrived already.
                    wait = Duration::ZERO;
                }
                Err(NodeError::Timeout { .. }) => return Ok(out),
                // What was read goes on; the broken stream errs again next time.
                Err(_) if !out.is_empty() => return Ok(out),
                Err(e) => return Err(self.error(e)),
            }
        }
    }
}

/// A typed region's bytes as they are: postcard writes a tuple's elements
/// one after another and a `u8` as itself, so this serializes to exactly
/// the bytes (a typed region is postcard bytes the restamp need not decode).
struct Raw<'a>(&'a [u8]);

impl Serialize for Raw<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(self.0.len())?;
        for b in self.0 {
            t.serialize_element(b)?;
        }
        t.end()
    }
}

/// A region of a checkpoint being rewritten, owned while the writer borrows it.
enum Part {
    Typed(Vec<u8>),
    U8(BulkRegion<u8>),
    U32(BulkRegion<u32>),
    I32(BulkRegion<i32>),
    U64(BulkRegion<u64>),
    I64(BulkRegion<i64>),
    F64(BulkRegion<f64>),
}

/// The full checkpoint `bytes` rewritten at the next ownership epoch with
/// `tag` as the task's tag: the state of a task its controller resumes on
/// another node after its own died (which must not take a resumed copy for
/// the run it knew, and whose results are recorded under the new tag).
/// Every other field and region stays as it was, so the same input gives
/// the same bytes (a resume asked twice is one transfer).
pub fn restamp(bytes: &[u8], tag: &str) -> Result<Vec<u8>, String> {
    let restored = read_checkpoint(bytes, &Limits::default()).map_err(|e| e.to_string())?;
    let h = &restored.header;
    let info = HeaderInfo {
        task_kind: h.task_kind.clone(),
        task_version: h.task_version,
        progress: h.progress,
        progress_total: h.progress_total,
        epoch: h.epoch + 1,
        created_unix_ms: h.created_unix_ms,
        isa: h.isa.clone(),
        board: h.board.clone(),
    };
    let mut parts = Vec::new();
    for r in restored.regions {
        if r.name == TAG_REGION {
            continue;
        }
        let part = match (r.kind, r.data) {
            (RegionKind::Typed, BulkData::U8(b)) => Part::Typed(b),
            (RegionKind::Typed, _) => return Err(format!("typed region {} is not bytes", r.name)),
            (RegionKind::Bulk, BulkData::U8(v)) => Part::U8(BulkRegion::restored(v)),
            (RegionKind::Bulk, BulkData::U32(v)) => Part::U32(BulkRegion::restored(v)),
            (RegionKind::Bulk, BulkData::I32(v)) => Part::I32(BulkRegion::restored(v)),
            (RegionKind::Bulk, BulkData::U64(v)) => Part::U64(BulkRegion::restored(v)),
            (RegionKind::Bulk, BulkData::I64(v)) => Part::I64(BulkRegion::restored(v)),
            (RegionKind::Bulk, BulkData::F64(v)) => Part::F64(BulkRegion::restored(v)),
        };
        parts.push((r.name, part));
    }
    let mut snap = Snapshot::new();
    for (name, part) in &parts {
        match part {
            Part::Typed(b) => snap.typed(name, &Raw(b)).map_err(|e| e.to_string())?,
            Part::U8(r) => snap.bulk(name, r),
            Part::U32(r) => snap.bulk(name, r),
            Part::I32(r) => snap.bulk(name, r),
            Part::U64(r) => snap.bulk(name, r),
            Part::I64(r) => snap.bulk(name, r),
            Part::F64(r) => snap.bulk(name, r),
        }
    }
    snap.typed(TAG_REGION, &tag).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    write_checkpoint(&mut out, &info, &snap, Mode::Full).map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_protocol::TaskRef;

    fn checkpoint(tag: &str) -> Vec<u8> {
        let ints = BulkRegion::from_vec((0..20_000u64).collect());
        let reals = BulkRegion::from_vec(vec![0.5f64, -1.25, 3.0]);
        let mut snap = Snapshot::new();
        snap.typed("state", &(7u32, String::from("seed"), vec![1u8, 2, 3]))
            .unwrap();
        snap.bulk("ints", &ints);
        snap.bulk("reals", &reals);
        snap.typed(TAG_REGION, &tag).unwrap();
        let info = HeaderInfo {
            task_kind: "npb-cg".into(),
            task_version: 1,
            progress: 3,
            progress_total: 15,
            epoch: 4,
            created_unix_ms: 0,
            isa: "x86_64".into(),
            board: "pc".into(),
        };
        let mut out = Vec::new();
        write_checkpoint(&mut out, &info, &snap, Mode::Full).unwrap();
        out
    }

    #[test]
    fn a_restamped_checkpoint_has_the_next_epoch_the_new_tag_and_the_same_state() {
        let old = checkpoint("ab.t3e1");
        let new = restamp(&old, "ab.t3e2").unwrap();
        assert_eq!(new, restamp(&old, "ab.t3e2").unwrap(), "deterministic");
        let (a, b) = (
            read_checkpoint(old.as_slice(), &Limits::default()).unwrap(),
            read_checkpoint(new.as_slice(), &Limits::default()).unwrap(),
        );
        assert_eq!(b.header.epoch, a.header.epoch + 1);
        assert_eq!(
            (b.header.progress, b.header.task_kind.as_str()),
            (3, "npb-cg")
        );
        assert_eq!(b.typed::<String>(TAG_REGION).unwrap(), "ab.t3e2");
        assert_eq!(
            b.typed::<(u32, String, Vec<u8>)>("state").unwrap(),
            (7, "seed".into(), vec![1, 2, 3])
        );
        let others = |r: &tern_migration::Restored| {
            r.regions
                .iter()
                .filter(|x| x.name != TAG_REGION)
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(others(&a), others(&b));
        // It is sent as it is: the transfer layer accepts it.
        assert!(Outgoing::from_file(Transfer::Migrate, 9, &new).is_ok());
        assert!(restamp(b"not a checkpoint", "x").is_err());
    }

    fn record(seq: u64, at_ms: u64, event: Event) -> EventRecord {
        EventRecord { seq, at_ms, event }
    }

    fn task(tag: Option<&str>) -> TaskRef {
        TaskRef {
            task_id: 0x5254_007e_0002_0001,
            local_id: 1,
            name: "cg S".into(),
            tag: tag.map(String::from),
        }
    }

    #[test]
    fn events_become_ends_with_their_run_time_and_failovers() {
        let mut m = Memo::default();
        let started = Event::TaskStarted {
            task: task(Some("ab.t1e1")),
            epoch: 1,
            requested_by: None,
        };
        assert_eq!(m.on_record(&record(4, 1_000, started)), None);
        let untagged = Event::TaskStarted {
            task: task(None),
            epoch: 1,
            requested_by: None,
        };
        assert_eq!(m.on_record(&record(5, 1_100, untagged)), None);
        let finished = Event::TaskFinished {
            task: task(Some("ab.t1e1")),
            epoch: 1,
            verified: true,
            verdict: "VERIFICATION SUCCESSFUL".into(),
        };
        assert_eq!(
            m.on_record(&record(6, 3_500, finished)),
            Some(NodeEvent::Finished {
                tag: "ab.t1e1".into(),
                ok: true,
                output: "VERIFICATION SUCCESSFUL".into(),
                exec_s: 2.5,
            })
        );
        let failed_over = Event::FailedOver {
            task: task(Some("ab.t2e1")),
            owner: "10.0.2.2:4470".into(),
            silent_ms: 3_100,
            epoch: 2,
            progress: 1,
            progress_total: 2,
        };
        assert_eq!(
            m.on_record(&record(7, 4_000, failed_over)),
            Some(NodeEvent::FailedOver {
                tag: "ab.t2e1".into(),
                remote: "0x5254007e00020001".into(),
            })
        );
        assert_eq!(m.seq, 7);
        // The same node, later: the subscription goes on after event 7.
        m.meet(0, 5_000, 8);
        assert_eq!(m.seq, 7);
        // Rebooted: its log starts again.
        m.meet(0, 100, 3);
        assert_eq!((m.seq, m.uptime_ms, m.ended.len()), (0, 100, 0));
    }

    #[test]
    fn listed_runs_map_to_states_and_progress_changes_become_events() {
        let mut m = Memo::default();
        let summary = |tag: Option<&str>, role, status, progress| TaskSummary {
            task_id: 1,
            kind: "npb-cg".into(),
            progress,
            progress_total: 10,
            owner: 1,
            epoch: 1,
            role,
            status,
            last_sync_ms_ago: None,
            policy: None,
            tag: tag.map(String::from),
        };
        let tasks = [
            summary(Some("a"), TaskRole::Owner, TaskStatus::Running, 4),
            summary(
                Some("b"),
                TaskRole::Owner,
                TaskStatus::Finished { verified: true },
                10,
            ),
            summary(Some("c"), TaskRole::Standby, TaskStatus::Replica, 2),
            summary(None, TaskRole::Owner, TaskStatus::Running, 1),
        ];
        m.since.insert("b".into(), 1_000);
        let runs = m.runs(&tasks, 3_000);
        assert_eq!(runs.len(), 3, "untagged tasks are not the controller's");
        assert_eq!(
            (runs[0].state.clone(), runs[0].progress),
            (RunState::Running, 0.4)
        );
        assert_eq!(
            runs[1].state,
            RunState::Running,
            "its end event may still come"
        );
        assert_eq!(runs[2].state, RunState::Standby);
        assert_eq!(
            std::mem::take(&mut m.pending),
            [NodeEvent::Progress {
                tag: "a".into(),
                progress: 0.4
            }]
        );
        let runs = m.runs(&tasks, 4_000);
        assert!(m.pending.is_empty(), "no change, no event");
        assert!(
            matches!(&runs[1].state, RunState::Finished { ok: true, output, exec_s } if output.contains("task list") && *exec_s == 3.0),
            "the event was missed: the list's word, ended at most 3 s after its start"
        );
    }
}
