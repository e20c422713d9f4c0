//! virtio devices for the QEMU boards: the `virtio-drivers` [`Hal`] of an
//! identity-mapped kernel, virtio-rng as an [`EntropySource`], and the
//! choice of devices ([`VirtioDevices`]; virtio-net's driver is
//! [`crate::virtio_net`]).
//!
//! Both the PC (PCI transport) and QEMU `virt` (MMIO transport) run with
//! physical address == virtual address and DMA-coherent memory under QEMU,
//! so DMA buffers come straight from the kernel heap and sharing a buffer is
//! just handing over its address.

use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use core::ptr::NonNull;

use alloc::boxed::Box;
use tern_hal::{EntropyError, EntropySource, NetDevice};

use crate::virtio_net::VirtioNet;
use virtio_drivers::device::rng::VirtIORng;
use virtio_drivers::transport::{DeviceType, Transport};
use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};

/// DMA memory from the heap of an identity-mapped kernel.
pub struct HeapHal;

fn dma_layout(pages: usize) -> Layout {
    // PAGE_SIZE is a power of two and `pages` comes from the driver's
    // small queue sizes, so the layout is always valid.
    Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).expect("DMA layout")
}

// SAFETY: `dma_alloc` returns zeroed, page-aligned, exclusively owned heap
// memory whose physical address equals its address (identity map); MMIO
// addresses are identity-mapped as device memory by the boards; sharing
// needs no copy because QEMU's DMA sees the same (coherent) memory.
unsafe impl Hal for HeapHal {
    fn dma_alloc(pages: usize, _: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        // SAFETY: the layout has a non-zero size (the driver asks for at
        // least one page).
        let ptr = unsafe { alloc_zeroed(dma_layout(pages)) };
        let ptr = NonNull::new(ptr).expect("out of memory for virtio DMA");
        (ptr.as_ptr() as PhysAddr, ptr)
    }

    unsafe fn dma_dealloc(_: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        // SAFETY: the caller passes back what `dma_alloc` returned for
        // `pages` pages, which was allocated with the same layout.
        unsafe { dealloc(vaddr.as_ptr(), dma_layout(pages)) };
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _: usize) -> NonNull<u8> {
        NonNull::new(paddr as *mut u8).expect("MMIO at address 0")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _: BufferDirection) -> PhysAddr {
        buffer.cast::<u8>().as_ptr() as PhysAddr
    }

    unsafe fn unshare(_: PhysAddr, _: NonNull<[u8]>, _: BufferDirection) {}
}

/// How many requests in a row may come back empty before the generator is
/// declared broken (QEMU's backend answers every request with data).
const RNG_EMPTY_ANSWERS: usize = 8;

/// A virtio-rng device on any transport, as an [`EntropySource`].
pub struct VirtioRng<T: Transport>(VirtIORng<HeapHal, T>);

// SAFETY: the kernel is single-core and the device is only ever used from
// the run loop (never from an interrupt handler), so moving it between
// "threads" cannot race on the transport's registers.
unsafe impl<T: Transport> Send for VirtioRng<T> {}

impl<T: Transport> VirtioRng<T> {
    /// Initialises the device behind `transport`; `None` (after printing
    /// why through defmt) when the device refuses.
    pub fn new(transport: T) -> Option<Self> {
        match VirtIORng::new(transport) {
            Ok(rng) => Some(Self(rng)),
            Err(error) => {
                defmt::error!("virtio-rng: {}", defmt::Display2Format(&error));
                None
            }
        }
    }
}

impl<T: Transport> EntropySource for VirtioRng<T> {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        let mut filled = 0;
        let mut empty = 0;
        // The device may answer a request with fewer bytes than asked.
        while filled < buf.len() {
            let got = self
                .0
                .request_entropy(&mut buf[filled..])
                .map_err(|_| EntropyError::Device)?;
            if got == 0 {
                empty += 1;
                if empty == RNG_EMPTY_ANSWERS {
                    return Err(EntropyError::Timeout);
                }
            } else {
                empty = 0;
            }
            filled += got.min(buf.len() - filled);
        }
        Ok(())
    }
}

/// The devices the boards use, found among virtio transports.
#[derive(Default)]
pub struct VirtioDevices {
    /// The first network device.
    pub net: Option<Box<dyn NetDevice>>,
    /// The first entropy device.
    pub entropy: Option<Box<dyn EntropySource>>,
}

impl VirtioDevices {
    /// Initialises the device behind `transport` if it is of a type the
    /// kernel uses and no device of that type was taken yet; other
    /// transports are left alone (dropped).
    pub fn offer<T: Transport + 'static>(&mut self, transport: T) {
        match transport.device_type() {
            DeviceType::Network if self.net.is_none() => {
                self.net = VirtioNet::new(transport).map(|net| Box::new(net) as Box<dyn NetDevice>);
            }
            DeviceType::EntropySource if self.entropy.is_none() => {
                self.entropy =
                    VirtioRng::new(transport).map(|rng| Box::new(rng) as Box<dyn EntropySource>);
            }
            _ => {}
        }
    }
}
