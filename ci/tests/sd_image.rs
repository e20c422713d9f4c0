//! SD-card image test: the image `flash --sd-image` writes has a boot
//! partition that `fsck.fat` accepts and `mdir` lists, and the kernel8.img
//! copied out of it with `mcopy` boots in QEMU raspi4b.

use std::path::Path;
use std::process::Command;

use tern_flash::image::KernelElf;
use tern_flash::rpi4::{self, FIRMWARE_FILES};
use tern_flash::{Board, Variant};
use tern_lab::node::{kernel, Boot, Node, SerialMode, BOOT_TIMEOUT};

/// Runs `program` and returns its standard output; fails the test with its
/// output when it fails.
fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("{program}: {error} (run ci/setup.sh)"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{program} {args:?} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn path(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

#[test]
fn sd_image_passes_fsck_and_its_kernel_boots() {
    let work = tempfile::tempdir().unwrap();
    let firmware = work.path().join("firmware");
    std::fs::create_dir(&firmware).unwrap();
    for name in FIRMWARE_FILES {
        std::fs::write(firmware.join(name), format!("dummy {name}\n")).unwrap();
    }
    let elf = KernelElf::read(&kernel(Board::Rpi4, Variant::Tern).unwrap()).unwrap();
    let kernel8 = elf.raw_image(Board::Rpi4.raw_image_limit()).unwrap();
    let image = work.path().join("sd.img");
    // With JTAG on, so that mtools also reads the longer config.txt back.
    let config = rpi4::BootConfig { jtag: true };
    rpi4::write_sd_image(&image, &kernel8, Some(&firmware), config).unwrap();

    // fsck.fat wants a file holding just the partition.
    let bytes = std::fs::read(&image).unwrap();
    let partition = work.path().join("boot.img");
    std::fs::write(&partition, &bytes[rpi4::partition_offset() as usize..]).unwrap();
    // Exit status 0: no errors found (with -n, any error would be status 1).
    run("fsck.fat", &["-n", path(&partition)]);

    // mtools reads the partition inside the whole image.
    let drive = format!("{}@@{}", path(&image), rpi4::partition_offset());
    let listing = run("mdir", &["-i", &drive, "-b", "::"]);
    for name in [
        "config.txt",
        "kernel8.img",
        "start4.elf",
        "fixup4.dat",
        "bcm2711-rpi-4-b.dtb",
    ] {
        assert!(
            listing
                .lines()
                .any(|line| line.trim_end() == format!("::/{name}")),
            "{name} not listed:\n{listing}"
        );
    }
    let copied = work.path().join("kernel8.img");
    run("mcopy", &["-i", &drive, "::kernel8.img", path(&copied)]);
    assert_eq!(std::fs::read(&copied).unwrap(), kernel8);
    let copied_config = work.path().join("config.txt");
    run(
        "mcopy",
        &["-i", &drive, "::config.txt", path(&copied_config)],
    );
    assert_eq!(
        std::fs::read_to_string(&copied_config).unwrap(),
        config.config_txt()
    );

    let mut node = Node::start(Board::Rpi4, Boot::Image(copied), SerialMode::Pipes).unwrap();
    node.expect(
        concat!("Tern ", env!("CARGO_PKG_VERSION"), " on rpi4 (aarch64)\r\n"),
        BOOT_TIMEOUT,
    )
    .unwrap();
    node.expect(tern_lab::node::tern_prompt(), BOOT_TIMEOUT)
        .unwrap();
}
