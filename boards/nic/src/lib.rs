//! What Tern's PCI network drivers (`tern-intel-eth`, `tern-rtl8168`) share:
//!
//! - [`RegisterBus`]: every register access of a driver goes through it, so
//!   that a host test can put a register-level model of the controller in
//!   the hardware's place (the board's implementation is volatile MMIO on
//!   the card's BAR);
//! - [`Dma`] and [`DmaRegion`]: memory the card reads and writes by
//!   physical address (descriptor rings, packet buffers), also reached only
//!   through methods, so that the model can play the card's DMA;
//! - the link types and clause-22 PHY registers;
//! - [`rings::Rings`]: the RX/TX ring bookkeeping (positions, buffers, what
//!   becomes of a received frame), whatever the descriptors look like;
//! - [`PolledNet`]: any [`EthernetDriver`] as the kernel's
//!   [`tern_hal::NetDevice`], with the link read on a timer.
//!
//! The crate has no `unsafe`: the board implements the traits over real
//! memory (see `docs/nics.md`). With the `model` feature it also provides
//! the physical memory and allocator the drivers' host tests give their
//! models ([`model`]).
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

pub mod mii;
#[cfg(feature = "model")]
pub mod model;
mod net;
pub mod rings;

pub use net::{EthernetDriver, PolledNet, TxError, FRAME_LEN, LINK_POLL_INTERVAL_NS};

/// A card's memory-mapped registers.
pub trait RegisterBus {
    /// Reads the 32-bit register at byte `offset` of the register BAR.
    fn read32(&mut self, offset: usize) -> u32;
    /// Writes the 32-bit register at byte `offset`.
    fn write32(&mut self, offset: usize, value: u32);
    /// Reads the 16-bit register at `offset` (Realtek cards have 8- and
    /// 16-bit registers, which must be accessed at their width).
    fn read16(&mut self, offset: usize) -> u16;
    /// Writes the 16-bit register at `offset`.
    fn write16(&mut self, offset: usize, value: u16);
    /// Reads the 8-bit register at `offset`.
    fn read8(&mut self, offset: usize) -> u8;
    /// Writes the 8-bit register at `offset`.
    fn write8(&mut self, offset: usize, value: u8);
}

/// A block of memory the card reaches by DMA: physically contiguous, its
/// contents read and written only through these methods (volatile on the
/// board: the card changes it behind the compiler's back).
pub trait DmaRegion {
    /// The physical (bus) address of byte 0.
    fn phys(&self) -> u64;
    /// Bytes in the region.
    fn len(&self) -> usize;
    /// Whether the region is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Reads the little-endian `u32` at `offset`.
    fn read_u32(&self, offset: usize) -> u32;
    /// Writes the little-endian `u32` at `offset`.
    fn write_u32(&mut self, offset: usize, value: u32);
    /// Copies `out.len()` bytes from `offset`.
    fn read_bytes(&self, offset: usize, out: &mut [u8]);
    /// Copies `data` to `offset`.
    fn write_bytes(&mut self, offset: usize, data: &[u8]);

    /// Reads the little-endian `u64` at `offset` (two `u32` reads, low
    /// first).
    fn read_u64(&self, offset: usize) -> u64 {
        u64::from(self.read_u32(offset)) | u64::from(self.read_u32(offset + 4)) << 32
    }
    /// Writes the little-endian `u64` at `offset` (low half first).
    fn write_u64(&mut self, offset: usize, value: u64) {
        self.write_u32(offset, value as u32);
        self.write_u32(offset + 4, (value >> 32) as u32);
    }
}

/// Where DMA memory comes from.
pub trait Dma {
    /// The regions it hands out.
    type Region: DmaRegion;
    /// `len` zeroed bytes aligned to `align` (a power of two), `None` when
    /// out of memory.
    fn allocate(&mut self, len: usize, align: usize) -> Option<Self::Region>;
}

/// Link speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speed {
    /// 10 Mb/s.
    Mbps10,
    /// 100 Mb/s.
    Mbps100,
    /// 1000 Mb/s.
    Mbps1000,
    /// 2500 Mb/s (I225/I226, RTL8125).
    Mbps2500,
}

/// An established link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Speed.
    pub speed: Speed,
    /// Full (true) or half duplex.
    pub full_duplex: bool,
}

/// Counters of a driver's own decisions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames handed to the kernel.
    pub rx_frames: u64,
    /// Frames dropped: error bits, split over several buffers, or longer
    /// than the kernel's buffer.
    pub rx_errors: u64,
    /// Frames queued for sending.
    pub tx_frames: u64,
}

/// Ring positions: `index + 1` modulo the ring size.
pub fn next(index: usize, size: usize) -> usize {
    if index + 1 == size {
        0
    } else {
        index + 1
    }
}
