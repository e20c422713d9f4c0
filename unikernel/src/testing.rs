//! A fake board for the host unit tests of the shell, the task runner and
//! migration.

use std::boxed::Box;
use std::sync::atomic::{AtomicU64, Ordering};
use tern_hal::{Board, BoardFacts, HeapStats, Isa, MonotonicClock};

use crate::Kernel;

/// Starts at 2.5 s and advances 1 ms at every reading, so that timeouts
/// expire in tests that wait.
pub struct FakeClock(AtomicU64);

impl MonotonicClock for FakeClock {
    fn now_ns(&self) -> u64 {
        self.0.fetch_add(1_000_000, Ordering::Relaxed)
    }
    fn counter_hz(&self) -> u64 {
        1_000_000
    }
}

/// A board with fixed facts and a settable heap size.
pub struct FakeBoard {
    isa: Isa,
    board: &'static str,
    clock: FakeClock,
    heap_total: u64,
}

impl FakeBoard {
    /// A leaked (hence `'static`) rpi4-like board with a 64 MiB heap.
    pub fn leak() -> &'static Self {
        Self::leak_with(Isa::Aarch64, "rpi4", 64 << 20)
    }
    /// A leaked board of this ISA, name and heap size (1 MiB of it in use).
    pub fn leak_with(isa: Isa, board: &'static str, heap_total: u64) -> &'static Self {
        Box::leak(Box::new(Self {
            isa,
            board,
            clock: FakeClock(AtomicU64::new(2_500_000_000)),
            heap_total,
        }))
    }
}

impl Board for FakeBoard {
    fn facts(&self) -> BoardFacts {
        BoardFacts {
            board: self.board,
            isa: self.isa,
            model: "test board",
            memory_bytes: 1 << 30,
            timer_hz: 54_000_000,
            serial_number: Some(0x1000_0000_abcd),
            mac_address: Some([0xdc, 0xa6, 0x32, 1, 2, 3]),
        }
    }
    fn clock(&self) -> &dyn MonotonicClock {
        &self.clock
    }
    fn timer_interrupts(&self) -> u64 {
        7
    }
    fn heap_stats(&self) -> HeapStats {
        HeapStats {
            total_bytes: self.heap_total,
            used_bytes: 1 << 20,
        }
    }
    fn wait_for_interrupt(&self) {}
    fn halt(&self, code: u8) -> ! {
        panic!("halt {code}")
    }
}

/// Runs one shell line on `kernel`; returns what it printed.
pub fn exec(kernel: &mut Kernel, line: &str) -> std::string::String {
    let mut out = std::string::String::new();
    kernel.execute(line, &mut out);
    out
}

/// Polls the services until no task runs (at most `max_polls` times);
/// returns what they printed.
pub fn run_tasks(kernel: &mut Kernel, max_polls: usize) -> std::string::String {
    let mut out = std::string::String::new();
    for _ in 0..max_polls {
        if !kernel.poll_services(&mut out) {
            return out;
        }
    }
    panic!("tasks still running after {max_polls} polls: {out}")
}
