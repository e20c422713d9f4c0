//! The interactive session: device bytes to the screen, keystrokes to the
//! device, reconnection when the device goes away.

use std::io::{self, IsTerminal, Read, Write};
use std::ops::ControlFlow;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::termios::{self, SetArg, Termios};

use crate::port::{self, Link};
use crate::transfer::{self, is_timeout, Caught, CheckpointCatcher, SendError, SendEvent};
use crate::{ConsoleError, ConsoleOptions, Event, Screen, StreamDecoder, TransferOptions};

/// The key that ends the console: Ctrl-] (as in telnet and picocom).
pub const EXIT_KEY: u8 = 0x1d;

/// How often a vanished device is looked for again.
const RECONNECT_INTERVAL: Duration = Duration::from_millis(500);

/// How often the keyboard is checked while waiting for the device.
const KEY_POLL: Duration = Duration::from_millis(50);

/// Quiet time after which a half-open frame is re-examined (see
/// [`crate::deframe::Deframer::flush_idle`]).
const IDLE_FLUSH: Duration = Duration::from_millis(100);

/// Least time between two updates of a transfer's progress line.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// Runs the console until Ctrl-], a termination signal, or (when standard
/// input is not a terminal and has ended) the device going away; caught
/// checkpoints are saved in the current directory.
///
/// Errors before the session starts (bad ELF, absent or busy port, log file)
/// are returned at once; once connected, a vanished device is waited for.
pub fn run(options: &ConsoleOptions) -> Result<(), ConsoleError> {
    run_with(options, &TransferOptions::default())
}

/// [`run`], with checkpoints handled as `transfers` says. With
/// [`TransferOptions::send`], the file is read before connecting and sent
/// first; if sending fails, the session still runs, and its end returns
/// [`ConsoleError::Send`].
pub fn run_with(options: &ConsoleOptions, transfers: &TransferOptions) -> Result<(), ConsoleError> {
    if !transfers.save_dir.is_dir() {
        return Err(ConsoleError::SaveDir(transfers.save_dir.clone()));
    }
    let send = match &transfers.send {
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|source| ConsoleError::ReadCheckpoint {
                path: path.clone(),
                source,
            })?;
            Some((transfer::transfer_name(path), bytes))
        }
        None => None,
    };
    let decoder = match &options.elf {
        Some(path) => {
            let elf = std::fs::read(path).map_err(|source| ConsoleError::ReadElf {
                path: path.clone(),
                source,
            })?;
            StreamDecoder::new(&elf).map_err(|source| ConsoleError::Table {
                path: path.clone(),
                source,
            })?
        }
        None => StreamDecoder::without_table(),
    };
    let out = io::stdout().lock();
    let screen = match &options.log {
        Some(path) => Screen::with_log(out, path).map_err(|source| ConsoleError::LogFile {
            path: path.clone(),
            source,
        })?,
        None => Screen::new(out),
    };
    let link = port::open(&options.port, options.baud)?;

    let interactive = io::stdin().is_terminal();
    let _raw = interactive
        .then(RawTerminal::enter)
        .transpose()
        .map_err(ConsoleError::Terminal)?;
    let signals = StopSignals::register().map_err(ConsoleError::Signals)?;

    let mut session = Session {
        options,
        transfers,
        decoder,
        catcher: CheckpointCatcher::new(),
        receiving: String::new(),
        last_progress: None,
        screen,
        keys: spawn_keyboard_reader(),
        interactive,
        input_ended: false,
        input_end_said: false,
        stop: signals.flag.clone(),
        send,
        send_failure: None,
    };
    let result = session.run(link);
    let finish = session.finish();
    result.and(finish)?;
    match session.send_failure {
        Some(error) => Err(ConsoleError::Send(error)),
        None => Ok(()),
    }
}

/// What ended a connected stretch of the session.
enum End {
    /// The user (or a signal) asked to exit.
    Exit,
    /// The device went away.
    Disconnected,
}

/// Standard input as the keyboard thread sees it.
enum Input {
    /// Bytes to forward to the device.
    Bytes(Vec<u8>),
    /// The exit key was pressed.
    Exit,
    /// Standard input ended.
    Eof,
}

struct Session<'a, W: Write> {
    options: &'a ConsoleOptions,
    transfers: &'a TransferOptions,
    decoder: StreamDecoder,
    catcher: CheckpointCatcher,
    /// The name of the checkpoint being received, for the progress line.
    receiving: String,
    /// When the progress line was last updated.
    last_progress: Option<Instant>,
    screen: Screen<W>,
    keys: Receiver<Input>,
    interactive: bool,
    input_ended: bool,
    /// Whether the end of non-terminal input has been announced.
    input_end_said: bool,
    stop: Arc<AtomicBool>,
    /// The checkpoint to send once connected: transfer name and bytes.
    send: Option<(String, Vec<u8>)>,
    /// Why sending the checkpoint failed, if it did.
    send_failure: Option<SendError>,
}

impl<W: Write> Session<'_, W> {
    fn run(&mut self, mut link: Box<dyn Link>) -> Result<(), ConsoleError> {
        let port = &self.options.port;
        self.say(&format!("[console: connected to {port}; Ctrl-] exits]"))?;
        loop {
            let end = match self.send.take() {
                Some((name, bytes)) => self.send_checkpoint(link.as_mut(), &name, &bytes)?,
                None => None,
            };
            let end = match end {
                Some(end) => end,
                None => self.pump(link.as_mut())?,
            };
            if let End::Exit = end {
                return Ok(());
            }
            self.say(&format!("[console: {port} disconnected, waiting...]"))?;
            self.decoder.reset();
            self.catcher.reset();
            match self.reconnect()? {
                Some(new_link) => link = new_link,
                None => return Ok(()),
            }
            self.say("[console: reconnected]")?;
        }
    }

    /// Moves bytes both ways until the device goes away or the user exits.
    fn pump(&mut self, link: &mut dyn Link) -> Result<End, ConsoleError> {
        let mut buffer = [0u8; 4096];
        let mut last_received = Instant::now();
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(End::Exit);
            }
            while let Some(input) = self.next_input() {
                match input {
                    Input::Bytes(bytes) => {
                        if link.write_all(&bytes).and_then(|()| link.flush()).is_err() {
                            return Ok(End::Disconnected);
                        }
                    }
                    Input::Exit => return Ok(End::Exit),
                    Input::Eof => {}
                }
            }
            self.say_input_end()?;
            match link.read(&mut buffer) {
                Ok(0) => return Ok(End::Disconnected),
                Ok(n) => {
                    last_received = Instant::now();
                    for event in self.decoder.feed(&buffer[..n]) {
                        self.show(event)?;
                    }
                }
                Err(e) if is_timeout(&e) => {
                    if last_received.elapsed() >= IDLE_FLUSH {
                        if let Some(event) = self.decoder.flush_idle() {
                            self.show(event)?;
                        }
                        if let Some(caught) = self.catcher.flush_idle() {
                            self.caught(caught)?;
                        }
                    }
                }
                Err(_) => return Ok(End::Disconnected),
            }
        }
    }

    /// Shows one event of the device output; its text goes through the
    /// checkpoint catcher first.
    fn show(&mut self, event: Event) -> Result<(), ConsoleError> {
        match event {
            Event::Text(text) => {
                for caught in self.catcher.push(&text) {
                    self.caught(caught)?;
                }
                Ok(())
            }
            other => self.screen.show(&other).map_err(ConsoleError::Io),
        }
    }

    /// Shows, or acts on, what the checkpoint catcher found.
    fn caught(&mut self, caught: Caught) -> Result<(), ConsoleError> {
        match caught {
            Caught::Text(text) => self
                .screen
                .show(&Event::Text(text))
                .map_err(ConsoleError::Io),
            Caught::Started { name, total } => {
                self.say(&format!(
                    "[console: receiving checkpoint {name} ({total} bytes)]"
                ))?;
                self.receiving = name;
                self.last_progress = None;
                Ok(())
            }
            Caught::Progress { received, total } => {
                let status = format!(
                    "[console: receiving checkpoint {}: {received}/{total} bytes]",
                    self.receiving
                );
                self.progress(&status)
            }
            Caught::Checkpoint(checkpoint) => {
                let line = match transfer::save_checkpoint(&self.transfers.save_dir, &checkpoint) {
                    Ok(path) => format!(
                        "[console: checkpoint saved to {} ({} bytes, sha256 ok)]",
                        path.display(),
                        checkpoint.bytes.len()
                    ),
                    Err(error) => format!("[console: {error}; nothing saved]"),
                };
                self.say(&line)
            }
            Caught::Failed(error) => self.say(&format!(
                "[console: checkpoint transfer failed: {error}; nothing saved]"
            )),
            // A node answering a transfer this console did not start (the
            // user typed `receive`): show the reply as the node printed it.
            Caught::Reply(reply) => self
                .screen
                .show(&Event::Text(format!("{reply}\r\n").into_bytes()))
                .map_err(ConsoleError::Io),
        }
    }

    /// Updates the transient progress line, at most every
    /// [`PROGRESS_INTERVAL`].
    fn progress(&mut self, status: &str) -> Result<(), ConsoleError> {
        let now = Instant::now();
        if self
            .last_progress
            .is_some_and(|last| now.duration_since(last) < PROGRESS_INTERVAL)
        {
            return Ok(());
        }
        self.last_progress = Some(now);
        self.screen.progress(status).map_err(ConsoleError::Io)
    }

    /// Sends a checkpoint to the node's `receive`, showing the device output
    /// and the progress meanwhile. Keys typed during the transfer are
    /// dropped (they would break the line protocol), except the exit key.
    /// Returns how the connection ended if it did, `None` to go on.
    fn send_checkpoint(
        &mut self,
        link: &mut dyn Link,
        name: &str,
        bytes: &[u8],
    ) -> Result<Option<End>, ConsoleError> {
        self.say(&format!(
            "[console: sending checkpoint {name} ({} bytes)]",
            bytes.len()
        ))?;
        let mut exit = false;
        let mut screen_error = None;
        let mut last_progress: Option<Instant> = None;
        let (screen, keys, stop, input_ended) = (
            &mut self.screen,
            &self.keys,
            &self.stop,
            &mut self.input_ended,
        );
        let result = transfer::send_checkpoint(
            link,
            &mut self.decoder,
            name,
            bytes,
            self.transfers.reply_timeout,
            |event| {
                loop {
                    match keys.try_recv() {
                        Ok(Input::Exit) => exit = true,
                        Ok(Input::Bytes(_)) => {}
                        Ok(Input::Eof) | Err(TryRecvError::Disconnected) => {
                            *input_ended = true;
                            break;
                        }
                        Err(TryRecvError::Empty) => break,
                    }
                }
                if exit || stop.load(Ordering::Relaxed) {
                    exit = true;
                    return ControlFlow::Break(());
                }
                let shown = match event {
                    SendEvent::Output(event) => screen.show(&event),
                    SendEvent::Progress { sent, total } => {
                        let now = Instant::now();
                        if last_progress.is_some_and(|last| now - last < PROGRESS_INTERVAL) {
                            Ok(())
                        } else {
                            last_progress = Some(now);
                            screen.progress(&format!(
                                "[console: sending checkpoint {name}: {sent}/{total} bytes]"
                            ))
                        }
                    }
                    SendEvent::Idle => Ok(()),
                    SendEvent::Finished(Ok(confirmed)) => screen.line(&format!(
                        "[console: checkpoint {confirmed} sent; the node confirmed it (DONE)]"
                    )),
                    // The user leaving needs no words.
                    SendEvent::Finished(Err(SendError::Cancelled)) => Ok(()),
                    SendEvent::Finished(Err(error)) => screen.line(&format!(
                        "[console: sending checkpoint {name} failed: {error}]"
                    )),
                };
                match shown {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(error) => {
                        screen_error = Some(error);
                        ControlFlow::Break(())
                    }
                }
            },
        );
        if let Some(error) = screen_error {
            return Err(ConsoleError::Io(error));
        }
        match result {
            Ok(_) => Ok(None),
            Err(SendError::Cancelled) if exit => Ok(Some(End::Exit)),
            Err(error) => {
                let end = matches!(error, SendError::Disconnected).then_some(End::Disconnected);
                self.send_failure = Some(error);
                Ok(end)
            }
        }
    }

    /// Waits for the device to come back; `None` when the session should end
    /// instead. Keystrokes typed meanwhile have nowhere to go and are dropped.
    fn reconnect(&mut self) -> Result<Option<Box<dyn Link>>, ConsoleError> {
        let mut next_attempt = Instant::now() + RECONNECT_INTERVAL;
        loop {
            // Without a terminal and with input over, nobody can press the
            // exit key: the end of the device is the end of the session.
            if self.stop.load(Ordering::Relaxed) || (!self.interactive && self.input_ended) {
                return Ok(None);
            }
            while let Some(input) = self.next_input() {
                if let Input::Exit = input {
                    return Ok(None);
                }
            }
            self.say_input_end()?;
            let now = Instant::now();
            if now >= next_attempt {
                if let Ok(link) = port::open(&self.options.port, self.options.baud) {
                    return Ok(Some(link));
                }
                next_attempt = now + RECONNECT_INTERVAL;
            }
            thread::sleep(KEY_POLL.min(next_attempt.saturating_duration_since(Instant::now())));
        }
    }

    /// The next keyboard input, if one is waiting.
    fn next_input(&mut self) -> Option<Input> {
        match self.keys.try_recv() {
            Ok(Input::Eof) | Err(TryRecvError::Disconnected) => {
                self.input_ended = true;
                None
            }
            Ok(input) => Some(input),
            Err(TryRecvError::Empty) => None,
        }
    }

    /// Once standard input (not a terminal) has ended, says so once: from
    /// then on nobody can type the exit key, and the device going away ends
    /// the session. Scripts and tests wait for this line.
    fn say_input_end(&mut self) -> Result<(), ConsoleError> {
        if self.interactive || !self.input_ended || self.input_end_said {
            return Ok(());
        }
        self.input_end_said = true;
        let port = &self.options.port;
        self.say(&format!(
            "[console: input ended; the session ends when {port} goes away]"
        ))
    }

    fn say(&mut self, line: &str) -> Result<(), ConsoleError> {
        self.screen.line(line).map_err(ConsoleError::Io)
    }

    /// Flushes the screen and reports dropped frames, if any.
    fn finish(&mut self) -> Result<(), ConsoleError> {
        let errors = self.decoder.errors();
        if errors.dropped() > 0 {
            self.say(&format!(
                "[console: {} defmt frames dropped: {} overlong, {} undecodable]",
                errors.dropped(),
                errors.overlong,
                errors.undecodable
            ))?;
        }
        self.screen.finish().map_err(ConsoleError::Io)
    }
}

/// Reads standard input on a thread of its own (reads block), cutting it at
/// the exit key.
fn spawn_keyboard_reader() -> Receiver<Input> {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let mut stdin = io::stdin();
        let mut buffer = [0u8; 1024];
        loop {
            let input = match stdin.read(&mut buffer) {
                Ok(0) => Input::Eof,
                Ok(n) => {
                    let bytes = &buffer[..n];
                    match bytes.iter().position(|&b| b == EXIT_KEY) {
                        Some(exit) => {
                            // Keys typed before the exit key still go out.
                            if exit > 0 {
                                let _ = sender.send(Input::Bytes(bytes[..exit].to_vec()));
                            }
                            Input::Exit
                        }
                        None => Input::Bytes(bytes.to_vec()),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => Input::Eof,
            };
            let last = !matches!(input, Input::Bytes(_));
            if sender.send(input).is_err() || last {
                return;
            }
        }
    });
    receiver
}

/// The terminal in raw mode (keys unbuffered, no echo, Ctrl-C as a byte) for
/// as long as this lives; the saved mode is restored on drop, which also runs
/// on error returns and panics.
pub struct RawTerminal {
    saved: Termios,
}

impl RawTerminal {
    /// Switches the terminal on standard input to raw mode.
    pub fn enter() -> io::Result<Self> {
        let fd = io::stdin().as_raw_fd();
        let saved = termios::tcgetattr(fd)?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSANOW, &raw)?;
        Ok(Self { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // Nothing better to do if the terminal is gone.
        let _ = termios::tcsetattr(io::stdin().as_raw_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// SIGTERM, SIGHUP and SIGINT end the session cleanly (restoring the
/// terminal) instead of killing the process; unregistered on drop so that a
/// tool embedding the console gets its default handling back.
struct StopSignals {
    flag: Arc<AtomicBool>,
    ids: Vec<signal_hook::SigId>,
}

impl StopSignals {
    fn register() -> io::Result<Self> {
        let flag = Arc::new(AtomicBool::new(false));
        let ids = [
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGHUP,
            signal_hook::consts::SIGINT,
        ]
        .into_iter()
        .map(|signal| signal_hook::flag::register(signal, flag.clone()))
        .collect::<io::Result<_>>()?;
        Ok(Self { flag, ids })
    }
}

impl Drop for StopSignals {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}
