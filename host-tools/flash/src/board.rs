//! The boards Tern runs on and what `flash` needs to know about each.

use std::fmt;
use std::str::FromStr;

use object::elf;

use crate::FlashError;

/// A board Tern boots on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Board {
    /// Raspberry Pi 4 (BCM2711, aarch64), also QEMU `raspi4b`.
    Rpi4,
    /// QEMU's aarch64 `virt` machine.
    Virt,
    /// An x86_64 PC, also QEMU `q35`.
    Pc,
}

/// The nightly toolchain that builds the PC kernel (`boards/pc/kernel-toolchain`,
/// which `ci/setup.sh` reads too).
const PC_KERNEL_TOOLCHAIN: &str = include_str!("../../../boards/pc/kernel-toolchain");

/// How cargo builds a board's kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelBuild {
    /// The workspace's own toolchain and a target Rust ships.
    Stable {
        /// The target triple.
        target: &'static str,
    },
    /// A pinned nightly with a custom target specification, building `core`
    /// and `alloc` for it (`-Zbuild-std`).
    PinnedNightly {
        /// The rustup toolchain name.
        toolchain: &'static str,
        /// The target specification, relative to the workspace root.
        target_spec: &'static str,
    },
}

/// Which kernel of a board: Tern itself, or the rpi4 serial chainloader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// The Tern kernel.
    Tern,
    /// The small kernel that receives Tern over the serial line (rpi4 only).
    Chainloader,
}

/// A Tern raw image is well under a megabyte; one beyond this bound means
/// the linker put a loadable section far from the others, and the raw image
/// (which spans the gap) would not fit the boot partition or the chainloader.
const RAW_IMAGE_LIMIT: u64 = 32 << 20;

impl Board {
    /// Every board, in the order `--help` lists them.
    pub const ALL: [Board; 3] = [Board::Rpi4, Board::Virt, Board::Pc];

    /// The board's name on the command line, in the banner and in `.tern_board`.
    pub fn name(self) -> &'static str {
        match self {
            Board::Rpi4 => "rpi4",
            Board::Virt => "virt",
            Board::Pc => "pc",
        }
    }

    /// The instruction set, as the banner names it.
    pub fn isa(self) -> &'static str {
        match self {
            Board::Rpi4 | Board::Virt => "aarch64",
            Board::Pc => "x86_64",
        }
    }

    /// The Cargo package holding the board's kernels.
    pub fn package(self) -> &'static str {
        match self {
            Board::Rpi4 => "tern-board-rpi4",
            Board::Virt => "tern-board-virt",
            Board::Pc => "tern-board-pc",
        }
    }

    /// The Rust target the kernels are built for (its name, which is also
    /// the name of its directory under cargo's target directory).
    pub fn target(self) -> &'static str {
        match self {
            Board::Rpi4 | Board::Virt => "aarch64-unknown-none",
            Board::Pc => "x86_64-tern-pc",
        }
    }

    /// How cargo builds the kernels: with the workspace's stable toolchain
    /// for a built-in target, or with a pinned nightly for the PC, whose
    /// target (`boards/pc/x86_64-tern-pc.json`) enables SSE2, which stable
    /// Rust's soft-float `x86_64-unknown-none` cannot (docs/architecture.md,
    /// "Floating point on the PC").
    pub fn kernel_build(self) -> KernelBuild {
        match self {
            Board::Rpi4 | Board::Virt => KernelBuild::Stable {
                target: self.target(),
            },
            Board::Pc => KernelBuild::PinnedNightly {
                toolchain: PC_KERNEL_TOOLCHAIN.trim_ascii(),
                target_spec: "boards/pc/x86_64-tern-pc.json",
            },
        }
    }

    /// The ELF machine (`e_machine`) of the board's kernels.
    pub fn machine(self) -> u16 {
        match self {
            Board::Rpi4 | Board::Virt => elf::EM_AARCH64,
            Board::Pc => elf::EM_X86_64,
        }
    }

    /// The binary target of `variant`; only rpi4 has a chainloader.
    pub fn bin(self, variant: Variant) -> Result<&'static str, FlashError> {
        match (self, variant) {
            (Board::Rpi4, Variant::Tern) => Ok("tern-rpi4"),
            (Board::Rpi4, Variant::Chainloader) => Ok("tern-rpi4-chainloader"),
            (Board::Virt, Variant::Tern) => Ok("tern-virt"),
            (Board::Pc, Variant::Tern) => Ok("tern-pc"),
            (_, Variant::Chainloader) => Err(FlashError::Unsupported {
                board: self,
                what: "serial chainloader",
            }),
        }
    }

    /// The name the kernel of `variant` carries in its `.tern_board` section.
    pub fn section_name(self, variant: Variant) -> String {
        match variant {
            Variant::Tern => self.name().to_owned(),
            Variant::Chainloader => format!("{}-chainloader", self.name()),
        }
    }

    /// Whether the board boots a raw image (rpi4's `kernel8.img`) rather than the ELF.
    pub fn boots_raw_image(self) -> bool {
        self == Board::Rpi4
    }

    /// The largest raw image `flash` produces for the board.
    pub fn raw_image_limit(self) -> u64 {
        RAW_IMAGE_LIMIT
    }
}

impl fmt::Display for Board {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Board {
    type Err = FlashError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Board::ALL
            .into_iter()
            .find(|board| board.name() == s)
            .ok_or_else(|| FlashError::UnknownBoard(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_boards_are_errors() {
        for board in Board::ALL {
            assert_eq!(board.name().parse::<Board>().unwrap(), board);
        }
        assert!(matches!(
            "rpi3".parse::<Board>(),
            Err(FlashError::UnknownBoard(name)) if name == "rpi3"
        ));
    }

    #[test]
    fn only_rpi4_has_a_chainloader() {
        assert_eq!(
            Board::Rpi4.bin(Variant::Chainloader).unwrap(),
            "tern-rpi4-chainloader"
        );
        assert_eq!(
            Board::Rpi4.section_name(Variant::Chainloader),
            "rpi4-chainloader"
        );
        assert!(Board::Pc.bin(Variant::Chainloader).is_err());
    }
}
