//! The BCM2711's RNG200 as the kernel's entropy source, over `tern-rng200`.

use tern_board_aarch64::probe;
use tern_hal::{ClockDelay, EntropyError, EntropySource, MonotonicClock};
use tern_rng200::{Register, Rng200, Rng200Bus, BASE};

/// The registers through the abort-safe accessors: in QEMU's `raspi4b` no
/// device answers at this address (every access takes an external abort),
/// so there a register that does not answer reads as 0 (an empty FIFO: the
/// driver times out) and a write to it is lost.
struct Bus(());

impl Rng200Bus for Bus {
    fn read(&mut self, register: Register) -> u32 {
        // SAFETY: an aligned register of the RNG200 block, mapped as device
        // memory; `Rng200Entropy::new`'s caller gave the driver sole use.
        unsafe { probe::read32(BASE + register.offset()) }.unwrap_or(0)
    }

    fn write(&mut self, register: Register, value: u32) {
        // SAFETY: as for `read`. A write nobody answers changes nothing.
        let _ = unsafe { probe::write32(BASE + register.offset(), value) };
    }
}

/// The RNG200, enabled, as an [`EntropySource`].
pub struct Rng200Entropy(Rng200<Bus, ClockDelay<'static>>);

impl Rng200Entropy {
    /// Takes the RNG200 at [`BASE`] as the firmware left it running, or
    /// resets and enables it. Whether it
    /// works shows in the first [`EntropySource::fill`] (under QEMU, which
    /// does not model it: [`EntropyError::Timeout`]).
    ///
    /// # Safety
    ///
    /// Call once: the RNG200 registers, identity-mapped as device memory,
    /// must not be used by anything else.
    pub unsafe fn new(clock: &'static dyn MonotonicClock) -> Self {
        Self(Rng200::new(Bus(()), ClockDelay::new(clock)))
    }
}

impl EntropySource for Rng200Entropy {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        self.0.fill(buf).map_err(|error| match error {
            tern_rng200::Error::Timeout => EntropyError::Timeout,
            tern_rng200::Error::HealthFailure(_) => EntropyError::Device,
        })
    }
}
