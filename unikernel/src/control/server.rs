//! The inbound side of the control service: [`LISTENERS`] listening sockets
//! on [`CONTROL_PORT`], each serving one authenticated peer at a time —
//! `List`, `Status`, `Fetch`, `Ping`, `MigrateTo`, `StartTask`, `KillTask`,
//! `SetStandby`, `TaskEnded`, a `Subscribe`d event stream, a network console
//! (`ConsoleOpen`), task modules (`ModuleQuery`, `ModulePart`), and offers
//! (`Replicate` and `Standby`
//! copies kept as this node's replica of a task, `Migrate` transfers that
//! resume the task here). A peer that fails the handshake, sends garbage or
//! replays frames loses its connection only.

use alloc::boxed::Box;
use alloc::format;
use alloc::rc::Rc;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::time::Duration;
use smoltcp::wire::{IpAddress, IpEndpoint};
use tern_migration::ResumeError;
use tern_protocol::{
    Connection, Event, Incoming, Message, NackReason, NodeEvent, Offer, Outgoing, Policy,
    ReceiverTimes, Replica, SendPhase, Transfer, TransferError,
};

use super::console;
use super::link::Link;
use super::migration::Answer;
use super::modules;
use super::replicas::{HeldReplica, ReplicaVerdict};
use super::requests::{kill_task, list, set_standby, start_task, status};
use super::{step_down, ControlError, Parts, CONTROL_PORT, KEEP_ALIVE_MS, LOW_WATER};
use crate::events::EventLog;
use crate::kernel::SharedConsole;
use crate::tasks::{free_heap, TaskState};

/// Listening sockets: an inspector, a migrating peer (and a reconnecting
/// one), an event subscriber and two network consoles can be connected at
/// the same time.
pub const LISTENERS: usize = 6;

/// Events sent to a subscriber in one message at most.
const EVENTS_PER_MESSAGE: usize = 32;

/// What a server connection is doing for its peer.
enum Job {
    /// Waiting for a request.
    Idle,
    /// Receiving an offered checkpoint; the time spent checking it so far
    /// (nanoseconds), told to the sender in the ack.
    Receive(Box<Incoming<'static>>, u64),
    /// Sending a fetched checkpoint.
    Send(Box<Outgoing>),
    /// A `MigrateTo` runs: its answer goes back when it ends.
    AwaitMigration(u64),
    /// A `Fetch` of a task whose step has not ended: it is answered once
    /// the task is at a migration point.
    AwaitFetch(u64),
    /// Receiving a task module's parts.
    ReceiveModule(modules::Incoming),
}

/// A listening socket and the connection it accepted, if any.
struct ServerConn {
    handle: SocketHandle,
    link: Option<Link>,
    job: Job,
    /// The last event sequence number sent to a subscribed peer.
    subscribed: Option<u64>,
    /// The network console this connection carries, if it opened one.
    console: Option<SharedConsole>,
}

impl ServerConn {
    fn reset(&mut self) {
        self.link = None;
        self.job = Job::Idle;
        self.subscribed = None;
        if let Some(console) = self.console.take() {
            console.borrow_mut().close();
        }
    }
}

/// The listening sockets and their connections.
pub(super) struct Server {
    conns: Vec<ServerConn>,
}

impl Server {
    /// [`LISTENERS`] sockets on `parts`' network stack.
    pub(super) fn new(ctx: &mut super::Context) -> Self {
        let conns = (0..LISTENERS)
            .map(|_| ServerConn {
                handle: ctx.add_socket(),
                link: None,
                job: Job::Idle,
                subscribed: None,
                console: None,
            })
            .collect();
        Self { conns }
    }

    /// Whether a transfer is sending or receiving chunks right now.
    pub(super) fn streaming(&self) -> bool {
        self.conns.iter().any(|s| match &s.job {
            Job::Receive(..) | Job::ReceiveModule(_) => true,
            Job::Send(o) => o.phase() == SendPhase::Sending,
            Job::Idle | Job::AwaitMigration(_) | Job::AwaitFetch(_) => false,
        })
    }

    /// One turn of every connection; whether anything happened.
    pub(super) fn poll(&mut self, parts: &mut Parts<'_, '_>) -> bool {
        let mut busy = false;
        for i in 0..self.conns.len() {
            busy |= self.poll_conn(i, parts);
        }
        busy
    }

    /// Sends the peers that asked for migrations their answers.
    pub(super) fn answer(&mut self, answers: Vec<Answer>) {
        for answer in answers {
            let Some(conn) = self.conns.get_mut(answer.conn) else {
                continue;
            };
            if matches!(conn.job, Job::AwaitMigration(id) if id == answer.migration) {
                conn.job = Job::Idle;
                // A peer gone meanwhile does not change the outcome.
                if let Some(link) = conn.link.as_mut() {
                    let _ = link.send(&answer.message);
                }
            }
        }
    }

    fn poll_conn(&mut self, i: usize, parts: &mut Parts<'_, '_>) -> bool {
        let now_ns = parts.turn.now_ns;
        let handle = self.conns[i].handle;
        let (state, remote) = {
            let mut net = parts.ctx.net.borrow_mut();
            let socket = net.tcp(handle);
            if !socket.is_open() {
                // Only fails for port 0 or an open socket, neither the case.
                let _ = socket.listen(CONTROL_PORT);
                socket.set_ack_delay(None);
                socket.set_keep_alive(Some(Duration::from_millis(KEEP_ALIVE_MS)));
                socket.set_timeout(Some(Duration::from_millis(
                    parts.ctx.timeouts.idle_ns / 1_000_000,
                )));
                self.conns[i].reset();
                return true;
            }
            (socket.state(), socket.remote_endpoint())
        };
        // Named only when something is said about the peer: formatting it on
        // every turn was an allocation per connection per turn.
        let peer = || remote.map_or_else(|| String::from("?"), |r| r.to_string());
        if self.conns[i].link.is_none() {
            // Established, or already closed by a peer that sent its bytes
            // at once (they are still to be read and judged).
            if !matches!(state, tcp::State::Established | tcp::State::CloseWait) {
                return false;
            }
            let conn = parts
                .ctx
                .channel()
                .and_then(|(config, nonce)| Ok(Connection::server(&config, nonce)?));
            match conn {
                Ok(conn) => self.conns[i].link = Some(Link::new(conn, now_ns)),
                Err(e) => return self.drop_conn(i, parts, &peer(), &e),
            }
        }
        let (events, arrived) = {
            let mut net = parts.ctx.net.borrow_mut();
            let socket = net.tcp(handle);
            let arrived = socket.recv_queue() > 0;
            let Some(link) = self.conns[i].link.as_mut() else {
                return false;
            };
            let clock = parts.ctx.board.clock();
            let start = clock.now_ns();
            let events = link.pump(socket, now_ns);
            // Opening the frames of a transfer is part of checking it.
            if let Job::Receive(_, check_ns) = &mut self.conns[i].job {
                *check_ns += clock.now_ns().saturating_sub(start);
            }
            (events, arrived)
        };
        let peer_id = self.peer_id(i);
        // Any byte from a peer renews its leases, also the part of a long
        // chunk that a slow link delivers.
        if let (true, Some(id)) = (arrived, peer_id) {
            parts.replicas.heard_from(id, now_ns);
        }
        let events = match events {
            Ok(e) => e,
            Err(e) => return self.drop_conn(i, parts, &peer(), &ControlError::Channel(e)),
        };
        let mut busy = !events.is_empty();
        for event in events {
            match event {
                // A peer that reaches us is reachable: sessions waiting to
                // reconnect to it need not wait out their backoff.
                Event::Established(_) => {
                    if let Some(remote) = remote {
                        parts.sessions.retry_to(parts.ctx, remote.addr, now_ns);
                    }
                }
                Event::Message(msg) => {
                    if let Err(e) = self.on_message(i, msg, parts, &peer()) {
                        return self.drop_conn(i, parts, &peer(), &e);
                    }
                }
            }
        }
        if let Job::AwaitFetch(task_id) = self.conns[i].job {
            self.conns[i].job = Job::Idle;
            if let Err(e) = self.fetch(i, parts, task_id) {
                return self.drop_conn(i, parts, &peer(), &e);
            }
        }
        busy |= self.feed(i, parts.turn.events);
        let mut net = parts.ctx.net.borrow_mut();
        let socket = net.tcp(handle);
        if let Some(link) = self.conns[i].link.as_mut() {
            link.flush(socket, now_ns);
            // The peer closed its side: answer with ours once all is sent.
            if !socket.may_recv() && link.backlog() == 0 {
                socket.close();
                self.conns[i].reset();
                busy = true;
                drop(net);
                // A graceful close ends the peer's sync sessions here.
                if let Some(id) = peer_id {
                    parts.replicas.end_leases(id, i);
                }
            }
        }
        busy
    }

    /// Node id of the peer on connection `i`, once authenticated.
    fn peer_id(&self, i: usize) -> Option<u64> {
        self.conns[i]
            .link
            .as_ref()
            .and_then(|l| l.conn.peer())
            .map(|h| h.node_id)
    }

    /// The address of the peer on connection `i`.
    fn peer_addr(&self, i: usize, parts: &Parts<'_, '_>) -> Option<IpAddress> {
        parts
            .ctx
            .net
            .borrow_mut()
            .tcp(self.conns[i].handle)
            .remote_endpoint()
            .map(|e| e.addr)
    }

    /// Ends connection `i` for `why` (its peer only), with an event.
    fn drop_conn(
        &mut self,
        i: usize,
        parts: &mut Parts<'_, '_>,
        peer: &str,
        why: &ControlError,
    ) -> bool {
        parts.turn.publish(NodeEvent::PeerDropped {
            peer: peer.into(),
            reason: why.to_string(),
        });
        parts.ctx.net.borrow_mut().tcp(self.conns[i].handle).abort();
        self.conns[i].reset();
        true
    }

    /// Sends the next chunks of a fetch while the socket keeps up, and a
    /// subscriber its new events.
    fn feed(&mut self, i: usize, events: &EventLog) -> bool {
        let conn = &mut self.conns[i];
        let Some(link) = conn.link.as_mut() else {
            return false;
        };
        let mut busy = false;
        if let Job::Send(outgoing) = &mut conn.job {
            while link.backlog() < LOW_WATER {
                let Some(msg) = outgoing.poll_send() else {
                    break;
                };
                if link.send(&msg).is_err() {
                    break;
                }
                busy = true;
            }
        }
        if let Some(console) = conn.console.as_ref() {
            busy |= console::feed(console, link);
        }
        if let Some(after) = conn.subscribed {
            let (records, dropped) = events.after(after);
            let records: Vec<_> = records.take(EVENTS_PER_MESSAGE).cloned().collect();
            if let Some(last) = records.last() {
                conn.subscribed = Some(last.seq);
                busy |= link.send(&Message::Events { records, dropped }).is_ok();
            }
        }
        busy
    }

    fn reply(&mut self, i: usize, msg: &Message) -> Result<(), ControlError> {
        if let Some(link) = self.conns[i].link.as_mut() {
            link.send(msg)?;
        }
        Ok(())
    }

    fn on_message(
        &mut self,
        i: usize,
        msg: Message,
        parts: &mut Parts<'_, '_>,
        peer: &str,
    ) -> Result<(), ControlError> {
        let now_ns = parts.turn.now_ns;
        let job = core::mem::replace(&mut self.conns[i].job, Job::Idle);
        match (job, msg) {
            (job, Message::Ping { nonce }) => {
                self.conns[i].job = job;
                self.reply(i, &Message::Pong { nonce })
            }
            (job, Message::List) => {
                self.conns[i].job = job;
                let tasks = list(parts, now_ns);
                self.reply(i, &Message::Tasks(tasks))
            }
            (job, Message::Status) => {
                self.conns[i].job = job;
                let status = status(parts, now_ns);
                self.reply(i, &Message::NodeStatus(status))
            }
            // Unanswered; it may come in the middle of a sync the owner
            // broke off, which is over with it.
            (job, Message::TaskEnded { task_id, epoch }) => {
                self.conns[i].job = match job {
                    Job::Receive(..) => Job::Idle,
                    job => job,
                };
                if let Some(epoch) = parts.replicas.ended(task_id, epoch) {
                    parts.turn.publish(NodeEvent::ReplicaDropped {
                        task_id,
                        epoch,
                        owner: peer.into(),
                    });
                }
                Ok(())
            }
            (job, Message::Subscribe { after }) => {
                self.conns[i].job = job;
                self.conns[i].subscribed = Some(after);
                // The backlog goes out with this turn's feed; an empty
                // answer now tells the subscriber it is registered.
                let (_, dropped) = parts.turn.events.after(after);
                self.reply(
                    i,
                    &Message::Events {
                        records: Vec::new(),
                        dropped,
                    },
                )
            }
            (job, Message::ConsoleOpen) => {
                self.conns[i].job = job;
                if self.conns[i].console.is_none() {
                    self.conns[i].console = Some(console::open(parts.ctx, peer));
                }
                Ok(())
            }
            (job, Message::ConsoleInput { bytes }) => {
                self.conns[i].job = job;
                match console::input(self.conns[i].console.as_ref(), &bytes) {
                    Some(refusal) => self.reply(i, &refusal),
                    None => Ok(()),
                }
            }
            (job, Message::ModuleQuery { module }) => {
                self.conns[i].job = job;
                let reply = modules::held(parts.ctx, module);
                self.reply(i, &reply)
            }
            (
                job @ (Job::Idle | Job::ReceiveModule(_)),
                Message::ModulePart {
                    offset,
                    total_len,
                    bytes,
                },
            ) => {
                let mut incoming = match job {
                    Job::ReceiveModule(incoming) => incoming,
                    _ => modules::Incoming::default(),
                };
                match incoming.part(parts.ctx, parts.turn, peer, (offset, total_len, &bytes)) {
                    None => {
                        self.conns[i].job = Job::ReceiveModule(incoming);
                        Ok(())
                    }
                    Some(reply) => self.reply(i, &reply),
                }
            }
            (Job::Idle, Message::StartTask { args, tag }) => {
                let reply = start_task(parts, &args, tag, peer);
                self.reply(i, &reply)
            }
            (Job::Idle, Message::KillTask { task_id }) => {
                let reply = kill_task(parts, task_id, peer);
                self.reply(i, &reply)
            }
            (Job::Idle, Message::SetStandby { task_id, standby }) => {
                let reply = set_standby(parts, task_id, standby.as_deref());
                self.reply(i, &reply)
            }
            (Job::Idle, Message::Fetch { task_id }) => self.fetch(i, parts, task_id),
            (
                Job::Idle,
                Message::MigrateTo {
                    task_id,
                    to,
                    downtime_ms,
                },
            ) => {
                let local = parts
                    .ctx
                    .tasks
                    .borrow_mut()
                    .by_task_id(task_id)
                    .map(|e| e.id);
                let started = match (local, parts.discovery.resolve(&to)) {
                    (Some(id), Ok(to)) => parts.migrations.start(
                        parts.ctx,
                        parts.turn,
                        id,
                        to,
                        downtime_ms,
                        Some((i, peer.into())),
                    ),
                    (None, _) => Err(ControlError::NoTask(format!("{task_id:#x}"))),
                    (_, Err(e)) => Err(e),
                };
                match started {
                    Ok((id, _)) => {
                        self.conns[i].job = Job::AwaitMigration(id);
                        Ok(())
                    }
                    Err(ControlError::NoTask(_)) => {
                        self.reply(i, &Message::Nack(NackReason::UnknownTask))
                    }
                    Err(_) => self.reply(i, &Message::Nack(NackReason::MigrationFailed)),
                }
            }
            (Job::Idle, Message::Offer(offer)) => self.on_offer(i, parts, offer),
            (Job::Receive(mut incoming, check_ns), msg) => {
                let is_commit = matches!(msg, Message::Commit { .. });
                // Decoding and checking the chunk (at the commit, the root).
                let clock = parts.ctx.board.clock();
                let start = clock.now_ns();
                let answer = incoming.on_message(msg);
                let check_ns = check_ns + clock.now_ns().saturating_sub(start);
                match answer {
                    Ok(Some(Message::Ack { epoch, .. })) if is_commit => {
                        self.accept(i, parts, *incoming, epoch, check_ns)
                    }
                    Ok(Some(reply)) => {
                        self.conns[i].job = Job::Receive(incoming, check_ns);
                        self.reply(i, &reply)
                    }
                    Ok(None) => {
                        self.conns[i].job = Job::Receive(incoming, check_ns);
                        Ok(())
                    }
                    Err(e) => match e.nack() {
                        Some(nack) => self.reply(i, &nack),
                        None => Ok(()),
                    },
                }
            }
            (Job::Send(mut outgoing), msg) => {
                match outgoing.on_message(msg) {
                    Ok(()) if outgoing.phase() != SendPhase::Acked => {
                        self.conns[i].job = Job::Send(outgoing)
                    }
                    // Acked, or refused by the fetching peer: done either way.
                    _ => {}
                }
                Ok(())
            }
            (job @ (Job::AwaitMigration(_) | Job::AwaitFetch(_)), _) => {
                self.conns[i].job = job;
                self.reply(i, &Message::Nack(NackReason::Busy))
            }
            (_, Message::Nack(_)) => Ok(()),
            (job, _) => {
                self.conns[i].job = job;
                self.reply(i, &Message::Nack(NackReason::UnexpectedMessage))
            }
        }
    }

    /// Answers `Fetch`: a checkpoint of the task as it is now, sent as a
    /// copy; the task keeps running.
    fn fetch(
        &mut self,
        i: usize,
        parts: &mut Parts<'_, '_>,
        task_id: u64,
    ) -> Result<(), ControlError> {
        let facts = parts.ctx.board.facts();
        let capture = {
            let mut tasks = parts.ctx.tasks.borrow_mut();
            let Some(e) = tasks.by_task_id(task_id) else {
                return self.reply(i, &Message::Nack(NackReason::UnknownTask));
            };
            if !e.ready_for_capture() {
                self.conns[i].job = Job::AwaitFetch(task_id);
                return Ok(());
            }
            e.capture(e.epoch, &facts, None, parts.ctx.board.clock())
                .map_err(ControlError::Task)?
        };
        let replica = Replica::advance(None, capture)?;
        let outgoing = Outgoing::new(Transfer::Copy, task_id, replica, None)?;
        self.reply(i, &outgoing.offer())?;
        self.conns[i].job = Job::Send(Box::new(outgoing));
        Ok(())
    }

    fn on_offer(
        &mut self,
        i: usize,
        parts: &mut Parts<'_, '_>,
        offer: Offer,
    ) -> Result<(), ControlError> {
        let refuse = match offer.transfer {
            // Copies go to inspectors, not to nodes.
            Transfer::Copy => Some(NackReason::UnexpectedMessage),
            // The owner does not take replicas of its own task (unless the
            // peer runs it at a newer epoch), nor older replicas.
            Transfer::Replicate | Transfer::Standby => self.replica_refusal(i, parts, &offer),
            Transfer::Migrate => None,
        };
        if let Some(reason) = refuse {
            return self.reply(i, &Message::Nack(reason));
        }
        let running = parts
            .ctx
            .tasks
            .borrow_mut()
            .by_task_id(offer.task_id)
            .map(|e| e.epoch);
        let policy = Policy {
            // The received bytes, the resumed task and a replica fit together.
            max_len: free_heap(parts.ctx.board) / 3,
            kinds: parts.ctx.tasks.borrow().catalog().kinds(),
            known: parts.replicas.known(offer.task_id, running),
        };
        let replica = parts.replicas.get(offer.task_id).map(|r| r.replica.clone());
        let mut incoming = Incoming::with_shared_replica(policy, replica);
        match incoming.on_message(Message::Offer(offer)) {
            Ok(Some(ack @ Message::Ack { .. })) => {
                // The migration this node already accepted, offered again
                // after a lost ack: ack again, nothing else changes.
                self.reply(i, &ack)
            }
            Ok(Some(reply)) => {
                self.conns[i].job = Job::Receive(Box::new(incoming), 0);
                self.reply(i, &reply)
            }
            Ok(None) => Ok(()),
            Err(TransferError::OutOfMemory) => self.reply(i, &Message::Nack(NackReason::TooLarge)),
            Err(e) => match e.nack() {
                Some(nack) => self.reply(i, &nack),
                None => Ok(()),
            },
        }
    }

    /// Why a replica offer must be refused, if it must; a peer running the
    /// task at a newer epoch than this node wins (the copy here stops).
    fn replica_refusal(
        &mut self,
        i: usize,
        parts: &mut Parts<'_, '_>,
        offer: &Offer,
    ) -> Option<NackReason> {
        let running = parts
            .ctx
            .tasks
            .borrow_mut()
            .by_task_id(offer.task_id)
            .map(|e| (e.id, e.epoch, e.state));
        let verdict = parts.replicas.verdict(
            offer,
            running.map(|(_, epoch, state)| {
                let migrating =
                    state == TaskState::Migrating || parts.migrations.is_migrating(offer.task_id);
                (epoch, migrating)
            }),
        );
        match verdict {
            ReplicaVerdict::Accept => None,
            ReplicaVerdict::Refuse(reason) => Some(reason),
            ReplicaVerdict::StepDownFirst => {
                let id = running.map(|(id, _, _)| id)?;
                let winner = self.peer_id(i).unwrap_or(0);
                let from = self
                    .peer_addr(i, parts)
                    .map_or_else(|| String::from("?"), |a| a.to_string());
                step_down(
                    parts.ctx,
                    parts.replicas,
                    parts.turn,
                    id,
                    winner,
                    offer.epoch,
                    &from,
                );
                match parts.replicas.verdict(offer, None) {
                    ReplicaVerdict::Refuse(reason) => Some(reason),
                    _ => None,
                }
            }
        }
    }

    /// The commit of an offer at `epoch` passed every check (which took
    /// `check_ns`): keeps a replica, or resumes a migrated task here; only
    /// then acks, with what it cost.
    fn accept(
        &mut self,
        i: usize,
        parts: &mut Parts<'_, '_>,
        mut incoming: Incoming<'static>,
        epoch: u64,
        check_ns: u64,
    ) -> Result<(), ControlError> {
        let now_ns = parts.turn.now_ns;
        let mut times = ReceiverTimes {
            check_us: check_ns / 1000,
            rebuild_us: 0,
        };
        let (Some(offer), Some(replica)) = (incoming.offer().cloned(), incoming.take_replica())
        else {
            return self.reply(i, &Message::Nack(NackReason::UnexpectedMessage));
        };
        let owner = self.peer_id(i).unwrap_or(0);
        match offer.transfer {
            Transfer::Migrate => {
                // Another connection may have delivered the task since this
                // offer was checked: one copy only.
                let running = parts
                    .ctx
                    .tasks
                    .borrow_mut()
                    .by_task_id(offer.task_id)
                    .map(|e| e.epoch);
                if let Some(known) = parts.replicas.known(offer.task_id, running) {
                    if known.checkpoint_hash == Some(offer.checkpoint_hash) {
                        return self.reply(i, &Message::Ack { epoch, times });
                    }
                    if known.epoch >= offer.epoch {
                        let stale = NackReason::StaleEpoch { known: known.epoch };
                        return self.reply(i, &Message::Nack(stale));
                    }
                }
                // Every chunk was checked as it arrived and the root at the
                // commit: the task is rebuilt from the chunks as they are.
                let clock = parts.ctx.board.clock();
                let start = clock.now_ns();
                let resumed = replica
                    .restore()
                    .map_err(|e| ResumeError::Refused(alloc::format!("bad checkpoint: {e}")))
                    .and_then(|r| parts.ctx.tasks.borrow().resume_restored(r));
                times.rebuild_us = clock.now_ns().saturating_sub(start) / 1000;
                let resumed = match resumed {
                    Ok(r) => r,
                    Err(why) => {
                        parts.turn.publish(NodeEvent::CheckpointRefused {
                            task_id: offer.task_id,
                            reason: why.to_string(),
                        });
                        let nack = match why {
                            ResumeError::MissingModule(module) => {
                                NackReason::MissingModule { module }
                            }
                            ResumeError::Refused(_) => NackReason::InvalidCheckpoint,
                        };
                        return self.reply(i, &Message::Nack(nack));
                    }
                };
                drop(replica);
                let progress = resumed.task.task.progress();
                let task = {
                    let mut tasks = parts.ctx.tasks.borrow_mut();
                    let id = tasks.add_with_id(
                        resumed.task,
                        None,
                        offer.epoch,
                        offer.task_id,
                        resumed.tag,
                    );
                    tasks.get_mut(id).map(|e| e.task_ref())
                };
                parts
                    .replicas
                    .owned_here(offer.task_id, offer.epoch, Some(offer.checkpoint_hash));
                // The sender keeps the checkpoint it sent: it hears when
                // the task ends.
                if let Some(from) = self.peer_addr(i, parts) {
                    let at = IpEndpoint::new(from, CONTROL_PORT);
                    parts.notices.hold(offer.task_id, offer.epoch, at);
                }
                if let Some(task) = task {
                    parts.turn.publish(NodeEvent::TaskArrived {
                        task,
                        epoch: offer.epoch,
                        progress: progress.done,
                        progress_total: progress.total,
                        from: resumed.from,
                    });
                }
            }
            Transfer::Replicate | Transfer::Standby => {
                let task_id = offer.task_id;
                let standby = offer.transfer == Transfer::Standby;
                parts.replicas.keep(
                    task_id,
                    HeldReplica {
                        replica: Rc::new(replica),
                        offer,
                        owner,
                        updated_ns: now_ns,
                    },
                    parts.ctx.replica_budget(),
                );
                if let (true, Some(from)) = (standby, self.peer_addr(i, parts)) {
                    parts.replicas.take_lease(task_id, owner, from, i, now_ns);
                }
            }
            Transfer::Copy => {}
        }
        self.reply(i, &Message::Ack { epoch, times })
    }
}
