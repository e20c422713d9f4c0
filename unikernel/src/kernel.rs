//! The kernel object and its run loop.
//!
//! The run loop is deliberately simple and cooperative: each turn it feeds
//! typed bytes to the shell, then polls every registered [`Service`] once
//! (the task runner, and the network stack and sync sessions of later layers
//! plug in here), and when nothing had work it sleeps until the next
//! interrupt.

use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::fmt::{self, Write};

use critical_section::Mutex;
use tern_hal::{Board, EntropySource, NetDevice};

use crate::console::{self, ConsoleWriter};
use crate::control::{node_id_from_mac, Control, ControlService};
use crate::net::{NetService, NetStack};
use crate::shell::{self, Command, LineEditor};
use crate::tasks::{TaskRunner, TaskTable};

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
    /// Makes whatever progress is possible without blocking; messages for
    /// the user (a task finished) go to `out`, the console.
    fn poll(&mut self, now_ns: u64, out: &mut dyn Write) -> ServiceStatus;
}

/// Where the kernel reads console bytes from (the UART, or a test's script).
pub type ByteInput = Box<dyn FnMut() -> Option<u8>>;

/// The running kernel: the board, the services, the shell's commands and the
/// task table they share.
pub struct Kernel {
    board: &'static dyn Board,
    services: Vec<Box<dyn Service>>,
    commands: Vec<Command>,
    halt_requested: Option<u8>,
    tasks: Rc<RefCell<TaskTable>>,
    net: Option<Rc<RefCell<NetStack>>>,
    control: Option<Rc<RefCell<Control>>>,
    entropy: Option<SharedEntropy>,
    input: ByteInput,
    boot_commands: Vec<String>,
}

/// The board's random number generator, shared by the services that need
/// fresh nonces.
pub type SharedEntropy = Rc<RefCell<Box<dyn EntropySource>>>;

impl Kernel {
    /// A kernel on `board` reading the console, with the built-in shell
    /// commands, the task commands and the task runner.
    pub fn new(board: &'static dyn Board) -> Self {
        let node_id = board.facts().mac_address.map_or(0, node_id_from_mac);
        let tasks = Rc::new(RefCell::new(TaskTable::new(node_id)));
        let mut commands = shell::builtin_commands();
        commands.extend(crate::tasks::commands());
        commands.extend(crate::migrate::commands());
        Self {
            board,
            services: alloc::vec![
                Box::new(TaskRunner::new(tasks.clone(), board.clock())) as Box<dyn Service>
            ],
            commands,
            halt_requested: None,
            tasks,
            net: None,
            control: None,
            entropy: None,
            input: Box::new(console::read_byte),
            boot_commands: Vec::new(),
        }
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

    /// Replaces the console input (tests feed scripted bytes).
    pub fn set_input(&mut self, input: ByteInput) {
        self.input = input;
    }

    /// The next console byte, if one is waiting. Commands that take over the
    /// console (`receive`) read through this.
    pub fn read_byte(&mut self) -> Option<u8> {
        (self.input)()
    }

    /// The task table, shared with the task runner.
    pub fn tasks(&self) -> &Rc<RefCell<TaskTable>> {
        &self.tasks
    }

    /// Gives the kernel a network device: adds the network stack's service,
    /// the control service (migration, port 4470) and their commands. The
    /// device's MAC becomes the node's identity.
    pub fn attach_net(&mut self, device: Box<dyn NetDevice>) {
        let banner = crate::banner(&self.board.facts());
        let now = self.board.clock().now_ns();
        let stack = Rc::new(RefCell::new(NetStack::new(device, now, banner)));
        self.tasks
            .borrow_mut()
            .set_node_id(node_id_from_mac(stack.borrow().mac_address()));
        let control = Rc::new(RefCell::new(Control::new(
            self.board,
            stack.clone(),
            self.tasks.clone(),
            self.entropy.clone(),
        )));
        self.services.push(Box::new(NetService::new(stack.clone())));
        self.services
            .push(Box::new(ControlService::new(control.clone())));
        for command in crate::net::commands() {
            self.add_command(command);
        }
        for command in crate::control::commands() {
            self.add_command(command);
        }
        self.net = Some(stack);
        self.control = Some(control);
    }

    /// Gives the kernel the board's random number generator.
    pub fn attach_entropy(&mut self, entropy: Box<dyn EntropySource>) {
        let entropy = Rc::new(RefCell::new(entropy));
        if let Some(control) = &self.control {
            control.borrow_mut().set_entropy(entropy.clone());
        }
        self.entropy = Some(entropy);
    }

    /// The control service (migration), if the board has a network device.
    pub fn control(&self) -> Option<&Rc<RefCell<Control>>> {
        self.control.as_ref()
    }

    /// The board's random number generator, if it has one.
    pub fn entropy(&self) -> Option<&SharedEntropy> {
        self.entropy.as_ref()
    }

    /// The network stack, if the board has a network device.
    pub fn net(&self) -> Option<&Rc<RefCell<NetStack>>> {
        self.net.as_ref()
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

    /// Polls every service once; returns whether any had work.
    pub fn poll_services(&mut self, out: &mut dyn Write) -> bool {
        let now = self.board.clock().now_ns();
        let mut busy = false;
        for service in &mut self.services {
            busy |= service.poll(now, out) == ServiceStatus::Busy;
        }
        busy
    }

    /// Prints the banner and runs the run loop until a halt.
    pub fn run(&mut self) -> ! {
        let mut out = ConsoleWriter;
        let _ = write!(out, "{}\r\n", crate::banner(&self.board.facts()));
        self.run_boot_commands(&mut out);
        let _ = write!(out, "type 'help' for commands\r\n{}", shell::PROMPT);
        let mut editor = LineEditor::new();
        loop {
            let mut busy = false;
            while let Some(byte) = self.read_byte() {
                busy = true;
                if let Some(line) = editor.feed(byte, &mut out) {
                    self.execute(&line, &mut out);
                    if let Some(code) = self.halt_requested {
                        self.board.halt(code);
                    }
                    let _ = out.write_str(shell::PROMPT);
                }
            }
            let mut notices = String::new();
            busy |= self.poll_services(&mut notices);
            if !notices.is_empty() {
                // Notices (a task finished) interrupt the prompt: they get a
                // line of their own, then the prompt and the typing come back.
                let _ = write!(out, "\r\n{notices}{}{}", shell::PROMPT, editor.pending());
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
        let mut kernel = Kernel::new(FakeBoard::leak());
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
        assert!(out.contains("   1  is    S"), "{out}");
        // They run once.
        let mut again = String::new();
        kernel.run_boot_commands(&mut again);
        assert_eq!(again, "");
    }
}
