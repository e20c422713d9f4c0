//! virtio-net over MMIO on QEMU `virt`: the transports the device tree
//! lists (`virtio,mmio`, at 0x0a00_0000 + 0x200·i) are probed for a
//! network device.

use alloc::boxed::Box;
use core::ptr::NonNull;

use tern_board_common::virtio::VirtioNet;
use tern_hal::NetDevice;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceType, Transport};

/// The first virtio-net device among the device tree's virtio-mmio
/// transports, initialised.
pub fn probe(dtb: usize) -> Option<Box<dyn NetDevice>> {
    // SAFETY: `dtb` is the device tree in RAM that `main` already read;
    // `from_ptr` checks its header.
    let fdt = unsafe { fdt::Fdt::from_ptr(dtb as *const u8) }.ok()?;
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
        let transport = match unsafe { MmioTransport::new(header, region.size.unwrap_or(0x200)) } {
            Ok(transport) => transport,
            // An empty slot (device id 0) or a foreign register block.
            Err(_) => continue,
        };
        if transport.device_type() == DeviceType::Network {
            return VirtioNet::new(transport).map(|net| Box::new(net) as Box<dyn NetDevice>);
        }
    }
    None
}
