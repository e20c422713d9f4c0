//! PCI configuration space on the PC: the ECAM windows of the ACPI MCFG
//! table (mapped uncached), else the legacy 0xCF8/0xCFC ports (segment 0,
//! the first 256 bytes of each function). Also the adapter that lets
//! `virtio-drivers` reach a function through the same access.

use tern_board_pc::pagetable::Cache;
use tern_board_pc::pci::{BusRange, ConfigSpace, PciAddress};
use tern_board_pc::platform::{Ecam, MAX_ECAM};
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction};
use x86_64::instructions::port::Port;

use crate::paging;

const CONFIG_ADDRESS: u16 = 0xcf8;
const CONFIG_DATA: u16 = 0xcfc;

/// How the machine's configuration space is reached.
#[derive(Clone, Copy)]
pub struct PcConfigSpace {
    /// Mapped ECAM windows.
    ecam: [Option<Ecam>; MAX_ECAM],
}

impl PcConfigSpace {
    /// Maps the ECAM windows uncached; a window that cannot be mapped is
    /// left out (logged), and without any the legacy ports serve segment 0.
    pub fn new(windows: &[Option<Ecam>]) -> Self {
        let mut ecam = [None; MAX_ECAM];
        for (slot, window) in ecam.iter_mut().zip(windows.iter().flatten()) {
            let buses = u64::from(window.end_bus) + 1 - u64::from(window.start_bus);
            let start = window.base + (u64::from(window.start_bus) << 20);
            match paging::map(start, buses << 20, Cache::Uncached) {
                Ok(()) => *slot = Some(*window),
                Err(error) => crate::log::warn(format_args!(
                    "PCI: ECAM window at {:#x} not mapped: {error}",
                    window.base
                )),
            }
        }
        Self { ecam }
    }

    /// Whether configuration space comes from ECAM (else the legacy ports).
    pub fn uses_ecam(&self) -> bool {
        self.ecam.iter().any(Option::is_some)
    }

    /// The bus ranges to walk: one per ECAM window, or all of segment 0.
    pub fn roots(&self) -> impl Iterator<Item = BusRange> + '_ {
        let legacy = (!self.uses_ecam()).then_some(BusRange {
            segment: 0,
            start: 0,
            end: 255,
        });
        self.ecam
            .iter()
            .flatten()
            .map(|w| BusRange {
                segment: w.segment,
                start: w.start_bus,
                end: w.end_bus,
            })
            .chain(legacy)
    }

    /// The ECAM address of a register, if a window covers the function.
    fn ecam_address(&self, address: PciAddress, offset: u16) -> Option<u64> {
        let window = self.ecam.iter().flatten().find(|w| {
            w.segment == address.segment && (w.start_bus..=w.end_bus).contains(&address.bus)
        })?;
        Some(
            window.base
                + (u64::from(address.bus) << 20)
                + (u64::from(address.device) << 15)
                + (u64::from(address.function) << 12)
                + u64::from(offset & 0xffc),
        )
    }

    /// The legacy port value selecting a register (segment 0, offsets
    /// below 256 only).
    fn legacy_address(address: PciAddress, offset: u16) -> Option<u32> {
        (address.segment == 0 && offset < 256).then(|| {
            1 << 31
                | u32::from(address.bus) << 16
                | u32::from(address.device & 31) << 11
                | u32::from(address.function & 7) << 8
                | u32::from(offset & 0xfc)
        })
    }
}

impl ConfigSpace for PcConfigSpace {
    fn read32(&mut self, address: PciAddress, offset: u16) -> u32 {
        if let Some(register) = self.ecam_address(address, offset) {
            // SAFETY: inside an ECAM window mapped uncached in `new`; a
            // function that is absent reads all ones.
            return unsafe { (register as *const u32).read_volatile() };
        }
        if self.uses_ecam() {
            return u32::MAX;
        }
        let Some(select) = Self::legacy_address(address, offset) else {
            return u32::MAX;
        };
        // SAFETY: the PCI configuration mechanism #1 ports, present on
        // every PC; interrupts are off around the two accesses (a critical
        // section), so no other use of the ports interleaves.
        critical_section::with(|_| unsafe {
            Port::<u32>::new(CONFIG_ADDRESS).write(select);
            Port::<u32>::new(CONFIG_DATA).read()
        })
    }

    fn write32(&mut self, address: PciAddress, offset: u16, value: u32) {
        if let Some(register) = self.ecam_address(address, offset) {
            // SAFETY: as for `read32`; the register belongs to `address`.
            unsafe { (register as *mut u32).write_volatile(value) };
            return;
        }
        if self.uses_ecam() {
            return;
        }
        if let Some(select) = Self::legacy_address(address, offset) {
            // SAFETY: as for `read32`.
            critical_section::with(|_| unsafe {
                Port::<u32>::new(CONFIG_ADDRESS).write(select);
                Port::<u32>::new(CONFIG_DATA).write(value);
            });
        }
    }
}

/// One segment's configuration space as `virtio-drivers` wants it.
pub struct VirtioCam {
    space: PcConfigSpace,
    segment: u16,
}

impl VirtioCam {
    /// The functions of `segment` through `space`.
    pub fn new(space: PcConfigSpace, segment: u16) -> Self {
        Self { space, segment }
    }

    fn address(&self, function: DeviceFunction) -> PciAddress {
        PciAddress {
            segment: self.segment,
            bus: function.bus,
            device: function.device,
            function: function.function,
        }
    }
}

impl ConfigurationAccess for VirtioCam {
    fn read_word(&self, function: DeviceFunction, offset: u8) -> u32 {
        let mut space = self.space;
        space.read32(self.address(function), u16::from(offset))
    }

    fn write_word(&mut self, function: DeviceFunction, offset: u8, data: u32) {
        let address = self.address(function);
        self.space.write32(address, u16::from(offset), data);
    }

    unsafe fn unsafe_clone(&self) -> Self {
        Self {
            space: self.space,
            segment: self.segment,
        }
    }
}
