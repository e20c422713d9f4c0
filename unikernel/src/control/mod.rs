//! The control service on TCP port [`CONTROL_PORT`]: live migration of
//! tasks over Ethernet, standby replicas kept fresh by sync sessions,
//! failover and failback, and the requests of host tools (see
//! `docs/protocol.md`).
//!
//! Everything here is a state machine polled by the run loop
//! ([`ControlService`]): the shell, the task runner and the network keep
//! going while a migration runs. The service is made of parts that each own
//! their state:
//! - [`link`]: one authenticated connection on a socket, and the outgoing
//!   connection (connect, handshake, reconnect with backoff) that
//!   migrations and sync sessions share;
//! - [`server`]: the listening sockets, the requests of peers, incoming
//!   transfers;
//! - [`requests`]: the task requests answered in one message (start, kill,
//!   standby, list, status);
//! - [`migration`]: outgoing live migrations (pre-copy, stop-and-copy,
//!   ownership kept in doubt);
//! - [`session`]: sync sessions, and failover when a lease expires;
//! - [`notices`]: word that a task ended, for the nodes it migrated from;
//! - [`replicas`]: replicas held, migrations accepted, leases: the rules of
//!   ownership, without sockets;
//! - [`discovery`]: this node's beacon on the LAN and the peers it hears;
//! - [`console`]: network consoles on the server's connections;
//! - [`commands`]: the shell's `key`, `migrate`, `sync`, `codec` and `peers`;
//! - [`encoder`]: the chunk codecs of migrations and syncs.
//!
//! What they all use (the board, the network stack, the task table, the
//! key, the settings) is the [`Context`]; a turn lends the parts to each
//! other through [`Parts`].

mod commands;
mod console;
mod discovery;
mod encoder;
mod error;
mod link;
mod migration;
mod modules;
mod notices;
mod replicas;
mod requests;
mod server;
mod session;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_peers;
#[cfg(test)]
mod tests_sync;
#[cfg(test)]
mod tests_wasm;

pub use discovery::{Peer, PEER_TTL_NS};
pub use encoder::CodecMode;
pub use error::ControlError;
pub use link::Timeouts;
pub use migration::{DEFAULT_DOWNTIME_MS, MAX_PRECOPY_ROUNDS};
pub use server::LISTENERS;
pub use session::{DEFAULT_LEASE_NS, PING_NS};

use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::time::Duration;
use smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Address};
use tern_hal::Board;
use tern_protocol::{
    Config, Hello, NodeEvent, Outgoing, Replica, Security, Transfer, PROTOCOL_VERSION,
};

use crate::kernel::{Kernel, RemoteConsoles, Service, ServiceStatus, SharedEntropy, Turn};
use crate::net::SharedNet;
use crate::tasks::SharedTasks;
use discovery::Discovery;
use migration::Migrations;
use notices::Notices;
use replicas::{HeldReplica, ReplicaStore};
use server::Server;
use session::Sessions;

/// The TCP port of the control service.
pub const CONTROL_PORT: u16 = 4470;

/// Receive and send buffer of each control socket (above 64 KiB, TCP
/// window scaling lets a peer send that much unacknowledged).
const SOCKET_BUFFER: usize = 256 * 1024;

/// Extra network turns per run-loop turn while a transfer streams.
const STREAM_TURNS: usize = 16;

/// A sender produces the next chunk only when fewer bytes than this wait
/// for the socket, so a transfer holds about two chunks in memory.
const LOW_WATER: usize = 128 * 1024;

/// First local port of outgoing connections.
const FIRST_LOCAL_PORT: u16 = 49152;

/// TCP keep-alive probes on idle control connections.
const KEEP_ALIVE_MS: u64 = 2_000;

/// Replicas may hold one part in this many of the heap.
const REPLICA_SHARE: u64 = 4;

/// Seconds of a time in nanoseconds.
fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// The node id made of a MAC address: its 48 bits.
pub fn node_id_from_mac(mac: [u8; 6]) -> u64 {
    mac.iter().fold(0, |id, &b| (id << 8) | u64::from(b))
}

/// What every part of the control service uses.
pub(crate) struct Context {
    board: &'static dyn Board,
    net: SharedNet,
    tasks: SharedTasks,
    entropy: Option<SharedEntropy>,
    security: Option<Security>,
    node_id: u64,
    timeouts: Timeouts,
    /// How the chunks of migrations and syncs started here are compressed.
    codec_mode: CodecMode,
    next_port: u16,
    /// Sockets of finished connections, closing; dropped once closed or at
    /// the deadline.
    closing: Vec<(SocketHandle, u64)>,
    /// TCP sockets the service holds (listening, connected or closing):
    /// the node status reports it, so a leaked socket shows.
    sockets: u32,
    /// Where network consoles are opened (the kernel serves them).
    consoles: RemoteConsoles,
}

impl Context {
    /// This node's side of a handshake.
    fn hello(&self) -> Hello {
        let facts = self.board.facts();
        Hello {
            version: PROTOCOL_VERSION,
            isa: facts.isa.name().into(),
            board: facts.board.into(),
            node_id: self.node_id,
            task_kinds: self.task_kinds(),
            insecure: false,
        }
    }

    /// The names of the task kinds this node runs.
    fn task_kinds(&self) -> Vec<alloc::string::String> {
        let tasks = self.tasks.borrow();
        tasks
            .catalog()
            .kinds()
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    }

    /// The key and the random number generator every connection needs.
    fn prerequisites(&self) -> Result<(&Security, &SharedEntropy), ControlError> {
        let security = self.security.as_ref().ok_or(ControlError::NoKey)?;
        let entropy = self.entropy.as_ref().ok_or(ControlError::NoEntropy)?;
        Ok((security, entropy))
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

    /// A new control socket.
    fn add_socket(&mut self) -> SocketHandle {
        self.sockets += 1;
        self.net.borrow_mut().add_tcp(SOCKET_BUFFER, SOCKET_BUFFER)
    }

    /// Frees a socket [`Context::add_socket`] made.
    fn remove_socket(&mut self, handle: SocketHandle) {
        self.sockets = self.sockets.saturating_sub(1);
        self.net.borrow_mut().remove_tcp(handle);
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

    /// Lets socket `handle` finish closing, then frees it.
    fn close_later(&mut self, handle: SocketHandle, now_ns: u64) {
        self.closing.push((handle, now_ns + self.timeouts.idle_ns));
    }

    /// Frees the sockets that finished closing (or ran out of time).
    fn reap_closed(&mut self, now_ns: u64) {
        let mut net = self.net.borrow_mut();
        let before = self.closing.len();
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
        let freed = before - self.closing.len();
        self.sockets = self.sockets.saturating_sub(freed as u32);
    }

    /// Bytes the replicas held here may take.
    fn replica_budget(&self) -> u64 {
        self.board.heap_stats().total_bytes / REPLICA_SHARE
    }
}

/// The control service's parts, lent to each other for one turn.
pub(crate) struct Parts<'a, 't> {
    ctx: &'a mut Context,
    replicas: &'a mut ReplicaStore,
    migrations: &'a mut Migrations,
    sessions: &'a mut Sessions,
    notices: &'a mut Notices,
    discovery: &'a Discovery,
    turn: &'a mut Turn<'t>,
}

/// Failback: the peer `winner` (node id, at `winner_addr`) runs the task at
/// `winner_epoch`, newer than this node's copy, task `local_id`: stops that
/// copy here and keeps its state as the replica.
fn step_down(
    ctx: &mut Context,
    replicas: &mut ReplicaStore,
    turn: &mut Turn<'_>,
    local_id: u32,
    winner: u64,
    winner_epoch: u64,
    winner_addr: &str,
) {
    let facts = ctx.board.facts();
    let Some(e) = ctx.tasks.borrow_mut().remove(local_id) else {
        return;
    };
    let progress = e.task.progress();
    let replica = e
        .capture(e.epoch, &facts, None, ctx.board.clock())
        .ok()
        .and_then(|c| Replica::advance(None, c).ok())
        .and_then(|r| Outgoing::new(Transfer::Replicate, e.task_id, r, None).ok());
    if let Some(outgoing) = replica {
        let offer = outgoing.offered().clone();
        replicas.keep(
            e.task_id,
            HeldReplica {
                replica: Rc::new(outgoing.into_replica()),
                offer,
                owner: winner,
                updated_ns: turn.now_ns,
            },
            ctx.replica_budget(),
        );
    }
    turn.publish(NodeEvent::SteppedDown {
        task: e.task_ref(),
        winner: winner_addr.into(),
        winner_epoch,
        epoch: e.epoch,
        progress: progress.done,
        progress_total: progress.total,
    });
}

/// The control service's state, shared with its shell commands.
pub struct Control {
    ctx: Context,
    replicas: ReplicaStore,
    server: Server,
    migrations: Migrations,
    sessions: Sessions,
    notices: Notices,
    discovery: Discovery,
}

impl Control {
    /// The service of the node whose network stack is `net` and whose tasks
    /// are `tasks`, with the board's random number generator if it has one.
    pub fn new(
        board: &'static dyn Board,
        net: SharedNet,
        tasks: SharedTasks,
        entropy: Option<SharedEntropy>,
        consoles: RemoteConsoles,
    ) -> Self {
        let node_id = node_id_from_mac(net.borrow().mac_address());
        let mut ctx = Context {
            board,
            net,
            tasks,
            entropy,
            security: None,
            node_id,
            timeouts: Timeouts::default(),
            codec_mode: CodecMode::Adaptive,
            next_port: FIRST_LOCAL_PORT,
            closing: Vec::new(),
            sockets: 0,
            consoles,
        };
        let server = Server::new(&mut ctx);
        let discovery = Discovery::new(&mut ctx);
        Self {
            ctx,
            replicas: ReplicaStore::new(DEFAULT_LEASE_NS),
            server,
            migrations: Migrations::default(),
            sessions: Sessions::default(),
            notices: Notices::default(),
            discovery,
        }
    }

    /// Sets the key (or the explicit insecure mode); `None` refuses every
    /// connection.
    pub fn set_security(&mut self, security: Option<Security>) {
        self.ctx.security = security;
    }

    /// The configured key.
    pub fn security(&self) -> Option<&Security> {
        self.ctx.security.as_ref()
    }

    /// Replaces the timeouts (tests shorten them).
    pub fn set_timeouts(&mut self, timeouts: Timeouts) {
        self.ctx.timeouts = timeouts;
    }

    /// Sets how migrations and syncs started here compress their chunks.
    pub fn set_codec_mode(&mut self, mode: CodecMode) {
        self.ctx.codec_mode = mode;
    }

    /// How migrations and syncs started here compress their chunks.
    pub fn codec_mode(&self) -> CodecMode {
        self.ctx.codec_mode
    }

    /// Starts migrating the task with local id `local_id` to `to`, its
    /// stop-and-copy allowed `downtime_ms` (default
    /// [`DEFAULT_DOWNTIME_MS`]); the progress and the result are events.
    /// Returns the shell's answer.
    pub fn migrate(
        &mut self,
        local_id: u32,
        to: IpEndpoint,
        downtime_ms: Option<u64>,
        turn: &mut Turn<'_>,
    ) -> Result<alloc::string::String, ControlError> {
        let (_, task) =
            self.migrations
                .start(&mut self.ctx, turn, local_id, to, downtime_ms, None)?;
        Ok(alloc::format!(
            "migrate: {} -> {to}: connecting",
            crate::events::label(&task)
        ))
    }

    /// Starts a sync session keeping a standby of task `local_id` on `to`;
    /// returns the shell's answer.
    pub fn sync(
        &mut self,
        local_id: u32,
        to: IpEndpoint,
        now_ns: u64,
    ) -> Result<alloc::string::String, ControlError> {
        let lease_ns = self.replicas.lease_ns();
        self.sessions
            .start(&mut self.ctx, lease_ns, local_id, to, now_ns)
    }

    /// Stops the sync session of task `local_id`.
    pub fn stop_sync(&mut self, local_id: u32, turn: &mut Turn<'_>) -> Result<(), ControlError> {
        self.sessions.stop(&mut self.ctx, local_id, turn)
    }

    /// Prints the sync sessions and the leases held here.
    pub fn print_sync(&mut self, now_ns: u64, out: &mut dyn core::fmt::Write) {
        self.sessions.print(&self.replicas, now_ns, out);
    }

    /// `address[:port]`, or the id of a node heard on the LAN, as the
    /// endpoint of its control service.
    pub fn resolve(&self, text: &str) -> Result<IpEndpoint, ControlError> {
        self.discovery.resolve(text)
    }

    /// The nodes heard on the LAN lately.
    pub fn peers(&self) -> &[Peer] {
        self.discovery.peers()
    }

    /// Prints the nodes heard on the LAN.
    pub fn print_peers(&self, now_ns: u64, out: &mut dyn core::fmt::Write) {
        self.discovery.print(now_ns, out);
    }

    /// How long a standby waits without word from the owner.
    pub fn lease_ns(&self) -> u64 {
        self.replicas.lease_ns()
    }

    /// Sets the lease of standbys on this node (and of its sessions' links).
    pub fn set_lease_ns(&mut self, lease_ns: u64) {
        self.replicas.set_lease_ns(lease_ns);
    }

    /// One turn: serves the listening sockets, advances the migrations and
    /// the sync sessions, frees closed sockets; whether anything happened.
    pub fn poll(&mut self, turn: &mut Turn<'_>) -> bool {
        let mut busy = self.poll_once(turn);
        // While a transfer streams, the network gets more turns than the
        // run loop's one per task step: each turn moves at most a socket
        // buffer.
        for _ in 0..STREAM_TURNS {
            let streaming = self.migrations.streaming() || self.server.streaming();
            if !streaming || !self.ctx.net.borrow_mut().poll(turn.now_ns) {
                break;
            }
            busy |= self.poll_once(turn);
        }
        busy
    }

    /// Whether a transfer is under way with a connected peer (a migration
    /// or sync round, or one this node receives): each of its messages
    /// waits for this service's next turn.
    fn awaiting_peer(&self) -> bool {
        self.migrations.connected() || self.server.streaming() || self.sessions.syncing()
    }

    fn poll_once(&mut self, turn: &mut Turn<'_>) -> bool {
        let mut busy = self.discovery.poll(&self.ctx, turn.now_ns);
        let mut parts = Parts {
            ctx: &mut self.ctx,
            replicas: &mut self.replicas,
            migrations: &mut self.migrations,
            sessions: &mut self.sessions,
            notices: &mut self.notices,
            discovery: &self.discovery,
            turn: &mut *turn,
        };
        busy |= self.server.poll(&mut parts);
        busy |= self.sessions.poll(&mut self.ctx, &mut self.replicas, turn);
        busy |= self
            .notices
            .poll(&mut self.ctx, &self.replicas, turn.now_ns);
        let (moved, answers) = self
            .migrations
            .poll(&mut self.ctx, &mut self.replicas, turn);
        busy |= moved;
        self.server.answer(answers);
        self.ctx.reap_closed(turn.now_ns);
        busy
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

impl Service for ControlService {
    fn name(&self) -> &'static str {
        "control"
    }

    fn poll(&mut self, turn: &mut Turn<'_>) -> ServiceStatus {
        let mut control = self.0.borrow_mut();
        let busy = control.poll(turn);
        if control.awaiting_peer() {
            ServiceStatus::AwaitingPeer
        } else if busy {
            ServiceStatus::Busy
        } else {
            ServiceStatus::Idle
        }
    }
}

/// Adds the control service to `kernel` on the network stack `net` for the
/// tasks of `tasks`: its service and its shell commands. Returns it.
pub fn install(kernel: &mut Kernel, net: SharedNet, tasks: SharedTasks) -> Rc<RefCell<Control>> {
    let control = Rc::new(RefCell::new(Control::new(
        kernel.board(),
        net,
        tasks,
        kernel.entropy().cloned(),
        kernel.remote_consoles(),
    )));
    kernel.add_service(Box::new(ControlService(control.clone())));
    for command in commands::commands(&control) {
        kernel.add_command(command);
    }
    control
}
