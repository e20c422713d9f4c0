//! `tern-client`: the authenticated client of a live node's control service
//! (TCP port 4470, `docs/protocol.md`): its status, its tasks, a checkpoint
//! copy, a checkpoint offered, a migration, a task module sent, a task
//! started or killed, a task's standby, a checkpoint pushed to it, a ping,
//! and its stream of typed events, a network console; nodes found on the LAN
//! by their beacons ([`discovery`]); and the cluster key's forms (hex, key
//! files, `TERN_KEY`). Every host tool that talks to nodes uses it.
//!
//! It drives the same sans-IO machines as the kernel (`tern-protocol`) over a
//! blocking [`TcpStream`], in the client role, with nonces from the OS RNG.
//! Every wait has a deadline; every failure is a [`NodeError`].

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, Instant};

use tern_protocol::{
    ChannelError, Config, Connection, Event, EventRecord, Hash, Hello, Incoming, Message,
    MigrationReport, ModuleRefusal, NackReason, NodeStatus, Outgoing, Policy, Psk, ReceivePhase,
    Security, SendPhase, TaskSummary, Transfer, TransferError, PROTOCOL_VERSION,
};
use thiserror::Error;

pub mod console;
pub mod discovery;

/// Environment variable holding the cluster key as 64 hex digits.
pub const KEY_ENV: &str = "TERN_KEY";

/// The node's control service port.
pub const CONTROL_PORT: u16 = 4470;

/// Largest checkpoint `fetch` accepts (a class B workload is well below).
const MAX_FETCH_BYTES: u64 = 1 << 30;

/// Why talking to a node failed.
#[derive(Debug, Error)]
pub enum NodeError {
    /// The address did not resolve.
    #[error("cannot resolve {addr}: {source}")]
    Resolve {
        /// The address as given.
        addr: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// TCP connect failed (refused, unreachable, timed out).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The node's address.
        addr: String,
        /// The socket error.
        source: io::Error,
    },
    /// The node did not answer in time.
    #[error("timed out after {timeout:?} waiting for {what} from {addr}")]
    Timeout {
        /// The node's address.
        addr: String,
        /// What was awaited.
        what: &'static str,
        /// How long.
        timeout: Duration,
    },
    /// The node's proof of the key did not verify.
    #[error("authentication failed: wrong key? ({addr} does not know this key)")]
    WrongKey {
        /// The node's address.
        addr: String,
    },
    /// One side is keyed and the other runs insecure.
    #[error("security mode mismatch with {addr}: the node {}", if *node_insecure { "runs without a key (use --insecure)" } else { "requires a key (use --key-file or TERN_KEY)" })]
    ModeMismatch {
        /// The node's address.
        addr: String,
        /// Whether the node runs without a key.
        node_insecure: bool,
    },
    /// The node closed the connection before the handshake finished: it
    /// refused our hello (wrong protocol version or security mode) or our proof.
    #[error("{addr} closed the connection during the handshake (wrong key, security mode or protocol version?)")]
    HandshakeRefused {
        /// The node's address.
        addr: String,
    },
    /// The node closed the connection while an answer was awaited.
    #[error("{addr} closed the connection while we waited for {what}")]
    Closed {
        /// The node's address.
        addr: String,
        /// What was awaited.
        what: &'static str,
    },
    /// The channel failed (corrupt, replayed or malformed frames).
    #[error("protocol error with {addr}: {source}")]
    Channel {
        /// The node's address.
        addr: String,
        /// The channel's error.
        source: ChannelError,
    },
    /// The fetched transfer failed on our side.
    #[error("transfer from {addr} failed: {source}")]
    Transfer {
        /// The node's address.
        addr: String,
        /// The transfer's error.
        source: TransferError,
    },
    /// The node refused the request.
    #[error("{addr} refused: {}", describe_nack(reason))]
    Refused {
        /// The node's address.
        addr: String,
        /// Its reason.
        reason: NackReason,
    },
    /// The node answered with a message that does not fit the request.
    #[error("protocol error with {addr}: unexpected {got} while waiting for {what}")]
    Unexpected {
        /// The node's address.
        addr: String,
        /// What arrived.
        got: String,
        /// What was awaited.
        what: &'static str,
    },
    /// The node at the address a beacon named is another node.
    #[error("{addr} is node {got}, not node {expected} (a stale or replayed beacon?)")]
    OtherNode {
        /// The address.
        addr: String,
        /// The node id asked for.
        expected: String,
        /// The node id that answered.
        got: String,
    },
    /// The node refused a task module.
    #[error("{addr} refused the module: {reason} ({detail})")]
    ModuleRejected {
        /// The node's address.
        addr: String,
        /// Why, typed.
        reason: ModuleRefusal,
        /// What exactly.
        detail: String,
    },
    /// Reading or writing the socket failed.
    #[error("i/o with {addr}: {source}")]
    Io {
        /// The node's address.
        addr: String,
        /// The socket error.
        source: io::Error,
    },
}

/// Why a key could not be loaded.
#[derive(Debug, Error)]
pub enum KeyError {
    /// Not 64 hex digits.
    #[error("a key is 64 hex digits (32 bytes); got {0} characters")]
    Length(usize),
    /// A character is not a hex digit.
    #[error("a key is 64 hex digits; '{0}' is not one")]
    NotHex(char),
    /// The key file could not be read.
    #[error("reading the key file {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// The error.
        source: io::Error,
    },
    /// Neither a key nor explicit insecure mode was given.
    #[error("no key: pass --key-file FILE, set {KEY_ENV}, or --insecure (no authentication)")]
    Missing,
}

/// Parses a key written as 64 hex digits (surrounding whitespace ignored).
pub fn parse_key(text: &str) -> Result<Psk, KeyError> {
    let text = text.trim();
    if text.len() != 64 {
        return Err(KeyError::Length(text.chars().count()));
    }
    let mut key = [0u8; 32];
    let digits: Vec<u8> = text
        .chars()
        .map(|c| c.to_digit(16).map(|d| d as u8).ok_or(KeyError::NotHex(c)))
        .collect::<Result<_, _>>()?;
    for (byte, pair) in key.iter_mut().zip(digits.chunks(2)) {
        *byte = pair[0] << 4 | pair[1];
    }
    Ok(Psk(key))
}

/// Formats a key as the 64 hex digits the node's `key` command takes.
pub fn key_hex(key: &Psk) -> String {
    hex(&key.0)
}

/// A fresh random key from the OS RNG.
pub fn random_key() -> Result<Psk, getrandom::Error> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key)?;
    Ok(Psk(key))
}

/// The security to use: the key file, else explicit insecure mode, else `TERN_KEY`.
pub fn security(key_file: Option<&Path>, insecure: bool) -> Result<Security, KeyError> {
    if let Some(path) = key_file {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::File {
            path: path.display().to_string(),
            source,
        })?;
        return parse_key(&text).map(Security::Key);
    }
    if insecure {
        return Ok(Security::ExplicitlyInsecure);
    }
    match std::env::var(KEY_ENV) {
        Ok(text) => parse_key(&text).map(Security::Key),
        Err(_) => Err(KeyError::Missing),
    }
}

/// Parses a task id written as `list` shows it (`0x` and hex digits, as the
/// nodes' consoles also print it) or in decimal.
pub fn parse_task_id(text: &str) -> Result<u64, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|_| format!("'{text}' is not a task id (0x… hex or decimal)"))
}

/// A one-line description of a node's refusal.
pub fn describe_nack(reason: &NackReason) -> String {
    match reason {
        NackReason::StaleEpoch { known } => {
            format!("stale epoch (the receiver knows the task at epoch {known})")
        }
        NackReason::UnsupportedKind => "the task kind is not supported there".into(),
        NackReason::UnsupportedCodec => "unsupported chunk codec".into(),
        NackReason::BadChunk { index } => format!("chunk {index} was damaged"),
        NackReason::MissingChunks => "chunks were missing at the commit".into(),
        NackReason::HashMismatch => "the checkpoint's hash or epoch did not match".into(),
        NackReason::InvalidCheckpoint => "the checkpoint failed validation".into(),
        NackReason::TooLarge => "the checkpoint is too large".into(),
        NackReason::UnknownTask => "no such task".into(),
        NackReason::UnexpectedMessage => "unexpected message".into(),
        NackReason::Busy => "the node is busy with another transfer".into(),
        NackReason::UnknownBase => "the node does not hold the round's base replica".into(),
        NackReason::StartRefused => {
            "the task could not start (unknown kind or arguments, or not enough memory)".into()
        }
        NackReason::MigrationFailed => {
            "the migration failed (peer unreachable, refused or broke off); the node still owns the task".into()
        }
        NackReason::MissingModule { module } => format!(
            "the task's module {} is not held there (send it first)",
            hex(module)
        ),
    }
}

/// Lowercase hex digits of `bytes` (how keys are written, and how `run
/// wasm` and `StartTask` name a module and give an expected result).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The arguments that start a Wasm task (`run wasm` on the shell,
/// [`NodeClient::start_tagged`] over the network): the module by its
/// identity, the task's name, the result it must give (its text as hex, so
/// spaces survive) if known, and the program's own arguments.
pub fn wasm_run_args(
    module: &[u8; 32],
    name: &str,
    expect: Option<&str>,
    args: &[String],
) -> Vec<String> {
    let mut run = vec!["wasm".into(), hex(module), "--name".into(), name.into()];
    if let Some(expect) = expect {
        run.push("--expect".into());
        run.push(hex(expect.as_bytes()));
    }
    run.push("--".into());
    run.extend(args.iter().cloned());
    run
}

/// The name of a message's variant, for errors (its `Debug` form's head).
fn message_name(m: &Message) -> String {
    format!("{m:?}")
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_string()
}

/// An authenticated connection to a node's control service.
pub struct NodeClient {
    addr: String,
    sock: TcpStream,
    conn: Connection,
    peer: Hello,
    pending: VecDeque<Message>,
    /// Events of a subscription not read yet.
    events: VecDeque<EventRecord>,
    /// Events the node no longer had when the subscription asked for them.
    missed_events: u64,
    /// `Events` messages received (the first answers `Subscribe`).
    event_batches: u64,
    /// Longest wait for any single answer.
    timeout: Duration,
}

impl NodeClient {
    /// Connects to `addr` (`host:port`) and completes the handshake, waiting
    /// at most `timeout` for each step.
    pub fn connect(addr: &str, security: Security, timeout: Duration) -> Result<Self, NodeError> {
        let target: SocketAddr = addr
            .to_socket_addrs()
            .map_err(|source| NodeError::Resolve {
                addr: addr.into(),
                source,
            })?
            .next()
            .ok_or_else(|| NodeError::Resolve {
                addr: addr.into(),
                source: io::ErrorKind::NotFound.into(),
            })?;
        let sock =
            TcpStream::connect_timeout(&target, timeout).map_err(|source| NodeError::Connect {
                addr: addr.into(),
                source,
            })?;
        Self::handshake(addr, sock, security, timeout)
    }

    /// Completes the handshake over an already connected socket (one opened
    /// inside a network namespace, say).
    pub fn handshake(
        addr: &str,
        sock: TcpStream,
        security: Security,
        timeout: Duration,
    ) -> Result<Self, NodeError> {
        let addr = addr.to_string();
        let io_err = |source| NodeError::Io {
            addr: addr.clone(),
            source,
        };
        sock.set_nodelay(true).map_err(io_err)?;
        let insecure = matches!(security, Security::ExplicitlyInsecure);
        let hello = Hello {
            version: PROTOCOL_VERSION,
            isa: std::env::consts::ARCH.into(),
            board: "linux-host".into(),
            node_id: 0,
            task_kinds: Vec::new(),
            insecure,
        };
        let mut nonce = [0u8; 32];
        getrandom::fill(&mut nonce)
            .map_err(|e| io_err(io::Error::other(format!("OS random generator: {e}"))))?;
        let conn =
            Connection::client(&Config::new(hello, Some(security)), nonce).map_err(|source| {
                NodeError::Channel {
                    addr: addr.clone(),
                    source,
                }
            })?;
        let mut client = Self {
            addr,
            sock,
            conn,
            peer: Hello {
                version: 0,
                isa: String::new(),
                board: String::new(),
                node_id: 0,
                task_kinds: Vec::new(),
                insecure,
            },
            pending: VecDeque::new(),
            events: VecDeque::new(),
            missed_events: 0,
            event_batches: 0,
            timeout,
        };
        let deadline = Instant::now() + timeout;
        loop {
            client.flush()?;
            match client.read_events(deadline, "the handshake") {
                Ok(events) => {
                    for event in events {
                        match event {
                            Event::Established(peer) => client.peer = peer,
                            Event::Message(m) => client.pending.push_back(m),
                        }
                    }
                }
                Err(NodeError::Closed { addr, .. }) => {
                    return Err(NodeError::HandshakeRefused { addr })
                }
                Err(e) => return Err(e),
            }
            if client.conn.is_established() {
                client.flush()?;
                return Ok(client);
            }
        }
    }

    /// The node's hello (its ISA, board, node id, task kinds).
    pub fn peer(&self) -> &Hello {
        &self.peer
    }

    /// The node's tasks.
    pub fn list(&mut self) -> Result<Vec<TaskSummary>, NodeError> {
        self.send(&Message::List)?;
        match self.recv("the task list", self.timeout)? {
            Message::Tasks(tasks) => Ok(tasks),
            other => Err(self.unexpected(other, "the task list")),
        }
    }

    /// A copy of task `task_id`'s checkpoint (a format-v2 file), taken by
    /// the node at a migration point and checked here completely (layout,
    /// every chunk's hash, the root).
    pub fn fetch(&mut self, task_id: u64) -> Result<Vec<u8>, NodeError> {
        const WHAT: &str = "the checkpoint";
        self.send(&Message::Fetch { task_id })?;
        let mut incoming = Incoming::new(
            Policy {
                max_len: MAX_FETCH_BYTES,
                kinds: Vec::new(),
                known: None,
            },
            None,
        );
        loop {
            let msg = self.recv(WHAT, self.timeout)?;
            if let Message::Nack(reason) = msg {
                return Err(NodeError::Refused {
                    addr: self.addr.clone(),
                    reason,
                });
            }
            if incoming.phase() == ReceivePhase::AwaitOffer
                && !matches!(msg, Message::Offer(ref o) if o.task_id == task_id)
            {
                return Err(self.unexpected(msg, "the offer of the fetched task"));
            }
            match incoming.on_message(msg) {
                Ok(Some(reply)) => {
                    self.send(&reply)?;
                    if incoming.phase() == ReceivePhase::Accepted {
                        return incoming.take_checkpoint().ok_or(NodeError::Transfer {
                            addr: self.addr.clone(),
                            source: TransferError::Finished,
                        });
                    }
                }
                Ok(None) => {}
                Err(source) => {
                    // Tell the node why, then report.
                    if let Some(nack) = source.nack() {
                        let _ = self.send(&nack);
                    }
                    return Err(NodeError::Transfer {
                        addr: self.addr.clone(),
                        source,
                    });
                }
            }
        }
    }

    /// Asks the node to migrate task `task_id` to the node at `to`
    /// (`address:port`) and waits up to `timeout` for its report.
    pub fn migrate(
        &mut self,
        task_id: u64,
        to: &str,
        timeout: Duration,
    ) -> Result<MigrationReport, NodeError> {
        self.migrate_within(task_id, to, None, timeout)
    }

    /// [`Client::migrate`] with the downtime the stop-and-copy may take, in
    /// milliseconds (`None`: the node's default, 300 ms).
    pub fn migrate_within(
        &mut self,
        task_id: u64,
        to: &str,
        downtime_ms: Option<u64>,
        timeout: Duration,
    ) -> Result<MigrationReport, NodeError> {
        self.send(&Message::MigrateTo {
            task_id,
            to: to.into(),
            downtime_ms,
        })?;
        match self.recv("the migration report", timeout)? {
            Message::Migrated(report) => Ok(report),
            Message::Nack(reason) => Err(NodeError::Refused {
                addr: self.addr.clone(),
                reason,
            }),
            other => Err(self.unexpected(other, "the migration report")),
        }
    }

    /// The node's status: ISA, board, memory, address, tasks.
    pub fn status(&mut self) -> Result<NodeStatus, NodeError> {
        self.send(&Message::Status)?;
        match self.recv("the node's status", self.timeout)? {
            Message::NodeStatus(status) => Ok(status),
            other => Err(self.unexpected(other, "the node's status")),
        }
    }

    /// Starts a task with the arguments of the node's `run` (`["ep", "S"]`);
    /// returns its global id.
    pub fn start_task(&mut self, args: &[&str]) -> Result<u64, NodeError> {
        self.start_tagged(args, None)
    }

    /// [`NodeClient::start_task`] under `tag` (at most 64 bytes), which the
    /// task keeps across migrations and shows in listings and events. Asking
    /// again with the same tag is safe: a node that has the task answers with
    /// it instead of starting another.
    pub fn start_tagged(&mut self, args: &[&str], tag: Option<&str>) -> Result<u64, NodeError> {
        self.send(&Message::StartTask {
            args: args.iter().map(|a| String::from(*a)).collect(),
            tag: tag.map(String::from),
        })?;
        match self.recv("the started task", self.timeout)? {
            Message::Started { task_id } => Ok(task_id),
            Message::Nack(reason) => Err(NodeError::Refused {
                addr: self.addr.clone(),
                reason,
            }),
            other => Err(self.unexpected(other, "the started task")),
        }
    }

    /// Sends a task module (in parts that fit a frame); returns the identity
    /// the node stores it under, or its typed refusal.
    pub fn put_module(&mut self, bytes: &[u8]) -> Result<Hash, NodeError> {
        const WHAT: &str = "the module's verdict";
        for part in tern_protocol::module::parts(bytes) {
            self.send(&part)?;
        }
        match self.recv(WHAT, self.timeout)? {
            Message::ModuleStored { module } => Ok(module),
            Message::ModuleRejected { reason, detail } => Err(NodeError::ModuleRejected {
                addr: self.addr.clone(),
                reason,
                detail,
            }),
            Message::Nack(reason) => Err(NodeError::Refused {
                addr: self.addr.clone(),
                reason,
            }),
            other => Err(self.unexpected(other, WHAT)),
        }
    }

    /// Offers checkpoint file `bytes` of task `task_id` to the node as a
    /// `transfer` (a migration: the node runs it on its ack) and sends the
    /// chunks it asks for; returns the epoch the node acked.
    pub fn offer(
        &mut self,
        transfer: Transfer,
        task_id: u64,
        bytes: Vec<u8>,
    ) -> Result<u64, NodeError> {
        let outgoing = Outgoing::from_file(transfer, task_id, &bytes).map_err(|source| {
            NodeError::Transfer {
                addr: self.addr.clone(),
                source,
            }
        })?;
        self.push(outgoing, self.timeout)
    }

    /// Whether the node holds module `id`.
    pub fn has_module(&mut self, id: &Hash) -> Result<bool, NodeError> {
        self.send(&Message::ModuleQuery { module: *id })?;
        match self.recv("the module query's answer", self.timeout)? {
            Message::ModuleHeld { module, held } if module == *id => Ok(held),
            other => Err(self.unexpected(other, "the module query's answer")),
        }
    }

    /// Drops task `task_id` on the node (refused while it migrates).
    pub fn kill_task(&mut self, task_id: u64) -> Result<(), NodeError> {
        self.send(&Message::KillTask { task_id })?;
        match self.recv("the kill's answer", self.timeout)? {
            Message::Killed { task_id: id } if id == task_id => Ok(()),
            Message::Nack(reason) => Err(NodeError::Refused {
                addr: self.addr.clone(),
                reason,
            }),
            other => Err(self.unexpected(other, "the kill's answer")),
        }
    }

    /// Keeps a standby replica of task `task_id` on the node at `standby`
    /// (`address:port`) through a sync session, or ends the task's session
    /// (`None`). Asking for what is already so is safe.
    pub fn set_standby(&mut self, task_id: u64, standby: Option<&str>) -> Result<(), NodeError> {
        self.send(&Message::SetStandby {
            task_id,
            standby: standby.map(String::from),
        })?;
        match self.recv("the standby's answer", self.timeout)? {
            Message::StandbySet { task_id: id } if id == task_id => Ok(()),
            Message::Nack(reason) => Err(NodeError::Refused {
                addr: self.addr.clone(),
                reason,
            }),
            other => Err(self.unexpected(other, "the standby's answer")),
        }
    }

    /// Sends a checkpoint to the node as `outgoing` prepared it (a
    /// `Migrate` transfer resumes the task there at the checkpoint's epoch)
    /// and waits up to `timeout` for the node's ack; returns the epoch it
    /// acknowledged. Offering again what the node already took is acked
    /// again without a transfer.
    pub fn push(&mut self, mut outgoing: Outgoing, timeout: Duration) -> Result<u64, NodeError> {
        const WHAT: &str = "the transfer's acknowledgement";
        let deadline = Instant::now() + timeout;
        self.send(&outgoing.offer())?;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = self.recv(WHAT, left)?;
            let ack = match msg {
                Message::Ack { epoch, .. } => Some(epoch),
                _ => None,
            };
            outgoing.on_message(msg).map_err(|source| match source {
                TransferError::Refused(reason) => NodeError::Refused {
                    addr: self.addr.clone(),
                    reason,
                },
                source => NodeError::Transfer {
                    addr: self.addr.clone(),
                    source,
                },
            })?;
            if let (Some(epoch), SendPhase::Acked) = (ack, outgoing.phase()) {
                return Ok(epoch);
            }
            while let Some(m) = outgoing.poll_send() {
                self.send(&m)?;
            }
        }
    }

    /// Subscribes to the node's events after sequence number `after` (0:
    /// all it still keeps); read them with [`NodeClient::next_event`].
    pub fn subscribe(&mut self, after: u64) -> Result<(), NodeError> {
        self.send(&Message::Subscribe { after })?;
        // The node answers with a first (often empty) batch of events.
        let deadline = Instant::now() + self.timeout;
        let before = self.event_batches;
        while self.event_batches == before {
            self.read_messages(deadline, "the subscription")?;
            if let Some(m) = self.pending.pop_front() {
                return Err(self.unexpected(m, "the subscription"));
            }
        }
        Ok(())
    }

    /// The next event of the subscription, waiting at most `timeout`.
    pub fn next_event(&mut self, timeout: Duration) -> Result<EventRecord, NodeError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(record) = self.events.pop_front() {
                return Ok(record);
            }
            self.read_messages(deadline, "an event")?;
        }
    }

    /// Reads events until `pick` chooses one, waiting at most `timeout`.
    pub fn wait_event<T>(
        &mut self,
        timeout: Duration,
        mut pick: impl FnMut(&EventRecord) -> Option<T>,
    ) -> Result<T, NodeError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let record = self.next_event(left)?;
            if let Some(found) = pick(&record) {
                return Ok(found);
            }
        }
    }

    /// Events the node no longer kept when the subscription asked for them.
    pub fn missed_events(&self) -> u64 {
        self.missed_events
    }

    /// Sends a ping and returns the round-trip time.
    pub fn ping(&mut self) -> Result<Duration, NodeError> {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|e| NodeError::Io {
            addr: self.addr.clone(),
            source: io::Error::other(format!("OS random generator: {e}")),
        })?;
        let nonce = u64::from_le_bytes(bytes);
        let start = Instant::now();
        self.send(&Message::Ping { nonce })?;
        match self.recv("the pong", self.timeout)? {
            Message::Pong { nonce: n } if n == nonce => Ok(start.elapsed()),
            other => Err(self.unexpected(other, "the pong")),
        }
    }

    fn unexpected(&self, got: Message, what: &'static str) -> NodeError {
        NodeError::Unexpected {
            addr: self.addr.clone(),
            got: message_name(&got),
            what,
        }
    }

    fn channel(&self, source: ChannelError) -> NodeError {
        let addr = self.addr.clone();
        match source {
            ChannelError::AuthFailed => NodeError::WrongKey { addr },
            ChannelError::ModeMismatch { peer_insecure } => NodeError::ModeMismatch {
                addr,
                node_insecure: peer_insecure,
            },
            source => NodeError::Channel { addr, source },
        }
    }

    fn send(&mut self, msg: &Message) -> Result<(), NodeError> {
        self.conn.send(msg).map_err(|e| self.channel(e))?;
        self.flush()
    }

    fn flush(&mut self) -> Result<(), NodeError> {
        let out = self.conn.take_output();
        if out.is_empty() {
            return Ok(());
        }
        self.sock.write_all(&out).map_err(|source| NodeError::Io {
            addr: self.addr.clone(),
            source,
        })
    }

    /// The next message that is not a subscription's events, waiting at
    /// most `timeout`; events that arrive meanwhile are kept for
    /// [`NodeClient::next_event`].
    fn recv(&mut self, what: &'static str, timeout: Duration) -> Result<Message, NodeError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(m) = self.pending.pop_front() {
                return Ok(m);
            }
            self.read_messages(deadline, what)?;
        }
    }

    /// One read from the socket: its messages, events set apart.
    fn read_messages(&mut self, deadline: Instant, what: &'static str) -> Result<(), NodeError> {
        for event in self.read_events(deadline, what)? {
            match event {
                Event::Message(Message::Events { records, dropped }) => {
                    self.event_batches += 1;
                    self.missed_events += dropped;
                    self.events.extend(records);
                }
                Event::Message(m) => self.pending.push_back(m),
                Event::Established(_) => {}
            }
        }
        Ok(())
    }

    /// One read from the socket, fed to the connection.
    fn read_events(
        &mut self,
        deadline: Instant,
        what: &'static str,
    ) -> Result<Vec<Event>, NodeError> {
        let now = Instant::now();
        let timeout_error = || NodeError::Timeout {
            addr: self.addr.clone(),
            what,
            timeout: self.timeout,
        };
        if now >= deadline {
            return Err(timeout_error());
        }
        self.sock
            .set_read_timeout(Some(deadline - now))
            .map_err(|source| NodeError::Io {
                addr: self.addr.clone(),
                source,
            })?;
        let mut buf = vec![0u8; 64 * 1024];
        let n = match self.sock.read(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(timeout_error())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Vec::new()),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(NodeError::Closed {
                    addr: self.addr.clone(),
                    what,
                })
            }
            Err(source) => {
                return Err(NodeError::Io {
                    addr: self.addr.clone(),
                    source,
                })
            }
        };
        if n == 0 {
            return Err(match self.conn.end_of_stream() {
                Ok(()) => NodeError::Closed {
                    addr: self.addr.clone(),
                    what,
                },
                Err(e) => self.channel(e),
            });
        }
        let events = self.conn.receive(&buf[..n]).map_err(|e| self.channel(e))?;
        // A handshake step may have produced our next frame.
        self.flush()?;
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_from_hex_and_bad_ones_are_typed_errors() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        let key = parse_key(&format!("  {hex}\n")).unwrap();
        assert_eq!(key.0[1], 0x11);
        assert_eq!(key.0[31], 0xff);
        assert_eq!(key_hex(&key), hex.to_lowercase());
        assert!(matches!(parse_key("abcd"), Err(KeyError::Length(4))));
        let bad = format!("{}g", &hex[..63]);
        assert!(matches!(parse_key(&bad), Err(KeyError::NotHex('g'))));
    }

    #[test]
    fn unexpected_messages_are_named_by_their_variant() {
        assert_eq!(message_name(&Message::List), "List");
        assert_eq!(message_name(&Message::Ping { nonce: 3 }), "Ping");
        assert_eq!(message_name(&Message::Nack(NackReason::Busy)), "Nack");
    }

    #[test]
    fn task_ids_parse_in_hex_and_decimal() {
        assert_eq!(
            parse_task_id("0x5254007e00020001"),
            Ok(0x5254_007e_0002_0001)
        );
        assert_eq!(parse_task_id("17"), Ok(17));
        assert!(parse_task_id("0xzz").unwrap_err().contains("not a task id"));
        assert!(parse_task_id("-1").is_err());
    }

    #[test]
    fn random_keys_differ() {
        assert_ne!(random_key().unwrap().0, random_key().unwrap().0);
    }
}
