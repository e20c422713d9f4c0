//! The MMU: an identity map of the low 4 GiB with 2 MiB blocks and of the
//! RAM above, up to 512 GiB, with 1 GiB blocks.
//!
//! RAM is Normal write-back cacheable (inner shareable), the board's MMIO
//! ranges are Device-nGnRE and never executable, everything else is unmapped
//! (an access faults and prints a register dump). Above 4 GiB only whole
//! gigabytes of RAM are mapped ([`HIGH_BLOCK`]): the boards give the heap
//! nothing else there. Caches are switched on together with the MMU.

use core::cell::UnsafeCell;
use core::ops::Range;

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{ID_AA64MMFR0_EL1, MAIR_EL1, SCTLR_EL1, TCR_EL1, TTBR0_EL1};
use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};

use crate::memory::RamRanges;

/// Bytes covered by one level-2 block.
const BLOCK: u64 = 2 << 20;
/// Bytes covered by one level-1 entry, the block size above 4 GiB.
pub const HIGH_BLOCK: u64 = 1 << 30;
/// Where the 2 MiB-block map ends and the 1 GiB one begins.
pub const LOW_END: u64 = 4 << 30;
/// End of the address space the map covers: 512 level-1 entries of 1 GiB
/// (a 39-bit input address, T0SZ = 25).
pub const MAPPED_END: u64 = 512 * HIGH_BLOCK;

/// What the board tells the MMU about its address space.
#[derive(Clone, Debug)]
pub struct MemoryMap<'a> {
    /// RAM; mapped cacheable.
    pub ram: &'a RamRanges,
    /// Device register ranges below 4 GiB; mapped Device-nGnRE.
    pub mmio: &'a [Range<u64>],
}

#[repr(C, align(4096))]
struct Table([u64; 512]);

/// One level-1 table (512 entries of 1 GiB) and four level-2 tables for the
/// low 4 GiB.
struct Tables {
    l1: UnsafeCell<Table>,
    l2: UnsafeCell<[Table; 4]>,
}

// SAFETY: the tables are written once, by `enable`, before the MMU reads
// them; afterwards only the MMU reads them.
unsafe impl Sync for Tables {}

static TABLES: Tables = Tables {
    l1: UnsafeCell::new(Table([0; 512])),
    l2: UnsafeCell::new([const { Table([0; 512]) }; 4]),
};

const VALID: u64 = 1;
const TABLE: u64 = 1 << 1;
const ATTR_DEVICE: u64 = 0 << 2;
const ATTR_NORMAL: u64 = 1 << 2;
const INNER_SHAREABLE: u64 = 3 << 8;
const ACCESS_FLAG: u64 = 1 << 10;
const PXN: u64 = 1 << 53;
const UXN: u64 = 1 << 54;

/// The level-2 descriptor of the 2 MiB block at `base`.
fn block_descriptor(base: u64, map: &MemoryMap<'_>) -> u64 {
    let block = base..base + BLOCK;
    let overlaps = |r: &Range<u64>| r.start < block.end && block.start < r.end;
    if map.mmio.iter().any(overlaps) {
        base | VALID | ATTR_DEVICE | ACCESS_FLAG | PXN | UXN
    } else if map.ram.iter().any(overlaps) {
        base | VALID | ATTR_NORMAL | INNER_SHAREABLE | ACCESS_FLAG | UXN
    } else {
        0
    }
}

/// Builds the identity map and turns on the MMU and the caches.
///
/// # Safety
///
/// Must be called once, at EL1 with the MMU off, and `map` must describe
/// the machine: the running image, its stack and all memory used later must
/// lie in `map.ram` (below 4 GiB, or whole gigabytes above), devices in
/// `map.mmio`.
pub unsafe fn enable(map: &MemoryMap<'_>) {
    // SAFETY: called once before the MMU is on (caller's contract), so
    // nothing else references the tables.
    let (l1, l2) = unsafe { (&mut *TABLES.l1.get(), &mut *TABLES.l2.get()) };
    for (gib, table) in l2.iter_mut().enumerate() {
        for (i, entry) in table.0.iter_mut().enumerate() {
            *entry = block_descriptor(gib as u64 * (1 << 30) + i as u64 * BLOCK, map);
        }
        l1.0[gib] = table as *const Table as u64 | VALID | TABLE;
    }
    for (gib, entry) in l1.0.iter_mut().enumerate().skip(l2.len()) {
        let block = gib as u64 * HIGH_BLOCK..(gib as u64 + 1) * HIGH_BLOCK;
        *entry = if map.ram.contains(&block) {
            block.start | VALID | ATTR_NORMAL | INNER_SHAREABLE | ACCESS_FLAG | UXN
        } else {
            0
        };
    }
    // The physical address size the core supports, up to 48 bits (52 would
    // need the LPA2 descriptor format).
    let pa_range = ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange).min(0b101);

    // Attribute 0: Device-nGnRE; attribute 1: Normal, write-back
    // read/write-allocate, inner and outer.
    MAIR_EL1.write(
        MAIR_EL1::Attr0_Device::nonGathering_nonReordering_EarlyWriteAck
            + MAIR_EL1::Attr1_Normal_Outer::WriteBack_NonTransient_ReadWriteAlloc
            + MAIR_EL1::Attr1_Normal_Inner::WriteBack_NonTransient_ReadWriteAlloc,
    );
    TCR_EL1.write(
        TCR_EL1::TBI0::Used
            + TCR_EL1::IPS.val(pa_range)
            + TCR_EL1::TG0::KiB_4
            + TCR_EL1::SH0::Inner
            + TCR_EL1::ORGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL1::IRGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL1::EPD0::EnableTTBR0Walks
            + TCR_EL1::EPD1::DisableTTBR1Walks
            + TCR_EL1::T0SZ.val(64 - 39),
    );
    TTBR0_EL1.set_baddr(l1 as *const Table as u64);

    barrier::dsb(barrier::ISHST);
    flush_tlb();
    SCTLR_EL1.modify(SCTLR_EL1::M::Enable + SCTLR_EL1::C::Cacheable + SCTLR_EL1::I::Cacheable);
    barrier::isb(barrier::SY);
}

/// Drops every EL1 translation the core has cached, and waits until the
/// drop is complete. The tables do not change after [`enable`], so this
/// only costs refills; the tick calls it to let QEMU resize its TLB
/// ([`crate::irq`]).
pub(crate) fn flush_tlb() {
    // SAFETY: invalidating the EL1 TLBs only drops cached translations; the
    // barriers make later accesses use the tables, which are unchanged.
    unsafe { core::arch::asm!("tlbi vmalle1", "dsb ish", "isb", options(nostack)) };
}
