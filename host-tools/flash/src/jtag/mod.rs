//! The JTAG path for the Raspberry Pi 4 (`flash --board rpi4 --probe`): load
//! a kernel into RAM through a debug probe, without touching the SD card.
//!
//! The Pi 4 has no flash a probe could program, so this is RAM loading, as
//! the firmware does it: the kernel ELF's loadable segments go to their
//! physical addresses ([`plan`]), core 0 is halted where the resident
//! program on the card left it (Tern's chainloader waits at EL2 with the MMU
//! off), and resumes at the entry point with the registers the firmware
//! would set ([`load`]). [`probe`] drives a real probe with probe-rs (cargo
//! feature `probe`, on by default). Wiring, config and known limits:
//! `docs/hardware-bringup.md`.

pub mod load;
pub mod plan;
#[cfg(feature = "probe")]
pub mod probe;

use std::ops::Range;
use std::time::Duration;

use thiserror::Error;

pub use load::{load, AfterLoad, CoreState, Target};
pub use plan::{LoadPlan, Register};

/// The probe-rs target of the Raspberry Pi 4 B (family BCM2711).
pub const DEFAULT_CHIP: &str = "RaspberryPi4B";

/// Why the probe path could not load or debug a kernel.
#[derive(Debug, Error)]
pub enum ProbeError {
    /// `flash` was built without probe-rs.
    #[error("this flash was built without probe support: rebuild it with the default features (cargo feature `probe`)")]
    NotBuiltIn,
    /// No debug probe is attached.
    #[error("no debug probe found: connect a JTAG probe (J-Link, an FT2232H/FT232H adapter, a CMSIS-DAP probe with JTAG) by USB; `lsusb` should list it")]
    NoProbe,
    /// Several probes are attached and none was chosen.
    #[error("{} debug probes found, pass one with --probe VID:PID[:SERIAL]:\n  {}", .probes.len(), .probes.join("\n  "))]
    SeveralProbes {
        /// What each probe calls itself.
        probes: Vec<String>,
    },
    /// The selector matches no attached probe.
    #[error("no attached debug probe matches {selector}; attached: {}", if .attached.is_empty() { "none".to_owned() } else { .attached.join(", ") })]
    NoMatchingProbe {
        /// The selector as given.
        selector: String,
        /// The probes that are attached.
        attached: Vec<String>,
    },
    /// The selector is not `VID:PID[:SERIAL]`.
    #[error("invalid probe selector {selector:?}: expected VID:PID or VID:PID:SERIAL in hex, as `lsusb` shows them ({reason})")]
    InvalidSelector {
        /// The selector as given.
        selector: String,
        /// What the parser said.
        reason: String,
    },
    /// The user may not open the probe's USB device.
    #[error("no permission to open the debug probe {probe}: install probe-rs's udev rules (see docs/hardware-bringup.md) or run as root")]
    PermissionDenied {
        /// The probe.
        probe: String,
    },
    /// Another program holds the probe.
    #[error("the debug probe {probe} is busy: another program (probe-rs, OpenOCD, a GDB server) has it open; close that program and try again")]
    ProbeBusy {
        /// The probe.
        probe: String,
    },
    /// probe-rs knows no chip by that name.
    #[error("unknown chip {chip:?}{}", if .similar.is_empty() { String::new() } else { format!(" (similar: {})", .similar.join(", ")) })]
    UnknownChip {
        /// The chip as given.
        chip: String,
        /// Known chips with similar names.
        similar: Vec<String>,
    },
    /// The chip is not a Raspberry Pi 4 (BCM2711).
    #[error("chip {chip} is not a Raspberry Pi 4: {reason}; --board rpi4 loads kernels for the BCM2711 (--chip {DEFAULT_CHIP})")]
    WrongChip {
        /// The chip as given.
        chip: String,
        /// What it is instead.
        reason: String,
    },
    /// The probe could not reach the chip's debug port.
    #[error("cannot attach to {chip} through {probe}: {reason}; check the wiring (docs/hardware-bringup.md), enable_jtag_gpio=1 in config.txt (flash --jtag) and that the Pi is powered and booted")]
    Attach {
        /// The chip.
        chip: String,
        /// The probe.
        probe: String,
        /// What probe-rs said.
        reason: String,
    },
    /// Core 0 did not enter debug state.
    #[error("core 0 did not halt within {waited:?}: is the Pi powered, JTAG enabled (enable_jtag_gpio=1) and the core not in a low-power state?")]
    NotHalting {
        /// How long the loader waited.
        waited: Duration,
    },
    /// Core 0 is not where the firmware hands over (AArch64 EL2).
    #[error("core 0 halted at EL{exception_level}{}, but a kernel is entered at EL2 in AArch64 with the MMU off: boot the Pi from a card with the Tern chainloader (flash --board rpi4 --chainloader --sd-image loader.img --jtag), which waits at EL2", if *.aarch64 { "" } else { " in AArch32" })]
    NotAtEl2 {
        /// The level it halted at.
        exception_level: u8,
        /// Whether it was in AArch64.
        aarch64: bool,
    },
    /// A byte read back differs from the byte written.
    #[error("verify failed at {address:#x}: wrote {wrote:#04x}, read back {read:#04x}; the kernel was not started (a noisy JTAG line? try a lower --speed)")]
    VerifyFailed {
        /// The address.
        address: u64,
        /// The byte written.
        wrote: u8,
        /// The byte read back.
        read: u8,
    },
    /// A segment or the stub would leave the chip's RAM.
    #[error("the kernel's {what} at {:#x}..{:#x} is outside the chip's RAM", .range.start, .range.end)]
    OutsideRam {
        /// What lies there.
        what: &'static str,
        /// Its memory.
        range: Range<u64>,
    },
    /// Two loadable segments overlap.
    #[error("loadable segments {:#x}..{:#x} and {:#x}..{:#x} overlap", .first.start, .first.end, .second.start, .second.end)]
    OverlappingSegments {
        /// The lower one.
        first: Range<u64>,
        /// The one it runs into.
        second: Range<u64>,
    },
    /// The entry point is not in an executable segment.
    #[error("the ELF's entry point {entry:#x} is not in a loadable code segment")]
    EntryOutsideCode {
        /// The ELF's `e_entry`.
        entry: u64,
    },
    /// Neither below nor above the kernel is RAM free for the stub.
    #[error("no free RAM next to the kernel ({:#x}..{:#x}) for the 32-byte hand-over stub", .kernel.start, .kernel.end)]
    NoRoomForStub {
        /// The kernel's memory.
        kernel: Range<u64>,
    },
    /// `--gdb` needs the probe-rs command-line tool.
    #[error("--gdb runs probe-rs's GDB server, and the `probe-rs` program is not installed: `cargo install probe-rs-tools --locked`")]
    GdbServerMissing,
    /// The GDB server could not be started or failed.
    #[error("probe-rs gdb: {0}")]
    GdbServer(String),
    /// Any other failure of the probe or the core.
    #[error("debug probe: {0}")]
    Debug(String),
}

/// A probe found on the bus, as [`choose`] sees it.
#[derive(Clone, Debug)]
pub struct FoundProbe<T> {
    /// What is opened if it is chosen.
    pub probe: T,
    /// How it is shown to the user.
    pub name: String,
    /// Whether this user may open it.
    pub accessible: bool,
}

/// A `--probe` selector as [`choose`] uses it.
pub struct Selector<'a, T> {
    /// As the user wrote it.
    pub text: &'a str,
    /// Whether a probe is the one it names.
    pub matches: &'a dyn Fn(&T) -> bool,
}

/// Picks the probe to use: the only one attached, or the one `selector`
/// names. The errors say what was found.
pub fn choose<T>(
    found: Vec<FoundProbe<T>>,
    selector: Option<Selector<'_, T>>,
) -> Result<T, ProbeError> {
    let names = |probes: &[FoundProbe<T>]| probes.iter().map(|p| p.name.clone()).collect();
    if found.is_empty() {
        return Err(ProbeError::NoProbe);
    }
    let candidates: Vec<FoundProbe<T>> = match selector {
        None => found,
        Some(selector) => {
            let attached = names(&found);
            let matching: Vec<_> = found
                .into_iter()
                .filter(|p| (selector.matches)(&p.probe))
                .collect();
            if matching.is_empty() {
                return Err(ProbeError::NoMatchingProbe {
                    selector: selector.text.to_owned(),
                    attached,
                });
            }
            matching
        }
    };
    if candidates.len() > 1 {
        return Err(ProbeError::SeveralProbes {
            probes: names(&candidates),
        });
    }
    let chosen = candidates.into_iter().next().ok_or(ProbeError::NoProbe)?;
    if !chosen.accessible {
        return Err(ProbeError::PermissionDenied { probe: chosen.name });
    }
    Ok(chosen.probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(probes: &[(u16, bool)]) -> Vec<FoundProbe<u16>> {
        probes
            .iter()
            .map(|&(id, accessible)| FoundProbe {
                probe: id,
                name: format!("probe {id:04x}"),
                accessible,
            })
            .collect()
    }

    #[test]
    fn the_only_probe_is_taken() {
        assert_eq!(choose(found(&[(1, true)]), None).unwrap(), 1);
    }

    #[test]
    fn no_probe_is_a_clear_error() {
        let error = choose(found(&[]), None).unwrap_err();
        assert!(matches!(error, ProbeError::NoProbe));
        assert!(error.to_string().starts_with("no debug probe found"));
        let two = |probe: &u16| *probe == 2;
        let selector = Selector {
            text: "0002:0002",
            matches: &two,
        };
        assert!(matches!(
            choose(found(&[]), Some(selector)),
            Err(ProbeError::NoProbe)
        ));
    }

    #[test]
    fn several_probes_need_a_selector() {
        let error = choose(found(&[(1, true), (2, true)]), None).unwrap_err();
        assert!(
            matches!(&error, ProbeError::SeveralProbes { probes } if probes.len() == 2),
            "{error}"
        );
        let text = error.to_string();
        assert!(text.contains("--probe VID:PID"), "{text}");
        assert!(
            text.contains("probe 0001") && text.contains("probe 0002"),
            "{text}"
        );
        let two = |probe: &u16| *probe == 2;
        let selector = Selector {
            text: "0002:0002",
            matches: &two,
        };
        assert_eq!(
            choose(found(&[(1, true), (2, true)]), Some(selector)).unwrap(),
            2
        );
    }

    #[test]
    fn a_selector_matching_nothing_lists_what_is_attached() {
        let nine = |probe: &u16| *probe == 9;
        let selector = Selector {
            text: "0009:0009",
            matches: &nine,
        };
        let error = choose(found(&[(1, true)]), Some(selector)).unwrap_err();
        assert!(
            matches!(&error, ProbeError::NoMatchingProbe { selector, attached } if selector == "0009:0009" && attached == &["probe 0001"]),
            "{error}"
        );
    }

    #[test]
    fn an_inaccessible_probe_asks_for_udev_rules() {
        let error = choose(found(&[(1, false)]), None).unwrap_err();
        assert!(matches!(error, ProbeError::PermissionDenied { .. }));
        assert!(error.to_string().contains("udev rules"), "{error}");
    }
}
