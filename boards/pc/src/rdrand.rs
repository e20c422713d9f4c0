//! RDRAND, the CPU's own random number generator: the PC's entropy source
//! when no virtio-rng device is present (real hardware).

use core::arch::x86_64::{__cpuid, _rdrand64_step};

use tern_hal::{EntropyError, EntropySource};

/// CPUID.01H:ECX bit 30: the CPU implements RDRAND.
const CPUID_ECX_RDRAND: u32 = 1 << 30;
/// Attempts per word before giving up, as Intel's DRNG guide advises (a
/// healthy generator fails ten times in a row only if it is broken).
const RETRIES: usize = 10;

/// The RDRAND instruction, on a CPU that has it.
pub struct Rdrand(());

impl Rdrand {
    /// RDRAND if CPUID reports it, `None` otherwise.
    pub fn detect() -> Option<Self> {
        (__cpuid(1).ecx & CPUID_ECX_RDRAND != 0).then_some(Self(()))
    }
}

/// One 64-bit random word, retried up to [`RETRIES`] times. An all-ones
/// word is refused too: some AMD CPUs return it with the success flag set
/// once their generator has failed.
#[target_feature(enable = "rdrand")]
fn word() -> Option<u64> {
    for _ in 0..RETRIES {
        let mut value = 0;
        // Safe to call here: this function carries the `rdrand` feature.
        if _rdrand64_step(&mut value) == 1 && value != u64::MAX {
            return Some(value);
        }
    }
    None
}

impl EntropySource for Rdrand {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        for chunk in buf.chunks_mut(8) {
            // SAFETY: a `Rdrand` exists only after `detect` saw the CPUID
            // bit, so the CPU executes the instruction.
            let value = unsafe { word() }.ok_or(EntropyError::Device)?;
            chunk.copy_from_slice(&value.to_le_bytes()[..chunk.len()]);
        }
        Ok(())
    }
}
