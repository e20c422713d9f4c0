//! QEMU nodes read through their serial console.
//!
//! A [`Node`] is one QEMU process booting a Tern kernel exactly as `flash`
//! would (the board table and command lines come from `tern-flash`), with
//! the board's serial port on pipes or on a TCP socket. Tests wait for text
//! with [`Node::expect`], type with [`Node::send_line`] and read QEMU's exit
//! status with [`Node::wait_exit`]; QEMU is killed when the node is dropped.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use tern_flash::build::Workspace;
use tern_flash::image::KernelElf;
pub use tern_flash::qemu::Launch;
use tern_flash::qemu::{self, Media, Qemu, Serial};
use tern_flash::{Board, FlashError, Variant};
use thiserror::Error;

/// Time from QEMU's start to the shell prompt: TCG on a loaded 2-core
/// machine running several tests at once is slow.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// Time for a shell command's answer.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// What went wrong in an interaction with a node's QEMU or console.
#[derive(Debug, Error)]
pub enum HarnessError {
    /// Building, converting or starting failed.
    #[error(transparent)]
    Flash(#[from] FlashError),
    /// The expected text did not appear in time.
    #[error("timed out after {timeout:?} waiting for {pattern:?}; serial output since the last match:\n{unmatched}\nQEMU stderr:\n{stderr}")]
    Timeout {
        /// What was awaited.
        pattern: String,
        /// How long.
        timeout: Duration,
        /// The output not consumed by earlier matches.
        unmatched: String,
        /// QEMU's standard error.
        stderr: String,
    },
    /// The serial stream ended (QEMU exited) before the text appeared.
    #[error("serial output ended while waiting for {pattern:?}; unmatched output:\n{unmatched}\nQEMU stderr:\n{stderr}")]
    Ended {
        /// What was awaited.
        pattern: String,
        /// The output not consumed by earlier matches.
        unmatched: String,
        /// QEMU's standard error.
        stderr: String,
    },
    /// QEMU kept running past the deadline.
    #[error("QEMU still running after {0:?}")]
    NoExit(Duration),
    /// QEMU was killed by a signal.
    #[error("QEMU ended without an exit status")]
    Signalled,
    /// The node has no serial connection yet (see [`Node::connect`]).
    #[error("the node's serial port is not connected")]
    NotConnected,
    /// Talking to the node failed.
    #[error("serial i/o: {0}")]
    Io(#[from] io::Error),
}

/// Builds (once per process) the `variant` kernel of `board` in release
/// mode, exactly as `flash` does, and returns its ELF's path.
pub fn kernel(board: Board, variant: Variant) -> Result<PathBuf, FlashError> {
    static BUILT: OnceLock<Mutex<HashMap<(Board, Variant), PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    // Holding the lock through the build keeps tests of one process from
    // starting the same cargo build side by side.
    let mut built = built
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(path) = built.get(&(board, variant)) {
        return Ok(path.clone());
    }
    let path = Workspace::locate()?.build_kernel(board, variant, true)?;
    KernelElf::read(&path)?.check(board, variant)?;
    built.insert((board, variant), path.clone());
    Ok(path)
}

/// What a node boots.
#[derive(Clone, Debug)]
pub enum Boot {
    /// A kernel ELF, converted to what the board's loader takes (rpi4: kernel8.img).
    Elf(PathBuf),
    /// A file QEMU loads as is with `-kernel` (e.g. a kernel8.img from an SD image).
    Image(PathBuf),
    /// A disk image booted by the firmware (`-drive`).
    Drive(PathBuf),
}

/// Where the node's serial port goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SerialMode {
    /// QEMU's stdin and stdout pipes.
    Pipes,
    /// A TCP socket the harness connects to before the guest starts.
    Tcp,
    /// A TCP socket left for another client (e.g. `flash --serial`); the
    /// guest runs from the start, and [`Node::connect`] attaches later.
    TcpOpen,
    /// No serial port (a PC without COM1): the node has no console to read.
    None,
    /// pc: no COM1; the console is a PCI serial card on the pipes.
    PciCard,
}

/// The serial output received so far, shared with the reader thread.
#[derive(Default)]
struct Output {
    state: Mutex<OutputState>,
    changed: Condvar,
}

#[derive(Default)]
struct OutputState {
    bytes: Vec<u8>,
    ended: bool,
}

impl Output {
    fn lock(&self) -> MutexGuard<'_, OutputState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Copies everything `source` yields into the buffer until it ends.
    fn pump(self: Arc<Self>, mut source: impl Read + Send + 'static) {
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match source.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        self.lock().bytes.extend_from_slice(&buf[..n]);
                        self.changed.notify_all();
                    }
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            self.lock().ended = true;
            self.changed.notify_all();
        });
    }
}

/// One QEMU machine running a Tern kernel.
pub struct Node {
    board: Board,
    qemu: Qemu,
    output: Arc<Output>,
    /// Start of the output not yet consumed by [`Node::expect`] or reads.
    cursor: usize,
    input: Option<Box<dyn Write + Send>>,
    /// Holds the converted kernel image while QEMU runs.
    _staging: tempfile::TempDir,
}

impl Node {
    /// Builds the board's Tern kernel and boots it with the serial port on pipes.
    pub fn boot(board: Board) -> Result<Self, HarnessError> {
        let elf = kernel(board, Variant::Tern)?;
        Self::start(board, Boot::Elf(elf), SerialMode::Pipes)
    }

    /// Starts QEMU for `board` booting `boot`, serial on `serial`.
    pub fn start(board: Board, boot: Boot, serial: SerialMode) -> Result<Self, HarnessError> {
        Self::start_with(board, boot, serial, &Launch::default())
    }

    /// [`Node::start`] with QEMU in a network namespace and with extra
    /// arguments (network devices), as `launch` says.
    pub fn start_with(
        board: Board,
        boot: Boot,
        serial: SerialMode,
        launch: &Launch,
    ) -> Result<Self, HarnessError> {
        let staging = tempfile::tempdir()?;
        let media = match boot {
            Boot::Elf(path) => qemu::kernel_media(board, &KernelElf::read(&path)?, staging.path())?,
            Boot::Image(path) => Media::Kernel(path),
            Boot::Drive(path) => Media::Drive(path),
        };
        let mode = match serial {
            SerialMode::Pipes => Serial::Stdio,
            SerialMode::Tcp => Serial::Tcp { wait: true },
            SerialMode::TcpOpen => Serial::Tcp { wait: false },
            SerialMode::None => Serial::None,
            SerialMode::PciCard => Serial::PciCard,
        };
        let qemu = Qemu::spawn_with(board, &media, mode, launch)?;
        let mut node = Self {
            board,
            qemu,
            output: Arc::default(),
            cursor: 0,
            input: None,
            _staging: staging,
        };
        match serial {
            SerialMode::Pipes | SerialMode::PciCard => {
                let child = node.qemu.child_mut();
                let stdout = child.stdout.take().ok_or(HarnessError::NotConnected)?;
                let stdin = child.stdin.take().ok_or(HarnessError::NotConnected)?;
                node.output.clone().pump(stdout);
                node.input = Some(Box::new(stdin));
            }
            SerialMode::Tcp => node.connect()?,
            SerialMode::TcpOpen | SerialMode::None => {}
        }
        Ok(node)
    }

    /// The board this node emulates.
    pub fn board(&self) -> Board {
        self.board
    }

    /// The serial socket's TCP port (TCP modes).
    pub fn tcp_port(&self) -> Option<u16> {
        self.qemu.tcp_port()
    }

    /// Connects the harness to the node's serial socket (TCP modes); output
    /// sent while nobody was connected is lost.
    pub fn connect(&mut self) -> Result<(), HarnessError> {
        let port = self.tcp_port().ok_or(HarnessError::NotConnected)?;
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        self.output = Arc::default();
        self.cursor = 0;
        self.output.clone().pump(stream.try_clone()?);
        self.input = Some(Box::new(stream));
        Ok(())
    }

    /// Waits until `pattern` appears in the output after the last match and
    /// returns the output up to and including it.
    pub fn expect(&mut self, pattern: &str, timeout: Duration) -> Result<String, HarnessError> {
        self.expect_with(pattern, timeout, find_raw)
    }

    /// [`Node::expect`] on the console's text alone: defmt frames (`0x00 …
    /// 0x00`, which a node may send in the middle of a text line, see
    /// `docs/console-framing.md`) are skipped when matching and left out of
    /// the returned text. For shell interaction; raw links use `expect`.
    pub fn expect_text(
        &mut self,
        pattern: &str,
        timeout: Duration,
    ) -> Result<String, HarnessError> {
        self.expect_with(pattern, timeout, find_in_text)
    }

    /// Waits until `matcher` finds `pattern` in the unread output; the
    /// matcher returns where the match ends in the output and the text to
    /// hand back.
    fn expect_with(
        &mut self,
        pattern: &str,
        timeout: Duration,
        matcher: Matcher,
    ) -> Result<String, HarnessError> {
        let deadline = Instant::now() + timeout;
        let mut state = self.output.lock();
        loop {
            let unread = &state.bytes[self.cursor.min(state.bytes.len())..];
            if let Some((end, text)) = matcher(unread, pattern.as_bytes()) {
                self.cursor += end;
                return Ok(text);
            }
            let unmatched = || String::from_utf8_lossy(unread).into_owned();
            if state.ended {
                return Err(HarnessError::Ended {
                    pattern: pattern.into(),
                    unmatched: unmatched(),
                    stderr: self.qemu.stderr_text(),
                });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(HarnessError::Timeout {
                    pattern: pattern.into(),
                    timeout,
                    unmatched: unmatched(),
                    stderr: self.qemu.stderr_text(),
                });
            }
            state = self
                .output
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// Waits for the shell prompt, then runs `command` and returns its
    /// answer: the text up to the next prompt, without the echoed command.
    pub fn command(&mut self, command: &str) -> Result<String, HarnessError> {
        self.send_line(command)?;
        self.expect_text(&format!("{command}\r\n"), REPLY_TIMEOUT)?;
        let answer = self.expect_text(tern_prompt(), REPLY_TIMEOUT)?;
        Ok(answer[..answer.len() - tern_prompt().len()].to_owned())
    }

    /// Types `line` and Enter on the node's serial port.
    pub fn send_line(&mut self, line: &str) -> Result<(), HarnessError> {
        let input = self.input.as_mut().ok_or(HarnessError::NotConnected)?;
        input.write_all(line.as_bytes())?;
        input.write_all(b"\r")?;
        input.flush()?;
        Ok(())
    }

    /// Waits up to `timeout` for QEMU to exit and returns its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<i32, HarnessError> {
        match self.qemu.wait_timeout(timeout)? {
            Some(status) => status.code().ok_or(HarnessError::Signalled),
            None => Err(HarnessError::NoExit(timeout)),
        }
    }

    /// The serial link as a byte stream (for the chainload protocol): reads
    /// consume the output after the last match and time out after 100 ms.
    pub fn link(&mut self) -> NodeLink<'_> {
        NodeLink { node: self }
    }

    /// Consumes the output received so far: later [`Node::expect`] calls
    /// see only what comes after.
    pub fn skip_unread(&mut self) {
        self.cursor = self.output.lock().bytes.len();
    }

    /// The serial output not consumed by [`Node::expect`] yet (left unconsumed).
    pub fn unread(&self) -> String {
        let state = self.output.lock();
        String::from_utf8_lossy(&state.bytes[self.cursor.min(state.bytes.len())..]).into_owned()
    }

    /// The serial output from byte `offset` of everything received since
    /// the node started (consumed by [`Node::expect`] or not), for
    /// watchers that follow it without disturbing `expect`.
    pub fn output_since(&self, offset: usize) -> Vec<u8> {
        let state = self.output.lock();
        state.bytes[offset.min(state.bytes.len())..].to_vec()
    }

    /// Everything QEMU wrote to its standard error.
    pub fn qemu_stderr(&self) -> String {
        self.qemu.stderr_text()
    }
}

/// The shell's prompt.
pub fn tern_prompt() -> &'static str {
    "tern> "
}

/// A [`Node`]'s serial port as `Read + Write` (see [`Node::link`]).
pub struct NodeLink<'a> {
    node: &'a mut Node,
}

impl Read for NodeLink<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let node = &mut *self.node;
        let deadline = Instant::now() + Duration::from_millis(100);
        let mut state = node.output.lock();
        loop {
            let unread = &state.bytes[node.cursor.min(state.bytes.len())..];
            if !unread.is_empty() {
                let n = unread.len().min(buf.len());
                buf[..n].copy_from_slice(&unread[..n]);
                node.cursor += n;
                return Ok(n);
            }
            if state.ended {
                return Ok(0);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(io::ErrorKind::TimedOut.into());
            }
            state = node
                .output
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }
}

impl Write for NodeLink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.node.input.as_mut() {
            Some(input) => input.write(buf),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.node.input.as_mut() {
            Some(input) => input.flush(),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len().max(1))
        .position(|window| window == needle)
}

/// [`find`] for [`Node::expect`]: the end of the first match, and the
/// output up to it.
fn find_raw(bytes: &[u8], pattern: &[u8]) -> Option<(usize, String)> {
    let end = find(bytes, pattern)? + pattern.len();
    Some((end, String::from_utf8_lossy(&bytes[..end]).into_owned()))
}

/// Finds a pattern in unread output: where the match ends in the output,
/// and the text to hand back.
type Matcher = fn(&[u8], &[u8]) -> Option<(usize, String)>;

/// The byte that opens and closes a defmt frame on a node's console.
const FRAME_DELIMITER: u8 = 0x00;

/// [`Node::expect_text`]'s matcher: finds `pattern` in the text of `bytes`
/// and returns the end of the match in `bytes` and the text up to it.
/// Frames are skipped by `docs/console-framing.md`'s reading rule (a run of
/// zeros opens a frame; the next zero after frame bytes closes it);
/// `bytes` starts outside a frame, as every match ends in text. Not the
/// `console` tool's deframer: its resynchronisation takes a frame whose bytes
/// look like text for text, which a reader attaching mid-stream needs and a
/// harness reading from the first byte must not do.
fn find_in_text(bytes: &[u8], pattern: &[u8]) -> Option<(usize, String)> {
    let mut text = Vec::new();
    // `Some(n)`: inside a frame that has `n` bytes so far.
    let mut frame: Option<usize> = None;
    for (at, &byte) in bytes.iter().enumerate() {
        frame = match (frame, byte) {
            (None, FRAME_DELIMITER) | (Some(0), FRAME_DELIMITER) => Some(0),
            (Some(_), FRAME_DELIMITER) => None,
            (Some(n), _) => Some(n + 1),
            (None, _) => {
                text.push(byte);
                if text.ends_with(pattern) {
                    return Some((at + 1, String::from_utf8_lossy(&text).into_owned()));
                }
                None
            }
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_locates_patterns() {
        assert_eq!(find(b"abc tern> x", b"tern> "), Some(4));
        assert_eq!(find(b"abc", b"abcd"), None);
    }

    #[test]
    fn text_matches_skip_frames_inside_a_line() {
        // The first frame after boot opens with two zeros; frames may follow
        // one another directly.
        let output = b"net 10.0.2.2/24\0\0\x04v\x01b\0\0\x0c\0\r\naddress\r\ntern> rest";
        let (end, text) = find_in_text(output, b"net 10.0.2.2/24\r\n").unwrap();
        assert_eq!(text, "net 10.0.2.2/24\r\n");
        let (prompt_end, answer) = find_in_text(&output[end..], b"tern> ").unwrap();
        assert_eq!(answer, "address\r\ntern> ");
        assert_eq!(&output[end + prompt_end..], b"rest");
        // Inside a frame, the pattern is not text.
        assert_eq!(find_in_text(b"\0tern> \0", b"tern> "), None);
    }
}
