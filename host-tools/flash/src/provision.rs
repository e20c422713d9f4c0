//! Provisioning: boot commands written into a kernel's boot-command slot
//! (`tern_hal::boot_slot`) before it is deployed, so the node runs them at
//! boot with no serial console. `flash --key-file FILE` provisions the
//! cluster key this way in every mode (QEMU, boot folder, SD-card and USB
//! images, the serial chainloader, JTAG); the lab does the same for its
//! QEMU nodes.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use tern_hal::boot_slot;

use crate::image::KernelElf;
use crate::FlashError;

/// The boot command that keys a node with `key_hex` (64 hex digits).
pub fn key_command(key_hex: &str) -> String {
    format!("key {key_hex}")
}

/// A copy of `elf` with `commands` in its boot-command slot, written to
/// `dir/<file name>` readable by its owner only (it may hold the key).
pub fn provisioned(elf: &KernelElf, commands: &str, dir: &Path) -> Result<KernelElf, FlashError> {
    let mut bytes = elf.bytes().to_vec();
    boot_slot::fill(&mut bytes, commands).map_err(|e| FlashError::Provision {
        path: elf.path().to_owned(),
        reason: e.to_string(),
    })?;
    let name = elf
        .path()
        .file_name()
        .map_or_else(|| "kernel.elf".into(), |n| n.to_owned());
    let path = dir.join(name);
    let write = |path: &Path| -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(&bytes)?;
        file.sync_all()
    };
    write(&path).map_err(|source| FlashError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(KernelElf::from_bytes(&path, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provisioned_copy_carries_the_commands_and_the_original_is_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let mut image = vec![1u8; 100];
        image.extend_from_slice(&boot_slot::EMPTY);
        image.extend_from_slice(&[2u8; 100]);
        let original = KernelElf::from_bytes(&dir.path().join("tern-virt"), image.clone());
        let out = tempfile::tempdir().unwrap();
        let keyed = provisioned(&original, &key_command(&"ab".repeat(32)), out.path()).unwrap();
        assert_eq!(keyed.path(), out.path().join("tern-virt"));
        let on_disk = std::fs::read(keyed.path()).unwrap();
        assert_eq!(on_disk, keyed.bytes());
        assert_eq!(
            boot_slot::commands(&on_disk[100..100 + boot_slot::SLOT_LEN]),
            format!("key {}", "ab".repeat(32))
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(keyed.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(original.bytes(), &image[..]);
        let bare = KernelElf::from_bytes(&dir.path().join("old"), vec![0; 50]);
        let Err(err) = provisioned(&bare, "key 00", out.path()) else {
            panic!("a kernel without a slot was provisioned");
        };
        assert!(err.to_string().contains("no boot-command slot"), "{err}");
    }
}
