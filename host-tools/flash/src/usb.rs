//! The PC's USB-stick image: GRUB (BIOS and UEFI, hybrid ISO 9660 that also
//! boots from a USB stick) loading the Tern kernel with multiboot2, made by
//! `grub-mkrescue` from Debian's GRUB packages, without network access.

use std::io;
use std::path::Path;
use std::process::Command;

use crate::{fsutil, FlashError};

/// Where the kernel sits on the image; `boards/pc/grub.cfg` loads it from there.
pub const KERNEL_ON_IMAGE: &str = "boot/tern-pc";

/// Debian packages that provide `grub-mkrescue` and what it runs.
pub const PACKAGES: &str = "grub-common grub-pc-bin grub-efi-amd64-bin xorriso mtools";

/// Writes the USB-stick image `path` booting `kernel_elf` with `grub_cfg`.
pub fn write_usb_image(path: &Path, kernel_elf: &[u8], grub_cfg: &Path) -> Result<(), FlashError> {
    let config = std::fs::read(grub_cfg).map_err(|source| FlashError::Read {
        path: grub_cfg.to_owned(),
        source,
    })?;
    let staging = tempfile::tempdir().map_err(|source| FlashError::Write {
        path: std::env::temp_dir(),
        source,
    })?;
    let grub_dir = staging.path().join("boot/grub");
    std::fs::create_dir_all(&grub_dir).map_err(|source| FlashError::Write {
        path: grub_dir.clone(),
        source,
    })?;
    fsutil::write_atomic(&grub_dir.join("grub.cfg"), &config)?;
    fsutil::write_atomic(&staging.path().join(KERNEL_ON_IMAGE), kernel_elf)?;

    let temp = fsutil::temporary_beside(path).map_err(|source| FlashError::Write {
        path: path.to_owned(),
        source,
    })?;
    let output = Command::new("grub-mkrescue")
        .arg("-o")
        .arg(temp.path())
        .arg(staging.path())
        .output()
        .map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => FlashError::MissingTool {
                tool: "grub-mkrescue",
                packages: PACKAGES,
            },
            _ => FlashError::Spawn {
                program: "grub-mkrescue".into(),
                source,
            },
        })?;
    if !output.status.success() {
        return Err(FlashError::ToolFailed {
            tool: "grub-mkrescue",
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            packages: PACKAGES,
        });
    }
    temp.persist(path).map_err(|e| FlashError::Write {
        path: path.to_owned(),
        source: e.error,
    })?;
    Ok(())
}
