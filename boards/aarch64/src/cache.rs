//! Data-cache maintenance by virtual address, to the point of coherency: what
//! a buffer shared with a non-coherent DMA master (the Pi 4's GENET, the
//! VideoCore mailbox) needs around each hand-over. With the identity map a
//! physical address is its virtual address.

use core::arch::asm;

/// Data cache line size of the Cortex-A72 (the Pi 4) and of QEMU's
/// `cortex-a72`; maintenance steps by it.
pub const CACHE_LINE: usize = 64;

/// The cache lines covering `start..start + len`.
fn lines(start: usize, len: usize) -> impl Iterator<Item = usize> {
    let first = start & !(CACHE_LINE - 1);
    (first..start.saturating_add(len)).step_by(CACHE_LINE)
}

/// Writes dirty lines of the range back to memory (`dc cvac`), then waits
/// for completion (`dsb sy`): afterwards a device reading memory sees what
/// the CPU wrote.
pub fn clean(start: usize, len: usize) {
    for line in lines(start, len) {
        // SAFETY: cleaning a line only writes its data back to memory; it
        // does not change any value the program sees, whatever the address.
        unsafe { asm!("dc cvac, {}", in(reg) line, options(nostack, preserves_flags)) };
    }
    // SAFETY: a barrier has no memory-safety effects.
    unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
}

/// Cleans and invalidates the range (`dc civac`), then waits (`dsb sy`):
/// afterwards the CPU reads what a device wrote to memory. Clean-and-
/// invalidate rather than invalidate alone, so that a line the CPU dirtied
/// by mistake is written back instead of silently lost.
pub fn clean_invalidate(start: usize, len: usize) {
    for line in lines(start, len) {
        // SAFETY: as for `clean`: the line's data is written back before it
        // is dropped from the cache, so no value the program sees changes.
        unsafe { asm!("dc civac, {}", in(reg) line, options(nostack, preserves_flags)) };
    }
    // SAFETY: a barrier has no memory-safety effects.
    unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
}
