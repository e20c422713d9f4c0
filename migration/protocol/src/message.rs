//! The protocol's messages (serde + postcard; field order is the wire order,
//! see `docs/protocol.md`).

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::report::{EventRecord, NodeStatus};
pub use tern_migration::ModuleRefusal;

/// Version of this protocol; a peer speaking another version is refused.
pub const PROTOCOL_VERSION: u16 = 4;

/// Longest task tag a node keeps ([`Message::StartTask`]).
pub const MAX_TAG_LEN: usize = 64;

/// A 32-byte digest: a chunk's BLAKE3 hash, a checkpoint's root, a
/// handshake's SHA-256.
pub type Hash = [u8; 32];

/// What a node says about itself in the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u16,
    /// ISA of the node (`x86_64`, `aarch64`).
    pub isa: String,
    /// Board of the node (`pc`, `qemu-virt`, `rpi4`, `linux-host`).
    pub board: String,
    /// Node identity, unique in the cluster.
    pub node_id: u64,
    /// Task kinds this node can run (`npb-ep`, ...).
    pub task_kinds: Vec<String>,
    /// True when the node runs without a key (explicit insecure mode): both
    /// sides must agree, a keyed node refuses an insecure one.
    pub insecure: bool,
}

/// Plaintext handshake messages (before the channel is sealed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Handshake {
    /// Each side's introduction and its fresh random nonce.
    Hello {
        /// The node's description.
        hello: Hello,
        /// 32 random bytes from the board's entropy source.
        nonce: [u8; 32],
    },
    /// Proof of PSK knowledge: HMAC-SHA-256 over the transcript hash.
    Auth {
        /// The MAC (see the key schedule in `docs/protocol.md`).
        mac: Hash,
    },
}

/// How a chunk's payload is encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Codec {
    /// The bytes as they are.
    None,
    /// LZ4 block format.
    Lz4,
    /// Zstandard frame, of any level.
    Zstd,
}

impl Codec {
    /// The tern-codec codec that decodes this encoding (`None` for raw bytes).
    /// Every Zstandard level decodes alike, so the level is not on the wire.
    pub fn decoder(self) -> Option<tern_codec::Codec> {
        match self {
            Codec::None => None,
            Codec::Lz4 => Some(tern_codec::Codec::Lz4),
            Codec::Zstd => Some(tern_codec::Codec::Zstd1),
        }
    }
}

impl From<tern_codec::Codec> for Codec {
    /// The wire encoding of what a tern-codec codec produces.
    fn from(codec: tern_codec::Codec) -> Self {
        use tern_codec::Codec as Sync;
        match codec {
            Sync::None => Codec::None,
            Sync::Lz4 => Codec::Lz4,
            Sync::Zstd1 | Sync::Zstd3 | Sync::Zstd9 => Codec::Zstd,
        }
    }
}

/// One chunk of a checkpoint as announced in an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkInfo {
    /// Its place among the checkpoint's chunk records (file order).
    pub at: u32,
    /// BLAKE3 of the chunk's bytes: its identity for deduplication and the
    /// check on arrival.
    pub hash: Hash,
    /// Length in bytes.
    pub len: u32,
}

/// Whether a transfer moves the task or only copies its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transfer {
    /// Migration: on ack the receiver owns the task at the offered epoch.
    Migrate,
    /// Inspector fetch: a copy; ownership does not move.
    Copy,
    /// A copy the receiving node keeps as its replica of the task (the
    /// pre-copy rounds of a migration, a standby's sync); ownership does not
    /// move, and later offers of the task are deduplicated against it.
    Replicate,
    /// A sync session's copy: a [`Transfer::Replicate`] on which the
    /// receiver also holds a lease (the standby of the task). When the owner
    /// stays silent (no message, no ping) for longer than the lease, the
    /// receiver resumes the task from this replica at the next epoch. The
    /// lease ends when the owner closes the connection.
    Standby,
}

/// The sender's announcement of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// Migrate or copy.
    pub transfer: Transfer,
    /// Task identity, stable across nodes.
    pub task_id: u64,
    /// Task kind name.
    pub kind: String,
    /// Task kind state version.
    pub kind_version: u32,
    /// Equal computation progress of the checkpoint.
    pub progress: u64,
    /// Progress at completion.
    pub progress_total: u64,
    /// Ownership epoch the receiver takes on ack (the checkpoint's header epoch).
    pub epoch: u64,
    /// The checkpoint's identity: the root over its chunk hashes.
    pub checkpoint_hash: Hash,
    /// Length of the checkpoint as a file, in bytes.
    pub total_len: u64,
    /// The checkpoint's header and region table (format v2).
    pub layout: Vec<u8>,
    /// The root of the replica the receiver took in this sender's previous
    /// round, when the offer lists only the chunks that changed since; `None`
    /// when it lists every chunk.
    pub base: Option<Hash>,
    /// The chunks offered, by increasing place.
    pub chunks: Vec<ChunkInfo>,
}

/// What a receiver spent on a transfer, told in its ack.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiverTimes {
    /// Opening, decoding and checking the chunks and the root, microseconds.
    pub check_us: u64,
    /// Rebuilding the task from the chunks (a migration), microseconds.
    pub rebuild_us: u64,
}

/// A node's relation to a task it lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// The node runs the task and is its owner at the listed epoch.
    Owner,
    /// The node holds a replica of the task (a standby or a pre-copy target).
    Standby,
}

/// Where a listed task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskStatus {
    /// Being stepped.
    Running,
    /// Waiting at a migration point.
    Paused,
    /// Migration under way: paused until the receiver acknowledges.
    Migrating,
    /// Finished; whether its self-verification passed.
    Finished {
        /// The workload's verdict.
        verified: bool,
    },
    /// Only a replica is held here; it does not run.
    Replica,
}

/// One task as listed by a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSummary {
    /// Task identity (stable across nodes).
    pub task_id: u64,
    /// Task kind name.
    pub kind: String,
    /// Progress done.
    pub progress: u64,
    /// Progress at completion.
    pub progress_total: u64,
    /// Node id of the owner as this node knows it.
    pub owner: u64,
    /// Ownership epoch.
    pub epoch: u64,
    /// This node's role for the task.
    pub role: Role,
    /// Running, paused, finished, or only a replica.
    pub status: TaskStatus,
    /// Milliseconds since the last completed sync or replica update, if any.
    pub last_sync_ms_ago: Option<u64>,
    /// Name of the sync-interval policy in force for the task, if it is synced.
    pub policy: Option<String>,
    /// The tag the task was started with, if any ([`Message::StartTask`]).
    pub tag: Option<String>,
}

/// What a node measured while migrating a task (the answer to
/// [`Message::MigrateTo`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationReport {
    /// Task identity.
    pub task_id: u64,
    /// The epoch the receiver took.
    pub epoch: u64,
    /// ISA of the sending node.
    pub from_isa: String,
    /// ISA of the receiving node.
    pub to_isa: String,
    /// Size of the final checkpoint, in bytes.
    pub state_bytes: u64,
    /// Bytes the sender wrote to the connection for the whole migration
    /// (handshake, pre-copy and stop-and-copy, framing and sealing included).
    pub wire_bytes: u64,
    /// Pre-copy rounds before the stop-and-copy.
    pub precopy_rounds: u32,
    /// From the request to the receiver's ack, in milliseconds.
    pub total_ms: u64,
    /// While the task did not run (pause at the migration point to the ack),
    /// in milliseconds.
    pub downtime_ms: u64,
    /// Chunks of the final checkpoint.
    pub chunks: u32,
    /// Chunks the stop-and-copy sent (those the receiver's replica lacked).
    pub stop_copy_chunks: u32,
    /// The codec that carried most of the chunk bytes.
    pub codec: String,
    /// Raw over compressed chunk bytes over the whole migration, in thousandths.
    pub ratio_milli: u32,
    /// The downtime the stop-and-copy was allowed, in milliseconds.
    pub downtime_limit_ms: u64,
    /// Why the pre-copy rounds stopped.
    pub stop: StopReason,
    /// Each round: the pre-copy rounds, then the stop-and-copy.
    pub rounds: Vec<RoundReport>,
    /// Where the time went, summed over the rounds.
    pub stages: StageTimes,
}

/// Why a migration's pre-copy ended and its stop-and-copy began.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopReason {
    /// The chunks written since the last round would cross the link within
    /// the downtime limit, at the rate the link monitor predicts.
    DowntimeFits {
        /// The predicted transfer of those chunks, milliseconds.
        predicted_ms: u64,
    },
    /// The round limit was reached first.
    RoundLimit,
    /// The chunks written during a round were not fewer than in the round
    /// before: more rounds would not shrink the stop-and-copy.
    NotConverging {
        /// The predicted transfer of the chunks left, milliseconds (0
        /// without a rate).
        predicted_ms: u64,
    },
}

/// One round of a migration as its sender measured it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundReport {
    /// 1, 2, ... for the pre-copy rounds; the last is the stop-and-copy.
    pub round: u32,
    /// Chunks written since the previous round (all of them in the first).
    pub dirty_chunks: u32,
    /// Their bytes.
    pub dirty_bytes: u64,
    /// Chunks the receiver lacked and got.
    pub chunks_sent: u32,
    /// Bytes written to the connection for the round.
    pub wire_bytes: u64,
    /// From the capture to the receiver's ack, milliseconds.
    pub ms: u64,
}

/// Where a migration's time went, in microseconds, summed over its rounds.
/// The sender's stages run one after the other on its one core; the link
/// carries bytes meanwhile, so `send` overlaps the sender's compress and
/// seal, and the receiver's check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageTimes {
    /// Copying the chunks a round sends out of the task, at its migration point.
    pub capture_us: u64,
    /// Hashing the chunks written since they were last hashed.
    pub hash_us: u64,
    /// Compressing the chunks sent.
    pub compress_us: u64,
    /// Sealing the frames (ChaCha20-Poly1305).
    pub seal_us: u64,
    /// From each round's offer to its ack, wall clock.
    pub send_us: u64,
    /// The receiver opening, decoding and checking chunks and roots.
    pub check_us: u64,
    /// The receiver rebuilding the task at the commit.
    pub rebuild_us: u64,
}

/// Why a peer refused a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NackReason {
    /// The receiver knows the task at an epoch at least as high.
    StaleEpoch {
        /// The epoch the receiver knows.
        known: u64,
    },
    /// The receiver cannot run this task kind/version.
    UnsupportedKind,
    /// A chunk's codec is not supported.
    UnsupportedCodec,
    /// A chunk did not match its announced hash, CRC or length.
    BadChunk {
        /// Index of the chunk in the offer.
        index: u32,
    },
    /// Commit came before every needed chunk.
    MissingChunks,
    /// The assembled checkpoint's hash or epoch differs from the offer/commit.
    HashMismatch,
    /// The assembled checkpoint failed validation by the checkpoint reader.
    InvalidCheckpoint,
    /// The offer is too large for this node.
    TooLarge,
    /// No task with this id.
    UnknownTask,
    /// The message was not expected in the current phase.
    UnexpectedMessage,
    /// The node is busy with another transfer.
    Busy,
    /// A requested migration failed: the peer could not be reached, refused
    /// or broke off; this node still owns the task.
    MigrationFailed,
    /// A `StartTask` could not start: unknown kind or arguments, or not
    /// enough memory (the node's console and event say which); or a
    /// `SetStandby`'s sync session could not start (the task finished, a bad
    /// address, no key or address here).
    StartRefused,
    /// The offer names a base this node does not hold: offer every chunk.
    UnknownBase,
    /// The offered checkpoint's task needs a module this node does not hold
    /// (send it first: [`Message::ModuleQuery`], [`Message::ModulePart`]).
    MissingModule {
        /// The module's identity.
        module: Hash,
    },
}

/// Messages inside the sealed channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Sender → receiver: a checkpoint is available.
    Offer(Offer),
    /// Receiver → sender: indices (into the offer) of the chunks it lacks.
    Need {
        /// Strictly increasing chunk indices.
        chunks: Vec<u32>,
    },
    /// Sender → receiver: one needed chunk.
    Chunk {
        /// Index into the offer's chunk list.
        index: u32,
        /// Payload encoding.
        codec: Codec,
        /// The (encoded) bytes.
        payload: Vec<u8>,
    },
    /// Sender → receiver: all needed chunks sent; take the task.
    Commit {
        /// Must equal the offer's checkpoint hash.
        checkpoint_hash: Hash,
        /// Must equal the offer's epoch.
        epoch: u64,
    },
    /// Receiver → sender: checkpoint accepted (for a migration: the receiver now owns the task).
    Ack {
        /// The epoch now in force.
        epoch: u64,
        /// What the transfer cost the receiver.
        times: ReceiverTimes,
    },
    /// Either side: refusal, with its reason.
    Nack(NackReason),
    /// Inspector → node: list the tasks.
    List,
    /// Node → inspector: the tasks.
    Tasks(Vec<TaskSummary>),
    /// Inspector → node: send a consistent checkpoint of this task (answered by an `Offer` with [`Transfer::Copy`]).
    Fetch {
        /// Task identity.
        task_id: u64,
    },
    /// Inspector → node: migrate this task to the node at `to`
    /// (`address:port`); answered by [`Message::Migrated`] or a nack once
    /// the migration is over.
    MigrateTo {
        /// Task identity.
        task_id: u64,
        /// The receiving node's control address, `address:port`.
        to: String,
        /// The downtime the stop-and-copy may take, in milliseconds (`None`:
        /// the node's default).
        downtime_ms: Option<u64>,
    },
    /// Node → inspector: the requested migration succeeded.
    Migrated(MigrationReport),
    /// Liveness probe (sync sessions' heartbeats, the link monitor's latency).
    Ping {
        /// Echoed in the pong.
        nonce: u64,
    },
    /// Answer to [`Message::Ping`].
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
    /// Client → node: describe yourself (answered by [`Message::NodeStatus`]).
    Status,
    /// Node → client: its status.
    NodeStatus(NodeStatus),
    /// Client → node: stream the events after sequence number `after` (0:
    /// every event the node still keeps) on this connection, now and as they
    /// happen, in [`Message::Events`] messages; until the connection closes.
    Subscribe {
        /// The last sequence number the client has seen.
        after: u64,
    },
    /// Node → subscriber: events in order.
    Events {
        /// The events, in sequence order.
        records: Vec<EventRecord>,
        /// Events after the subscriber's position that the node no longer
        /// keeps (its log is bounded): a subscriber that fell behind learns
        /// how many it missed.
        dropped: u64,
    },
    /// Client → node: start a task with the arguments of the shell's `run`
    /// (`["ep", "S"]`); answered by [`Message::Started`] or a nack. With a
    /// `tag`, the start is idempotent: a node that already has a task with
    /// this tag answers with that task instead of starting another (a
    /// client that lost the answer asks again safely).
    StartTask {
        /// The arguments.
        args: Vec<String>,
        /// The client's name for the task (at most [`MAX_TAG_LEN`] bytes):
        /// kept with the task across migrations, listed and in its events.
        tag: Option<String>,
    },
    /// Node → client: the task started.
    Started {
        /// Its global identity.
        task_id: u64,
    },
    /// Client → node: drop this task (answered by [`Message::Killed`], or a
    /// nack: `UnknownTask`, `Busy` while it migrates).
    KillTask {
        /// Task identity.
        task_id: u64,
    },
    /// Node → client: the task was dropped.
    Killed {
        /// Task identity.
        task_id: u64,
    },
    /// Client → node: make this connection a console session: the node's
    /// shell with its own line editor, and the node's log lines; answered
    /// by [`Message::ConsoleOutput`] (the banner and the prompt), then
    /// output as it comes, until the connection closes.
    ConsoleOpen,
    /// Client → node: bytes typed on the session's console (as a serial
    /// terminal sends them: CR ends a line, DEL or BS erases).
    ConsoleInput {
        /// The bytes, at most [`MAX_CONSOLE_INPUT`].
        bytes: Vec<u8>,
    },
    /// Node → client: console text: the editor's echo, commands' answers and
    /// the node's log lines (its events, rendered as on the serial console).
    ConsoleOutput {
        /// The text (CR LF line ends).
        text: String,
    },
    /// Client → node: keep a standby replica of this task on the node at
    /// `standby` (`address:port`) through a sync session, or end the task's
    /// session (`None`); answered by [`Message::StandbySet`] or a nack
    /// (`UnknownTask`, `Busy` while it migrates, `StartRefused` when the
    /// session cannot start). Idempotent: asking for the session in force,
    /// or to end none, changes nothing.
    SetStandby {
        /// Task identity.
        task_id: u64,
        /// The standby's control address, or `None` to end the session.
        standby: Option<String>,
    },
    /// Node → client: the task's sync session is as [`Message::SetStandby`] asked.
    StandbySet {
        /// Task identity.
        task_id: u64,
    },
    /// Either peer → node: does it hold task module `module`? Answered by
    /// [`Message::ModuleHeld`].
    ModuleQuery {
        /// The module's identity (SHA-256 of its stored bytes).
        module: Hash,
    },
    /// Node → peer: whether it holds the module.
    ModuleHeld {
        /// The module's identity.
        module: Hash,
        /// Whether the node holds it.
        held: bool,
    },
    /// Either peer → node: a piece of a task module, in order from offset 0
    /// (at most [`crate::module::MODULE_PART`] bytes each). After the last
    /// piece the node answers [`Message::ModuleStored`] or
    /// [`Message::ModuleRejected`].
    ModulePart {
        /// Where the piece starts in the module.
        offset: u64,
        /// The module's length.
        total_len: u64,
        /// The piece.
        bytes: Vec<u8>,
    },
    /// Node → peer: the module passed the node's checks and is held, under
    /// this identity.
    ModuleStored {
        /// The module's identity (of the bytes as the node stores them).
        module: Hash,
    },
    /// Node → peer: the module was refused.
    ModuleRejected {
        /// Why, typed.
        reason: ModuleRefusal,
        /// What exactly (an import's name, the validator's message).
        detail: String,
    },
    /// Owner → a node that holds a replica of its task (the standby of its
    /// sync session, a node the task migrated away from): the task finished,
    /// was killed or removed, or the session was stopped, at `epoch`; the
    /// receiver drops its replica of the task (and its lease) unless that
    /// replica is newer. Best effort and unanswered: a replica whose owner
    /// fell silent without it still fails over when its lease expires.
    TaskEnded {
        /// Task identity.
        task_id: u64,
        /// The epoch the sender ran the task at.
        epoch: u64,
    },
}

/// Most bytes one [`Message::ConsoleInput`] may carry.
pub const MAX_CONSOLE_INPUT: usize = 4096;
