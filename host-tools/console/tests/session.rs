//! The `console` binary against a fake device on a TCP socket: what it shows,
//! what it forwards, how it exits and how it survives the device going away.
//! Every wait is for an event (a line shown, bytes on the device, standard
//! error closing when the console exits), bounded by [`TIMEOUT`]; none sleeps.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use tern_migration::serial_transfer;

const TIMEOUT: Duration = Duration::from_secs(10);

/// A running `console` with its output collected line by line.
struct Console {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: Vec<String>,
    /// All of standard error, sent when it closes (the console exited).
    stderr: Receiver<String>,
}

impl Console {
    fn start(port: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_console"))
            .args(["--port", port])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start console");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let mut stderr_pipe = child.stderr.take().unwrap();
        let (stderr_sender, stderr) = mpsc::channel();
        thread::spawn(move || {
            let mut text = String::new();
            // Ends at end of file: the console has exited (or closed it).
            let _ = stderr_pipe.read_to_string(&mut text);
            let _ = stderr_sender.send(text);
        });
        let (sender, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).split(b'\n') {
                let Ok(line) = line else { return };
                let line = String::from_utf8_lossy(&line)
                    .trim_end_matches('\r')
                    .to_owned();
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            stdin,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    /// Waits for an output line satisfying `want`; panics with all output
    /// seen so far when it does not come.
    fn expect_line(&mut self, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + TIMEOUT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if want(&line) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("expected line not seen; output so far: {:#?}", self.seen);
    }

    fn type_keys(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
    }

    /// Closes the console's standard input and waits until the console
    /// says it noticed: from then on the device going away ends it.
    fn close_stdin(&mut self) {
        self.stdin = None;
        self.expect_line(|l| l.starts_with("[console: input ended;"));
    }

    /// Waits for the console to exit (its standard error closes) and returns
    /// whether it succeeded and its standard error.
    fn wait(mut self) -> (bool, String) {
        let stderr = self
            .stderr
            .recv_timeout(TIMEOUT)
            .unwrap_or_else(|_| panic!("console did not exit; output: {:#?}", self.seen));
        // Standard error closed, so the process is gone or going: reap it.
        let status = self.child.wait().unwrap();
        (status.success(), stderr)
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn listen() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = format!("tcp:{}", listener.local_addr().unwrap());
    (listener, port)
}

fn accept(listener: &TcpListener) -> TcpStream {
    listener.set_nonblocking(false).unwrap();
    let (stream, _) = listener.accept().unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream
}

/// Reads from the device side until `want` has arrived.
fn read_until(device: &mut TcpStream, want: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buffer = [0u8; 256];
    while !got.windows(want.len()).any(|w| w == want) {
        let n = device.read(&mut buffer).expect("device read");
        assert!(n > 0, "console closed the link; got {got:?}");
        got.extend_from_slice(&buffer[..n]);
    }
    got
}

#[test]
fn shows_text_and_frames_forwards_keys_and_exits_on_ctrl_bracket() {
    let (listener, port) = listen();
    let mut console = Console::start(&port, &[]);
    let mut device = accept(&listener);
    console.expect_line(|l| l.starts_with("[console: connected to tcp:"));

    // A frame in the middle of a prompt line, as the kernel may send it.
    device
        .write_all(b"Tern 0.1.0 on test (x)\r\ntern> \x00\x00\x01\x88\x13\x7c\x00")
        .unwrap();
    console.expect_line(|l| l == "Tern 0.1.0 on test (x)");
    console.expect_line(|l| l == "tern> ");
    console.expect_line(|l| l == "[defmt frame, 4 bytes]");

    console.type_keys(b"help\r");
    assert!(read_until(&mut device, b"help\r").ends_with(b"help\r"));

    // Keys before Ctrl-] in the same read still go out; the rest do not.
    console.type_keys(b"me\x1dm");
    let (ok, stderr) = console.wait();
    assert!(ok, "exit status; stderr: {stderr}");
    let mut rest = Vec::new();
    device.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"me");
}

#[test]
fn text_after_a_missed_frame_start_still_shows() {
    let (listener, port) = listen();
    let mut console = Console::start(&port, &[]);
    let mut device = accept(&listener);
    console.expect_line(|l| l.starts_with("[console: connected to"));
    // The tail of a frame whose start the console never saw: its closing
    // delimiter looks like an opener, and the text after it like a frame
    // until the line goes quiet.
    device.write_all(b"\x90\x7c\x00tern> late\r\n").unwrap();
    console.expect_line(|l| l.ends_with("tern> late"));
    // In step again: a frame after it is a frame.
    device.write_all(b"\x00\x01\x88\x13\x7c\x00").unwrap();
    console.expect_line(|l| l == "[defmt frame, 4 bytes]");
    console.type_keys(b"\x1d");
    let (ok, stderr) = console.wait();
    assert!(ok, "exit status; stderr: {stderr}");
}

#[test]
fn waits_for_a_vanished_device_and_reconnects() {
    let (listener, port) = listen();
    let dir = std::env::temp_dir().join(format!("tern-console-session-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("console.log");
    let mut console = Console::start(&port, &["--log", log.to_str().unwrap()]);

    let mut device = accept(&listener);
    device.write_all(b"first boot\r\n").unwrap();
    console.expect_line(|l| l == "first boot");
    drop(device);
    console.expect_line(|l| l == format!("[console: {port} disconnected, waiting...]"));

    let mut device = accept(&listener);
    console.expect_line(|l| l == "[console: reconnected]");
    device.write_all(b"second boot\r\n").unwrap();
    console.expect_line(|l| l == "second boot");
    console.type_keys(b"info\r");
    read_until(&mut device, b"info\r");

    // With standard input over (and not a terminal), the device going away
    // ends the session.
    console.close_stdin();
    drop(device);
    let (ok, stderr) = console.wait();
    assert!(ok, "exit status; stderr: {stderr}");

    let logged = std::fs::read_to_string(&log).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let bodies: Vec<&str> = logged
        .lines()
        .map(|l| l.split_once(' ').expect("timestamp and text").1)
        .collect();
    assert_eq!(
        bodies,
        [
            format!("[console: connected to {port}; Ctrl-] exits]").as_str(),
            "first boot",
            format!("[console: {port} disconnected, waiting...]").as_str(),
            "[console: reconnected]",
            "second boot",
            format!("[console: input ended; the session ends when {port} goes away]").as_str(),
            format!("[console: {port} disconnected, waiting...]").as_str(),
        ]
    );
}

#[test]
fn absent_port_and_bad_elf_are_clear_errors() {
    let console = Console::start("/dev/tern-no-such-tty", &[]);
    let (ok, stderr) = console.wait();
    assert!(!ok);
    assert_eq!(
        stderr.trim(),
        "console: no such port: /dev/tern-no-such-tty"
    );

    let (_listener, port) = listen();
    let not_elf = std::env::temp_dir().join(format!("tern-console-not-elf-{}", std::process::id()));
    std::fs::write(&not_elf, b"not an ELF").unwrap();
    let console = Console::start(&port, &["--elf", not_elf.to_str().unwrap()]);
    let (ok, stderr) = console.wait();
    std::fs::remove_file(&not_elf).unwrap();
    assert!(!ok);
    assert!(
        stderr.contains("cannot read the defmt table"),
        "stderr: {stderr}"
    );
}

/// Writes what a kernel prints for `checkpoint 1`, with a defmt frame in the
/// middle of a DATA line.
fn print_checkpoint(device: &mut TcpStream, name: &str, bytes: &[u8]) {
    let mut out = b"tern> checkpoint 1\r\n".to_vec();
    for (i, line) in serial_transfer::encode(name, bytes).enumerate() {
        let (head, tail) = line.split_at(line.len() / 2);
        out.extend_from_slice(head.as_bytes());
        if i == 1 {
            out.extend_from_slice(b"\x00\x01\x88\x13\x7c\x00");
        }
        out.extend_from_slice(tail.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"tern> ");
    device.write_all(&out).unwrap();
}

#[test]
fn saves_a_checkpoint_the_node_prints() {
    let dir = tempfile::tempdir().unwrap();
    let (listener, port) = listen();
    let mut console = Console::start(&port, &["--save-dir", dir.path().to_str().unwrap()]);
    let mut device = accept(&listener);
    console.expect_line(|l| l.starts_with("[console: connected to"));

    let bytes: Vec<u8> = (0..2000u32).map(|i| (i * 31) as u8).collect();
    print_checkpoint(&mut device, "is-S-50.0", &bytes);
    console.expect_line(|l| l == "[console: receiving checkpoint is-S-50.0 (2000 bytes)]");
    let path = dir.path().join("is-S-50.0.tckpt");
    let saved = format!(
        "[console: checkpoint saved to {} (2000 bytes, sha256 ok)]",
        path.display()
    );
    // The progress line (overwritten with `\r`) precedes it on the terminal.
    console.expect_line(|l| l.ends_with(&saved));
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    device.write_all(b"\r\n").unwrap();
    console.expect_line(|l| l == "tern> ");
    assert!(
        console.seen.iter().all(|l| !l.contains("TERN-CKPT")),
        "transfer lines shown: {:#?}",
        console.seen
    );

    // A damaged transfer: reported, nothing saved.
    let mut lines: Vec<String> = serial_transfer::encode("broken", &bytes).collect();
    lines.remove(2);
    device
        .write_all(format!("{}\r\ntern> \r\n", lines.join("\r\n")).as_bytes())
        .unwrap();
    console.expect_line(|l| {
        l.ends_with("[console: checkpoint transfer failed: data at offset 768, expected offset 384; nothing saved]")
    });
    assert!(!dir.path().join("broken.tckpt").exists());
    console.type_keys(b"\x1d");
    let (ok, stderr) = console.wait();
    assert!(ok, "exit status; stderr: {stderr}");
}

/// Plays a kernel's `receive` on `device`: READY, an ACK per line, then
/// `DONE` or (`refuse`) an ERROR at END. Returns the checkpoint received.
fn receive_on_device(device: &mut TcpStream, refuse: bool) -> Option<serial_transfer::Received> {
    read_until(device, b"receive\r");
    device.write_all(b"receive\r\nTERN-CKPT READY\r\n").unwrap();
    let mut decoder = serial_transfer::Decoder::new(1 << 20);
    let mut pending = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        let n = device.read(&mut buffer).expect("device read");
        assert!(n > 0, "console closed the link");
        pending.extend_from_slice(&buffer[..n]);
        while let Some(end) = pending.iter().position(|&b| b == b'\r') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8(line[..end].to_vec()).unwrap();
            if refuse && line.starts_with("TERN-CKPT END") {
                device
                    .write_all(b"TERN-CKPT ERROR bad checkpoint: chunk 3 of region keys fails its CRC\r\ntern> ")
                    .unwrap();
                return None;
            }
            match decoder.feed_line(&line).unwrap() {
                Some(received) => {
                    let reply = format!(
                        "{}\r\ntask 1 (is S) resumed at 50.0% from x86_64/pc\r\ntern> ",
                        serial_transfer::Reply::Done(received.name.clone())
                    );
                    device.write_all(reply.as_bytes()).unwrap();
                    return Some(received);
                }
                None => {
                    let next = decoder.next_offset().unwrap();
                    let ack = serial_transfer::Reply::Ack(next);
                    device.write_all(format!("{ack}\r\n").as_bytes()).unwrap();
                }
            }
        }
    }
}

#[test]
fn sends_a_checkpoint_file_to_receive() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("is-S-50.0.tckpt");
    let bytes: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
    std::fs::write(&file, &bytes).unwrap();

    let (listener, port) = listen();
    let mut console = Console::start(&port, &["--send", file.to_str().unwrap()]);
    let mut device = accept(&listener);
    let received = receive_on_device(&mut device, false).unwrap();
    assert_eq!(received.name, "is-S-50.0");
    assert_eq!(received.bytes, bytes);
    console.expect_line(|l| {
        l.ends_with("[console: checkpoint is-S-50.0 sent; the node confirmed it (DONE)]")
    });
    console.expect_line(|l| l == "task 1 (is S) resumed at 50.0% from x86_64/pc");
    // The session goes on: keys reach the node.
    console.type_keys(b"ps\r");
    read_until(&mut device, b"ps\r");
    console.close_stdin();
    drop(device);
    let (ok, stderr) = console.wait();
    assert!(ok, "exit status; stderr: {stderr}");
}

#[test]
fn a_refused_send_is_reported_and_fails_the_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("damaged.tckpt");
    std::fs::write(&file, [1u8; 100]).unwrap();

    let (listener, port) = listen();
    let mut console = Console::start(&port, &["--send", file.to_str().unwrap()]);
    let mut device = accept(&listener);
    assert!(receive_on_device(&mut device, true).is_none());
    let message =
        "the node refused the checkpoint: bad checkpoint: chunk 3 of region keys fails its CRC";
    console.expect_line(|l| {
        l.ends_with(&format!(
            "[console: sending checkpoint damaged failed: {message}]"
        ))
    });
    console.close_stdin();
    drop(device);
    let (ok, stderr) = console.wait();
    assert!(!ok);
    assert_eq!(
        stderr.trim(),
        format!("console: sending the checkpoint failed: {message}")
    );

    // An unreadable file is refused before connecting.
    let console = Console::start(&port, &["--send", "/nonexistent/x.tckpt"]);
    let (ok, stderr) = console.wait();
    assert!(!ok);
    assert!(
        stderr.starts_with("console: cannot read checkpoint /nonexistent/x.tckpt: "),
        "{stderr}"
    );
}
