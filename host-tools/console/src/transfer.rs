//! Checkpoints carried on the console's text channel (the `TERN-CKPT` lines
//! of [`tern_migration::serial_transfer`]): catching them in what a node
//! prints, saving them to files, and sending a file to a node's `receive`.

use std::io::{self, Read, Write};
use std::ops::ControlFlow;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tern_migration::serial_transfer::{self, Decoder, MAX_LINE, PREFIX};
pub use tern_migration::serial_transfer::{Received, Reply, TransferError};
use thiserror::Error;

use crate::{Event, StreamDecoder};

/// Largest checkpoint the console accepts from a node (far above what a
/// kernel can hold; it bounds memory if a BEGIN line is damaged).
pub const MAX_CHECKPOINT_BYTES: u64 = 1 << 30;

/// File name extension of saved checkpoints.
pub const CHECKPOINT_EXTENSION: &str = "tckpt";

/// What [`CheckpointCatcher::push`] found in the text, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caught {
    /// Text that is not a transfer line: show it as is.
    Text(Vec<u8>),
    /// A BEGIN line was accepted: a checkpoint of `total` bytes follows.
    Started {
        /// The checkpoint's name.
        name: String,
        /// Its announced size.
        total: u64,
    },
    /// A DATA line was accepted.
    Progress {
        /// Bytes received so far.
        received: u64,
        /// Announced size.
        total: u64,
    },
    /// A checkpoint arrived whole and matched its SHA-256.
    Checkpoint(Received),
    /// A transfer line was rejected; the transfer is abandoned.
    Failed(TransferError),
    /// A receiving node's answer (`READY`, `ACK`, `DONE`, `ERROR`).
    Reply(Reply),
}

/// Where the catcher is within the current text line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineState {
    /// At the start of a line, or holding bytes that may still become
    /// [`PREFIX`] (or that already are a transfer line).
    Holding,
    /// The line is ordinary text: bytes pass through up to its end.
    Passing,
}

/// Extracts `TERN-CKPT` lines from console text and reassembles the
/// checkpoints they carry; every other byte comes out unchanged.
///
/// Only the start of a line is held back (until it is clear that it is not
/// [`PREFIX`]), so prompts and echoed keys are not delayed; a transfer line
/// is held whole and never shown.
#[derive(Debug)]
pub struct CheckpointCatcher {
    decoder: Decoder,
    state: LineState,
    held: Vec<u8>,
    /// The current transfer's announced size.
    total: u64,
    /// Whether the current transfer failed: its remaining lines are dropped
    /// without a report each.
    failed: bool,
}

impl Default for CheckpointCatcher {
    fn default() -> Self {
        Self::new()
    }
}

impl CheckpointCatcher {
    /// A catcher at the start of a line, accepting checkpoints up to
    /// [`MAX_CHECKPOINT_BYTES`].
    pub fn new() -> Self {
        Self {
            decoder: Decoder::new(MAX_CHECKPOINT_BYTES),
            state: LineState::Holding,
            held: Vec::new(),
            total: 0,
            failed: false,
        }
    }

    /// Consumes console text (defmt frames already removed) and returns what
    /// it completes. The result does not depend on how the text was split.
    pub fn push(&mut self, text: &[u8]) -> Vec<Caught> {
        let mut out = Vec::new();
        let mut passing = Vec::new();
        for &byte in text {
            match self.state {
                LineState::Passing => {
                    passing.push(byte);
                    if byte == b'\n' {
                        self.state = LineState::Holding;
                    }
                }
                LineState::Holding => {
                    self.held.push(byte);
                    if byte == b'\n' {
                        let line = std::mem::take(&mut self.held);
                        if line.starts_with(PREFIX.as_bytes()) {
                            flush_text(&mut passing, &mut out);
                            self.line(&line, &mut out);
                        } else {
                            passing.extend(line);
                        }
                    } else if !could_be_transfer_line(&self.held) {
                        passing.append(&mut self.held);
                        self.state = LineState::Passing;
                    }
                }
            }
        }
        flush_text(&mut passing, &mut out);
        out
    }

    /// Called when the line has been quiet for a while: a held line start
    /// that may still become a transfer line but has not (a lone `T` typed at
    /// the start of a line) is released as text. A transfer line in progress
    /// stays held.
    pub fn flush_idle(&mut self) -> Option<Caught> {
        if self.state == LineState::Holding
            && !self.held.is_empty()
            && self.held.len() < PREFIX.len()
        {
            self.state = LineState::Passing;
            return Some(Caught::Text(std::mem::take(&mut self.held)));
        }
        None
    }

    /// Forgets a half-received line and transfer (after a reconnect).
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// Handles one complete transfer line (with its line ending).
    fn line(&mut self, line: &[u8], out: &mut Vec<Caught>) {
        let Ok(line) = std::str::from_utf8(line) else {
            // Not ours after all: transfer lines are ASCII.
            out.push(Caught::Text(line.to_vec()));
            return;
        };
        let line = line.trim_end_matches(['\r', '\n']);
        if let Some(reply) = Reply::parse(line) {
            out.push(Caught::Reply(reply));
            return;
        }
        let was_receiving = self.decoder.in_transfer();
        let mut result = self.decoder.feed_line(line);
        if result == Err(TransferError::Unexpected("BEGIN")) {
            // The previous transfer broke off (its END was lost, or the node
            // was reset): report that, and take up the new one.
            out.push(Caught::Failed(TransferError::Unexpected("BEGIN")));
            result = self.decoder.feed_line(line);
            self.failed = false;
        }
        if self.failed && matches!(result, Err(TransferError::Unexpected(_))) {
            // The rest of a transfer already reported as failed.
            return;
        }
        match result {
            Ok(Some(received)) => out.push(Caught::Checkpoint(received)),
            Ok(None) => {
                if !was_receiving && self.decoder.in_transfer() {
                    self.failed = false;
                    // The decoder accepted the BEGIN line, so its fields are
                    // `BEGIN <name> <total> <hash>`.
                    let mut fields = line[PREFIX.len()..].split(' ').skip(1);
                    let name = fields.next().unwrap_or_default().to_owned();
                    self.total = fields.next().and_then(|t| t.parse().ok()).unwrap_or(0);
                    out.push(Caught::Started {
                        name,
                        total: self.total,
                    });
                } else if let Some(received) = self.decoder.next_offset() {
                    out.push(Caught::Progress {
                        received,
                        total: self.total,
                    });
                }
            }
            Err(error) => {
                self.failed = true;
                out.push(Caught::Failed(error));
            }
        }
    }
}

/// Whether `held` (the start of a line) may still be or become a transfer
/// line: a prefix of [`PREFIX`], or a line starting with it that is not yet
/// longer than any valid one.
fn could_be_transfer_line(held: &[u8]) -> bool {
    let prefix = PREFIX.as_bytes();
    if held.len() <= prefix.len() {
        prefix.starts_with(held)
    } else {
        // An overlong "transfer" line is released as text; the decoder then
        // rejects the transfer at its next line.
        held.starts_with(prefix) && held.len() <= MAX_LINE + 2
    }
}

fn flush_text(text: &mut Vec<u8>, out: &mut Vec<Caught>) {
    if !text.is_empty() {
        out.push(Caught::Text(std::mem::take(text)));
    }
}

/// Why a caught checkpoint could not be saved.
#[derive(Debug, Error)]
#[error("cannot save checkpoint to {path}: {source}")]
pub struct SaveError {
    /// The file it was to be saved as.
    pub path: PathBuf,
    /// What the system said.
    pub source: io::Error,
}

/// Saves `checkpoint` as `<dir>/<name>.tckpt` through a temporary file in
/// `dir` and a rename, so that the file is either absent or whole; an
/// existing file of that name is replaced. Returns the path.
pub fn save_checkpoint(dir: &Path, checkpoint: &Received) -> Result<PathBuf, SaveError> {
    // The decoder only accepts `[A-Za-z0-9._-]` names: no path separators.
    let path = dir.join(format!("{}.{CHECKPOINT_EXTENSION}", checkpoint.name));
    let write = || -> io::Result<()> {
        let mut file = tempfile::Builder::new()
            .prefix(".tern-ckpt-")
            // An ordinary file's mode (the umask applies), not the private
            // 0600 of temporary files: the checkpoint is the user's output.
            .permissions(std::fs::Permissions::from_mode(0o666))
            .tempfile_in(dir)?;
        file.write_all(&checkpoint.bytes)?;
        file.as_file().sync_all()?;
        file.persist(&path).map_err(|error| error.error)?;
        Ok(())
    };
    write().map_err(|source| SaveError {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// The transfer name for a checkpoint file: its file stem, made valid.
pub fn transfer_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|stem| stem.to_string_lossy())
        .unwrap_or_default();
    serial_transfer::sanitize_name(&stem)
}

/// The shell command that puts a node into receive mode.
pub const RECEIVE_COMMAND: &str = "receive";

/// What [`send_checkpoint`] reports while it works.
#[derive(Debug)]
pub enum SendEvent<'a> {
    /// Device output that is not a reply (shell text, defmt logs), to show.
    Output(Event),
    /// The node acknowledged `sent` of `total` bytes.
    Progress {
        /// Bytes acknowledged so far.
        sent: u64,
        /// The checkpoint's size.
        total: u64,
    },
    /// Nothing arrived for a moment; a chance to look at the keyboard.
    Idle,
    /// The outcome (also returned), reported before the device output that
    /// followed the node's last reply, so that it shows in order.
    Finished(&'a Result<String, SendError>),
}

/// Why sending a checkpoint failed.
#[derive(Debug, Error)]
pub enum SendError {
    /// The node did not answer in time.
    #[error("no {expected} from the node within {timeout:?}")]
    Timeout {
        /// The reply that was awaited.
        expected: String,
        /// How long it was awaited.
        timeout: Duration,
    },
    /// The node refused the checkpoint (`TERN-CKPT ERROR`).
    #[error("the node refused the checkpoint: {0}")]
    Refused(String),
    /// The node answered something that does not fit the exchange.
    #[error("unexpected reply from the node: {0}")]
    Unexpected(String),
    /// The device went away.
    #[error("the device went away")]
    Disconnected,
    /// The observer asked to stop.
    #[error("cancelled")]
    Cancelled,
    /// Reading from or writing to the device failed.
    #[error("serial i/o: {0}")]
    Io(#[from] io::Error),
}

/// Sends `bytes` as checkpoint `name` to a node: types [`RECEIVE_COMMAND`],
/// waits for `READY`, then sends the transfer lines one at a time, each only
/// after the node's `ACK` of the previous one, and waits for `DONE`. Returns
/// the name the node confirmed.
///
/// `decoder` splits the device output (defmt frames decoded if it has a
/// table); whatever is not a reply goes to `observe` as
/// [`SendEvent::Output`]. Each reply is awaited at most `timeout`; reads
/// from `link` may time out (`TimedOut`/`WouldBlock`), which is reported as
/// [`SendEvent::Idle`]. `observe` returning `Break` cancels the transfer
/// (the node then times out or sees a broken transfer and leaves receive
/// mode by itself). The last event is [`SendEvent::Finished`], followed
/// only by output that arrived after the node's last reply.
pub fn send_checkpoint<L: Read + Write + ?Sized>(
    link: &mut L,
    decoder: &mut StreamDecoder,
    name: &str,
    bytes: &[u8],
    timeout: Duration,
    mut observe: impl FnMut(SendEvent<'_>) -> ControlFlow<()>,
) -> Result<String, SendError> {
    let mut replies = Replies {
        link,
        decoder,
        timeout,
        catcher: CheckpointCatcher::new(),
        pending: Vec::new(),
        deferred: Vec::new(),
        buffer: vec![0; 4096],
    };
    let result = replies.exchange(name, bytes, &mut observe);
    // The outcome is decided: a cancel request changes nothing any more.
    let _ = observe(SendEvent::Finished(&result));
    let mut rest = std::mem::take(&mut replies.deferred);
    // Text held as a possible transfer line start is the session's again.
    if let Some(Caught::Text(text)) = replies.catcher.flush_idle() {
        rest.push(Event::Text(text));
    }
    for event in rest {
        let _ = observe(SendEvent::Output(event));
    }
    result
}

fn unexpected(reply: Reply) -> SendError {
    match reply {
        Reply::Error(message) => SendError::Refused(message),
        other => SendError::Unexpected(other.to_string()),
    }
}

/// One checkpoint send: the link, and the replies in the device output.
struct Replies<'a, L: ?Sized> {
    link: &'a mut L,
    decoder: &'a mut StreamDecoder,
    timeout: Duration,
    catcher: CheckpointCatcher,
    /// Replies read but not yet handed out (several may arrive in one read).
    pending: Vec<Reply>,
    /// Output read after a pending reply: shown once that reply is handled.
    deferred: Vec<Event>,
    buffer: Vec<u8>,
}

impl<L: Read + Write + ?Sized> Replies<'_, L> {
    /// The whole exchange of [`send_checkpoint`].
    fn exchange(
        &mut self,
        name: &str,
        bytes: &[u8],
        observe: &mut impl FnMut(SendEvent<'_>) -> ControlFlow<()>,
    ) -> Result<String, SendError> {
        let total = bytes.len() as u64;
        self.write_line(RECEIVE_COMMAND)?;
        match self.next("READY", observe)? {
            Reply::Ready => {}
            other => return Err(unexpected(other)),
        }
        // Every line but END is answered by an ACK, END by DONE.
        let mut lines = serial_transfer::encode(name, bytes).peekable();
        while let Some(line) = lines.next() {
            self.write_line(&line)?;
            if lines.peek().is_none() {
                break;
            }
            match self.next("ACK", observe)? {
                Reply::Ack(sent) => {
                    if observe(SendEvent::Progress { sent, total }).is_break() {
                        return Err(SendError::Cancelled);
                    }
                }
                other => return Err(unexpected(other)),
            }
        }
        match self.next("DONE", observe)? {
            Reply::Done(name) => Ok(name),
            other => Err(unexpected(other)),
        }
    }

    /// Shows device output, or defers it while a reply read before it
    /// waits to be handled.
    fn output(
        &mut self,
        event: Event,
        observe: &mut impl FnMut(SendEvent<'_>) -> ControlFlow<()>,
    ) -> Result<(), SendError> {
        if !self.pending.is_empty() {
            self.deferred.push(event);
        } else if observe(SendEvent::Output(event)).is_break() {
            return Err(SendError::Cancelled);
        }
        Ok(())
    }

    /// Types `line` and Enter, as a user would.
    fn write_line(&mut self, line: &str) -> Result<(), SendError> {
        let mut typed = Vec::with_capacity(line.len() + 1);
        typed.extend_from_slice(line.as_bytes());
        typed.push(b'\r');
        self.link.write_all(&typed)?;
        self.link.flush()?;
        Ok(())
    }

    /// The next reply, waiting at most the timeout for it.
    fn next(
        &mut self,
        expected: &str,
        observe: &mut impl FnMut(SendEvent<'_>) -> ControlFlow<()>,
    ) -> Result<Reply, SendError> {
        let deadline = Instant::now() + self.timeout;
        // The previous reply has been handled: what followed it shows now.
        for event in std::mem::take(&mut self.deferred) {
            if observe(SendEvent::Output(event)).is_break() {
                return Err(SendError::Cancelled);
            }
        }
        loop {
            if !self.pending.is_empty() {
                return Ok(self.pending.remove(0));
            }
            if Instant::now() >= deadline {
                return Err(SendError::Timeout {
                    expected: expected.to_owned(),
                    timeout: self.timeout,
                });
            }
            let events = match self.link.read(&mut self.buffer) {
                Ok(0) => return Err(SendError::Disconnected),
                Ok(n) => self.decoder.feed(&self.buffer[..n]),
                Err(error) if is_timeout(&error) => {
                    if observe(SendEvent::Idle).is_break() {
                        return Err(SendError::Cancelled);
                    }
                    continue;
                }
                Err(error) => return Err(error.into()),
            };
            for event in events {
                let text = match event {
                    Event::Text(text) => text,
                    other => {
                        self.output(other, observe)?;
                        continue;
                    }
                };
                for caught in self.catcher.push(&text) {
                    match caught {
                        Caught::Reply(reply) => self.pending.push(reply),
                        Caught::Text(text) => self.output(Event::Text(text), observe)?,
                        // A node does not send checkpoints while receiving
                        // one; such lines are not shown either.
                        _ => {}
                    }
                }
            }
        }
    }
}

/// Whether a read error only means that nothing arrived in time.
pub(crate) fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::deframe::DELIMITER;

    /// A checkpoint-like payload with every byte value.
    fn payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// What a kernel prints for `checkpoint 1`: lines ending in CRLF.
    fn printed(name: &str, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for line in serial_transfer::encode(name, bytes) {
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// Text, checkpoints and failures from pushing `chunks` in order.
    fn catch(chunks: &[&[u8]]) -> (Vec<u8>, Vec<Received>, Vec<TransferError>) {
        let mut catcher = CheckpointCatcher::new();
        let (mut text, mut checkpoints, mut failures) = (Vec::new(), Vec::new(), Vec::new());
        for chunk in chunks {
            for caught in catcher.push(chunk) {
                match caught {
                    Caught::Text(t) => text.extend(t),
                    Caught::Checkpoint(c) => checkpoints.push(c),
                    Caught::Failed(e) => failures.push(e),
                    Caught::Started { .. } | Caught::Progress { .. } | Caught::Reply(_) => {}
                }
            }
        }
        (text, checkpoints, failures)
    }

    #[test]
    fn checkpoint_lines_are_caught_and_other_text_passes_unchanged() {
        let bytes = payload(1000);
        let mut stream = b"tern> checkpoint 1\r\n".to_vec();
        stream.extend(printed("is-S-50.0", &bytes));
        stream.extend_from_slice(b"Tern says hi\r\nT\r\nTERN-CKPX no\r\ntern> ");
        let (text, checkpoints, failures) = catch(&[&stream]);
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "tern> checkpoint 1\r\nTern says hi\r\nT\r\nTERN-CKPX no\r\ntern> "
        );
        assert_eq!(checkpoints.len(), 1);
        assert_eq!(checkpoints[0].name, "is-S-50.0");
        assert_eq!(checkpoints[0].bytes, bytes);
        assert!(failures.is_empty());

        // Byte by byte, and split at every point, the result is the same.
        let bytewise: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(catch(&bytewise), catch(&[&stream]));
        for i in (0..stream.len()).step_by(97) {
            assert_eq!(catch(&[&stream[..i], &stream[i..]]), catch(&[&stream]));
        }
    }

    #[test]
    fn progress_is_reported_per_line() {
        let mut catcher = CheckpointCatcher::new();
        let caught = catcher.push(&printed("p", &payload(800)));
        let progress: Vec<(u64, u64)> = caught
            .iter()
            .filter_map(|c| match c {
                Caught::Progress { received, total } => Some((*received, *total)),
                _ => None,
            })
            .collect();
        assert_eq!(progress, [(384, 800), (768, 800), (800, 800)]);
        assert!(matches!(&caught[0], Caught::Started { name, total: 800 } if name == "p"));
        assert!(matches!(caught.last(), Some(Caught::Checkpoint(_))));
    }

    #[test]
    fn defmt_frames_inside_transfer_lines_do_not_disturb_them() {
        let bytes = payload(2000);
        let lines = printed("frames", &bytes);
        // A frame (0x00, body, 0x00) in the middle of every 100 bytes.
        let mut stream = Vec::new();
        for chunk in lines.chunks(100) {
            stream.extend_from_slice(&chunk[..50.min(chunk.len())]);
            stream.extend_from_slice(&[DELIMITER, 0x01, 0x88, 0x13, DELIMITER]);
            stream.extend_from_slice(&chunk[50.min(chunk.len())..]);
        }
        stream.extend_from_slice(b"tern> ");
        let mut decoder = StreamDecoder::without_table();
        let mut catcher = CheckpointCatcher::new();
        let (mut frames, mut text, mut got) = (0, Vec::new(), None);
        for piece in stream.chunks(33) {
            for event in decoder.feed(piece) {
                match event {
                    Event::Text(t) => {
                        for caught in catcher.push(&t) {
                            match caught {
                                Caught::Text(t) => text.extend(t),
                                Caught::Checkpoint(c) => got = Some(c),
                                Caught::Failed(e) => panic!("{e}"),
                                _ => {}
                            }
                        }
                    }
                    Event::Frame(_) => frames += 1,
                    other => panic!("{other:?}"),
                }
            }
        }
        assert_eq!(frames, lines.len().div_ceil(100));
        assert_eq!(text, b"tern> ");
        assert_eq!(got.unwrap().bytes, bytes);
    }

    #[test]
    fn a_damaged_transfer_is_reported_and_nothing_is_caught() {
        let bytes = payload(1000);
        let mut stream = printed("bad", &bytes);
        // Change one base64 character of the first DATA line.
        let at = stream
            .windows(17)
            .position(|w| w == b"TERN-CKPT DATA 0 ")
            .unwrap()
            + 20;
        stream[at] = if stream[at] == b'A' { b'B' } else { b'A' };
        stream.extend_from_slice(b"tern> ");
        let (text, checkpoints, failures) = catch(&[&stream]);
        assert!(checkpoints.is_empty());
        assert_eq!(failures, [TransferError::HashMismatch]);
        assert_eq!(text, b"tern> ");

        // A transfer cut off (lost END) and a new one: the first is reported
        // when the second's BEGIN arrives, the second is caught.
        let mut cut = printed("first", &bytes);
        cut.truncate(cut.len() - "TERN-CKPT END 1000\r\n".len());
        cut.extend(printed("second", &bytes));
        let (_, checkpoints, failures) = catch(&[&cut]);
        assert_eq!(failures, [TransferError::Unexpected("BEGIN")]);
        assert_eq!(checkpoints.len(), 1);
        assert_eq!(checkpoints[0].name, "second");

        // A transfer that lost its BEGIN fails once, not once per line.
        let headless = printed("headless", &bytes);
        let start = headless.iter().position(|&b| b == b'\n').unwrap() + 1;
        let (_, checkpoints, failures) = catch(&[&headless[start..]]);
        assert!(checkpoints.is_empty());
        assert_eq!(failures, [TransferError::Unexpected("DATA")]);
    }

    #[test]
    fn overlong_transfer_line_is_released_as_text() {
        let line = format!("TERN-CKPT DATA 0 {}\r\n", "A".repeat(MAX_LINE + 10));
        let (text, checkpoints, failures) = catch(&[line.as_bytes()]);
        assert_eq!(text, line.as_bytes());
        assert!(checkpoints.is_empty() && failures.is_empty());
    }

    #[test]
    fn idle_releases_a_held_line_start_but_not_a_transfer_line() {
        let mut catcher = CheckpointCatcher::new();
        assert_eq!(catcher.push(b"TER"), vec![]);
        assert_eq!(catcher.flush_idle(), Some(Caught::Text(b"TER".to_vec())));
        assert_eq!(
            catcher.push(b"N\r\n"),
            vec![Caught::Text(b"N\r\n".to_vec())]
        );
        assert_eq!(catcher.push(b"TERN-CKPT BEG"), vec![]);
        assert_eq!(catcher.flush_idle(), None);
    }

    #[test]
    fn replies_are_recognised() {
        let mut catcher = CheckpointCatcher::new();
        assert_eq!(
            catcher.push(b"receive\r\nTERN-CKPT READY\r\nTERN-CKPT ACK 384\r\n"),
            vec![
                Caught::Text(b"receive\r\n".to_vec()),
                Caught::Reply(Reply::Ready),
                Caught::Reply(Reply::Ack(384)),
            ]
        );
    }

    #[test]
    fn save_writes_the_whole_file_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Received {
            name: "is-S".into(),
            bytes: payload(5000),
        };
        let path = save_checkpoint(dir.path(), &checkpoint).unwrap();
        assert_eq!(path, dir.path().join("is-S.tckpt"));
        assert_eq!(std::fs::read(&path).unwrap(), checkpoint.bytes);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["is-S.tckpt"], "no temporary file left");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_ne!(
            mode & 0o044,
            0,
            "readable by others as umask allows: {mode:o}"
        );

        let missing = dir.path().join("missing");
        let error = save_checkpoint(&missing, &checkpoint).unwrap_err();
        assert_eq!(error.path, missing.join("is-S.tckpt"));
        assert!(!missing.exists());
    }

    #[test]
    fn transfer_names_come_from_file_stems() {
        assert_eq!(
            transfer_name(Path::new("/tmp/is-S-50.0.tckpt")),
            "is-S-50.0"
        );
        assert_eq!(transfer_name(Path::new("a dir/my file.bin")), "my_file");
        assert_eq!(transfer_name(Path::new("/")), "checkpoint");
    }

    /// How the fake node answers.
    #[derive(Clone, Copy, PartialEq)]
    enum Behaviour {
        /// A receiving kernel: READY, ACKs, DONE, with chatter and a frame.
        Accept,
        /// Refuses the checkpoint at END.
        RefuseAtEnd,
        /// Never leaves the shell: no READY.
        Silent,
        /// The connection ends after READY.
        Vanish,
    }

    /// A node on the other end of the link, answering per line typed.
    struct FakeNode {
        behaviour: Behaviour,
        typed: Vec<u8>,
        output: VecDeque<u8>,
        decoder: Decoder,
        received: Option<Received>,
        ended: bool,
    }

    impl FakeNode {
        fn new(behaviour: Behaviour) -> Self {
            Self {
                behaviour,
                typed: Vec::new(),
                output: VecDeque::new(),
                decoder: Decoder::new(1 << 20),
                received: None,
                ended: false,
            }
        }

        fn say(&mut self, text: &str) {
            self.output.extend(text.as_bytes());
        }

        fn line(&mut self, line: &str) {
            if line == RECEIVE_COMMAND {
                // Echo, a defmt frame, then the reply.
                self.say("receive\r\n");
                self.output.extend([DELIMITER, 0x02, 0x90, DELIMITER]);
                match self.behaviour {
                    Behaviour::Silent => {}
                    Behaviour::Vanish => {
                        self.say("TERN-CKPT READY\r\n");
                        self.ended = true;
                    }
                    _ => self.say("TERN-CKPT READY\r\n"),
                }
                return;
            }
            if line.starts_with("TERN-CKPT END") && self.behaviour == Behaviour::RefuseAtEnd {
                self.say("TERN-CKPT ERROR checkpoint: bad chunk CRC in region keys\r\n");
                return;
            }
            match self.decoder.feed_line(line) {
                Ok(Some(received)) => {
                    let done = Reply::Done(received.name.clone());
                    self.say(&format!(
                        "{done}\r\ntask 1 (is S) resumed at 50.0% from x86_64/pc\r\n"
                    ));
                    self.received = Some(received);
                }
                Ok(None) => {
                    let next = self.decoder.next_offset().unwrap_or(0);
                    self.say(&format!("{}\r\n", Reply::Ack(next)));
                }
                Err(error) => self.say(&format!("{}\r\n", Reply::Error(error.to_string()))),
            }
        }
    }

    impl Write for FakeNode {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.ended {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            self.typed.extend_from_slice(buf);
            while let Some(end) = self.typed.iter().position(|&b| b == b'\r') {
                let line: Vec<u8> = self.typed.drain(..=end).collect();
                let line = String::from_utf8(line[..end].to_vec()).unwrap();
                self.line(&line);
            }
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Read for FakeNode {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.output.is_empty() {
                return if self.ended {
                    Ok(0)
                } else {
                    Err(io::ErrorKind::TimedOut.into())
                };
            }
            // Small reads, so that replies arrive split.
            let n = buf.len().min(self.output.len()).min(7);
            for (slot, byte) in buf.iter_mut().zip(self.output.drain(..n)) {
                *slot = byte;
            }
            Ok(n)
        }
    }

    /// Sends `bytes` to `node`; returns the result, the text shown and the
    /// progress seen.
    fn send(
        node: &mut FakeNode,
        bytes: &[u8],
        timeout: Duration,
    ) -> (Result<String, SendError>, String, Vec<u64>) {
        let mut decoder = StreamDecoder::without_table();
        let (mut shown, mut progress) = (Vec::new(), Vec::new());
        let result = send_checkpoint(node, &mut decoder, "is-S", bytes, timeout, |event| {
            match event {
                SendEvent::Output(Event::Text(t)) => shown.extend(t),
                SendEvent::Output(Event::Frame(_)) => shown.extend(b"<frame>"),
                SendEvent::Output(other) => panic!("{other:?}"),
                SendEvent::Progress { sent, total } => {
                    assert_eq!(total, bytes.len() as u64);
                    progress.push(sent);
                }
                SendEvent::Idle => {}
                SendEvent::Finished(result) => {
                    shown.extend(format!("<{}>", result.is_ok()).bytes())
                }
            }
            ControlFlow::Continue(())
        });
        (result, String::from_utf8(shown).unwrap(), progress)
    }

    #[test]
    fn send_waits_for_each_ack_and_the_node_gets_the_bytes() {
        let bytes = payload(1000);
        let mut node = FakeNode::new(Behaviour::Accept);
        let (result, shown, progress) = send(&mut node, &bytes, Duration::from_secs(5));
        assert_eq!(result.unwrap(), "is-S");
        assert_eq!(node.received.as_ref().unwrap().bytes, bytes);
        assert_eq!(progress, [0, 384, 768, 1000]);
        // What followed DONE in the last read comes after the outcome; the
        // rest stays on the link for the session.
        let rest = String::from_utf8(node.output.drain(..).collect()).unwrap();
        assert_eq!(
            format!("{shown}{rest}"),
            "receive\r\n<frame><true>task 1 (is S) resumed at 50.0% from x86_64/pc\r\n"
        );
    }

    #[test]
    fn send_reports_refusal_timeout_and_disconnection() {
        let bytes = payload(500);
        let mut node = FakeNode::new(Behaviour::RefuseAtEnd);
        let (result, _, _) = send(&mut node, &bytes, Duration::from_secs(5));
        let error = result.unwrap_err();
        assert!(
            matches!(&error, SendError::Refused(m) if m.contains("bad chunk CRC")),
            "{error}"
        );

        let mut node = FakeNode::new(Behaviour::Silent);
        let (result, shown, _) = send(&mut node, &bytes, Duration::from_millis(50));
        let error = result.unwrap_err();
        assert!(
            matches!(&error, SendError::Timeout { expected, .. } if expected == "READY"),
            "{error}"
        );
        assert_eq!(error.to_string(), "no READY from the node within 50ms");
        assert_eq!(shown, "receive\r\n<frame><false>");

        let mut node = FakeNode::new(Behaviour::Vanish);
        let (result, _, _) = send(&mut node, &bytes, Duration::from_secs(5));
        assert!(matches!(
            result,
            Err(SendError::Io(_) | SendError::Disconnected)
        ));
    }

    #[test]
    fn observer_can_cancel_a_send() {
        let mut node = FakeNode::new(Behaviour::Accept);
        let mut decoder = StreamDecoder::without_table();
        let result = send_checkpoint(
            &mut node,
            &mut decoder,
            "x",
            &payload(2000),
            Duration::from_secs(5),
            |event| match event {
                SendEvent::Progress { sent, .. } if sent >= 384 => ControlFlow::Break(()),
                _ => ControlFlow::Continue(()),
            },
        );
        assert!(matches!(result, Err(SendError::Cancelled)));
        assert!(node.received.is_none());
    }
}
