//! Pieces shared by every Tern board: the kernel heap and the defmt logger,
//! the catalog of task kinds the boards carry ([`task_catalog`]), the
//! `random` shell command ([`random`]), the boot commands provisioned into
//! the image at flash time ([`provision`]), and for the QEMU boards the
//! virtio-net driver ([`virtio_net`]) and the virtio glue ([`virtio`]).
//!
//! The heap is a [`talc`] allocator behind a spinlock. A board claims its free
//! RAM once, early in boot, with [`init_heap`]; the portable kernel reads usage
//! through [`heap_stats`]. Interrupt handlers must not allocate (they would
//! spin on a lock the interrupted code may hold).
#![no_std]

extern crate alloc;

mod logger;
pub mod provision;
pub mod random;
pub mod virtio;
pub mod virtio_net;

/// The task kinds every Tern board carries: Wasm tasks made of the modules
/// peers send (their steps timed by `board`'s clock) and the NPB workloads.
pub fn task_catalog(board: &'static dyn tern_hal::Board) -> Rc<dyn tern_unikernel::TaskCatalog> {
    let wasm = tern_wasm::WasmCatalog::new(board.clock(), tern_wasm::Limits::default());
    Rc::new(tern_migration::Catalogs::new(alloc::vec![
        Rc::new(wasm) as Rc<dyn tern_unikernel::TaskCatalog>,
        Rc::new(tern_workloads::NpbCatalog),
    ]))
}

use alloc::rc::Rc;

use talc::source::Claim;
use talc::TalcLock;
use tern_hal::HeapStats;

#[global_allocator]
static HEAP: TalcLock<spinning_top::RawSpinlock, Claim> = TalcLock::new(Claim::standby());

/// Hands `size` bytes of RAM starting at `start` to the kernel heap.
///
/// # Safety
///
/// The range must be RAM that is mapped read-write, used by nothing else for
/// the rest of the kernel's life, and this must be called once, before the
/// first allocation.
pub unsafe fn init_heap(start: *mut u8, size: usize) {
    // SAFETY: the caller guarantees the range is unused, writable RAM.
    let claimed = unsafe { HEAP.lock().claim(start, size) };
    assert!(claimed.is_some(), "heap region too small to claim");
}

/// Hands one more range of RAM to the heap, after [`init_heap`]; returns
/// whether the allocator took it (a range too small for its bookkeeping is
/// left alone).
///
/// # Safety
///
/// As for [`init_heap`]: mapped read-write RAM used by nothing else.
pub unsafe fn add_heap(start: *mut u8, size: usize) -> bool {
    // SAFETY: the caller guarantees the range is unused, writable RAM.
    unsafe { HEAP.lock().claim(start, size) }.is_some()
}

/// Current heap usage.
pub fn heap_stats() -> HeapStats {
    let talc = HEAP.lock();
    let counters = talc.counters();
    HeapStats {
        total_bytes: counters.claimed_bytes as u64,
        used_bytes: counters.allocated_bytes as u64,
    }
}
