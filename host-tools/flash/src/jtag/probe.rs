//! probe-rs under the loader: the chip from probe-rs's built-in targets, the
//! probe from the USB bus, the session over JTAG, core 0 as a [`Target`],
//! and probe-rs's GDB server for `--gdb`.

use std::error::Error as StdError;
use std::io;
use std::ops::Range;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use probe_rs::config::{MemoryRegion, Registry};
use probe_rs::probe::list::{Accessibility, Lister};
use probe_rs::probe::{
    DebugProbeError, DebugProbeInfo, DebugProbeSelector, Probe, ProbeCreationError, WireProtocol,
};
use probe_rs::{Core, CoreType, MemoryInterface, Permissions, Session};

use super::{choose, CoreState, FoundProbe, ProbeError, Register, Selector, Target};

/// The family every Raspberry Pi 4 variant belongs to in probe-rs.
const PI4_FAMILY: &str = "BCM2711";

/// A chip `--board rpi4` can load: its probe-rs name and its RAM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chip {
    /// probe-rs's name for it.
    pub name: String,
    /// The RAM regions of its memory map.
    pub ram: Vec<Range<u64>>,
}

/// Looks `name` up among probe-rs's built-in targets and checks that it is
/// a BCM2711 (the Pi 4) with ARMv8-A cores; no probe is needed for that.
pub fn chip(name: &str) -> Result<Chip, ProbeError> {
    let registry = Registry::from_builtin_families();
    let target = registry
        .get_target_by_name(name)
        .map_err(|_| ProbeError::UnknownChip {
            chip: name.to_owned(),
            similar: registry.search_chips(name).into_iter().take(5).collect(),
        })?;
    let family = registry
        .families()
        .iter()
        .find(|family| family.variants.iter().any(|chip| chip.name == target.name))
        .map_or("an unknown family", |family| family.name.as_str());
    let core = target.cores.first().map(|core| core.core_type);
    if family != PI4_FAMILY || core != Some(CoreType::Armv8a) {
        return Err(ProbeError::WrongChip {
            chip: target.name.clone(),
            reason: match core {
                Some(core) => format!("it is a {family} with {core:?} cores"),
                None => format!("it is a {family} without cores"),
            },
        });
    }
    let ram = target
        .memory_map
        .iter()
        .filter_map(|region| match region {
            MemoryRegion::Ram(ram) => Some(ram.range.clone()),
            _ => None,
        })
        .collect();
    Ok(Chip {
        name: target.name,
        ram,
    })
}

/// Finds the probe to use (see [`choose`]) and opens it for JTAG at
/// `speed_khz` (the probe's default without it); returns it with what
/// the bus said about it.
pub fn open(
    selector: Option<&str>,
    speed_khz: Option<u32>,
) -> Result<(Probe, DebugProbeInfo), ProbeError> {
    let selector = selector
        .map(|text| {
            text.parse::<DebugProbeSelector>()
                .map(|parsed| (text, parsed))
                .map_err(|error| ProbeError::InvalidSelector {
                    selector: text.to_owned(),
                    reason: error.to_string(),
                })
        })
        .transpose()?;
    let found = Lister::new()
        .list_all_with_access()
        .into_iter()
        .map(|item| FoundProbe {
            name: item.info.to_string(),
            accessible: item.accessibility == Accessibility::Accessible,
            probe: item.info,
        })
        .collect();
    let matches = |info: &DebugProbeInfo| {
        selector
            .as_ref()
            .is_some_and(|(_, parsed)| parsed.matches_probe(info))
    };
    let info = choose(
        found,
        selector.as_ref().map(|(text, _)| Selector {
            text,
            matches: &matches,
        }),
    )?;
    let name = info.to_string();
    let mut probe = info.open().map_err(|error| open_error(&name, &error))?;
    probe
        .select_protocol(WireProtocol::Jtag)
        .map_err(|error| ProbeError::Debug(format!("{name}: {error}")))?;
    if let Some(khz) = speed_khz {
        probe
            .set_speed(khz)
            .map_err(|error| ProbeError::Debug(format!("{name}: setting {khz} kHz: {error}")))?;
    }
    Ok((probe, info))
}

/// What opening a probe's USB device failed with, for the user.
pub fn open_error(probe: &str, error: &DebugProbeError) -> ProbeError {
    // The lister already reported inaccessible devices; a CMSIS-DAP device
    // that lists but cannot be claimed is held by another program.
    if matches!(
        error,
        DebugProbeError::ProbeCouldNotBeCreated(ProbeCreationError::CouldNotOpen)
    ) || caused_by(error, is_busy)
    {
        return ProbeError::ProbeBusy {
            probe: probe.to_owned(),
        };
    }
    if caused_by(error, |e| {
        e.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::PermissionDenied)
    }) {
        return ProbeError::PermissionDenied {
            probe: probe.to_owned(),
        };
    }
    ProbeError::Debug(format!("cannot open {probe}: {error}"))
}

/// Whether `error` or one of its causes satisfies `test`.
fn caused_by(
    error: &(dyn StdError + 'static),
    test: impl Fn(&(dyn StdError + 'static)) -> bool,
) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if test(error) {
            return true;
        }
        next = error.source();
    }
    false
}

/// EBUSY from the kernel, or nusb's "busy" error: probe-rs's J-Link and
/// FTDI drivers pass it on only as text ("interface is busy"), the
/// CMSIS-DAP driver as the io error's kind.
fn is_busy(error: &(dyn StdError + 'static)) -> bool {
    const EBUSY: i32 = 16;
    if let Some(io) = error.downcast_ref::<io::Error>() {
        if io.kind() == io::ErrorKind::ResourceBusy || io.raw_os_error() == Some(EBUSY) {
            return true;
        }
    }
    let text = error.to_string();
    text.contains("busy") || text.contains("already in use") || text.contains("still in use")
}

/// Attaches to `chip` through `probe`.
pub fn attach(probe: Probe, chip: &Chip) -> Result<Session, ProbeError> {
    let name = probe.get_name();
    probe
        .attach(chip.name.as_str(), Permissions::new())
        .map_err(|error| ProbeError::Attach {
            chip: chip.name.clone(),
            probe: name,
            reason: error.to_string(),
        })
}

/// Core 0 of an attached session as the loader's [`Target`].
pub struct PiCore<'a>(pub Core<'a>);

fn debug(error: probe_rs::Error) -> ProbeError {
    ProbeError::Debug(error.to_string())
}

impl Target for PiCore<'_> {
    fn halt(&mut self, timeout: Duration) -> Result<(), ProbeError> {
        match self.0.halt(timeout) {
            Ok(_) => Ok(()),
            Err(error) if is_timeout(&error) => Err(ProbeError::NotHalting { waited: timeout }),
            Err(error) => Err(debug(error)),
        }
    }

    fn state(&mut self) -> Result<CoreState, ProbeError> {
        let psr = self
            .0
            .registers()
            .psr()
            .ok_or_else(|| ProbeError::Debug("the core has no PSTATE register".into()))?;
        let pstate: u64 = self.0.read_core_reg(psr).map_err(debug)?;
        Ok(CoreState::from_pstate(pstate))
    }

    fn write(&mut self, address: u64, bytes: &[u8]) -> Result<(), ProbeError> {
        self.0.write_8(address, bytes).map_err(debug)
    }

    fn read(&mut self, address: u64, bytes: &mut [u8]) -> Result<(), ProbeError> {
        self.0.read_8(address, bytes).map_err(debug)
    }

    fn set_register(&mut self, register: Register, value: u64) -> Result<(), ProbeError> {
        let registers = self.0.registers();
        let id = match register {
            Register::X(n) => registers
                .get_argument_register(usize::from(n))
                .map(|r| r.id()),
            Register::Pc => registers.pc().map(|r| r.id()),
        }
        .ok_or_else(|| ProbeError::Debug(format!("the core has no register {register}")))?;
        // probe-rs caches the value and writes it when the core runs or the
        // session closes (never PSTATE: probe-rs cannot write it on AArch64).
        self.0.write_core_reg(id, value).map_err(debug)
    }

    fn resume(&mut self) -> Result<(), ProbeError> {
        self.0.run().map_err(debug)
    }
}

/// probe-rs reports a halt timeout as its own or as the ARM layer's.
fn is_timeout(error: &probe_rs::Error) -> bool {
    matches!(
        error,
        probe_rs::Error::Timeout
            | probe_rs::Error::Probe(DebugProbeError::Timeout)
            | probe_rs::Error::Arm(probe_rs::architecture::arm::ArmError::Timeout)
    )
}

/// The `probe-rs` program on `PATH` (probe-rs's GDB server lives in its CLI,
/// not in the library).
pub fn gdb_server_program() -> Result<PathBuf, ProbeError> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("probe-rs"))
        .find(|path| path.is_file())
        .ok_or(ProbeError::GdbServerMissing)
}

/// Runs probe-rs's GDB server on the probe `selector` names (`VID:PID[:SERIAL]`,
/// from the probe just used) until it ends; the core stays as the loader left it
/// (halted at the stub) for GDB to take over.
pub fn run_gdb_server(
    program: &PathBuf,
    chip: &Chip,
    selector: &str,
    speed_khz: Option<u32>,
) -> Result<(), ProbeError> {
    let mut command = Command::new(program);
    command.args([
        "gdb",
        "--chip",
        &chip.name,
        "--protocol",
        "jtag",
        "--probe",
        selector,
        "--non-interactive",
    ]);
    if let Some(khz) = speed_khz {
        command.args(["--speed", &khz.to_string()]);
    }
    let status = command.status().map_err(|error| {
        ProbeError::GdbServer(format!("cannot run {}: {error}", program.display()))
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(ProbeError::GdbServer(format!("ended with {status}")))
    }
}

/// The selector that names exactly this probe again.
pub fn selector_of(probe: &DebugProbeInfo) -> String {
    DebugProbeSelector::from(probe).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pi_4_is_a_known_chip_with_its_ram() {
        let pi = chip(super::super::DEFAULT_CHIP).unwrap();
        assert_eq!(pi.name, "RaspberryPi4B");
        assert!(pi.ram.iter().any(|r| r.contains(&0x80000)), "{:?}", pi.ram);
    }

    #[test]
    fn an_unknown_chip_is_named_as_such() {
        let error = chip("NoSuchChip9000").unwrap_err();
        assert!(
            matches!(&error, ProbeError::UnknownChip { chip, .. } if chip == "NoSuchChip9000"),
            "{error}"
        );
    }

    #[test]
    fn another_chip_is_the_wrong_chip() {
        // The Pi 5 (a BCM2712, also ARMv8-A) and a Cortex-M part.
        for name in ["RaspberryPi5B", "nRF52840_xxAA"] {
            let error = chip(name).unwrap_err();
            assert!(
                matches!(&error, ProbeError::WrongChip { chip, .. } if chip == name),
                "{name}: {error}"
            );
            assert!(
                error.to_string().contains("--chip RaspberryPi4B"),
                "{error}"
            );
        }
    }

    #[test]
    fn a_bad_selector_is_refused_before_the_bus_is_searched() {
        let error = open(Some("not-a-selector"), None).expect_err("must fail");
        assert!(
            matches!(&error, ProbeError::InvalidSelector { selector, .. } if selector == "not-a-selector"),
            "{error}"
        );
    }

    #[test]
    fn busy_and_forbidden_probes_are_told_apart() {
        let probe = "J-Link -- 1366:0101:000123";
        // J-Link/FTDI: nusb's busy error survives only as text.
        let jlink = DebugProbeError::Usb(io::Error::other(
            "error while taking control over USB device: interface is busy (errno 16)",
        ));
        assert!(matches!(
            open_error(probe, &jlink),
            ProbeError::ProbeBusy { .. }
        ));
        let ebusy = DebugProbeError::ProbeCouldNotBeCreated(ProbeCreationError::Usb(
            io::Error::from_raw_os_error(16),
        ));
        assert!(matches!(
            open_error(probe, &ebusy),
            ProbeError::ProbeBusy { .. }
        ));
        let unclaimable = DebugProbeError::ProbeCouldNotBeCreated(ProbeCreationError::CouldNotOpen);
        let busy = open_error(probe, &unclaimable);
        assert!(matches!(busy, ProbeError::ProbeBusy { .. }));
        assert!(busy.to_string().contains("OpenOCD"), "{busy}");
        let forbidden = DebugProbeError::Usb(io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(matches!(
            open_error(probe, &forbidden),
            ProbeError::PermissionDenied { .. }
        ));
        let other = DebugProbeError::Other("the probe's firmware is too old".into());
        assert!(matches!(open_error(probe, &other), ProbeError::Debug(_)));
    }

    #[test]
    fn halt_timeouts_become_not_halting() {
        assert!(is_timeout(&probe_rs::Error::Arm(
            probe_rs::architecture::arm::ArmError::Timeout
        )));
        assert!(is_timeout(&probe_rs::Error::Timeout));
        assert!(!is_timeout(&probe_rs::Error::Other("x".into())));
    }
}
