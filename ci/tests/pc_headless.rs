//! A PC with no COM port at all (QEMU `-nodefaults`: no serial port, no
//! default devices; a VGA card and a network card added), booted from the
//! USB stick image through GRUB (legacy BIOS): the kernel must not mistake
//! the absent UART's 0xFF for input (that livelocked the run loop), must
//! show its banner and its boot commands on the framebuffer GRUB set up
//! (compared pixel for pixel with the screen console's own rendering), take
//! its address from the kernel command line (the words after the kernel's
//! path in `grub.cfg`), and answer on the network: Linux pings it and reads
//! the banner from TCP port 4471. Then a command typed on the PS/2 keyboard
//! (QMP `send-key`) moves the node to another address, where it answers.
//! Needs root (network namespace).

// Shared by the screen tests; each uses part of it.
#[allow(dead_code)]
mod screen;

// Shared by the network tests; each uses part of it.
#[allow(dead_code)]
mod reach;

use tern_flash::build::Workspace;
use tern_flash::image::KernelElf;
use tern_flash::{usb, Board, Variant};
use tern_lab::netlab::Lab;
use tern_lab::node::{kernel, Boot, Node, SerialMode, BOOT_TIMEOUT};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const NODE_ADDRESS: &str = "10.0.2.2";
/// The address typed on the keyboard.
const TYPED_ADDRESS: &str = "10.0.2.5";

#[test]
fn a_pc_without_com1_shows_its_banner_takes_its_address_and_answers() {
    let work = tempfile::tempdir().unwrap();
    // The stick's grub.cfg with a command line for the kernel.
    let root = Workspace::locate().unwrap().root;
    let cfg = std::fs::read_to_string(root.join("boards/pc/grub.cfg")).unwrap();
    let kernel_line = "multiboot2 /boot/tern-pc";
    assert!(cfg.contains(kernel_line), "{cfg}");
    let cfg = cfg.replace(kernel_line, &format!("{kernel_line} net {NODE_ADDRESS}/24"));
    let cfg_path = work.path().join("grub.cfg");
    std::fs::write(&cfg_path, cfg).unwrap();
    let elf = KernelElf::read(&kernel(Board::Pc, Variant::Tern).unwrap()).unwrap();
    let image = work.path().join("usb.img");
    usb::write_usb_image(&image, elf.bytes(), &cfg_path).unwrap();

    let lab = Lab::create("headless", 1).unwrap();
    let qmp = screen::Qmp::new(work.path());
    let mut launch = lab.launch(0, "virtio-net-pci", "52:54:00:7e:00:02");
    launch
        .extra_args
        .splice(0..0, ["-nodefaults", "-device", "VGA"].map(String::from));
    launch.extra_args.extend(qmp.args());
    let node = Node::start_with(Board::Pc, Boot::Drive(image), SerialMode::None, &launch).unwrap();

    screen::wait_for_rows(
        &qmp,
        work.path(),
        &format!("Tern {VERSION} on pc (x86_64)\r\nboot: net {NODE_ADDRESS}/24\r\n"),
        2,
        BOOT_TIMEOUT,
    );
    // The node has no console to wait on: ping until it answers.
    let netns = lab.netns();
    assert!(
        reach::answers_within(netns, NODE_ADDRESS, 30),
        "no answer to ping; QEMU:\n{}",
        node.qemu_stderr()
    );
    reach::pings(netns, NODE_ADDRESS);
    assert_eq!(
        reach::banner(netns, NODE_ADDRESS),
        format!("Tern {VERSION} on pc (x86_64)\n")
    );

    // The keyboard: a new address, typed.
    qmp.type_text(&format!("net {TYPED_ADDRESS}/24\n"));
    let moved = reach::answers_within(netns, TYPED_ADDRESS, 30);
    assert!(moved, "the typed address does not answer");
}
