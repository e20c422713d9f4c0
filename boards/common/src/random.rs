//! The `random` shell command: reads the board's random number generator,
//! the bring-up check for virtio-rng, RDRAND and the Pi 4's RNG200.

use alloc::format;
use alloc::string::{String, ToString};
use core::fmt::Write;

use tern_unikernel::shell::{Command, CommandResult};
use tern_unikernel::Kernel;

/// Bytes printed when no count is given.
const DEFAULT_BYTES: usize = 16;
/// Most bytes one command prints.
const MAX_BYTES: usize = 64;

/// `random [bytes]`: prints that many bytes (16 by default, at most 64) from
/// the board's entropy source, in hex, or why there are none.
pub fn random_command() -> Command {
    Command::new(
        "random",
        "[bytes]",
        "print random bytes from the board's hardware generator (default 16, at most 64)",
        random,
    )
}

fn random(kernel: &mut Kernel, args: &[&str], out: &mut dyn Write) -> CommandResult {
    let count = match args {
        [] => DEFAULT_BYTES,
        [count] => match count.parse::<usize>() {
            Ok(count @ 1..=MAX_BYTES) => count,
            _ => return Err(format!("byte count must be 1..={MAX_BYTES}, not '{count}'")),
        },
        _ => return Err(String::from("usage: random [bytes]")),
    };
    let entropy = kernel
        .entropy()
        .ok_or_else(|| String::from("no hardware random number generator"))?;
    let mut bytes = [0u8; MAX_BYTES];
    entropy
        .borrow_mut()
        .fill(&mut bytes[..count])
        .map_err(|error| error.to_string())?;
    for byte in &bytes[..count] {
        let _ = write!(out, "{byte:02x}");
    }
    let _ = write!(out, "\r\n");
    Ok(())
}
