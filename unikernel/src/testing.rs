//! A fake board, an in-memory Ethernet cable, a fake random number
//! generator and a test task kind for the host unit tests of the shell, the
//! task runner, the network stack and migration.

use std::boxed::Box;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::vec::Vec;
use tern_hal::{
    Board, BoardFacts, EntropyError, EntropySource, HeapStats, Isa, MonotonicClock, NetDevice,
    NetError, Received,
};

use alloc::format;
use alloc::string::{String, ToString};
use tern_migration::{
    NewTask, Progress, Restored, ResumeError, Snapshot, Step, Task, TaskCatalog, TaskPlan,
    WriteError,
};

use crate::{Devices, Kernel};

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
            cpu_clock_hz: Some(1_500_000_000),
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

/// A kernel on `board` assembled as a board assembles it, with the NPB
/// catalog and no device.
pub fn kernel(board: &'static FakeBoard) -> Kernel {
    crate::assemble(
        board,
        Vec::new(),
        Devices::default(),
        std::rc::Rc::new(tern_workloads::NpbCatalog),
    )
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

/// Frames in flight on an in-memory Ethernet cable between a node's end
/// and a peer's end.
#[derive(Default)]
pub struct Wire {
    /// Frames waiting for the node end.
    pub to_node: VecDeque<Vec<u8>>,
    /// Frames the node end sent, waiting for the peer end.
    pub from_node: VecDeque<Vec<u8>>,
    /// While true, frames either end sends are lost (a cut cable).
    pub cut: bool,
}

/// One end of a [`Wire`], as a network device.
pub struct WireEnd {
    wire: Arc<Mutex<Wire>>,
    mac: [u8; 6],
    node_side: bool,
}

impl WireEnd {
    /// The node's end.
    pub fn node(wire: Arc<Mutex<Wire>>, mac: [u8; 6]) -> Self {
        Self {
            wire,
            mac,
            node_side: true,
        }
    }
    /// The peer's end.
    pub fn peer(wire: Arc<Mutex<Wire>>, mac: [u8; 6]) -> Self {
        Self {
            wire,
            mac,
            node_side: false,
        }
    }
}

impl NetDevice for WireEnd {
    fn mac_address(&self) -> [u8; 6] {
        self.mac
    }
    fn max_frame_len(&self) -> usize {
        1514
    }
    fn link_up(&self) -> bool {
        true
    }
    fn receive(&mut self, buf: &mut [u8]) -> Option<Received> {
        let mut wire = self.wire.lock().unwrap();
        let queue = if self.node_side {
            &mut wire.to_node
        } else {
            &mut wire.from_node
        };
        let frame = queue.pop_front()?;
        buf[..frame.len()].copy_from_slice(&frame);
        Some(Received::unchecked(frame.len()))
    }
    fn can_transmit(&mut self) -> bool {
        true
    }
    fn transmit(&mut self, frame: &[u8]) -> Result<(), NetError> {
        let mut wire = self.wire.lock().unwrap();
        if !wire.cut {
            let queue = if self.node_side {
                &mut wire.from_node
            } else {
                &mut wire.to_node
            };
            queue.push_back(frame.to_vec());
        }
        Ok(())
    }
}

/// A deterministic stand-in for a hardware random number generator
/// (xorshift64): tests need nonces, not unpredictability.
pub struct FakeEntropy(pub u64);

impl EntropySource for FakeEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        for byte in buf {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *byte = self.0 as u8;
        }
        Ok(())
    }
}

/// A task with a large state that writes a small working set: `scribble
/// <MiB>` holds MiB mebibytes of `u64`s and each step writes one of the
/// first [`SCRIBBLE_SET`] chunks, so a live migration's rounds after the
/// first have only those to send (the test of downtime that follows the
/// dirty set, not the state's size).
pub struct Scribble {
    /// Steps done (the typed state).
    step: u64,
    data: tern_migration::BulkRegion<u64>,
}

/// Chunks a scribble task keeps writing.
pub const SCRIBBLE_SET: u64 = 4;

/// Steps a scribble task runs.
const SCRIBBLE_STEPS: u64 = 1 << 40;

impl Task for Scribble {
    fn kind(&self) -> &'static str {
        "test-scribble"
    }
    fn version(&self) -> u32 {
        1
    }
    fn step(&mut self) -> Step {
        let per = tern_migration::BulkRegion::<u64>::CHUNK_ELEMS as u64;
        let at = (self.step % SCRIBBLE_SET) * per + self.step / SCRIBBLE_SET % per;
        self.data.set(at as usize, self.step);
        self.step += 1;
        Step::Running
    }
    fn progress(&self) -> Progress {
        Progress {
            done: self.step,
            total: SCRIBBLE_STEPS,
        }
    }
    fn save<'a>(&'a self, snap: &mut Snapshot<'a>) -> Result<(), WriteError> {
        snap.typed("state", &self.step)?;
        snap.bulk("data", &self.data);
        Ok(())
    }
    fn clear_dirty(&mut self) {
        self.data.clear_dirty();
    }
}

/// The catalog of nodes that run [`Scribble`] tasks (and nothing else).
pub struct ScribbleCatalog;

impl ScribbleCatalog {
    fn mib(args: &[&str]) -> Result<u64, String> {
        match args {
            ["scribble", mib] => mib.parse().map_err(|_| String::from("MiB")),
            _ => Err(String::from("usage: scribble <MiB>")),
        }
    }
}

impl TaskCatalog for ScribbleCatalog {
    fn usage(&self) -> &str {
        "scribble <MiB>"
    }
    fn plan(&self, args: &[&str]) -> Result<TaskPlan, String> {
        Ok(TaskPlan {
            name: format!("scribble {}", Self::mib(args)?),
            state_bytes: Self::mib(args)? << 20,
        })
    }
    fn start(&self, args: &[&str]) -> Result<NewTask, String> {
        let mib = Self::mib(args)?;
        Ok(NewTask {
            name: format!("scribble {mib}"),
            task: Box::new(Scribble {
                step: 0,
                data: tern_migration::BulkRegion::new((mib << 17) as usize),
            }),
        })
    }
    fn resume(&self, mut restored: Restored) -> Result<NewTask, ResumeError> {
        let step: u64 = restored.typed("state").map_err(|e| e.to_string())?;
        let len = restored
            .regions
            .iter()
            .find(|r| r.name == "data")
            .map_or(0, |r| r.data.len_bytes() / 8);
        let data = restored
            .take_bulk("data", len as usize)
            .map_err(|e| e.to_string())?;
        Ok(NewTask {
            name: format!("scribble {}", len >> 17),
            task: Box::new(Scribble { step, data }),
        })
    }
    fn kinds(&self) -> Vec<(String, u32)> {
        alloc::vec![(String::from("test-scribble"), 1)]
    }
}
