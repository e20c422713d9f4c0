//! Serial console for Tern nodes, defmt-aware.
//!
//! One link carries the kernel's shell text and its defmt log frames (framing
//! in `docs/console-framing.md`). The console shows the text as is, decodes
//! the frames with the kernel's ELF into timestamped log lines, forwards
//! keystrokes to the shell, optionally appends everything to a log file, and
//! survives the device going away. Ctrl-] exits.
//!
//! The pieces are usable on their own: [`deframe::Deframer`] splits the byte
//! stream, [`StreamDecoder`] also decodes frames, [`Screen`] renders events.

pub mod decode;
pub mod deframe;
mod port;
mod screen;
mod session;

use std::io;
use std::path::PathBuf;

use thiserror::Error;

pub use decode::{Event, StreamDecoder, TableError};
pub use port::PortSpec;
pub use screen::Screen;
pub use session::{run, EXIT_KEY};

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
    /// The log file could not be opened or written.
    #[error("log file {path}: {source}")]
    LogFile {
        /// The log file's path.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
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
