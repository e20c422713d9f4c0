//! The PC's devices: virtio-net and virtio-rng over PCI (QEMU q35), found on
//! bus 0 through the ECAM window after the firmware (SeaBIOS under QEMU) has
//! given them their BARs; and the CPU's RDRAND ([`rdrand`]) as the entropy
//! source of a real PC without virtio-rng.
//!
//! The ECAM window and the BARs lie below 4 GiB, inside the boot code's
//! identity map. Those pages carry no cache-disable bits: on QEMU caching
//! has no effect on device accesses, and on a real PC the firmware's MTRRs
//! make the PCI hole uncacheable.

use alloc::boxed::Box;

use tern_board_common::virtio::{HeapHal, VirtioDevices};
use tern_hal::EntropySource;
use virtio_drivers::transport::pci::bus::{Cam, Command, DeviceFunction, MmioCam, PciRoot};
use virtio_drivers::transport::pci::{virtio_device_type, PciTransport};
use virtio_drivers::transport::DeviceType;

use crate::rdrand::Rdrand;

/// q35's PCI Express configuration space (MMCONFIG), as QEMU's firmware
/// sets it up.
const ECAM_BASE: usize = 0xB000_0000;

/// The first virtio-net and the first virtio-rng function on PCI bus 0,
/// initialised (functions whose BARs lie outside the identity map,
/// `mapped_limit`, are skipped); without virtio-rng, RDRAND where the CPU
/// has it.
pub fn probe(mapped_limit: u64) -> VirtioDevices {
    // SAFETY: ECAM_BASE is q35's ECAM window, identity-mapped by the boot
    // code and used by nothing else; bus 0 lies in its first 1 MiB.
    let mut root = PciRoot::new(unsafe { MmioCam::new(ECAM_BASE as *mut u8, Cam::Ecam) });
    let functions: alloc::vec::Vec<(DeviceFunction, DeviceType)> = root
        .enumerate_bus(0)
        .filter_map(|(function, info)| Some((function, virtio_device_type(&info)?)))
        .filter(|(_, kind)| matches!(kind, DeviceType::Network | DeviceType::EntropySource))
        .collect();
    let mut devices = VirtioDevices::default();
    for (function, kind) in functions {
        if let Some(transport) = transport(&mut root, function, kind, mapped_limit) {
            devices.offer(transport);
        }
    }
    if devices.entropy.is_none() {
        devices.entropy = Rdrand::detect().map(|rdrand| Box::new(rdrand) as Box<dyn EntropySource>);
    }
    devices
}

/// The virtio transport of `function` (a `kind` device), with memory
/// decoding and bus mastering turned on; `None` (logged) when a BAR lies
/// above the identity map or the transport is not valid.
fn transport(
    root: &mut PciRoot<MmioCam<'static>>,
    function: DeviceFunction,
    kind: DeviceType,
    mapped_limit: u64,
) -> Option<PciTransport> {
    let bars = root.bars(function).ok()?;
    let unmapped = bars
        .iter()
        .flatten()
        .filter_map(|bar| bar.memory_address_size())
        .any(|(address, size)| size != 0 && address.saturating_add(size) > mapped_limit);
    if unmapped {
        defmt::error!(
            "virtio {}: a BAR lies above the identity map",
            defmt::Debug2Format(&kind)
        );
        return None;
    }
    let (_, command) = root.get_status_command(function);
    root.set_command(
        function,
        command | Command::MEMORY_SPACE | Command::BUS_MASTER,
    );
    match PciTransport::new::<HeapHal, _>(root, function) {
        Ok(transport) => Some(transport),
        Err(error) => {
            defmt::error!(
                "virtio {}: {}",
                defmt::Debug2Format(&kind),
                defmt::Display2Format(&error)
            );
            None
        }
    }
}
