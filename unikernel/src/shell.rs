//! The serial shell: line editing and the command table.
//!
//! Commands are closures registered in a table ([`Command`]): each
//! subsystem (tasks, network, control) adds its own with
//! [`Kernel::add_command`], capturing the state it owns, without touching
//! this module.

use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use crate::kernel::{format_seconds, Kernel};

/// The prompt printed before each command line.
pub const PROMPT: &str = "tern> ";

/// Longest accepted command line, in bytes; longer input is discarded.
pub const MAX_LINE: usize = 256;

/// What a command prints when it fails (after `error: <name>: `).
pub type CommandResult = Result<(), String>;

/// A command's implementation: gets the kernel, the arguments after the
/// name and the output.
pub type CommandFn = dyn Fn(&mut Kernel, &[&str], &mut dyn Write) -> CommandResult;

/// A shell command.
#[derive(Clone)]
pub struct Command {
    /// The word that invokes it.
    pub name: &'static str,
    /// Arguments, as shown by `help`.
    pub usage: String,
    /// One-line description, as shown by `help`.
    pub help: &'static str,
    /// The implementation.
    pub run: Rc<CommandFn>,
}

impl Command {
    /// The command `name` taking `usage`, described by `help`, running `run`.
    pub fn new(
        name: &'static str,
        usage: &str,
        help: &'static str,
        run: impl Fn(&mut Kernel, &[&str], &mut dyn Write) -> CommandResult + 'static,
    ) -> Self {
        Self {
            name,
            usage: usage.into(),
            help,
            run: Rc::new(run),
        }
    }
}

impl core::fmt::Debug for Command {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Command").field("name", &self.name).finish()
    }
}

/// Collects typed bytes into lines, echoing them and handling backspace.
#[derive(Debug, Default)]
pub struct LineEditor {
    /// Printable ASCII only, so a `String` byte for byte.
    line: String,
    overflowed: bool,
    last_was_cr: bool,
}

impl LineEditor {
    /// An empty editor.
    pub fn new() -> Self {
        Self::default()
    }

    /// What has been typed of the current line so far.
    pub fn pending(&self) -> &str {
        &self.line
    }

    /// Feeds one typed byte; returns the finished line on Enter.
    ///
    /// CR, LF and CR LF all end a line. Non-printable bytes other than
    /// backspace are ignored; a line longer than [`MAX_LINE`] is rejected
    /// with a message when it ends.
    pub fn feed(&mut self, byte: u8, echo: &mut dyn Write) -> Option<String> {
        let after_cr = core::mem::replace(&mut self.last_was_cr, byte == b'\r');
        match byte {
            b'\n' if after_cr => None,
            b'\r' | b'\n' => {
                let _ = echo.write_str("\r\n");
                let line = core::mem::take(&mut self.line);
                if core::mem::take(&mut self.overflowed) {
                    let _ = write!(echo, "error: line longer than {MAX_LINE} bytes\r\n");
                    return Some(String::new());
                }
                Some(line)
            }
            0x08 | 0x7f => {
                if self.line.pop().is_some() {
                    let _ = echo.write_str("\x08 \x08");
                }
                None
            }
            0x20..=0x7e => {
                if self.line.len() < MAX_LINE {
                    // The argument of `key` is the cluster's secret: it is
                    // never echoed.
                    let shown = if self.line.starts_with("key ") {
                        '*'
                    } else {
                        char::from(byte)
                    };
                    self.line.push(char::from(byte));
                    let _ = echo.write_char(shown);
                } else {
                    self.overflowed = true;
                }
                None
            }
            _ => None,
        }
    }
}

/// The commands every node has.
pub fn builtin_commands() -> Vec<Command> {
    alloc::vec![
        Command::new("help", "", "list commands", help),
        Command::new(
            "info",
            "",
            "board, ISA, memory, timer, uptime and identity",
            info
        ),
        Command::new("mem", "", "heap usage", mem),
        Command::new("halt", "[code]", "stop the machine (QEMU exits)", halt),
    ]
}

fn help(kernel: &mut Kernel, _: &[&str], out: &mut dyn Write) -> CommandResult {
    for command in kernel.commands() {
        let _ = writeln!(
            out,
            "  {:<24} {}\r",
            alloc::format!("{} {}", command.name, command.usage),
            command.help
        );
    }
    Ok(())
}

fn info(kernel: &mut Kernel, _: &[&str], out: &mut dyn Write) -> CommandResult {
    let board = kernel.board();
    let facts = board.facts();
    let _ = writeln!(out, "board: {}\r", facts.board);
    let _ = writeln!(out, "isa: {}\r", facts.isa);
    let _ = writeln!(out, "model: {}\r", facts.model);
    let _ = writeln!(
        out,
        "memory: {} MiB ({} bytes)\r",
        facts.memory_bytes >> 20,
        facts.memory_bytes
    );
    let _ = writeln!(out, "timer: {} Hz\r", facts.timer_hz);
    if let Some(hz) = facts.cpu_clock_hz {
        let _ = writeln!(out, "cpu clock: {} MHz\r", hz / 1_000_000);
    }
    let _ = writeln!(out, "uptime: {}\r", format_seconds(board.clock().now_ns()));
    let _ = writeln!(out, "timer interrupts: {}\r", board.timer_interrupts());
    if let Some(serial) = facts.serial_number {
        let _ = writeln!(out, "serial: {serial:016x}\r");
    }
    if let Some(mac) = facts.mac_address {
        let _ = writeln!(
            out,
            "mac: {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}\r",
            mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]
        );
    }
    Ok(())
}

fn mem(kernel: &mut Kernel, _: &[&str], out: &mut dyn Write) -> CommandResult {
    let stats = kernel.board().heap_stats();
    let _ = writeln!(
        out,
        "heap: {} KiB used of {} KiB ({} bytes free)\r",
        stats.used_bytes >> 10,
        stats.total_bytes >> 10,
        stats.total_bytes.saturating_sub(stats.used_bytes)
    );
    Ok(())
}

fn halt(kernel: &mut Kernel, args: &[&str], out: &mut dyn Write) -> CommandResult {
    let code = match args {
        [] => 0,
        [code] => code
            .parse::<u8>()
            .map_err(|_| alloc::format!("'{code}' is not an exit code (0-255)"))?,
        _ => return Err("usage: halt [code]".into()),
    };
    let _ = writeln!(out, "halting with code {code}\r");
    kernel.request_halt(code);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeBoard;
    use std::string::ToString;

    fn run(line: &str) -> (Kernel, String) {
        let mut kernel = Kernel::new(FakeBoard::leak());
        let mut out = String::new();
        kernel.execute(line, &mut out);
        (kernel, out)
    }

    #[test]
    fn info_reports_every_fact() {
        let (_, out) = run("info");
        for expected in [
            "board: rpi4",
            "isa: aarch64",
            "memory: 1024 MiB",
            "timer: 54000000 Hz",
            "cpu clock: 1500 MHz",
            "uptime: 2.500 s",
            "timer interrupts: 7",
            "serial: 000010000000abcd",
            "mac: dc:a6:32:01:02:03",
        ] {
            assert!(out.contains(expected), "missing {expected:?} in {out:?}");
        }
    }

    #[test]
    fn unknown_command_is_a_one_line_error() {
        let (_, out) = run("frobnicate now");
        assert_eq!(out, "error: unknown command 'frobnicate' (try 'help')\r\n");
    }

    #[test]
    fn help_lists_every_command() {
        let (kernel, out) = run("help");
        for command in kernel.commands() {
            assert!(out.contains(command.name));
        }
    }

    #[test]
    fn mem_reports_heap_usage() {
        let (_, out) = run("mem");
        assert!(out.contains("heap: 1024 KiB used of 65536 KiB"), "{out}");
    }

    #[test]
    fn halt_requests_exit_code_and_rejects_garbage() {
        let (kernel, _) = run("halt 3");
        assert_eq!(kernel.halt_requested(), Some(3));
        let (kernel, out) = run("halt 300");
        assert_eq!(kernel.halt_requested(), None);
        assert!(
            out.starts_with("error: halt: '300' is not an exit code"),
            "{out}"
        );
    }

    #[test]
    fn added_command_replaces_same_name() {
        fn hello(_: &mut Kernel, args: &[&str], out: &mut dyn Write) -> CommandResult {
            let _ = write!(out, "hello {}", args.join(","));
            Ok(())
        }
        let mut kernel = Kernel::new(FakeBoard::leak());
        kernel.add_command(Command::new("info", "", "", hello));
        let mut out = String::new();
        kernel.execute("info a b", &mut out);
        assert_eq!(out, "hello a,b");
    }

    fn feed_all(editor: &mut LineEditor, bytes: &[u8]) -> (Vec<String>, String) {
        let mut echo = String::new();
        let lines = bytes
            .iter()
            .filter_map(|&b| editor.feed(b, &mut echo))
            .collect();
        (lines, echo)
    }

    #[test]
    fn editor_handles_backspace_and_line_endings() {
        let mut editor = LineEditor::new();
        let (_, echo) = feed_all(&mut editor, b"inff\x7fo");
        assert_eq!(editor.pending(), "info");
        assert!(echo.starts_with("inff\x08 \x08o"));
        let (lines, echo) = feed_all(&mut editor, b"\r\nmem\nhelp\r");
        assert_eq!(editor.pending(), "");
        assert_eq!(lines, ["info", "mem", "help"]);
        assert!(echo.starts_with("\r\nmem\r\n"));
    }

    #[test]
    fn editor_does_not_echo_a_key() {
        let mut editor = LineEditor::new();
        let (lines, echo) = feed_all(&mut editor, b"key 00ff\r");
        assert_eq!(lines, ["key 00ff"]);
        assert_eq!(echo, "key ****\r\n");
    }

    #[test]
    fn editor_rejects_overlong_lines_and_control_bytes() {
        let mut editor = LineEditor::new();
        let mut input = std::vec![b'a'; MAX_LINE + 10];
        input.push(b'\r');
        let (lines, echo) = feed_all(&mut editor, &input);
        assert_eq!(lines, [""]);
        assert!(echo.contains("error: line longer than"));
        let (lines, _) = feed_all(&mut editor, b"\x01\x1bin\x00fo\r");
        assert_eq!(lines, ["info".to_string()]);
    }
}
