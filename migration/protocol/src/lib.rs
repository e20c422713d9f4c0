//! The Tern migration protocol (see `docs/protocol.md`), host-tested and
//! `no_std` + `alloc` so the kernel and host tools share it.
//!
//! Layers, each sans-IO (byte buffers in and out, so smoltcp sockets and a
//! host `TcpStream` both drive it):
//! - [`frame`]: `u32` little-endian length framing with a maximum;
//! - [`message`]: the messages (serde + postcard);
//! - [`channel`]: mutual authentication from a pre-shared key (HMAC over the
//!   transcript), per-direction keys from HKDF-SHA-256, every frame sealed with
//!   ChaCha20-Poly1305 under a counter nonce;
//! - [`transfer`]: offer → need → chunks → commit → ack on each side, with
//!   deduplication against the receiver's replica and ownership by epochs;
//! - [`report`]: what a node says about itself: its status and its typed
//!   events;
//! - [`beacon`]: the discovery beacon nodes broadcast on the LAN;
//! - [`module`]: task modules cut into parts, reassembled, and pushed to a
//!   peer that lacks them.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod beacon;
pub mod channel;
mod error;
pub mod frame;
pub mod message;
pub mod module;
pub mod report;
pub mod transfer;

pub use beacon::{format_node_id, parse_node_id, Beacon, BeaconError, BeaconSecurity, BEACON_PORT};
pub use channel::{Config, Connection, Event, Psk, Role, Security};
pub use error::{ChannelError, FrameError, TransferError};
pub use message::{
    ChunkInfo, Codec, Handshake, Hash, Hello, Message, MigrationReport, ModuleRefusal, NackReason,
    Offer, ReceiverTimes, Role as TaskRole, RoundReport, StageTimes, StopReason, TaskStatus,
    TaskSummary, Transfer, MAX_CONSOLE_INPUT, MAX_TAG_LEN, PROTOCOL_VERSION,
};
pub use module::{ModuleError, ModulePush, ModuleUpload, PushPhase};
pub use report::{EventRecord, NodeEvent, NodeStatus, RoundTimeline, SyncReport, TaskRef};
pub use transfer::{Incoming, Known, Outgoing, Policy, ReceivePhase, Replica, SendPhase};
