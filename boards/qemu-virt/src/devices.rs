//! The virtio devices of QEMU `virt`: the transports the device tree lists
//! (`virtio,mmio`, at 0x0a00_0000 + 0x200·i) are probed for a network
//! device (virtio-net) and a random number generator (virtio-rng), each
//! found by its device type, whatever slot QEMU gave it.

use core::ptr::NonNull;

use tern_board_common::virtio::VirtioDevices;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};

/// The first virtio-net and the first virtio-rng device among the device
/// tree's virtio-mmio transports, initialised.
pub fn probe(dtb: usize) -> VirtioDevices {
    let mut devices = VirtioDevices::default();
    // SAFETY: `dtb` is the device tree in RAM that `main` already read;
    // `from_ptr` checks its header.
    let Ok(fdt) = (unsafe { fdt::Fdt::from_ptr(dtb as *const u8) }) else {
        return devices;
    };
    for node in fdt.find_all_nodes("/virtio_mmio") {
        let Some(region) = node.reg().and_then(|mut regs| regs.next()) else {
            continue;
        };
        let Some(header) = NonNull::new(region.starting_address as *mut VirtIOHeader) else {
            continue;
        };
        // SAFETY: the device tree names this range as a virtio-mmio
        // register block; it lies in the MMIO range `main` maps as device
        // memory, and only this probe (then the one driver) touches it.
        match unsafe { MmioTransport::new(header, region.size.unwrap_or(0x200)) } {
            Ok(transport) => devices.offer(transport),
            // An empty slot (device id 0) or a foreign register block.
            Err(_) => continue,
        }
    }
    devices
}
