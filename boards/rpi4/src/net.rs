//! GENET v5 Ethernet on the Pi 4 as the kernel's network device, over
//! `tern-genet`: the MMIO window at 0xFD58_0000, packet buffers from the
//! heap, and cache maintenance for the non-coherent DMA.

use alloc::boxed::Box;
use alloc::vec::Vec;

use tern_board_aarch64::{cache, probe, report_no_network};
use tern_genet::regs::{GenetWindow, DESCRIPTORS, SYS_REV_CTRL};
use tern_genet::{
    CacheMaintenance, DmaMemory, Error, Genet, GenetBus, GenetNet, MmioBus, RgmiiDelays, Ring,
    BUFFER_SIZE,
};
use tern_hal::{ClockDelay, MonotonicClock, NetDevice};

/// GENET v5 register window (ARM physical address).
pub const GENET_BASE: usize = 0xFD58_0000;

/// The register window with the `Send` the kernel's device trait asks for.
struct Bus(MmioBus);

// SAFETY: the kernel is single-core and drives the controller only from its
// run loop, never from an interrupt handler, so moving the register
// reference between "threads" cannot race.
unsafe impl Send for Bus {}

impl GenetBus for Bus {
    fn read(&mut self, offset: usize) -> u32 {
        self.0.read(offset)
    }

    fn write(&mut self, offset: usize, value: u32) {
        self.0.write(offset, value)
    }
}

/// One packet buffer, on its own cache lines so that maintenance of one
/// never touches a neighbour the device owns.
#[repr(C, align(64))]
struct Buffer([u8; BUFFER_SIZE]);

/// The 2 × 256 packet buffers (1 MiB), from the identity-mapped heap: an
/// address is its ARM physical address, which is what GENET's DMA takes.
struct HeapDma {
    rx: Box<[Buffer]>,
    tx: Box<[Buffer]>,
}

impl HeapDma {
    fn new() -> Self {
        let ring = || {
            (0..DESCRIPTORS)
                .map(|_| Buffer([0; BUFFER_SIZE]))
                .collect::<Vec<_>>()
                .into_boxed_slice()
        };
        Self {
            rx: ring(),
            tx: ring(),
        }
    }

    fn ring(&self, ring: Ring) -> &[Buffer] {
        match ring {
            Ring::Rx => &self.rx,
            Ring::Tx => &self.tx,
        }
    }
}

impl DmaMemory for HeapDma {
    fn phys_addr(&self, ring: Ring, slot: usize) -> u64 {
        self.ring(ring)[slot].0.as_ptr() as u64
    }

    fn buffer(&self, ring: Ring, slot: usize) -> &[u8] {
        &self.ring(ring)[slot].0
    }

    fn buffer_mut(&mut self, ring: Ring, slot: usize) -> &mut [u8] {
        match ring {
            Ring::Rx => &mut self.rx[slot].0,
            Ring::Tx => &mut self.tx[slot].0,
        }
    }
}

/// `dc cvac` / `dc civac` by address (identity map: physical = virtual).
struct DataCache;

impl CacheMaintenance for DataCache {
    fn clean(&mut self, phys: u64, len: usize) {
        cache::clean(phys as usize, len);
    }

    fn invalidate(&mut self, phys: u64, len: usize) {
        cache::clean_invalidate(phys as usize, len);
    }
}

/// Brings GENET up with the firmware's MAC address `mac` and the RGMII
/// clock delays `delays`. On any failure
/// (no MAC, no GENET v5 — QEMU's `raspi4b` has none —, a silent PHY) it
/// records why ([`report_no_network`]: logged after the banner, and the
/// answer of `net`) and returns `None`: the node boots without a network.
///
/// # Safety
///
/// Call once: the GENET registers, identity-mapped as device memory, must
/// not be used by anything else.
pub unsafe fn probe(
    mac: Option<[u8; 6]>,
    clock: &'static dyn MonotonicClock,
    delays: RgmiiDelays,
) -> Option<Box<dyn NetDevice>> {
    let no_network = |why: core::fmt::Arguments<'_>| {
        report_no_network(alloc::fmt::format(why));
        None
    };
    let Some(mac) = mac else {
        return no_network(format_args!("the firmware reported no MAC address"));
    };
    // QEMU's `raspi4b` has no device at GENET's address: a plain read would
    // abort, the probe read reports it.
    // SAFETY: an aligned, read-only register of the GENET window, mapped as
    // device memory; the caller gives us sole use of the controller.
    if unsafe { probe::read32(GENET_BASE + SYS_REV_CTRL) }.is_none() {
        return no_network(format_args!(
            "no GENET v5 found (no device answers at {GENET_BASE:#x})"
        ));
    }
    // SAFETY: GENET_BASE is the GENET register window of the BCM2711,
    // mapped as device memory with the rest of the peripheral window; the
    // caller gives us sole use of it.
    let window = unsafe { &*(GENET_BASE as *const GenetWindow) };
    let bus = Bus(MmioBus::new(window));
    let delay = ClockDelay::new(clock);
    match Genet::new(bus, HeapDma::new(), DataCache, delay, mac, delays) {
        Ok(genet) => Some(Box::new(GenetNet::new(genet, mac, clock))),
        Err(Error::UnsupportedRevision(rev)) => no_network(format_args!(
            "no GENET v5 found (version register {rev:#010x})"
        )),
        Err(error) => no_network(format_args!("GENET bring-up failed: {error}")),
    }
}
