//! virtio-net over PCI on the PC (QEMU q35): bus 0 is scanned through the
//! ECAM window for a virtio network function, which the firmware (SeaBIOS
//! under QEMU) has already given its BARs.
//!
//! The ECAM window and the BARs lie below 4 GiB, inside the boot code's
//! identity map. Those pages carry no cache-disable bits: on QEMU caching
//! has no effect on device accesses, and on a real PC the firmware's MTRRs
//! make the PCI hole uncacheable.

use alloc::boxed::Box;

use tern_board_common::virtio::{HeapHal, VirtioNet};
use tern_hal::NetDevice;
use virtio_drivers::transport::pci::bus::{Cam, Command, MmioCam, PciRoot};
use virtio_drivers::transport::pci::{virtio_device_type, PciTransport};
use virtio_drivers::transport::DeviceType;

/// q35's PCI Express configuration space (MMCONFIG), as QEMU's firmware
/// sets it up.
const ECAM_BASE: usize = 0xB000_0000;

/// The first virtio-net function on PCI bus 0, initialised; `None` when
/// there is none or its BARs lie outside the identity map (`mapped_limit`).
pub fn probe(mapped_limit: u64) -> Option<Box<dyn NetDevice>> {
    // SAFETY: ECAM_BASE is q35's ECAM window, identity-mapped by the boot
    // code and used by nothing else; bus 0 lies in its first 1 MiB.
    let mut root = PciRoot::new(unsafe { MmioCam::new(ECAM_BASE as *mut u8, Cam::Ecam) });
    let function = root
        .enumerate_bus(0)
        .find(|(_, info)| virtio_device_type(info) == Some(DeviceType::Network))
        .map(|(function, _)| function)?;
    let bars = root.bars(function).ok()?;
    let unmapped = bars
        .iter()
        .flatten()
        .filter_map(|bar| bar.memory_address_size())
        .any(|(address, size)| size != 0 && address.saturating_add(size) > mapped_limit);
    if unmapped {
        defmt::error!("virtio-net: a BAR lies above the identity map");
        return None;
    }
    let (_, command) = root.get_status_command(function);
    root.set_command(
        function,
        command | Command::MEMORY_SPACE | Command::BUS_MASTER,
    );
    let transport = match PciTransport::new::<HeapHal, _>(&mut root, function) {
        Ok(transport) => transport,
        Err(error) => {
            defmt::error!("virtio-net: {}", defmt::Display2Format(&error));
            return None;
        }
    };
    VirtioNet::new(transport).map(|net| Box::new(net) as Box<dyn NetDevice>)
}
