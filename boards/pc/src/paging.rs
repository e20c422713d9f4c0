//! The kernel's page tables, built once at boot to replace the boot code's
//! 4 GiB identity map: all usable RAM write-back (also above 4 GiB), the
//! kernel image, and nothing else; device windows (PCI BARs, the local
//! APIC, the HPET, ECAM, framebuffers) are mapped on demand, uncached or
//! write-combining. Page 0 and the page below the boot stack stay unmapped:
//! a null dereference faults, and a stack overflow ends in a double fault
//! (the page fault's own frame cannot be pushed) that runs on its IST stack
//! and prints the dump.
//!
//! Tables come from the heap (identity-mapped, so a table's address is its
//! physical address); the table logic is the host-tested
//! [`tern_board_pc::pagetable`].

use alloc::alloc::{alloc_zeroed, Layout};
use core::arch::x86_64::__cpuid;
use core::cell::RefCell;
use core::ptr::addr_of;

use critical_section::Mutex;
use tern_board_pc::bootinfo::{MemoryMap, Region};
use tern_board_pc::pagetable::{
    Cache, MapError, PageTables, TableMemory, ENTRIES, PAGE_4K, PAT_VALUE,
};
use x86_64::registers::control::{Cr3, Cr3Flags};
use x86_64::registers::model_specific::Msr;
use x86_64::structures::paging::PhysFrame;
use x86_64::PhysAddr;

/// IA32_PAT.
const PAT_MSR: u32 = 0x277;

extern "C" {
    /// The 4 KiB page right below the boot stack (from `boot.rs`).
    static boot_stack_guard: u8;
}

/// Page tables from the kernel heap.
struct HeapTables;

impl TableMemory for HeapTables {
    fn allocate(&mut self) -> Option<u64> {
        let layout = Layout::from_size_align(PAGE_4K as usize, PAGE_4K as usize).ok()?;
        // SAFETY: the layout has a non-zero size; the table is never freed
        // (page tables live as long as the kernel).
        let table = unsafe { alloc_zeroed(layout) };
        (!table.is_null()).then_some(table as u64)
    }

    fn table(&mut self, phys: u64) -> &mut [u64; ENTRIES] {
        // SAFETY: `phys` is a table `allocate` returned (heap memory,
        // identity-mapped, 4 KiB-aligned, owned by the page tables), reached
        // only through the TABLES lock, so this is the only reference.
        unsafe { &mut *(phys as *mut [u64; ENTRIES]) }
    }
}

static TABLES: Mutex<RefCell<Option<PageTables<HeapTables>>>> = Mutex::new(RefCell::new(None));

/// Why the kernel's page tables could not be built.
#[derive(Clone, Copy, Debug)]
pub enum PagingError {
    /// [`init`] ran before.
    AlreadyBuilt,
    /// A range could not be mapped.
    Map(MapError),
}

impl core::fmt::Display for PagingError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::AlreadyBuilt => f.write_str("page tables built twice"),
            Self::Map(error) => error.fmt(f),
        }
    }
}

/// The physical address width (CPUID 0x8000_0008) and whether 1 GiB pages
/// exist (CPUID 0x8000_0001 EDX bit 26).
fn cpu_paging_features() -> (u8, bool) {
    let max = __cpuid(0x8000_0000).eax;
    let bits = if max >= 0x8000_0008 {
        __cpuid(0x8000_0008).eax as u8
    } else {
        36
    };
    let huge = max >= 0x8000_0001 && __cpuid(0x8000_0001).edx & (1 << 26) != 0;
    (bits, huge)
}

/// The boot stack's guard page: never mapped, so reading it faults (the
/// `fault` command does).
pub fn guard_page() -> u64 {
    addr_of!(boot_stack_guard) as u64
}

/// Builds the kernel's tables (RAM of `memory_map` and the kernel image
/// write-back, page 0 and the stack guard unmapped), programs the PAT and
/// switches to them. Runs once; the heap must hold at least a few hundred
/// KiB for the tables.
pub fn init(memory_map: &MemoryMap, kernel: Region) -> Result<(), PagingError> {
    let (phys_bits, huge_1g) = cpu_paging_features();
    let mut tables = PageTables::new(HeapTables, phys_bits, huge_1g).map_err(PagingError::Map)?;
    for region in memory_map.regions().iter().chain([&kernel]) {
        tables
            .map(region.start, region.end, Cache::WriteBack)
            .map_err(PagingError::Map)?;
    }
    let guard = guard_page();
    for page in [0, guard] {
        tables
            .unmap(page, page + PAGE_4K)
            .map_err(PagingError::Map)?;
    }
    let root = tables.root();
    critical_section::with(|cs| {
        let mut slot = TABLES.borrow_ref_mut(cs);
        if slot.is_some() {
            return Err(PagingError::AlreadyBuilt);
        }
        *slot = Some(tables);
        Ok(())
    })?;
    // SAFETY: PAT_VALUE keeps entries 0 (WB) and 3 (UC) as the boot tables
    // use them and turns entry 1 (unused so far) into WC. The new root maps
    // everything the kernel runs on: its image (code, data, the stack above
    // the guard, the tables' heap) and all RAM.
    unsafe {
        Msr::new(PAT_MSR).write(PAT_VALUE);
        let frame = PhysFrame::containing_address(PhysAddr::new(root));
        Cr3::write(frame, Cr3Flags::empty());
    }
    Ok(())
}

/// Maps `[start, start + len)` (identity) with `cache`, for a device window
/// or a firmware table. Mapping what is mapped the same way already changes
/// nothing.
pub fn map(start: u64, len: u64, cache: Cache) -> Result<(), MapError> {
    let end = start.checked_add(len).ok_or(MapError::BadRange {
        start,
        end: u64::MAX,
    })?;
    critical_section::with(|cs| {
        let mut tables = TABLES.borrow_ref_mut(cs);
        let Some(tables) = tables.as_mut() else {
            // Before `init` the boot code's 4 GiB identity map is in force.
            return if end <= 4 << 30 {
                Ok(())
            } else {
                Err(MapError::BadRange { start, end })
            };
        };
        tables.map(start, end, cache)?;
        // An existing entry may have changed (split, or a new attribute).
        x86_64::instructions::tlb::flush_all();
        Ok(())
    })
}
