//! Measuring the TSC's frequency against a reference clock of known rate
//! (the HPET, the ACPI PM timer, the PIT), and deciding whether a result is
//! believable: within [`MIN_HZ`]..=[`MAX_HZ`], and, when the CPU reports its
//! own TSC or base frequency (CPUID 0x15/0x16), compared with that.
//!
//! The arithmetic and the decisions are here, host-tested; reading the
//! clocks is the board's.

use core::fmt;

/// The slowest TSC believed (no x86_64 CPU runs its TSC slower).
pub const MIN_HZ: u64 = 100_000_000;
/// The fastest TSC believed.
pub const MAX_HZ: u64 = 10_000_000_000;
/// How far a measurement may be from the CPU's own figure before a warning
/// (CPUID 0x16 gives the nominal base frequency, which a TSC may miss by a
/// few percent).
pub const CROSS_CHECK_PERCENT: u64 = 5;

/// A reference clock the TSC was measured against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reference {
    /// The HPET's main counter.
    Hpet,
    /// The ACPI power-management timer (3.579545 MHz).
    PmTimer,
    /// The 8254 PIT's channel 2 (1.193182 MHz).
    Pit,
    /// No measurement: the frequency the CPU reports (CPUID 0x15/0x16).
    Cpuid,
}

impl Reference {
    /// Its name, for logs and `hw`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Hpet => "HPET",
            Self::PmTimer => "ACPI PM timer",
            Self::Pit => "PIT",
            Self::Cpuid => "CPUID",
        }
    }
}

/// One measurement window: TSC cycles across a number of reference ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// TSC cycles between the midpoints of the two edge readings.
    pub cycles: u64,
    /// Reference ticks between the two edges.
    pub ticks: u64,
    /// How many TSC cycles the two edges together could be off (the time
    /// each reference read took).
    pub uncertainty: u64,
}

impl Window {
    /// The TSC frequency this window gives, for a reference of `ref_hz`.
    pub fn hz(&self, ref_hz: u64) -> Option<u64> {
        (self.ticks != 0)
            .then(|| (u128::from(self.cycles) * u128::from(ref_hz) / u128::from(self.ticks)) as u64)
    }

    /// The rate of the counter whose ticks the window counted, measured
    /// against a TSC of `tsc_hz` (the other way round from [`Window::hz`]:
    /// the local APIC timer is measured against the calibrated TSC).
    pub fn rate_against(&self, tsc_hz: u64) -> Option<u64> {
        (self.cycles != 0)
            .then(|| (u128::from(self.ticks) * u128::from(tsc_hz) / u128::from(self.cycles)) as u64)
    }

    /// Whether the edges are sharp enough to stop measuring (one part in a
    /// thousand).
    pub fn sharp(&self) -> bool {
        self.uncertainty.saturating_mul(1000) < self.cycles
    }
}

/// The sharpest of `windows`.
pub fn best(windows: &[Window]) -> Option<Window> {
    windows.iter().copied().min_by_key(|w| w.uncertainty)
}

/// Why a reference clock's result was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// The reference never advanced (absent, or gated off).
    Stuck(Reference),
    /// The result is outside [`MIN_HZ`]..=[`MAX_HZ`].
    Implausible(Reference, u64),
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stuck(r) => write!(f, "{} did not count", r.name()),
            Self::Implausible(r, hz) => write!(
                f,
                "{} gave an implausible TSC frequency of {hz} Hz",
                r.name()
            ),
        }
    }
}

/// Checks a measured frequency.
pub fn check(reference: Reference, hz: Option<u64>) -> Result<u64, Rejected> {
    match hz {
        None => Err(Rejected::Stuck(reference)),
        Some(hz) if (MIN_HZ..=MAX_HZ).contains(&hz) => Ok(hz),
        Some(hz) => Err(Rejected::Implausible(reference, hz)),
    }
}

/// The TSC frequency from CPUID: leaf 0x15 (TSC/crystal ratio EBX/EAX and
/// crystal ECX), else leaf 0x16 (base frequency in MHz, EAX). Takes the
/// raw leaves (`None` when the CPU's highest leaf is below them).
pub fn cpuid_hz(leaf_15: Option<[u32; 3]>, leaf_16_mhz: Option<u32>) -> Option<u64> {
    if let Some([eax, ebx, ecx]) = leaf_15 {
        if eax != 0 && ebx != 0 && ecx != 0 {
            return Some(u64::from(ecx) * u64::from(ebx) / u64::from(eax));
        }
    }
    leaf_16_mhz
        .map(|mhz| mhz & 0xffff)
        .filter(|&mhz| mhz != 0)
        .map(|mhz| u64::from(mhz) * 1_000_000)
}

/// Whether a measurement agrees with the CPU's figure within
/// [`CROSS_CHECK_PERCENT`].
pub fn agrees(measured: u64, reported: u64) -> bool {
    measured.abs_diff(reported).saturating_mul(100) <= reported.saturating_mul(CROSS_CHECK_PERCENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_gives_the_frequency() {
        // 50 ms of the HPET at 100 MHz, 2.6 GHz TSC.
        let w = Window {
            cycles: 130_000_000,
            ticks: 5_000_000,
            uncertainty: 2000,
        };
        assert_eq!(w.hz(100_000_000), Some(2_600_000_000));
        assert!(w.sharp());
        // PM timer: 3.579545 MHz, 179 000 ticks = 50.0 ms.
        let pm = Window {
            cycles: 130_009_000,
            ticks: 179_000,
            uncertainty: 200_000,
        };
        assert_eq!(pm.hz(3_579_545), Some(2_599_849_530));
        assert!(!pm.sharp());
        assert_eq!(
            Window {
                cycles: 5,
                ticks: 0,
                uncertainty: 0
            }
            .hz(1),
            None
        );
        assert_eq!(best(&[w, pm]), Some(w));
        assert_eq!(best(&[]), None);
    }

    #[test]
    fn implausible_and_stuck_references_are_refused() {
        // Port 0x61 reading 0xFF: the "countdown" ends at once.
        assert_eq!(
            check(Reference::Pit, Some(20_000)),
            Err(Rejected::Implausible(Reference::Pit, 20_000))
        );
        assert_eq!(
            check(Reference::Hpet, None),
            Err(Rejected::Stuck(Reference::Hpet))
        );
        assert_eq!(
            check(Reference::PmTimer, Some(30_000_000_000)),
            Err(Rejected::Implausible(Reference::PmTimer, 30_000_000_000))
        );
        assert_eq!(
            check(Reference::PmTimer, Some(3_000_000_000)),
            Ok(3_000_000_000)
        );
        assert_eq!(
            Rejected::Stuck(Reference::Hpet).to_string(),
            "HPET did not count"
        );
    }

    #[test]
    fn cpuid_leaves_and_the_cross_check() {
        // Leaf 0x15 of a Skylake: 24 MHz crystal, ratio 216/2.
        assert_eq!(
            cpuid_hz(Some([2, 216, 24_000_000]), Some(2600)),
            Some(2_592_000_000)
        );
        // Crystal not reported: leaf 0x16 instead.
        assert_eq!(cpuid_hz(Some([2, 216, 0]), Some(2600)), Some(2_600_000_000));
        assert_eq!(cpuid_hz(None, Some(0)), None);
        assert_eq!(cpuid_hz(None, None), None);
        assert!(agrees(2_600_000_000, 2_592_000_000));
        assert!(agrees(2_700_000_000, 2_600_000_000));
        assert!(!agrees(3_000_000_000, 2_600_000_000));
    }
}
