//! End-to-end tests of the `flash` binary: the QEMU default with the console,
//! the serial push to a chainloader in QEMU (and the remembered port), the
//! file deployments, and the errors a user meets first.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tern_flash::build::Workspace;
use tern_flash::image::KernelElf;
use tern_flash::qemu::{self, Qemu, Serial};
use tern_flash::{Board, Variant};

/// TCG boots on a loaded 2-core machine are slow.
const TIMEOUT: Duration = Duration::from_secs(90);

/// A serial push of the rpi4 kernel (3.4 MB of code since it carries the
/// Wasm interpreter) to the emulated chainloader: about 85 s on an idle
/// machine, at some 40 KB/s through QEMU's PL011.
const PUSH_TIMEOUT: Duration = Duration::from_secs(360);

fn flash() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flash"))
}

fn kernel(board: Board, variant: Variant) -> PathBuf {
    Workspace::locate()
        .unwrap()
        .build_kernel(board, variant, true)
        .unwrap()
}

fn run(command: &mut Command) -> Output {
    command.stdin(Stdio::null()).output().expect("run flash")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Collects a reader's bytes on a thread; `until` waits for a pattern.
struct Collector {
    bytes: Vec<u8>,
    rx: mpsc::Receiver<Vec<u8>>,
}

impl Collector {
    fn new(mut source: impl Read + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut buf = [0u8; 1024];
            while let Ok(n @ 1..) = source.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Self {
            bytes: Vec::new(),
            rx,
        }
    }

    fn until(&mut self, pattern: &str) -> String {
        self.until_within(pattern, TIMEOUT)
    }

    fn until_within(&mut self, pattern: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let text = String::from_utf8_lossy(&self.bytes).into_owned();
            if let Some(at) = text.find(pattern) {
                let end = at + pattern.len();
                self.bytes.drain(..end.min(self.bytes.len()));
                return text[..end].to_owned();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(chunk) => self.bytes.extend(chunk),
                Err(_) => panic!("no {pattern:?} within {timeout:?}; got {text:?}"),
            }
        }
    }
}

#[test]
fn default_boots_in_qemu_with_the_console_attached() {
    let mut child: Child = flash()
        .args(["--board", "pc"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = Collector::new(child.stdout.take().unwrap());
    out.until(concat!(
        "Tern ",
        env!("CARGO_PKG_VERSION"),
        " on pc (x86_64)"
    ));
    out.until("tern> ");
    let mut keys = child.stdin.take().unwrap();
    keys.write_all(b"halt 3\r").unwrap();
    out.until("halting with code 3");
    // With the keyboard closed and QEMU gone, the console and flash end.
    drop(keys);
    let deadline = Instant::now() + TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "flash did not end after QEMU");
        thread::sleep(Duration::from_millis(100));
    }
}

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            // After "(comm) ": state, then the parent's pid.
            stat.rsplit_once(") ")
                .and_then(|(_, rest)| rest.split(' ').nth(1)?.parse::<u32>().ok())
                == Some(pid)
        })
        .collect()
}

#[test]
fn ctrl_close_bracket_leaves_and_stops_qemu() {
    let mut child: Child = flash()
        .args(["--board", "virt"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = Collector::new(child.stdout.take().unwrap());
    out.until("tern> ");
    let qemu = children(child.id());
    assert_eq!(qemu.len(), 1, "one QEMU under flash: {qemu:?}");
    let mut keys = child.stdin.take().unwrap();
    keys.write_all(&[tern_console::EXIT_KEY]).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "flash ignored Ctrl-]");
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !Path::new(&format!("/proc/{}", qemu[0])).exists(),
        "QEMU outlived flash"
    );
}

#[test]
fn serial_push_to_a_chainloader_in_qemu_and_the_port_is_remembered() {
    let loader = KernelElf::read(&kernel(Board::Rpi4, Variant::Chainloader)).unwrap();
    let staging = tempfile::tempdir().unwrap();
    let media = qemu::kernel_media(Board::Rpi4, &loader, staging.path()).unwrap();
    let qemu = Qemu::spawn(Board::Rpi4, &media, Serial::Tcp { wait: false }).unwrap();
    let port = qemu.tcp_port().unwrap();
    let config = tempfile::tempdir().unwrap();

    // Nothing remembered yet: `--serial` alone is a clear error.
    let output = run(flash()
        .env("XDG_CONFIG_HOME", config.path())
        .args(["--board", "rpi4", "--serial"]));
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("no serial port given"),
        "{}",
        stderr(&output)
    );

    let spec = format!("tcp:127.0.0.1:{port}");
    let mut child = flash()
        .env("XDG_CONFIG_HOME", config.path())
        .args(["--board", "rpi4", "--serial", &spec, "--monitor"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = Collector::new(child.stdout.take().unwrap());
    let mut err = Collector::new(child.stderr.take().unwrap());
    err.until_within("verified by the chainloader", PUSH_TIMEOUT);
    // The banner, read on the push's own connection, then the console.
    out.until(concat!(
        "Tern ",
        env!("CARGO_PKG_VERSION"),
        " on rpi4 (aarch64)"
    ));
    out.until("tern> ");
    out.until("[console: connected");
    let remembered = std::fs::read_to_string(config.path().join("tern/flash.toml")).unwrap();
    assert!(remembered.contains(&spec), "{remembered}");

    // Keystrokes reach the pushed kernel's shell through the console.
    let mut keys = child.stdin.take().unwrap();
    keys.write_all(b"info\r").unwrap();
    out.until("board: rpi4");
    keys.write_all(b"halt 3\r").unwrap();
    out.until("halting with code 3");
    drop(keys);
    let mut qemu = qemu;
    assert_eq!(
        qemu.wait_timeout(TIMEOUT)
            .unwrap()
            .and_then(|status| status.code()),
        Some(qemu::halt_status(Board::Rpi4, 3))
    );
    let deadline = Instant::now() + TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "flash did not end after QEMU");
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn files_are_saved_and_boot_dirs_are_updated() {
    let elf = kernel(Board::Rpi4, Variant::Tern);
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("out");
    let output = run(flash()
        .args(["--board", "rpi4", "--kernel"])
        .arg(&elf)
        .arg("--save-image")
        .arg(&saved));
    assert!(output.status.success(), "{}", stderr(&output));
    let mut names: Vec<_> = std::fs::read_dir(&saved)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["config.txt", "kernel.elf", "kernel8.img"]);

    let boot = dir.path().join("boot");
    std::fs::create_dir(&boot).unwrap();
    std::fs::write(boot.join("start4.elf"), b"firmware").unwrap();
    let output = run(flash()
        .args(["--board", "rpi4", "--kernel"])
        .arg(&elf)
        .arg("--boot-dir")
        .arg(&boot));
    assert!(output.status.success(), "{}", stderr(&output));
    let warnings = stderr(&output);
    assert!(
        warnings.contains("lacks the firmware file fixup4.dat"),
        "{warnings}"
    );
    assert!(warnings.contains("bcm2711-rpi-4-b.dtb"), "{warnings}");
    assert!(
        !warnings.contains("lacks the firmware file start4.elf"),
        "{warnings}"
    );
    assert_eq!(
        std::fs::read(boot.join("kernel8.img")).unwrap(),
        std::fs::read(saved.join("kernel8.img")).unwrap()
    );
}

#[test]
fn a_kernel_for_another_board_is_refused() {
    let virt = kernel(Board::Virt, Variant::Tern);
    let dir = tempfile::tempdir().unwrap();
    let output = run(flash()
        .args(["--board", "rpi4", "--kernel"])
        .arg(&virt)
        .arg("--save-image")
        .arg(dir.path().join("out")));
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("was built for virt, not rpi4"),
        "{}",
        stderr(&output)
    );
    assert!(!dir.path().join("out").exists());
}

#[test]
fn misplaced_options_and_missing_tools_are_explained() {
    let output = run(flash().args(["--board", "pc", "--sd-image", "x.img"]));
    assert!(
        stderr(&output).contains("--sd-image is for --board rpi4 only"),
        "{}",
        stderr(&output)
    );
    let output = run(flash().args(["--board", "virt", "--chainloader", "--save-image", "x"]));
    assert!(
        stderr(&output).contains("virt has no serial chainloader"),
        "{}",
        stderr(&output)
    );

    // Without grub-mkrescue on PATH, the error names the packages.
    let pc = kernel(Board::Pc, Variant::Tern);
    let empty = tempfile::tempdir().unwrap();
    let output = run(flash()
        .env("PATH", empty.path())
        .args(["--board", "pc", "--kernel"])
        .arg(&pc)
        .arg("--usb-image")
        .arg(empty.path().join("usb.img")));
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("grub-mkrescue not found"), "{message}");
    assert!(
        message.contains("grub-pc-bin") && message.contains("xorriso"),
        "{message}"
    );
    assert!(!Path::new(&empty.path().join("usb.img")).exists());
}

/// The JTAG path on a machine without a debug probe (as CI is): what needs
/// no probe (chip, load plan, GDB server, UART) is checked and shown first,
/// then each problem gets its own answer. Loading over a real probe is not
/// tested anywhere (docs/hardware-bringup.md).
#[cfg(feature = "probe")]
#[test]
fn the_probe_path_explains_each_problem_without_a_probe() {
    let elf = kernel(Board::Rpi4, Variant::Tern);
    let config = tempfile::tempdir().unwrap();
    let probe = |extra: &[&str]| {
        run(flash()
            .env("XDG_CONFIG_HOME", config.path())
            .args(["--board", "rpi4", "--kernel"])
            .arg(&elf)
            .arg("--probe")
            .args(extra))
    };
    let fails_with = |output: Output, message: &str| {
        assert!(!output.status.success());
        let text = stderr(&output);
        assert!(
            text.contains(&format!("flash: error: {message}")),
            "expected {message:?} in:\n{text}"
        );
        text
    };

    let text = fails_with(probe(&[]), "no debug probe found");
    // The plan of the real kernel: its code at 0x80000, entered through the stub below it.
    assert!(
        text.contains("flash: load plan for RaspberryPi4B"),
        "{text}"
    );
    assert!(text.contains("  0x00080000.."), "{text}");
    assert!(
        text.contains(
            "0x0007ffe0..0x00080000  hand-over stub (I-cache invalidate, branch to 0x80000)"
        ),
        "{text}"
    );
    assert!(text.contains("pc=0x7ffe0 (EL2, MMU off)"), "{text}");

    fails_with(
        probe(&["--chip", "RaspberryPi5B"]),
        "chip RaspberryPi5B is not a Raspberry Pi 4",
    );
    fails_with(probe(&["--chip", "Pi4"]), "unknown chip \"Pi4\"");
    fails_with(probe(&["not:a:selector:x"]), "invalid probe selector");
    fails_with(
        probe(&["--monitor"]),
        "no serial port given and none remembered for rpi4",
    );
    fails_with(
        probe(&["--serial", "/dev/tern-no-such-tty", "--monitor"]),
        "no such port: /dev/tern-no-such-tty",
    );
    fails_with(
        probe(&["--serial", "/dev/ttyUSB0"]),
        "with --probe, --serial names the UART for --monitor",
    );

    let empty = tempfile::tempdir().unwrap();
    let output = run(flash()
        .env("PATH", empty.path())
        .args(["--board", "rpi4", "--kernel"])
        .arg(&elf)
        .args(["--probe", "--gdb"]));
    fails_with(output, "--gdb runs probe-rs's GDB server");

    let output = run(flash().args(["--board", "virt", "--probe"]));
    fails_with(output, "--probe is for --board rpi4 only");
}

/// `--no-default-features` builds flash without probe-rs: `--probe` says so.
#[cfg(not(feature = "probe"))]
#[test]
fn without_the_probe_feature_the_probe_path_says_so() {
    let output = run(flash()
        .args(["--board", "rpi4", "--kernel"])
        .arg(kernel(Board::Rpi4, Variant::Tern))
        .arg("--probe"));
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("built without probe support"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn jtag_cards_enable_jtag_on_the_gpio_header() {
    let elf = kernel(Board::Rpi4, Variant::Tern);
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("jtag.img");
    let output = run(flash()
        .args(["--board", "rpi4", "--chainloader", "--jtag", "--kernel"])
        .arg(kernel(Board::Rpi4, Variant::Chainloader))
        .arg("--sd-image")
        .arg(&image));
    assert!(output.status.success(), "{}", stderr(&output));
    let config = tern_flash::rpi4::read_from_sd_image(&image, "config.txt").unwrap();
    let config = String::from_utf8(config).unwrap();
    assert!(
        config.lines().any(|line| line == "enable_jtag_gpio=1"),
        "{config}"
    );

    let output = run(flash()
        .args(["--board", "rpi4", "--jtag", "--kernel"])
        .arg(&elf));
    assert!(
        stderr(&output).contains("--jtag goes with --boot-dir, --sd-image or --save-image"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn help_shows_the_probe_path() {
    let output = run(flash().arg("--help"));
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--probe [<SELECTOR>]",
        "--chip <NAME>",
        "--gdb",
        "--jtag",
        "--speed <KHZ>",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    assert!(
        help.contains("load the kernel into RAM over JTAG"),
        "{help}"
    );
}
