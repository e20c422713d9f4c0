//! The control service on TCP port [`CONTROL_PORT`] and live migration of a
//! task over Ethernet (see `docs/protocol.md`).
//!
//! Everything here is a state machine polled by the run loop ([`Control`],
//! through its [`ControlService`]): the shell, the task runner and the
//! network keep going while a migration runs. Each TCP connection carries a
//! [`tern_protocol::Connection`]; the service:
//! - serves several peers at once ([`LISTENERS`] listening sockets): `List`,
//!   `Fetch`, `Ping`, `MigrateTo`, and offers (`Replicate` copies kept as
//!   this node's replica of a task, `Migrate` transfers that resume the
//!   task here);
//! - migrates a task out (shell `migrate`, or `MigrateTo`): pre-copy rounds
//!   while the task runs, then a stop-and-copy whose need names only the
//!   chunks that differ from the receiver's replica. The sender owns the
//!   task until the receiver's ack; a link lost after the commit leaves the
//!   task paused and the offer is repeated until the receiver answers.
//!
//! A peer that fails the handshake, sends garbage or replays frames loses
//! its connection only. Sync sessions (standby replicas, failover and
//! failback) are in [`sync`]; the chunks of both are compressed by
//! [`encoder`].

mod encoder;
mod sync;

pub use encoder::CodecMode;

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::rc::Rc;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::cell::RefCell;
use core::fmt::Write;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::time::Duration;
use smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Address};
use tern_hal::{Board, EntropyError};
use tern_migration::Limits;
use tern_protocol::{
    ChannelError, Config, Connection, Event, Hello, Incoming, Known, Message, MigrationReport,
    NackReason, Offer, Outgoing, Policy, Psk, Replica, Security, SendPhase, TaskRole, TaskStatus,
    TaskSummary, Transfer, TransferError, PROTOCOL_VERSION,
};
use tern_sync::monitor::ThroughputMeter;
use tern_workloads::registry;

use encoder::{ChunkEncoder, Tally};

use crate::kernel::{Kernel, Service, ServiceStatus, SharedEntropy};
use crate::migrate::{capture, free_heap, resume, Resumed};
use crate::net::NetStack;
use crate::shell::{Command, CommandResult};
use crate::tasks::{parse_id, TaskState, TaskTable};

/// The TCP port of the control service.
pub const CONTROL_PORT: u16 = 4470;

/// Listening sockets: an inspector and a migrating peer (and a reconnecting
/// one) can be connected at the same time.
pub const LISTENERS: usize = 3;

/// Receive and send buffer of each control socket (above 64 KiB, TCP
/// window scaling lets a peer send that much unacknowledged).
const SOCKET_BUFFER: usize = 256 * 1024;

/// Extra network turns per run-loop turn while a transfer streams.
const STREAM_TURNS: usize = 16;

/// A sender produces the next chunk only when fewer bytes than this wait
/// for the socket, so a transfer holds about two chunks in memory.
const LOW_WATER: usize = 128 * 1024;

/// Pre-copy rounds at most before the stop-and-copy.
pub const MAX_PRECOPY_ROUNDS: u32 = 3;

/// First local port of outgoing connections.
const FIRST_LOCAL_PORT: u16 = 49152;

/// TCP keep-alive probes on idle control connections.
const KEEP_ALIVE_MS: u64 = 2_000;

/// Replicas may hold one part in this many of the heap.
const REPLICA_SHARE: u64 = 4;

/// A migration's throughput samples span at least this long (seconds).
const METER_WINDOW_S: f64 = 0.1;

/// Weight of the newest throughput sample.
const METER_ALPHA: f64 = 0.3;

/// Seconds of a time in nanoseconds.
fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// The node id made of a MAC address: its 48 bits.
pub fn node_id_from_mac(mac: [u8; 6]) -> u64 {
    mac.iter().fold(0, |id, &b| (id << 8) | u64::from(b))
}

/// How long the service waits for peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// A connection attempt without an answer fails after this.
    pub connect_ns: u64,
    /// A connection on which nothing moved (no byte received, none
    /// accepted by the socket) while an answer was due is broken after this.
    pub idle_ns: u64,
    /// First pause before reconnecting in doubt; doubles at each attempt.
    pub retry_ns: u64,
    /// Longest pause between reconnection attempts in doubt.
    pub retry_max_ns: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect_ns: 5_000_000_000,
            idle_ns: 10_000_000_000,
            retry_ns: 1_000_000_000,
            retry_max_ns: 8_000_000_000,
        }
    }
}

/// Why a migration could not start or did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No key and no explicit insecure mode.
    #[error("no key configured (set one with 'key <64 hex digits>' or 'key insecure'); migration refused")]
    NoKey,
    /// The board has no entropy source for the handshake nonces.
    #[error("no random number generator on this board; migration refused")]
    NoEntropy,
    /// The entropy source failed.
    #[error("{0}")]
    Entropy(EntropyError),
    /// The node has no IPv4 address to connect from.
    #[error("this node has no IPv4 address (set one with 'net <address>/<prefix>')")]
    NoAddress,
    /// The destination is not `address[:port]`.
    #[error("'{0}' is not <IPv4 address>[:<port>]")]
    BadAddress(String),
    /// No such task here.
    #[error("no task {0}")]
    NoTask(String),
    /// The task is finished.
    #[error("task {0} has finished; there is nothing to migrate")]
    Finished(u32),
    /// A migration of the task is already under way.
    #[error("task {0} is already migrating")]
    AlreadyMigrating(u32),
    /// The task finished or was killed while its pre-copy ran.
    #[error("the task finished or was killed during the migration")]
    TaskGone,
    /// Capturing or resuming the task failed.
    #[error("{0}")]
    Task(String),
    /// smoltcp refused to open the connection.
    #[error("cannot connect: {0}")]
    Connect(tcp::ConnectError),
    /// The peer refused the connection.
    #[error("connection refused")]
    Refused,
    /// The connection was reset, timed out in TCP or closed by the peer.
    #[error("connection lost or closed by the peer")]
    Closed,
    /// Nothing came back in time.
    #[error("no answer from the peer within {0} ms")]
    Timeout(u64),
    /// The handshake or the sealed channel failed.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// The transfer failed (a refusal by the peer is `Refused`).
    #[error(transparent)]
    Transfer(#[from] TransferError),
    /// The peer sent a message that does not belong to a migration.
    #[error("unexpected message from the peer")]
    Unexpected,
    /// A sync session of the task is already running.
    #[error("task {0} already has a sync session")]
    AlreadySynced(u32),
    /// No sync session of the task runs.
    #[error("task {0} has no sync session")]
    NotSynced(u32),
}

/// A task this node keeps a replica of: the last checkpoint received (or
/// sent away), indexed for deduplication.
struct HeldReplica {
    replica: Rc<Replica>,
    offer: Offer,
    owner: u64,
    updated_ns: u64,
}

/// One authenticated connection on a smoltcp socket: the protocol machine
/// and the bytes the socket has not taken yet.
struct Link {
    conn: Connection,
    pending: Vec<u8>,
    sent: usize,
    written: u64,
    active_ns: u64,
}

impl Link {
    fn new(conn: Connection, now_ns: u64) -> Self {
        let mut link = Self {
            conn,
            pending: Vec::new(),
            sent: 0,
            written: 0,
            active_ns: now_ns,
        };
        link.take_output();
        link
    }

    fn take_output(&mut self) {
        let out = self.conn.take_output();
        if self.sent == self.pending.len() {
            self.pending.clear();
            self.sent = 0;
        }
        self.pending.extend_from_slice(&out);
    }

    /// Seals `msg` for sending.
    fn send(&mut self, msg: &Message) -> Result<(), ChannelError> {
        self.conn.send(msg)?;
        self.take_output();
        Ok(())
    }

    /// Bytes not yet taken by the socket.
    fn backlog(&self) -> usize {
        self.pending.len() - self.sent
    }

    /// Writes what the socket takes, then reads what it has; returns the
    /// peer's events. A channel error ends the connection.
    fn pump(&mut self, socket: &mut tcp::Socket, now_ns: u64) -> Result<Vec<Event>, ChannelError> {
        self.flush(socket, now_ns);
        let mut events = Vec::new();
        while socket.can_recv() {
            let r = socket.recv(|data| (data.len(), self.conn.receive(data)));
            match r {
                Ok(Ok(mut e)) => {
                    self.active_ns = now_ns;
                    events.append(&mut e);
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => break,
            }
        }
        self.take_output();
        self.flush(socket, now_ns);
        Ok(events)
    }

    fn flush(&mut self, socket: &mut tcp::Socket, now_ns: u64) {
        while self.backlog() > 0 && socket.can_send() {
            match socket.send_slice(&self.pending[self.sent..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    self.sent += n;
                    self.written += n as u64;
                    self.active_ns = now_ns;
                }
            }
        }
    }
}

/// What a server connection is doing for its peer.
enum Job {
    /// Waiting for a request.
    Idle,
    /// Receiving an offered checkpoint.
    Receive(Incoming<'static>),
    /// Sending a fetched checkpoint.
    Send(Outgoing),
    /// A `MigrateTo` runs: its answer goes back when it ends.
    AwaitMigration(u64),
}

/// A listening socket and the connection it accepted, if any.
struct ServerConn {
    handle: SocketHandle,
    link: Option<Link>,
    job: Job,
}

/// Where an outgoing migration is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// TCP connection under way.
    Connecting,
    /// Handshake under way.
    Handshake,
    /// Sending a replica while the task runs.
    PreCopy,
    /// The task is paused; sending the migration checkpoint.
    StopCopy,
    /// The link broke after the commit: waiting to reconnect.
    Reconnect {
        /// When to try again.
        at_ns: u64,
    },
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

/// One outgoing migration.
struct Migration {
    id: u64,
    local_id: u32,
    task_id: u64,
    label: String,
    to: IpEndpoint,
    handle: SocketHandle,
    link: Option<Link>,
    stage: Stage,
    stage_ns: u64,
    outgoing: Option<Outgoing>,
    /// The commit of the migration checkpoint went out without an ack.
    in_doubt: bool,
    /// The state to give the task back if the migration fails.
    resume_state: TaskState,
    precopy_rounds: u32,
    last_need: Option<usize>,
    need: usize,
    round_start_bytes: u64,
    wire_bytes: u64,
    started_ns: u64,
    paused_ns: Option<u64>,
    peer: Option<Hello>,
    retry_ns: u64,
    /// Compresses the chunks (codec per chunk at the measured throughput).
    encoder: ChunkEncoder,
    /// The chunks sent so far, before and after compression.
    tally: Tally,
    /// Throughput the receiver acknowledges while the socket stays backlogged.
    meter: ThroughputMeter,
}

/// The control service's state, shared with the shell commands.
pub struct Control {
    board: &'static dyn Board,
    net: Rc<RefCell<NetStack>>,
    tasks: Rc<RefCell<TaskTable>>,
    entropy: Option<SharedEntropy>,
    security: Option<Security>,
    node_id: u64,
    servers: Vec<ServerConn>,
    migrations: Vec<Migration>,
    /// Sockets of finished migrations, closing; dropped once closed or at
    /// the deadline.
    closing: Vec<(SocketHandle, u64)>,
    replicas: BTreeMap<u64, HeldReplica>,
    accepted: BTreeMap<u64, Known>,
    /// Sync sessions keeping standbys of tasks run here.
    sessions: Vec<sync::Session>,
    /// Leases on replicas this node is the standby of.
    leases: BTreeMap<u64, sync::Lease>,
    /// Lease of a standby (and an owner's limit for a silent link).
    lease_ns: u64,
    next_port: u16,
    next_migration: u64,
    timeouts: Timeouts,
    /// How the chunks of migrations and syncs started here are compressed.
    codec_mode: CodecMode,
}

impl Control {
    /// The service of the node whose network stack is `net`, with the
    /// board's random number generator if it has one.
    pub fn new(
        board: &'static dyn Board,
        net: Rc<RefCell<NetStack>>,
        tasks: Rc<RefCell<TaskTable>>,
        entropy: Option<SharedEntropy>,
    ) -> Self {
        let node_id = node_id_from_mac(net.borrow().mac_address());
        let servers = (0..LISTENERS)
            .map(|_| ServerConn {
                handle: net.borrow_mut().add_tcp(SOCKET_BUFFER, SOCKET_BUFFER),
                link: None,
                job: Job::Idle,
            })
            .collect();
        Self {
            board,
            net,
            tasks,
            entropy,
            security: None,
            node_id,
            servers,
            migrations: Vec::new(),
            closing: Vec::new(),
            replicas: BTreeMap::new(),
            accepted: BTreeMap::new(),
            sessions: Vec::new(),
            leases: BTreeMap::new(),
            lease_ns: sync::DEFAULT_LEASE_NS,
            next_port: FIRST_LOCAL_PORT,
            next_migration: 1,
            timeouts: Timeouts::default(),
            codec_mode: CodecMode::Adaptive,
        }
    }

    /// Sets the key (or the explicit insecure mode); `None` refuses every
    /// connection.
    pub fn set_security(&mut self, security: Option<Security>) {
        self.security = security;
    }

    /// The configured key.
    pub fn security(&self) -> Option<&Security> {
        self.security.as_ref()
    }

    /// Gives the service the board's random number generator.
    pub fn set_entropy(&mut self, entropy: SharedEntropy) {
        self.entropy = Some(entropy);
    }

    /// Replaces the timeouts (tests shorten them).
    pub fn set_timeouts(&mut self, timeouts: Timeouts) {
        self.timeouts = timeouts;
    }

    fn hello(&self) -> Hello {
        let facts = self.board.facts();
        Hello {
            version: PROTOCOL_VERSION,
            isa: facts.isa.name().into(),
            board: facts.board.into(),
            node_id: self.node_id,
            task_kinds: registry().kinds().iter().map(|k| k.name.into()).collect(),
            insecure: false,
        }
    }

    /// A connection's configuration and a fresh nonce, or why none can be
    /// made: no key, no random number generator.
    fn channel(&self) -> Result<(Config, [u8; 32]), ControlError> {
        let (security, entropy) = self.prerequisites()?;
        let mut nonce = [0; 32];
        entropy
            .borrow_mut()
            .fill(&mut nonce)
            .map_err(ControlError::Entropy)?;
        Ok((Config::new(self.hello(), Some(security.clone())), nonce))
    }

    /// The key and the random number generator every connection needs.
    fn prerequisites(&self) -> Result<(&Security, &SharedEntropy), ControlError> {
        let security = self.security.as_ref().ok_or(ControlError::NoKey)?;
        let entropy = self.entropy.as_ref().ok_or(ControlError::NoEntropy)?;
        Ok((security, entropy))
    }

    /// Starts migrating the task with local id `id` to `to`; progress and
    /// the result are printed as notices. `requester` is the server
    /// connection waiting for a [`Message::Migrated`] answer, if any.
    fn start_migration(
        &mut self,
        id: u32,
        to: IpEndpoint,
        now_ns: u64,
        requester: Option<usize>,
    ) -> Result<String, ControlError> {
        // Refuse before touching the task: no key, no nonces, no address.
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
        if self.migrations.iter().any(|m| m.task_id == task_id) {
            return Err(ControlError::AlreadyMigrating(id));
        }
        let handle = self.net.borrow_mut().add_tcp(SOCKET_BUFFER, SOCKET_BUFFER);
        let mid = self.next_migration;
        self.next_migration += 1;
        let mut m = Migration {
            id: mid,
            local_id: id,
            task_id,
            label,
            to,
            handle,
            link: None,
            stage: Stage::Connecting,
            stage_ns: now_ns,
            outgoing: None,
            in_doubt: false,
            resume_state: state,
            precopy_rounds: 0,
            last_need: None,
            need: 0,
            round_start_bytes: 0,
            wire_bytes: 0,
            started_ns: now_ns,
            paused_ns: None,
            peer: None,
            retry_ns: self.timeouts.retry_ns,
            encoder: ChunkEncoder::new(self.codec_mode),
            tally: Tally::default(),
            meter: ThroughputMeter::new(METER_WINDOW_S, METER_ALPHA),
        };
        if let Err(e) = self.connect(&mut m, now_ns) {
            self.net.borrow_mut().remove_tcp(handle);
            return Err(e);
        }
        let line = format!("migrate: {} -> {}: connecting", m.label, m.to);
        if let Some(i) = requester {
            self.servers[i].job = Job::AwaitMigration(mid);
        }
        self.migrations.push(m);
        Ok(line)
    }

    fn connect(&mut self, m: &mut Migration, now_ns: u64) -> Result<(), ControlError> {
        self.open(m.handle, m.to)?;
        m.stage = Stage::Connecting;
        m.stage_ns = now_ns;
        m.link = None;
        Ok(())
    }

    /// Opens the TCP connection of socket `handle` to `to`.
    fn open(&mut self, handle: SocketHandle, to: IpEndpoint) -> Result<(), ControlError> {
        let port = self.next_port;
        self.next_port = if port == u16::MAX {
            FIRST_LOCAL_PORT
        } else {
            port + 1
        };
        let mut net = self.net.borrow_mut();
        net.connect(handle, to, port)
            .map_err(ControlError::Connect)?;
        let socket = net.tcp(handle);
        socket.set_ack_delay(None);
        socket.set_keep_alive(Some(Duration::from_millis(KEEP_ALIVE_MS)));
        socket.set_timeout(Some(Duration::from_millis(
            self.timeouts.idle_ns / 1_000_000,
        )));
        Ok(())
    }

    /// One turn: serves the listening sockets, advances the migrations,
    /// frees closed sockets; whether anything happened.
    pub fn poll(&mut self, now_ns: u64, out: &mut dyn Write) -> bool {
        let mut busy = self.poll_once(now_ns, out);
        // While a transfer streams, the network gets more turns than the
        // run loop's one per task step: each turn moves at most a socket
        // buffer.
        for _ in 0..STREAM_TURNS {
            if !self.streaming() || !self.net.borrow_mut().poll(now_ns) {
                break;
            }
            busy |= self.poll_once(now_ns, out);
        }
        busy
    }

    /// Whether a transfer is sending or receiving chunks right now.
    fn streaming(&self) -> bool {
        let sending = |o: &Outgoing| o.phase() == SendPhase::Sending;
        self.migrations.iter().any(|m| {
            m.link.as_ref().is_some_and(|l| l.backlog() > 0)
                || m.outgoing.as_ref().is_some_and(sending)
        }) || self.servers.iter().any(|s| match &s.job {
            Job::Receive(_) => true,
            Job::Send(o) => sending(o),
            Job::Idle | Job::AwaitMigration(_) => false,
        })
    }

    fn poll_once(&mut self, now_ns: u64, out: &mut dyn Write) -> bool {
        let mut busy = false;
        for i in 0..self.servers.len() {
            busy |= self.poll_server(i, now_ns, out);
        }
        busy |= self.poll_sync(now_ns, out);
        let mut i = 0;
        while i < self.migrations.len() {
            let mut m = self.migrations.swap_remove(i);
            let (progress, outcome) = self.poll_migration(&mut m, now_ns, out);
            busy |= progress;
            match outcome {
                None => {
                    self.migrations.push(m);
                    let last = self.migrations.len() - 1;
                    self.migrations.swap(i, last);
                    i += 1;
                }
                Some(outcome) => {
                    busy = true;
                    self.finish_migration(m, outcome, now_ns, out);
                }
            }
        }
        let mut net = self.net.borrow_mut();
        self.closing.retain(|&(h, deadline_ns)| {
            let done = matches!(
                net.tcp(h).state(),
                tcp::State::Closed | tcp::State::TimeWait
            ) || now_ns > deadline_ns;
            if done {
                net.remove_tcp(h);
            }
            !done
        });
        busy
    }

    fn poll_server(&mut self, i: usize, now_ns: u64, out: &mut dyn Write) -> bool {
        let handle = self.servers[i].handle;
        let (state, remote) = {
            let mut net = self.net.borrow_mut();
            let socket = net.tcp(handle);
            if !socket.is_open() {
                // Only fails for port 0 or an open socket, neither the case.
                let _ = socket.listen(CONTROL_PORT);
                socket.set_ack_delay(None);
                socket.set_keep_alive(Some(Duration::from_millis(KEEP_ALIVE_MS)));
                socket.set_timeout(Some(Duration::from_millis(
                    self.timeouts.idle_ns / 1_000_000,
                )));
                self.servers[i].link = None;
                self.servers[i].job = Job::Idle;
                return true;
            }
            (socket.state(), socket.remote_endpoint())
        };
        let peer = remote.map_or_else(|| String::from("?"), |r| r.to_string());
        if self.servers[i].link.is_none() {
            // Established, or already closed by a peer that sent its
            // bytes at once (they are still to be read and judged).
            if !matches!(state, tcp::State::Established | tcp::State::CloseWait) {
                return false;
            }
            match self.channel() {
                Ok((config, nonce)) => match Connection::server(&config, nonce) {
                    Ok(conn) => self.servers[i].link = Some(Link::new(conn, now_ns)),
                    Err(e) => {
                        return self.drop_server(i, &peer, &ControlError::Channel(e), out);
                    }
                },
                Err(e) => return self.drop_server(i, &peer, &e, out),
            }
        }
        let (events, arrived) = {
            let mut net = self.net.borrow_mut();
            let socket = net.tcp(handle);
            let arrived = socket.recv_queue() > 0;
            let Some(link) = self.servers[i].link.as_mut() else {
                return false;
            };
            (link.pump(socket, now_ns), arrived)
        };
        let peer_id = self.servers[i]
            .link
            .as_ref()
            .and_then(|l| l.conn.peer())
            .map(|h| h.node_id);
        // Any byte from a peer renews its leases, also the part of a long
        // chunk that a slow link delivers.
        if let (true, Some(id)) = (arrived, peer_id) {
            self.heard_from(id, now_ns);
        }
        let events = match events {
            Ok(e) => e,
            Err(e) => return self.drop_server(i, &peer, &ControlError::Channel(e), out),
        };
        let mut busy = !events.is_empty();
        for event in events {
            match event {
                // A peer that reaches us is reachable: sessions waiting to
                // reconnect to it need not wait out their backoff.
                Event::Established(_) => {
                    if let Some(remote) = remote {
                        self.retry_sessions_to(remote.addr, now_ns);
                    }
                }
                Event::Message(msg) => {
                    if let Err(e) = self.on_server_message(i, msg, now_ns, out) {
                        return self.drop_server(i, &peer, &e, out);
                    }
                }
            }
        }
        busy |= self.feed_server(i);
        let mut net = self.net.borrow_mut();
        let socket = net.tcp(handle);
        if let Some(link) = self.servers[i].link.as_mut() {
            link.flush(socket, now_ns);
            // The peer closed its side: answer with ours once all is sent.
            if !socket.may_recv() && link.backlog() == 0 {
                socket.close();
                self.servers[i].link = None;
                self.servers[i].job = Job::Idle;
                busy = true;
                drop(net);
                // A graceful close ends the peer's sync sessions here.
                if let Some(id) = peer_id {
                    self.end_leases(id, i);
                }
            }
        }
        busy
    }

    /// Ends server connection `i` for `why` (its peer only), with a notice.
    fn drop_server(
        &mut self,
        i: usize,
        peer: &str,
        why: &ControlError,
        out: &mut dyn Write,
    ) -> bool {
        let _ = writeln!(out, "control: connection from {peer} closed: {why}\r");
        self.net.borrow_mut().tcp(self.servers[i].handle).abort();
        self.servers[i].link = None;
        self.servers[i].job = Job::Idle;
        true
    }

    /// Sends the next chunks of a fetch while the socket keeps up.
    fn feed_server(&mut self, i: usize) -> bool {
        let server = &mut self.servers[i];
        let (Some(link), Job::Send(outgoing)) = (server.link.as_mut(), &mut server.job) else {
            return false;
        };
        let mut busy = false;
        while link.backlog() < LOW_WATER {
            let Some(msg) = outgoing.poll_send() else {
                break;
            };
            if link.send(&msg).is_err() {
                break;
            }
            busy = true;
        }
        busy
    }

    fn reply(&mut self, i: usize, msg: &Message) -> Result<(), ControlError> {
        if let Some(link) = self.servers[i].link.as_mut() {
            link.send(msg)?;
        }
        Ok(())
    }

    fn on_server_message(
        &mut self,
        i: usize,
        msg: Message,
        now_ns: u64,
        out: &mut dyn Write,
    ) -> Result<(), ControlError> {
        let job = core::mem::replace(&mut self.servers[i].job, Job::Idle);
        match (job, msg) {
            (job, Message::Ping { nonce }) => {
                self.servers[i].job = job;
                self.reply(i, &Message::Pong { nonce })
            }
            (job, Message::List) => {
                self.servers[i].job = job;
                let tasks = self.list(now_ns);
                self.reply(i, &Message::Tasks(tasks))
            }
            (Job::Idle, Message::Fetch { task_id }) => self.fetch(i, task_id),
            (Job::Idle, Message::MigrateTo { task_id, to }) => {
                let local = self.tasks.borrow_mut().by_task_id(task_id).map(|e| e.id);
                let started = match (local, parse_endpoint(&to)) {
                    (Some(id), Ok(to)) => self.start_migration(id, to, now_ns, Some(i)),
                    (None, _) => Err(ControlError::NoTask(format!("{task_id:#x}"))),
                    (_, Err(e)) => Err(e),
                };
                match started {
                    Ok(line) => {
                        let _ = writeln!(out, "{line} (requested by a peer)\r");
                        Ok(())
                    }
                    Err(ControlError::NoTask(_)) => {
                        self.reply(i, &Message::Nack(NackReason::UnknownTask))
                    }
                    Err(e) => {
                        let _ = writeln!(out, "migrate: task {task_id:#x}: {e}\r");
                        self.reply(i, &Message::Nack(NackReason::MigrationFailed))
                    }
                }
            }
            (Job::Idle, Message::Offer(offer)) => self.on_offer(i, offer, now_ns, out),
            (Job::Receive(mut incoming), msg) => {
                let is_commit = matches!(msg, Message::Commit { .. });
                match incoming.on_message(msg) {
                    Ok(Some(reply)) if is_commit => self.accept(i, incoming, reply, now_ns, out),
                    Ok(Some(reply)) => {
                        self.servers[i].job = Job::Receive(incoming);
                        self.reply(i, &reply)
                    }
                    Ok(None) => {
                        self.servers[i].job = Job::Receive(incoming);
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
                        self.servers[i].job = Job::Send(outgoing)
                    }
                    // Acked, or refused by the fetching peer: done either way.
                    _ => {}
                }
                Ok(())
            }
            (job @ Job::AwaitMigration(_), _) => {
                self.servers[i].job = job;
                self.reply(i, &Message::Nack(NackReason::Busy))
            }
            (_, Message::Nack(_)) => Ok(()),
            (job, _) => {
                self.servers[i].job = job;
                self.reply(i, &Message::Nack(NackReason::UnexpectedMessage))
            }
        }
    }

    /// Answers `Fetch`: a checkpoint of the task as it is now, sent as a
    /// copy; the task keeps running.
    fn fetch(&mut self, i: usize, task_id: u64) -> Result<(), ControlError> {
        let facts = self.board.facts();
        let bytes = {
            let mut tasks = self.tasks.borrow_mut();
            match tasks.by_task_id(task_id) {
                Some(e) => Some(capture(e, e.epoch, &facts).map_err(ControlError::Task)?),
                None => None,
            }
        };
        let Some(bytes) = bytes else {
            return self.reply(i, &Message::Nack(NackReason::UnknownTask));
        };
        let outgoing = Outgoing::new(Transfer::Copy, task_id, bytes)?;
        self.reply(i, &outgoing.offer())?;
        self.servers[i].job = Job::Send(outgoing);
        Ok(())
    }

    /// Keeps `held` as this node's replica of `task_id`, then forgets the
    /// least recently updated replicas without a lease while replicas hold
    /// more than [`REPLICA_SHARE`] of the heap (replicas of tasks that
    /// migrated away would otherwise fill it, one per task, and leave no
    /// room, or no contiguous room, for the next checkpoint).
    fn keep_replica(&mut self, task_id: u64, held: HeldReplica) {
        self.replicas.insert(task_id, held);
        let budget = self.board.heap_stats().total_bytes / REPLICA_SHARE;
        loop {
            let held: u64 = self
                .replicas
                .values()
                .map(|r| r.replica.bytes().len() as u64)
                .sum();
            if held <= budget {
                return;
            }
            let oldest = self
                .replicas
                .iter()
                .filter(|(id, _)| **id != task_id && !self.leases.contains_key(id))
                .min_by_key(|(_, r)| r.updated_ns)
                .map(|(id, _)| *id);
            match oldest {
                Some(id) => {
                    self.replicas.remove(&id);
                }
                None => return,
            }
        }
    }

    /// What this node knows of a task's ownership: the migrations it
    /// accepted and the epoch it runs the task at.
    fn known(&mut self, task_id: u64) -> Option<Known> {
        let mut known = self.accepted.get(&task_id).cloned();
        if let Some(e) = self.tasks.borrow_mut().by_task_id(task_id) {
            if known.as_ref().is_none_or(|k| k.epoch < e.epoch) {
                known = Some(Known {
                    epoch: e.epoch,
                    checkpoint_hash: None,
                });
            }
        }
        known
    }

    fn on_offer(
        &mut self,
        i: usize,
        offer: Offer,
        now_ns: u64,
        out: &mut dyn Write,
    ) -> Result<(), ControlError> {
        let refuse = match offer.transfer {
            // Copies go to inspectors, not to nodes.
            Transfer::Copy => Some(NackReason::UnexpectedMessage),
            // The owner does not take replicas of its own task (unless the
            // peer runs it at a newer epoch), nor older replicas.
            Transfer::Replicate | Transfer::Standby => {
                let (peer, from) = self.server_peer(i);
                self.replica_refusal(&offer, peer, &from, now_ns, out)
            }
            Transfer::Migrate => None,
        };
        let known = self.known(offer.task_id);
        if let Some(reason) = refuse {
            return self.reply(i, &Message::Nack(reason));
        }
        let policy = Policy {
            // The received bytes, the resumed task and a replica fit together.
            max_len: free_heap(self.board) / 3,
            kinds: registry()
                .kinds()
                .iter()
                .map(|k| (String::from(k.name), k.version))
                .collect(),
            known,
        };
        let replica = self.replicas.get(&offer.task_id).map(|r| r.replica.clone());
        let mut incoming = Incoming::with_shared_replica(policy, replica);
        match incoming.on_message(Message::Offer(offer)) {
            Ok(Some(Message::Ack { epoch })) => {
                // The migration this node already accepted, offered again
                // after a lost ack: ack again, nothing else changes.
                self.reply(i, &Message::Ack { epoch })
            }
            Ok(Some(reply)) => {
                self.servers[i].job = Job::Receive(incoming);
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

    /// The commit of an offer passed every check (`ack` is the answer to
    /// send): keeps a replica, or resumes a migrated task here; only then
    /// acks.
    fn accept(
        &mut self,
        i: usize,
        mut incoming: Incoming<'static>,
        ack: Message,
        now_ns: u64,
        out: &mut dyn Write,
    ) -> Result<(), ControlError> {
        let (Some(offer), Some(bytes)) = (incoming.offer().cloned(), incoming.take_checkpoint())
        else {
            return self.reply(i, &Message::Nack(NackReason::UnexpectedMessage));
        };
        let (owner, _) = self.server_peer(i);
        match offer.transfer {
            Transfer::Migrate => {
                // Another connection may have delivered the task since this
                // offer was checked: one copy only.
                if let Some(known) = self.known(offer.task_id) {
                    if known.checkpoint_hash == Some(offer.checkpoint_hash) {
                        return self.reply(i, &ack);
                    }
                    if known.epoch >= offer.epoch {
                        let stale = NackReason::StaleEpoch { known: known.epoch };
                        return self.reply(i, &Message::Nack(stale));
                    }
                }
                let limits = Limits {
                    max_total_bytes: free_heap(self.board),
                };
                let Resumed {
                    workload,
                    class,
                    task,
                    from,
                    ..
                } = match resume(&bytes, &limits) {
                    Ok(r) => r,
                    Err(why) => {
                        let _ =
                            writeln!(out, "control: refused task {:#x}: {why}\r", offer.task_id);
                        return self.reply(i, &Message::Nack(NackReason::InvalidCheckpoint));
                    }
                };
                drop(bytes);
                let percent = task.progress().percent();
                let id = self.tasks.borrow_mut().add_with_id(
                    workload,
                    class,
                    task,
                    None,
                    offer.epoch,
                    offer.task_id,
                );
                self.accepted.insert(
                    offer.task_id,
                    Known {
                        epoch: offer.epoch,
                        checkpoint_hash: Some(offer.checkpoint_hash),
                    },
                );
                self.replicas.remove(&offer.task_id);
                self.leases.remove(&offer.task_id);
                let _ = writeln!(
                    out,
                    "task {id} ({} {}) resumed at {percent:.1}% from {from} (task {:016x}, epoch {})\r",
                    workload.name(),
                    class.letter(),
                    offer.task_id,
                    offer.epoch
                );
            }
            Transfer::Replicate | Transfer::Standby => {
                let task_id = offer.task_id;
                let standby = offer.transfer == Transfer::Standby;
                self.keep_replica(
                    task_id,
                    HeldReplica {
                        replica: Rc::new(Replica::new(bytes)),
                        offer,
                        owner,
                        updated_ns: now_ns,
                    },
                );
                let from = self
                    .net
                    .borrow_mut()
                    .tcp(self.servers[i].handle)
                    .remote_endpoint()
                    .map(|e| e.addr);
                if let (true, Some(from)) = (standby, from) {
                    self.take_lease(task_id, owner, from, i, now_ns);
                }
            }
            Transfer::Copy => {}
        }
        self.reply(i, &ack)
    }

    /// Node id and address of the peer on server connection `i` (0 and `?`
    /// before its handshake).
    fn server_peer(&mut self, i: usize) -> (u64, String) {
        let id = self.servers[i]
            .link
            .as_ref()
            .and_then(|l| l.conn.peer())
            .map_or(0, |h| h.node_id);
        let from = self
            .net
            .borrow_mut()
            .tcp(self.servers[i].handle)
            .remote_endpoint()
            .map_or_else(|| String::from("?"), |e| e.addr.to_string());
        (id, from)
    }

    /// The `Tasks` answer: tasks run here, then replicas held here.
    fn list(&self, now_ns: u64) -> Vec<TaskSummary> {
        let tasks = self.tasks.borrow();
        let mut list: Vec<TaskSummary> = tasks
            .entries()
            .iter()
            .map(|e| {
                let p = e.task.progress();
                let (last_sync_ms_ago, policy) = self.sync_status(e.task_id, now_ns);
                TaskSummary {
                    task_id: e.task_id,
                    kind: e.task.kind().into(),
                    progress: p.done,
                    progress_total: p.total,
                    owner: self.node_id,
                    epoch: e.epoch,
                    role: TaskRole::Owner,
                    status: match e.state {
                        TaskState::Running => TaskStatus::Running,
                        TaskState::Paused => TaskStatus::Paused,
                        TaskState::Migrating => TaskStatus::Migrating,
                        TaskState::Finished { verified } => TaskStatus::Finished { verified },
                    },
                    last_sync_ms_ago,
                    policy,
                }
            })
            .collect();
        list.extend(self.replicas.iter().map(|(&task_id, r)| TaskSummary {
            task_id,
            kind: r.offer.kind.clone(),
            progress: r.offer.progress,
            progress_total: r.offer.progress_total,
            owner: r.owner,
            epoch: r.offer.epoch,
            role: TaskRole::Standby,
            status: TaskStatus::Replica,
            last_sync_ms_ago: Some(now_ns.saturating_sub(r.updated_ns) / 1_000_000),
            policy: self.leased(task_id).then(Self::standby_policy),
        }));
        list
    }

    /// Advances one outgoing migration; returns whether anything happened
    /// and, once it is over, how it ended.
    fn poll_migration(
        &mut self,
        m: &mut Migration,
        now_ns: u64,
        out: &mut dyn Write,
    ) -> (bool, Option<Outcome>) {
        match self.step_migration(m, now_ns, out) {
            Ok(r) => r,
            Err(e) => (true, self.broken(m, e, now_ns, out)),
        }
    }

    /// The link failed with `why`: before the commit the migration fails
    /// (the task stays here); in doubt it reconnects later.
    fn broken(
        &mut self,
        m: &mut Migration,
        why: ControlError,
        now_ns: u64,
        out: &mut dyn Write,
    ) -> Option<Outcome> {
        self.net.borrow_mut().tcp(m.handle).abort();
        if let Some(link) = m.link.take() {
            m.wire_bytes += link.written;
        }
        if !m.in_doubt {
            return Some(Outcome::Failed(why));
        }
        let _ = writeln!(
            out,
            "migrate: {} -> {}: in doubt after the commit ({why}); task kept paused, reconnecting in {} ms\r",
            m.label,
            m.to,
            m.retry_ns / 1_000_000
        );
        m.stage = Stage::Reconnect {
            at_ns: now_ns + m.retry_ns,
        };
        m.retry_ns = (m.retry_ns * 2).min(self.timeouts.retry_max_ns);
        None
    }

    fn step_migration(
        &mut self,
        m: &mut Migration,
        now_ns: u64,
        out: &mut dyn Write,
    ) -> Result<(bool, Option<Outcome>), ControlError> {
        match m.stage {
            Stage::Reconnect { at_ns } => {
                if now_ns < at_ns {
                    return Ok((false, None));
                }
                self.connect(m, now_ns)?;
                return Ok((true, None));
            }
            Stage::Connecting => {
                let state = self.net.borrow_mut().tcp(m.handle).state();
                match state {
                    tcp::State::Established => {
                        let (config, nonce) = self.channel()?;
                        let conn = Connection::client(&config, nonce)?;
                        m.link = Some(Link::new(conn, now_ns));
                        m.stage = Stage::Handshake;
                        m.stage_ns = now_ns;
                    }
                    tcp::State::Closed => return Err(ControlError::Refused),
                    _ if now_ns.saturating_sub(m.stage_ns) > self.timeouts.connect_ns => {
                        return Err(ControlError::Timeout(self.timeouts.connect_ns / 1_000_000));
                    }
                    _ => return Ok((false, None)),
                }
            }
            _ => {}
        }
        let events = {
            let mut net = self.net.borrow_mut();
            let socket = net.tcp(m.handle);
            let Some(link) = m.link.as_mut() else {
                return Err(ControlError::Closed);
            };
            let events = link.pump(socket, now_ns)?;
            if events.is_empty() && !socket.may_recv() {
                return Err(ControlError::Closed);
            }
            if events.is_empty() && now_ns.saturating_sub(link.active_ns) > self.timeouts.idle_ns {
                return Err(ControlError::Timeout(self.timeouts.idle_ns / 1_000_000));
            }
            events
        };
        let mut busy = !events.is_empty();
        for event in events {
            match event {
                Event::Established(peer) => {
                    m.peer = Some(peer);
                    if m.in_doubt {
                        // Repeat the same offer: the receiver acks if it
                        // has the task, or names the chunks it lacks.
                        let outgoing = m.outgoing.as_mut().ok_or(ControlError::Unexpected)?;
                        outgoing.restart();
                        let offer = outgoing.offer();
                        Self::link(m)?.send(&offer)?;
                        m.stage = Stage::StopCopy;
                    } else {
                        self.begin_round(m, MAX_PRECOPY_ROUNDS > 0, now_ns, out)?;
                    }
                }
                Event::Message(msg) => {
                    if let Some(outcome) = self.on_migration_message(m, msg, now_ns, out)? {
                        return Ok((true, Some(outcome)));
                    }
                }
            }
        }
        if let (Some(link), Some(outgoing)) = (m.link.as_mut(), m.outgoing.as_mut()) {
            {
                let mut net = self.net.borrow_mut();
                let socket = net.tcp(m.handle);
                let queued = socket.send_queue();
                let acked = link.written.saturating_sub(queued as u64);
                m.meter
                    .observe(seconds(now_ns), acked, queued >= socket.send_capacity() / 2);
            }
            // No link rate at first, nor while the sender (its CPU) sets
            // the pace: then only speed counts and chunks go raw, while the
            // probe rounds still measure the codecs.
            let bandwidth = m.meter.rate().unwrap_or(f64::INFINITY);
            let clock = self.board.clock();
            let (encoder, tally) = (&mut m.encoder, &mut m.tally);
            let mut encode = |bytes: &[u8]| encoder.encode(clock, bandwidth, bytes, tally);
            while link.backlog() < LOW_WATER {
                let Some(msg) = outgoing.poll_send_with(&mut encode) else {
                    break;
                };
                if matches!(msg, Message::Commit { .. }) && m.stage == Stage::StopCopy {
                    m.in_doubt = true;
                }
                link.send(&msg)?;
                busy = true;
            }
            let mut net = self.net.borrow_mut();
            link.flush(net.tcp(m.handle), now_ns);
        }
        Ok((busy, None))
    }

    fn link(m: &mut Migration) -> Result<&mut Link, ControlError> {
        m.link.as_mut().ok_or(ControlError::Closed)
    }

    /// Starts a pre-copy round (`precopy`) or the stop-and-copy.
    fn begin_round(
        &mut self,
        m: &mut Migration,
        precopy: bool,
        now_ns: u64,
        out: &mut dyn Write,
    ) -> Result<(), ControlError> {
        let facts = self.board.facts();
        let (bytes, transfer) = {
            let mut tasks = self.tasks.borrow_mut();
            let e = tasks.get_mut(m.local_id).ok_or(ControlError::TaskGone)?;
            if matches!(e.state, TaskState::Finished { .. }) {
                return Err(ControlError::TaskGone);
            }
            if precopy {
                (
                    capture(e, e.epoch, &facts).map_err(ControlError::Task)?,
                    Transfer::Replicate,
                )
            } else {
                // Stop-and-copy: the task waits at this migration point
                // until the receiver's answer; the checkpoint carries the
                // epoch the receiver takes.
                if e.state != TaskState::Migrating {
                    m.resume_state = e.state;
                }
                e.state = TaskState::Migrating;
                m.paused_ns = Some(now_ns);
                let _ = writeln!(
                    out,
                    "migrate: {} -> {}: stop-and-copy at {:.1}%\r",
                    m.label,
                    m.to,
                    e.task.progress().percent()
                );
                (
                    capture(e, e.epoch + 1, &facts).map_err(ControlError::Task)?,
                    Transfer::Migrate,
                )
            }
        };
        let outgoing = Outgoing::new(transfer, m.task_id, bytes)?;
        let link = Self::link(m)?;
        link.send(&outgoing.offer())?;
        m.round_start_bytes = link.written + link.backlog() as u64;
        m.outgoing = Some(outgoing);
        m.stage = if precopy {
            Stage::PreCopy
        } else {
            Stage::StopCopy
        };
        m.stage_ns = now_ns;
        Ok(())
    }

    fn on_migration_message(
        &mut self,
        m: &mut Migration,
        msg: Message,
        now_ns: u64,
        out: &mut dyn Write,
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
        if m.stage == Stage::StopCopy {
            return Ok(Some(Outcome::Moved));
        }
        m.precopy_rounds += 1;
        let chunks = outgoing.offered().chunks.len();
        let link = Self::link(m)?;
        let sent = (link.written + link.backlog() as u64).saturating_sub(m.round_start_bytes);
        let _ = writeln!(
            out,
            "migrate: {} -> {}: pre-copy {}: {} of {} chunks, {} B sent; so far {} x{:.2}\r",
            m.label,
            m.to,
            m.precopy_rounds,
            m.need,
            chunks,
            sent,
            m.tally.main_codec().name(),
            m.tally.ratio()
        );
        // Another round while the changed chunks keep shrinking and the
        // replica still saves some (a task whose every chunk changes
        // between two rounds gains nothing from more pre-copy).
        let again = m.precopy_rounds < MAX_PRECOPY_ROUNDS
            && m.need > 0
            && m.last_need
                .is_none_or(|last| m.need < last && m.need < chunks);
        m.last_need = Some(m.need);
        self.begin_round(m, again, now_ns, out)?;
        Ok(None)
    }

    /// Applies the end of a migration to the task, prints the result and
    /// answers the peer that asked for it.
    fn finish_migration(
        &mut self,
        mut m: Migration,
        outcome: Outcome,
        now_ns: u64,
        out: &mut dyn Write,
    ) {
        if let Some(link) = m.link.take() {
            m.wire_bytes += link.written;
        }
        {
            let mut net = self.net.borrow_mut();
            let socket = net.tcp(m.handle);
            match outcome {
                Outcome::Moved => socket.close(),
                _ => socket.abort(),
            }
        }
        self.closing
            .push((m.handle, now_ns + self.timeouts.idle_ns));
        let answer = match outcome {
            Outcome::Moved => {
                self.tasks.borrow_mut().remove(m.local_id);
                let facts = self.board.facts();
                let peer = m.peer.clone();
                let to_isa = peer.as_ref().map_or_else(String::new, |p| p.isa.clone());
                let Some(outgoing) = m.outgoing.take() else {
                    return;
                };
                let offer = outgoing.offered().clone();
                let report = MigrationReport {
                    task_id: m.task_id,
                    epoch: offer.epoch,
                    from_isa: facts.isa.name().into(),
                    to_isa,
                    state_bytes: offer.total_len,
                    wire_bytes: m.wire_bytes,
                    precopy_rounds: m.precopy_rounds,
                    total_ms: now_ns.saturating_sub(m.started_ns) / 1_000_000,
                    downtime_ms: now_ns.saturating_sub(m.paused_ns.unwrap_or(now_ns)) / 1_000_000,
                };
                let _ = writeln!(
                    out,
                    "migrated {} to {} ({} -> {}): epoch {}, {} pre-copy rounds, stop-and-copy {} of {} chunks, total {} ms, downtime {} ms, state {} B, wire {} B, {} x{:.2}\r",
                    m.label,
                    m.to,
                    report.from_isa,
                    report.to_isa,
                    report.epoch,
                    report.precopy_rounds,
                    m.need,
                    offer.chunks.len(),
                    report.total_ms,
                    report.downtime_ms,
                    report.state_bytes,
                    report.wire_bytes,
                    m.tally.main_codec().name(),
                    m.tally.ratio()
                );
                // The sent checkpoint stays here as the replica of the task,
                // for a later return.
                self.keep_replica(
                    m.task_id,
                    HeldReplica {
                        replica: Rc::new(Replica::new(outgoing.into_checkpoint())),
                        offer,
                        owner: peer.map_or(0, |p| p.node_id),
                        updated_ns: now_ns,
                    },
                );
                Message::Migrated(report)
            }
            Outcome::Superseded(known) => {
                self.tasks.borrow_mut().remove(m.local_id);
                let _ = writeln!(
                    out,
                    "migrate: {} -> {}: the receiver owns the task at epoch {known}; dropped here\r",
                    m.label, m.to
                );
                Message::Nack(NackReason::MigrationFailed)
            }
            Outcome::Failed(why) => {
                if let Some(e) = self.tasks.borrow_mut().get_mut(m.local_id) {
                    if e.state == TaskState::Migrating {
                        e.state = m.resume_state;
                    }
                }
                let _ = writeln!(
                    out,
                    "migrate: {} -> {} failed: {why}; the task stays here\r",
                    m.label, m.to
                );
                Message::Nack(NackReason::MigrationFailed)
            }
        };
        let waiting = self
            .servers
            .iter()
            .position(|s| matches!(s.job, Job::AwaitMigration(id) if id == m.id));
        if let Some(i) = waiting {
            self.servers[i].job = Job::Idle;
            // A peer gone meanwhile does not change the outcome.
            let _ = self.reply(i, &answer);
        }
    }
}

/// Parses `address[:port]` (the port defaults to [`CONTROL_PORT`]).
pub fn parse_endpoint(s: &str) -> Result<IpEndpoint, ControlError> {
    let bad = || ControlError::BadAddress(s.into());
    let (addr, port) = match s.split_once(':') {
        Some((a, p)) => (
            a,
            p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(bad)?,
        ),
        None => (s, CONTROL_PORT),
    };
    let addr: Ipv4Address = addr.parse().map_err(|_| bad())?;
    Ok(IpEndpoint::new(IpAddress::Ipv4(addr), port))
}

/// Parses a key given as 64 hexadecimal digits.
pub fn parse_key(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(key)
}

/// The run-loop service that polls the shared [`Control`].
pub struct ControlService(Rc<RefCell<Control>>);

impl ControlService {
    /// A service polling `control`.
    pub fn new(control: Rc<RefCell<Control>>) -> Self {
        Self(control)
    }
}

impl Service for ControlService {
    fn name(&self) -> &'static str {
        "control"
    }

    fn poll(&mut self, now_ns: u64, out: &mut dyn Write) -> ServiceStatus {
        if self.0.borrow_mut().poll(now_ns, out) {
            ServiceStatus::Busy
        } else {
            ServiceStatus::Idle
        }
    }
}

/// The migration shell commands: `key`, `migrate`, `sync`, `codec`.
pub fn commands() -> [Command; 4] {
    [
        Command {
            name: "key",
            usage: "[<64 hex digits>|insecure]",
            help: "show or set the cluster key for migration",
            run: key_command,
        },
        Command {
            name: "migrate",
            usage: "<id> <address>[:port]",
            help: "live-migrate a task to another node",
            run: migrate_command,
        },
        sync::command(),
        Command {
            name: "codec",
            usage: "[adaptive|none|lz4|zstd-1|zstd-3|zstd-9]",
            help: "show or set how migrations and syncs started here compress",
            run: codec_command,
        },
    ]
}

fn control(kernel: &Kernel) -> Result<Rc<RefCell<Control>>, String> {
    kernel
        .control()
        .cloned()
        .ok_or_else(|| String::from("this node has no network device"))
}

fn key_command(kernel: &mut Kernel, args: &[&str], out: &mut dyn Write) -> CommandResult {
    let control = control(kernel)?;
    let mut control = control.borrow_mut();
    match args {
        [] => {
            let _ = writeln!(
                out,
                "key: {}\r",
                match control.security() {
                    Some(Security::Key(_)) => "set",
                    Some(Security::ExplicitlyInsecure) => "insecure (WARNING: INSECURE MODE)",
                    None => "none (migration refused)",
                }
            );
        }
        ["insecure"] => {
            control.set_security(Some(Security::ExplicitlyInsecure));
            // The kernels link a defmt logger; host tests do not.
            #[cfg(target_os = "none")]
            defmt::warn!("INSECURE MODE: migration channels use the public all-zero key");
            let _ = writeln!(
                out,
                "WARNING: INSECURE MODE: migration channels are neither authenticated nor secret (public all-zero key)\r"
            );
        }
        [hex] => {
            // The key is never echoed: an error names only its shape.
            let key = parse_key(hex).ok_or("a key is 64 hexadecimal digits (32 bytes)")?;
            control.set_security(Some(Security::Key(Psk(key))));
            let _ = writeln!(out, "key: set\r");
        }
        _ => return Err("usage: key [<64 hex digits>|insecure]".into()),
    }
    Ok(())
}

fn codec_command(kernel: &mut Kernel, args: &[&str], out: &mut dyn Write) -> CommandResult {
    const USAGE: &str = "usage: codec [adaptive|none|lz4|zstd-1|zstd-3|zstd-9]";
    let control = control(kernel)?;
    let mut control = control.borrow_mut();
    match args {
        [] => {}
        [name] => control.codec_mode = CodecMode::parse(name).ok_or(USAGE)?,
        _ => return Err(USAGE.into()),
    }
    let _ = writeln!(out, "codec: {}\r", control.codec_mode);
    Ok(())
}

fn migrate_command(kernel: &mut Kernel, args: &[&str], out: &mut dyn Write) -> CommandResult {
    const USAGE: &str = "usage: migrate <id> <address>[:port]";
    let [id, to] = args else {
        return Err(USAGE.into());
    };
    let id = parse_id(&[id], USAGE)?;
    let to = parse_endpoint(to).map_err(|e| e.to_string())?;
    let now_ns = kernel.board().clock().now_ns();
    let control = control(kernel)?;
    let line = control
        .borrow_mut()
        .start_migration(id, to, now_ns, None)
        .map_err(|e| e.to_string())?;
    let _ = writeln!(out, "{line}\r");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{exec, FakeBoard, FakeEntropy, Wire, WireEnd};
    use alloc::boxed::Box;
    use std::sync::{Arc, Mutex};
    use tern_hal::Isa;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const OTHER_KEY: &str = "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    pub(super) const MAC_A: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x0a];
    pub(super) const MAC_B: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x0b];

    /// Two nodes on one in-memory cable: A (x86_64 pc, 10.0.0.1) and
    /// B (aarch64 rpi4, 10.0.0.2), both keyed, and what each printed.
    pub(super) struct Pair {
        pub(super) a: Kernel,
        pub(super) b: Kernel,
        pub(super) wire: Arc<Mutex<Wire>>,
        pub(super) out_a: String,
        pub(super) out_b: String,
    }

    fn node(isa: Isa, board: &'static str, device: WireEnd, seed: u64, cidr: &str) -> Kernel {
        let mut k = Kernel::new(FakeBoard::leak_with(isa, board, 256 << 20));
        k.attach_net(Box::new(device));
        k.attach_entropy(Box::new(FakeEntropy(seed)));
        exec(&mut k, &format!("net {cidr}"));
        k
    }

    #[test]
    fn replicas_give_way_oldest_first_when_memory_runs_short_but_leased_ones_stay() {
        // 8 MiB of heap: replicas may hold 2 MiB.
        let mut k = Kernel::new(FakeBoard::leak_with(Isa::Aarch64, "rpi4", 8 << 20));
        let wire = Arc::new(Mutex::new(Wire::default()));
        k.attach_net(Box::new(WireEnd::node(wire, MAC_B)));
        let control = k.control().unwrap().clone();
        let mut c = control.borrow_mut();
        let replica = |task_id: u64, updated_ns: u64| HeldReplica {
            replica: Rc::new(Replica::new(vec![task_id as u8; 800_000])),
            offer: Offer {
                transfer: Transfer::Replicate,
                task_id,
                kind: "npb-is".into(),
                kind_version: 1,
                progress: 1,
                progress_total: 2,
                epoch: 1,
                checkpoint_hash: [0; 32],
                total_len: 800_000,
                chunks: Vec::new(),
            },
            owner: 1,
            updated_ns,
        };
        c.keep_replica(1, replica(1, 10));
        c.keep_replica(2, replica(2, 20));
        c.keep_replica(3, replica(3, 30));
        // 2.4 MB > 2 MiB: the least recently updated goes.
        assert_eq!(c.replicas.keys().copied().collect::<Vec<_>>(), [2, 3]);
        // A standby's leased replica stays; the next oldest goes instead.
        c.take_lease(2, 1, IpAddress::v4(10, 0, 0, 1), 0, 40);
        c.keep_replica(4, replica(4, 40));
        assert_eq!(c.replicas.keys().copied().collect::<Vec<_>>(), [2, 4]);
    }

    pub(super) fn pair() -> Pair {
        let wire = Arc::new(Mutex::new(Wire::default()));
        let mut a = node(
            Isa::X86_64,
            "pc",
            WireEnd::node(wire.clone(), MAC_A),
            1,
            "10.0.0.1/24",
        );
        let mut b = node(
            Isa::Aarch64,
            "rpi4",
            WireEnd::peer(wire.clone(), MAC_B),
            2,
            "10.0.0.2/24",
        );
        assert_eq!(exec(&mut a, &format!("key {KEY}")), "key: set\r\n");
        assert_eq!(exec(&mut b, &format!("key {KEY}")), "key: set\r\n");
        Pair {
            a,
            b,
            wire,
            out_a: String::new(),
            out_b: String::new(),
        }
    }

    impl Pair {
        /// Polls both nodes until `done` or `max` turns; whether `done`.
        pub(super) fn run_until(&mut self, max: usize, done: impl Fn(&Pair) -> bool) -> bool {
            for _ in 0..max {
                self.a.poll_services(&mut self.out_a);
                self.b.poll_services(&mut self.out_b);
                if done(self) {
                    return true;
                }
            }
            false
        }
    }

    /// A protocol client (an inspector) on a socket of node A's stack,
    /// talking to node B's control port.
    struct Client {
        handle: SocketHandle,
        link: Option<Link>,
        config: Config,
        error: Option<ChannelError>,
        inbox: std::collections::VecDeque<Message>,
    }

    impl Client {
        fn connect(p: &mut Pair, key: &str) -> Self {
            Self::connect_from(p, key, 40000)
        }

        fn connect_from(p: &mut Pair, key: &str, port: u16) -> Self {
            let net = p.a.net().unwrap().clone();
            let handle = net.borrow_mut().add_tcp(SOCKET_BUFFER, SOCKET_BUFFER);
            net.borrow_mut()
                .connect(handle, parse_endpoint("10.0.0.2").unwrap(), port)
                .unwrap();
            let hello = Hello {
                version: PROTOCOL_VERSION,
                isa: "x86_64".into(),
                board: "linux-host".into(),
                node_id: 99,
                task_kinds: Vec::new(),
                insecure: false,
            };
            let key = Security::Key(Psk(parse_key(key).unwrap()));
            Self {
                handle,
                link: None,
                config: Config::new(hello, Some(key)),
                error: None,
                inbox: std::collections::VecDeque::new(),
            }
        }

        /// One turn of both nodes and this client; the messages received.
        fn turn(&mut self, p: &mut Pair) -> Vec<Message> {
            p.run_until(1, |_| false);
            let net = p.a.net().unwrap().clone();
            let mut net = net.borrow_mut();
            let socket = net.tcp(self.handle);
            if self.link.is_none() && socket.state() == tcp::State::Established {
                let conn = Connection::client(&self.config, [7; 32]).unwrap();
                self.link = Some(Link::new(conn, 0));
            }
            let Some(link) = self.link.as_mut() else {
                return Vec::new();
            };
            match link.pump(socket, 0) {
                Ok(events) => events
                    .into_iter()
                    .filter_map(|e| match e {
                        Event::Message(m) => Some(m),
                        Event::Established(_) => None,
                    })
                    .collect(),
                Err(e) => {
                    socket.abort();
                    self.error = Some(e);
                    self.link = None;
                    Vec::new()
                }
            }
        }

        /// Runs until the handshake is done (or failed: false).
        fn establish(&mut self, p: &mut Pair) -> bool {
            for _ in 0..5_000 {
                self.turn(p);
                if self.error.is_some() {
                    return false;
                }
                if self.link.as_ref().is_some_and(|l| l.conn.is_established()) {
                    return true;
                }
            }
            panic!("handshake did not end")
        }

        /// Sends `msg` and returns the first answer.
        fn ask(&mut self, p: &mut Pair, msg: &Message) -> Message {
            self.link.as_mut().unwrap().send(msg).unwrap();
            self.next(p, 200_000)
        }

        fn next(&mut self, p: &mut Pair, turns: usize) -> Message {
            for _ in 0..turns {
                let received = self.turn(p);
                self.inbox.extend(received);
                if let Some(m) = self.inbox.pop_front() {
                    return m;
                }
                assert!(self.error.is_none(), "{:?}", self.error);
            }
            panic!("no answer")
        }
    }

    /// The number after `label` in `text` (`... state 1234 B`).
    fn number_after(text: &str, label: &str) -> u64 {
        let at = text
            .find(label)
            .unwrap_or_else(|| panic!("no {label:?} in {text}"))
            + label.len();
        text[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    #[test]
    fn a_running_task_migrates_live_with_pre_copy_and_finishes_verified_on_the_receiver() {
        let mut p = pair();
        assert_eq!(exec(&mut p.a, "run cg S"), "task 1 (cg S) started\r\n");
        let global = p.a.tasks().borrow().entries()[0].task_id;
        assert_eq!(global, (node_id_from_mac(MAC_A) << 16) | 1);
        // Past the matrix set-up (its arrays are in the checkpoints until
        // then), so every round moves about the final state's size.
        let percent = |p: &Pair| p.a.tasks().borrow().entries()[0].task.progress().percent();
        assert!(p.run_until(200_000, |p| percent(p) >= 5.0));
        let started = exec(&mut p.a, "migrate 1 10.0.0.2:4470");
        assert_eq!(
            started,
            "migrate: task 1 (cg S) -> 10.0.0.2:4470: connecting\r\n"
        );
        assert!(
            p.run_until(200_000, |p| p.out_a.contains("migrated task 1")),
            "{}",
            p.out_a
        );
        let a = p.out_a.clone();
        assert!(
            a.contains("migrate: task 1 (cg S) -> 10.0.0.2:4470: pre-copy 1: "),
            "{a}"
        );
        assert!(a.contains("stop-and-copy at "), "{a}");
        let done = a
            .lines()
            .find(|l| l.starts_with("migrated task 1"))
            .unwrap();
        assert!(
            done.starts_with(
                "migrated task 1 (cg S) to 10.0.0.2:4470 (x86_64 -> aarch64): epoch 2, "
            ),
            "{done}"
        );
        let state = number_after(done, "state ");
        let wire = number_after(done, "wire ");
        let rounds = number_after(done, "epoch 2, ");
        assert!(rounds >= 1, "{done}");
        // Each round sends at most the whole state, plus the protocol's
        // framing, sealing and offers.
        assert!(
            wire > state && wire < (rounds + 1) * state * 11 / 10,
            "{done}"
        );
        assert!(number_after(done, "downtime ") <= number_after(done, "total "));
        // Gone here, running there with the same identity and the next epoch.
        assert_eq!(exec(&mut p.a, "ps"), "no tasks\r\n");
        assert!(p.out_b.contains("task 1 (cg S) resumed at "), "{}", p.out_b);
        let ps = exec(&mut p.b, "ps");
        assert!(
            ps.contains(&format!("{global:016x}")) && ps.contains("      2  "),
            "{ps}"
        );
        assert!(p.run_until(1_000_000, |p| p.out_b.contains("VERIFICATION")));
        assert!(
            p.out_b.contains("task 1 (cg S): VERIFICATION SUCCESSFUL"),
            "{}",
            p.out_b
        );
        assert!(!p.out_a.contains("VERIFICATION"));
        // A keeps the sent checkpoint as its replica of the task.
        let list = p.a.control().unwrap().borrow().list(0);
        assert_eq!(list.len(), 1);
        assert_eq!(
            (list[0].task_id, list[0].role, list[0].epoch),
            (global, TaskRole::Standby, 2)
        );
        assert_eq!(list[0].owner, node_id_from_mac(MAC_B));
    }

    #[test]
    fn a_migration_compresses_its_chunks_with_the_chosen_codec_and_verifies() {
        for codec in ["lz4", "zstd-3"] {
            let mut p = pair();
            assert_eq!(exec(&mut p.a, "codec"), "codec: adaptive\r\n");
            assert_eq!(
                exec(&mut p.a, &format!("codec {codec}")),
                format!("codec: {codec}\r\n")
            );
            exec(&mut p.a, "run is S --pause-at 50");
            assert!(p.run_until(200_000, |p| p.out_a.contains("paused at")));
            exec(&mut p.a, "migrate 1 10.0.0.2");
            assert!(
                p.run_until(200_000, |p| p.out_a.contains("migrated task 1")),
                "{}",
                p.out_a
            );
            let done = p
                .out_a
                .lines()
                .find(|l| l.starts_with("migrated task 1"))
                .unwrap()
                .to_owned();
            // IS keys are small integers: every codec shrinks them.
            let ratio: f64 = done
                .split(&format!(" B, {codec} x"))
                .nth(1)
                .and_then(|r| r.trim_end().parse().ok())
                .unwrap_or_else(|| panic!("no {codec} ratio in {done}"));
            assert!(ratio > 1.5, "{done}");
            assert!(
                number_after(&done, "wire ") < number_after(&done, "state "),
                "{done}"
            );
            exec(&mut p.b, "cont 1");
            assert!(p.run_until(1_000_000, |p| p.out_b.contains("VERIFICATION")));
            assert!(
                p.out_b.contains("task 1 (is S): VERIFICATION SUCCESSFUL"),
                "{}",
                p.out_b
            );
        }
    }

    #[test]
    fn the_codec_command_refuses_unknown_codecs() {
        let mut p = pair();
        let answer = exec(&mut p.a, "codec gzip");
        assert!(
            answer.contains("usage: codec [adaptive|none|lz4|zstd-1|zstd-3|zstd-9]"),
            "{answer}"
        );
        assert_eq!(exec(&mut p.a, "codec"), "codec: adaptive\r\n");
    }

    /// Shortened timeouts: the fake clock advances 1 ms per turn.
    pub(super) fn short_timeouts(p: &mut Pair) {
        let t = Timeouts {
            connect_ns: 1_000_000_000,
            idle_ns: 1_500_000_000,
            retry_ns: 300_000_000,
            retry_max_ns: 600_000_000,
        };
        p.a.control().unwrap().borrow_mut().set_timeouts(t);
        p.b.control().unwrap().borrow_mut().set_timeouts(t);
    }

    #[test]
    fn a_paused_task_moves_with_only_its_changed_chunks_after_pre_copy() {
        let mut p = pair();
        exec(&mut p.a, "run cg S --pause-at 30");
        assert!(p.run_until(100_000, |p| p.out_a.contains("paused at")));
        exec(&mut p.a, "migrate 1 10.0.0.2");
        assert!(
            p.run_until(200_000, |p| p.out_a.contains("migrated task 1")),
            "{}",
            p.out_a
        );
        let a = &p.out_a;
        // Round 2 finds nothing changed: the stop-and-copy follows, and its
        // need names only the header's (the epoch) and the trailer's chunks.
        assert!(a.contains(": pre-copy 1: 24 of 24 chunks, "), "{a}");
        assert!(a.contains(": pre-copy 2: 0 of 24 chunks, "), "{a}");
        let done = a
            .lines()
            .find(|l| l.starts_with("migrated task 1"))
            .unwrap();
        let state = number_after(done, "state ");
        let wire = number_after(done, "wire ");
        assert!(done.contains(", stop-and-copy 2 of 24 chunks, "), "{done}");
        assert!(wire < state + 20_000, "{done}");
        assert!(
            p.out_b.contains("task 1 (cg S) resumed at 30."),
            "{}",
            p.out_b
        );
        assert!(exec(&mut p.b, "ps").contains("running"));
    }

    /// Cuts the cable once A has sent the commit (dropping the frames in
    /// flight too when `lose_commit`), restores it later: exactly one node
    /// ends up with the task.
    fn cut_after_commit(lose_commit: bool) {
        let mut p = pair();
        short_timeouts(&mut p);
        exec(&mut p.a, "run cg S --pause-at 20");
        assert!(p.run_until(100_000, |p| p.out_a.contains("paused at")));
        exec(&mut p.a, "migrate 1 10.0.0.2");
        let in_doubt = |p: &Pair| {
            p.a.control()
                .unwrap()
                .borrow()
                .migrations
                .first()
                .is_some_and(|m| m.in_doubt)
        };
        if lose_commit {
            assert!(p.run_until(200_000, in_doubt), "{}", p.out_a);
        } else {
            // B resumed the task; its ack is not on the wire yet.
            assert!(p.run_until(200_000, |p| p.out_b.contains("resumed at")));
            assert!(in_doubt(&p));
        }
        {
            let mut wire = p.wire.lock().unwrap();
            wire.cut = true;
            if lose_commit {
                wire.from_node.clear();
                wire.to_node.clear();
            }
        }
        // Long enough for timeouts and a few reconnection attempts.
        p.run_until(4_000, |_| false);
        assert!(p.out_a.contains("in doubt after the commit"), "{}", p.out_a);
        // In doubt the sender neither runs nor drops the task.
        let ps = exec(&mut p.a, "ps");
        assert!(ps.contains("migrating"), "{ps}");
        assert_eq!(
            exec(&mut p.a, "kill 1"),
            "error: kill: task 1 is migrating; its owner is being decided\r\n"
        );
        assert_eq!(p.out_b.contains("resumed at"), !lose_commit, "{}", p.out_b);
        p.wire.lock().unwrap().cut = false;
        assert!(
            p.run_until(100_000, |p| p.out_a.contains("migrated task 1")),
            "{}",
            p.out_a
        );
        assert_eq!(exec(&mut p.a, "ps"), "no tasks\r\n");
        assert_eq!(p.out_b.matches("resumed at").count(), 1, "{}", p.out_b);
        assert!(p.run_until(1_000_000, |p| p.out_b.contains("VERIFICATION SUCCESSFUL")));
    }

    #[test]
    fn a_cut_after_the_commit_that_the_receiver_got_ends_with_one_owner() {
        cut_after_commit(false);
    }

    #[test]
    fn a_cut_that_loses_the_commit_ends_with_one_owner() {
        cut_after_commit(true);
    }

    #[test]
    fn a_link_lost_before_the_commit_gives_the_task_back_here() {
        let mut p = pair();
        short_timeouts(&mut p);
        exec(&mut p.a, "run cg S --pause-at 40");
        assert!(p.run_until(100_000, |p| p.out_a.contains("paused at")));
        exec(&mut p.a, "migrate 1 10.0.0.2");
        assert!(p.run_until(100_000, |p| p.out_a.contains("stop-and-copy at 40.")));
        assert!(exec(&mut p.a, "ps").contains("migrating"));
        {
            let mut wire = p.wire.lock().unwrap();
            wire.cut = true;
            wire.from_node.clear();
            wire.to_node.clear();
        }
        assert!(
            p.run_until(10_000, |p| p.out_a.contains("failed")),
            "{}",
            p.out_a
        );
        assert!(
            p.out_a
                .contains("migrate: task 1 (cg S) -> 10.0.0.2:4470 failed: ")
                && p.out_a.contains("; the task stays here"),
            "{}",
            p.out_a
        );
        // Back in the state it had before the migration.
        let ps = exec(&mut p.a, "ps");
        assert!(ps.contains("paused"), "{ps}{}", p.out_a);
        // Nobody at that address: the connection attempt times out.
        exec(&mut p.a, "migrate 1 10.0.0.9");
        assert!(p.run_until(10_000, |p| p.out_a.matches("failed").count() == 2));
        assert!(
            p.out_a.contains("no answer from the peer within 1000 ms"),
            "{}",
            p.out_a
        );
        p.wire.lock().unwrap().cut = false;
        exec(&mut p.a, "cont 1");
        assert!(p.run_until(1_000_000, |p| p.out_a.contains("VERIFICATION SUCCESSFUL")));
        assert!(!p.out_b.contains("resumed"));
    }

    #[test]
    fn bad_peers_lose_their_connection_and_honest_ones_are_served() {
        let mut p = pair();
        exec(&mut p.b, "run is S --pause-at 50");
        assert!(p.run_until(100_000, |p| p.out_b.contains("paused at")));

        // Garbage: the first four bytes announce an oversized frame.
        let net = p.a.net().unwrap().clone();
        let raw = net.borrow_mut().add_tcp(1024, 1024);
        net.borrow_mut()
            .connect(raw, parse_endpoint("10.0.0.2").unwrap(), 41000)
            .unwrap();
        let mut sent = false;
        assert!(
            p.run_until(5_000, |p| p.out_b.contains("control: connection from")) || {
                for _ in 0..5_000 {
                    p.run_until(1, |_| false);
                    let mut net = net.borrow_mut();
                    let socket = net.tcp(raw);
                    if !sent && socket.can_send() {
                        socket.send_slice(b"GET / HTTP/1.0\r\n\r\n").unwrap();
                        sent = true;
                    }
                    drop(net);
                    if p.out_b.contains("control: connection from") {
                        break;
                    }
                }
                true
            }
        );
        assert!(
            p.out_b
                .contains("control: connection from 10.0.0.1:41000 closed: frame of"),
            "{}",
            p.out_b
        );

        // Garbage sent with the FIN right behind it: still judged, and the
        // listening socket comes back.
        let quick = net.borrow_mut().add_tcp(1024, 1024);
        net.borrow_mut()
            .connect(quick, parse_endpoint("10.0.0.2").unwrap(), 41001)
            .unwrap();
        let mut closed = false;
        for _ in 0..5_000 {
            p.run_until(1, |_| false);
            let mut net = net.borrow_mut();
            let socket = net.tcp(quick);
            if !closed && socket.can_send() {
                socket.send_slice(b"\xff\xff\xff\xff").unwrap();
                socket.close();
                closed = true;
            }
            drop(net);
            if p.out_b.contains("from 10.0.0.1:41001 closed: frame of") {
                break;
            }
        }
        assert!(
            p.out_b
                .contains("from 10.0.0.1:41001 closed: frame of 4294967295 bytes"),
            "{}",
            p.out_b
        );

        // A wrong key: the client finds the node's proof false and stops.
        let mut wrong = Client::connect(&mut p, OTHER_KEY);
        assert!(!wrong.establish(&mut p));
        assert_eq!(wrong.error, Some(ChannelError::AuthFailed));

        // The node still serves an honest client.
        let mut client = Client::connect(&mut p, KEY);
        assert!(client.establish(&mut p));
        assert_eq!(
            client.ask(&mut p, &Message::Ping { nonce: 5 }),
            Message::Pong { nonce: 5 }
        );
        let Message::Tasks(tasks) = client.ask(&mut p, &Message::List) else {
            panic!("no task list")
        };
        assert_eq!(tasks.len(), 1);
        let t = &tasks[0];
        assert_eq!(
            (t.kind.as_str(), t.role, t.status),
            ("npb-is", TaskRole::Owner, TaskStatus::Paused)
        );
        assert_eq!((t.owner, t.epoch), (node_id_from_mac(MAC_B), 1));
        assert_eq!(
            client.ask(&mut p, &Message::Fetch { task_id: 12 }),
            Message::Nack(NackReason::UnknownTask)
        );

        // Fetch: a copy of the checkpoint, through the transfer phases.
        let policy = Policy {
            max_len: 1 << 30,
            kinds: Vec::new(),
            known: None,
        };
        let mut incoming = Incoming::new(policy, None);
        let mut msg = client.ask(&mut p, &Message::Fetch { task_id: t.task_id });
        loop {
            let reply = incoming.on_message(msg).unwrap();
            if let Some(reply) = reply {
                client.link.as_mut().unwrap().send(&reply).unwrap();
            }
            if incoming.phase() == tern_protocol::ReceivePhase::Accepted {
                break;
            }
            msg = client.next(&mut p, 100_000);
        }
        let bytes = incoming.take_checkpoint().unwrap();
        let restored = tern_migration::read_checkpoint(&bytes[..], &Limits::default()).unwrap();
        assert_eq!(
            (restored.header.isa.as_str(), restored.header.epoch),
            ("aarch64", 1)
        );
        assert_eq!(restored.header.progress, t.progress);
        // A fetch moves nothing.
        assert!(exec(&mut p.b, "ps").contains("paused"));
    }

    #[test]
    fn migrate_to_from_an_inspector_is_answered_with_the_report() {
        let mut p = pair();
        exec(&mut p.b, "run is S --pause-at 30");
        assert!(p.run_until(100_000, |p| p.out_b.contains("paused at")));
        let task_id = p.b.tasks().borrow().entries()[0].task_id;
        let mut client = Client::connect(&mut p, KEY);
        assert!(client.establish(&mut p));
        assert_eq!(
            client.ask(
                &mut p,
                &Message::MigrateTo {
                    task_id: 3,
                    to: "10.0.0.1".into()
                }
            ),
            Message::Nack(NackReason::UnknownTask)
        );
        let answer = client.ask(
            &mut p,
            &Message::MigrateTo {
                task_id,
                to: "10.0.0.1:4470".into(),
            },
        );
        let Message::Migrated(report) = answer else {
            panic!("{answer:?}: {}", p.out_b)
        };
        assert_eq!(
            (
                report.task_id,
                report.epoch,
                report.from_isa.as_str(),
                report.to_isa.as_str()
            ),
            (task_id, 2, "aarch64", "x86_64")
        );
        assert!(report.wire_bytes > report.state_bytes && report.precopy_rounds >= 1);
        assert!(
            p.out_a.contains("task 1 (is S) resumed at 30."),
            "{}",
            p.out_a
        );
        assert_eq!(exec(&mut p.b, "ps"), "no tasks\r\n");
    }

    #[test]
    fn key_command_and_refusals_without_key_or_random_numbers() {
        let wire = Arc::new(Mutex::new(Wire::default()));
        let mut k = Kernel::new(FakeBoard::leak());
        k.attach_net(Box::new(WireEnd::node(wire, MAC_A)));
        exec(&mut k, "net 10.0.0.1/24");
        exec(&mut k, "run ep S");
        assert_eq!(exec(&mut k, "key"), "key: none (migration refused)\r\n");
        assert_eq!(
            exec(&mut k, "migrate 1 10.0.0.2"),
            "error: migrate: no key configured (set one with 'key <64 hex digits>' or 'key insecure'); migration refused\r\n"
        );
        let bad = exec(&mut k, "key 0011zz");
        assert_eq!(
            bad,
            "error: key: a key is 64 hexadecimal digits (32 bytes)\r\n"
        );
        assert_eq!(exec(&mut k, &format!("key {KEY}")), "key: set\r\n");
        let shown = exec(&mut k, "key");
        assert_eq!(shown, "key: set\r\n");
        assert!(!shown.contains(KEY));
        // Keyed, but the board has no random number generator.
        assert_eq!(
            exec(&mut k, "migrate 1 10.0.0.2"),
            "error: migrate: no random number generator on this board; migration refused\r\n"
        );
        let insecure = exec(&mut k, "key insecure");
        assert!(insecure.starts_with("WARNING: INSECURE MODE"), "{insecure}");
        assert_eq!(
            exec(&mut k, "key"),
            "key: insecure (WARNING: INSECURE MODE)\r\n"
        );
        k.attach_entropy(Box::new(FakeEntropy(3)));
        for (line, error) in [
            ("migrate 1", "usage: migrate <id> <address>[:port]"),
            ("migrate 9 10.0.0.2", "no task 9"),
            (
                "migrate 1 10.0.0",
                "'10.0.0' is not <IPv4 address>[:<port>]",
            ),
            (
                "migrate 1 10.0.0.2:0",
                "'10.0.0.2:0' is not <IPv4 address>[:<port>]",
            ),
        ] {
            let out = exec(&mut k, line);
            assert_eq!(out, format!("error: migrate: {error}\r\n"), "{line}");
        }
        assert_eq!(
            exec(&mut k, "migrate 1 10.0.0.2"),
            "migrate: task 1 (ep S) -> 10.0.0.2:4470: connecting\r\n"
        );
        assert_eq!(
            exec(&mut k, "migrate 1 10.0.0.2"),
            "error: migrate: task 1 is already migrating\r\n"
        );
    }

    #[test]
    fn insecure_nodes_migrate_and_refuse_keyed_ones() {
        let mut p = pair();
        exec(&mut p.a, "key insecure");
        exec(&mut p.a, "run is S --pause-at 10");
        assert!(p.run_until(100_000, |p| p.out_a.contains("paused at")));
        exec(&mut p.a, "migrate 1 10.0.0.2");
        // The keyed node refuses the handshake and resets the connection.
        assert!(
            p.run_until(20_000, |p| p.out_a.contains("failed")),
            "{}",
            p.out_a
        );
        assert!(
            p.out_b
                .contains("closed: security mode mismatch: peer insecure = true"),
            "{}",
            p.out_b
        );
        exec(&mut p.b, "key insecure");
        exec(&mut p.a, "migrate 1 10.0.0.2");
        assert!(
            p.run_until(200_000, |p| p.out_a.contains("migrated task 1")),
            "{}",
            p.out_a
        );
    }

    /// Offers `outgoing` through `client` and sends every needed chunk;
    /// returns the commit, not sent yet.
    fn send_until_commit(client: &mut Client, p: &mut Pair, outgoing: &mut Outgoing) -> Message {
        let need = client.ask(p, &outgoing.offer());
        outgoing.on_message(need).unwrap();
        loop {
            let msg = outgoing.poll_send().unwrap();
            if matches!(msg, Message::Commit { .. }) {
                return msg;
            }
            client.link.as_mut().unwrap().send(&msg).unwrap();
        }
    }

    #[test]
    fn two_connections_delivering_the_same_migration_give_one_task() {
        let mut p = pair();
        exec(&mut p.a, "run is S --pause-at 20");
        assert!(p.run_until(100_000, |p| p.out_a.contains("paused at")));
        let facts = p.a.board().facts();
        let (task_id, bytes) = {
            let tasks = p.a.tasks().borrow();
            let e = &tasks.entries()[0];
            (e.task_id, capture(e, 2, &facts).unwrap())
        };
        let mut first = Outgoing::new(Transfer::Migrate, task_id, bytes.clone()).unwrap();
        let mut second = Outgoing::new(Transfer::Migrate, task_id, bytes).unwrap();
        let mut c1 = Client::connect_from(&mut p, KEY, 40001);
        let mut c2 = Client::connect_from(&mut p, KEY, 40002);
        assert!(c1.establish(&mut p) && c2.establish(&mut p));
        let commit1 = send_until_commit(&mut c1, &mut p, &mut first);
        let commit2 = send_until_commit(&mut c2, &mut p, &mut second);
        assert_eq!(c2.ask(&mut p, &commit2), Message::Ack { epoch: 2 });
        // The first connection's commit of the same checkpoint is acked
        // without a second copy of the task.
        assert_eq!(c1.ask(&mut p, &commit1), Message::Ack { epoch: 2 });
        assert_eq!(p.out_b.matches("resumed at").count(), 1, "{}", p.out_b);
        assert_eq!(p.b.tasks().borrow().entries().len(), 1);
    }
}
