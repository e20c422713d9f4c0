//! The USB stick image booted under UEFI (Debian's OVMF, no Secure Boot
//! keys), as on a current PC: GRUB's EFI build sets a GOP framebuffer, the
//! kernel shows its banner there (QEMU's screen dump compared pixel for
//! pixel with the screen console's rendering) and on COM1, reads the ACPI
//! tables GRUB passes, and its network works: OVMF places the card's 64-bit
//! BAR above 4 GiB (before, the card was skipped and `net` was unknown).
//! Linux pings the node and reads its banner on TCP port 4471. Needs root
//! (network namespace).

// Shared by the screen tests; each uses part of it.
#[allow(dead_code)]
mod screen;

// Shared by the network tests; each uses part of it.
#[allow(dead_code)]
mod reach;

use tern_flash::build::Workspace;
use tern_flash::image::KernelElf;
use tern_flash::qemu::{halt_status, uefi_args};
use tern_flash::{usb, Board, Variant};
use tern_lab::netlab::Lab;
use tern_lab::node::{kernel, Boot, Node, SerialMode, BOOT_TIMEOUT, REPLY_TIMEOUT};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const NODE_ADDRESS: &str = "10.0.2.2";

#[test]
fn the_usb_image_boots_under_uefi_with_screen_serial_and_network() {
    let work = tempfile::tempdir().unwrap();
    let elf = KernelElf::read(&kernel(Board::Pc, Variant::Tern).unwrap()).unwrap();
    let grub_cfg = Workspace::locate().unwrap().root.join("boards/pc/grub.cfg");
    let image = work.path().join("usb.img");
    usb::write_usb_image(&image, elf.bytes(), &grub_cfg).unwrap();

    let lab = Lab::create("uefi", 1).unwrap();
    let qmp = screen::Qmp::new(work.path());
    let mut launch = lab.launch(0, "virtio-net-pci", "52:54:00:7e:00:02");
    launch
        .extra_args
        .splice(0..0, uefi_args(work.path()).unwrap());
    launch.extra_args.extend(qmp.args());
    let mut node =
        Node::start_with(Board::Pc, Boot::Drive(image), SerialMode::Pipes, &launch).unwrap();

    let banner = format!("Tern {VERSION} on pc (x86_64)\r\n");
    node.expect(&banner, BOOT_TIMEOUT).unwrap();
    node.expect(tern_lab::node::tern_prompt(), BOOT_TIMEOUT)
        .unwrap();
    screen::wait_for_rows(&qmp, work.path(), &banner, 1, REPLY_TIMEOUT);

    let hw = node.command("hw").unwrap();
    assert!(hw.contains("screen: 1024x768x32 framebuffer"), "{hw}");
    assert!(
        hw.contains("acpi: revision 2"),
        "GRUB passes the ACPI 2.0 RSDP:\n{hw}"
    );
    let card = hw
        .lines()
        .find(|line| line.contains(" 1af4:1000 ") || line.contains(" 1af4:1041 "))
        .unwrap_or_else(|| panic!("no virtio-net in:\n{hw}"));
    assert!(
        card.split_whitespace()
            .filter_map(|bar| bar.split(':').nth(1)?.split('+').next())
            .filter_map(|address| u64::from_str_radix(address.trim_start_matches("0x"), 16).ok())
            .any(|address| address >= 1 << 32),
        "OVMF put no BAR above 4 GiB: {card}"
    );

    let net = node.command(&format!("net {NODE_ADDRESS}/24")).unwrap();
    assert!(net.contains("address 10.0.2.2/24"), "{net}");
    reach::pings(lab.netns(), NODE_ADDRESS);
    assert_eq!(
        reach::banner(lab.netns(), NODE_ADDRESS),
        banner.replace("\r\n", "\n")
    );

    node.send_line("halt 3").unwrap();
    assert_eq!(
        node.wait_exit(REPLY_TIMEOUT).unwrap(),
        halt_status(Board::Pc, 3)
    );
}
