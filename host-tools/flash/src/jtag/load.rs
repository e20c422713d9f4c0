//! The load sequence over a [`Target`]: halt, check the core is where the
//! firmware would hand over (AArch64 at EL2), write and verify every byte of
//! the plan, set the registers, then run or stay halted for a debugger.
//! probe-rs drives a real core (`super::probe`); the tests drive a model.

use std::time::Duration;

use super::plan::{LoadPlan, Register};
use super::ProbeError;

/// How long core 0 may take to enter debug state.
pub const HALT_TIMEOUT: Duration = Duration::from_secs(1);

/// Bytes per write, so that progress moves during a megabyte-sized kernel.
const CHUNK: usize = 64 << 10;

/// The halted core's execution state, from its saved PSTATE (DSPSR_EL0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoreState {
    /// The exception level it was halted at (0–3).
    pub exception_level: u8,
    /// Whether it was executing AArch64 (not AArch32).
    pub aarch64: bool,
}

impl CoreState {
    /// Decodes a saved PSTATE: M\[4\] = nRW (1 = AArch32), M\[3:2\] = EL.
    pub fn from_pstate(pstate: u64) -> Self {
        Self {
            exception_level: ((pstate >> 2) & 3) as u8,
            aarch64: pstate & (1 << 4) == 0,
        }
    }
}

/// What a debug probe lets the loader do with one core.
pub trait Target {
    /// Stops the core (debug state); [`ProbeError::NotHalting`] if it does not within `timeout`.
    fn halt(&mut self, timeout: Duration) -> Result<(), ProbeError>;
    /// The halted core's execution state.
    fn state(&mut self) -> Result<CoreState, ProbeError>;
    /// Writes `bytes` to physical memory at `address`, through the halted core.
    fn write(&mut self, address: u64, bytes: &[u8]) -> Result<(), ProbeError>;
    /// Reads physical memory at `address` into `bytes`.
    fn read(&mut self, address: u64, bytes: &mut [u8]) -> Result<(), ProbeError>;
    /// Sets a register of the halted core (in effect when it runs or is released).
    fn set_register(&mut self, register: Register, value: u64) -> Result<(), ProbeError>;
    /// Lets the core run.
    fn resume(&mut self) -> Result<(), ProbeError>;
}

/// What the core does once loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterLoad {
    /// Run the kernel.
    Run,
    /// Stay halted at the stub, for a debugger to take over.
    StayHalted,
}

/// Loads `plan` through `target`, calling `progress` with the bytes written
/// and verified so far. Nothing is written unless the core halted AArch64 at
/// EL2; the core runs only if every byte read back as written.
pub fn load(
    target: &mut dyn Target,
    plan: &LoadPlan,
    after: AfterLoad,
    progress: &mut dyn FnMut(u64),
) -> Result<(), ProbeError> {
    target.halt(HALT_TIMEOUT)?;
    let state = target.state()?;
    if !state.aarch64 || state.exception_level != 2 {
        return Err(ProbeError::NotAtEl2 {
            exception_level: state.exception_level,
            aarch64: state.aarch64,
        });
    }
    let mut done = 0;
    for segment in plan.writes() {
        let mut address = segment.address;
        for chunk in segment.bytes.chunks(CHUNK) {
            target.write(address, chunk)?;
            let mut back = vec![0; chunk.len()];
            target.read(address, &mut back)?;
            if let Some(at) = chunk.iter().zip(&back).position(|(a, b)| a != b) {
                return Err(ProbeError::VerifyFailed {
                    address: address + at as u64,
                    wrote: chunk[at],
                    read: back[at],
                });
            }
            address += chunk.len() as u64;
            done += chunk.len() as u64;
            progress(done);
        }
    }
    for (register, value) in plan.registers() {
        target.set_register(register, value)?;
    }
    match after {
        AfterLoad::Run => target.resume(),
        AfterLoad::StayHalted => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use object::elf;

    use super::*;
    use crate::image::tests::{synthetic_elf, Segment as ElfSegment};
    use crate::image::KernelElf;

    /// A core and its RAM as a probe sees them: records every operation,
    /// refuses memory and register access while running, and can be made
    /// to ignore halt requests, run at another level, or corrupt a byte.
    struct Model {
        halted: bool,
        never_halts: bool,
        pstate: u64,
        memory: BTreeMap<u64, u8>,
        registers: Vec<(Register, u64)>,
        corrupt: Option<u64>,
        log: Vec<String>,
    }

    impl Model {
        /// Halted at EL2h, AArch64 (the chainloader's state).
        fn new() -> Self {
            Self {
                halted: false,
                never_halts: false,
                pstate: 0x3c9,
                memory: BTreeMap::new(),
                registers: Vec::new(),
                corrupt: None,
                log: Vec::new(),
            }
        }

        fn check_halted(&self) -> Result<(), ProbeError> {
            assert!(self.halted, "access to a running core");
            Ok(())
        }
    }

    impl Target for Model {
        fn halt(&mut self, timeout: Duration) -> Result<(), ProbeError> {
            self.log.push("halt".into());
            if self.never_halts {
                return Err(ProbeError::NotHalting { waited: timeout });
            }
            self.halted = true;
            Ok(())
        }

        fn state(&mut self) -> Result<CoreState, ProbeError> {
            self.check_halted()?;
            Ok(CoreState::from_pstate(self.pstate))
        }

        fn write(&mut self, address: u64, bytes: &[u8]) -> Result<(), ProbeError> {
            self.check_halted()?;
            self.log.push(format!("write {address:#x} {}", bytes.len()));
            for (i, byte) in bytes.iter().enumerate() {
                let at = address + i as u64;
                let value = if self.corrupt == Some(at) {
                    !byte
                } else {
                    *byte
                };
                self.memory.insert(at, value);
            }
            Ok(())
        }

        fn read(&mut self, address: u64, bytes: &mut [u8]) -> Result<(), ProbeError> {
            self.check_halted()?;
            for (i, byte) in bytes.iter_mut().enumerate() {
                *byte = self.memory.get(&(address + i as u64)).copied().unwrap_or(0);
            }
            Ok(())
        }

        fn set_register(&mut self, register: Register, value: u64) -> Result<(), ProbeError> {
            self.check_halted()?;
            self.registers.push((register, value));
            Ok(())
        }

        fn resume(&mut self) -> Result<(), ProbeError> {
            self.check_halted()?;
            self.log.push("resume".into());
            self.halted = false;
            Ok(())
        }
    }

    fn plan() -> LoadPlan {
        let code: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
        let elf = KernelElf::from_bytes(
            Path::new("kernel.elf"),
            synthetic_elf(
                elf::EM_AARCH64,
                Some("rpi4"),
                &[
                    ElfSegment {
                        paddr: 0x80000,
                        bytes: &code,
                        bss: 0,
                    },
                    ElfSegment {
                        paddr: 0xb0000,
                        bytes: b"data",
                        bss: 64,
                    },
                ],
            ),
        );
        let ram = 0..0x3b40_0000;
        LoadPlan::new(&elf, std::slice::from_ref(&ram), 0).unwrap()
    }

    #[test]
    fn loads_verifies_sets_registers_and_runs() {
        let plan = plan();
        let mut core = Model::new();
        let mut seen = Vec::new();
        load(&mut core, &plan, AfterLoad::Run, &mut |n| seen.push(n)).unwrap();
        for segment in plan.writes() {
            for (i, byte) in segment.bytes.iter().enumerate() {
                assert_eq!(core.memory[&(segment.address + i as u64)], *byte);
            }
        }
        // bss is left to the kernel.
        assert!(!core.memory.contains_key(&0xb0004));
        assert_eq!(core.registers, plan.registers());
        assert_eq!(core.log.first().unwrap(), "halt");
        assert_eq!(core.log.last().unwrap(), "resume");
        assert!(!core.halted);
        // Progress in chunks, ending at every byte of the plan.
        assert_eq!(seen.last(), Some(&plan.bytes()));
        assert!(seen.len() >= 4, "{seen:?}");
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn stays_halted_for_a_debugger() {
        let plan = plan();
        let mut core = Model::new();
        load(&mut core, &plan, AfterLoad::StayHalted, &mut |_| {}).unwrap();
        assert!(core.halted);
        assert_eq!(
            core.registers.last(),
            Some(&(Register::Pc, plan.stub.address))
        );
        assert!(!core.log.contains(&"resume".to_string()));
    }

    #[test]
    fn a_core_that_does_not_halt_is_left_alone() {
        let mut core = Model::new();
        core.never_halts = true;
        let error = load(&mut core, &plan(), AfterLoad::Run, &mut |_| {}).unwrap_err();
        assert!(matches!(error, ProbeError::NotHalting { waited } if waited == HALT_TIMEOUT));
        assert_eq!(core.log, ["halt"]);
    }

    #[test]
    fn a_core_at_el1_or_in_aarch32_gets_nothing_written() {
        for (pstate, level, aarch64) in [(0x3c5, 1, true), (0x1d3, 0, false)] {
            let mut core = Model::new();
            core.pstate = pstate;
            let error = load(&mut core, &plan(), AfterLoad::Run, &mut |_| {}).unwrap_err();
            assert!(
                matches!(error, ProbeError::NotAtEl2 { exception_level, aarch64: a } if exception_level == level && a == aarch64),
                "{error}"
            );
            assert!(core.memory.is_empty());
            assert!(core.registers.is_empty());
            assert!(
                core.halted,
                "left halted where it was, for the user to look"
            );
        }
    }

    #[test]
    fn a_byte_that_reads_back_wrong_stops_the_load_before_the_core_runs() {
        let mut core = Model::new();
        core.corrupt = Some(0x80000 + 70_000);
        let error = load(&mut core, &plan(), AfterLoad::Run, &mut |_| {}).unwrap_err();
        assert!(
            matches!(error, ProbeError::VerifyFailed { address, .. } if address == 0x80000 + 70_000),
            "{error}"
        );
        assert!(core.registers.is_empty());
        assert!(core.halted);
    }

    #[test]
    fn pstate_decodes_level_and_width() {
        assert_eq!(
            CoreState::from_pstate(0x3c9),
            CoreState {
                exception_level: 2,
                aarch64: true
            }
        );
        assert!(!CoreState::from_pstate(0x1d3).aarch64);
    }
}
