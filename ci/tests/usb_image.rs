//! USB-stick image test: the PC image `flash --usb-image` makes (GRUB,
//! multiboot2) boots in QEMU q35 from a raw drive to Tern's shell.

use tern_flash::build::Workspace;
use tern_flash::image::KernelElf;
use tern_flash::qemu::halt_status;
use tern_flash::{usb, Board, Variant};
use tern_lab::node::{kernel, Boot, Node, SerialMode, BOOT_TIMEOUT, REPLY_TIMEOUT};

#[test]
fn usb_image_boots_through_grub() {
    let elf = KernelElf::read(&kernel(Board::Pc, Variant::Tern).unwrap()).unwrap();
    let grub_cfg = Workspace::locate().unwrap().root.join("boards/pc/grub.cfg");
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("usb.img");
    usb::write_usb_image(&image, elf.bytes(), &grub_cfg).unwrap();
    // GRUB's hybrid image starts with an MBR a BIOS boots from.
    let head = std::fs::read(&image).unwrap();
    assert_eq!(&head[510..512], &[0x55, 0xaa], "no MBR boot signature");

    let mut node = Node::start(Board::Pc, Boot::Drive(image), SerialMode::Pipes).unwrap();
    node.expect(
        concat!("Tern ", env!("CARGO_PKG_VERSION"), " on pc (x86_64)\r\n"),
        BOOT_TIMEOUT,
    )
    .unwrap();
    node.expect(tern_lab::node::tern_prompt(), BOOT_TIMEOUT)
        .unwrap();
    let info = node.command("info").unwrap();
    assert!(info.contains("board: pc"), "{info}");
    node.send_line("halt 3").unwrap();
    assert_eq!(
        node.wait_exit(REPLY_TIMEOUT).unwrap(),
        halt_status(Board::Pc, 3)
    );
}
