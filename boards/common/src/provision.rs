//! The boot commands provisioned into the kernel image after its build
//! (`flash --key-file`, `tern_hal::boot_slot`): a node keyed at flash time
//! boots keyed, with no serial console and no command line.

use alloc::string::String;

use tern_hal::boot_slot::{self, SLOT_LEN};

/// The slot `flash` fills; the marker at its start is how it is found.
#[used]
static BOOT_SLOT: [u8; SLOT_LEN] = boot_slot::EMPTY;

/// The provisioned commands (empty when none were).
pub fn provisioned_commands() -> String {
    // The slot's bytes change after the build: read them through an opaque
    // reference, not as the constant the compiler saw.
    let slot: &[u8; SLOT_LEN] = core::hint::black_box(&BOOT_SLOT);
    String::from(boot_slot::commands(slot))
}

/// The provisioned commands, then those of the board's command line
/// (`;`-separated, as the kernel runs them).
pub fn boot_commands(command_line: &str) -> String {
    let provisioned = provisioned_commands();
    match (provisioned.is_empty(), command_line.trim().is_empty()) {
        (_, true) => provisioned,
        (true, false) => String::from(command_line),
        (false, false) => alloc::format!("{provisioned};{command_line}"),
    }
}
