//! Booting a kernel in QEMU the way each board's hardware would, with the
//! board's serial port on the process's standard streams or on a TCP socket.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::{Board, FlashError};

/// What QEMU boots.
#[derive(Clone, Debug)]
pub enum Media {
    /// A kernel loaded by QEMU itself: the raw image for rpi4, the ELF otherwise.
    Kernel(PathBuf),
    /// A disk image booted by the machine's firmware (pc: a USB-stick image).
    Drive(PathBuf),
}

/// Where the board's first serial port goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serial {
    /// QEMU's standard input and output (pipes).
    Stdio,
    /// A TCP server socket on 127.0.0.1; with `wait`, the guest starts only
    /// once a client has connected, so no output is lost.
    Tcp {
        /// Hold the guest until the first client connects.
        wait: bool,
    },
    /// No serial port at all (`-serial none`): a PC without COM1.
    None,
    /// pc: no COM1, but a PCI serial card (QEMU's `pci-serial`, a 16550
    /// behind an I/O BAR) on QEMU's standard input and output.
    PciCard,
}

impl Serial {
    /// Whether the console is on QEMU's standard streams.
    fn on_stdio(self) -> bool {
        matches!(self, Self::Stdio | Self::PciCard)
    }

    /// QEMU's arguments for this serial set-up, `chardev` being the
    /// character device of [`Serial::Stdio`] and [`Serial::Tcp`].
    fn args(self, chardev: &str) -> Vec<String> {
        let args: &[&str] = match self {
            Self::Stdio | Self::Tcp { .. } => &["-serial", chardev],
            Self::None => &["-serial", "none"],
            Self::PciCard => &[
                "-serial",
                "none",
                "-chardev",
                "stdio,id=tern-console",
                "-device",
                "pci-serial,chardev=tern-console",
            ],
        };
        args.iter().map(|arg| (*arg).to_owned()).collect()
    }
}

/// How long QEMU may take to open its serial socket.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How many ports are tried when another process takes the chosen one
/// between our probe and QEMU's bind.
const BIND_ATTEMPTS: usize = 5;

/// The QEMU program and machine arguments of `board`.
pub fn machine(board: Board) -> (&'static str, &'static [&'static str]) {
    match board {
        Board::Rpi4 => (
            "qemu-system-aarch64",
            &[
                "-M",
                "raspi4b",
                "-semihosting-config",
                "enable=on,target=native",
            ],
        ),
        Board::Virt => (
            "qemu-system-aarch64",
            &[
                "-M",
                "virt,virtualization=on",
                "-cpu",
                "cortex-a72",
                "-m",
                "1G",
                "-semihosting-config",
                "enable=on,target=native",
                // The entropy source of the migration protocol's nonces.
                "-device",
                "virtio-rng-device",
            ],
        ),
        Board::Pc => (
            "qemu-system-x86_64",
            &[
                "-M",
                "q35",
                "-m",
                "512M",
                "-device",
                "isa-debug-exit,iobase=0xf4,iosize=0x04",
                // The entropy source of the migration protocol's nonces.
                "-device",
                "virtio-rng-pci",
                "-no-reboot",
            ],
        ),
    }
}

/// The QEMU command booting `media` on `board` with the serial port on `chardev`
/// (`stdio`, `tcp:...`).
pub fn command(board: Board, media: &Media, chardev: &str) -> Command {
    command_with_serial(board, media, &Serial::Stdio.args(chardev))
}

/// The QEMU command booting `media` on `board` with `serial` (the serial
/// port's arguments) instead of a plain `-serial`.
fn command_with_serial(board: Board, media: &Media, serial: &[String]) -> Command {
    let (program, args) = machine(board);
    let mut command = Command::new(program);
    command.args(args);
    match media {
        Media::Kernel(path) => command.arg("-kernel").arg(path),
        Media::Drive(path) => command
            .arg("-drive")
            .arg(format!("format=raw,file={}", path.display())),
    };
    command.args(["-display", "none", "-monitor", "none"]);
    command.args(serial);
    command
}

/// Debian's OVMF (UEFI firmware for QEMU): the read-only code and the
/// variable store template (4 MiB builds, no Secure Boot keys enrolled).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// The variable store template, copied per machine (UEFI writes to it).
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// QEMU arguments that boot a pc under UEFI (OVMF) instead of SeaBIOS,
/// with a fresh copy of the variable store in `dir`.
pub fn uefi_args(dir: &Path) -> Result<Vec<String>, FlashError> {
    let missing = |_| FlashError::MissingTool {
        tool: "OVMF",
        packages: "ovmf",
    };
    std::fs::metadata(OVMF_CODE).map_err(missing)?;
    let vars = dir.join("OVMF_VARS.fd");
    std::fs::copy(OVMF_VARS, &vars).map_err(missing)?;
    Ok(vec![
        "-drive".into(),
        format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"),
        "-drive".into(),
        format!("if=pflash,format=raw,file={}", vars.display()),
    ])
}

/// The exit status QEMU reports after the kernel's `halt code`.
pub fn halt_status(board: Board, code: u8) -> i32 {
    match board {
        // Semihosting SYS_EXIT passes the code through.
        Board::Rpi4 | Board::Virt => code.into(),
        // isa-debug-exit exits with (value << 1) | 1.
        Board::Pc => (i32::from(code) << 1) | 1,
    }
}

/// Where and how else QEMU runs, beyond the board's defaults (tests put
/// nodes on a bridge inside a network namespace).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Launch {
    /// Run QEMU inside this network namespace (`ip netns exec NS qemu…`).
    pub netns: Option<String>,
    /// Arguments appended to QEMU's command line (e.g. `-netdev`, `-device`).
    pub extra_args: Vec<String>,
}

impl Launch {
    /// `command` as this launch runs it: extra arguments appended and, with
    /// a namespace, wrapped in `ip netns exec`.
    fn wrap(&self, mut command: Command) -> Command {
        command.args(&self.extra_args);
        let Some(netns) = &self.netns else {
            return command;
        };
        let mut wrapped = Command::new("ip");
        wrapped
            .args(["netns", "exec", netns])
            .arg(command.get_program())
            .args(command.get_args());
        wrapped
    }
}

/// A running QEMU; killed when dropped.
pub struct Qemu {
    child: Child,
    tcp_port: Option<u16>,
    stderr: Arc<Mutex<String>>,
}

impl Qemu {
    /// Starts QEMU for `board` booting `media`, serial on `serial`. For
    /// [`Serial::Tcp`] it returns once the socket accepts connections.
    pub fn spawn(board: Board, media: &Media, serial: Serial) -> Result<Self, FlashError> {
        Self::spawn_with(board, media, serial, &Launch::default())
    }

    /// [`Qemu::spawn`] with the namespace and extra arguments of `launch`.
    pub fn spawn_with(
        board: Board,
        media: &Media,
        serial: Serial,
        launch: &Launch,
    ) -> Result<Self, FlashError> {
        let mut last_error = None;
        let tcp = matches!(serial, Serial::Tcp { .. });
        let attempts = if tcp { BIND_ATTEMPTS } else { 1 };
        for _ in 0..attempts {
            match Self::try_spawn(board, media, serial, launch) {
                Ok(qemu) => return Ok(qemu),
                Err(error @ FlashError::QemuFailed { .. }) if tcp => last_error = Some(error),
                Err(error) => return Err(error),
            }
        }
        Err(last_error.unwrap_or(FlashError::Timeout {
            what: "QEMU's serial socket",
        }))
    }

    fn try_spawn(
        board: Board,
        media: &Media,
        serial: Serial,
        launch: &Launch,
    ) -> Result<Self, FlashError> {
        let (program, _) = machine(board);
        let (chardev, tcp_port) = match serial {
            Serial::Stdio | Serial::None | Serial::PciCard => ("stdio".to_owned(), None),
            Serial::Tcp { wait } => {
                let port = free_port().map_err(|source| FlashError::Spawn {
                    program: program.into(),
                    source,
                })?;
                let wait = if wait { "on" } else { "off" };
                (
                    format!("tcp:127.0.0.1:{port},server=on,wait={wait}"),
                    Some(port),
                )
            }
        };
        let mut command = launch.wrap(command_with_serial(board, media, &serial.args(&chardev)));
        command.stdin(Stdio::null()).stderr(Stdio::piped());
        if serial.on_stdio() {
            command.stdin(Stdio::piped()).stdout(Stdio::piped());
        }
        let child = command.spawn().map_err(|source| FlashError::Spawn {
            program: program.into(),
            source,
        })?;
        let mut qemu = Self {
            child,
            tcp_port,
            stderr: Arc::default(),
        };
        if let Some(pipe) = qemu.child.stderr.take() {
            drain(pipe, qemu.stderr.clone());
        }
        match (serial, tcp_port) {
            // QEMU announces the socket on stderr before it holds the guest.
            (Serial::Tcp { wait: true }, Some(_)) => {
                qemu.wait_until(|qemu| qemu.stderr_text().contains("waiting for connection"))?
            }
            (Serial::Tcp { wait: false }, Some(port)) => {
                qemu.wait_until(|_| TcpStream::connect(("127.0.0.1", port)).is_ok())?
            }
            _ => {}
        }
        Ok(qemu)
    }

    /// Polls `ready` until it holds, failing if QEMU exits or takes too long.
    fn wait_until(&mut self, ready: impl Fn(&Self) -> bool) -> Result<(), FlashError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if ready(self) {
                return Ok(());
            }
            if self.child.try_wait().ok().flatten().is_some() {
                return Err(self.failed());
            }
            if Instant::now() >= deadline {
                return Err(FlashError::Timeout {
                    what: "QEMU's serial socket",
                });
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn failed(&mut self) -> FlashError {
        // Let the stderr reader catch up with QEMU's last words.
        let status = self.child.wait().ok();
        thread::sleep(Duration::from_millis(50));
        FlashError::QemuFailed {
            status,
            stderr: self.stderr_text(),
        }
    }

    /// The TCP port of the serial socket, for [`Serial::Tcp`].
    pub fn tcp_port(&self) -> Option<u16> {
        self.tcp_port
    }

    /// The QEMU process (its piped standard streams for [`Serial::Stdio`]
    /// and [`Serial::PciCard`]).
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Everything QEMU wrote to its standard error so far.
    pub fn stderr_text(&self) -> String {
        lock(&self.stderr).clone()
    }

    /// Waits up to `timeout` for QEMU to exit by itself.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>, FlashError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().map_err(FlashError::Link)? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops QEMU (if still running) and reaps it.
    pub fn kill(&mut self) {
        // Errors mean it has already exited.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Keeps reading QEMU's stderr into `sink` so QEMU never blocks on a full pipe.
fn drain(mut pipe: ChildStderr, sink: Arc<Mutex<String>>) {
    thread::spawn(move || {
        let mut buf = [0u8; 1024];
        while let Ok(n @ 1..) = pipe.read(&mut buf) {
            lock(&sink).push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
}

fn lock(text: &Mutex<String>) -> std::sync::MutexGuard<'_, String> {
    // A panicking reader thread cannot leave the text inconsistent.
    text.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A TCP port free at the time of the call.
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Puts what QEMU needs for `board` next to `dir`: the raw image for rpi4
/// (written to `dir/kernel8.img`), the ELF itself otherwise.
pub fn kernel_media(
    board: Board,
    elf: &crate::image::KernelElf,
    dir: &Path,
) -> Result<Media, FlashError> {
    if board.boots_raw_image() {
        let path = dir.join("kernel8.img");
        crate::fsutil::write_atomic(&path, &elf.raw_image(board.raw_image_limit())?)?;
        Ok(Media::Kernel(path))
    } else {
        Ok(Media::Kernel(elf.path().to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_match_the_boards() {
        let kernel = Media::Kernel("kernel8.img".into());
        let rpi4 = command(Board::Rpi4, &kernel, "stdio");
        let args: Vec<_> = rpi4
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(rpi4.get_program(), "qemu-system-aarch64");
        assert_eq!(
            args.join(" "),
            "-M raspi4b -semihosting-config enable=on,target=native -kernel kernel8.img \
             -display none -monitor none -serial stdio"
        );
        let usb = command(
            Board::Pc,
            &Media::Drive("usb.img".into()),
            "tcp:127.0.0.1:1,server=on",
        );
        let args: Vec<_> = usb
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(args.join(" ").contains("-drive format=raw,file=usb.img"));
        assert!(args.contains(&"isa-debug-exit,iobase=0xf4,iosize=0x04".to_owned()));
    }

    #[test]
    fn a_launch_appends_arguments_and_enters_the_namespace() {
        let kernel = Media::Kernel("tern-virt".into());
        let launch = Launch {
            netns: Some("tern-net".into()),
            extra_args: vec!["-device".into(), "virtio-net-device,netdev=n0".into()],
        };
        let wrapped = launch.wrap(command(Board::Virt, &kernel, "stdio"));
        let args: Vec<_> = wrapped
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(wrapped.get_program(), "ip");
        assert_eq!(
            args[..4],
            ["netns", "exec", "tern-net", "qemu-system-aarch64"]
        );
        assert!(args
            .join(" ")
            .ends_with("-serial stdio -device virtio-net-device,netdev=n0"));
        let plain = Launch::default().wrap(command(Board::Pc, &kernel, "stdio"));
        assert_eq!(plain.get_program(), "qemu-system-x86_64");
    }

    #[test]
    fn serial_set_ups() {
        let kernel = Media::Kernel("tern-pc".into());
        let line = |serial: Serial| {
            command_with_serial(Board::Pc, &kernel, &serial.args("stdio"))
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert!(line(Serial::Stdio).ends_with("-monitor none -serial stdio"));
        assert!(line(Serial::None).ends_with("-monitor none -serial none"));
        assert!(line(Serial::PciCard).ends_with(
            "-serial none -chardev stdio,id=tern-console -device pci-serial,chardev=tern-console"
        ));
        assert!(Serial::PciCard.on_stdio() && !Serial::None.on_stdio());
    }

    #[test]
    fn halt_statuses() {
        assert_eq!(halt_status(Board::Rpi4, 3), 3);
        assert_eq!(halt_status(Board::Virt, 0), 0);
        assert_eq!(halt_status(Board::Pc, 3), 7);
    }
}
