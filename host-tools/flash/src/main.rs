//! `flash`: builds a Tern kernel for a board and deploys it — into QEMU with
//! the console attached (the default), into a directory, a mounted Pi boot
//! partition, an SD-card image, a PC USB-stick image, over a serial line to
//! the rpi4 chainloader, or into the Pi 4's RAM through a JTAG probe.

use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{ArgGroup, Parser};
use indicatif::{ProgressBar, ProgressStyle};
use tern_console::{ConsoleOptions, Event, PortSpec, Screen, StreamDecoder};
use tern_flash::build::Workspace;
use tern_flash::chainload::{self, Timeouts};
use tern_flash::image::KernelElf;
use tern_flash::jtag::{self, ProbeError};
use tern_flash::ports::PortMemory;
use tern_flash::provision;
use tern_flash::qemu::{self, Qemu, Serial};
use tern_flash::rpi4::BootConfig;
use tern_flash::{rpi4, usb, Board, FlashError, Variant};
use tern_protocol::Security;

/// Build a Tern kernel and deploy it. Without a deploy target, boot it in
/// QEMU and attach the console (Ctrl-] exits and stops QEMU).
#[derive(Debug, Parser)]
#[command(name = "flash", version)]
#[command(group(ArgGroup::new("deploy").args(["save_image", "boot_dir", "sd_image", "serial", "usb_image"])))]
struct Args {
    /// The board: rpi4, virt or pc.
    #[arg(long, value_parser = parse_board)]
    board: Board,
    /// Deploy this prebuilt kernel ELF instead of building one.
    #[arg(long, value_name = "ELF")]
    kernel: Option<PathBuf>,
    /// rpi4: deploy the serial chainloader instead of Tern (install it once).
    #[arg(long)]
    chainloader: bool,
    /// Write the deployable image(s) and the kernel ELF into DIR.
    #[arg(long, value_name = "DIR")]
    save_image: Option<PathBuf>,
    /// rpi4: write kernel8.img and config.txt into a mounted boot partition.
    #[arg(long, value_name = "DIR")]
    boot_dir: Option<PathBuf>,
    /// rpi4: create a bootable SD-card image (MBR, FAT32 boot partition).
    #[arg(long, value_name = "FILE")]
    sd_image: Option<PathBuf>,
    /// rpi4: firmware directory (start4.elf, fixup4.dat, bcm2711-rpi-4-b.dtb) for --sd-image.
    #[arg(long, value_name = "DIR", requires = "sd_image")]
    firmware: Option<PathBuf>,
    /// rpi4: the board's serial port (a device or tcp:HOST:PORT): push the
    /// kernel to the chainloader on it, or with --probe the UART --monitor
    /// reads; without PORT, the one last used for the board.
    #[arg(long, value_name = "PORT", num_args = 0..=1, default_missing_value = "")]
    serial: Option<String>,
    /// Serial speed for --serial and the console.
    #[arg(long, default_value_t = tern_console::DEFAULT_BAUD)]
    baud: u32,
    /// Then attach the console: to the --serial port after the push, or
    /// after --probe to the Pi's UART (--serial PORT, else the remembered one).
    #[arg(long)]
    monitor: bool,
    /// rpi4: load the kernel into RAM over JTAG through a debug probe (no SD
    /// card writes): halt core 0, write the ELF's segments, start it at EL2.
    /// SELECTOR is VID:PID[:SERIAL]; without it, the only probe attached.
    /// The Pi must run the chainloader from a card made with --jtag
    /// (docs/hardware-bringup.md).
    #[arg(long, value_name = "SELECTOR", num_args = 0..=1, default_missing_value = "",
          conflicts_with_all = ["save_image", "boot_dir", "sd_image", "usb_image", "chainloader"])]
    probe: Option<String>,
    /// The probe-rs chip for --probe.
    #[arg(long, value_name = "NAME", default_value = jtag::DEFAULT_CHIP, requires = "probe")]
    chip: String,
    /// JTAG clock in kHz for --probe (the probe's default without it).
    #[arg(long, value_name = "KHZ", requires = "probe")]
    speed: Option<u32>,
    /// After --probe, leave core 0 halted at the kernel's entry and run
    /// probe-rs's GDB server (`probe-rs gdb`, port 1337) instead of starting it.
    #[arg(long, requires = "probe", conflicts_with = "monitor")]
    gdb: bool,
    /// rpi4: with --boot-dir, --sd-image or --save-image, enable JTAG on
    /// GPIO 22-27 in config.txt (enable_jtag_gpio=1) for --probe.
    #[arg(long)]
    jtag: bool,
    /// pc: create a BIOS+UEFI bootable USB-stick image (GRUB, multiboot2).
    #[arg(long, value_name = "FILE")]
    usb_image: Option<PathBuf>,
    /// Append the console's output to FILE (QEMU and --monitor).
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// Provision the cluster key from FILE (64 hex digits) into the kernel
    /// deployed, in every mode: the node boots keyed (docs/protocol.md, "Key").
    #[arg(long, value_name = "FILE", conflicts_with = "chainloader")]
    key_file: Option<PathBuf>,
}

fn parse_board(name: &str) -> Result<Board, FlashError> {
    name.parse()
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` prints the whole chain of causes on one line.
            eprintln!("flash: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    let board = args.board;
    let variant = if args.chainloader {
        board.bin(Variant::Chainloader)?;
        if args.serial.is_some() || args.usb_image.is_some() || !has_target(&args) {
            bail!("--chainloader goes with --sd-image, --boot-dir or --save-image");
        }
        Variant::Chainloader
    } else {
        Variant::Tern
    };
    let rpi4_only = [
        ("--boot-dir", args.boot_dir.is_some()),
        ("--sd-image", args.sd_image.is_some()),
        ("--serial", args.serial.is_some()),
        ("--probe", args.probe.is_some()),
        ("--jtag", args.jtag),
    ];
    for (flag, given) in rpi4_only {
        if given && board != Board::Rpi4 {
            bail!("{flag} is for --board rpi4 only");
        }
    }
    if args.usb_image.is_some() && board != Board::Pc {
        bail!("--usb-image is for --board pc only");
    }
    if args.jtag && args.boot_dir.is_none() && args.sd_image.is_none() && args.save_image.is_none()
    {
        bail!("--jtag goes with --boot-dir, --sd-image or --save-image (it writes config.txt)");
    }
    if args.monitor && args.serial.is_none() && args.probe.is_none() {
        bail!("--monitor goes with --serial or --probe");
    }
    if args.probe.is_some() && args.serial.is_some() && !args.monitor {
        bail!("with --probe, --serial names the UART for --monitor: add --monitor");
    }
    let boot_config = BootConfig { jtag: args.jtag };

    let elf_path = match &args.kernel {
        Some(path) => path.clone(),
        None => Workspace::locate()?.build_kernel(board, variant, false)?,
    };
    let elf = KernelElf::read(&elf_path)?;
    elf.check(board, variant)?;
    // A keyed copy lives in a private directory for as long as it is deployed.
    let staging = tempfile::tempdir().context("creating a temporary directory")?;
    let (elf, elf_path) = match &args.key_file {
        Some(file) => {
            let Security::Key(key) = tern_client::security(Some(file), false)? else {
                bail!("--key-file gives a key");
            };
            let keyed = provision::provisioned(
                &elf,
                &provision::key_command(&tern_client::key_hex(&key)),
                staging.path(),
            )?;
            eprintln!("flash: the kernel is keyed (its boot commands hold the cluster key)");
            let path = keyed.path().to_owned();
            (keyed, path)
        }
        None => (elf, elf_path),
    };

    if let Some(selector) = &args.probe {
        load_over_probe(&elf, &elf_path, selector, &args)?;
    } else if let Some(dir) = &args.save_image {
        save_image(board, &elf, dir, boot_config)?;
        eprintln!("flash: saved the {board} image to {}", dir.display());
    } else if let Some(dir) = &args.boot_dir {
        let missing = rpi4::write_boot_dir(dir, &raw_image(board, &elf)?, boot_config)?;
        eprintln!(
            "flash: wrote kernel8.img and config.txt to {}",
            dir.display()
        );
        for file in missing {
            eprintln!(
                "flash: warning: {} lacks the firmware file {file}; the Pi will not boot without it",
                dir.display()
            );
        }
    } else if let Some(image) = &args.sd_image {
        rpi4::write_sd_image(
            image,
            &raw_image(board, &elf)?,
            args.firmware.as_deref(),
            boot_config,
        )?;
        eprintln!("flash: wrote the SD-card image {}", image.display());
        if args.firmware.is_none() {
            eprintln!(
                "flash: warning: no --firmware given: copy {} into its boot partition before booting",
                rpi4::FIRMWARE_FILES.join(", ")
            );
        }
    } else if let Some(port) = &args.serial {
        let (spec, link) = serial_push(board, &elf, port, args.baud)?;
        if args.monitor {
            show_boot(link, &elf, args.log.as_deref())?;
            attach_console(spec, &elf_path, &args)?;
        }
    } else if let Some(image) = &args.usb_image {
        // The GRUB configuration is part of the pc board's sources.
        let grub_cfg = Workspace::locate()?.root.join("boards/pc/grub.cfg");
        usb::write_usb_image(image, elf.bytes(), &grub_cfg)?;
        eprintln!("flash: wrote the USB-stick image {}", image.display());
    } else {
        run_in_qemu(board, &elf, &args)?;
    }
    Ok(())
}

fn has_target(args: &Args) -> bool {
    args.save_image.is_some()
        || args.boot_dir.is_some()
        || args.sd_image.is_some()
        || args.serial.is_some()
        || args.usb_image.is_some()
}

fn raw_image(board: Board, elf: &KernelElf) -> Result<Vec<u8>, FlashError> {
    elf.raw_image(board.raw_image_limit())
}

fn save_image(board: Board, elf: &KernelElf, dir: &Path, config: BootConfig) -> Result<()> {
    if board.boots_raw_image() {
        rpi4::save_image(dir, &raw_image(board, elf)?, elf.bytes(), config)?;
    } else {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        tern_flash::fsutil::write_atomic(&dir.join("kernel.elf"), elf.bytes())?;
    }
    Ok(())
}

/// The port `--serial` names (empty: the one remembered for `board`),
/// opened; the port is remembered once it opened.
fn open_port(board: Board, port: &str, baud: u32) -> Result<(PortSpec, Box<dyn chainload::Link>)> {
    let memory = PortMemory::user()?;
    let port = if port.is_empty() {
        memory
            .recall(board)?
            .ok_or_else(|| FlashError::NoRememberedPort {
                board,
                config: memory.path().to_owned(),
            })?
    } else {
        port.to_owned()
    };
    let spec: PortSpec = port
        .parse()
        .map_err(|_| FlashError::InvalidPort(port.clone()))?;
    let link = chainload::open(&spec, baud)?;
    memory.remember(board, &port)?;
    Ok((spec, link))
}

/// Pushes the raw image to the chainloader and remembers the port; returns
/// the port and the still open link.
fn serial_push(
    board: Board,
    elf: &KernelElf,
    port: &str,
    baud: u32,
) -> Result<(PortSpec, Box<dyn chainload::Link>)> {
    let image = raw_image(board, elf)?;
    let (spec, mut link) = open_port(board, port, baud)?;
    eprintln!("flash: waiting for the chainloader on {spec} (reset the board if it is running something else)");
    let bar = byte_bar(image.len() as u64)?;
    let result = chainload::push(&mut link, &image, Timeouts::default(), &mut |sent| {
        bar.set_position(sent)
    });
    bar.finish_and_clear();
    result?;
    eprintln!(
        "flash: {} bytes verified by the chainloader; the kernel is starting",
        image.len()
    );
    Ok((spec, link))
}

/// A progress bar over `total` bytes.
fn byte_bar(total: u64) -> Result<ProgressBar> {
    Ok(ProgressBar::new(total).with_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}")
            .context("progress bar template")?,
    ))
}

/// `--probe`: loads the kernel into the Pi's RAM over JTAG and starts it
/// (then `--monitor` shows its UART), or leaves it halted for `--gdb`.
/// Everything that needs no probe (chip, load plan, GDB server, UART) is
/// checked before the probe is touched.
#[cfg(feature = "probe")]
fn load_over_probe(elf: &KernelElf, elf_path: &Path, selector: &str, args: &Args) -> Result<()> {
    use jtag::probe::{self, PiCore};
    use jtag::{AfterLoad, LoadPlan};

    let chip = probe::chip(&args.chip)?;
    // Tern's rpi4 kernel reads its facts from the mailbox, not a device tree.
    let plan = LoadPlan::new(elf, &chip.ram, 0)?;
    eprintln!("flash: load plan for {}:\n{plan}", chip.name);
    let gdb_server = args.gdb.then(probe::gdb_server_program).transpose()?;
    // The UART is opened before the kernel starts, so its banner is not lost.
    let uart = args
        .monitor
        .then(|| open_port(Board::Rpi4, args.serial.as_deref().unwrap_or(""), args.baud))
        .transpose()?;
    let (found, info) = probe::open((!selector.is_empty()).then_some(selector), args.speed)?;
    eprintln!("flash: attaching to {} through {info}", chip.name);
    let mut session = probe::attach(found, &chip)?;
    let core = session
        .core(0)
        .map_err(|error| ProbeError::Debug(format!("core 0: {error}")))?;
    let after = if args.gdb {
        AfterLoad::StayHalted
    } else {
        AfterLoad::Run
    };
    let bar = byte_bar(plan.bytes())?;
    let result = jtag::load(&mut PiCore(core), &plan, after, &mut |done| {
        bar.set_position(done)
    });
    bar.finish_and_clear();
    result?;
    // Closing the session writes the registers of a core left halted and
    // frees the probe for the GDB server.
    drop(session);
    eprintln!(
        "flash: {} bytes written and read back over JTAG; {}",
        plan.bytes(),
        if args.gdb {
            "core 0 is halted at the hand-over stub"
        } else {
            "the kernel is starting"
        }
    );
    if let Some(program) = gdb_server {
        eprintln!(
            "flash: starting probe-rs's GDB server; connect with `gdb-multiarch {} -ex 'target remote :1337'` (Ctrl-C ends it)",
            elf_path.display()
        );
        probe::run_gdb_server(&program, &chip, &probe::selector_of(&info), args.speed)?;
    }
    if let Some((spec, link)) = uart {
        // No RTT on this board: see docs/hardware-bringup.md.
        eprintln!("flash: monitoring the Pi's UART on {spec}");
        show_boot(link, elf, args.log.as_deref())?;
        attach_console(spec, elf_path, args)?;
    }
    Ok(())
}

/// `--probe` in a `flash` built without probe-rs.
#[cfg(not(feature = "probe"))]
fn load_over_probe(_: &KernelElf, _: &Path, _: &str, _: &Args) -> Result<()> {
    Err(FlashError::from(ProbeError::NotBuiltIn).into())
}

/// How long the kernel may take from the jump to its shell prompt.
const BOOT_OUTPUT_TIMEOUT: Duration = Duration::from_secs(10);

/// The Tern shell's prompt, after which the kernel waits for input.
const PROMPT: &[u8] = b"tern> ";

/// Shows the pushed kernel's first output, read on the link that is still
/// open, up to its shell prompt: the kernel starts the moment the image is
/// verified, and its banner would be lost while the console opens the port anew.
fn show_boot(
    mut link: Box<dyn chainload::Link>,
    elf: &KernelElf,
    log: Option<&Path>,
) -> Result<()> {
    let mut decoder =
        StreamDecoder::new(elf.bytes()).unwrap_or_else(|_| StreamDecoder::without_table());
    let out = std::io::stdout().lock();
    let mut screen = match log {
        Some(path) => Screen::with_log(out, path)
            .with_context(|| format!("opening the log file {}", path.display()))?,
        None => Screen::new(out),
    };
    let deadline = Instant::now() + BOOT_OUTPUT_TIMEOUT;
    let mut text = Vec::new();
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline && !text.windows(PROMPT.len()).any(|w| w == PROMPT) {
        let n = match link.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(error) if matches!(error.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
                continue
            }
            Err(error) => return Err(error).context("reading the kernel's first output"),
        };
        for event in decoder.feed(&buf[..n]) {
            if let Event::Text(bytes) = &event {
                text.extend_from_slice(bytes);
            }
            screen.show(&event).context("showing the kernel's output")?;
        }
    }
    screen.finish().context("showing the kernel's output")
}

fn attach_console(port: PortSpec, elf: &Path, args: &Args) -> Result<()> {
    tern_console::run(&ConsoleOptions {
        port,
        elf: Some(elf.to_owned()),
        log: args.log.clone(),
        baud: args.baud,
    })?;
    Ok(())
}

/// Boots the kernel in QEMU with its serial port on a local TCP socket, and
/// attaches the console to it; QEMU is stopped when the console ends.
fn run_in_qemu(board: Board, elf: &KernelElf, args: &Args) -> Result<()> {
    let staging = tempfile::tempdir().context("creating a temporary directory")?;
    let media = qemu::kernel_media(board, elf, staging.path())?;
    let qemu = Qemu::spawn(board, &media, Serial::Tcp { wait: true })?;
    let port = qemu
        .tcp_port()
        .context("QEMU's serial socket has no port")?;
    eprintln!("flash: {board} kernel running in QEMU; Ctrl-] exits");
    let qemu = Arc::new(Mutex::new(qemu));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = watch_exit(qemu.clone(), done.clone());
    let result = attach_console(PortSpec::Tcp(format!("127.0.0.1:{port}")), elf.path(), args);
    done.store(true, Ordering::Relaxed);
    lock(&qemu).kill();
    // The watcher only reports; its end carries nothing to check.
    let _ = watcher.join();
    result
}

/// While the console runs, tells the user when QEMU stops by itself (after
/// `halt`), since the console keeps waiting for the device to come back.
fn watch_exit(qemu: Arc<Mutex<Qemu>>, done: Arc<AtomicBool>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        while !done.load(Ordering::Relaxed) {
            if let Ok(Some(status)) = lock(&qemu).wait_timeout(Duration::ZERO) {
                eprint!("\r\nflash: QEMU stopped ({status}); press Ctrl-] to leave\r\n");
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })
}

fn lock(qemu: &Mutex<Qemu>) -> MutexGuard<'_, Qemu> {
    // The watcher never panics while holding the lock; recover regardless.
    qemu.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
