//! The kernel object and its run loop.
//!
//! The run loop is deliberately simple and cooperative: each turn it feeds
//! typed bytes to the shell (or to a command that holds the console, such
//! as the serial `receive`), polls every registered [`Service`] once with a
//! deadline for the turn, shows the events the services published on the
//! console, and sleeps until the next interrupt when nothing had work.
//!
//! The kernel knows no subsystem: the network stack, the task runner and
//! the control service are services and shell commands that
//! [`crate::start`] registers, each owning its own state.

use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::fmt::{self, Write};

use critical_section::Mutex;
use tern_hal::{Board, EntropySource};
use tern_protocol::NodeEvent;

use crate::console::{self, ConsoleWriter};
use crate::events::{self, EventLog};
use crate::shell::{self, Command, LineEditor};

static BOARD: Mutex<Cell<Option<&'static dyn Board>>> = Mutex::new(Cell::new(None));

/// Records the board for code that has no [`Kernel`] at hand (panics,
/// timestamps).
pub(crate) fn install_board(board: &'static dyn Board) {
    critical_section::with(|cs| BOARD.borrow(cs).set(Some(board)));
}

/// The board handed to [`crate::start`], if it has been called.
pub(crate) fn installed_board() -> Option<&'static dyn Board> {
    critical_section::with(|cs| BOARD.borrow(cs).get())
}

/// Exit status used when the kernel panics (QEMU tests see it).
pub const PANIC_EXIT_CODE: u8 = 101;

/// Stops the machine after a panic with [`PANIC_EXIT_CODE`].
pub fn halt_after_panic() -> ! {
    match installed_board() {
        Some(board) => board.halt(PANIC_EXIT_CODE),
        None => loop {
            core::hint::spin_loop();
        },
    }
}

/// How long services may work in one turn of the run loop. A fast node
/// takes many short task steps per turn, so the other services cost little
/// beside them; a slow node takes one or two. (On the QEMU PC node a turn of
/// the other services costs about 0.5 ms: with 2 ms turns NPB EP class S
/// took 95 s there, with 10 ms 89 s.)
pub const TURN_NS: u64 = 10_000_000;

/// The turn while a service awaits a peer's answer or streams to it
/// ([`ServiceStatus::AwaitingPeer`]): each message of a migration round
/// (offer, need, chunks, commit, ack) is read and answered once a turn, so
/// a full turn of task steps would hold each of them up to [`TURN_NS`].
pub const PEER_TURN_NS: u64 = 2_000_000;

/// The turn while a command holds the serial console: a UART's receive FIFO
/// (16 bytes, 1.4 ms at 115200 baud) must be read before it overflows.
pub const CAPTURED_TURN_NS: u64 = 500_000;

/// Whether a service found work on its last poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceStatus {
    /// It did something; poll again soon.
    Busy,
    /// It converses with a peer (waits for its answer, or streams to it):
    /// poll again after a short turn ([`PEER_TURN_NS`]), not a full one.
    AwaitingPeer,
    /// Nothing to do until an interrupt or a timeout.
    Idle,
}

/// One turn of the run loop as a service sees it.
pub struct Turn<'a> {
    /// Now, on the board's monotonic clock.
    pub now_ns: u64,
    /// Work that can wait should stop by this time.
    pub deadline_ns: u64,
    /// Where the service reports what happened.
    pub events: &'a mut EventLog,
}

impl Turn<'_> {
    /// Reports `event` as happened now.
    pub fn publish(&mut self, event: NodeEvent) {
        self.events.publish(self.now_ns, event);
    }
}

/// Something the run loop polls: a driver, a protocol, a task runner.
pub trait Service {
    /// Short name, shown by diagnostics.
    fn name(&self) -> &'static str;
    /// Makes whatever progress is possible without blocking, by the turn's
    /// deadline; what happened goes to the turn's events.
    fn poll(&mut self, turn: &mut Turn<'_>) -> ServiceStatus;
}

/// What a command holding the console wants after a byte or a poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capture {
    /// Keep the console; the node may sleep until the next interrupt.
    Hold,
    /// Keep the console and do not sleep: more bytes are due at once (a
    /// UART without a receive interrupt must be polled).
    Spin,
    /// Give the console back to the shell.
    Release,
}

/// A command that holds the console for a while (the serial `receive`):
/// typed bytes go to it instead of the shell, while the services keep
/// running.
pub trait ConsoleCapture {
    /// One byte from the console; answers go to `out`.
    fn byte(&mut self, byte: u8, turn: &mut Turn<'_>, out: &mut dyn Write) -> Capture;
    /// Once per turn (timeouts).
    fn poll(&mut self, turn: &mut Turn<'_>, out: &mut dyn Write) -> Capture;
}

/// Where the kernel reads console bytes from (the UART, or a test's script).
pub type ByteInput = Box<dyn FnMut() -> Option<u8>>;

/// The board's random number generator, shared by the services that need
/// fresh nonces.
pub type SharedEntropy = Rc<RefCell<Box<dyn EntropySource>>>;

/// Most output a remote console keeps for a client that does not read it;
/// older text goes first.
pub const REMOTE_OUTPUT_MAX: usize = 64 * 1024;

/// A shell session carried by a service instead of the serial port (a
/// network console): the bytes typed into it, its own line editor, and the
/// output (echo, answers, the node's log lines) waiting to be carried back.
#[derive(Debug, Default)]
pub struct RemoteConsole {
    input: Vec<u8>,
    output: String,
    editor: LineEditor,
    closed: bool,
    /// Output dropped because the client did not read it.
    dropped: u64,
}

impl RemoteConsole {
    /// Queues bytes typed by the session's user.
    pub fn push_input(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
    }

    fn take_input(&mut self) -> Vec<u8> {
        core::mem::take(&mut self.input)
    }

    /// Appends `text` to the output, dropping the oldest text beyond
    /// [`REMOTE_OUTPUT_MAX`].
    fn write(&mut self, text: &str) {
        self.output.push_str(text);
        if self.output.len() > REMOTE_OUTPUT_MAX {
            let mut cut = self.output.len() - REMOTE_OUTPUT_MAX;
            while !self.output.is_char_boundary(cut) {
                cut += 1;
            }
            self.output.drain(..cut);
            self.dropped += cut as u64;
        }
    }

    /// The output produced since the last call.
    pub fn take_output(&mut self) -> String {
        core::mem::take(&mut self.output)
    }

    /// Bytes of output dropped because they were not taken in time.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Ends the session: the kernel forgets it at its next turn.
    pub fn close(&mut self) {
        self.closed = true;
    }
}

/// A remote console as its carrier and the kernel share it.
pub type SharedConsole = Rc<RefCell<RemoteConsole>>;

/// The open remote consoles (a cheap handle: clones share the list).
#[derive(Clone, Debug, Default)]
pub struct RemoteConsoles(Rc<RefCell<Vec<SharedConsole>>>);

impl RemoteConsoles {
    /// Opens a session whose output starts with `greeting` and the prompt.
    pub fn open(&self, greeting: &str) -> SharedConsole {
        let console = Rc::new(RefCell::new(RemoteConsole::default()));
        console
            .borrow_mut()
            .write(&alloc::format!("{greeting}\r\n{}", shell::PROMPT));
        self.0.borrow_mut().push(console.clone());
        console
    }

    /// How many sessions are open.
    pub fn len(&self) -> usize {
        self.0
            .borrow()
            .iter()
            .filter(|c| !c.borrow().closed)
            .count()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets the closed sessions; the open ones.
    fn take_open(&self) -> Vec<SharedConsole> {
        let mut list = self.0.borrow_mut();
        list.retain(|c| !c.borrow().closed);
        list.clone()
    }

    /// Shows log `lines` on every session, on lines of their own, then the
    /// prompt and what its user was typing.
    fn notify(&self, lines: &str) {
        for console in self.take_open() {
            let mut console = console.borrow_mut();
            let text = alloc::format!("\r\n{lines}{}{}", shell::PROMPT, console.editor.pending());
            console.write(&text);
        }
    }
}

/// The running kernel: the board, the services, the shell's commands and
/// the event log.
pub struct Kernel {
    board: &'static dyn Board,
    entropy: Option<SharedEntropy>,
    services: Vec<Box<dyn Service>>,
    commands: Vec<Command>,
    events: EventLog,
    /// Sequence number of the last event shown on the console.
    shown: u64,
    halt_requested: Option<u8>,
    input: ByteInput,
    editor: LineEditor,
    capture: Option<Box<dyn ConsoleCapture>>,
    boot_commands: Vec<String>,
    remotes: RemoteConsoles,
    /// A service awaited a peer on the last turn: the next one is short.
    awaiting_peer: bool,
}

impl Kernel {
    /// A kernel on `board` reading the console, with the built-in shell
    /// commands and no service.
    pub fn new(board: &'static dyn Board) -> Self {
        Self {
            board,
            entropy: None,
            services: Vec::new(),
            commands: shell::builtin_commands(),
            events: EventLog::new(),
            shown: 0,
            halt_requested: None,
            input: Box::new(console::read_byte),
            editor: LineEditor::new(),
            capture: None,
            boot_commands: Vec::new(),
            remotes: RemoteConsoles::default(),
            awaiting_peer: false,
        }
    }

    /// Where services open shell sessions of their own (the control
    /// service's network consoles); the run loop serves them every turn.
    pub fn remote_consoles(&self) -> RemoteConsoles {
        self.remotes.clone()
    }

    /// Replaces the console input (tests feed scripted bytes).
    pub fn set_input(&mut self, input: ByteInput) {
        self.input = input;
    }

    /// The board the kernel runs on.
    pub fn board(&self) -> &'static dyn Board {
        self.board
    }

    /// Gives the kernel the board's random number generator.
    pub fn set_entropy(&mut self, entropy: Box<dyn EntropySource>) {
        self.entropy = Some(Rc::new(RefCell::new(entropy)));
    }

    /// The board's random number generator, if it has one.
    pub fn entropy(&self) -> Option<&SharedEntropy> {
        self.entropy.as_ref()
    }

    /// Adds a service to the run loop.
    pub fn add_service(&mut self, service: Box<dyn Service>) {
        self.services.push(service);
    }

    /// Adds a shell command; a later command with the same name wins.
    pub fn add_command(&mut self, command: Command) {
        self.commands.retain(|c| c.name != command.name);
        self.commands.push(command);
    }

    /// The shell's commands, in registration order.
    pub fn commands(&self) -> &[Command] {
        &self.commands
    }

    /// The node's event log.
    pub fn events(&self) -> &EventLog {
        &self.events
    }

    /// Reports `event` (a shell command's doing) as happened now.
    pub fn publish(&mut self, event: NodeEvent) {
        let now = self.board.clock().now_ns();
        self.events.publish(now, event);
    }

    /// Runs `f` with a turn at the current time (for a shell command that
    /// drives a service and reports events).
    pub fn with_turn<R>(&mut self, f: impl FnOnce(&mut Turn<'_>) -> R) -> R {
        let now_ns = self.board.clock().now_ns();
        f(&mut Turn {
            now_ns,
            deadline_ns: now_ns,
            events: &mut self.events,
        })
    }

    /// Hands the console to `capture` until it releases it (called by a
    /// command; the capture starts with the next byte).
    pub fn capture_console(&mut self, capture: Box<dyn ConsoleCapture>) {
        self.capture = Some(capture);
    }

    /// Whether a command holds the console.
    pub fn console_captured(&self) -> bool {
        self.capture.is_some()
    }

    /// Asks the run loop to halt the machine with `code` once the current
    /// command has finished.
    pub fn request_halt(&mut self, code: u8) {
        self.halt_requested = Some(code);
    }

    /// The exit code of a requested halt, if one is pending.
    pub fn halt_requested(&self) -> Option<u8> {
        self.halt_requested
    }

    /// Sets the shell commands [`Kernel::run`] runs after the banner: the
    /// `;`-separated commands of `script` (blank ones skipped).
    pub fn set_boot_commands(&mut self, script: &str) {
        self.boot_commands = script
            .split(';')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect();
    }

    /// Runs the boot commands, each announced as `boot: <command>` (a key's
    /// digits are never shown).
    pub fn run_boot_commands(&mut self, out: &mut dyn Write) {
        for line in core::mem::take(&mut self.boot_commands) {
            let shown = match line.split_once(' ') {
                Some(("key", _)) => "key ***",
                _ => line.as_str(),
            };
            let _ = write!(out, "boot: {shown}\r\n");
            self.execute(&line, out);
        }
    }

    /// Runs one shell line, writing its answer to `out`.
    pub fn execute(&mut self, line: &str, out: &mut dyn Write) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some((&name, args)) = words.split_first() else {
            return;
        };
        let Some(command) = self.commands.iter().find(|c| c.name == name) else {
            let _ = writeln!(out, "error: unknown command '{name}' (try 'help')\r");
            return;
        };
        let run = command.run.clone();
        if let Err(message) = run(self, args, out) {
            let _ = writeln!(out, "error: {name}: {message}\r");
        }
    }

    /// Polls every service once, then writes the events published since the
    /// last call to `out`, one line each; returns whether any service had work.
    pub fn poll_services(&mut self, out: &mut dyn Write) -> bool {
        let now_ns = self.board.clock().now_ns();
        let turn_ns = if self.capture.is_some() {
            CAPTURED_TURN_NS
        } else if self.awaiting_peer {
            PEER_TURN_NS
        } else {
            TURN_NS
        };
        let mut turn = Turn {
            now_ns,
            deadline_ns: now_ns + turn_ns,
            events: &mut self.events,
        };
        let mut busy = false;
        self.awaiting_peer = false;
        for service in &mut self.services {
            match service.poll(&mut turn) {
                ServiceStatus::Busy => busy = true,
                ServiceStatus::AwaitingPeer => {
                    busy = true;
                    self.awaiting_peer = true;
                }
                ServiceStatus::Idle => {}
            }
        }
        self.show_events(out);
        busy
    }

    /// Writes the events not shown yet to `out`, and to every remote
    /// console (each line interrupts its prompt as on the serial console).
    fn show_events(&mut self, out: &mut dyn Write) {
        let (records, _) = self.events.after(self.shown);
        let mut lines = String::new();
        for record in records {
            if let Some(line) = events::render(&record.event) {
                let _ = write!(lines, "{line}\r\n");
            }
            self.shown = record.seq;
        }
        if !lines.is_empty() {
            let _ = out.write_str(&lines);
            self.remotes.notify(&lines);
        }
    }

    /// Runs the lines typed on the remote consoles; whether any had input.
    fn serve_remote_consoles(&mut self) -> bool {
        let mut busy = false;
        for console in self.remotes.take_open() {
            let input = console.borrow_mut().take_input();
            busy |= !input.is_empty();
            for byte in input {
                let mut echo = String::new();
                let line = console.borrow_mut().editor.feed(byte, &mut echo);
                let mut answer = echo;
                if let Some(line) = line {
                    let capturing = self.capture.is_some();
                    self.execute(&line, &mut answer);
                    if !capturing && self.capture.is_some() {
                        // A command that takes the console over (the serial
                        // `receive`) needs the serial port itself.
                        self.capture = None;
                        let _ =
                            answer.write_str("error: this command needs the serial console\r\n");
                    }
                    if self.halt_requested.is_none() {
                        answer.push_str(shell::PROMPT);
                    }
                }
                console.borrow_mut().write(&answer);
            }
        }
        busy
    }

    /// One turn of the run loop: typed bytes to the shell or to the command
    /// holding the console, then the services; the shell's prompt comes back
    /// after the lines the turn printed. Returns whether anything had work.
    pub fn turn(&mut self, out: &mut dyn Write) -> bool {
        let mut busy = false;
        while self.halt_requested.is_none() {
            let Some(byte) = (self.input)() else {
                break;
            };
            busy = true;
            if self.capture.is_some() {
                self.feed_capture(Some(byte), out);
                if self.capture.is_none() {
                    // The shell takes the console from the next turn on.
                    break;
                }
            } else if let Some(line) = self.editor.feed(byte, out) {
                self.execute(&line, out);
                if self.capture.is_none() && self.halt_requested.is_none() {
                    let _ = out.write_str(shell::PROMPT);
                }
            }
        }
        if self.capture.is_some() {
            busy |= self.feed_capture(None, out);
        }
        if self.halt_requested.is_none() {
            busy |= self.serve_remote_consoles();
        }
        let mut notices = String::new();
        busy |= self.poll_services(&mut notices);
        if !notices.is_empty() {
            if self.capture.is_some() {
                let _ = out.write_str(&notices);
            } else {
                // Notices (a task finished) interrupt the prompt: they get a
                // line of their own, then the prompt and the typing come back.
                let _ = write!(
                    out,
                    "\r\n{notices}{}{}",
                    shell::PROMPT,
                    self.editor.pending()
                );
            }
        }
        busy
    }

    /// Gives the command holding the console `byte` (or its turn's poll when
    /// `None`); gives the console back when it is done. Returns whether the
    /// node must not sleep.
    fn feed_capture(&mut self, byte: Option<u8>, out: &mut dyn Write) -> bool {
        let Some(mut capture) = self.capture.take() else {
            return false;
        };
        let now_ns = self.board.clock().now_ns();
        let mut turn = Turn {
            now_ns,
            deadline_ns: now_ns + CAPTURED_TURN_NS,
            events: &mut self.events,
        };
        let wanted = match byte {
            Some(byte) => capture.byte(byte, &mut turn, out),
            None => capture.poll(&mut turn, out),
        };
        match wanted {
            Capture::Release => {
                self.show_events(out);
                let _ = out.write_str(shell::PROMPT);
                false
            }
            Capture::Hold => {
                self.capture = Some(capture);
                false
            }
            Capture::Spin => {
                self.capture = Some(capture);
                true
            }
        }
    }

    /// Prints the banner, runs the boot commands and the run loop until a
    /// halt.
    pub fn run(&mut self) -> ! {
        let mut out = ConsoleWriter;
        let _ = write!(out, "{}\r\n", crate::banner(&self.board.facts()));
        self.run_boot_commands(&mut out);
        self.board.before_first_prompt();
        let _ = write!(out, "type 'help' for commands\r\n{}", shell::PROMPT);
        loop {
            let busy = self.turn(&mut out);
            if let Some(code) = self.halt_requested {
                self.board.halt(code);
            }
            if !busy {
                self.board.wait_for_interrupt();
            }
        }
    }
}

impl fmt::Debug for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.services.iter().map(|s| s.name()).collect();
        f.debug_struct("Kernel")
            .field("board", &self.board.facts().board)
            .field("services", &names)
            .finish()
    }
}

/// Formats nanoseconds as seconds with millisecond precision.
pub fn format_seconds(ns: u64) -> String {
    alloc::format!("{}.{:03} s", ns / 1_000_000_000, (ns / 1_000_000) % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeBoard;

    #[test]
    fn boot_commands_run_in_order_and_hide_a_key() {
        let mut kernel = crate::testing::kernel(FakeBoard::leak());
        kernel.set_boot_commands(" run is S ;; key 00ff ; ps;");
        let mut out = String::new();
        kernel.run_boot_commands(&mut out);
        assert!(
            out.starts_with("boot: run is S\r\ntask 1 (is S) started\r\n"),
            "{out}"
        );
        assert!(out.contains("boot: key ***\r\n"), "{out}");
        assert!(!out.contains("00ff"), "{out}");
        assert!(out.contains("boot: ps\r\n"), "{out}");
        assert!(out.contains("   1  is S "), "{out}");
        // They run once.
        let mut again = String::new();
        kernel.run_boot_commands(&mut again);
        assert_eq!(again, "");
    }

    /// Holds the console for three bytes, echoing them in brackets.
    struct ThreeBytes(usize);

    impl ConsoleCapture for ThreeBytes {
        fn byte(&mut self, byte: u8, _: &mut Turn<'_>, out: &mut dyn Write) -> Capture {
            let _ = write!(out, "[{}]", char::from(byte));
            self.0 += 1;
            if self.0 == 3 {
                Capture::Release
            } else {
                Capture::Spin
            }
        }
        fn poll(&mut self, _: &mut Turn<'_>, _: &mut dyn Write) -> Capture {
            Capture::Hold
        }
    }

    #[test]
    fn remote_consoles_have_their_own_editor_and_see_the_log() {
        let mut kernel = crate::testing::kernel(FakeBoard::leak());
        kernel.add_command(Command::new("grab", "", "hold the console", |k, _, _| {
            k.capture_console(Box::new(ThreeBytes(0)));
            Ok(())
        }));
        kernel.set_input(Box::new(|| None));
        let consoles = kernel.remote_consoles();
        let one = consoles.open("hello one");
        let two = consoles.open("hello two");
        assert_eq!(one.borrow_mut().take_output(), "hello one\r\ntern> ");
        two.borrow_mut().take_output();
        // Half a line on one, a whole command on the other.
        one.borrow_mut().push_input(b"me");
        two.borrow_mut().push_input(b"run ep S\r");
        let mut serial = String::new();
        kernel.turn(&mut serial);
        assert_eq!(one.borrow_mut().take_output(), "me");
        assert_eq!(
            two.borrow_mut().take_output(),
            "run ep S\r\ntask 1 (ep S) started\r\ntern> "
        );
        one.borrow_mut().push_input(b"m\r");
        kernel.turn(&mut serial);
        assert!(one.borrow_mut().take_output().starts_with("m\r\nheap: "));
        // A command that needs the serial port is refused remotely.
        two.borrow_mut().push_input(b"grab\r");
        kernel.turn(&mut serial);
        assert!(two
            .borrow_mut()
            .take_output()
            .contains("error: this command needs the serial console"));
        assert!(!kernel.console_captured());
        // Log lines interrupt every prompt, and the typing comes back.
        one.borrow_mut().push_input(b"he");
        kernel.turn(&mut serial);
        one.borrow_mut().take_output();
        for _ in 0..100_000 {
            kernel.turn(&mut serial);
            if serial.contains("VERIFICATION") {
                break;
            }
        }
        let shown = one.borrow_mut().take_output();
        assert!(shown.starts_with("\r\ntask 1 (ep S): "), "{shown}");
        assert!(shown.ends_with("tern> he"), "{shown}");
        assert!(two.borrow_mut().take_output().contains("task 1 (ep S): "));
        // Closed sessions are forgotten.
        one.borrow_mut().close();
        assert_eq!(consoles.len(), 1);
    }

    /// Records each turn's length; awaits a peer on the turns `awaiting` says.
    struct TurnProbe {
        lengths: Rc<RefCell<Vec<u64>>>,
        awaiting: Vec<bool>,
    }

    impl Service for TurnProbe {
        fn name(&self) -> &'static str {
            "probe"
        }
        fn poll(&mut self, turn: &mut Turn<'_>) -> ServiceStatus {
            let mut lengths = self.lengths.borrow_mut();
            lengths.push(turn.deadline_ns - turn.now_ns);
            if self.awaiting.get(lengths.len() - 1) == Some(&true) {
                ServiceStatus::AwaitingPeer
            } else {
                ServiceStatus::Idle
            }
        }
    }

    #[test]
    fn a_service_awaiting_a_peer_gets_short_turns_until_it_no_longer_does() {
        let mut kernel = Kernel::new(FakeBoard::leak());
        let lengths = Rc::new(RefCell::new(Vec::new()));
        kernel.add_service(Box::new(TurnProbe {
            lengths: lengths.clone(),
            awaiting: vec![false, true, true, false, false],
        }));
        let mut out = String::new();
        let busy: Vec<bool> = (0..5).map(|_| kernel.poll_services(&mut out)).collect();
        assert_eq!(busy, [false, true, true, false, false]);
        assert_eq!(
            *lengths.borrow(),
            [TURN_NS, TURN_NS, PEER_TURN_NS, PEER_TURN_NS, TURN_NS]
        );
    }

    #[test]
    fn a_captured_console_gets_the_bytes_while_services_run_then_the_shell_again() {
        let mut kernel = Kernel::new(FakeBoard::leak());
        kernel.add_command(Command::new("grab", "", "hold the console", |k, _, _| {
            k.capture_console(Box::new(ThreeBytes(0)));
            Ok(())
        }));
        let mut input = b"grab\rabcmem\r".to_vec().into_iter();
        kernel.set_input(Box::new(move || input.next()));
        let mut out = String::new();
        kernel.turn(&mut out);
        assert!(out.ends_with("grab\r\n[a][b][c]tern> "), "{out}");
        // The shell has the console again from the next turn on.
        kernel.turn(&mut out);
        assert!(out.contains("mem\r\nheap: "), "{out}");
        assert!(!kernel.console_captured());
    }
}
