//! Outgoing live migrations: pre-copy rounds while the task runs, then a
//! stop-and-copy whose need names only the chunks that differ from the
//! receiver's replica. The sender owns the task until the receiver's ack; a
//! link lost after the commit leaves the task paused and the offer is
//! repeated until the receiver answers.

use alloc::rc::Rc;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use smoltcp::wire::IpEndpoint;
use tern_protocol::{
    Event, Hello, Message, MigrationReport, NackReason, NodeEvent, Outgoing, Replica, SendPhase,
    TaskRef, Transfer, TransferError,
};
use tern_sync::monitor::ThroughputMeter;

use super::encoder::{ChunkEncoder, Tally};
use super::link::{PeerConn, Stage};
use super::modules::Push;
use super::replicas::{HeldReplica, ReplicaStore};
use super::{seconds, Context, ControlError, LOW_WATER};
use crate::kernel::Turn;
use crate::tasks::TaskState;

/// Pre-copy rounds at most before the stop-and-copy.
pub const MAX_PRECOPY_ROUNDS: u32 = 3;

/// A migration's throughput samples span at least this long (seconds).
const METER_WINDOW_S: f64 = 0.1;

/// Weight of the newest throughput sample.
const METER_ALPHA: f64 = 0.3;

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

/// One outgoing migration.
struct Migration {
    id: u64,
    local_id: u32,
    task: TaskRef,
    conn: PeerConn,
    phase: Phase,
    outgoing: Option<Outgoing>,
    /// The commit of the migration checkpoint went out without an ack.
    in_doubt: bool,
    /// The state to give the task back if the migration fails.
    resume_state: TaskState,
    precopy_rounds: u32,
    last_need: Option<usize>,
    need: usize,
    round_start_bytes: u64,
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
    /// Starts migrating the task with local id `local_id` to `to`;
    /// `requester` is the server connection (and the address) of a peer
    /// that asked for it, if one did. Returns the migration's id.
    pub(super) fn start(
        &mut self,
        ctx: &mut Context,
        turn: &mut Turn<'_>,
        local_id: u32,
        to: IpEndpoint,
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
            outgoing: None,
            in_doubt: false,
            resume_state: state,
            precopy_rounds: 0,
            last_need: None,
            need: 0,
            round_start_bytes: 0,
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

    /// Whether a migration is streaming chunks right now.
    pub(super) fn streaming(&self) -> bool {
        self.list.iter().any(|m| {
            m.conn.backlog() > 0
                || m.outgoing
                    .as_ref()
                    .is_some_and(|o| o.phase() == SendPhase::Sending)
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
                    // Repeat the same offer: the receiver acks if it has
                    // the task, or names the chunks it lacks.
                    let outgoing = m.outgoing.as_mut().ok_or(ControlError::Unexpected)?;
                    outgoing.restart();
                    let offer = outgoing.offer();
                    m.conn.send(&offer)?;
                    m.phase = Phase::StopCopy;
                } else {
                    // A receiver without the task's module gets it first.
                    m.push = Push::start(ctx, m.local_id, &mut m.conn)?;
                    if m.push.is_none() {
                        begin_round(m, ctx, MAX_PRECOPY_ROUNDS > 0, turn)?;
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
                    begin_round(m, ctx, MAX_PRECOPY_ROUNDS > 0, turn)?;
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
    if let Some(push) = m.push.as_mut() {
        busy |= push.feed(&mut m.conn)?;
        m.conn.flush(ctx, now_ns);
    }
    if let Some(precopy) = m.waiting.take() {
        begin_round(m, ctx, precopy, turn)?;
        busy |= m.waiting.is_none();
    }
    if let Some(outgoing) = m.outgoing.as_mut() {
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
        let mut encode = |bytes: &[u8]| encoder.encode(clock, bandwidth, bytes, tally);
        while m.conn.backlog() < LOW_WATER {
            let Some(msg) = outgoing.poll_send_with(&mut encode) else {
                break;
            };
            if matches!(msg, Message::Commit { .. }) && m.phase == Phase::StopCopy {
                m.in_doubt = true;
            }
            m.conn.send(&msg)?;
            busy = true;
        }
        m.conn.flush(ctx, now_ns);
    }
    Ok((busy, None))
}

/// Starts a pre-copy round (`precopy`) or the stop-and-copy.
fn begin_round(
    m: &mut Migration,
    ctx: &mut Context,
    precopy: bool,
    turn: &mut Turn<'_>,
) -> Result<(), ControlError> {
    let facts = ctx.board.facts();
    let (bytes, transfer) = {
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
        if !e.at_migration_point() {
            // Its last step has not ended (the runner ends it): the round
            // begins on a later turn.
            m.waiting = Some(precopy);
            m.waiting_since.get_or_insert(turn.now_ns);
            return Ok(());
        }
        m.waiting_since = None;
        if precopy {
            (
                e.capture(e.epoch, &facts).map_err(ControlError::Task)?,
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
                e.capture(e.epoch + 1, &facts).map_err(ControlError::Task)?,
                Transfer::Migrate,
            )
        }
    };
    let outgoing = Outgoing::new(transfer, m.task.task_id, bytes)?;
    m.conn.send(&outgoing.offer())?;
    m.round_start_bytes = m.conn.queued();
    m.outgoing = Some(outgoing);
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
    let outgoing = m.outgoing.as_mut().ok_or(ControlError::Unexpected)?;
    if let Message::Need { chunks } = &msg {
        m.need = chunks.len();
    }
    let refusal = match &msg {
        Message::Nack(r) => Some(*r),
        Message::Need { .. } | Message::Ack { .. } => None,
        _ => return Err(ControlError::Unexpected),
    };
    let epoch = outgoing.offered().epoch;
    match (outgoing.on_message(msg), refusal) {
        (Ok(()), _) => {}
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
    if outgoing.phase() != SendPhase::Acked {
        return Ok(None);
    }
    if m.phase == Phase::StopCopy {
        return Ok(Some(Outcome::Moved));
    }
    m.precopy_rounds += 1;
    let chunks = outgoing.offered().chunks.len();
    turn.publish(NodeEvent::PrecopyRound {
        task: m.task.clone(),
        to: m.to(),
        round: m.precopy_rounds,
        chunks_sent: m.need as u32,
        chunks: chunks as u32,
        bytes: m.conn.queued().saturating_sub(m.round_start_bytes),
    });
    // Another round while the changed chunks keep shrinking and the replica
    // still saves some (a task whose every chunk changes between two rounds
    // gains nothing from more pre-copy).
    let again = m.precopy_rounds < MAX_PRECOPY_ROUNDS
        && m.need > 0
        && m.last_need
            .is_none_or(|last| m.need < last && m.need < chunks);
    m.last_need = Some(m.need);
    begin_round(m, ctx, again, turn)?;
    Ok(None)
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
            let outgoing = m.outgoing.take()?;
            let offer = outgoing.offered().clone();
            let report = MigrationReport {
                task_id: m.task.task_id,
                epoch: offer.epoch,
                from_isa: ctx.board.facts().isa.name().into(),
                to_isa: peer.as_ref().map_or_else(String::new, |p| p.isa.clone()),
                state_bytes: offer.total_len,
                wire_bytes,
                precopy_rounds: m.precopy_rounds,
                total_ms: now_ns.saturating_sub(m.started_ns) / 1_000_000,
                downtime_ms: now_ns.saturating_sub(m.paused_ns.unwrap_or(now_ns)) / 1_000_000,
                chunks: offer.chunks.len() as u32,
                stop_copy_chunks: m.need as u32,
                codec: m.tally.main_codec().name().into(),
                ratio_milli: (m.tally.ratio() * 1000.0) as u32,
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
                    replica: Rc::new(Replica::new(outgoing.into_checkpoint())),
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
