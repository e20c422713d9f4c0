//! Sync sessions: the owner of a task keeps a standby replica of it fresh on
//! a peer (shell `sync <id> <address>[:port]`), and the standby takes the
//! task over when the owner falls silent (see `docs/sync.md`, "The kernel's
//! sync session").
//!
//! - Owner side ([`Session`]): one connection to the standby; a `Ping` every
//!   [`PING_NS`]; at the interval tern-sync's default policy (cost-rate)
//!   chooses, a checkpoint captured at a migration point (the task keeps
//!   running) goes out as a [`Transfer::Standby`] offer, which the standby
//!   deduplicates against its replica. Every acked sync gives the link
//!   monitor one bandwidth sample (bytes over seconds), every pong one
//!   round-trip time. A link silent for the lease is broken; the session
//!   reconnects until the peer answers again.
//! - Standby side ([`Lease`]): a replica received as `Standby` is leased;
//!   every message from its owner renews the lease and a graceful close of
//!   the owner's connection ends it. Past the lease the task resumes here
//!   from the replica at its epoch + 1, and a session back to the old owner
//!   starts (it keeps trying until the link returns).
//! - Failback: when both copies meet again, the one at the newest epoch
//!   wins; the other stops and keeps its state as the replica. A sync never
//!   replaces a newer replica (older epoch, or less progress on the same
//!   epoch, is refused as stale).

use alloc::format;
use alloc::rc::Rc;
use alloc::string::{String, ToString};
use core::fmt::Write;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpEndpoint};
use tern_migration::Limits;
use tern_protocol::{
    Connection, Event, Known, Message, NackReason, Offer, Outgoing, Replica, SendPhase, Transfer,
};
use tern_sync::monitor::{LinkMonitor, LinkState, MonitorConfig};
use tern_sync::policy::{Bounds, CostRate, LinkView, SyncPolicy, DEFAULT_POLICY};

use super::encoder::{ChunkEncoder, Tally};
use super::{
    seconds, Control, ControlError, HeldReplica, Link, CONTROL_PORT, LOW_WATER, SOCKET_BUFFER,
};
use crate::kernel::Kernel;
use crate::migrate::{capture, free_heap, resume, Resumed};
use crate::shell::{Command, CommandResult};
use crate::tasks::{parse_id, TaskState};

/// Interval between the owner's heartbeats.
pub const PING_NS: u64 = 500_000_000;

/// Default lease: a standby resumes the task after this long without word
/// from its owner; an owner counts its link down after as long without an answer.
pub const DEFAULT_LEASE_NS: u64 = 3_000_000_000;

/// A standby's lease on the replica of one task.
pub(super) struct Lease {
    /// Node id of the owner.
    owner: u64,
    /// Address of the owner (a failover syncs back to its control port).
    from: IpAddress,
    /// The server connection the last sync came on (its graceful close ends
    /// the lease; another session of the same owner has its own).
    conn: usize,
    /// Last message from the owner.
    heard_ns: u64,
}

/// Where a session's connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// TCP connection under way.
    Connecting,
    /// Handshake under way.
    Handshake,
    /// Authenticated: heartbeats and syncs.
    Ready,
    /// The link was lost: waiting to reconnect.
    Reconnect {
        /// When to try again.
        at_ns: u64,
    },
}

/// A sync in flight.
struct InFlight {
    outgoing: Outgoing,
    /// When its checkpoint was captured.
    captured_ns: u64,
    /// Bytes written to the connection before its offer.
    start_bytes: u64,
    /// Chunks the standby asked for.
    need: usize,
    /// The chunks sent, before and after compression.
    tally: Tally,
}

/// How a session ended.
enum End {
    /// Nothing more to sync: the task finished, was killed or is migrating,
    /// or the operator stopped the session.
    Done(&'static str),
    /// The peer runs the task at a newer epoch: this node stopped its copy.
    Superseded,
}

/// The owner's side of a sync session for one task.
pub(super) struct Session {
    local_id: u32,
    task_id: u64,
    label: String,
    to: IpEndpoint,
    handle: SocketHandle,
    link: Option<Link>,
    stage: Stage,
    stage_ns: u64,
    sync: Option<InFlight>,
    monitor: LinkMonitor,
    policy: CostRate,
    /// Capture time of the last acked sync.
    last_sync_ns: Option<u64>,
    /// No new sync before this (after a refusal).
    not_before_ns: u64,
    next_ping_ns: u64,
    ping: Option<(u64, u64)>,
    nonce: u64,
    syncs: u32,
    /// Size of the last synced checkpoint.
    state_bytes: u64,
    /// Changed bytes per second between the last two syncs.
    write_rate: f64,
    /// Bytes of the last sync besides its chunk payloads (offer, framing).
    overhead_bytes: f64,
    /// Compression ratio of the last sync's chunks.
    ratio: f64,
    /// Compresses each chunk (by default with the codec picked from speeds
    /// and ratios measured on this task's data).
    encoder: ChunkEncoder,
    retry_ns: u64,
    /// Bytes in the socket's send queue after the last turn: when fewer are
    /// left at the next, the standby's TCP acknowledged some (it is alive,
    /// though its answers may wait behind a long transfer on a slow link).
    queued: usize,
}

impl Session {
    /// What the policy sees now; `None` before the first sync (which goes at once).
    fn view(&mut self, now_ns: u64) -> Option<LinkView> {
        let last = self.last_sync_ns?;
        let bandwidth = self.monitor.last_bandwidth()?;
        Some(LinkView {
            now_s: seconds(now_ns),
            link_up: self.monitor.state() == LinkState::Up,
            last_sync_s: seconds(last),
            bandwidth,
            predicted_bandwidth: self.monitor.predicted_bandwidth(1).unwrap_or(bandwidth),
            latency_s: self.monitor.rtt().unwrap_or(0.0) / 2.0,
            outage_rate: self.monitor.outage_rate(),
            state_bytes: self.state_bytes as f64,
            write_rate: self.write_rate,
            compression_ratio: self.ratio,
            overhead_bytes: self.overhead_bytes,
        })
    }

    /// The interval the policy aims for now, in seconds.
    fn interval_s(&mut self, now_ns: u64) -> Option<f64> {
        let view = self.view(now_ns)?;
        Some(CostRate::optimum(&view, Bounds::default()))
    }

    fn link(&mut self) -> Result<&mut Link, ControlError> {
        self.link.as_mut().ok_or(ControlError::Closed)
    }
}

impl Control {
    /// Starts a sync session keeping a standby of task `id` on `to`.
    pub(super) fn start_sync(
        &mut self,
        id: u32,
        to: IpEndpoint,
        now_ns: u64,
    ) -> Result<String, ControlError> {
        self.prerequisites()?;
        if self.net.borrow().ipv4().is_none() {
            return Err(ControlError::NoAddress);
        }
        let (task_id, label, state) = {
            let mut tasks = self.tasks.borrow_mut();
            let e = tasks
                .get_mut(id)
                .ok_or_else(|| ControlError::NoTask(id.to_string()))?;
            (e.task_id, e.label(), e.state)
        };
        match state {
            TaskState::Finished { .. } => return Err(ControlError::Finished(id)),
            TaskState::Migrating => return Err(ControlError::AlreadyMigrating(id)),
            TaskState::Running | TaskState::Paused => {}
        }
        if self.sessions.iter().any(|s| s.task_id == task_id) {
            return Err(ControlError::AlreadySynced(id));
        }
        let handle = self.net.borrow_mut().add_tcp(SOCKET_BUFFER, SOCKET_BUFFER);
        if let Err(e) = self.open(handle, to) {
            self.net.borrow_mut().remove_tcp(handle);
            return Err(e);
        }
        let monitor = LinkMonitor::new(
            MonitorConfig {
                lease_s: seconds(self.lease_ns),
                ..MonitorConfig::default()
            },
            seconds(now_ns),
        );
        let line = format!("sync: {label} -> {to}: connecting");
        self.sessions.push(Session {
            local_id: id,
            task_id,
            label,
            to,
            handle,
            link: None,
            stage: Stage::Connecting,
            stage_ns: now_ns,
            sync: None,
            monitor,
            policy: CostRate::new(Bounds::default()),
            last_sync_ns: None,
            not_before_ns: now_ns,
            next_ping_ns: now_ns,
            ping: None,
            nonce: 0,
            syncs: 0,
            state_bytes: 0,
            write_rate: 0.0,
            overhead_bytes: 0.0,
            ratio: 1.0,
            encoder: ChunkEncoder::new(self.codec_mode),
            retry_ns: self.timeouts.retry_ns,
            queued: 0,
        });
        Ok(line)
    }

    /// One turn of every session and every lease; whether anything happened.
    pub(super) fn poll_sync(&mut self, now_ns: u64, out: &mut dyn Write) -> bool {
        let mut busy = false;
        let mut i = 0;
        while i < self.sessions.len() {
            let mut s = self.sessions.swap_remove(i);
            let (progress, end) = match self.step_session(&mut s, now_ns, out) {
                Ok(r) => r,
                Err(e) => {
                    self.session_broken(&mut s, &e, now_ns, out);
                    (true, None)
                }
            };
            busy |= progress;
            match end {
                None => {
                    self.sessions.push(s);
                    let last = self.sessions.len() - 1;
                    self.sessions.swap(i, last);
                    i += 1;
                }
                Some(end) => {
                    busy = true;
                    self.end_session(s, end, now_ns, out);
                }
            }
        }
        let expired: alloc::vec::Vec<u64> = self
            .leases
            .iter()
            .filter(|(_, l)| now_ns.saturating_sub(l.heard_ns) > self.lease_ns)
            .map(|(&t, _)| t)
            .collect();
        for task_id in expired {
            busy = true;
            self.fail_over(task_id, now_ns, out);
        }
        busy
    }

    /// The link of session `s` failed: it reconnects later.
    fn session_broken(
        &mut self,
        s: &mut Session,
        why: &ControlError,
        now_ns: u64,
        out: &mut dyn Write,
    ) {
        self.net.borrow_mut().tcp(s.handle).abort();
        if s.link.take().is_some() {
            let _ = writeln!(
                out,
                "sync: {} -> {}: link lost ({why}); reconnecting\r",
                s.label, s.to
            );
        }
        s.sync = None;
        s.ping = None;
        s.queued = 0;
        s.stage = Stage::Reconnect {
            at_ns: now_ns + s.retry_ns,
        };
        s.retry_ns = (s.retry_ns * 2).min(self.timeouts.retry_max_ns);
    }

    fn step_session(
        &mut self,
        s: &mut Session,
        now_ns: u64,
        out: &mut dyn Write,
    ) -> Result<(bool, Option<End>), ControlError> {
        let state = self.tasks.borrow_mut().get_mut(s.local_id).map(|e| e.state);
        match state {
            None => return Ok((true, Some(End::Done("the task is no longer here")))),
            Some(TaskState::Finished { .. }) => {
                return Ok((true, Some(End::Done("the task finished"))))
            }
            Some(TaskState::Migrating) => {
                return Ok((true, Some(End::Done("the task is migrating"))))
            }
            Some(TaskState::Running | TaskState::Paused) => {}
        }
        let link_state = s.monitor.poll(seconds(now_ns)).ok();
        match s.stage {
            Stage::Reconnect { at_ns } => {
                if now_ns < at_ns {
                    return Ok((false, None));
                }
                self.open(s.handle, s.to)?;
                s.stage = Stage::Connecting;
                s.stage_ns = now_ns;
                return Ok((true, None));
            }
            Stage::Connecting => {
                let state = self.net.borrow_mut().tcp(s.handle).state();
                match state {
                    tcp::State::Established => {
                        let (config, nonce) = self.channel()?;
                        s.link = Some(Link::new(Connection::client(&config, nonce)?, now_ns));
                        s.stage = Stage::Handshake;
                        s.stage_ns = now_ns;
                    }
                    tcp::State::Closed => return Err(ControlError::Refused),
                    _ if now_ns.saturating_sub(s.stage_ns) > self.timeouts.connect_ns => {
                        return Err(ControlError::Timeout(self.timeouts.connect_ns / 1_000_000));
                    }
                    _ => return Ok((false, None)),
                }
            }
            Stage::Handshake if now_ns.saturating_sub(s.stage_ns) > self.timeouts.connect_ns => {
                return Err(ControlError::Timeout(self.timeouts.connect_ns / 1_000_000));
            }
            // Nothing from the standby for the lease: the link is down.
            Stage::Ready if link_state == Some(LinkState::Down) => {
                return Err(ControlError::Timeout(self.lease_ns / 1_000_000));
            }
            Stage::Handshake | Stage::Ready => {}
        }
        let events = {
            let mut net = self.net.borrow_mut();
            let socket = net.tcp(s.handle);
            if socket.send_queue() < s.queued {
                // Only the monitor's clock can fail (time going backwards).
                let _ = s.monitor.record_contact(seconds(now_ns));
            }
            let link = s.link()?;
            let events = link.pump(socket, now_ns)?;
            if events.is_empty() && !socket.may_recv() {
                return Err(ControlError::Closed);
            }
            events
        };
        let mut busy = !events.is_empty();
        for event in events {
            // Only the monitor's clock can fail (time going backwards).
            let _ = s.monitor.record_contact(seconds(now_ns));
            match event {
                Event::Established(peer) => {
                    s.stage = Stage::Ready;
                    s.retry_ns = self.timeouts.retry_ns;
                    let _ = writeln!(
                        out,
                        "sync: {} -> {}: connected to {} {} node\r",
                        s.label, s.to, peer.isa, peer.board
                    );
                }
                Event::Message(Message::Pong { nonce }) => {
                    if let Some((n, sent_ns)) = s.ping {
                        if n == nonce {
                            let rtt = seconds(now_ns.saturating_sub(sent_ns).max(1));
                            let _ = s.monitor.record_heartbeat(seconds(now_ns), rtt);
                            s.ping = None;
                        }
                    }
                }
                Event::Message(msg) => {
                    if let Some(end) = self.on_sync_message(s, msg, now_ns, out)? {
                        return Ok((true, Some(end)));
                    }
                }
            }
        }
        if s.stage != Stage::Ready {
            return Ok((busy, None));
        }
        if now_ns >= s.next_ping_ns {
            s.nonce += 1;
            let nonce = s.nonce;
            s.link()?.send(&Message::Ping { nonce })?;
            s.ping = Some((nonce, now_ns));
            s.next_ping_ns = now_ns + PING_NS;
            busy = true;
        }
        if s.sync.is_none() && now_ns >= s.not_before_ns {
            let due = match s.view(now_ns) {
                None => true,
                Some(view) => s.policy.should_sync(&view),
            };
            if due {
                self.begin_sync(s, now_ns)?;
                busy = true;
            }
        }
        // Unknown before the first sync: then nothing is compressed (the
        // probe rounds still measure every codec).
        let bandwidth = s
            .monitor
            .predicted_bandwidth(1)
            .or(s.monitor.last_bandwidth())
            .unwrap_or(f64::INFINITY);
        if let (Some(link), Some(sync)) = (s.link.as_mut(), s.sync.as_mut()) {
            let clock = self.board.clock();
            let (encoder, tally) = (&mut s.encoder, &mut sync.tally);
            let mut encode = |bytes: &[u8]| encoder.encode(clock, bandwidth, bytes, tally);
            while link.backlog() < LOW_WATER {
                let Some(msg) = sync.outgoing.poll_send_with(&mut encode) else {
                    break;
                };
                link.send(&msg)?;
                busy = true;
            }
        }
        let mut net = self.net.borrow_mut();
        let socket = net.tcp(s.handle);
        if let Some(link) = s.link.as_mut() {
            link.flush(socket, now_ns);
        }
        s.queued = socket.send_queue();
        Ok((busy, None))
    }

    /// Stops the session of task `id` (shell `sync stop <id>`); the standby
    /// keeps its replica, without lease.
    fn stop_sync(&mut self, id: u32, now_ns: u64, out: &mut dyn Write) -> Result<(), ControlError> {
        let i = self
            .sessions
            .iter()
            .position(|s| s.local_id == id)
            .ok_or(ControlError::NotSynced(id))?;
        let s = self.sessions.swap_remove(i);
        self.end_session(s, End::Done("stopped"), now_ns, out);
        Ok(())
    }

    /// Captures the task at this migration point (it keeps running) and
    /// offers the checkpoint to the standby.
    fn begin_sync(&mut self, s: &mut Session, now_ns: u64) -> Result<(), ControlError> {
        let facts = self.board.facts();
        let bytes = {
            let mut tasks = self.tasks.borrow_mut();
            let e = tasks.get_mut(s.local_id).ok_or(ControlError::TaskGone)?;
            capture(e, e.epoch, &facts).map_err(ControlError::Task)?
        };
        let outgoing = Outgoing::new(Transfer::Standby, s.task_id, bytes)?;
        let link = s.link()?;
        link.send(&outgoing.offer())?;
        let start_bytes = link.written + link.backlog() as u64;
        s.sync = Some(InFlight {
            outgoing,
            captured_ns: now_ns,
            start_bytes,
            need: 0,
            tally: Tally::default(),
        });
        Ok(())
    }

    /// The standby's answer to a sync: chunks it needs, its ack, or a refusal.
    fn on_sync_message(
        &mut self,
        s: &mut Session,
        msg: Message,
        now_ns: u64,
        out: &mut dyn Write,
    ) -> Result<Option<End>, ControlError> {
        let sync = s.sync.as_mut().ok_or(ControlError::Unexpected)?;
        let refusal = match &msg {
            Message::Nack(r) => Some(*r),
            Message::Need { chunks } => {
                sync.need = chunks.len();
                None
            }
            Message::Ack { .. } => None,
            _ => return Err(ControlError::Unexpected),
        };
        let offer = sync.outgoing.offered().clone();
        match (sync.outgoing.on_message(msg), refusal) {
            (Ok(()), _) => {}
            // The peer runs the task at a newer epoch (it took over while
            // the link was down): it wins, this copy stops.
            (Err(_), Some(NackReason::StaleEpoch { known })) if known > offer.epoch => {
                let peer = s
                    .link
                    .as_ref()
                    .and_then(|l| l.conn.peer())
                    .map_or(0, |h| h.node_id);
                let to = s.to;
                self.yield_task(s.local_id, peer, known, &to.addr.to_string(), now_ns, out);
                return Ok(Some(End::Superseded));
            }
            (Err(e), _) => {
                let _ = writeln!(out, "sync: {} -> {}: sync refused: {e}\r", s.label, s.to);
                s.sync = None;
                s.not_before_ns = now_ns + s.retry_ns;
                return Ok(None);
            }
        }
        if sync.outgoing.phase() != SendPhase::Acked {
            return Ok(None);
        }
        let link = s.link.as_ref().ok_or(ControlError::Closed)?;
        let bytes = (link.written + link.backlog() as u64).saturating_sub(sync.start_bytes);
        let elapsed_ns = now_ns.saturating_sub(sync.captured_ns).max(1_000_000);
        let changed = sync.tally.raw;
        let _ = s
            .monitor
            .record_transfer(seconds(now_ns), bytes, seconds(elapsed_ns));
        if let Some(prev) = s.last_sync_ns {
            let dt = seconds(sync.captured_ns.saturating_sub(prev).max(1_000_000));
            s.write_rate = changed as f64 / dt;
        }
        s.overhead_bytes = bytes.saturating_sub(sync.tally.encoded) as f64;
        if sync.tally.encoded > 0 {
            s.ratio = sync.tally.ratio();
        }
        s.state_bytes = offer.total_len;
        s.last_sync_ns = Some(sync.captured_ns);
        s.syncs += 1;
        let (need, codec) = (sync.need, sync.tally.main_codec());
        s.sync = None;
        let interval = s.interval_s(now_ns).unwrap_or(0.0);
        let _ = writeln!(
            out,
            "sync: {} -> {}: sync {} at {:.1}% (epoch {}): {} of {} chunks, {} B in {} ms, {} x{:.2}; next in {:.1} s ({})\r",
            s.label,
            s.to,
            s.syncs,
            percent(&offer),
            offer.epoch,
            need,
            offer.chunks.len(),
            bytes,
            elapsed_ns / 1_000_000,
            codec.name(),
            s.ratio,
            interval,
            s.policy.name()
        );
        Ok(None)
    }

    /// Ends session `s` (its connection closes gracefully: the standby's
    /// lease ends with it).
    fn end_session(&mut self, mut s: Session, end: End, now_ns: u64, out: &mut dyn Write) {
        if let Some(link) = s.link.as_mut() {
            let mut net = self.net.borrow_mut();
            link.flush(net.tcp(s.handle), now_ns);
        }
        self.net.borrow_mut().tcp(s.handle).close();
        self.closing
            .push((s.handle, now_ns + self.timeouts.idle_ns));
        if let End::Done(why) = end {
            let _ = writeln!(
                out,
                "sync: {} -> {}: {why}; session ended after {} syncs\r",
                s.label, s.to, s.syncs
            );
        }
    }

    /// The peer `owner` (at `from`) runs the task at `epoch`, newer than
    /// ours: stops task `local_id` here and keeps its state as the replica.
    fn yield_task(
        &mut self,
        local_id: u32,
        owner: u64,
        epoch: u64,
        from: &str,
        now_ns: u64,
        out: &mut dyn Write,
    ) {
        let facts = self.board.facts();
        let Some(e) = self.tasks.borrow_mut().remove(local_id) else {
            return;
        };
        let percent = e.task.progress().percent();
        let replica = capture(&e, e.epoch, &facts)
            .ok()
            .and_then(|bytes| Outgoing::new(Transfer::Replicate, e.task_id, bytes).ok());
        if let Some(outgoing) = replica {
            let offer = outgoing.offered().clone();
            self.keep_replica(
                e.task_id,
                HeldReplica {
                    replica: Rc::new(Replica::new(outgoing.into_checkpoint())),
                    offer,
                    owner,
                    updated_ns: now_ns,
                },
            );
        }
        let _ = writeln!(
            out,
            "sync: failback of task {:016x}: {from} runs it at epoch {epoch}; {} stopped here at {percent:.1}% (epoch {}), this node is its standby now\r",
            e.task_id,
            e.label(),
            e.epoch
        );
    }

    /// The lease on task `task_id` expired: resumes it here from the
    /// replica at the next epoch and starts syncing back to the old owner.
    fn fail_over(&mut self, task_id: u64, now_ns: u64, out: &mut dyn Write) {
        let Some(lease) = self.leases.remove(&task_id) else {
            return;
        };
        let Some(held) = self.replicas.remove(&task_id) else {
            return;
        };
        let silent_ms = now_ns.saturating_sub(lease.heard_ns) / 1_000_000;
        let limits = Limits {
            max_total_bytes: free_heap(self.board),
        };
        let Resumed {
            workload,
            class,
            task,
            ..
        } = match resume(held.replica.bytes(), &limits) {
            Ok(r) => r,
            Err(why) => {
                let _ = writeln!(
                    out,
                    "sync: lease of task {task_id:016x} expired but its replica cannot resume: {why}\r"
                );
                return;
            }
        };
        let epoch = held.offer.epoch + 1;
        let percent = task.progress().percent();
        let id = self
            .tasks
            .borrow_mut()
            .add_with_id(workload, class, task, None, epoch, task_id);
        self.accepted.insert(
            task_id,
            Known {
                epoch,
                checkpoint_hash: None,
            },
        );
        let _ = writeln!(
            out,
            "sync: lease of task {task_id:016x} expired (no word from {} for {silent_ms} ms): resumed here at {percent:.1}%, epoch {epoch}\r",
            lease.from
        );
        let back = IpEndpoint::new(lease.from, CONTROL_PORT);
        match self.start_sync(id, back, now_ns) {
            Ok(line) => {
                let _ = writeln!(out, "{line}\r");
            }
            Err(e) => {
                let _ = writeln!(out, "sync: task {id}: cannot sync back to {back}: {e}\r");
            }
        }
    }

    /// `addr` just reached this node: sessions waiting to reconnect to it
    /// try again now, with their backoff reset (after an outage, the state
    /// flows back as soon as either side hears from the other).
    /// A connection attempt older than the first backoff has lost its SYN
    /// to the outage: it starts over too.
    pub(super) fn retry_sessions_to(&mut self, addr: IpAddress, now_ns: u64) {
        for s in &mut self.sessions {
            let waiting = match s.stage {
                Stage::Reconnect { .. } => true,
                Stage::Connecting => now_ns.saturating_sub(s.stage_ns) > self.timeouts.retry_ns,
                Stage::Handshake | Stage::Ready => false,
            };
            if s.to.addr == addr && waiting {
                self.net.borrow_mut().tcp(s.handle).abort();
                s.stage = Stage::Reconnect { at_ns: now_ns };
                s.retry_ns = self.timeouts.retry_ns;
            }
        }
    }

    /// Renews the leases held for `owner`'s tasks: a message came from it.
    pub(super) fn heard_from(&mut self, owner: u64, now_ns: u64) {
        for lease in self.leases.values_mut().filter(|l| l.owner == owner) {
            lease.heard_ns = now_ns;
        }
    }

    /// `owner` closed server connection `conn` gracefully: the sessions
    /// that synced on it are over and their replicas stay without lease.
    pub(super) fn end_leases(&mut self, owner: u64, conn: usize) {
        self.leases
            .retain(|_, l| !(l.owner == owner && l.conn == conn));
    }

    /// Takes a lease on the replica of `task_id` just accepted from `owner`
    /// at `from` on server connection `conn`.
    pub(super) fn take_lease(
        &mut self,
        task_id: u64,
        owner: u64,
        from: IpAddress,
        conn: usize,
        now_ns: u64,
    ) {
        self.leases.insert(
            task_id,
            Lease {
                owner,
                from,
                conn,
                heard_ns: now_ns,
            },
        );
    }

    /// Whether this node holds a lease on the task (for `List`).
    pub(super) fn leased(&self, task_id: u64) -> bool {
        self.leases.contains_key(&task_id)
    }

    /// Why a replica offer (`Replicate` or `Standby`) from `peer` must be
    /// refused, if it must: this node runs the task at an epoch at least as
    /// new, or holds a newer replica (older epoch, or less progress at the
    /// same epoch). A peer running the task at a newer epoch wins: the copy
    /// here stops and the offer is taken as the replica.
    pub(super) fn replica_refusal(
        &mut self,
        offer: &Offer,
        peer: u64,
        from: &str,
        now_ns: u64,
        out: &mut dyn Write,
    ) -> Option<NackReason> {
        let running = self
            .tasks
            .borrow_mut()
            .by_task_id(offer.task_id)
            .map(|e| (e.id, e.epoch, e.state));
        if let Some((id, epoch, state)) = running {
            let migrating = state == TaskState::Migrating
                || self.migrations.iter().any(|m| m.task_id == offer.task_id);
            if offer.epoch <= epoch || migrating {
                return Some(NackReason::StaleEpoch { known: epoch });
            }
            self.yield_task(id, peer, offer.epoch, from, now_ns, out);
        }
        let held = self.replicas.get(&offer.task_id)?;
        ((offer.epoch, offer.progress) < (held.offer.epoch, held.offer.progress)).then_some(
            NackReason::StaleEpoch {
                known: held.offer.epoch,
            },
        )
    }

    /// The sync fields of `List` for task `task_id` run here: time since
    /// its last sync and the policy's name, if a session keeps a standby.
    pub(super) fn sync_status(&self, task_id: u64, now_ns: u64) -> (Option<u64>, Option<String>) {
        self.sessions
            .iter()
            .find(|s| s.task_id == task_id)
            .map_or((None, None), |s| {
                (
                    s.last_sync_ns.map(|t| now_ns.saturating_sub(t) / 1_000_000),
                    Some(s.policy.name()),
                )
            })
    }

    /// The policy name a standby lists for a leased replica: every node runs
    /// tern-sync's default policy.
    pub(super) fn standby_policy() -> String {
        DEFAULT_POLICY.into()
    }

    /// Prints the sessions and leases (shell `sync`).
    fn print_sync(&mut self, now_ns: u64, out: &mut dyn Write) {
        if self.sessions.is_empty() && self.leases.is_empty() {
            let _ = writeln!(out, "no sync sessions\r");
        }
        for s in &mut self.sessions {
            let stage = match s.stage {
                Stage::Connecting | Stage::Handshake => "connecting",
                Stage::Ready => "connected",
                Stage::Reconnect { .. } => "reconnecting",
            };
            let interval = s
                .interval_s(now_ns)
                .map_or_else(|| String::from("-"), |t| format!("{t:.1} s"));
            let last = s.last_sync_ns.map_or_else(
                || String::from("never"),
                |t| format!("{} ms ago", now_ns.saturating_sub(t) / 1_000_000),
            );
            let _ = writeln!(
                out,
                "sync: {} -> {}: {stage}, {} syncs, last {last}, interval {interval}, rtt {:.1} ms, bandwidth {:.0} B/s, {} outages ({})\r",
                s.label,
                s.to,
                s.syncs,
                s.monitor.rtt().unwrap_or(0.0) * 1e3,
                s.monitor.last_bandwidth().unwrap_or(0.0),
                s.monitor.outages(),
                s.policy.name()
            );
        }
        for (task_id, l) in &self.leases {
            let _ = writeln!(
                out,
                "standby of task {task_id:016x} for {}: last word {} ms ago, lease {} ms\r",
                l.from,
                now_ns.saturating_sub(l.heard_ns) / 1_000_000,
                self.lease_ns / 1_000_000
            );
        }
    }
}

/// Progress of an offered checkpoint, in percent.
fn percent(offer: &Offer) -> f64 {
    if offer.progress_total == 0 {
        return 0.0;
    }
    offer.progress as f64 * 100.0 / offer.progress_total as f64
}

/// The `sync` shell command.
pub fn command() -> Command {
    Command {
        name: "sync",
        usage: "[<id> <address>[:port] | stop <id> | lease [<ms>]]",
        help: "keep a standby of a task on another node; stop it; list sessions; show or set the lease",
        run: sync_command,
    }
}

fn sync_command(kernel: &mut Kernel, args: &[&str], out: &mut dyn Write) -> CommandResult {
    const USAGE: &str = "usage: sync [<id> <address>[:port] | stop <id> | lease [<ms>]]";
    let now_ns = kernel.board().clock().now_ns();
    let control = super::control(kernel)?;
    let mut control = control.borrow_mut();
    match args {
        [] => control.print_sync(now_ns, out),
        ["stop", id] => {
            let id = parse_id(&[id], USAGE)?;
            control
                .stop_sync(id, now_ns, out)
                .map_err(|e| e.to_string())?;
        }
        ["lease"] => {
            let _ = writeln!(out, "sync: lease {} ms\r", control.lease_ns / 1_000_000);
        }
        ["lease", ms] => {
            let ms: u64 = ms
                .parse()
                .ok()
                .filter(|&ms| ms > 0)
                .ok_or("a lease is a positive number of milliseconds")?;
            control.lease_ns = ms.saturating_mul(1_000_000);
            let _ = writeln!(out, "sync: lease {ms} ms\r");
        }
        [id, to] => {
            let id = parse_id(&[id], USAGE)?;
            let to = super::parse_endpoint(to).map_err(|e| e.to_string())?;
            let line = control
                .start_sync(id, to, now_ns)
                .map_err(|e| e.to_string())?;
            let _ = writeln!(out, "{line}\r");
        }
        _ => return Err(USAGE.into()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{pair, short_timeouts, Pair, MAC_A, MAC_B};
    use super::super::{node_id_from_mac, NackReason, Offer, TaskRole};
    use crate::testing::exec;
    use alloc::string::String;

    /// The progress (percent) after `label` in the last line of `text` that
    /// contains it.
    fn percent_after(text: &str, label: &str) -> f64 {
        let line = text.lines().rfind(|l| l.contains(label)).unwrap();
        let at = line.find(label).unwrap() + label.len();
        line[at..]
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// Starts cg S on A, to pause at `pause_at` percent, and its sync session to B.
    fn started_sync(p: &mut Pair, pause_at: u32) -> u64 {
        assert_eq!(
            exec(&mut p.a, &format!("run cg S --pause-at {pause_at}")),
            "task 1 (cg S) started\r\n"
        );
        assert_eq!(
            exec(&mut p.a, "sync 1 10.0.0.2"),
            "sync: task 1 (cg S) -> 10.0.0.2:4470: connecting\r\n"
        );
        p.a.tasks().borrow().entries()[0].task_id
    }

    #[test]
    fn an_owner_keeps_a_standby_fresh_at_the_policys_interval() {
        let mut p = pair();
        let global = started_sync(&mut p, 95);
        assert!(
            p.run_until(400_000, |p| p.out_a.contains(": sync 2 at ")),
            "{}",
            p.out_a
        );
        let a = p.out_a.clone();
        assert!(
            a.contains("sync: task 1 (cg S) -> 10.0.0.2:4470: connected to aarch64 rpi4 node"),
            "{a}"
        );
        assert!(a.contains(" (epoch 1): "), "{a}");
        assert!(a.contains("(cost-rate)"), "{a}");
        // The owner lists its task with the policy and the time of the last sync.
        let now = p.a.board().clock().now_ns();
        let owner = p.a.control().unwrap().borrow().list(now);
        assert_eq!(owner.len(), 1);
        assert_eq!(owner[0].role, TaskRole::Owner);
        assert_eq!(owner[0].policy.as_deref(), Some("cost-rate"));
        assert!(owner[0].last_sync_ms_ago.is_some());
        // The standby holds a leased replica of it.
        let standby = p.b.control().unwrap().borrow().list(now);
        assert_eq!(standby.len(), 1);
        assert_eq!(
            (standby[0].task_id, standby[0].role, standby[0].epoch),
            (global, TaskRole::Standby, 1)
        );
        assert_eq!(standby[0].owner, node_id_from_mac(MAC_A));
        assert_eq!(standby[0].policy.as_deref(), Some("cost-rate"));
        // The first sync knows no bandwidth and sends raw chunks, all of
        // them; later ones only those that changed since (none once the
        // task is paused).
        let first = a.lines().find(|l| l.contains(": sync 1 at ")).unwrap();
        let sent = percent_after(first, "(epoch 1): ");
        assert_eq!(
            percent_after(first, &format!("{sent} of ")),
            sent,
            "{first}"
        );
        assert!(first.contains(", none x1.00; next in "), "{first}");
        let second = a.lines().find(|l| l.contains(": sync 2 at ")).unwrap();
        assert!(percent_after(second, "B in ") > 0.0);
        // Once a sync has caught up with the paused task, the next sends nothing.
        assert!(p.run_until(400_000, |p| p.out_a.contains(": 0 of 24 chunks, ")));
        let sessions = exec(&mut p.a, "sync");
        assert!(sessions.contains("connected, "), "{sessions}");
        assert!(!sessions.contains("connected, 2 syncs"), "{sessions}");
        let leases = exec(&mut p.b, "sync");
        assert!(
            leases.starts_with(&format!("standby of task {global:016x} for 10.0.0.1: ")),
            "{leases}"
        );
        assert!(!p.out_b.contains("lease of task"), "{}", p.out_b);
        assert!(exec(&mut p.b, "ps").contains("no tasks"));
    }

    #[test]
    fn lease_command_and_refusals() {
        let mut p = pair();
        assert_eq!(exec(&mut p.b, "sync"), "no sync sessions\r\n");
        assert_eq!(exec(&mut p.b, "sync lease"), "sync: lease 3000 ms\r\n");
        assert_eq!(exec(&mut p.b, "sync lease 1200"), "sync: lease 1200 ms\r\n");
        assert_eq!(
            exec(&mut p.b, "sync lease 0"),
            "error: sync: a lease is a positive number of milliseconds\r\n"
        );
        assert_eq!(
            exec(&mut p.a, "sync 1 10.0.0.2"),
            "error: sync: no task 1\r\n"
        );
        assert_eq!(
            exec(&mut p.a, "sync 1 nowhere"),
            "error: sync: 'nowhere' is not <IPv4 address>[:<port>]\r\n"
        );
        started_sync(&mut p, 95);
        assert_eq!(
            exec(&mut p.a, "sync 1 10.0.0.2"),
            "error: sync: task 1 already has a sync session\r\n"
        );
        assert_eq!(
            exec(&mut p.a, "sync stop 1"),
            "sync: task 1 (cg S) -> 10.0.0.2:4470: stopped; session ended after 0 syncs\r\n"
        );
        assert_eq!(
            exec(&mut p.a, "sync stop 1"),
            "error: sync: task 1 has no sync session\r\n"
        );
        assert_eq!(exec(&mut p.a, "sync"), "no sync sessions\r\n");
    }

    #[test]
    fn a_cut_link_fails_over_to_the_standby_and_back_with_one_owner() {
        let mut p = pair();
        short_timeouts(&mut p);
        exec(&mut p.a, "sync lease 1000");
        exec(&mut p.b, "sync lease 1000");
        let global = started_sync(&mut p, 40);
        assert!(
            p.run_until(400_000, |p| p.out_a.contains(": sync 1 at ")),
            "{}",
            p.out_a
        );
        let synced = percent_after(&p.out_a, ": sync 1 at ");
        p.wire.lock().unwrap().cut = true;
        assert!(
            p.run_until(400_000, |p| p.out_b.contains("sync: lease of task")),
            "{}",
            p.out_b
        );
        let b = p.out_b.clone();
        let line = b.lines().find(|l| l.contains("lease of task")).unwrap();
        assert!(
            line.starts_with(&format!(
                "sync: lease of task {global:016x} expired (no word from 10.0.0.1 for "
            )),
            "{line}"
        );
        assert!(line.ends_with(", epoch 2"), "{line}");
        // Resumed from the last sync: the owner went on to 40 % before the
        // next sync was due, and only that is done again.
        assert_eq!(percent_after(&b, "resumed here at "), synced, "{b}");
        let paused = percent_after(&p.out_a, "task 1 (cg S) paused at ");
        assert!(paused >= 40.0, "{}", p.out_a);
        assert!(!p.out_a.contains(": sync 2 at "), "{}", p.out_a);
        assert!(
            b.contains("sync: task 1 (cg S) -> 10.0.0.1:4470: connecting"),
            "{b}"
        );
        // Hold the new owner's copy at 60 % so it is still running when the
        // link returns.
        p.b.tasks().borrow_mut().get_mut(1).unwrap().pause_at = Some(60.0);
        // Both hold the task while the link is down; the old owner noticed.
        assert!(p.run_until(100_000, |p| p.out_a.contains("link lost")));
        p.wire.lock().unwrap().cut = false;
        assert!(
            p.run_until(400_000, |p| p.out_a.contains("sync: failback of task")),
            "{}\n---\n{}",
            p.out_a,
            p.out_b
        );
        let a = p.out_a.clone();
        assert!(
            a.contains(&format!(
                "sync: failback of task {global:016x}: 10.0.0.2 runs it at epoch 2; task 1 (cg S) stopped here at {paused:.1}% (epoch 1), this node is its standby now"
            )),
            "{a}"
        );
        assert_eq!(exec(&mut p.a, "ps"), "no tasks\r\n");
        // The new owner syncs back: the old one is its leased standby at epoch 2.
        assert!(
            p.run_until(400_000, |p| p
                .out_b
                .contains("-> 10.0.0.1:4470: sync 1 at ")),
            "{}\n---\n{}",
            p.out_a,
            p.out_b
        );
        assert!(p.out_b.contains("(epoch 2): "), "{}", p.out_b);
        let now = p.a.board().clock().now_ns();
        let list = p.a.control().unwrap().borrow().list(now);
        assert_eq!(list.len(), 1);
        assert_eq!((list[0].epoch, list[0].role), (2, TaskRole::Standby));
        assert_eq!(list[0].policy.as_deref(), Some("cost-rate"));
        assert!(p.a.control().unwrap().borrow().leased(global));
        assert!(p.run_until(2_000_000, |p| p.out_b.contains("task 1 (cg S) paused at ")));
        assert_eq!(exec(&mut p.b, "cont 1"), "task 1 (cg S) continues\r\n");
        assert!(
            p.run_until(2_000_000, |p| p.out_b.contains("VERIFICATION")),
            "{}",
            p.out_b
        );
        assert!(
            p.out_b.contains("task 1 (cg S): VERIFICATION SUCCESSFUL"),
            "{}",
            p.out_b
        );
        // One owner: B; A keeps a replica and never ran it again.
        let now = p.a.board().clock().now_ns();
        let list = p.a.control().unwrap().borrow().list(now);
        assert_eq!(list.len(), 1);
        assert_eq!(
            (list[0].task_id, list[0].role, list[0].owner),
            (global, TaskRole::Standby, node_id_from_mac(MAC_B))
        );
        assert!(!p.out_a.contains("VERIFICATION"));
        assert!(!p.out_a.contains("lease of task"), "{}", p.out_a);
        assert_eq!(exec(&mut p.a, "ps"), "no tasks\r\n");
        // The new owner's session ends with the task, and A's lease with it.
        assert!(p.run_until(100_000, |p| !p.a.control().unwrap().borrow().leased(global)));
    }

    #[test]
    fn stopping_one_session_ends_only_its_lease() {
        let mut p = pair();
        let first = started_sync(&mut p, 95);
        assert_eq!(
            exec(&mut p.a, "run cg S --pause-at 95"),
            "task 2 (cg S) started\r\n"
        );
        exec(&mut p.a, "sync 2 10.0.0.2");
        let second = p.a.tasks().borrow().entries()[1].task_id;
        let leased = |p: &Pair, task| p.b.control().unwrap().borrow().leased(task);
        assert!(p.run_until(400_000, |p| leased(p, first)
            && leased(p, second)
            && p.out_a
                .contains("task 1 (cg S) -> 10.0.0.2:4470: sync 1 at ")));
        let stopped = exec(&mut p.a, "sync stop 1");
        assert!(
            stopped.ends_with(": stopped; session ended after 1 syncs\r\n"),
            "{stopped}"
        );
        assert!(p.run_until(100_000, |p| !leased(p, first)));
        assert!(leased(&p, second));
        assert!(!p.out_b.contains("lease of task"), "{}", p.out_b);
    }

    #[test]
    fn a_sync_never_replaces_a_newer_replica() {
        let mut p = pair();
        started_sync(&mut p, 95);
        assert!(p.run_until(400_000, |p| p.out_a.contains(": sync 1 at ")));
        let control = p.b.control().unwrap().clone();
        let mut b = control.borrow_mut();
        let held = b.replicas.values().next().unwrap().offer.clone();
        let mut out = String::new();
        let mut refusal = |offer: &Offer| b.replica_refusal(offer, 1, "10.0.0.1", 0, &mut out);
        let stale = Some(NackReason::StaleEpoch { known: 1 });
        // Same state, more progress or a newer epoch: taken.
        assert_eq!(refusal(&held), None);
        let more = Offer {
            progress: held.progress + 1,
            ..held.clone()
        };
        assert_eq!(refusal(&more), None);
        // Less progress on the same epoch, or an older epoch: refused.
        let less = Offer {
            progress: held.progress - 1,
            ..held.clone()
        };
        assert_eq!(refusal(&less), stale);
        let older = Offer {
            epoch: 0,
            progress: held.progress + 10,
            ..held.clone()
        };
        assert_eq!(refusal(&older), stale);
        assert!(out.is_empty());
    }
}
