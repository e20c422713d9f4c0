//! `flash`: builds a Tern kernel for a board and deploys it — into QEMU with
//! the console attached (the default), into a directory, a mounted Pi boot
//! partition, an SD-card image, a PC USB-stick image, or over a serial line
//! to the rpi4 chainloader.

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
use tern_flash::ports::PortMemory;
use tern_flash::qemu::{self, Qemu, Serial};
use tern_flash::{rpi4, usb, Board, FlashError, Variant};

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
    /// rpi4: push the kernel to the chainloader on PORT (a device or
    /// tcp:HOST:PORT); without PORT, the one last used for the board.
    #[arg(long, value_name = "PORT", num_args = 0..=1, default_missing_value = "")]
    serial: Option<String>,
    /// Serial speed for --serial and the console.
    #[arg(long, default_value_t = tern_console::DEFAULT_BAUD)]
    baud: u32,
    /// After --serial, attach the console to the same port.
    #[arg(long, requires = "serial")]
    monitor: bool,
    /// pc: create a BIOS+UEFI bootable USB-stick image (GRUB, multiboot2).
    #[arg(long, value_name = "FILE")]
    usb_image: Option<PathBuf>,
    /// Append the console's output to FILE (QEMU and --monitor).
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
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
    ];
    for (flag, given) in rpi4_only {
        if given && board != Board::Rpi4 {
            bail!("{flag} is for --board rpi4 only");
        }
    }
    if args.usb_image.is_some() && board != Board::Pc {
        bail!("--usb-image is for --board pc only");
    }

    let elf_path = match &args.kernel {
        Some(path) => path.clone(),
        None => Workspace::locate()?.build_kernel(board, variant, false)?,
    };
    let elf = KernelElf::read(&elf_path)?;
    elf.check(board, variant)?;

    if let Some(dir) = &args.save_image {
        save_image(board, &elf, dir)?;
        eprintln!("flash: saved the {board} image to {}", dir.display());
    } else if let Some(dir) = &args.boot_dir {
        let missing = rpi4::write_boot_dir(dir, &raw_image(board, &elf)?)?;
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
        rpi4::write_sd_image(image, &raw_image(board, &elf)?, args.firmware.as_deref())?;
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

fn save_image(board: Board, elf: &KernelElf, dir: &Path) -> Result<()> {
    if board.boots_raw_image() {
        rpi4::save_image(dir, &raw_image(board, elf)?, elf.bytes())?;
    } else {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        tern_flash::fsutil::write_atomic(&dir.join("kernel.elf"), elf.bytes())?;
    }
    Ok(())
}

/// Pushes the raw image to the chainloader and remembers the port; returns
/// the port and the still open link.
fn serial_push(
    board: Board,
    elf: &KernelElf,
    port: &str,
    baud: u32,
) -> Result<(PortSpec, Box<dyn chainload::Link>)> {
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
    let image = raw_image(board, elf)?;
    let mut link = chainload::open(&spec, baud)?;
    memory.remember(board, &port)?;
    eprintln!("flash: waiting for the chainloader on {spec} (reset the board if it is running something else)");
    let bar = ProgressBar::new(image.len() as u64).with_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}")
            .context("progress bar template")?,
    );
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
