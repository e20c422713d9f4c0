//! Changes to the boot page tables: the stack guard page.
//!
//! The boot code identity-maps 4 GiB with 2 MiB pages. The 2 MiB page
//! holding the boot stack's guard page is split into 4 KiB pages here and
//! the guard left unmapped: a stack overflow then raises a page fault, whose
//! own frame cannot be pushed either, so the CPU escalates to a double fault
//! that runs on its IST stack and prints the dump.

use core::ptr::{addr_of, addr_of_mut};
use core::sync::atomic::{AtomicBool, Ordering};

use x86_64::instructions::tlb;
use x86_64::registers::control::Cr3;
use x86_64::structures::paging::page_table::PageTableEntry;
use x86_64::structures::paging::{PageTable, PageTableFlags};
use x86_64::{PhysAddr, VirtAddr};

const PAGE_4K: u64 = 4096;
const PAGE_2M: u64 = 2 << 20;

extern "C" {
    /// The 4 KiB page right below the boot stack (from `boot.rs`).
    static boot_stack_guard: u8;
}

/// The 4 KiB page table replacing the 2 MiB page around the guard.
static mut GUARD_TABLE: PageTable = PageTable::new();
/// Set by the first [`unmap_stack_guard`]: the table is written once.
static GUARD_UNMAPPED: AtomicBool = AtomicBool::new(false);

/// The table an entry of the identity-mapped page tables points to.
///
/// # Safety
///
/// `entry` must be present and point to a page table (not a huge page), and
/// no other reference to that table may be live.
unsafe fn next_table(entry: &PageTableEntry) -> &'static mut PageTable {
    // SAFETY: identity mapping: the physical address is the virtual one;
    // the caller vouches for the rest.
    unsafe { &mut *(entry.addr().as_u64() as *mut PageTable) }
}

/// Unmaps the boot stack's guard page. Runs once (a second call does
/// nothing: GUARD_TABLE is in use by then); called early, on the boot stack
/// (above the guard), with interrupts disabled.
pub fn unmap_stack_guard() {
    if GUARD_UNMAPPED.swap(true, Ordering::AcqRel) {
        return;
    }
    let guard = addr_of!(boot_stack_guard) as u64;
    let flags = PageTableFlags::PRESENT | PageTableFlags::WRITABLE;
    // SAFETY: CR3 holds the boot PML4, whose entry 0 points to the PDPT and
    // whose PDPT entries 0..4 point to page directories (boot.rs); the guard
    // lies below 4 GiB. Nothing else holds references into these tables,
    // and GUARD_TABLE is used only here, and the flag above lets only the
    // first call through.
    unsafe {
        let pml4 = &mut *(Cr3::read().0.start_address().as_u64() as *mut PageTable);
        let pdpt = next_table(&pml4[0]);
        let pd = next_table(&pdpt[((guard >> 30) & 511) as usize]);
        let table = &mut *addr_of_mut!(GUARD_TABLE);
        let base = guard & !(PAGE_2M - 1);
        for (i, entry) in table.iter_mut().enumerate() {
            entry.set_addr(PhysAddr::new(base + i as u64 * PAGE_4K), flags);
        }
        table[((guard >> 12) & 511) as usize].set_unused();
        let table_addr = PhysAddr::new(addr_of!(GUARD_TABLE) as u64);
        pd[((guard >> 21) & 511) as usize].set_addr(table_addr, flags);
    }
    tlb::flush(VirtAddr::new(guard));
}
