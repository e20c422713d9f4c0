//! The PC's side of the PCI network drivers (`tern-intel-eth`, and any
//! other driver built on `tern-nic`): register access on a memory BAR,
//! DMA memory from the heap, and delays on the TSC clock.
//!
//! On x86 DMA is cache-coherent, so the regions need no maintenance; the
//! heap is identity-mapped, so a region's address is its bus address. Both
//! are volatile: the card reads and writes them behind the compiler's back.

use alloc::alloc::{alloc_zeroed, Layout};
use core::ptr::NonNull;

use tern_hal::{ClockDelay, MonotonicClock};
use tern_nic::{Dma, DmaRegion, RegisterBus};

/// A card's register BAR, mapped uncached.
pub struct MmioBus {
    base: NonNull<u32>,
    len: usize,
}

// SAFETY: the kernel is single-core and a bus is only used by the driver
// that owns it, from the run loop.
unsafe impl Send for MmioBus {}

impl MmioBus {
    /// The register window at `base`, `len` bytes.
    ///
    /// # Safety
    ///
    /// `base..base + len` must be a card's register BAR, mapped uncached,
    /// and used by nothing else.
    pub unsafe fn new(base: u64, len: usize) -> Option<Self> {
        Some(Self {
            base: NonNull::new(base as *mut u32)?,
            len,
        })
    }

    /// The register of type `T` at `offset`, if it lies in the window and
    /// is naturally aligned.
    fn register<T>(&self, offset: usize) -> Option<*mut T> {
        let size = core::mem::size_of::<T>();
        (offset.is_multiple_of(size) && offset + size <= self.len)
            // SAFETY: inside the window (checked), so the pointer stays in
            // the BAR's mapping.
            .then(|| unsafe { self.base.as_ptr().byte_add(offset).cast::<T>() })
    }

    fn read<T: Copy>(&mut self, offset: usize, absent: T) -> T {
        // SAFETY: a register of the BAR (see `new`), aligned, read once at
        // its width.
        self.register::<T>(offset)
            .map_or(absent, |r| unsafe { r.read_volatile() })
    }

    fn write<T>(&mut self, offset: usize, value: T) {
        if let Some(register) = self.register::<T>(offset) {
            // SAFETY: a register of the BAR (see `new`), aligned, written
            // at its width.
            unsafe { register.write_volatile(value) };
        }
    }
}

/// Offsets outside the window read as all ones, like an absent device.
impl RegisterBus for MmioBus {
    fn read32(&mut self, offset: usize) -> u32 {
        self.read(offset, u32::MAX)
    }

    fn write32(&mut self, offset: usize, value: u32) {
        self.write(offset, value);
    }

    fn read16(&mut self, offset: usize) -> u16 {
        self.read(offset, u16::MAX)
    }

    fn write16(&mut self, offset: usize, value: u16) {
        self.write(offset, value);
    }

    fn read8(&mut self, offset: usize) -> u8 {
        self.read(offset, u8::MAX)
    }

    fn write8(&mut self, offset: usize, value: u8) {
        self.write(offset, value);
    }
}

/// A heap allocation the card reaches by DMA, never freed (cards keep their
/// rings for the kernel's life).
pub struct HeapRegion {
    start: NonNull<u8>,
    len: usize,
}

// SAFETY: as for `MmioBus`: single core, one owner.
unsafe impl Send for HeapRegion {}

impl HeapRegion {
    fn at(&self, offset: usize, len: usize) -> *mut u8 {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.len),
            "DMA access {offset}+{len} outside a {}-byte region",
            self.len
        );
        // SAFETY: inside the allocation (checked above).
        unsafe { self.start.as_ptr().add(offset) }
    }
}

impl DmaRegion for HeapRegion {
    fn phys(&self) -> u64 {
        // Identity mapping: the address is the physical address.
        self.start.as_ptr() as u64
    }

    fn len(&self) -> usize {
        self.len
    }

    fn read_u32(&self, offset: usize) -> u32 {
        // SAFETY: inside the region (checked by `at`); the driver keeps its
        // words 4-aligned; volatile because the card writes it.
        unsafe { self.at(offset, 4).cast::<u32>().read_volatile() }
    }

    fn write_u32(&mut self, offset: usize, value: u32) {
        // SAFETY: as for `read_u32`.
        unsafe { self.at(offset, 4).cast::<u32>().write_volatile(value) }
    }

    fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        let from = self.at(offset, out.len());
        for (i, byte) in out.iter_mut().enumerate() {
            // SAFETY: inside the region (checked by `at` for the whole run).
            *byte = unsafe { from.add(i).read_volatile() };
        }
    }

    fn write_bytes(&mut self, offset: usize, data: &[u8]) {
        let to = self.at(offset, data.len());
        for (i, byte) in data.iter().enumerate() {
            // SAFETY: as for `read_bytes`.
            unsafe { to.add(i).write_volatile(*byte) };
        }
    }
}

/// DMA memory from the kernel heap.
pub struct HeapDma;

impl Dma for HeapDma {
    type Region = HeapRegion;

    fn allocate(&mut self, len: usize, align: usize) -> Option<HeapRegion> {
        let layout = Layout::from_size_align(len.max(1), align).ok()?;
        // SAFETY: the layout has a non-zero size.
        let start = NonNull::new(unsafe { alloc_zeroed(layout) })?;
        Some(HeapRegion { start, len })
    }
}

/// Delays for drivers, on the board's clock.
pub fn delay(clock: &'static dyn MonotonicClock) -> ClockDelay<'static> {
    ClockDelay::new(clock)
}
