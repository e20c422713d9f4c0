//! [`Aarch64Board`]: the [`Board`] that rpi4 and virt hand the kernel; they
//! differ only in their [`BoardFacts`].

use core::ops::Range;

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{CNTFRQ_EL0, CNTPCT_EL0};
use tern_hal::{Board, BoardFacts, HeapStats, MonotonicClock};
use tock_registers::interfaces::Readable;

use crate::memory::RamRanges;
use crate::{irq, semihosting};

/// The Arm generic timer's physical counter (CNTPCT_EL0 at CNTFRQ_EL0 Hz)
/// as a monotonic clock starting at its creation.
#[derive(Debug)]
pub struct GenericTimerClock {
    start: u64,
    hz: u64,
}

impl GenericTimerClock {
    /// A clock reading zero now.
    pub fn start() -> Self {
        Self {
            start: counter(),
            hz: CNTFRQ_EL0.get(),
        }
    }
}

/// The physical count, read after earlier instructions completed (ISB).
fn counter() -> u64 {
    barrier::isb(barrier::SY);
    CNTPCT_EL0.get()
}

impl MonotonicClock for GenericTimerClock {
    fn now_ns(&self) -> u64 {
        let ticks = counter().wrapping_sub(self.start);
        (u128::from(ticks) * 1_000_000_000 / u128::from(self.hz.max(1))) as u64
    }

    fn counter_hz(&self) -> u64 {
        self.hz
    }
}

/// An aarch64 board with the generic timer, the GIC tick and semihosting
/// halt.
#[derive(Debug)]
pub struct Aarch64Board {
    facts: BoardFacts,
    clock: GenericTimerClock,
    ram: Range<u64>,
}

impl Aarch64Board {
    /// A board reporting `facts` with `ram` as its RAM; `timer_hz` is
    /// overwritten with CNTFRQ_EL0.
    pub fn new(mut facts: BoardFacts, ram: Range<u64>) -> Self {
        let clock = GenericTimerClock::start();
        facts.timer_hz = clock.hz;
        Self { facts, clock, ram }
    }

    /// Logs the memory map through defmt. Called before the first prompt:
    /// defmt frames need the console, which the kernel installs, and logging
    /// after the banner keeps the banner the first line.
    fn log_boot(&self) {
        let stats = tern_board_common::heap_stats();
        defmt::info!(
            "{=str}: RAM {=u64:#x}..{=u64:#x}, image ends at {=u64:#x}, heap {=u64} KiB",
            self.facts.board,
            self.ram.start,
            self.ram.end,
            crate::image_end() as u64,
            stats.total_bytes / 1024
        );
        if let Some(why) = crate::kernel::no_network_reason() {
            defmt::warn!("net: {=str}: no network", why);
        }
    }
}

impl Board for Aarch64Board {
    fn facts(&self) -> BoardFacts {
        self.facts.clone()
    }

    fn clock(&self) -> &dyn MonotonicClock {
        &self.clock
    }

    fn timer_interrupts(&self) -> u64 {
        irq::ticks()
    }

    fn heap_stats(&self) -> HeapStats {
        tern_board_common::heap_stats()
    }

    fn before_first_prompt(&self) {
        self.log_boot();
    }

    fn wait_for_interrupt(&self) {
        aarch64_cpu::asm::wfi();
    }

    fn halt(&self, code: u8) -> ! {
        semihosting::exit(code)
    }
}

/// Gives the kernel heap all of `ram` above the end of the image (below it
/// lie the image, its stack and the firmware's stubs).
///
/// # Safety
///
/// `ram` must be RAM mapped cacheable and used by nothing else above the
/// image; call once, after the MMU is on.
pub unsafe fn claim_heap(ram: &RamRanges) {
    let mut heap = ram.clone();
    heap.remove(0..crate::image_end() as u64);
    let largest = heap.iter().max_by_key(|r| r.end - r.start).cloned();
    let Some(largest) = largest else {
        panic!("no RAM above the image for the heap");
    };
    let size = |r: &Range<u64>| (r.end - r.start) as usize;
    // SAFETY: the caller guarantees every range is free, mapped RAM; the
    // first claim is the largest range, which talc can always take.
    unsafe { tern_board_common::init_heap(largest.start as *mut u8, size(&largest)) };
    for range in heap.iter().filter(|r| **r != largest) {
        // SAFETY: as above. A range too small for talc stays unused.
        unsafe { tern_board_common::add_heap(range.start as *mut u8, size(range)) };
    }
}
