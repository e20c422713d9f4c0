//! The kernel object and its run loop.
//!
//! The run loop is deliberately simple and cooperative: each turn it feeds
//! typed bytes to the shell, then polls every registered [`Service`] once
//! (the network stack, task runners and sync sessions of later layers plug in
//! here), and when nothing had work it sleeps until the next interrupt.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::Cell;
use core::fmt::{self, Write};

use critical_section::Mutex;
use tern_hal::Board;

use crate::console::{self, ConsoleWriter};
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

/// Whether a service found work on its last poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceStatus {
    /// It did something; poll again soon.
    Busy,
    /// Nothing to do until an interrupt or a timeout.
    Idle,
}

/// Something the run loop polls: a driver, a protocol, a task runner.
pub trait Service {
    /// Short name, shown by diagnostics.
    fn name(&self) -> &'static str;
    /// Makes whatever progress is possible without blocking.
    fn poll(&mut self, now_ns: u64) -> ServiceStatus;
}

/// The running kernel: the board, the services and the shell's commands.
pub struct Kernel {
    board: &'static dyn Board,
    services: Vec<Box<dyn Service>>,
    commands: Vec<Command>,
    halt_requested: Option<u8>,
}

impl Kernel {
    /// A kernel on `board` with the built-in shell commands.
    pub fn new(board: &'static dyn Board) -> Self {
        Self {
            board,
            services: Vec::new(),
            commands: shell::builtin_commands(),
            halt_requested: None,
        }
    }

    /// The board the kernel runs on.
    pub fn board(&self) -> &'static dyn Board {
        self.board
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

    /// Asks the run loop to halt the machine with `code` once the current
    /// command has finished.
    pub fn request_halt(&mut self, code: u8) {
        self.halt_requested = Some(code);
    }

    /// The exit code of a requested halt, if one is pending.
    pub fn halt_requested(&self) -> Option<u8> {
        self.halt_requested
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
        let run = command.run;
        if let Err(message) = run(self, args, out) {
            let _ = writeln!(out, "error: {name}: {message}\r");
        }
    }

    /// Prints the banner and runs the run loop until a halt.
    pub fn run(&mut self) -> ! {
        let mut out = ConsoleWriter;
        let _ = write!(out, "{}\r\n", crate::banner(&self.board.facts()));
        let _ = write!(out, "type 'help' for commands\r\n{}", shell::PROMPT);
        let mut editor = LineEditor::new();
        loop {
            let mut busy = false;
            while let Some(byte) = console::read_byte() {
                busy = true;
                if let Some(line) = editor.feed(byte, &mut out) {
                    self.execute(&line, &mut out);
                    if let Some(code) = self.halt_requested {
                        self.board.halt(code);
                    }
                    let _ = out.write_str(shell::PROMPT);
                }
            }
            let now = self.board.clock().now_ns();
            for service in &mut self.services {
                busy |= service.poll(now) == ServiceStatus::Busy;
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
