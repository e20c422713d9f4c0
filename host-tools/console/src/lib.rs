//! Serial console for Tern nodes, defmt-aware.
//!
//! One link carries the kernel's shell text and its defmt log frames (framing
//! in `docs/console-framing.md`). The console shows the text as is, decodes
//! the frames with the kernel's ELF into timestamped log lines, forwards
//! keystrokes to the shell, optionally appends everything to a log file, and
//! survives the device going away. Ctrl-] exits.
//!
//! Checkpoints travel on the text channel as `TERN-CKPT` lines: the console
//! saves those a node prints (`checkpoint <id>`) as `<name>.tckpt` files and
//! can send a file to a node's `receive` command (`--send`).
//!
//! The pieces are usable on their own: [`deframe::Deframer`] splits the byte
//! stream, [`StreamDecoder`] also decodes frames, [`Screen`] renders events,
//! [`transfer::CheckpointCatcher`] extracts checkpoints from the text and
//! [`transfer::send_checkpoint`] sends one.

pub mod decode;
pub mod deframe;
mod port;
mod screen;
mod session;
pub mod transfer;

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

pub use decode::{Event, StreamDecoder, TableError};
pub use port::PortSpec;
pub use screen::Screen;
pub use session::{run, run_with, RawTerminal, EXIT_KEY};
pub use transfer::{send_checkpoint, CheckpointCatcher};

/// Baud rate used when none is given: the Tern kernels' UART speed.
pub const DEFAULT_BAUD: u32 = 115_200;

/// What [`run`] connects to and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleOptions {
    /// The device end.
    pub port: PortSpec,
    /// The kernel ELF whose defmt table decodes the log frames; without it
    /// frames are shown as `[defmt frame, N bytes]`.
    pub elf: Option<PathBuf>,
    /// A file to which everything shown is appended, with host timestamps.
    pub log: Option<PathBuf>,
    /// Serial speed in bits per second (ignored for TCP).
    pub baud: u32,
}

/// What [`run_with`] does with checkpoints (see [`transfer`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferOptions {
    /// Where checkpoints caught in the node's output are saved.
    pub save_dir: PathBuf,
    /// A checkpoint file to send to the node's `receive` on connecting.
    pub send: Option<PathBuf>,
    /// How long each reply of the node is awaited while sending.
    pub reply_timeout: Duration,
}

impl Default for TransferOptions {
    /// Save to the current directory, send nothing.
    fn default() -> Self {
        Self {
            save_dir: PathBuf::from("."),
            send: None,
            reply_timeout: DEFAULT_REPLY_TIMEOUT,
        }
    }
}

/// Default for [`TransferOptions::reply_timeout`]: generous, because a node
/// restores the task (and checks it) before it answers the last line.
pub const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the console could not start or had to stop.
#[derive(Debug, Error)]
pub enum ConsoleError {
    /// The port argument is neither a path nor `tcp:HOST:PORT`.
    #[error("invalid port {0:?}: expected a device path or tcp:HOST:PORT")]
    InvalidPort(String),
    /// The serial device does not exist, or nothing listens at the address.
    #[error("no such port: {port}")]
    NoSuchPort {
        /// The port as given.
        port: String,
    },
    /// Another program holds the serial device.
    #[error("port busy: {port} is open in another program")]
    PortBusy {
        /// The port as given.
        port: String,
    },
    /// Opening the port failed for another reason.
    #[error("cannot open {port}: {source}")]
    Open {
        /// The port as given.
        port: String,
        /// What the system said.
        source: io::Error,
    },
    /// The ELF file could not be read.
    #[error("cannot read {path}: {source}")]
    ReadElf {
        /// The ELF's path.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The ELF has no usable defmt table.
    #[error("{path}: {source}")]
    Table {
        /// The ELF's path.
        path: PathBuf,
        /// What is wrong with it.
        source: TableError,
    },
    /// The checkpoint file to send could not be read.
    #[error("cannot read checkpoint {path}: {source}")]
    ReadCheckpoint {
        /// The file's path.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The directory for caught checkpoints is not a directory.
    #[error("save directory {0} is not a directory")]
    SaveDir(PathBuf),
    /// The log file could not be opened or written.
    #[error("log file {path}: {source}")]
    LogFile {
        /// The log file's path.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The checkpoint given with `--send` did not reach the node (reported
    /// when the session ends; the session itself went on).
    #[error("sending the checkpoint failed: {0}")]
    Send(#[source] transfer::SendError),
    /// The terminal could not be switched to raw mode or back.
    #[error("terminal: {0}")]
    Terminal(#[source] io::Error),
    /// The handlers that end the session cleanly on SIGTERM, SIGHUP and
    /// SIGINT could not be installed.
    #[error("signal handlers: {0}")]
    Signals(#[source] io::Error),
    /// Writing to the terminal, the log file or the device failed.
    #[error("console i/o: {0}")]
    Io(#[source] io::Error),
}
