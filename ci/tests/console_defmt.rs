//! System test of the console's defmt decoding: each board's real kernel
//! boots in QEMU, its raw serial bytes go through `tern_console`'s
//! `StreamDecoder` with the kernel's own ELF, and the board's boot log must
//! come out decoded, with a timestamp, while the shell text around it stays
//! intact.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use tern_console::deframe::FrameError;
use tern_console::{Event, StreamDecoder};
use tern_flash::{Board, Variant};
use tern_lab::node::{Node, BOOT_TIMEOUT, REPLY_TIMEOUT};

/// Tern's version, as the kernels print it in their banner.
const VERSION: &str = env!("CARGO_PKG_VERSION");

#[test]
fn virt_boot_log_is_decoded_between_intact_shell_text() {
    // boards/aarch64/src/board.rs, `log_boot`.
    boot_log_is_decoded(
        Board::Virt,
        "virt: RAM 0x40000000..0x80000000, image ends at 0x",
        &[", heap ", " KiB"],
    );
}

#[test]
fn rpi4_boot_log_is_decoded_between_intact_shell_text() {
    // boards/aarch64/src/board.rs, `log_boot`.
    boot_log_is_decoded(
        Board::Rpi4,
        "rpi4: RAM 0x",
        &["..0x", ", image ends at 0x", ", heap ", " KiB"],
    );
}

#[test]
fn pc_boot_log_is_decoded_between_intact_shell_text() {
    // boards/pc/src/main.rs, `log_boot_summary`.
    boot_log_is_decoded(
        Board::Pc,
        "booted via PVH: ",
        &[" MiB usable RAM in ", " ranges, heap ", " MiB, TSC ", " Hz"],
    );
}

/// Boots `board`, types `halt` at the prompt, decodes everything the node
/// sent, and checks the INFO log starting with `log_start` and containing
/// `log_parts`, and the shell text.
fn boot_log_is_decoded(board: Board, log_start: &str, log_parts: &[&str]) {
    let elf = tern_lab::node::kernel(board, Variant::Tern).unwrap();
    let mut decoder = StreamDecoder::new(&std::fs::read(&elf).unwrap()).unwrap();
    let mut node = Node::boot(board).unwrap();

    let wanted = format!(" INFO ] {log_start}");
    let mut seen = Decoded::default();
    // Boards log their boot before the first prompt, so that no frame
    // lands inside the first command typed.
    seen.read(&mut node, &mut decoder, BOOT_TIMEOUT, |seen| {
        seen.text_contains(tern_lab::node::tern_prompt())
    });
    assert!(
        seen.logs.iter().any(|l| l.contains(&wanted)),
        "no {wanted:?} before the first prompt: {:?}",
        seen.logs
    );
    node.send_line("halt").unwrap();
    seen.read(&mut node, &mut decoder, REPLY_TIMEOUT, |seen| {
        seen.text_contains("halting with code 0\r\n")
    });
    // Everything up to QEMU's exit.
    seen.read(&mut node, &mut decoder, REPLY_TIMEOUT, |_| false);
    node.wait_exit(REPLY_TIMEOUT).unwrap();

    let text = String::from_utf8_lossy(&seen.text).into_owned();
    // The shell text is whole: banner and prompt in order, the echoed
    // command and its answer right after, and not one frame byte leaked
    // into it (frames carry control bytes; the shell sends only \r\n).
    let banner = format!(
        "Tern {VERSION} on {} ({})\r\ntype 'help' for commands\r\ntern> ",
        board.name(),
        board.isa()
    );
    let at = text
        .find(&banner)
        .unwrap_or_else(|| panic!("banner and prompt not intact in {text:?}"));
    assert!(
        text[at..].contains("tern> halt\r\nhalting with code 0\r\n"),
        "echo and answer of `halt` not intact in {text:?}"
    );
    assert!(
        !text
            .chars()
            .any(|c| c.is_control() && c != '\r' && c != '\n'),
        "control bytes in the shell text: {text:?}"
    );

    let log = seen
        .logs
        .iter()
        .find(|l| l.contains(&wanted))
        .expect("seen before halt");
    for part in log_parts {
        assert!(log.contains(part), "{part:?} missing in {log:?}");
    }
    assert_timestamped(log);
    assert_eq!(decoder.errors().dropped(), 0, "frames dropped");
    assert_eq!(decoder.errors().resyncs, 0, "decoder fell out of step");

    // With the same table, a malformed frame (the rzCOBS symbol 0x80
    // promises seven more bytes, one follows) is dropped and counted, and the
    // text after it still comes through.
    assert_eq!(
        decoder.feed(b"\x00\x01\x80\x00ok"),
        [
            Event::Dropped(FrameError::Undecodable { len: 2 }),
            Event::Text(b"ok".to_vec())
        ]
    );
    assert_eq!(decoder.errors().undecodable, 1);
}

/// Checks `[   1.234567 INFO ] ...`: seconds with six decimals, right-aligned
/// in 11 columns.
fn assert_timestamped(log: &str) {
    let stamp = log
        .strip_prefix('[')
        .and_then(|l| l.get(..11))
        .unwrap_or_else(|| panic!("no timestamp in {log:?}"));
    let (seconds, micros) = stamp
        .trim_start()
        .split_once('.')
        .unwrap_or_else(|| panic!("no timestamp in {log:?}"));
    assert!(
        !seconds.is_empty()
            && seconds.bytes().all(|b| b.is_ascii_digit())
            && micros.len() == 6
            && micros.bytes().all(|b| b.is_ascii_digit()),
        "bad timestamp in {log:?}"
    );
}

/// What the decoder made of the serial stream so far.
#[derive(Default)]
struct Decoded {
    text: Vec<u8>,
    logs: Vec<String>,
}

impl Decoded {
    /// Reads the node's raw serial bytes into the decoder until `done` says
    /// so, for at most `timeout`; returns when the stream ends, which only
    /// the last read expects.
    fn read(
        &mut self,
        node: &mut Node,
        decoder: &mut StreamDecoder,
        timeout: Duration,
        done: impl Fn(&Self) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        let mut buffer = [0u8; 4096];
        let mut link = node.link();
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "timed out; text {:?}, logs {:#?} (no logs at all with intact text: \
                 the build's defmt filter drops `info`; the workspace's \
                 .cargo/config.toml defaults DEFMT_LOG to info)",
                String::from_utf8_lossy(&self.text),
                self.logs
            );
            match link.read(&mut buffer) {
                Ok(0) => return,
                Ok(n) => self.take(decoder.feed(&buffer[..n])),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
                Err(e) => panic!("serial read: {e}"),
            }
        }
    }

    fn text_contains(&self, want: &str) -> bool {
        String::from_utf8_lossy(&self.text).contains(want)
    }

    fn take(&mut self, events: Vec<Event>) {
        for event in events {
            match event {
                Event::Text(text) => self.text.extend(text),
                Event::Log(line) => self.logs.push(line),
                other => panic!("unexpected event {other:?}"),
            }
        }
    }
}
