//! Moving a task between nodes through the serial console.
//!
//! `checkpoint <id>` captures a task at a migration point into a checkpoint
//! (format v1) and prints it as `TERN-CKPT` lines; `receive` reads such lines
//! from the console, with the flow control of
//! [`tern_migration::serial_transfer`], verifies the checkpoint and resumes
//! the task here. The host's `console` tool saves and sends the lines.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::Write;

use alloc::boxed::Box;
use tern_hal::{Board, BoardFacts};
use tern_migration::serial_transfer::{self, Decoder, Received, Reply, MAX_LINE, PREFIX};
use tern_migration::{read_checkpoint, write_checkpoint, HeaderInfo, Limits, Mode, Snapshot, Task};
use tern_workloads::{identify, registry, Class, Workload};

use crate::kernel::Kernel;
use crate::shell::{Command, CommandResult};
use crate::tasks::{parse_id, TaskEntry, TaskState};

/// `receive` gives up after this long without a byte.
pub const RECEIVE_TIMEOUT_NS: u64 = 30_000_000_000;

/// While bytes came this recently, `receive` polls the UART without
/// sleeping: some boards' UARTs (the Pi's PL011 here) raise no receive
/// interrupt, and a 16-byte FIFO would overflow while the CPU waits for the
/// next timer tick. After the ACK the sender's next line comes within this.
const SPIN_NS: u64 = 1_000_000_000;

/// Ctrl-C: leaves receive mode at once.
const CANCEL: u8 = 0x03;

/// The migration commands: `checkpoint`, `receive`.
pub fn commands() -> [Command; 2] {
    [
        Command {
            name: "checkpoint",
            usage: "<id>",
            help: "pause a task and print its checkpoint as TERN-CKPT lines",
            run: checkpoint,
        },
        Command {
            name: "receive",
            usage: "",
            help: "read a checkpoint as TERN-CKPT lines and resume its task",
            run: receive,
        },
    ]
}

/// Bytes the heap can still hand out.
pub(crate) fn free_heap(board: &dyn Board) -> u64 {
    let stats = board.heap_stats();
    stats.total_bytes.saturating_sub(stats.used_bytes)
}

/// Writes a full checkpoint of `entry` at `epoch`. Tasks are only stepped
/// between polls, so whenever this runs the task is at a migration point.
pub(crate) fn capture(
    entry: &TaskEntry,
    epoch: u64,
    facts: &BoardFacts,
) -> Result<Vec<u8>, String> {
    let id = entry.id;
    let mut snap = Snapshot::new();
    entry
        .task
        .save(&mut snap)
        .map_err(|e| format!("capturing task {id}: {e}"))?;
    // The boards have no wall clock: creation time 0 means "unknown".
    let info = HeaderInfo::for_task(&*entry.task, epoch, 0, facts.isa.name(), facts.board);
    let mut bytes = Vec::new();
    write_checkpoint(&mut bytes, &info, &snap, Mode::Full)
        .map_err(|e| format!("writing the checkpoint of task {id}: {e}"))?;
    Ok(bytes)
}

/// A task rebuilt from a checkpoint, ready to be added to the task table.
pub(crate) struct Resumed {
    /// Its workload.
    pub workload: Workload,
    /// Its class.
    pub class: Class,
    /// The task, at the checkpoint's progress.
    pub task: Box<dyn Task>,
    /// `isa/board` of the node that wrote the checkpoint.
    pub from: String,
    /// The checkpoint's epoch.
    pub epoch: u64,
}

/// Validates `bytes` completely and rebuilds its task (a workload known here).
pub(crate) fn resume(bytes: &[u8], limits: &Limits) -> Result<Resumed, String> {
    let restored = read_checkpoint(bytes, limits).map_err(|e| format!("bad checkpoint: {e}"))?;
    let (workload, class) =
        identify(&restored).ok_or("the checkpoint holds no NPB workload known here")?;
    let from = format!("{}/{}", restored.header.isa, restored.header.board);
    let epoch = restored.header.epoch;
    let task = registry()
        .load(restored)
        .map_err(|e| format!("cannot resume: {e}"))?;
    Ok(Resumed {
        workload,
        class,
        task,
        from,
        epoch,
    })
}

fn checkpoint(kernel: &mut Kernel, args: &[&str], out: &mut dyn Write) -> CommandResult {
    let id = parse_id(args, "checkpoint <id>")?;
    let facts = kernel.board().facts();
    let mut tasks = kernel.tasks().borrow_mut();
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
    // migration point now; it stays there until `cont` or `kill`.
    entry.state = TaskState::Paused;
    let progress = entry.task.progress();
    let bytes = capture(entry, entry.epoch, &facts)?;
    let name = format!(
        "{}-{}-{:.1}",
        entry.workload.name(),
        entry.class.letter(),
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

fn receive(kernel: &mut Kernel, args: &[&str], out: &mut dyn Write) -> CommandResult {
    if !args.is_empty() {
        return Err("usage: receive".into());
    }
    let _ = writeln!(out, "{}\r", Reply::Ready);
    // Every failure is the one ERROR line: the sender waits for it.
    if let Err(message) = receive_and_resume(kernel, out) {
        let _ = writeln!(out, "{}\r", Reply::Error(message));
    }
    Ok(())
}

fn receive_and_resume(kernel: &mut Kernel, out: &mut dyn Write) -> Result<(), String> {
    // The received bytes and the decoded state are in memory together.
    let Received { name, bytes } = receive_lines(kernel, free_heap(kernel.board()) / 2, out)?;
    let limits = Limits {
        max_total_bytes: free_heap(kernel.board()),
    };
    let Resumed {
        workload,
        class,
        task,
        from,
        epoch,
    } = resume(&bytes, &limits)?;
    drop(bytes);
    let percent = task.progress().percent();
    let id = kernel
        .tasks()
        .borrow_mut()
        .add(workload, class, task, None, epoch.saturating_add(1));
    let _ = writeln!(out, "{}\r", Reply::Done(name));
    let _ = writeln!(
        out,
        "task {id} ({} {}) resumed at {percent:.1}% from {from}\r",
        workload.name(),
        class.letter()
    );
    Ok(())
}

/// Reads console lines (no echo) into the decoder, acknowledging each
/// protocol line, until a checkpoint is complete, an error, or the timeout.
fn receive_lines(
    kernel: &mut Kernel,
    max_bytes: u64,
    out: &mut dyn Write,
) -> Result<Received, String> {
    let board = kernel.board();
    let mut decoder = Decoder::new(max_bytes);
    let mut line = Vec::new();
    let mut last_byte_ns = board.clock().now_ns();
    loop {
        let Some(byte) = kernel.read_byte() else {
            let quiet_ns = board.clock().now_ns().saturating_sub(last_byte_ns);
            if quiet_ns > RECEIVE_TIMEOUT_NS {
                return Err("timeout".into());
            }
            if quiet_ns < SPIN_NS {
                core::hint::spin_loop();
            } else {
                board.wait_for_interrupt();
            }
            continue;
        };
        last_byte_ns = board.clock().now_ns();
        match byte {
            CANCEL => return Err("cancelled".into()),
            b'\r' | b'\n' => {
                if line.is_empty() {
                    continue;
                }
                let text = core::str::from_utf8(&line).map_err(|_| "a line is not text")?;
                if let Some(received) = decoder.feed_line(text).map_err(|e| e.to_string())? {
                    return Ok(received);
                }
                if let (true, Some(next)) = (text.starts_with(PREFIX), decoder.next_offset()) {
                    let _ = writeln!(out, "{}\r", Reply::Ack(next));
                }
                line.clear();
            }
            _ if line.len() >= MAX_LINE => {
                return Err(format!("line longer than {MAX_LINE} bytes"));
            }
            _ => line.push(byte),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{exec, run_tasks, FakeBoard};
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
        let mut kernel = Kernel::new(board);
        let mut bytes = Vec::new();
        for l in lines {
            bytes.extend_from_slice(l.as_bytes());
            bytes.extend_from_slice(b"\r\n");
        }
        let mut input = bytes.into_iter();
        kernel.set_input(std::boxed::Box::new(move || input.next()));
        kernel
    }

    /// A PC kernel with `is S` paused at 50% and its checkpoint's lines.
    fn pc_checkpoint() -> (Kernel, String) {
        let mut pc = Kernel::new(FakeBoard::leak_with(Isa::X86_64, "pc", 64 << 20));
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
        let answer = exec(&mut pi, "receive");
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
        let tail: Vec<&str> = answer.lines().rev().take(2).collect();
        assert_eq!(tail[1], std::format!("TERN-CKPT DONE {}", received.name));
        assert!(
            tail[0].starts_with("task 1 (is S) resumed at 50.")
                && tail[0].ends_with("% from x86_64/pc"),
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
        exec(&mut pi, "receive");
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
        let answer = exec(&mut pi, "receive");
        assert!(answer.starts_with("TERN-CKPT READY\r\n"), "{answer}");
        assert_eq!(exec(&mut pi, "ps"), "no tasks\r\n");
        String::from(answer.lines().last().unwrap())
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
        let answer = exec(&mut pi, "receive");
        assert!(answer.contains("TERN-CKPT DONE is-S-50."), "{answer}");
        // No ACK for the foreign line.
        assert_eq!(answer.matches(" ACK ").count(), lines.len() - 3);
    }

    #[test]
    fn checkpoint_needs_a_live_task() {
        let mut kernel = Kernel::new(FakeBoard::leak());
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
