//! Moving a task between nodes through the serial console.
//!
//! `checkpoint <id>` captures a task at a migration point into a checkpoint
//! (format v1) and prints it as `TERN-CKPT` lines; `receive` takes the
//! console ([`ConsoleCapture`]) and reads such lines with the flow control
//! of [`tern_migration::serial_transfer`], then verifies the checkpoint and
//! resumes the task here. The run loop goes on meanwhile: leases, syncs and
//! tasks are served during a transfer. The host's `console` tool saves and
//! sends the lines.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::Write;

use tern_hal::Board;
use tern_migration::serial_transfer::{self, Decoder, Received, Reply, MAX_LINE, PREFIX};
use tern_migration::Limits;
use tern_protocol::NodeEvent;

use crate::kernel::{Capture, ConsoleCapture, Kernel, Turn};
use crate::shell::{Command, CommandResult};
use crate::tasks::{free_heap, parse_id, SharedTasks, TaskState};

/// `receive` gives up after this long without a byte.
pub const RECEIVE_TIMEOUT_NS: u64 = 30_000_000_000;

/// While bytes came this recently, `receive` keeps the node from sleeping:
/// some boards' UARTs (the Pi's PL011 here) raise no receive interrupt, and
/// a 16-byte FIFO would overflow while the CPU waits for the next timer
/// tick. After the ACK the sender's next line comes within this.
const SPIN_NS: u64 = 1_000_000_000;

/// Ctrl-C: leaves receive mode at once.
const CANCEL: u8 = 0x03;

/// The serial migration commands on the task table `tasks`: `checkpoint`,
/// `receive`.
pub fn commands(tasks: &SharedTasks) -> Vec<Command> {
    let (checkpoint_tasks, receive_tasks) = (tasks.clone(), tasks.clone());
    alloc::vec![
        Command::new(
            "checkpoint",
            "<id>",
            "pause a task and print its checkpoint as TERN-CKPT lines",
            move |k, args, out| checkpoint(&checkpoint_tasks, k, args, out)
        ),
        Command::new(
            "receive",
            "",
            "read a checkpoint as TERN-CKPT lines and resume its task",
            move |k, args, out| receive(&receive_tasks, k, args, out)
        ),
    ]
}

fn checkpoint(
    tasks: &SharedTasks,
    kernel: &mut Kernel,
    args: &[&str],
    out: &mut dyn Write,
) -> CommandResult {
    let id = parse_id(args, "checkpoint <id>")?;
    let facts = kernel.board().facts();
    let mut tasks = tasks.borrow_mut();
    let entry = tasks.get_mut(id).ok_or_else(|| format!("no task {id}"))?;
    if let TaskState::Finished { .. } = entry.state {
        return Err(format!(
            "task {id} has finished; there is nothing to migrate"
        ));
    }
    if entry.state == TaskState::Migrating {
        return Err(format!("task {id} is migrating over the network"));
    }
    // The runner steps tasks between commands, so the task is at a
    // migration point now (unless its last step has not ended: the runner
    // ends it while the task is paused); it stays there until `cont` or
    // `kill`.
    entry.state = TaskState::Paused;
    if !entry.at_migration_point() {
        return Err(format!(
            "task {id} paused, but its step has not ended yet: run checkpoint {id} again"
        ));
    }
    let progress = entry.task.progress();
    let bytes = entry.checkpoint_file(entry.epoch, &facts)?;
    let name = format!(
        "{}-{:.1}",
        serial_transfer::sanitize_name(&entry.name.replace(' ', "-")),
        progress.percent()
    );
    let _ = writeln!(
        out,
        "{} paused at {:.1}%: checkpoint of {} bytes follows\r",
        entry.label(),
        progress.percent(),
        bytes.len()
    );
    for line in serial_transfer::encode(&name, &bytes) {
        let _ = writeln!(out, "{line}\r");
    }
    Ok(())
}

fn receive(
    tasks: &SharedTasks,
    kernel: &mut Kernel,
    args: &[&str],
    out: &mut dyn Write,
) -> CommandResult {
    if !args.is_empty() {
        return Err("usage: receive".into());
    }
    let board = kernel.board();
    let _ = writeln!(out, "{}\r", Reply::Ready);
    kernel.capture_console(Box::new(Receive {
        tasks: tasks.clone(),
        board,
        // The received bytes and the decoded state are in memory together.
        decoder: Decoder::new(free_heap(board) / 2),
        line: Vec::new(),
        last_byte_ns: board.clock().now_ns(),
    }));
    Ok(())
}

/// `receive` holding the console: protocol lines (not echoed) into the
/// decoder, each acknowledged, until a checkpoint is complete, an error, or
/// the timeout. Every failure is the one ERROR line the sender waits for.
struct Receive {
    tasks: SharedTasks,
    board: &'static dyn Board,
    decoder: Decoder,
    line: Vec<u8>,
    last_byte_ns: u64,
}

impl Receive {
    /// Takes one byte; the checkpoint's name once it is complete and resumed.
    fn take(
        &mut self,
        byte: u8,
        turn: &mut Turn<'_>,
        out: &mut dyn Write,
    ) -> Result<Option<String>, String> {
        match byte {
            CANCEL => Err("cancelled".into()),
            b'\r' | b'\n' => {
                if self.line.is_empty() {
                    return Ok(None);
                }
                let line = core::mem::take(&mut self.line);
                let text = core::str::from_utf8(&line).map_err(|_| "a line is not text")?;
                if let Some(received) = self.decoder.feed_line(text).map_err(|e| e.to_string())? {
                    return self.resume(received, turn).map(Some);
                }
                if let (true, Some(next)) = (text.starts_with(PREFIX), self.decoder.next_offset()) {
                    let _ = writeln!(out, "{}\r", Reply::Ack(next));
                }
                Ok(None)
            }
            _ if self.line.len() >= MAX_LINE => Err(format!("line longer than {MAX_LINE} bytes")),
            _ => {
                self.line.push(byte);
                Ok(None)
            }
        }
    }

    /// Resumes the received checkpoint's task here, at the next epoch.
    fn resume(&mut self, received: Received, turn: &mut Turn<'_>) -> Result<String, String> {
        let Received { name, bytes } = received;
        let limits = Limits {
            max_total_bytes: free_heap(self.board),
        };
        let mut tasks = self.tasks.borrow_mut();
        let resumed = tasks.resume(&bytes, &limits).map_err(|e| e.to_string())?;
        drop(bytes);
        let progress = resumed.task.task.progress();
        let epoch = resumed.epoch.saturating_add(1);
        let id = tasks.add(resumed.task, None, epoch, resumed.tag);
        let entry = tasks.get_mut(id).ok_or("the task vanished")?;
        turn.publish(NodeEvent::TaskArrived {
            task: entry.task_ref(),
            epoch,
            progress: progress.done,
            progress_total: progress.total,
            from: resumed.from,
        });
        Ok(name)
    }
}

impl ConsoleCapture for Receive {
    fn byte(&mut self, byte: u8, turn: &mut Turn<'_>, out: &mut dyn Write) -> Capture {
        self.last_byte_ns = turn.now_ns;
        match self.take(byte, turn, out) {
            Ok(None) => Capture::Spin,
            Ok(Some(name)) => {
                let _ = writeln!(out, "{}\r", Reply::Done(name));
                Capture::Release
            }
            Err(message) => {
                let _ = writeln!(out, "{}\r", Reply::Error(message));
                Capture::Release
            }
        }
    }

    fn poll(&mut self, turn: &mut Turn<'_>, out: &mut dyn Write) -> Capture {
        let quiet_ns = turn.now_ns.saturating_sub(self.last_byte_ns);
        if quiet_ns > RECEIVE_TIMEOUT_NS {
            let _ = writeln!(out, "{}\r", Reply::Error("timeout".into()));
            Capture::Release
        } else if quiet_ns < SPIN_NS {
            Capture::Spin
        } else {
            Capture::Hold
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{exec, kernel, run_tasks, FakeBoard};
    use crate::Kernel;
    use std::string::String;
    use std::vec::Vec;
    use tern_hal::Isa;
    use tern_migration::serial_transfer::{self, Decoder};
    use tern_migration::{read_checkpoint, Limits};

    const MAX_POLLS: usize = 1_000_000;

    /// The TERN-CKPT lines of a `checkpoint` answer.
    fn protocol_lines(out: &str) -> Vec<String> {
        out.lines()
            .map(|l| l.trim_end_matches('\r'))
            .filter(|l| l.starts_with("TERN-CKPT "))
            .map(String::from)
            .collect()
    }

    /// A kernel whose console input is `lines`, each ended by CR LF.
    fn receiver(board: &'static FakeBoard, lines: &[String]) -> Kernel {
        let mut kernel = kernel(board);
        let mut bytes = Vec::new();
        for l in lines {
            bytes.extend_from_slice(l.as_bytes());
            bytes.extend_from_slice(b"\r\n");
        }
        let mut input = bytes.into_iter();
        kernel.set_input(std::boxed::Box::new(move || input.next()));
        kernel
    }

    /// Runs `receive` on `pi` until it gives the console back; everything
    /// it printed.
    fn receive(pi: &mut Kernel) -> String {
        let mut answer = exec(pi, "receive");
        for _ in 0..1_000_000 {
            if !pi.console_captured() {
                return answer;
            }
            pi.turn(&mut answer);
        }
        panic!("receive never ended: {answer}")
    }

    /// A PC kernel with `is S` paused at 50% and its checkpoint's lines.
    fn pc_checkpoint() -> (Kernel, String) {
        let mut pc = kernel(FakeBoard::leak_with(Isa::X86_64, "pc", 64 << 20));
        exec(&mut pc, "run is S --pause-at 50");
        run_tasks(&mut pc, MAX_POLLS);
        let out = exec(&mut pc, "checkpoint 1");
        (pc, out)
    }

    #[test]
    fn is_s_migrates_from_pc_to_pi_and_verifies_on_both() {
        let (mut pc, out) = pc_checkpoint();
        assert!(
            out.starts_with("task 1 (is S) paused at 50."),
            "{}",
            &out[..80]
        );
        let lines = protocol_lines(&out);
        assert!(
            lines[0].starts_with("TERN-CKPT BEGIN is-S-50."),
            "{}",
            lines[0]
        );
        // What the console tool does: decode; the bytes are a valid checkpoint.
        let mut decoder = Decoder::new(1 << 30);
        let mut received = None;
        for l in &lines {
            received = decoder.feed_line(l).unwrap();
        }
        let received = received.unwrap();
        let restored = read_checkpoint(&received.bytes[..], &Limits::default()).unwrap();
        assert_eq!(restored.header.isa, "x86_64");
        assert_eq!(restored.header.board, "pc");
        assert_eq!(restored.header.epoch, 1);

        let mut pi = receiver(FakeBoard::leak(), &lines);
        let answer = receive(&mut pi);
        let mut replies = answer.lines();
        assert_eq!(replies.next(), Some("TERN-CKPT READY"));
        // One ACK for BEGIN and one for each DATA line.
        let acks: Vec<&str> = answer.lines().filter(|l| l.contains(" ACK ")).collect();
        assert_eq!(acks.len(), lines.len() - 1);
        assert_eq!(acks[0], "TERN-CKPT ACK 0");
        assert_eq!(
            *acks.last().unwrap(),
            std::format!("TERN-CKPT ACK {}", received.bytes.len())
        );
        // The shell's prompt comes back last.
        assert!(answer.ends_with("\r\ntern> "), "{answer}");
        let tail: Vec<&str> = answer.lines().rev().skip(1).take(2).collect();
        assert_eq!(tail[1], std::format!("TERN-CKPT DONE {}", received.name));
        assert!(
            tail[0].starts_with("task 1 (is S) resumed at 50.")
                && tail[0].contains("% from x86_64/pc (task "),
            "{}",
            tail[0]
        );
        let ps = exec(&mut pi, "ps");
        assert!(ps.contains("running"), "{ps}");
        assert_eq!(
            run_tasks(&mut pi, MAX_POLLS),
            "task 1 (is S): VERIFICATION SUCCESSFUL\r\n"
        );
        // The source keeps its paused copy until told otherwise.
        assert!(exec(&mut pc, "ps").contains("paused"));
        exec(&mut pc, "cont 1");
        assert_eq!(
            run_tasks(&mut pc, MAX_POLLS),
            "task 1 (is S): VERIFICATION SUCCESSFUL\r\n"
        );
        assert_eq!(
            exec(&mut pc, "checkpoint 1"),
            "error: checkpoint: task 1 has finished; there is nothing to migrate\r\n"
        );
    }

    #[test]
    fn a_resumed_task_migrates_again_with_the_next_epoch() {
        let (_, out) = pc_checkpoint();
        let mut pi = receiver(FakeBoard::leak(), &protocol_lines(&out));
        receive(&mut pi);
        let back = exec(&mut pi, "checkpoint 1");
        let mut decoder = Decoder::new(1 << 30);
        let mut received = None;
        for l in protocol_lines(&back) {
            received = decoder.feed_line(&l).unwrap();
        }
        let restored = read_checkpoint(&received.unwrap().bytes[..], &Limits::default()).unwrap();
        assert_eq!(restored.header.epoch, 2);
        assert_eq!(restored.header.isa, "aarch64");
        assert_eq!(restored.header.board, "rpi4");
    }

    /// The last line `receive` printed, after checking nothing was resumed.
    fn receive_error(board: &'static FakeBoard, lines: &[String]) -> String {
        let mut pi = receiver(board, lines);
        let answer = receive(&mut pi);
        assert!(answer.starts_with("TERN-CKPT READY\r\n"), "{answer}");
        assert_eq!(exec(&mut pi, "ps"), "no tasks\r\n");
        String::from(answer.lines().rev().nth(1).unwrap())
    }

    #[test]
    fn bad_transfers_get_one_error_line_and_change_nothing() {
        let (_, out) = pc_checkpoint();
        let good = protocol_lines(&out);
        let board = FakeBoard::leak();

        let mut flipped = good.clone();
        let i = flipped[2].len() - 10;
        let c = if flipped[2].as_bytes()[i] == b'A' {
            "B"
        } else {
            "A"
        };
        flipped[2].replace_range(i..i + 1, c);
        assert_eq!(
            receive_error(board, &flipped),
            "TERN-CKPT ERROR SHA-256 mismatch"
        );

        let mut missing = good.clone();
        missing.remove(3);
        assert_eq!(
            receive_error(board, &missing),
            "TERN-CKPT ERROR data at offset 1152, expected offset 768"
        );

        // Intact transfer, but not a checkpoint.
        let junk: Vec<String> = serial_transfer::encode("junk", b"not a checkpoint").collect();
        assert_eq!(
            receive_error(board, &junk),
            "TERN-CKPT ERROR bad checkpoint: not a Tern checkpoint (bad magic)"
        );

        // Silence: the timeout (the fake clock advances at every reading).
        assert_eq!(receive_error(board, &[]), "TERN-CKPT ERROR timeout");

        // Ctrl-C leaves at once.
        assert_eq!(
            receive_error(board, &[String::from("\u{3}")]),
            "TERN-CKPT ERROR cancelled"
        );

        // Too large for this node's heap.
        let small = FakeBoard::leak_with(Isa::Aarch64, "rpi4", 2 << 20);
        let last = receive_error(small, &good);
        assert!(
            last.starts_with("TERN-CKPT ERROR checkpoint of ")
                && last.contains("exceeds the limit"),
            "{last}"
        );

        // An overlong line.
        assert_eq!(
            receive_error(board, &[String::from("x").repeat(700)]),
            "TERN-CKPT ERROR line longer than 600 bytes"
        );
    }

    #[test]
    fn receive_ignores_chatter_and_takes_no_arguments() {
        let (_, out) = pc_checkpoint();
        let mut lines = std::vec![String::from("hello"), String::new()];
        lines.extend(protocol_lines(&out));
        let mut pi = receiver(FakeBoard::leak(), &lines);
        assert_eq!(
            exec(&mut pi, "receive now"),
            "error: receive: usage: receive\r\n"
        );
        let answer = receive(&mut pi);
        assert!(answer.contains("TERN-CKPT DONE is-S-50."), "{answer}");
        // No ACK for the foreign line.
        assert_eq!(answer.matches(" ACK ").count(), lines.len() - 3);
    }

    #[test]
    fn checkpoint_needs_a_live_task() {
        let mut kernel = kernel(FakeBoard::leak());
        assert_eq!(
            exec(&mut kernel, "checkpoint 4"),
            "error: checkpoint: no task 4\r\n"
        );
        assert_eq!(
            exec(&mut kernel, "checkpoint"),
            "error: checkpoint: usage: checkpoint <id>\r\n"
        );
        // A running task is paused by its checkpoint.
        exec(&mut kernel, "run ep S");
        let out = exec(&mut kernel, "checkpoint 1");
        assert!(out.starts_with("task 1 (ep S) paused at 0.0%"), "{out}");
        assert!(out.contains("TERN-CKPT BEGIN ep-S-0.0 "), "{out}");
        assert!(out.ends_with("\r\n") && !out.contains('\0'));
        assert!(exec(&mut kernel, "ps").contains("paused"));
    }
}
