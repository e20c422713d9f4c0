//! The contract between a Tern board and the portable kernel.
//!
//! A board (`boards/*`) owns the hardware: it boots the CPU, sets up memory,
//! interrupts and devices, and then hands the portable kernel (`unikernel/`)
//! a `&'static dyn Board`. Everything the kernel needs from the machine goes
//! through the traits here, so the kernel itself never touches a register and
//! compiles and tests on the host.
#![no_std]

pub mod boot_slot;

use core::convert::Infallible;
use core::fmt;

/// The instruction-set architecture a node runs on.
///
/// It is part of a node's identity on the wire and in checkpoints, so its
/// textual names are stable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// 64-bit Arm (the Raspberry Pi 4 and QEMU `virt`).
    Aarch64,
    /// 64-bit x86 (the PC).
    X86_64,
}

impl Isa {
    /// The stable name used in banners, checkpoints and reports.
    pub const fn name(self) -> &'static str {
        match self {
            Isa::Aarch64 => "aarch64",
            Isa::X86_64 => "x86_64",
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a board knows about itself, reported by the `info` shell command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoardFacts {
    /// Short board name: `rpi4`, `pc` or `virt`.
    pub board: &'static str,
    /// Instruction-set architecture.
    pub isa: Isa,
    /// Human-readable machine model, e.g. `Raspberry Pi 4 Model B`.
    pub model: &'static str,
    /// RAM usable by the kernel, in bytes.
    pub memory_bytes: u64,
    /// Frequency of the monotonic clock's counter, in Hz.
    pub timer_hz: u64,
    /// Board serial number, where the firmware reports one (rpi4 mailbox).
    pub serial_number: Option<u64>,
    /// Ethernet MAC address, where the board has one assigned.
    pub mac_address: Option<[u8; 6]>,
    /// The CPU clock in Hz, where the board sets it (rpi4: raised to its
    /// maximum through the firmware's mailbox).
    pub cpu_clock_hz: Option<u64>,
}

/// A byte-oriented serial console (a UART).
///
/// Writes block until the bytes are handed to the hardware; reads never
/// block: the kernel's run loop polls [`SerialPort::read_byte`].
pub trait SerialPort: embedded_io::Write<Error = Infallible> + Send {
    /// The next received byte, if one is waiting.
    fn read_byte(&mut self) -> Option<u8>;
}

/// A monotonic clock: never goes backwards, starts near zero at boot.
pub trait MonotonicClock: Sync {
    /// Nanoseconds since the clock started.
    fn now_ns(&self) -> u64;
    /// The frequency of the hardware counter behind the clock, in Hz.
    fn counter_hz(&self) -> u64;
}

/// Busy-wait delays on top of any [`MonotonicClock`], for drivers that need
/// an `embedded-hal` [`DelayNs`](embedded_hal::delay::DelayNs).
pub struct ClockDelay<'a> {
    clock: &'a dyn MonotonicClock,
}

impl<'a> ClockDelay<'a> {
    /// A delay provider reading `clock`.
    pub fn new(clock: &'a dyn MonotonicClock) -> Self {
        Self { clock }
    }
}

impl embedded_hal::delay::DelayNs for ClockDelay<'_> {
    fn delay_ns(&mut self, ns: u32) {
        let end = self.clock.now_ns().saturating_add(u64::from(ns));
        while self.clock.now_ns() < end {
            core::hint::spin_loop();
        }
    }
}

/// Heap usage, as reported by the board's global allocator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes the heap manages in total.
    pub total_bytes: u64,
    /// Bytes currently allocated.
    pub used_bytes: u64,
}

/// A whole board, as seen by the portable kernel.
pub trait Board: Sync {
    /// Identity and capabilities of the machine.
    fn facts(&self) -> BoardFacts;
    /// The monotonic clock.
    fn clock(&self) -> &dyn MonotonicClock;
    /// Number of timer interrupts taken since boot; proves the interrupt
    /// path works and gives the kernel a coarse tick.
    fn timer_interrupts(&self) -> u64;
    /// Current heap usage.
    fn heap_stats(&self) -> HeapStats;
    /// Sleep until the next interrupt (the idle path of the run loop).
    fn wait_for_interrupt(&self);
    /// Called once, after the kernel printed its banner and ran its boot
    /// commands, before its first prompt: a board that kept log lines from
    /// before the console was up sends them here, so they never land inside
    /// a command a user is typing.
    fn before_first_prompt(&self) {}
    /// Stop the machine. Under QEMU the emulator exits with a status derived
    /// from `code` (see `docs/architecture.md`); on hardware the CPU parks.
    fn halt(&self, code: u8) -> !;
}

/// Why a network device refused to send a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetError {
    /// Every transmit buffer is in flight; try again after the next poll.
    Busy,
    /// The frame is empty or longer than [`NetDevice::max_frame_len`].
    BadLength(usize),
    /// The device reported an error.
    Device,
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::Busy => f.write_str("transmit queue full"),
            NetError::BadLength(len) => write!(f, "bad frame length {len}"),
            NetError::Device => f.write_str("device error"),
        }
    }
}

/// Why an entropy source could not deliver random bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntropyError {
    /// The hardware generator did not produce data in time (absent or not
    /// modelled, e.g. the Pi 4's RNG200 under QEMU).
    Timeout,
    /// The device reported a failure.
    Device,
}

impl fmt::Display for EntropyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntropyError::Timeout => f.write_str("the random number generator produced no data"),
            EntropyError::Device => f.write_str("the random number generator failed"),
        }
    }
}

/// A hardware random number generator: the fresh nonces of the migration
/// protocol's key exchange come from here, never from the clock.
pub trait EntropySource: Send {
    /// Fills `buf` with random bytes.
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError>;
}

/// Whether a received frame's transport checksum (TCP, UDP) needs checking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxChecksum {
    /// Nobody checked it: the kernel does.
    Unchecked,
    /// The device checked it, or the frame comes from the host's memory and
    /// never crossed a wire (virtio-net's `DATA_VALID` and `NEEDS_CSUM`).
    Trusted,
}

/// A frame [`NetDevice::receive`] copied out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    /// Its length in bytes.
    pub len: usize,
    /// Whether its transport checksum still needs checking.
    pub checksum: RxChecksum,
}

impl Received {
    /// A frame of `len` bytes whose checksums nobody checked.
    pub fn unchecked(len: usize) -> Self {
        Self {
            len,
            checksum: RxChecksum::Unchecked,
        }
    }
}

/// An Ethernet controller, as the kernel's network stack (smoltcp) sees it.
///
/// Frames are whole Ethernet frames without the FCS. The interface is
/// object-safe and copy-based so that every driver fits it: virtio-net
/// (through `virtio-drivers`) as well as the Pi 4's GENET, whose
/// `receive()`/`transmit(len, fill)` map onto [`NetDevice::receive`] and
/// [`NetDevice::transmit`]. The kernel adapts it to smoltcp's `phy::Device`.
pub trait NetDevice: Send {
    /// The station's MAC address.
    fn mac_address(&self) -> [u8; 6];
    /// The longest frame the device sends or receives (1514 for a
    /// standard Ethernet MTU of 1500).
    fn max_frame_len(&self) -> usize;
    /// The longest frame the device may hand over: longer than
    /// [`NetDevice::max_frame_len`] where it merges the segments of a TCP
    /// stream (virtio-net's large receive).
    fn max_receive_len(&self) -> usize {
        self.max_frame_len()
    }
    /// Whether the link is up (a device that cannot tell says `true`).
    fn link_up(&self) -> bool;
    /// Copies the next received frame into `buf` and says how long it is and
    /// whether its checksum still needs checking; `None` when no frame is
    /// waiting. A frame longer than `buf` is dropped.
    fn receive(&mut self, buf: &mut [u8]) -> Option<Received>;
    /// Whether [`NetDevice::transmit`] would find a free buffer now.
    fn can_transmit(&mut self) -> bool;
    /// Queues `frame` for sending.
    fn transmit(&mut self, frame: &[u8]) -> Result<(), NetError>;
}
