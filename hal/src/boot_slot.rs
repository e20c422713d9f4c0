//! The provisioned boot commands: a fixed-size slot every kernel image
//! carries, which `flash --key-file` (or the lab) fills after the build so
//! that a node boots keyed with no serial console and no command line. The
//! board reads it and runs it before the commands of its command line.
//!
//! Layout: [`MARKER`] (which occurs exactly once in an image), then the
//! commands as UTF-8 up to the first NUL byte, in [`SLOT_LEN`] bytes in
//! all. The same bytes work in an ELF, a raw `kernel8.img` and a USB stick's
//! kernel: the slot sits in the image's read-only data, copied as it is.

/// First bytes of the slot.
pub const MARKER: [u8; 24] = *b"TERN-BOOT-COMMANDS-v1:\0\0";

/// Bytes of the whole slot, marker included.
pub const SLOT_LEN: usize = 1024;

/// Longest command text a slot holds (one NUL stays at its end).
pub const MAX_COMMANDS: usize = SLOT_LEN - MARKER.len() - 1;

/// An empty slot: the marker, then zeros (the initialiser of a board's slot).
pub const EMPTY: [u8; SLOT_LEN] = {
    let mut slot = [0u8; SLOT_LEN];
    let mut i = 0;
    while i < MARKER.len() {
        slot[i] = MARKER[i];
        i += 1;
    }
    slot
};

/// The commands a slot holds (empty when it was never filled or is not
/// UTF-8).
pub fn commands(slot: &[u8]) -> &str {
    let text = slot.get(MARKER.len()..).unwrap_or_default();
    let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
    core::str::from_utf8(&text[..end]).unwrap_or_default()
}

/// Why an image's slot could not be filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotError {
    /// The image has no slot (a kernel built before provisioning existed,
    /// or not a Tern kernel).
    Missing,
    /// The marker occurs more than once: which one is the slot is unclear.
    Ambiguous,
    /// The commands do not fit.
    TooLong,
    /// A command contains a NUL byte.
    Nul,
}

impl core::fmt::Display for SlotError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            SlotError::Missing => "the kernel image has no boot-command slot",
            SlotError::Ambiguous => "the kernel image has several boot-command slots",
            SlotError::TooLong => "the boot commands do not fit the kernel's slot",
            SlotError::Nul => "the boot commands contain a NUL byte",
        })
    }
}

/// Writes `commands` into the slot of `image` (an ELF or raw kernel),
/// replacing what it held.
pub fn fill(image: &mut [u8], commands: &str) -> Result<(), SlotError> {
    if commands.len() > MAX_COMMANDS {
        return Err(SlotError::TooLong);
    }
    if commands.as_bytes().contains(&0) {
        return Err(SlotError::Nul);
    }
    let mut found = image
        .windows(MARKER.len())
        .enumerate()
        .filter(|(_, w)| *w == MARKER)
        .map(|(i, _)| i);
    let start = found.next().ok_or(SlotError::Missing)?;
    if found.next().is_some() {
        return Err(SlotError::Ambiguous);
    }
    let text = image
        .get_mut(start + MARKER.len()..start + SLOT_LEN)
        .ok_or(SlotError::Missing)?;
    text.fill(0);
    text[..commands.len()].copy_from_slice(commands.as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_filled_in_place_and_read_back() {
        let mut image = [7u8; 3000].to_vec();
        image[100..100 + SLOT_LEN].copy_from_slice(&EMPTY);
        assert_eq!(commands(&image[100..100 + SLOT_LEN]), "");
        fill(&mut image, "key 00ff; net dhcp").unwrap();
        assert_eq!(commands(&image[100..100 + SLOT_LEN]), "key 00ff; net dhcp");
        // Refilled: the old text is gone.
        fill(&mut image, "net dhcp").unwrap();
        assert_eq!(commands(&image[100..100 + SLOT_LEN]), "net dhcp");
        assert!(image[..100].iter().all(|&b| b == 7));
        assert!(image[100 + SLOT_LEN..].iter().all(|&b| b == 7));
    }

    #[test]
    fn bad_images_and_commands_are_refused() {
        assert_eq!(fill(&mut [0u8; 2000], "x"), Err(SlotError::Missing));
        let mut two = [0u8; 3 * SLOT_LEN].to_vec();
        two[..SLOT_LEN].copy_from_slice(&EMPTY);
        two[SLOT_LEN..2 * SLOT_LEN].copy_from_slice(&EMPTY);
        assert_eq!(fill(&mut two, "x"), Err(SlotError::Ambiguous));
        let mut one = EMPTY.to_vec();
        let long = "k".repeat(MAX_COMMANDS + 1);
        assert_eq!(fill(&mut one, &long), Err(SlotError::TooLong));
        assert_eq!(fill(&mut one, "a\0b"), Err(SlotError::Nul));
        fill(&mut one, &"k".repeat(MAX_COMMANDS)).unwrap();
        assert_eq!(commands(&one).len(), MAX_COMMANDS);
        // A slot cut short by the end of the image is no slot.
        let mut cut = EMPTY[..100].to_vec();
        assert_eq!(fill(&mut cut, "x"), Err(SlotError::Missing));
    }
}
