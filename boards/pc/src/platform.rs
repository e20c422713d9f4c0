//! What the ACPI tables say about the machine, read once at boot through the
//! `acpi` crate: the local APIC and I/O APICs with the ISA interrupt
//! overrides (MADT), the PCI Express configuration windows (MCFG), the HPET,
//! the ACPI PM timer, the reset register and whether an 8042 keyboard
//! controller exists (FADT), and the firmware's serial console (SPCR).
//!
//! Every table is optional except the root: a machine without an MCFG falls
//! back to the legacy configuration ports, one without HPET to the PM
//! timer, and so on; the board decides. A table that fails its checksum is
//! skipped by the `acpi` crate (as if absent).

use acpi::address::{AddressSpace, GenericAddress};
use acpi::fadt::Fadt;
use acpi::hpet::HpetInfo;
use acpi::madt::{Madt, MadtEntry};
use acpi::mcfg::Mcfg;
use acpi::spcr::{Spcr, SpcrInterfaceType};
use acpi::{AcpiError, AcpiHandler, AcpiTable, AcpiTables};
use core::fmt;

/// Most I/O APICs, ECAM windows kept (PCs have one or two of each).
pub const MAX_IO_APICS: usize = 8;
/// Most PCI segment windows kept.
pub const MAX_ECAM: usize = 8;

/// An I/O APIC (MADT type 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoApic {
    /// Its register window.
    pub address: u64,
    /// The first global system interrupt it serves.
    pub gsi_base: u32,
}

/// Where an ISA IRQ arrives (MADT interrupt source overrides; identity by
/// default, edge-triggered active high).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IsaRoute {
    /// Global system interrupt.
    pub gsi: u32,
    /// Active low.
    pub active_low: bool,
    /// Level-triggered.
    pub level: bool,
}

/// One PCI Express configuration window (an MCFG entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ecam {
    /// Physical address of bus 0's space (bus `b` is `(b << 20)` on).
    pub base: u64,
    /// Segment group.
    pub segment: u16,
    /// First bus decoded.
    pub start_bus: u8,
    /// Last bus decoded.
    pub end_bus: u8,
}

/// A register named by an ACPI generic address the board can reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Register {
    /// An I/O port.
    Port(u16),
    /// A memory-mapped register.
    Memory(u64),
    /// A register in PCI configuration space of segment 0, bus 0
    /// (device, function, offset).
    PciConfig {
        /// Device.
        device: u8,
        /// Function.
        function: u8,
        /// Byte offset.
        offset: u16,
    },
}

impl Register {
    fn from_generic(address: GenericAddress) -> Option<Self> {
        match address.address_space {
            AddressSpace::SystemIo => u16::try_from(address.address).ok().map(Register::Port),
            AddressSpace::SystemMemory => Some(Register::Memory(address.address)),
            AddressSpace::PciConfigSpace => Some(Register::PciConfig {
                device: (address.address >> 32) as u8,
                function: (address.address >> 16) as u8,
                offset: address.address as u16,
            }),
            _ => None,
        }
    }
}

/// The ACPI power-management timer: 3.579545 MHz, 24 or 32 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PmTimer {
    /// Its counter register.
    pub register: Register,
    /// The counter is 32 bits wide (else 24).
    pub wide: bool,
}

/// The firmware's console UART (SPCR), when it is a 16550.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SerialConsole {
    /// Its registers.
    pub register: Register,
    /// The baud rate the firmware used, if it says.
    pub baud: Option<u32>,
}

/// What the board uses from the ACPI tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Platform {
    /// ACPI revision of the root pointer (0: ACPI 1.0).
    pub revision: u8,
    /// The local APIC's register window (MADT, with its override).
    pub local_apic: Option<u64>,
    /// The machine also has the legacy 8259 pair (MADT PCAT_COMPAT).
    pub has_8259: bool,
    /// The I/O APICs.
    pub io_apics: [Option<IoApic>; MAX_IO_APICS],
    /// Routes of ISA IRQs 0..16.
    pub isa_routes: [IsaRoute; 16],
    /// The PCI Express configuration windows.
    pub ecam: [Option<Ecam>; MAX_ECAM],
    /// The HPET's register block.
    pub hpet: Option<u64>,
    /// The ACPI PM timer.
    pub pm_timer: Option<PmTimer>,
    /// The reset register and the value that resets (FADT, when the
    /// firmware says it works).
    pub reset: Option<(Register, u8)>,
    /// The FADT says an 8042 keyboard controller exists (ACPI 1.0 FADTs
    /// have no such flag: then true, as on every PC of that age).
    pub has_8042: bool,
    /// A FADT was found.
    pub has_fadt: bool,
    /// The firmware's serial console.
    pub spcr: Option<SerialConsole>,
}

/// The root of the tables could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlatformError(&'static str);

impl fmt::Display for PlatformError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ACPI: {}", self.0)
    }
}

fn root_error(error: AcpiError) -> PlatformError {
    PlatformError(match error {
        AcpiError::RsdpIncorrectSignature => "no RSDP signature at the address given",
        AcpiError::RsdpInvalidChecksum => "the RSDP's checksum is wrong",
        AcpiError::RsdpInvalidOemId => "the RSDP's OEM ID is not ASCII",
        AcpiError::NoValidRsdp => "no RSDP found",
        _ => "the RSDT/XSDT is not valid",
    })
}

/// Reads the tables from the RSDP at physical address `rsdp`, mapping them
/// through `handler`.
///
/// # Safety
///
/// `rsdp` must be the physical address of an RSDP (its signature is still
/// checked) and `handler` must map physical memory for reading.
pub unsafe fn read<H: AcpiHandler>(handler: H, rsdp: usize) -> Result<Platform, PlatformError> {
    // SAFETY: per the caller.
    let tables = unsafe { AcpiTables::from_rsdp(handler, rsdp) }.map_err(root_error)?;
    let identity = IsaRoute {
        gsi: 0,
        active_low: false,
        level: false,
    };
    let mut platform = Platform {
        revision: tables.revision(),
        local_apic: None,
        has_8259: true,
        io_apics: [None; MAX_IO_APICS],
        isa_routes: core::array::from_fn(|irq| IsaRoute {
            gsi: irq as u32,
            ..identity
        }),
        ecam: [None; MAX_ECAM],
        hpet: HpetInfo::new(&tables)
            .ok()
            .map(|hpet| hpet.base_address as u64),
        pm_timer: None,
        reset: None,
        has_8042: true,
        has_fadt: false,
        spcr: None,
    };
    if let Ok(madt) = tables.find_table::<Madt>() {
        read_madt(madt.get(), &mut platform);
    }
    if let Ok(mcfg) = tables.find_table::<Mcfg>() {
        for (slot, entry) in platform.ecam.iter_mut().zip(mcfg.entries()) {
            *slot = Some(Ecam {
                base: entry.base_address,
                segment: entry.pci_segment_group,
                start_bus: entry.bus_number_start,
                end_bus: entry.bus_number_end,
            });
        }
    }
    if let Ok(fadt) = tables.find_table::<Fadt>() {
        read_fadt(&fadt, &mut platform);
    }
    if let Ok(spcr) = tables.find_table::<Spcr>() {
        platform.spcr = read_spcr(&spcr);
    }
    Ok(platform)
}

fn read_madt(madt: core::pin::Pin<&Madt>, platform: &mut Platform) {
    platform.local_apic = Some(u64::from(madt.local_apic_address));
    platform.has_8259 = madt.supports_8259();
    let mut io_apics = platform.io_apics.iter_mut();
    for entry in madt.entries() {
        match entry {
            MadtEntry::IoApic(io) => {
                if let Some(slot) = io_apics.next() {
                    *slot = Some(IoApic {
                        address: u64::from(io.io_apic_address),
                        gsi_base: io.global_system_interrupt_base,
                    });
                }
            }
            MadtEntry::InterruptSourceOverride(o) if o.bus == 0 && o.irq < 16 => {
                // MPS INTI flags: polarity bits 1:0 (3 = active low), trigger
                // bits 3:2 (3 = level); 0 means "as the bus says" (ISA: high, edge).
                let flags = o.flags;
                platform.isa_routes[usize::from(o.irq)] = IsaRoute {
                    gsi: o.global_system_interrupt,
                    active_low: flags & 3 == 3,
                    level: (flags >> 2) & 3 == 3,
                };
            }
            MadtEntry::LocalApicAddressOverride(o) => {
                platform.local_apic = Some(o.local_apic_address);
            }
            _ => {}
        }
    }
}

fn read_fadt(fadt: &Fadt, platform: &mut Platform) {
    platform.has_fadt = true;
    let flags = fadt.flags;
    platform.pm_timer = fadt
        .pm_timer_block()
        .ok()
        .flatten()
        .and_then(Register::from_generic)
        .map(|register| PmTimer {
            register,
            wide: flags.pm_timer_is_32_bit(),
        });
    if flags.supports_system_reset_via_fadt() {
        platform.reset = fadt
            .reset_register()
            .ok()
            .filter(|gas| gas.address != 0)
            .and_then(Register::from_generic)
            .map(|register| (register, fadt.reset_value));
    }
    // IAPC_BOOT_ARCH exists from ACPI 2.0 (FADT revision 3) on.
    let arch = fadt.iapc_boot_arch;
    if fadt.header().revision >= 3 {
        platform.has_8042 = arch.motherboard_implements_8042();
    }
}

fn read_spcr(spcr: &Spcr) -> Option<SerialConsole> {
    if !matches!(
        spcr.interface_type(),
        SpcrInterfaceType::Full16550 | SpcrInterfaceType::Full16450
    ) {
        return None;
    }
    let register = spcr.base_address()?.ok().and_then(Register::from_generic)?;
    Some(SerialConsole {
        register,
        baud: spcr.baud_rate().map(|baud| baud.get()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use acpi::PhysicalMapping;
    use core::ptr::NonNull;

    /// Host memory is "physical memory": addresses are the host's.
    #[derive(Clone)]
    struct HostMemory;

    impl AcpiHandler for HostMemory {
        unsafe fn map_physical_region<T>(
            &self,
            address: usize,
            size: usize,
        ) -> PhysicalMapping<Self, T> {
            // SAFETY: the tests pass addresses of live vectors they own.
            unsafe {
                PhysicalMapping::new(
                    address,
                    NonNull::new(address as *mut T).unwrap(),
                    size,
                    size,
                    self.clone(),
                )
            }
        }

        fn unmap_physical_region<T>(_: &PhysicalMapping<Self, T>) {}
    }

    /// A table with a header: signature, length, revision, checksum.
    fn table(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(signature);
        t.extend_from_slice(&(36 + body.len() as u32).to_le_bytes());
        t.push(revision);
        t.push(0);
        t.extend_from_slice(b"TERNTS");
        t.extend_from_slice(b"TERNTEST");
        t.extend_from_slice(&1u32.to_le_bytes());
        t.extend_from_slice(b"TERN");
        t.extend_from_slice(&1u32.to_le_bytes());
        t.extend_from_slice(body);
        fix_checksum(&mut t, 9);
        t
    }

    fn fix_checksum(bytes: &mut [u8], at: usize) {
        bytes[at] = 0;
        let sum = bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b));
        bytes[at] = 0u8.wrapping_sub(sum);
    }

    fn gas(space: u8, width: u8, address: u64) -> Vec<u8> {
        let mut g = vec![space, width, 0, 3];
        g.extend_from_slice(&address.to_le_bytes());
        g
    }

    /// Tables kept alive while the test reads them; the RSDP's address.
    struct Machine {
        _tables: Vec<Vec<u8>>,
        rsdp: Vec<u8>,
    }

    fn machine(tables: Vec<Vec<u8>>) -> Machine {
        let mut xsdt_body = Vec::new();
        for t in &tables {
            xsdt_body.extend_from_slice(&(t.as_ptr() as u64).to_le_bytes());
        }
        let xsdt = table(b"XSDT", 1, &xsdt_body);
        let mut rsdp = b"RSD PTR ".to_vec();
        rsdp.push(0);
        rsdp.extend_from_slice(b"TERNTS");
        rsdp.push(2);
        rsdp.extend_from_slice(&0u32.to_le_bytes());
        rsdp.extend_from_slice(&36u32.to_le_bytes());
        rsdp.extend_from_slice(&(xsdt.as_ptr() as u64).to_le_bytes());
        rsdp.extend_from_slice(&[0, 0, 0, 0]);
        fix_checksum(&mut rsdp[..20], 8);
        fix_checksum(&mut rsdp, 32);
        let mut all = tables;
        all.push(xsdt);
        Machine { _tables: all, rsdp }
    }

    fn madt() -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&0xfee0_0000u32.to_le_bytes());
        body.extend_from_slice(&1u32.to_le_bytes());
        // Local APIC 0.
        body.extend_from_slice(&[0, 8, 0, 0, 1, 0, 0, 0]);
        // I/O APIC 0 at 0xfec0_0000, GSI 0.
        body.extend_from_slice(&[1, 12, 0, 0]);
        body.extend_from_slice(&0xfec0_0000u32.to_le_bytes());
        body.extend_from_slice(&0u32.to_le_bytes());
        // IRQ 0 -> GSI 2; IRQ 9 -> GSI 9 level, active high (flags 0xd).
        body.extend_from_slice(&[2, 10, 0, 0]);
        body.extend_from_slice(&2u32.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(&[2, 10, 0, 9]);
        body.extend_from_slice(&9u32.to_le_bytes());
        body.extend_from_slice(&0xdu16.to_le_bytes());
        table(b"APIC", 4, &body)
    }

    fn mcfg() -> Vec<u8> {
        let mut body = vec![0u8; 8];
        body.extend_from_slice(&0xb000_0000u64.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(&[0, 0xff, 0, 0, 0, 0]);
        table(b"MCFG", 1, &body)
    }

    fn hpet() -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&0x8086_a201u32.to_le_bytes());
        body.extend(gas(0, 64, 0xfed0_0000));
        body.extend_from_slice(&[0, 0x80, 0, 0]);
        table(b"HPET", 1, &body)
    }

    /// A revision-6 FADT: PM timer at port 0x608 (32-bit), reset register
    /// 0xcf9 / 6, 8042 flag as given.
    fn fadt(with_8042: bool, reset_supported: bool) -> Vec<u8> {
        let mut body = vec![0u8; 276 - 36];
        let at = |offset: usize| offset - 36;
        body[at(76)..at(80)].copy_from_slice(&0x608u32.to_le_bytes());
        body[at(91)] = 4;
        body[at(109)] = if with_8042 { 2 } else { 0 };
        let flags: u32 = (1 << 8) | if reset_supported { 1 << 10 } else { 0 };
        body[at(112)..at(116)].copy_from_slice(&flags.to_le_bytes());
        body[at(116)..at(128)].copy_from_slice(&gas(1, 8, 0xcf9));
        body[at(128)] = 6;
        body[at(208)..at(220)].copy_from_slice(&gas(1, 32, 0x608));
        table(b"FACP", 6, &body)
    }

    fn spcr(interface: u8, space: u8, address: u64) -> Vec<u8> {
        let mut body = vec![interface, 0, 0, 0];
        body.extend(gas(space, 8, address));
        body.extend_from_slice(&[0, 4]);
        body.extend_from_slice(&0u32.to_le_bytes());
        body.extend_from_slice(&[7, 0, 1, 0, 0, 0]);
        body.extend_from_slice(&[0xff; 4]);
        body.extend_from_slice(&[0, 0, 0]);
        body.extend_from_slice(&0u32.to_le_bytes());
        body.push(0);
        body.extend_from_slice(&0u32.to_le_bytes());
        body.extend_from_slice(&0u32.to_le_bytes());
        body.extend_from_slice(&[0; 4]);
        table(b"SPCR", 2, &body)
    }

    fn read_machine(m: &Machine) -> Result<Platform, PlatformError> {
        // SAFETY: the RSDP and the tables it points to are alive in `m`.
        unsafe { read(HostMemory, m.rsdp.as_ptr() as usize) }
    }

    #[test]
    fn a_q35_like_machine() {
        let m = machine(vec![madt(), mcfg(), hpet(), fadt(true, true)]);
        let p = read_machine(&m).unwrap();
        assert_eq!(p.revision, 2);
        assert_eq!(p.local_apic, Some(0xfee0_0000));
        assert!(p.has_8259);
        assert_eq!(
            p.io_apics[0],
            Some(IoApic {
                address: 0xfec0_0000,
                gsi_base: 0
            })
        );
        assert_eq!(p.io_apics[1], None);
        assert_eq!(
            p.isa_routes[0],
            IsaRoute {
                gsi: 2,
                active_low: false,
                level: false
            }
        );
        assert_eq!(
            p.isa_routes[4],
            IsaRoute {
                gsi: 4,
                active_low: false,
                level: false
            }
        );
        assert_eq!(
            p.isa_routes[9],
            IsaRoute {
                gsi: 9,
                active_low: false,
                level: true
            }
        );
        assert_eq!(
            p.ecam[0],
            Some(Ecam {
                base: 0xb000_0000,
                segment: 0,
                start_bus: 0,
                end_bus: 0xff
            })
        );
        assert_eq!(p.hpet, Some(0xfed0_0000));
        assert_eq!(
            p.pm_timer,
            Some(PmTimer {
                register: Register::Port(0x608),
                wide: true
            })
        );
        assert_eq!(p.reset, Some((Register::Port(0xcf9), 6)));
        assert!(p.has_8042 && p.has_fadt);
        assert_eq!(p.spcr, None);
    }

    #[test]
    fn a_legacy_free_machine_and_an_spcr_console() {
        let m = machine(vec![fadt(false, false), spcr(0, 1, 0x2f8)]);
        let p = read_machine(&m).unwrap();
        assert_eq!((p.local_apic, p.hpet), (None, None));
        assert!(p.ecam.iter().all(Option::is_none));
        assert!(!p.has_8042);
        assert_eq!(p.reset, None, "reset register not marked as supported");
        assert_eq!(
            p.spcr,
            Some(SerialConsole {
                register: Register::Port(0x2f8),
                baud: Some(115_200)
            })
        );
        // A PL011 in SPCR is not a console the PC can drive.
        let m = machine(vec![spcr(3, 0, 0x900_0000)]);
        assert_eq!(read_machine(&m).unwrap().spcr, None);
        // MMIO 16550.
        let m = machine(vec![spcr(0, 0, 0xfe03_2000)]);
        assert_eq!(
            read_machine(&m).unwrap().spcr.map(|s| s.register),
            Some(Register::Memory(0xfe03_2000))
        );
    }

    #[test]
    fn a_damaged_table_is_skipped_and_a_bad_root_is_an_error() {
        let mut bad_hpet = hpet();
        bad_hpet[40] ^= 0xff;
        let m = machine(vec![bad_hpet, mcfg()]);
        let p = read_machine(&m).unwrap();
        assert_eq!(p.hpet, None);
        assert!(p.ecam[0].is_some());
        let mut m = machine(vec![mcfg()]);
        m.rsdp[0] = b'X';
        assert_eq!(
            read_machine(&m).unwrap_err(),
            PlatformError("no RSDP signature at the address given")
        );
    }
}
