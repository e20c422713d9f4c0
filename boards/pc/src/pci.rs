//! Walking the PCI buses: every function on every bus reachable from the
//! host bridges' root buses through PCI-to-PCI bridges (PCIe root ports and
//! switches are such bridges), with its identity, class and sized BARs.
//!
//! Configuration space is reached through a [`ConfigSpace`]: the board's
//! ECAM windows from the ACPI MCFG table, or the legacy 0xCF8/0xCFC ports;
//! a model in the host tests. Bus numbers are the firmware's: the walk
//! follows each bridge's secondary bus and never reprograms a bridge.

use alloc::vec::Vec;
use core::fmt;

/// Where a function sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    /// PCI segment group (0 on most PCs).
    pub segment: u16,
    /// Bus.
    pub bus: u8,
    /// Device, 0..32.
    pub device: u8,
    /// Function, 0..8.
    pub function: u8,
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{}",
            self.segment, self.bus, self.device, self.function
        )
    }
}

/// Access to configuration space (4-byte aligned registers).
pub trait ConfigSpace {
    /// Reads the register at byte `offset` of `address`'s space; an absent
    /// function reads all ones.
    fn read32(&mut self, address: PciAddress, offset: u16) -> u32;
    /// Writes the register at byte `offset`.
    fn write32(&mut self, address: PciAddress, offset: u16, value: u32);
}

/// The buses one host bridge decodes (an MCFG entry, or bus 0..=255 of
/// segment 0 through the legacy ports).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BusRange {
    /// Segment group.
    pub segment: u16,
    /// Root bus: where the walk starts.
    pub start: u8,
    /// Last bus the bridge decodes.
    pub end: u8,
}

/// A base address register, sized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bar {
    /// A memory window.
    Memory {
        /// Physical address the firmware assigned (0: none).
        address: u64,
        /// Bytes it decodes.
        size: u64,
        /// The device allows prefetching (write-combining is safe).
        prefetchable: bool,
        /// A 64-bit BAR (it takes two slots).
        wide: bool,
    },
    /// An I/O port window.
    Io {
        /// First port.
        port: u32,
        /// Ports it decodes.
        size: u32,
    },
}

/// One function found by [`enumerate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Function {
    /// Where it is.
    pub address: PciAddress,
    /// Vendor ID.
    pub vendor_id: u16,
    /// Device ID.
    pub device_id: u16,
    /// Class, subclass and programming interface.
    pub class: [u8; 3],
    /// Revision ID.
    pub revision: u8,
    /// Its BARs (slot 0..6; the upper half of a 64-bit BAR is `None`).
    /// Bridges have two.
    pub bars: [Option<Bar>; 6],
    /// For a PCI-to-PCI bridge, the bus behind it.
    pub secondary_bus: Option<u8>,
}

impl Function {
    /// Its memory BARs: (slot, address, size, prefetchable).
    pub fn memory_bars(&self) -> impl Iterator<Item = (usize, u64, u64, bool)> + '_ {
        self.bars
            .iter()
            .enumerate()
            .filter_map(|(slot, bar)| match bar {
                Some(Bar::Memory {
                    address,
                    size,
                    prefetchable,
                    ..
                }) => Some((slot, *address, *size, *prefetchable)),
                _ => None,
            })
    }

    /// The first I/O BAR's port and size.
    pub fn io_bar(&self) -> Option<(u32, u32)> {
        self.bars.iter().find_map(|bar| match bar {
            Some(Bar::Io { port, size }) => Some((*port, *size)),
            _ => None,
        })
    }
}

const VENDOR_DEVICE: u16 = 0x00;
const COMMAND: u16 = 0x04;
const CLASS_REVISION: u16 = 0x08;
const HEADER_TYPE: u16 = 0x0c;
const BAR0: u16 = 0x10;
const BUS_NUMBERS: u16 = 0x18;
/// Command register bits: I/O space, memory space, bus master.
pub const COMMAND_IO: u16 = 1 << 0;
/// Memory space decoding.
pub const COMMAND_MEMORY: u16 = 1 << 1;
/// The device may master the bus (DMA).
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;

/// Every function on every bus reachable from the root buses of `roots`,
/// in bus order of discovery (depth first). Each bus is visited once, so a
/// misprogrammed bridge pointing back cannot loop the walk.
pub fn enumerate(config: &mut impl ConfigSpace, roots: &[BusRange]) -> Vec<Function> {
    let mut found = Vec::new();
    for root in roots {
        let mut visited = [false; 256];
        let mut pending = alloc::vec![root.start];
        while let Some(bus) = pending.pop() {
            if visited[usize::from(bus)] || bus < root.start || bus > root.end {
                continue;
            }
            visited[usize::from(bus)] = true;
            let before = found.len();
            scan_bus(config, root.segment, bus, &mut found);
            // Buses behind this bus's bridges, in device order.
            let behind: Vec<u8> = found[before..]
                .iter()
                .filter_map(|f| f.secondary_bus)
                .collect();
            pending.extend(behind.into_iter().rev());
        }
    }
    found
}

fn scan_bus(config: &mut impl ConfigSpace, segment: u16, bus: u8, found: &mut Vec<Function>) {
    for device in 0..32 {
        let first = PciAddress {
            segment,
            bus,
            device,
            function: 0,
        };
        if config.read32(first, VENDOR_DEVICE) as u16 == 0xffff {
            continue;
        }
        let multi = (config.read32(first, HEADER_TYPE) >> 16) & 0x80 != 0;
        for function in 0..if multi { 8 } else { 1 } {
            let address = PciAddress { function, ..first };
            if let Some(f) = read_function(config, address) {
                found.push(f);
            }
        }
    }
}

fn read_function(config: &mut impl ConfigSpace, address: PciAddress) -> Option<Function> {
    let id = config.read32(address, VENDOR_DEVICE);
    if id as u16 == 0xffff {
        return None;
    }
    let class = config.read32(address, CLASS_REVISION);
    let header = (config.read32(address, HEADER_TYPE) >> 16) & 0x7f;
    let (bar_slots, secondary_bus) = match header {
        0 => (6, None),
        1 => (2, Some((config.read32(address, BUS_NUMBERS) >> 8) as u8)),
        // CardBus and unknown layouts: identity only.
        _ => (0, None),
    };
    Some(Function {
        address,
        vendor_id: id as u16,
        device_id: (id >> 16) as u16,
        class: [(class >> 24) as u8, (class >> 16) as u8, (class >> 8) as u8],
        revision: class as u8,
        bars: size_bars(config, address, bar_slots),
        secondary_bus,
    })
}

/// Sizes the first `slots` BARs the standard way (write all ones, read the
/// mask back, restore), with decoding off meanwhile so that the device
/// never answers at the probe address.
fn size_bars(config: &mut impl ConfigSpace, address: PciAddress, slots: usize) -> [Option<Bar>; 6] {
    let mut bars = [None; 6];
    if slots == 0 {
        return bars;
    }
    let command = config.read32(address, COMMAND);
    let decoding = u32::from(COMMAND_IO | COMMAND_MEMORY);
    config.write32(address, COMMAND, command & !decoding);
    let mut slot = 0;
    while slot < slots {
        let offset = BAR0 + 4 * slot as u16;
        let low = config.read32(address, offset);
        config.write32(address, offset, u32::MAX);
        let mask = config.read32(address, offset);
        config.write32(address, offset, low);
        if low & 1 == 1 {
            let size = (!(mask & !0x3)).wrapping_add(1) & 0xffff;
            bars[slot] = (size != 0).then_some(Bar::Io {
                port: low & !0x3,
                size,
            });
            slot += 1;
            continue;
        }
        let wide = (low >> 1) & 3 == 2 && slot + 1 < slots;
        let prefetchable = low & 0x8 != 0;
        let (address_value, size) = if wide {
            let high_offset = offset + 4;
            let high = config.read32(address, high_offset);
            config.write32(address, high_offset, u32::MAX);
            let high_mask = config.read32(address, high_offset);
            config.write32(address, high_offset, high);
            let mask = u64::from(high_mask) << 32 | u64::from(mask & !0xf);
            (
                u64::from(high) << 32 | u64::from(low & !0xf),
                (!mask).wrapping_add(1),
            )
        } else {
            let mask = mask & !0xf;
            (u64::from(low & !0xf), u64::from((!mask).wrapping_add(1)))
        };
        // An unimplemented BAR reads back zero: no window.
        bars[slot] = (size != 0 && (wide || mask & !0xf != 0)).then_some(Bar::Memory {
            address: address_value,
            size,
            prefetchable,
            wide,
        });
        slot += if wide { 2 } else { 1 };
    }
    config.write32(address, COMMAND, command);
    bars
}

/// Sets bits in a function's command register (decoding, bus mastering).
pub fn enable(config: &mut impl ConfigSpace, address: PciAddress, bits: u16) {
    let command = config.read32(address, COMMAND);
    // The status half is write-one-to-clear: write zeros there.
    config.write32(address, COMMAND, (command & 0xffff) | u32::from(bits));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A function of the model: registers, and the BAR size masks.
    #[derive(Clone)]
    struct ModelFunction {
        regs: [u32; 64],
        /// Per BAR slot: the bits the BAR decodes as a size mask (0: no
        /// BAR), for both halves of a 64-bit one.
        masks: [u32; 6],
        decoding_seen_on_during_sizing: bool,
    }

    impl Default for ModelFunction {
        fn default() -> Self {
            Self {
                regs: [0; 64],
                masks: [0; 6],
                decoding_seen_on_during_sizing: false,
            }
        }
    }

    /// Configuration space of a small machine: host bridge on bus 0, a
    /// root port (bus 1) with an e1000e behind it, a switch (buses 2..4)
    /// with a device on bus 4, a multifunction device, a bridge that
    /// points back at bus 0.
    #[derive(Default)]
    struct Model {
        functions: BTreeMap<PciAddress, ModelFunction>,
    }

    fn at(bus: u8, device: u8, function: u8) -> PciAddress {
        PciAddress {
            segment: 0,
            bus,
            device,
            function,
        }
    }

    impl Model {
        fn add(
            &mut self,
            address: PciAddress,
            vendor: u16,
            device: u16,
            class: u32,
            header: u8,
        ) -> &mut ModelFunction {
            let f = self.functions.entry(address).or_default();
            f.regs[0] = u32::from(device) << 16 | u32::from(vendor);
            f.regs[2] = class << 8 | 1;
            f.regs[3] = u32::from(header) << 16;
            f
        }

        fn bridge(&mut self, address: PciAddress, secondary: u8) {
            let f = self.add(address, 0x1b36, 0x000c, 0x06_04_00, 1);
            f.regs[6] = u32::from(secondary) << 8 | u32::from(address.bus);
        }
    }

    impl ConfigSpace for Model {
        fn read32(&mut self, address: PciAddress, offset: u16) -> u32 {
            self.functions
                .get(&address)
                .map_or(u32::MAX, |f| f.regs[usize::from(offset / 4)])
        }

        fn write32(&mut self, address: PciAddress, offset: u16, value: u32) {
            let Some(f) = self.functions.get_mut(&address) else {
                return;
            };
            let index = usize::from(offset / 4);
            if (4..10).contains(&index) {
                let slot = index - 4;
                if f.regs[1] & 3 != 0 && value == u32::MAX {
                    f.decoding_seen_on_during_sizing = true;
                }
                let mask = f.masks[slot];
                // The upper half of a 64-bit BAR has no flag bits.
                let upper = slot > 0 && f.regs[index - 1] & 0x7 == 0x4;
                if mask != 0 {
                    let flags = match f.regs[index] & 1 {
                        _ if upper => 0,
                        1 => f.regs[index] & 0x3,
                        _ => f.regs[index] & 0xf,
                    };
                    f.regs[index] = (value & mask) | flags;
                }
                return;
            }
            f.regs[index] = value;
        }
    }

    fn machine() -> Model {
        let mut m = Model::default();
        m.add(at(0, 0, 0), 0x8086, 0x29c0, 0x06_00_00, 0);
        // Multifunction device 2: functions 0 and 3.
        m.add(at(0, 2, 0), 0x8086, 0x2918, 0x06_01_00, 0x80);
        m.add(at(0, 2, 3), 0x8086, 0x2930, 0x0c_05_00, 0);
        // A function 1 of a single-function device is not looked at.
        m.add(at(0, 3, 0), 0x1af4, 0x1044, 0x00_ff_00, 0);
        m.add(at(0, 3, 1), 0xdead, 0xbeef, 0, 0);
        m.bridge(at(0, 4, 0), 1);
        m.bridge(at(0, 5, 0), 2);
        // Behind the root port: an e1000e with a 32-bit memory BAR (128
        // KiB), an I/O BAR (32 ports) and a 64-bit prefetchable BAR above
        // 4 GiB (16 KiB).
        let nic = m.add(at(1, 0, 0), 0x8086, 0x10d3, 0x02_00_00, 0);
        nic.regs[1] = 0x0007;
        nic.regs[4] = 0xfeb8_0000;
        nic.masks[0] = 0xfffe_0000;
        nic.regs[6] = 0xc001;
        nic.masks[2] = 0xffff_ffe0;
        nic.regs[7] = 0x0000_000c;
        nic.regs[8] = 0x0000_0080;
        nic.masks[3] = 0xffff_c000;
        nic.masks[4] = 0xffff_ffff;
        // A switch: upstream port on bus 2, downstream on bus 3, device on 4.
        m.bridge(at(2, 0, 0), 3);
        m.bridge(at(3, 0, 0), 4);
        m.add(at(4, 0, 0), 0x10ec, 0x8168, 0x02_00_00, 0);
        // A bridge pointing back at bus 0 (a firmware bug): no loop.
        m.bridge(at(4, 1, 0), 0);
        m
    }

    #[test]
    fn the_walk_finds_every_function_behind_every_bridge() {
        let mut m = machine();
        let found = enumerate(
            &mut m,
            &[BusRange {
                segment: 0,
                start: 0,
                end: 255,
            }],
        );
        let addresses: Vec<String> = found.iter().map(|f| f.address.to_string()).collect();
        assert_eq!(
            addresses,
            [
                "0000:00:00.0",
                "0000:00:02.0",
                "0000:00:02.3",
                "0000:00:03.0",
                "0000:00:04.0",
                "0000:00:05.0",
                "0000:01:00.0",
                "0000:02:00.0",
                "0000:03:00.0",
                "0000:04:00.0",
                "0000:04:01.0",
            ]
        );
        let rtl = found.iter().find(|f| f.vendor_id == 0x10ec).unwrap();
        assert_eq!((rtl.device_id, rtl.class), (0x8168, [2, 0, 0]));
        // A range that stops at bus 3 does not reach bus 4.
        let mut m = machine();
        let found = enumerate(
            &mut m,
            &[BusRange {
                segment: 0,
                start: 0,
                end: 3,
            }],
        );
        assert!(found.iter().all(|f| f.address.bus <= 3));
    }

    #[test]
    fn bars_are_sized_with_decoding_off_and_restored() {
        let mut m = machine();
        let found = enumerate(
            &mut m,
            &[BusRange {
                segment: 0,
                start: 0,
                end: 255,
            }],
        );
        let nic = found.iter().find(|f| f.device_id == 0x10d3).unwrap();
        assert_eq!(
            nic.bars[0],
            Some(Bar::Memory {
                address: 0xfeb8_0000,
                size: 128 << 10,
                prefetchable: false,
                wide: false
            })
        );
        assert_eq!(nic.bars[1], None, "an unimplemented BAR");
        assert_eq!(
            nic.bars[2],
            Some(Bar::Io {
                port: 0xc000,
                size: 32
            })
        );
        assert_eq!(
            nic.bars[3],
            Some(Bar::Memory {
                address: 0x80_0000_0000,
                size: 16 << 10,
                prefetchable: true,
                wide: true
            })
        );
        assert_eq!(nic.bars[4], None, "the upper half of a 64-bit BAR");
        assert_eq!(nic.io_bar(), Some((0xc000, 32)));
        let bars: Vec<_> = nic.memory_bars().collect();
        assert_eq!(
            bars,
            [
                (0, 0xfeb8_0000, 128 << 10, false),
                (3, 0x80_0000_0000, 16 << 10, true)
            ]
        );
        let model = &m.functions[&at(1, 0, 0)];
        assert!(!model.decoding_seen_on_during_sizing);
        assert_eq!(model.regs[1], 0x0007, "command restored");
        assert_eq!(model.regs[4], 0xfeb8_0000, "BAR restored");
        assert_eq!(model.regs[8], 0x80, "upper half restored");
    }

    #[test]
    fn enable_sets_command_bits_without_clearing_status() {
        let mut m = machine();
        let nic = at(1, 0, 0);
        m.functions.get_mut(&nic).unwrap().regs[1] = 0xffff_0000;
        enable(&mut m, nic, COMMAND_MEMORY | COMMAND_BUS_MASTER);
        assert_eq!(m.functions[&nic].regs[1], 0x0000_0006);
    }
}
