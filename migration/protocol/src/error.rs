//! Typed errors of each layer.

use crate::message::NackReason;

/// Framing failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A frame announced (or would need) more than the maximum length.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    Oversized {
        /// Announced length.
        len: u64,
        /// The maximum.
        max: u32,
    },
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame ({have} bytes pending)")]
    Truncated {
        /// Bytes received of the unfinished frame, its header included.
        have: u64,
    },
    /// Allocation failed.
    #[error("out of memory")]
    OutOfMemory,
}

/// Failures of the handshake and of the sealed channel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// No key configured and insecure mode not explicitly requested.
    #[error("no pre-shared key configured (refusing to migrate; insecure mode must be requested explicitly)")]
    NoKey,
    /// Framing failed.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A frame body was not a valid message.
    #[error("malformed message: {0}")]
    Malformed(postcard::Error),
    /// The peer speaks another protocol version.
    #[error("peer speaks protocol version {peer}, this node {ours}")]
    Version {
        /// Peer's version.
        peer: u16,
        /// Our version.
        ours: u16,
    },
    /// One side is keyed and the other insecure.
    #[error("security mode mismatch: peer insecure = {peer_insecure}")]
    ModeMismatch {
        /// Whether the peer runs without a key.
        peer_insecure: bool,
    },
    /// The peer's proof of the key did not verify (wrong key or tampered transcript).
    #[error("peer failed authentication (wrong key or tampered handshake)")]
    AuthFailed,
    /// A handshake message arrived out of order.
    #[error("unexpected handshake message")]
    UnexpectedHandshake,
    /// A sealed frame carried an old counter.
    #[error("replayed frame: counter {got}, expected {expected}")]
    Replayed {
        /// Counter expected next.
        expected: u64,
        /// Counter received.
        got: u64,
    },
    /// A sealed frame skipped ahead (frames lost or reordered).
    #[error("out-of-order frame: counter {got}, expected {expected}")]
    OutOfOrder {
        /// Counter expected next.
        expected: u64,
        /// Counter received.
        got: u64,
    },
    /// A sealed frame is shorter than its counter and tag.
    #[error("sealed frame of {len} bytes is too short")]
    ShortFrame {
        /// Its length.
        len: usize,
    },
    /// AEAD verification failed: forged or corrupted frame.
    #[error("frame failed authentication (forged or corrupted)")]
    Forged,
    /// The counter space is exhausted; open a new session.
    #[error("frame counter exhausted")]
    CounterExhausted,
    /// A message was sent before the handshake completed.
    #[error("channel not established")]
    NotEstablished,
    /// An earlier error closed the channel; nothing more is accepted.
    #[error("channel closed after an earlier error")]
    Closed,
    /// Allocation failed.
    #[error("out of memory")]
    OutOfMemory,
}

/// Failures of a transfer (the offer → need → chunk → commit → ack phases).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// The peer refused.
    #[error("peer refused: {0:?}")]
    Refused(NackReason),
    /// This side refused the peer's message; the reason was sent back as a nack.
    #[error("refused the peer: {0:?}")]
    Rejected(NackReason),
    /// A message arrived that the current phase does not allow.
    #[error("unexpected message in phase {phase}")]
    Unexpected {
        /// The phase's name.
        phase: &'static str,
    },
    /// A need named a chunk outside the offer, or not in increasing order.
    #[error("need names chunk {index}, invalid for this offer")]
    BadNeed {
        /// The bad index.
        index: u32,
    },
    /// The checkpoint to offer failed validation by the checkpoint reader.
    #[error("checkpoint to offer is invalid")]
    InvalidCheckpoint,
    /// The checkpoint is too large to be offered.
    #[error("checkpoint too large to offer")]
    TooLarge,
    /// The transfer already finished.
    #[error("transfer already finished")]
    Finished,
    /// Allocation failed.
    #[error("out of memory")]
    OutOfMemory,
}
