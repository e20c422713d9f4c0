//! The BCM2711's RNG200 (Broadcom iproc-rng200) random number generator, polled.
//!
//! Register map and sequences follow Linux `drivers/char/hw_random/iproc-rng200.c`:
//! a generator the firmware already runs is used as it is (Linux's `init` only
//! enables it), one that is off is reset (RBG and RNG soft resets, interrupt status
//! cleared) and enabled; words are read from `FIFO_DATA` while `FIFO_COUNT` says the FIFO holds
//! some; a NIST or master-fail lockout in `INT_STATUS` restarts it. Every wait is
//! bounded, so an absent or unmodelled generator (nothing answers at this address in
//! QEMU's `raspi4b`) gives [`Error::Timeout`], never a hang.
//!
//! Register accesses go through a [`Rng200Bus`]: on the Pi the board's accessors at
//! [`BASE`] + [`Register::offset`] (abort-safe ones, because under QEMU every access
//! there aborts), in the host tests a model. The crate has no `unsafe`.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use embedded_hal::delay::DelayNs;

/// The Pi 4's RNG200 (ARM physical address, low-peripheral mode).
pub const BASE: usize = 0xFE10_4000;

/// `RNG_CTRL` bits 12:0, the RBG enable field; 1 enables the generator.
pub const CTRL_RBGEN_MASK: u32 = 0x1FFF;
/// `RNG_CTRL` value of the RBG enable field that turns the generator on.
pub const CTRL_RBGEN_ENABLE: u32 = 1;
/// The soft-reset bit of `RNG_SOFT_RESET` and `RBG_SOFT_RESET`.
pub const SOFT_RESET: u32 = 1;
/// `INT_STATUS`: the generator locked itself out after repeated failures.
pub const INT_MASTER_FAIL_LOCKOUT: u32 = 0x8000_0000;
/// `INT_STATUS`: the NIST health test failed.
pub const INT_NIST_FAIL: u32 = 0x0000_0020;
/// `FIFO_COUNT` bits 7:0: words waiting in the FIFO.
pub const FIFO_COUNT_MASK: u32 = 0xFF;

/// How long one word may take, in microseconds: after a reset the generator first
/// runs its start-up health tests. A second, as Linux allows per read; an absent
/// generator costs a caller that second once per request.
pub const WORD_TIMEOUT_US: u32 = 1_000_000;
/// Poll interval while the FIFO is empty, in microseconds.
const POLL_US: u32 = 10;

/// The registers the driver uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Register {
    /// `RNG_CTRL` (+0x00).
    Ctrl,
    /// `RNG_SOFT_RESET` (+0x04).
    RngSoftReset,
    /// `RBG_SOFT_RESET` (+0x08).
    RbgSoftReset,
    /// `INT_STATUS` (+0x18).
    IntStatus,
    /// `FIFO_DATA` (+0x20).
    FifoData,
    /// `FIFO_COUNT` (+0x24).
    FifoCount,
}

impl Register {
    /// Byte offset from [`BASE`].
    pub const fn offset(self) -> usize {
        match self {
            Register::Ctrl => 0x00,
            Register::RngSoftReset => 0x04,
            Register::RbgSoftReset => 0x08,
            Register::IntStatus => 0x18,
            Register::FifoData => 0x20,
            Register::FifoCount => 0x24,
        }
    }
}

/// Register access backend, so that a model can react to each access in host tests.
pub trait Rng200Bus {
    /// Reads `register`.
    fn read(&mut self, register: Register) -> u32;
    /// Writes `value` to `register`.
    fn write(&mut self, register: Register, value: u32);
}

/// Why the generator gave no data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The FIFO stayed empty for [`WORD_TIMEOUT_US`] (absent or broken generator).
    #[error("the RNG200 produced no data within {WORD_TIMEOUT_US} us")]
    Timeout,
    /// A health test failed (`INT_STATUS` shown); the generator was restarted.
    #[error("the RNG200 failed its health test (INT_STATUS 0x{0:08x}) and was restarted")]
    HealthFailure(u32),
}

/// The RNG200, reset and enabled.
pub struct Rng200<B, D> {
    bus: B,
    delay: D,
}

impl<B: Rng200Bus, D: DelayNs> Rng200<B, D> {
    /// Keeps a generator the firmware left enabled as it is: a reset would throw
    /// away its warmed-up state and rerun the start-up tests. Otherwise resets and
    /// enables it (Linux `iproc_rng200_restart`). Cannot fail: whether the generator
    /// works shows in the first [`Rng200::fill`].
    pub fn new(bus: B, delay: D) -> Self {
        let mut rng = Self { bus, delay };
        if rng.bus.read(Register::Ctrl) & CTRL_RBGEN_MASK != CTRL_RBGEN_ENABLE {
            rng.restart();
        }
        rng
    }

    fn set_enabled(&mut self, enabled: bool) {
        let ctrl = self.bus.read(Register::Ctrl) & !CTRL_RBGEN_MASK;
        let ctrl = if enabled {
            ctrl | CTRL_RBGEN_ENABLE
        } else {
            ctrl
        };
        self.bus.write(Register::Ctrl, ctrl);
    }

    /// Disable, clear every interrupt status bit, pulse the RBG then the RNG soft
    /// reset (released in reverse order), enable.
    fn restart(&mut self) {
        self.set_enabled(false);
        self.bus.write(Register::IntStatus, u32::MAX);
        for (register, set) in [
            (Register::RbgSoftReset, true),
            (Register::RngSoftReset, true),
            (Register::RngSoftReset, false),
            (Register::RbgSoftReset, false),
        ] {
            let value = self.bus.read(register);
            let value = if set {
                value | SOFT_RESET
            } else {
                value & !SOFT_RESET
            };
            self.bus.write(register, value);
        }
        self.set_enabled(true);
    }

    /// The next 32-bit word from the FIFO, waiting at most [`WORD_TIMEOUT_US`].
    fn word(&mut self) -> Result<u32, Error> {
        let mut waited = 0;
        loop {
            let status = self.bus.read(Register::IntStatus);
            if status & (INT_MASTER_FAIL_LOCKOUT | INT_NIST_FAIL) != 0 {
                self.restart();
                return Err(Error::HealthFailure(status));
            }
            if self.bus.read(Register::FifoCount) & FIFO_COUNT_MASK > 0 {
                return Ok(self.bus.read(Register::FifoData));
            }
            if waited >= WORD_TIMEOUT_US {
                return Err(Error::Timeout);
            }
            self.delay.delay_us(POLL_US);
            waited += POLL_US;
        }
    }

    /// Fills `buf` with random bytes, one FIFO word per 4 bytes (little-endian; the
    /// unused bytes of a last partial word are discarded).
    pub fn fill(&mut self, buf: &mut [u8]) -> Result<(), Error> {
        for chunk in buf.chunks_mut(4) {
            let word = self.word()?.to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        Ok(())
    }
}
