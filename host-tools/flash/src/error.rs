//! Everything that can go wrong while building or deploying a kernel.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use thiserror::Error;

use crate::jtag::ProbeError;
use crate::Board;

/// Why `flash` could not build, check or deploy a kernel.
#[derive(Debug, Error)]
pub enum FlashError {
    /// The board name is not one Tern supports.
    #[error("unknown board {0:?}: expected rpi4, virt or pc")]
    UnknownBoard(String),
    /// The board cannot be deployed that way.
    #[error("{board} has no {what}")]
    Unsupported {
        /// The board asked for.
        board: Board,
        /// What it lacks.
        what: &'static str,
    },
    /// `cargo locate-project` found no workspace around the current directory.
    #[error("not inside the Tern workspace: {0}")]
    NotInWorkspace(String),
    /// A program could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// What the system said.
        source: io::Error,
    },
    /// cargo failed to build the kernel (its errors are above).
    #[error("building {bin} of {package} failed ({status})")]
    BuildFailed {
        /// The board's package.
        package: &'static str,
        /// The kernel binary.
        bin: &'static str,
        /// cargo's exit status.
        status: ExitStatus,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The kernel file is not a 64-bit ELF.
    #[error("{path} is not a usable 64-bit ELF: {reason}")]
    NotElf {
        /// The file.
        path: PathBuf,
        /// What the ELF parser said.
        reason: String,
    },
    /// The ELF has no `.tern_board` section, so it is not a Tern kernel.
    #[error("{path} has no .tern_board section: not a Tern kernel")]
    NoBoardSection {
        /// The file.
        path: PathBuf,
    },
    /// The kernel was built for another board.
    #[error("{path} was built for {found}, not {expected}")]
    WrongBoard {
        /// The file.
        path: PathBuf,
        /// The board (and variant) asked for.
        expected: String,
        /// The board named in the kernel.
        found: String,
    },
    /// The kernel is for another instruction set.
    #[error("{path} is for ELF machine {found}, not {isa} as {board} needs", isa = board.isa())]
    WrongMachine {
        /// The file.
        path: PathBuf,
        /// The board asked for.
        board: Board,
        /// The ELF's `e_machine`.
        found: u16,
    },
    /// The ELF has nothing to load.
    #[error("{path} has no loadable bytes")]
    NoLoadableSegments {
        /// The file.
        path: PathBuf,
    },
    /// The raw image exceeds what the board or the format allows.
    #[error("image is {size} bytes, more than the {limit}-byte limit")]
    ImageTooLarge {
        /// The image's size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A file could not be written (nothing was left half-written).
    #[error("cannot write {path}: {source}")]
    Write {
        /// The destination.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The given path should be a directory (a mounted boot partition).
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    /// A firmware file is missing from the firmware directory.
    #[error("firmware file {file} is missing from {dir} (copy it from the raspberrypi/firmware repository's boot/ folder)")]
    MissingFirmware {
        /// The firmware directory.
        dir: PathBuf,
        /// The missing file.
        file: &'static str,
    },
    /// Creating or reading the SD-card image failed.
    #[error("SD-card image {path}: {source}")]
    SdImage {
        /// The image.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// A tool the deployment needs is not installed.
    #[error("{tool} not found: install the Debian packages {packages} (or run ci/setup.sh)")]
    MissingTool {
        /// The program.
        tool: &'static str,
        /// The packages providing it and its helpers.
        packages: &'static str,
    },
    /// An external tool failed.
    #[error("{tool} failed ({status}); are {packages} installed?\n{stderr}")]
    ToolFailed {
        /// The program.
        tool: &'static str,
        /// Its exit status.
        status: ExitStatus,
        /// What it printed.
        stderr: String,
        /// The packages it relies on.
        packages: &'static str,
    },
    /// The port argument is neither a path nor `tcp:HOST:PORT`.
    #[error("invalid port {0:?}: expected a device path or tcp:HOST:PORT")]
    InvalidPort(String),
    /// `--serial` without a port, and none remembered for the board.
    #[error(
        "no serial port given and none remembered for {board} in {config}: pass --serial PORT once"
    )]
    NoRememberedPort {
        /// The board.
        board: Board,
        /// The configuration file looked in.
        config: PathBuf,
    },
    /// Neither `$XDG_CONFIG_HOME` nor `$HOME` is set.
    #[error("cannot find the configuration directory: set XDG_CONFIG_HOME or HOME")]
    NoConfigDir,
    /// The remembered-ports file could not be read or written.
    #[error("configuration {path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The serial device does not exist, or nothing listens at the address.
    #[error("no such port: {port}")]
    NoSuchPort {
        /// The port as given.
        port: String,
    },
    /// Another program holds the serial device.
    #[error("port busy: {port} is open in another program (a console?)")]
    PortBusy {
        /// The port as given.
        port: String,
    },
    /// Opening the port failed for another reason.
    #[error("cannot open {port}: {source}")]
    OpenPort {
        /// The port as given.
        port: String,
        /// What the system said.
        source: io::Error,
    },
    /// Reading or writing the open link failed.
    #[error("serial link: {0}")]
    Link(#[source] io::Error),
    /// The device closed the link.
    #[error("the device closed the link")]
    LinkClosed,
    /// No chainloader announced itself on the link.
    #[error("no chainloader answered within {waited:?}: is the board running the Tern chainloader (flash --board rpi4 --chainloader ...)?")]
    NoChainloader {
        /// How long `flash` waited.
        waited: Duration,
    },
    /// Something did not happen in time.
    #[error("timed out waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: &'static str,
    },
    /// The chainloader cannot hold the image.
    #[error("image is {size} bytes but the chainloader accepts at most {max}")]
    TooLargeForDevice {
        /// The image's size.
        size: u32,
        /// The device's maximum.
        max: u32,
    },
    /// The chainloader received the image with a different checksum.
    #[error(
        "the chainloader rejected the image: checksum mismatch (a noisy line? try a lower --baud)"
    )]
    ChecksumMismatch,
    /// The chainloader answered with a byte the protocol does not know.
    #[error("unexpected reply {0:#04x} from the chainloader")]
    UnexpectedReply(u8),
    /// QEMU exited before its serial port was ready.
    #[error("QEMU failed to start ({status:?}):\n{stderr}")]
    QemuFailed {
        /// Its exit status, if reaped.
        status: Option<ExitStatus>,
        /// What it printed.
        stderr: String,
    },
    /// The JTAG path (`--probe`) failed.
    #[error(transparent)]
    Probe(#[from] ProbeError),
    /// Boot commands (the key) could not be written into the kernel.
    #[error("cannot provision {path}: {reason}")]
    Provision {
        /// The kernel.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}
