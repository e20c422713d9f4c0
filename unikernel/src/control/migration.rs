//! Outgoing live migrations: pre-copy rounds while the task runs, then a
//! stop-and-copy. Each round captures the task against the replica the
//! receiver took in the round before, so it hashes only the chunks written
//! since they were last hashed and offers only those that changed. The
//! stop-and-copy begins once the chunks written since the last round would
//! cross the link within the migration's downtime limit (at the rate the
//! link monitor predicts from the rounds so far), or when more rounds would
//! not help. The sender owns the task until the receiver's ack; a link lost
//! after the commit leaves the task paused and the offer is repeated until
//! the receiver answers.

use alloc::rc::Rc;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use smoltcp::wire::IpEndpoint;
use tern_protocol::{
    Event, Hello, Message, MigrationReport, NackReason, NodeEvent, Outgoing, ReceiverTimes,
    Replica, RoundReport, RoundTimeline, SendPhase, StageTimes, StopReason, TaskRef, Transfer,
    TransferError,
};
use tern_sync::monitor::{LinkMonitor, MonitorConfig, ThroughputMeter};

use super::encoder::{ChunkEncoder, Tally};
use super::link::{PeerConn, Stage};
use super::modules::Push;
use super::replicas::{HeldReplica, ReplicaStore};
use super::{seconds, Context, ControlError, LOW_WATER};
use crate::kernel::Turn;
use crate::tasks::TaskState;

/// Pre-copy rounds at most before the stop-and-copy.
pub const MAX_PRECOPY_ROUNDS: u32 = 8;

/// The downtime a stop-and-copy may take unless the migration says
/// otherwise, milliseconds (QEMU's default `downtime-limit`).
pub const DEFAULT_DOWNTIME_MS: u64 = 300;

/// A migration's throughput samples span at least this long (seconds).
const METER_WINDOW_S: f64 = 0.1;

/// Weight of the newest throughput sample.
const METER_ALPHA: f64 = 0.3;

/// Microseconds of a time in nanoseconds.
fn micros(ns: u64) -> u64 {
    ns / 1000
}

/// Which transfer a migration is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Not authenticated yet.
    Connecting,
    /// Sending a replica while the task runs.
    PreCopy,
    /// The task is paused; sending the migration checkpoint.
    StopCopy,
}

/// How an outgoing migration ended.
enum Outcome {
    /// The receiver acked: it owns the task.
    Moved,
    /// The receiver knows the task at a newer epoch: this copy is dropped.
    Superseded(u64),
    /// Failed before the receiver could own it: the task stays here.
    Failed(ControlError),
}

/// The answer a peer that asked for a migration (`MigrateTo`) waits for.
pub(super) struct Answer {
    /// The server connection of the peer.
    pub(super) conn: usize,
    /// The migration it asked for.
    pub(super) migration: u64,
    /// `Migrated` or a nack.
    pub(super) message: Message,
}

/// The round in flight.
struct Round {
    /// 1, 2, ...; the stop-and-copy is the last.
    number: u32,
    outgoing: Outgoing,
    /// When its capture began.
    started_ns: u64,
    /// When its offer went out.
    offered_ns: u64,
    /// Chunks the capture copied (those that changed since the last round).
    dirty_chunks: u32,
    /// Their bytes.
    dirty_bytes: u64,
    /// Chunks the receiver asked for.
    need: u32,
    /// Bytes sealed on the connection before the offer.
    start_bytes: u64,
    /// Raw chunk bytes sent before the round.
    start_raw: u64,
    /// When the receiver's answer to the offer came.
    need_ns: Option<u64>,
    /// When the commit was queued behind the last chunk.
    queued_ns: Option<u64>,
    /// When the receiver's TCP had acknowledged everything queued.
    drained_ns: Option<u64>,
    /// Turns of this migration during the round.
    turns: u32,
    /// The task runner's total time when the round began.
    tasks_ran_ns: u64,
}

impl Round {
    /// The round's moments, relative to its start, at `acked_ns`.
    fn timeline(&self, acked_ns: u64, tasks_ran_ns: u64) -> RoundTimeline {
        let since =
            |at: Option<u64>| micros(at.unwrap_or(acked_ns).saturating_sub(self.started_ns));
        RoundTimeline {
            offered_us: since(Some(self.offered_ns)),
            need_us: since(self.need_ns),
            queued_us: since(self.queued_ns),
            drained_us: since(self.drained_ns),
            acked_us: since(Some(acked_ns)),
            turns: self.turns,
            tasks_us: micros(tasks_ran_ns.saturating_sub(self.tasks_ran_ns)),
        }
    }
}

/// One outgoing migration.
struct Migration {
    id: u64,
    local_id: u32,
    task: TaskRef,
    conn: PeerConn,
    phase: Phase,
    round: Option<Round>,
    /// What the receiver holds from this migration: the replica of the last
    /// acked round (the base of the next).
    base: Option<Replica>,
    /// The commit of the migration checkpoint went out without an ack.
    in_doubt: bool,
    /// The state to give the task back if the migration fails.
    resume_state: TaskState,
    /// The rounds acked so far.
    rounds: Vec<RoundReport>,
    /// Where the time went.
    stages: StageTimes,
    /// The round trips and round throughputs, and their forecast.
    monitor: LinkMonitor,
    downtime_limit_ms: u64,
    /// Why the pre-copy ended, once it did.
    stop: Option<StopReason>,
    started_ns: u64,
    paused_ns: Option<u64>,
    peer: Option<Hello>,
    /// The server connection waiting for the answer, if a peer asked.
    requester: Option<usize>,
    /// Compresses the chunks (codec per chunk at the measured throughput).
    encoder: ChunkEncoder,
    /// The chunks sent so far, before and after compression.
    tally: Tally,
    /// Throughput the receiver acknowledges while the socket stays backlogged.
    meter: ThroughputMeter,
    /// The task's module on its way to a receiver that lacks it, before
    /// the first round.
    push: Option<Push>,
    /// A round (pre-copy if `true`) that waits for the task's step to end.
    waiting: Option<bool>,
    /// Since when a round waits.
    waiting_since: Option<u64>,
}

impl Migration {
    fn to(&self) -> String {
        self.conn.to.to_string()
    }
}

/// The migrations under way.
#[derive(Default)]
pub(super) struct Migrations {
    list: Vec<Migration>,
    next_id: u64,
}

impl Migrations {
    /// Starts migrating the task with local id `local_id` to `to`, its
    /// stop-and-copy allowed `downtime_ms` (default [`DEFAULT_DOWNTIME_MS`]);
    /// `requester` is the server connection (and the address) of a peer
    /// that asked for it, if one did. Returns the migration's id.
    pub(super) fn start(
        &mut self,
        ctx: &mut Context,
        turn: &mut Turn<'_>,
        local_id: u32,
        to: IpEndpoint,
        downtime_ms: Option<u64>,
        requester: Option<(usize, String)>,
    ) -> Result<(u64, TaskRef), ControlError> {
        // Refuse before touching the task: no key, no nonces, no address.
        ctx.prerequisites()?;
        if ctx.net.borrow().ipv4().is_none() {
            return Err(ControlError::NoAddress);
        }
        let (task, state) = {
            let mut tasks = ctx.tasks.borrow_mut();
            let e = tasks
                .get_mut(local_id)
                .ok_or_else(|| ControlError::NoTask(local_id.to_string()))?;
            (e.task_ref(), e.state)
        };
        match state {
            TaskState::Finished { .. } => return Err(ControlError::Finished(local_id)),
            TaskState::Migrating => return Err(ControlError::AlreadyMigrating(local_id)),
            TaskState::Running | TaskState::Paused => {}
        }
        if self.is_migrating(task.task_id) {
            return Err(ControlError::AlreadyMigrating(local_id));
        }
        let conn = PeerConn::open(ctx, to, turn.now_ns)?;
        self.next_id += 1;
        let id = self.next_id;
        let (requester, requested_by) = match requester {
            Some((conn, peer)) => (Some(conn), Some(peer)),
            None => (None, None),
        };
        turn.publish(NodeEvent::MigrationStarted {
            task: task.clone(),
            to: to.to_string(),
            requested_by,
        });
        self.list.push(Migration {
            id,
            local_id,
            task: task.clone(),
            conn,
            phase: Phase::Connecting,
            round: None,
            base: None,
            in_doubt: false,
            resume_state: state,
            rounds: Vec::new(),
            stages: StageTimes::default(),
            monitor: LinkMonitor::new(MonitorConfig::default(), seconds(turn.now_ns)),
            downtime_limit_ms: downtime_ms.unwrap_or(DEFAULT_DOWNTIME_MS),
            stop: None,
            started_ns: turn.now_ns,
            paused_ns: None,
            peer: None,
            requester,
            encoder: ChunkEncoder::new(ctx.codec_mode),
            tally: Tally::default(),
            meter: ThroughputMeter::new(METER_WINDOW_S, METER_ALPHA),
            push: None,
            waiting: None,
            waiting_since: None,
        });
        Ok((id, task))
    }

    /// Whether a migration of the task with global id `task_id` is under way.
    pub(super) fn is_migrating(&self, task_id: u64) -> bool {
        self.list.iter().any(|m| m.task.task_id == task_id)
    }

    /// Whether a migration's commit went out without an ack (tests cut the
    /// link then).
    #[cfg(test)]
    pub(super) fn in_doubt(&self) -> bool {
        self.list.iter().any(|m| m.in_doubt)
    }

    /// Whether a migration's connection is up (its handshake done): its
    /// peer's every message then waits for this node's next turn.
    pub(super) fn connected(&self) -> bool {
        self.list.iter().any(|m| m.conn.stage() == Stage::Ready)
    }

    /// Whether a migration is streaming chunks right now.
    pub(super) fn streaming(&self) -> bool {
        self.list.iter().any(|m| {
            m.conn.backlog() > 0
                || m.round
                    .as_ref()
                    .is_some_and(|r| r.outgoing.phase() == SendPhase::Sending)
        })
    }

    /// Advances every migration; returns whether anything happened and the
    /// answers due to peers whose requested migration ended.
    pub(super) fn poll(
        &mut self,
        ctx: &mut Context,
        replicas: &mut ReplicaStore,
        turn: &mut Turn<'_>,
    ) -> (bool, Vec<Answer>) {
        let mut busy = false;
        let mut answers = Vec::new();
        let mut i = 0;
        while i < self.list.len() {
            let m = &mut self.list[i];
            let (progress, outcome) = match step(m, ctx, turn) {
                Ok(r) => r,
                Err(e) => (true, broken(m, ctx, e, turn)),
            };
            busy |= progress;
            match outcome {
                None => i += 1,
                Some(outcome) => {
                    busy = true;
                    let m = self.list.swap_remove(i);
                    if let Some(answer) = finish(m, outcome, ctx, replicas, turn) {
                        answers.push(answer);
                    }
                }
            }
        }
        (busy, answers)
    }
}

/// The link failed with `why`: before the commit the migration fails (the
/// task stays here); in doubt it reconnects later.
fn broken(
    m: &mut Migration,
    ctx: &Context,
    why: ControlError,
    turn: &mut Turn<'_>,
) -> Option<Outcome> {
    let pause = m.conn.broken(ctx, turn.now_ns);
    if !m.in_doubt {
        return Some(Outcome::Failed(why));
    }
    turn.publish(NodeEvent::MigrationInDoubt {
        task: m.task.clone(),
        to: m.to(),
        reason: why.to_string(),
        retry_ms: pause / 1_000_000,
    });
    None
}

/// One turn of migration `m`: whether anything happened and, once it is
/// over, how it ended.
fn step(
    m: &mut Migration,
    ctx: &mut Context,
    turn: &mut Turn<'_>,
) -> Result<(bool, Option<Outcome>), ControlError> {
    let now_ns = turn.now_ns;
    let polled = m.conn.poll(ctx, now_ns)?;
    let mut busy = polled.busy;
    if !m.conn.has_link() {
        return Ok((busy, None));
    }
    if let Some(since) = m.waiting_since {
        // Well before the idle receiver drops the connection.
        let limit = ctx.timeouts.connect_ns;
        if now_ns.saturating_sub(since) > limit {
            return Err(ControlError::Task(alloc::format!(
                "the task reached no migration point within {} ms",
                limit / 1_000_000
            )));
        }
    } else if polled.events.is_empty() && m.conn.idle_ns(now_ns) > ctx.timeouts.idle_ns {
        return Err(ControlError::Timeout(ctx.timeouts.idle_ns / 1_000_000));
    }
    for event in polled.events {
        match event {
            Event::Established(peer) => {
                m.peer = Some(peer);
                if m.in_doubt {
                    // Repeat the same offer, of every chunk (the receiver
                    // acks if it has the task, or names the chunks it lacks).
                    let round = m.round.as_mut().ok_or(ControlError::Unexpected)?;
                    round.outgoing.restart();
                    let offer = round.outgoing.offer();
                    m.conn.send(&offer)?;
                    m.phase = Phase::StopCopy;
                } else {
                    // A receiver without the task's module gets it first.
                    m.push = Push::start(ctx, m.local_id, &mut m.conn)?;
                    if m.push.is_none() {
                        begin_round(m, ctx, true, turn)?;
                    }
                }
            }
            Event::Message(msg) if m.push.is_some() => {
                let held = match m.push.as_mut() {
                    Some(push) => push.on_message(msg)?,
                    None => false,
                };
                if held {
                    m.push = None;
                    begin_round(m, ctx, true, turn)?;
                }
            }
            Event::Message(msg) => {
                if let Some(outcome) = on_message(m, ctx, msg, turn)? {
                    return Ok((true, Some(outcome)));
                }
            }
        }
    }
    if m.conn.stage() != Stage::Ready {
        return Ok((busy, None));
    }
    if let Some(round) = m.round.as_mut() {
        round.turns += 1;
        if round.queued_ns.is_some()
            && round.drained_ns.is_none()
            && m.conn.backlog() == 0
            && m.conn.send_queue(ctx).0 == 0
        {
            round.drained_ns = Some(ctx.board.clock().now_ns());
        }
    }
    if let Some(push) = m.push.as_mut() {
        busy |= push.feed(&mut m.conn)?;
        m.conn.flush(ctx, now_ns);
    }
    if let Some(precopy) = m.waiting.take() {
        begin_round(m, ctx, precopy, turn)?;
        busy |= m.waiting.is_none();
    }
    if let Some(round) = m.round.as_mut() {
        let (queued, capacity) = m.conn.send_queue(ctx);
        let acked = m.conn.written().saturating_sub(queued as u64);
        m.meter
            .observe(seconds(now_ns), acked, queued >= capacity / 2);
        // No link rate at first, nor while the sender (its CPU) sets the
        // pace: then only speed counts and chunks go raw, while the probe
        // rounds still measure the codecs.
        let bandwidth = m.meter.rate().unwrap_or(f64::INFINITY);
        let clock = ctx.board.clock();
        let (encoder, tally) = (&mut m.encoder, &mut m.tally);
        let mut compress_ns = 0;
        let mut encode = |bytes: &[u8]| {
            let start = clock.now_ns();
            let encoded = encoder.encode(clock, bandwidth, bytes, tally);
            compress_ns += clock.now_ns().saturating_sub(start);
            encoded
        };
        let mut seal_ns = 0;
        while m.conn.backlog() < LOW_WATER {
            let Some(msg) = round.outgoing.poll_send_with(&mut encode) else {
                break;
            };
            if matches!(msg, Message::Commit { .. }) {
                round.queued_ns = Some(clock.now_ns());
                m.in_doubt |= m.phase == Phase::StopCopy;
            }
            let start = clock.now_ns();
            m.conn.send(&msg)?;
            seal_ns += clock.now_ns().saturating_sub(start);
            busy = true;
        }
        m.stages.compress_us += micros(compress_ns);
        m.stages.seal_us += micros(seal_ns);
        m.conn.flush(ctx, now_ns);
    }
    Ok((busy, None))
}

/// Starts a pre-copy round (`precopy`) or the stop-and-copy: captures the
/// task against the receiver's replica and offers what changed.
fn begin_round(
    m: &mut Migration,
    ctx: &mut Context,
    precopy: bool,
    turn: &mut Turn<'_>,
) -> Result<(), ControlError> {
    let facts = ctx.board.facts();
    let clock = ctx.board.clock();
    let started_ns = clock.now_ns();
    let since = m.base.as_ref().map(Replica::manifest);
    let (capture, transfer) = {
        let mut tasks = ctx.tasks.borrow_mut();
        let e = tasks.get_mut(m.local_id).ok_or(ControlError::TaskGone)?;
        if matches!(e.state, TaskState::Finished { .. }) {
            return Err(ControlError::TaskGone);
        }
        if !precopy {
            // Stop-and-copy: no new step begins; the task waits at its
            // migration point until the receiver's answer.
            if e.state != TaskState::Migrating {
                m.resume_state = e.state;
            }
            e.state = TaskState::Migrating;
            m.paused_ns.get_or_insert(turn.now_ns);
        }
        if !e.ready_for_capture() {
            // Its last step has not ended (the runner ends it): the round
            // begins on a later turn.
            m.waiting = Some(precopy);
            m.waiting_since.get_or_insert(turn.now_ns);
            return Ok(());
        }
        m.waiting_since = None;
        if precopy {
            (
                e.capture(e.epoch, &facts, since, clock)
                    .map_err(ControlError::Task)?,
                Transfer::Replicate,
            )
        } else {
            let progress = e.task.progress();
            turn.publish(NodeEvent::StopAndCopy {
                task: m.task.clone(),
                to: m.conn.to.to_string(),
                progress: progress.done,
                progress_total: progress.total,
            });
            // The checkpoint carries the epoch the receiver takes.
            (
                e.capture(e.epoch + 1, &facts, since, clock)
                    .map_err(ControlError::Task)?,
                Transfer::Migrate,
            )
        }
    };
    let dirty_chunks = capture.data.iter().flatten().count() as u32;
    let dirty_bytes = capture.copied_bytes();
    let hash_ns = capture.hash_ns;
    let next = Replica::advance(m.base.as_ref(), capture)?;
    let outgoing = Outgoing::new(transfer, m.task.task_id, next, m.base.as_ref())?;
    let offered_ns = clock.now_ns();
    m.stages.hash_us += micros(hash_ns);
    m.stages.capture_us += micros(
        offered_ns
            .saturating_sub(started_ns)
            .saturating_sub(hash_ns),
    );
    m.conn.send(&outgoing.offer())?;
    m.round = Some(Round {
        number: m.rounds.len() as u32 + 1,
        outgoing,
        started_ns,
        offered_ns,
        dirty_chunks,
        dirty_bytes,
        need: 0,
        start_bytes: m.conn.queued(),
        start_raw: m.tally.raw,
        need_ns: None,
        queued_ns: None,
        drained_ns: None,
        turns: 0,
        tasks_ran_ns: ctx.tasks.borrow().ran_ns(),
    });
    m.phase = if precopy {
        Phase::PreCopy
    } else {
        Phase::StopCopy
    };
    Ok(())
}

/// The receiver's answer: chunks it needs, its ack, or a refusal.
fn on_message(
    m: &mut Migration,
    ctx: &mut Context,
    msg: Message,
    turn: &mut Turn<'_>,
) -> Result<Option<Outcome>, ControlError> {
    let now_ns = ctx.board.clock().now_ns();
    let round = m.round.as_mut().ok_or(ControlError::Unexpected)?;
    let mut times = ReceiverTimes::default();
    let refusal = match &msg {
        Message::Nack(r) => Some(*r),
        Message::Need { chunks } => {
            round.need = chunks.len() as u32;
            round.need_ns = Some(now_ns);
            // The offer's round trip: the link monitor's latency.
            let rtt = seconds(now_ns.saturating_sub(round.offered_ns).max(1_000));
            let _ = m.monitor.record_heartbeat(seconds(now_ns), rtt);
            None
        }
        Message::Ack { times: t, .. } => {
            times = *t;
            None
        }
        _ => return Err(ControlError::Unexpected),
    };
    let epoch = round.outgoing.offered().epoch;
    match (round.outgoing.on_message(msg), refusal) {
        (Ok(()), _) => {}
        // The receiver lost the base this round was taken against (its
        // store forgot the replica): offer every chunk.
        (Err(_), Some(NackReason::UnknownBase)) if round.outgoing.widen() => {
            round.offered_ns = now_ns;
            let offer = round.outgoing.offer();
            m.conn.send(&offer)?;
            return Ok(None);
        }
        // In doubt, a receiver that knows a newer epoch owns the task.
        (Err(_), Some(NackReason::StaleEpoch { known })) if m.in_doubt && known >= epoch => {
            return Ok(Some(Outcome::Superseded(known)));
        }
        // Busy in doubt: the receiver may still hold the commit; ask again later.
        (Err(_), Some(NackReason::Busy)) if m.in_doubt => {
            return Err(ControlError::Transfer(TransferError::Refused(
                NackReason::Busy,
            )));
        }
        (Err(e), _) => {
            // A refusal settles the doubt: the receiver did not take it.
            m.in_doubt = false;
            return Err(e.into());
        }
    }
    if round.outgoing.phase() != SendPhase::Acked {
        return Ok(None);
    }
    // The round is acked: account for it.
    let wire_bytes = m.conn.queued().saturating_sub(round.start_bytes);
    let raw_sent = m.tally.raw.saturating_sub(round.start_raw);
    let elapsed_ns = now_ns.saturating_sub(round.offered_ns).max(1_000);
    let _ = m.monitor.record_transfer(
        seconds(now_ns),
        raw_sent.max(wire_bytes),
        seconds(elapsed_ns),
    );
    turn.publish(NodeEvent::RoundTimeline {
        task: m.task.clone(),
        round: round.number,
        stop_and_copy: m.phase == Phase::StopCopy,
        timeline: round.timeline(now_ns, ctx.tasks.borrow().ran_ns()),
    });
    m.stages.send_us += micros(elapsed_ns);
    m.stages.check_us += times.check_us;
    m.stages.rebuild_us += times.rebuild_us;
    m.rounds.push(RoundReport {
        round: round.number,
        dirty_chunks: round.dirty_chunks,
        dirty_bytes: round.dirty_bytes,
        chunks_sent: round.need,
        wire_bytes,
        ms: now_ns.saturating_sub(round.started_ns) / 1_000_000,
    });
    if m.phase == Phase::StopCopy {
        return Ok(Some(Outcome::Moved));
    }
    let (round_dirty, chunks_sent, chunks) = (
        round.dirty_bytes,
        round.need,
        round.outgoing.replica().manifest().hashes().len() as u32,
    );
    // The receiver holds this round's replica now: the next round's base.
    let Some(round) = m.round.take() else {
        return Err(ControlError::Unexpected);
    };
    m.base = Some(round.outgoing.into_replica());
    // What the task wrote while this round was on the way.
    let (_, left) = ctx
        .tasks
        .borrow_mut()
        .get_mut(m.local_id)
        .ok_or(ControlError::TaskGone)?
        .unhashed();
    let predicted_ms = predicted_ms(&mut m.monitor, left);
    turn.publish(NodeEvent::PrecopyRound {
        task: m.task.clone(),
        to: m.to(),
        round: m.rounds.len() as u32,
        chunks_sent,
        chunks,
        bytes: wire_bytes,
        dirty_bytes: round_dirty,
        predicted_ms,
    });
    let rounds = m.rounds.len() as u32;
    m.stop = match predicted_ms {
        Some(ms) if ms <= m.downtime_limit_ms => {
            Some(StopReason::DowntimeFits { predicted_ms: ms })
        }
        _ if rounds >= MAX_PRECOPY_ROUNDS => Some(StopReason::RoundLimit),
        // The task wrote as much during this round as the round carried:
        // another round would carry as much again.
        p if rounds >= 2 && left >= round_dirty => Some(StopReason::NotConverging {
            predicted_ms: p.unwrap_or(0),
        }),
        _ => None,
    };
    begin_round(m, ctx, m.stop.is_none(), turn)?;
    Ok(None)
}

/// How long `bytes` would take to cross the link, in milliseconds, at the
/// monitor's predicted rate and its round-trip time; `None` without a rate.
fn predicted_ms(monitor: &mut LinkMonitor, bytes: u64) -> Option<u64> {
    let rate = monitor.predicted_bandwidth(1)?;
    if !(rate.is_finite() && rate > 0.0) {
        return None;
    }
    let s = bytes as f64 / rate + monitor.rtt().unwrap_or(0.0);
    Some((s * 1000.0) as u64)
}

/// Applies the end of migration `m` to the task, reports it, and returns
/// the answer for the peer that asked for it, if one did.
fn finish(
    mut m: Migration,
    outcome: Outcome,
    ctx: &mut Context,
    replicas: &mut ReplicaStore,
    turn: &mut Turn<'_>,
) -> Option<Answer> {
    let now_ns = turn.now_ns;
    let wire_bytes = m.conn.written();
    let to = m.to();
    let graceful = matches!(outcome, Outcome::Moved);
    let peer = m.peer.take().or_else(|| m.conn.peer().cloned());
    m.conn.close(ctx, graceful, now_ns);
    let message = match outcome {
        Outcome::Moved => {
            ctx.tasks.borrow_mut().remove(m.local_id);
            let round = m.round.take()?;
            let offer = round.outgoing.offered().clone();
            let replica = round.outgoing.into_replica();
            let report = MigrationReport {
                task_id: m.task.task_id,
                epoch: offer.epoch,
                from_isa: ctx.board.facts().isa.name().into(),
                to_isa: peer.as_ref().map_or_else(String::new, |p| p.isa.clone()),
                state_bytes: offer.total_len,
                wire_bytes,
                precopy_rounds: m.rounds.len().saturating_sub(1) as u32,
                total_ms: now_ns.saturating_sub(m.started_ns) / 1_000_000,
                downtime_ms: now_ns.saturating_sub(m.paused_ns.unwrap_or(now_ns)) / 1_000_000,
                chunks: replica.manifest().hashes().len() as u32,
                stop_copy_chunks: round.need,
                codec: m.tally.main_codec().name().into(),
                ratio_milli: (m.tally.ratio() * 1000.0) as u32,
                downtime_limit_ms: m.downtime_limit_ms,
                stop: m.stop.unwrap_or(StopReason::RoundLimit),
                rounds: core::mem::take(&mut m.rounds),
                stages: m.stages,
            };
            turn.publish(NodeEvent::Migrated {
                task: m.task.clone(),
                to,
                report: report.clone(),
            });
            // The sent checkpoint stays here as the replica of the task, for
            // a later return.
            replicas.keep(
                m.task.task_id,
                HeldReplica {
                    replica: Rc::new(replica),
                    offer,
                    owner: peer.map_or(0, |p| p.node_id),
                    updated_ns: now_ns,
                },
                ctx.replica_budget(),
            );
            Message::Migrated(report)
        }
        Outcome::Superseded(known) => {
            ctx.tasks.borrow_mut().remove(m.local_id);
            turn.publish(NodeEvent::MigrationSuperseded {
                task: m.task.clone(),
                to,
                epoch: known,
            });
            Message::Nack(NackReason::MigrationFailed)
        }
        Outcome::Failed(why) => {
            if let Some(e) = ctx.tasks.borrow_mut().get_mut(m.local_id) {
                if e.state == TaskState::Migrating {
                    e.state = m.resume_state;
                }
            }
            turn.publish(NodeEvent::MigrationFailed {
                task: m.task.clone(),
                to,
                reason: why.to_string(),
            });
            Message::Nack(NackReason::MigrationFailed)
        }
    };
    m.requester.map(|conn| Answer {
        conn,
        migration: m.id,
        message,
    })
}
