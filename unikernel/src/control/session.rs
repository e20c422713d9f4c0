//! Sync sessions: the owner of a task keeps a standby replica of it fresh on
//! a peer (shell `sync <id> <address>[:port]`), and the standby takes the
//! task over when the owner falls silent (see `docs/sync.md`, "The kernel's
//! sync session").
//!
//! - Owner side ([`Sessions`]): one connection to the standby; a `Ping`
//!   every [`PING_NS`]; at the interval tern-sync's default policy
//!   (cost-rate) chooses, a checkpoint captured at a migration point (the
//!   task keeps running) goes out as a [`Transfer::Standby`] offer, which
//!   the standby deduplicates against its replica. Every acked sync gives
//!   the link monitor one bandwidth sample (bytes over seconds), every pong
//!   one round-trip time. A link silent for the lease is broken; the
//!   session reconnects until the peer answers again.
//! - Standby side (the leases of [`ReplicaStore`]): past the lease the task
//!   resumes here from the replica at its epoch + 1 ([`Sessions::poll`]),
//!   and a session back to the old owner starts (it keeps trying until the
//!   link returns).
//! - Failback: when both copies meet again, the one at the newest epoch
//!   wins; the other stops and keeps its state as the replica
//!   ([`super::step_down`]). A sync never replaces a newer replica.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::Write;

use smoltcp::wire::{IpAddress, IpEndpoint};
use tern_migration::ResumeError;
use tern_protocol::{
    Event, Message, NackReason, NodeEvent, Offer, Outgoing, Replica, SendPhase, SyncReport,
    TaskRef, Transfer,
};
use tern_sync::monitor::{LinkMonitor, LinkState, MonitorConfig};
use tern_sync::policy::{Bounds, CostRate, LinkView, SyncPolicy};

use super::encoder::{ChunkEncoder, Tally};
use super::link::{PeerConn, Stage};
use super::modules::Push;
use super::replicas::ReplicaStore;
use super::{seconds, step_down, Context, ControlError, CONTROL_PORT, LOW_WATER};
use crate::kernel::Turn;
use crate::tasks::TaskState;

/// Interval between the owner's heartbeats.
pub const PING_NS: u64 = 500_000_000;

/// Default lease: a standby resumes the task after this long without word
/// from its owner; an owner counts its link down after as long without an
/// answer.
pub const DEFAULT_LEASE_NS: u64 = 3_000_000_000;

/// A sync in flight.
struct InFlight {
    outgoing: Outgoing,
    /// When its checkpoint was captured.
    captured_ns: u64,
    /// Bytes sealed on the connection before its offer.
    start_bytes: u64,
    /// Chunks the standby asked for.
    need: usize,
    /// The chunks sent, before and after compression.
    tally: Tally,
}

/// How a session ended.
enum End {
    /// The task finished or was removed here, or the operator stopped the
    /// session: the standby is told to drop its replica.
    Ended(&'static str),
    /// The task is migrating, or moved on: its replica is the business of
    /// its next owner.
    Done(&'static str),
    /// The peer runs the task at a newer epoch: this node stopped its copy.
    Superseded,
}

/// The owner's side of a sync session for one task.
struct Session {
    local_id: u32,
    task: TaskRef,
    /// The epoch the task runs at here.
    epoch: u64,
    conn: PeerConn,
    sync: Option<InFlight>,
    /// The standby's replica from this session's last acked sync: the next
    /// sync offers only the chunks that changed since.
    base: Option<Replica>,
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
    /// Bytes in the socket's send queue after the last turn: when fewer are
    /// left at the next, the standby's TCP acknowledged some (it is alive,
    /// though its answers may wait behind a long transfer on a slow link).
    queued: usize,
    /// The task's module on its way to a standby that lacks it (after
    /// each connection, before the first sync on it).
    push: Option<Push>,
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

    fn to(&self) -> String {
        self.conn.to.to_string()
    }
}

/// The sync sessions of tasks run here.
#[derive(Default)]
pub(super) struct Sessions {
    list: Vec<Session>,
}

impl Sessions {
    /// Starts a sync session keeping a standby of task `local_id` on `to`.
    pub(super) fn start(
        &mut self,
        ctx: &mut Context,
        lease_ns: u64,
        local_id: u32,
        to: IpEndpoint,
        now_ns: u64,
    ) -> Result<String, ControlError> {
        ctx.prerequisites()?;
        if ctx.net.borrow().ipv4().is_none() {
            return Err(ControlError::NoAddress);
        }
        let (task, label, state, epoch) = {
            let mut tasks = ctx.tasks.borrow_mut();
            let e = tasks
                .get_mut(local_id)
                .ok_or_else(|| ControlError::NoTask(local_id.to_string()))?;
            (e.task_ref(), e.label(), e.state, e.epoch)
        };
        match state {
            TaskState::Finished { .. } => return Err(ControlError::Finished(local_id)),
            TaskState::Migrating => return Err(ControlError::AlreadyMigrating(local_id)),
            TaskState::Running | TaskState::Paused => {}
        }
        if self.list.iter().any(|s| s.task.task_id == task.task_id) {
            return Err(ControlError::AlreadySynced(local_id));
        }
        let conn = PeerConn::open(ctx, to, now_ns)?;
        let monitor = LinkMonitor::new(
            MonitorConfig {
                lease_s: seconds(lease_ns),
                ..MonitorConfig::default()
            },
            seconds(now_ns),
        );
        self.list.push(Session {
            local_id,
            task,
            epoch,
            conn,
            sync: None,
            base: None,
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
            encoder: ChunkEncoder::new(ctx.codec_mode),
            queued: 0,
            push: None,
        });
        Ok(format!("sync: {label} -> {to}: connecting"))
    }

    /// Stops the session of task `local_id` (shell `sync stop <id>`); the
    /// standby drops its replica (it is told the task ended there).
    pub(super) fn stop(
        &mut self,
        ctx: &mut Context,
        local_id: u32,
        turn: &mut Turn<'_>,
    ) -> Result<(), ControlError> {
        let i = self
            .list
            .iter()
            .position(|s| s.local_id == local_id)
            .ok_or(ControlError::NotSynced(local_id))?;
        let s = self.list.swap_remove(i);
        end(s, End::Ended("stopped"), ctx, turn);
        Ok(())
    }

    /// Whether a sync is on its way to a standby (offered, not acked yet).
    pub(super) fn syncing(&self) -> bool {
        self.list
            .iter()
            .any(|s| s.sync.is_some() && s.conn.stage() == Stage::Ready)
    }

    /// One turn of every session and every lease: expired leases fail over
    /// to this node. Returns whether anything happened.
    pub(super) fn poll(
        &mut self,
        ctx: &mut Context,
        replicas: &mut ReplicaStore,
        turn: &mut Turn<'_>,
    ) -> bool {
        let mut busy = false;
        let mut i = 0;
        while i < self.list.len() {
            let s = &mut self.list[i];
            let (progress, ended) = match step(s, ctx, replicas, turn) {
                Ok(r) => r,
                Err(e) => {
                    link_lost(s, ctx, &e, turn);
                    (true, None)
                }
            };
            busy |= progress;
            match ended {
                None => i += 1,
                Some(why) => {
                    busy = true;
                    let s = self.list.swap_remove(i);
                    end(s, why, ctx, turn);
                }
            }
        }
        for task_id in replicas.expired(turn.now_ns) {
            busy = true;
            self.fail_over(ctx, replicas, task_id, turn);
        }
        busy
    }

    /// The lease on task `task_id` expired: resumes it here from the replica
    /// at the next epoch and starts syncing back to the old owner.
    fn fail_over(
        &mut self,
        ctx: &mut Context,
        replicas: &mut ReplicaStore,
        task_id: u64,
        turn: &mut Turn<'_>,
    ) {
        let Some((lease, held)) = replicas.take_for_failover(task_id) else {
            return;
        };
        let now_ns = turn.now_ns;
        let silent_ms = now_ns.saturating_sub(lease.heard_ns) / 1_000_000;
        // The replica's chunks were checked when they arrived.
        let resumed = held
            .replica
            .restore()
            .map_err(|e| ResumeError::Refused(format!("bad checkpoint: {e}")))
            .and_then(|r| ctx.tasks.borrow().resume_restored(r));
        let resumed = match resumed {
            Ok(r) => r,
            Err(why) => {
                turn.publish(NodeEvent::FailoverFailed {
                    task_id,
                    reason: why.to_string(),
                });
                return;
            }
        };
        let epoch = held.offer.epoch + 1;
        let progress = resumed.task.task.progress();
        let task = {
            let mut tasks = ctx.tasks.borrow_mut();
            let id = tasks.add_with_id(resumed.task, None, epoch, task_id, resumed.tag);
            tasks.get_mut(id).map(|e| e.task_ref())
        };
        let Some(task) = task else {
            return;
        };
        replicas.owned_here(task_id, epoch, None);
        turn.publish(NodeEvent::FailedOver {
            task: task.clone(),
            owner: lease.from.to_string(),
            silent_ms,
            epoch,
            progress: progress.done,
            progress_total: progress.total,
        });
        let back = IpEndpoint::new(lease.from, CONTROL_PORT);
        if let Err(e) = self.start(ctx, replicas.lease_ns(), task.local_id, back, now_ns) {
            turn.publish(NodeEvent::SyncEnded {
                task,
                to: back.to_string(),
                reason: format!("cannot sync back: {e}"),
                syncs: 0,
            });
        }
    }

    /// `addr` just reached this node: sessions waiting to reconnect to it
    /// try again now, with their backoff reset (after an outage, the state
    /// flows back as soon as either side hears from the other). A connection
    /// attempt older than the first backoff has lost its SYN to the outage:
    /// it starts over too.
    pub(super) fn retry_to(&mut self, ctx: &Context, addr: IpAddress, now_ns: u64) {
        for s in &mut self.list {
            let waiting = match s.conn.stage() {
                Stage::Reconnect { .. } => true,
                Stage::Connecting => {
                    now_ns.saturating_sub(s.conn.stage_ns()) > ctx.timeouts.retry_ns
                }
                Stage::Handshake | Stage::Ready => false,
            };
            if s.conn.to.addr == addr && waiting {
                s.conn.retry_now(ctx, now_ns);
            }
        }
    }

    /// Where the session of local task `local_id` keeps its standby, if it has one.
    pub(super) fn standby_of(&self, local_id: u32) -> Option<IpEndpoint> {
        self.list
            .iter()
            .find(|s| s.local_id == local_id)
            .map(|s| s.conn.to)
    }

    /// The sync fields of `List` for task `task_id` run here: time since
    /// its last sync and the policy's name, if a session keeps a standby.
    pub(super) fn sync_status(&self, task_id: u64, now_ns: u64) -> (Option<u64>, Option<String>) {
        self.list
            .iter()
            .find(|s| s.task.task_id == task_id)
            .map_or((None, None), |s| {
                (
                    s.last_sync_ns.map(|t| now_ns.saturating_sub(t) / 1_000_000),
                    Some(s.policy.name()),
                )
            })
    }

    /// Prints the sessions and the leases (shell `sync`).
    pub(super) fn print(&mut self, replicas: &ReplicaStore, now_ns: u64, out: &mut dyn Write) {
        if self.list.is_empty() && replicas.leases().next().is_none() {
            let _ = writeln!(out, "no sync sessions\r");
        }
        for s in &mut self.list {
            let stage = match s.conn.stage() {
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
                crate::events::label(&s.task),
                s.conn.to,
                s.syncs,
                s.monitor.rtt().unwrap_or(0.0) * 1e3,
                s.monitor.last_bandwidth().unwrap_or(0.0),
                s.monitor.outages(),
                s.policy.name()
            );
        }
        for (task_id, l) in replicas.leases() {
            let _ = writeln!(
                out,
                "standby of task {task_id:016x} for {}: last word {} ms ago, lease {} ms\r",
                l.from,
                now_ns.saturating_sub(l.heard_ns) / 1_000_000,
                replicas.lease_ns() / 1_000_000
            );
        }
    }
}

/// The link of session `s` failed: it reconnects later.
fn link_lost(s: &mut Session, ctx: &Context, why: &ControlError, turn: &mut Turn<'_>) {
    if s.conn.has_link() {
        turn.publish(NodeEvent::SyncLinkLost {
            task: s.task.clone(),
            to: s.to(),
            reason: why.to_string(),
        });
    }
    s.sync = None;
    s.ping = None;
    s.queued = 0;
    s.conn.broken(ctx, turn.now_ns);
}

/// One turn of session `s`: whether anything happened and, once it is over,
/// why.
fn step(
    s: &mut Session,
    ctx: &mut Context,
    replicas: &mut ReplicaStore,
    turn: &mut Turn<'_>,
) -> Result<(bool, Option<End>), ControlError> {
    let now_ns = turn.now_ns;
    let state = ctx.tasks.borrow_mut().get_mut(s.local_id).map(|e| e.state);
    match state {
        // With a replica here, it migrated on or stepped down.
        None if replicas.get(s.task.task_id).is_some() => {
            return Ok((true, Some(End::Done("the task moved on"))))
        }
        None => return Ok((true, Some(End::Ended("the task is no longer here")))),
        Some(TaskState::Finished { .. }) => {
            return Ok((true, Some(End::Ended("the task finished"))))
        }
        Some(TaskState::Migrating) => return Ok((true, Some(End::Done("the task is migrating")))),
        Some(TaskState::Running | TaskState::Paused) => {}
    }
    let link_state = s.monitor.poll(seconds(now_ns)).ok();
    // Nothing from the standby for the lease: the link is down.
    if s.conn.stage() == Stage::Ready && link_state == Some(LinkState::Down) {
        return Err(ControlError::Timeout(replicas.lease_ns() / 1_000_000));
    }
    if s.conn.stage() == Stage::Ready && s.conn.send_queue(ctx).0 < s.queued {
        // Only the monitor's clock can fail (time going backwards).
        let _ = s.monitor.record_contact(seconds(now_ns));
    }
    let polled = s.conn.poll(ctx, now_ns)?;
    let mut busy = polled.busy;
    for event in polled.events {
        // Only the monitor's clock can fail (time going backwards).
        let _ = s.monitor.record_contact(seconds(now_ns));
        match event {
            Event::Established(peer) => {
                turn.publish(NodeEvent::SyncConnected {
                    task: s.task.clone(),
                    to: s.to(),
                    peer_isa: peer.isa,
                    peer_board: peer.board,
                });
                // A standby without the task's module gets it first.
                s.push = Push::start(ctx, s.local_id, &mut s.conn)?;
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
            Event::Message(msg) if s.push.is_some() => {
                if s.push.as_mut().map(|p| p.on_message(msg)).transpose()? == Some(true) {
                    s.push = None;
                }
            }
            Event::Message(msg) => {
                if let Some(end) = on_message(s, ctx, replicas, msg, turn)? {
                    return Ok((true, Some(end)));
                }
            }
        }
    }
    if s.conn.stage() != Stage::Ready {
        return Ok((busy, None));
    }
    if now_ns >= s.next_ping_ns {
        s.nonce += 1;
        let nonce = s.nonce;
        s.conn.send(&Message::Ping { nonce })?;
        s.ping = Some((nonce, now_ns));
        s.next_ping_ns = now_ns + PING_NS;
        busy = true;
    }
    if let Some(push) = s.push.as_mut() {
        busy |= push.feed(&mut s.conn)?;
    }
    if s.sync.is_none() && s.push.is_none() && now_ns >= s.not_before_ns {
        let due = match s.view(now_ns) {
            None => true,
            Some(view) => s.policy.should_sync(&view),
        };
        if due {
            begin_sync(s, ctx, now_ns)?;
            busy = true;
        }
    }
    // Unknown before the first sync: then nothing is compressed (the probe
    // rounds still measure every codec).
    let bandwidth = s
        .monitor
        .predicted_bandwidth(1)
        .or(s.monitor.last_bandwidth())
        .unwrap_or(f64::INFINITY);
    if let Some(sync) = s.sync.as_mut() {
        let clock = ctx.board.clock();
        let (encoder, tally) = (&mut s.encoder, &mut sync.tally);
        let mut encode = |bytes: &[u8]| encoder.encode(clock, bandwidth, bytes, tally);
        while s.conn.backlog() < LOW_WATER {
            let Some(msg) = sync.outgoing.poll_send_with(&mut encode) else {
                break;
            };
            s.conn.send(&msg)?;
            busy = true;
        }
    }
    s.conn.flush(ctx, now_ns);
    s.queued = s.conn.send_queue(ctx).0;
    Ok((busy, None))
}

/// Captures the task at this migration point (it keeps running) and offers
/// the checkpoint to the standby; a task whose step has not ended is
/// captured on a later turn.
fn begin_sync(s: &mut Session, ctx: &mut Context, now_ns: u64) -> Result<(), ControlError> {
    let facts = ctx.board.facts();
    let since = s.base.as_ref().map(Replica::manifest);
    let capture = {
        let mut tasks = ctx.tasks.borrow_mut();
        let e = tasks.get_mut(s.local_id).ok_or(ControlError::TaskGone)?;
        if !e.ready_for_capture() {
            return Ok(());
        }
        e.capture(e.epoch, &facts, since, ctx.board.clock())
            .map_err(ControlError::Task)?
    };
    let next = Replica::advance(s.base.as_ref(), capture)?;
    let outgoing = Outgoing::new(Transfer::Standby, s.task.task_id, next, s.base.as_ref())?;
    s.conn.send(&outgoing.offer())?;
    s.sync = Some(InFlight {
        outgoing,
        captured_ns: now_ns,
        start_bytes: s.conn.queued(),
        need: 0,
        tally: Tally::default(),
    });
    Ok(())
}

/// The standby's answer to a sync: chunks it needs, its ack, or a refusal.
fn on_message(
    s: &mut Session,
    ctx: &mut Context,
    replicas: &mut ReplicaStore,
    msg: Message,
    turn: &mut Turn<'_>,
) -> Result<Option<End>, ControlError> {
    let now_ns = turn.now_ns;
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
    let chunks = sync.outgoing.replica().manifest().hashes().len();
    match (sync.outgoing.on_message(msg), refusal) {
        (Ok(()), _) => {}
        // The standby no longer holds the last sync (its store forgot it):
        // offer every chunk.
        (Err(_), Some(NackReason::UnknownBase)) if sync.outgoing.widen() => {
            s.base = None;
            let offer = sync.outgoing.offer();
            s.conn.send(&offer)?;
            return Ok(None);
        }
        // The peer runs the task at a newer epoch (it took over while the
        // link was down): it wins, this copy stops.
        (Err(_), Some(NackReason::StaleEpoch { known })) if known > offer.epoch => {
            let peer = s.conn.peer().map_or(0, |h| h.node_id);
            let winner = s.conn.to.addr.to_string();
            step_down(ctx, replicas, turn, s.local_id, peer, known, &winner);
            return Ok(Some(End::Superseded));
        }
        (Err(e), _) => {
            turn.publish(NodeEvent::SyncRefused {
                task: s.task.clone(),
                to: s.to(),
                reason: e.to_string(),
            });
            s.sync = None;
            s.not_before_ns = now_ns + ctx.timeouts.retry_ns;
            return Ok(None);
        }
    }
    if sync.outgoing.phase() != SendPhase::Acked {
        return Ok(None);
    }
    let bytes = s.conn.queued().saturating_sub(sync.start_bytes);
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
    if let Some(done) = s.sync.take() {
        s.base = Some(done.outgoing.into_replica());
    }
    let interval = s.interval_s(now_ns).unwrap_or(0.0);
    turn.publish(NodeEvent::Synced {
        task: s.task.clone(),
        to: s.to(),
        report: report(
            &offer,
            s,
            (need, chunks),
            bytes,
            elapsed_ns,
            codec.name(),
            interval,
        ),
    });
    Ok(None)
}

/// The account of the sync of `offer` that `s` just completed, whose
/// standby needed `need.0` of the checkpoint's `need.1` chunks.
fn report(
    offer: &Offer,
    s: &Session,
    need: (usize, usize),
    wire_bytes: u64,
    elapsed_ns: u64,
    codec: &str,
    interval_s: f64,
) -> SyncReport {
    SyncReport {
        number: s.syncs,
        progress: offer.progress,
        progress_total: offer.progress_total,
        epoch: offer.epoch,
        chunks_sent: need.0 as u32,
        chunks: need.1 as u32,
        wire_bytes,
        ms: elapsed_ns / 1_000_000,
        codec: codec.into(),
        ratio_milli: (s.ratio * 1000.0) as u32,
        next_ms: (interval_s * 1000.0) as u64,
        policy: s.policy.name(),
    }
}

/// Ends session `s`: when the task ended here, the standby is told so
/// (best effort, on a link that is up); then the connection closes
/// gracefully, which ends the standby's lease.
fn end(mut s: Session, why: End, ctx: &mut Context, turn: &mut Turn<'_>) {
    let (task, to, syncs) = (s.task.clone(), s.to(), s.syncs);
    let reason = match why {
        End::Ended(reason) => {
            if s.conn.stage() == Stage::Ready {
                let ended = Message::TaskEnded {
                    task_id: s.task.task_id,
                    epoch: s.epoch,
                };
                // A link that fails now leaves the standby its lease.
                let _ = s.conn.send(&ended);
            }
            Some(reason)
        }
        End::Done(reason) => Some(reason),
        End::Superseded => None,
    };
    s.conn.close(ctx, true, turn.now_ns);
    if let Some(reason) = reason {
        turn.publish(NodeEvent::SyncEnded {
            task,
            to,
            reason: reason.into(),
            syncs,
        });
    }
}
