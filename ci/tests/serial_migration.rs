//! Serial migration: an NPB task started on the PC kernel (QEMU q35) is
//! paused at 50%, checkpointed as TERN-CKPT lines on its serial console,
//! caught and saved with the console library, checked with `inspect`, sent
//! to the raspi4b kernel's `receive`, and finishes there with NPB's own
//! verification. Damaged checkpoints are refused with one line and the node
//! keeps serving (and then takes the real one).

use std::ops::ControlFlow;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tern_ci::host_tool;
use tern_console::transfer::{self, Caught, CheckpointCatcher, Received, SendError, SendEvent};
use tern_console::{Event, StreamDecoder};
use tern_flash::qemu::halt_status;
use tern_flash::Board;
use tern_lab::node::{tern_prompt, Node, BOOT_TIMEOUT, REPLY_TIMEOUT};

/// Time for a class S task to reach its pause point, or to finish, under
/// TCG on a loaded 2-core machine (the PC kernel computes in soft float).
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

/// Time for a checkpoint's lines to come out of the serial port.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(300);

/// A booted node at its first prompt.
fn boot(board: Board) -> Node {
    let mut node = Node::boot(board).unwrap();
    node.expect(tern_prompt(), BOOT_TIMEOUT).unwrap();
    node
}

/// The columns of task `id`'s row in `ps`'s answer: id, task, class,
/// progress, state, epoch, global id.
fn ps_row(ps: &str, id: u32) -> Option<Vec<&str>> {
    ps.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|fields| fields.len() == 7 && fields[0] == id.to_string())
}

/// Halts `node` with code 0 and checks QEMU's exit status.
fn halt(mut node: Node) {
    let board = node.board();
    node.send_line("halt 0").unwrap();
    node.expect("halting with code 0", REPLY_TIMEOUT).unwrap();
    assert_eq!(
        node.wait_exit(REPLY_TIMEOUT).unwrap(),
        halt_status(board, 0)
    );
}

/// Starts `workload` class S as task 1 on `node`, pauses it at `pause_at`
/// percent, checkpoints it and returns the checkpoint caught from the
/// serial output.
fn checkpoint_task(node: &mut Node, workload: &str, pause_at: u32) -> Received {
    let board = node.board().name();
    let label = format!("task 1 ({workload} S)");
    let started = node
        .command(&format!("run {workload} S --pause-at {pause_at}"))
        .unwrap();
    assert!(started.contains(&format!("{label} started")), "{started}");
    let since = Instant::now();
    node.expect(&format!("{label} paused at "), RUN_TIMEOUT)
        .unwrap();
    eprintln!("{workload} S paused on {board} after {:?}", since.elapsed());

    let ps = node.command("ps").unwrap();
    let row = ps_row(&ps, 1).unwrap_or_else(|| panic!("task 1 missing from ps:\n{ps}"));
    assert!(row[1] == workload && row[4] == "paused", "{ps}");
    let percent: f64 = row[3]
        .strip_suffix('%')
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no progress in {row:?}"));
    let pause_at = f64::from(pause_at);
    assert!((pause_at..pause_at + 10.0).contains(&percent), "{ps}");

    // The answer is read up to the next prompt ("tern> " cannot occur in
    // base64), then its text goes through the console's catcher.
    let since = Instant::now();
    node.send_line("checkpoint 1").unwrap();
    node.expect("checkpoint 1\r\n", REPLY_TIMEOUT).unwrap();
    let answer = node
        .expect(&format!("\r\n{}", tern_prompt()), TRANSFER_TIMEOUT)
        .unwrap();
    let mut decoder = StreamDecoder::without_table();
    let mut catcher = CheckpointCatcher::new();
    let (mut text, mut caught) = (Vec::new(), None);
    for event in decoder.feed(answer.as_bytes()) {
        let Event::Text(bytes) = event else { continue };
        for piece in catcher.push(&bytes) {
            match piece {
                Caught::Text(t) => text.extend(t),
                Caught::Checkpoint(checkpoint) => caught = Some(checkpoint),
                Caught::Failed(error) => panic!("transfer from {board} broken: {error}"),
                Caught::Started { .. } | Caught::Progress { .. } | Caught::Reply(_) => {}
            }
        }
    }
    let text = String::from_utf8_lossy(&text);
    let checkpoint = caught.unwrap_or_else(|| panic!("no checkpoint caught; text:\n{text}"));
    eprintln!(
        "checkpoint {} ({} bytes) came out of {board} in {:?}",
        checkpoint.name,
        checkpoint.bytes.len(),
        since.elapsed()
    );
    assert!(
        text.contains(&format!(
            "{label} paused at {percent:.1}%: checkpoint of {} bytes follows",
            checkpoint.bytes.len()
        )),
        "{text}"
    );
    assert_eq!(checkpoint.name, format!("{workload}-S-{percent:.1}"));
    checkpoint
}

/// Runs `inspect` with `args`; returns whether it succeeded, and its output.
fn inspect(args: &[&str]) -> (bool, String) {
    let tool = host_tool("tern-inspect", "inspect").unwrap();
    let output = Command::new(tool).args(args).output().unwrap();
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// Checks a saved checkpoint file with `inspect verify` and `show --json`.
fn check_with_inspect(path: &Path, workload: &str) {
    let file = path.to_str().unwrap();
    let (ok, out) = inspect(&["verify", file]);
    assert!(ok, "inspect verify failed:\n{out}");
    let (ok, out) = inspect(&["show", file, "--json"]);
    assert!(ok, "inspect show failed:\n{out}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["ok"], true, "{json}");
    assert_eq!(json["source"]["isa"], "x86_64", "{json}");
    assert_eq!(json["source"]["board"], "pc", "{json}");
    let kind = json["task"]["kind"].as_str().unwrap_or_default();
    assert!(kind.contains(workload), "task kind {kind:?}");
}

/// Sends `bytes` to `node`'s `receive` with the console library; returns
/// the result and the node's text shown meanwhile.
fn send(node: &mut Node, name: &str, bytes: &[u8]) -> (Result<String, SendError>, String) {
    let mut decoder = StreamDecoder::without_table();
    let mut shown = Vec::new();
    let mut tenths = 0;
    let since = Instant::now();
    let result = transfer::send_checkpoint(
        &mut node.link(),
        &mut decoder,
        name,
        bytes,
        REPLY_TIMEOUT,
        |event| {
            match event {
                SendEvent::Output(Event::Text(text)) => shown.extend(text),
                // A trace of the pace, every tenth of the bytes.
                SendEvent::Progress { sent, total } if sent * 10 / total.max(1) > tenths => {
                    tenths = sent * 10 / total.max(1);
                    eprintln!("  {name}: {sent}/{total} bytes after {:?}", since.elapsed());
                }
                _ => {}
            }
            ControlFlow::Continue(())
        },
    );
    eprintln!(
        "sending {name} ({} bytes) took {:?}: {result:?}",
        bytes.len(),
        since.elapsed()
    );
    (result, String::from_utf8_lossy(&shown).into_owned())
}

/// Waits for `pattern` in what the sender already passed on (`shown`) or,
/// failing that, in the node's further output; it may straddle the two (the
/// sender stops reading mid-line once it has the node's verdict).
fn expect_after(node: &mut Node, shown: &str, pattern: &str, timeout: Duration) {
    if shown.contains(pattern) {
        return;
    }
    let carried = (1..pattern.len())
        .rev()
        .find(|&k| shown.ends_with(&pattern[..k]))
        .unwrap_or(0);
    node.expect(&pattern[carried..], timeout).unwrap();
}

/// The whole migration of `workload` class S from the PC to the Pi.
fn migrates_from_pc_to_pi(workload: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut pc = boot(Board::Pc);
    let checkpoint = checkpoint_task(&mut pc, workload, 50);
    halt(pc);

    let path = transfer::save_checkpoint(dir.path(), &checkpoint).unwrap();
    check_with_inspect(&path, workload);

    let bytes = std::fs::read(&path).unwrap();
    let mut pi = boot(Board::Rpi4);
    let (result, shown) = send(&mut pi, &transfer::transfer_name(&path), &bytes);
    assert_eq!(result.unwrap(), checkpoint.name, "shown:\n{shown}");
    let percent = checkpoint.name.rsplit('-').next().unwrap();
    expect_after(
        &mut pi,
        &shown,
        &format!("task 1 ({workload} S) resumed at {percent}% from x86_64/pc"),
        REPLY_TIMEOUT,
    );
    let since = Instant::now();
    let verdict = pi
        .expect(
            &format!("task 1 ({workload} S): VERIFICATION "),
            RUN_TIMEOUT,
        )
        .unwrap();
    pi.expect("\r\n", REPLY_TIMEOUT).unwrap();
    let ps = pi.command("ps").unwrap();
    assert!(
        ps_row(&ps, 1).is_some_and(|row| row[4] == "verified"),
        "the resumed task did not verify on the Pi ({verdict:?}):\n{ps}"
    );
    eprintln!(
        "{workload} S finished on the Pi {:?} after resuming",
        since.elapsed()
    );
    halt(pi);
}

#[test]
fn is_migrates_from_pc_to_pi_and_verifies() {
    migrates_from_pc_to_pi("is");
}

#[test]
fn cg_migrates_from_pc_to_pi_and_verifies() {
    migrates_from_pc_to_pi("cg");
}

/// Damaged copies of a real checkpoint are refused with one line, no task
/// starts, and the shell goes on answering (and still takes a good one).
///
/// The bytes are changed before sending, so the line protocol's SHA-256
/// covers the damage and only the checkpoint's own integrity checks, in the
/// kernel, can tell. The checkpoint is a small one (EP keeps its state in a
/// few sums) taken on the Pi itself, where EP runs in hardware floating
/// point.
#[test]
fn damaged_checkpoint_is_refused_and_the_node_keeps_serving() {
    let mut pi = boot(Board::Rpi4);
    let checkpoint = checkpoint_task(&mut pi, "ep", 1);
    assert!(pi
        .command("kill 1")
        .unwrap()
        .contains("task 1 (ep S) killed"));
    // One byte in the header, one in the middle, one in the last bytes.
    let len = checkpoint.bytes.len();
    for at in [20, len / 2, len - 3] {
        let mut bytes = checkpoint.bytes.clone();
        bytes[at] ^= 0x10;
        let (result, shown) = send(&mut pi, "damaged", &bytes);
        let error = result.unwrap_err();
        let SendError::Refused(message) = &error else {
            panic!("expected a refusal, got {error}; shown:\n{shown}");
        };
        assert!(message.starts_with("bad checkpoint: "), "{error}");
        eprintln!("byte {at} of {len} flipped: refused with {message:?}");
        expect_after(&mut pi, &shown, tern_prompt(), REPLY_TIMEOUT);
        let ps = pi.command("ps").unwrap();
        assert!(ps.lines().all(|l| !l.contains("running")), "{ps}");
        let info = pi.command("info").unwrap();
        assert!(info.contains("board: rpi4"), "{info}");
    }
    let (result, shown) = send(&mut pi, "good", &checkpoint.bytes);
    assert_eq!(result.unwrap(), "good", "{shown}");
    expect_after(&mut pi, &shown, "task 2 (ep S) resumed at ", REPLY_TIMEOUT);
    assert!(pi
        .command("kill 2")
        .unwrap()
        .contains("task 2 (ep S) killed"));
    halt(pi);
}
