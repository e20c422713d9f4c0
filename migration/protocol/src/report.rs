//! What a node reports about itself: its status (the answer to
//! [`crate::Message::Status`]) and the typed events its services produce
//! (streamed after [`crate::Message::Subscribe`]). Host tools and tests read
//! these values instead of the console's prose; the console renders the same
//! events as text in one place (the kernel's `events` module).

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::message::{Hash, MigrationReport, ModuleRefusal, TaskSummary};

/// A node's answer to [`crate::Message::Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Tern's version on the node (`CARGO_PKG_VERSION` of its kernel).
    pub version: String,
    /// Node identity (its MAC's 48 bits).
    pub node_id: u64,
    /// ISA (`x86_64`, `aarch64`).
    pub isa: String,
    /// Board (`pc`, `virt`, `rpi4`).
    pub board: String,
    /// Machine model as the board reads it.
    pub model: String,
    /// Cores the kernel runs tasks on (Tern's run loop uses one).
    pub cores: u32,
    /// Installed memory in bytes.
    pub memory_bytes: u64,
    /// Bytes of the kernel heap (where tasks and replicas live).
    pub heap_bytes: u64,
    /// Bytes of the heap still free.
    pub heap_free_bytes: u64,
    /// Milliseconds since boot.
    pub uptime_ms: u64,
    /// The node's IPv4 address with its prefix (`10.0.2.2/24`), if it has one.
    pub address: Option<String>,
    /// Task kinds this node can run (`npb-ep`, ...).
    pub task_kinds: Vec<String>,
    /// Its tasks and the replicas it holds, as [`crate::Message::List`] answers.
    pub tasks: Vec<TaskSummary>,
    /// Sequence number the node's next event will carry.
    pub next_event: u64,
    /// TCP sockets the node's control service holds: its listening sockets,
    /// the connections of its migrations, sync sessions and notices, and
    /// sockets still closing. Back at its idle value (the listeners) once
    /// no transfer runs and closed connections are reaped, so a leak shows.
    pub control_sockets: u32,
}

/// A task as events name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRef {
    /// Global identity, kept by migrations.
    pub task_id: u64,
    /// Number on this node (`ps`, the shell commands).
    pub local_id: u32,
    /// What the task is, as its kind names it (`ep S`).
    pub name: String,
    /// The tag it was started with, if any.
    pub tag: Option<String>,
}

/// One sync as its sender (the task's owner) measured it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReport {
    /// Its number in its session (1 for the first).
    pub number: u32,
    /// Progress of the synced checkpoint.
    pub progress: u64,
    /// Progress at completion.
    pub progress_total: u64,
    /// The checkpoint's epoch.
    pub epoch: u64,
    /// Chunks the standby lacked and got.
    pub chunks_sent: u32,
    /// Chunks of the checkpoint.
    pub chunks: u32,
    /// Bytes written for the sync (offer, chunks, framing, sealing).
    pub wire_bytes: u64,
    /// From capture to the standby's acknowledgement, milliseconds.
    pub ms: u64,
    /// The codec that carried most of the chunk bytes.
    pub codec: String,
    /// Raw over compressed chunk bytes, in thousandths.
    pub ratio_milli: u32,
    /// The interval the policy set for the next sync, milliseconds.
    pub next_ms: u64,
    /// The policy's name.
    pub policy: String,
}

/// Something that happened on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeEvent {
    /// A task started here.
    TaskStarted {
        /// The task.
        task: TaskRef,
        /// Its epoch (1 for a fresh run).
        epoch: u64,
        /// Who asked, when not this node's shell (a peer's address).
        requested_by: Option<String>,
    },
    /// A task reached the point its `--pause-at` named and waits there.
    TaskPaused {
        /// The task.
        task: TaskRef,
        /// Progress done.
        progress: u64,
        /// Progress at completion.
        progress_total: u64,
    },
    /// A task ended.
    TaskFinished {
        /// The task.
        task: TaskRef,
        /// Its epoch on this node.
        epoch: u64,
        /// Whether its self-verification passed.
        verified: bool,
        /// The workload's verdict line (NPB's `VERIFICATION SUCCESSFUL`).
        verdict: String,
    },
    /// A task was dropped here (shell `kill`, a peer's `KillTask`).
    TaskKilled {
        /// The task.
        task: TaskRef,
        /// Who asked, when not this node's shell.
        requested_by: Option<String>,
    },
    /// A task resumed here from a checkpoint (a live migration, or the
    /// serial console's `receive`).
    TaskArrived {
        /// The task.
        task: TaskRef,
        /// The epoch it runs at here.
        epoch: u64,
        /// Progress done.
        progress: u64,
        /// Progress at completion.
        progress_total: u64,
        /// `isa/board` of the node that wrote the checkpoint.
        from: String,
    },
    /// An outgoing live migration began.
    MigrationStarted {
        /// The task.
        task: TaskRef,
        /// The receiver's control address.
        to: String,
        /// Who asked, when not this node's shell.
        requested_by: Option<String>,
    },
    /// A pre-copy round was acknowledged (the task kept running).
    PrecopyRound {
        /// The task.
        task: TaskRef,
        /// The receiver's control address.
        to: String,
        /// Round number (1 for the first).
        round: u32,
        /// Chunks the receiver lacked and got.
        chunks_sent: u32,
        /// Chunks of the checkpoint.
        chunks: u32,
        /// Bytes written for the round.
        bytes: u64,
        /// Bytes of the chunks written since the previous round.
        dirty_bytes: u64,
        /// The predicted transfer of the chunks written since this round,
        /// milliseconds, when the link monitor had a rate.
        predicted_ms: Option<u64>,
    },
    /// The task paused for the stop-and-copy.
    StopAndCopy {
        /// The task.
        task: TaskRef,
        /// The receiver's control address.
        to: String,
        /// Progress done at the pause.
        progress: u64,
        /// Progress at completion.
        progress_total: u64,
    },
    /// The link broke after the commit went out: the task stays paused here
    /// and the offer is repeated until the receiver answers.
    MigrationInDoubt {
        /// The task.
        task: TaskRef,
        /// The receiver's control address.
        to: String,
        /// What broke.
        reason: String,
        /// Milliseconds until the next attempt.
        retry_ms: u64,
    },
    /// The receiver acknowledged: it owns the task now.
    Migrated {
        /// The task.
        task: TaskRef,
        /// The receiver's control address.
        to: String,
        /// What the migration cost.
        report: MigrationReport,
    },
    /// The migration failed before the receiver could own the task: it
    /// stays here.
    MigrationFailed {
        /// The task.
        task: TaskRef,
        /// The receiver's control address.
        to: String,
        /// Why.
        reason: String,
    },
    /// In doubt, the receiver turned out to run the task at a newer epoch:
    /// the copy here was dropped.
    MigrationSuperseded {
        /// The task.
        task: TaskRef,
        /// The receiver's control address.
        to: String,
        /// The epoch the receiver knows.
        epoch: u64,
    },
    /// A sync session reached its standby.
    SyncConnected {
        /// The task.
        task: TaskRef,
        /// The standby's control address.
        to: String,
        /// The standby's ISA.
        peer_isa: String,
        /// The standby's board.
        peer_board: String,
    },
    /// A sync session lost its link; it reconnects.
    SyncLinkLost {
        /// The task.
        task: TaskRef,
        /// The standby's control address.
        to: String,
        /// What broke.
        reason: String,
    },
    /// The standby acknowledged a sync.
    Synced {
        /// The task.
        task: TaskRef,
        /// The standby's control address.
        to: String,
        /// What it cost.
        report: SyncReport,
    },
    /// The standby refused a sync; the session tries again later.
    SyncRefused {
        /// The task.
        task: TaskRef,
        /// The standby's control address.
        to: String,
        /// Why.
        reason: String,
    },
    /// A sync session ended.
    SyncEnded {
        /// The task.
        task: TaskRef,
        /// The standby's control address.
        to: String,
        /// Why.
        reason: String,
        /// Syncs it made.
        syncs: u32,
    },
    /// This node was a standby whose owner fell silent past the lease: the
    /// task resumed here from its replica.
    FailedOver {
        /// The task.
        task: TaskRef,
        /// The silent owner's address.
        owner: String,
        /// Milliseconds without word from it.
        silent_ms: u64,
        /// The epoch the task runs at here.
        epoch: u64,
        /// Progress of the replica it resumed from.
        progress: u64,
        /// Progress at completion.
        progress_total: u64,
    },
    /// A lease expired but the replica could not resume.
    FailoverFailed {
        /// The task.
        task_id: u64,
        /// Why.
        reason: String,
    },
    /// Failback: a peer runs the task at a newer epoch, so this node stopped
    /// its copy and keeps its state as the replica.
    SteppedDown {
        /// The task.
        task: TaskRef,
        /// The peer that runs it.
        winner: String,
        /// The epoch it runs at there.
        winner_epoch: u64,
        /// The epoch it ran at here.
        epoch: u64,
        /// Progress here when it stopped.
        progress: u64,
        /// Progress at completion.
        progress_total: u64,
    },
    /// An offered checkpoint passed the transfer's checks but could not
    /// become a task here.
    CheckpointRefused {
        /// The task.
        task_id: u64,
        /// Why.
        reason: String,
    },
    /// A peer's connection was closed for a failure (handshake, garbage,
    /// replay): only that peer is affected.
    PeerDropped {
        /// The peer's address.
        peer: String,
        /// Why.
        reason: String,
    },
    /// The node's IPv4 address changed.
    Addressed {
        /// The address and prefix (`10.0.2.100/24`), or `None` when it was lost.
        address: Option<String>,
        /// Where it came from, in words (`dhcp from 10.0.2.1`, `link-local`).
        source: String,
    },
    /// The node set its wall clock from a time server.
    ClockSet {
        /// The Unix time it set, in milliseconds.
        unix_ms: u64,
        /// The server (`10.0.2.1`).
        server: String,
        /// The query's round trip, in milliseconds.
        rtt_ms: u64,
    },
    /// A task logged a line (a Wasm task's `tern.log`).
    TaskLog {
        /// The task.
        task: TaskRef,
        /// The line.
        line: String,
    },
    /// A task module passed the checks and is held here.
    ModuleAdded {
        /// Its identity.
        module: Hash,
        /// Its length in bytes.
        len: u64,
        /// The peer that sent it.
        from: String,
    },
    /// A task module was refused.
    ModuleRefused {
        /// Why, typed.
        reason: ModuleRefusal,
        /// What exactly.
        detail: String,
        /// The peer that sent it.
        from: String,
    },
    /// The owner of a task said it ended ([`crate::Message::TaskEnded`]):
    /// this node dropped its replica of the task (and its lease).
    ReplicaDropped {
        /// The task.
        task_id: u64,
        /// The epoch of the dropped replica.
        epoch: u64,
        /// The owner's address.
        owner: String,
    },
    /// Where one acked round of a migration spent its time, as its sender
    /// saw it (pre-copy rounds and the stop-and-copy); for finding what
    /// bounds a round, not shown on the console.
    RoundTimeline {
        /// The task.
        task: TaskRef,
        /// Round number; the stop-and-copy is the last.
        round: u32,
        /// Whether this round was the stop-and-copy.
        stop_and_copy: bool,
        /// Times from the start of the round's capture, microseconds.
        timeline: RoundTimeline,
    },
}

/// The moments of one migration round on its sender's clock, microseconds
/// after its capture began, and what else ran on the sender meanwhile.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundTimeline {
    /// The offer was queued (capture and hashing done).
    pub offered_us: u64,
    /// The receiver's answer to the offer (the chunks it needs) arrived.
    pub need_us: u64,
    /// The last chunk and the commit were queued on the connection.
    pub queued_us: u64,
    /// The receiver's TCP had acknowledged all of it (as the sender saw at
    /// its next turn).
    pub drained_us: u64,
    /// The receiver's ack arrived.
    pub acked_us: u64,
    /// Turns of the sender's control service during the round.
    pub turns: u32,
    /// Time the sender's task runner ran tasks during the round.
    pub tasks_us: u64,
}

/// One event as a node keeps and streams it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Position in the node's event log, from 1 and without gaps.
    pub seq: u64,
    /// Milliseconds since the node booted.
    pub at_ms: u64,
    /// What happened.
    pub event: NodeEvent,
}
