//! The control service's errors: why a migration, a sync or a peer's
//! request could not start or did not complete.

use alloc::string::String;

use smoltcp::socket::tcp;
use tern_hal::EntropyError;
use tern_protocol::{ChannelError, ModuleError, TransferError};

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
    /// The destination is not `address[:port]` nor a node id.
    #[error("'{0}' is not <IPv4 address>[:<port>] nor a node id (12 hex digits)")]
    BadAddress(String),
    /// A node id no beacon has announced lately.
    #[error("node {0} has not been heard on the LAN (see 'peers')")]
    UnknownNode(String),
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
    /// Sending the task's module to the peer failed.
    #[error("sending the task's module: {0}")]
    Module(ModuleError),
}
