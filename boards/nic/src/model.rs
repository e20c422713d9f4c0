//! Pieces for the drivers' register-level models in host tests (feature
//! `model`): physical memory the model reaches by address, the regions and
//! allocator a driver gets from it, and a delay that only counts.

use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

use crate::{Dma, DmaRegion};

/// Physical memory: regions by base address, shared by the driver's
/// regions and the model's DMA.
#[derive(Clone, Default)]
pub struct Memory(Rc<RefCell<BTreeMap<u64, Vec<u8>>>>);

impl Memory {
    /// Runs `f` on `len` bytes at `phys` (panics when no region holds them:
    /// a DMA to memory the driver never handed out).
    pub fn with<R>(&self, phys: u64, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        let mut regions = self.0.borrow_mut();
        let (base, bytes) = regions
            .range_mut(..=phys)
            .next_back()
            .unwrap_or_else(|| panic!("DMA to {phys:#x}: no memory there"));
        let start = (phys - base) as usize;
        let area = bytes
            .get_mut(start..start + len)
            .unwrap_or_else(|| panic!("DMA to {phys:#x}+{len} runs past its region"));
        f(area)
    }

    /// The bytes at `phys`.
    pub fn read(&self, phys: u64, len: usize) -> Vec<u8> {
        self.with(phys, len, |a| a.to_vec())
    }

    /// Writes `data` at `phys`.
    pub fn write(&self, phys: u64, data: &[u8]) {
        self.with(phys, data.len(), |a| a.copy_from_slice(data));
    }

    /// The little-endian `u32` at `phys`.
    pub fn read_u32(&self, phys: u64) -> u32 {
        u32::from_le_bytes(self.read(phys, 4).try_into().unwrap_or_default())
    }

    /// The little-endian `u64` at `phys`.
    pub fn read_u64(&self, phys: u64) -> u64 {
        u64::from_le_bytes(self.read(phys, 8).try_into().unwrap_or_default())
    }

    /// Writes a little-endian `u32` at `phys`.
    pub fn write_u32(&self, phys: u64, value: u32) {
        self.write(phys, &value.to_le_bytes());
    }
}

/// A region of [`Memory`].
pub struct Region {
    memory: Memory,
    phys: u64,
    len: usize,
}

impl DmaRegion for Region {
    fn phys(&self) -> u64 {
        self.phys
    }
    fn len(&self) -> usize {
        self.len
    }
    fn read_u32(&self, offset: usize) -> u32 {
        self.memory.read_u32(self.phys + offset as u64)
    }
    fn write_u32(&mut self, offset: usize, value: u32) {
        self.memory.write_u32(self.phys + offset as u64, value);
    }
    fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        out.copy_from_slice(&self.memory.read(self.phys + offset as u64, out.len()));
    }
    fn write_bytes(&mut self, offset: usize, data: &[u8]) {
        self.memory.write(self.phys + offset as u64, data);
    }
}

/// Hands out regions of [`Memory`] above 4 GiB (so that the high halves of
/// addresses matter), within a budget in bytes.
pub struct ModelDma {
    memory: Memory,
    next: u64,
    /// Bytes still available.
    pub budget: usize,
}

impl ModelDma {
    /// An allocator over `memory` with no limit.
    pub fn new(memory: Memory) -> Self {
        Self {
            memory,
            next: 0x1_2345_0000,
            budget: usize::MAX,
        }
    }
}

impl Dma for ModelDma {
    type Region = Region;
    fn allocate(&mut self, len: usize, align: usize) -> Option<Region> {
        self.budget = self.budget.checked_sub(len)?;
        let phys = self.next.next_multiple_of(align as u64);
        self.next = phys + len as u64 + 0x1000;
        self.memory.0.borrow_mut().insert(phys, vec![0; len]);
        Some(Region {
            memory: self.memory.clone(),
            phys,
            len,
        })
    }
}

/// A delay that only adds up the time asked for.
#[derive(Default)]
pub struct CountingDelay {
    /// Nanoseconds waited.
    pub ns: u64,
}

impl embedded_hal::delay::DelayNs for CountingDelay {
    fn delay_ns(&mut self, ns: u32) {
        self.ns += u64::from(ns);
    }
}
