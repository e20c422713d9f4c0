//! What a JTAG load writes where: the kernel ELF's loadable segments at their
//! physical addresses, a hand-over stub, and the registers the core starts
//! with — all decided from the ELF and the chip's RAM before a probe is touched.

use std::fmt;
use std::ops::Range;

use object::elf::{FileHeader64, PF_X, PT_LOAD};
use object::read::elf::{FileHeader, ProgramHeader};
use object::Endianness;

use super::ProbeError;
use crate::image::KernelElf;
use crate::FlashError;

/// One run of bytes to write: a loadable segment's file bytes, or the stub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Physical address of the first byte (the MMU is off at hand-over).
    pub address: u64,
    /// The bytes written there.
    pub bytes: Vec<u8>,
    /// Bytes the segment occupies in memory (its `.bss` included); the
    /// kernel zeroes the part past `bytes` itself, as after the firmware.
    pub memory_size: u64,
    /// Whether the segment holds code.
    pub executable: bool,
}

impl Segment {
    /// The memory the segment occupies.
    pub fn range(&self) -> Range<u64> {
        self.address..self.address + self.memory_size
    }
}

/// A core register the loader sets before the core runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Register {
    /// General-purpose register `Xn`.
    X(u8),
    /// The program counter.
    Pc,
}

impl fmt::Display for Register {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Register::X(n) => write!(f, "x{n}"),
            Register::Pc => f.write_str("pc"),
        }
    }
}

/// Size of the hand-over stub: five instructions, one pad, the 8-byte entry.
const STUB_LEN: u64 = 32;

/// The hand-over stub, run first at EL2 with the MMU off: invalidate the
/// instruction cache (earlier code may have run from the same addresses,
/// and the probe's writes went around it), then branch to `entry` with x0–x3
/// untouched. The firmware and Tern's chainloader hand over with clean
/// caches the same way. The literal is 8-byte aligned: with the MMU off,
/// data accesses are Device accesses and must be aligned. Checked with
/// `aarch64-linux-gnu-as`/`objdump`.
fn stub(entry: u64) -> Vec<u8> {
    let instructions: [u32; 6] = [
        0xd508_751f, // ic iallu
        0xd503_3f9f, // dsb sy
        0xd503_3fdf, // isb
        0x5800_0070, // ldr x16, entry (pc + 12)
        0xd61f_0200, // br x16
        0xd503_201f, // nop (aligns the literal)
    ];
    let mut bytes: Vec<u8> = instructions.iter().flat_map(|i| i.to_le_bytes()).collect();
    bytes.extend_from_slice(&entry.to_le_bytes());
    bytes
}

/// Everything a JTAG load does, in order: write `segments` then `stub`,
/// set `registers`, resume at the stub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadPlan {
    /// The kernel's loadable segments, by address.
    pub segments: Vec<Segment>,
    /// The kernel's entry point (physical).
    pub entry: u64,
    /// The hand-over stub the core starts in.
    pub stub: Segment,
    /// x0 as the firmware passes it: the device tree's address, or 0.
    pub device_tree: u64,
}

impl LoadPlan {
    /// The plan for `elf` on a chip whose RAM is `ram`; `device_tree` goes
    /// to x0 (Tern's rpi4 kernel reads its facts from the mailbox, 0 is fine).
    ///
    /// Fails when the ELF has nothing to load, a segment (with its `.bss`)
    /// leaves RAM, two segments overlap, the entry point is not in code, or
    /// there is no room for the stub next to the kernel.
    pub fn new(elf: &KernelElf, ram: &[Range<u64>], device_tree: u64) -> Result<Self, FlashError> {
        let not_elf = |reason: String| FlashError::NotElf {
            path: elf.path().to_owned(),
            reason,
        };
        let data = elf.bytes();
        let header = FileHeader64::<Endianness>::parse(data).map_err(|e| not_elf(e.to_string()))?;
        let endian = header.endian().map_err(|e| not_elf(e.to_string()))?;
        let mut segments = Vec::new();
        // Virtual to physical, for the entry point.
        let mut translations = Vec::new();
        for header in header
            .program_headers(endian, data)
            .map_err(|e| not_elf(e.to_string()))?
        {
            if header.p_type(endian) != PT_LOAD || header.p_memsz(endian) == 0 {
                continue;
            }
            let bytes = header
                .data(endian, data)
                .map_err(|()| not_elf("a loadable segment lies outside the file".into()))?;
            let segment = Segment {
                address: header.p_paddr(endian),
                bytes: bytes.to_vec(),
                memory_size: header.p_memsz(endian).max(bytes.len() as u64),
                executable: header.p_flags(endian) & PF_X != 0,
            };
            let virtual_start = header.p_vaddr(endian);
            translations.push((
                virtual_start..virtual_start + segment.memory_size,
                segment.address,
                segment.executable,
            ));
            segments.push(segment);
        }
        if segments.iter().all(|segment| segment.bytes.is_empty()) {
            return Err(FlashError::NoLoadableSegments {
                path: elf.path().to_owned(),
            });
        }
        segments.sort_by_key(|segment| segment.address);
        for segment in &segments {
            if !in_ram(ram, &segment.range()) {
                return Err(ProbeError::OutsideRam {
                    what: "segment",
                    range: segment.range(),
                }
                .into());
            }
        }
        for pair in segments.windows(2) {
            if pair[0].range().end > pair[1].address {
                return Err(ProbeError::OverlappingSegments {
                    first: pair[0].range(),
                    second: pair[1].range(),
                }
                .into());
            }
        }
        // `e_entry` is a virtual address; kernels linked where they run (Tern's)
        // have virtual = physical, and some tools write the physical one.
        let elf_entry = header.e_entry(endian);
        let entry = translations
            .iter()
            .find(|(range, _, executable)| *executable && range.contains(&elf_entry))
            .map(|(range, physical, _)| physical + (elf_entry - range.start))
            .or_else(|| {
                segments
                    .iter()
                    .find(|segment| segment.executable && segment.range().contains(&elf_entry))
                    .map(|_| elf_entry)
            })
            .ok_or(ProbeError::EntryOutsideCode { entry: elf_entry })?;
        let stub = Segment {
            address: stub_address(&segments, ram)?,
            bytes: stub(entry),
            memory_size: STUB_LEN,
            executable: true,
        };
        Ok(Self {
            segments,
            entry,
            stub,
            device_tree,
        })
    }

    /// The registers as the firmware leaves them for a 64-bit kernel (x0 =
    /// the device tree, x1–x3 = 0), and the program counter at the stub.
    pub fn registers(&self) -> [(Register, u64); 5] {
        [
            (Register::X(0), self.device_tree),
            (Register::X(1), 0),
            (Register::X(2), 0),
            (Register::X(3), 0),
            (Register::Pc, self.stub.address),
        ]
    }

    /// Bytes written to the target in all.
    pub fn bytes(&self) -> u64 {
        self.writes()
            .map(|segment| segment.bytes.len() as u64)
            .sum()
    }

    /// What is written, in order: the segments with bytes, then the stub.
    pub fn writes(&self) -> impl Iterator<Item = &Segment> {
        self.segments
            .iter()
            .filter(|segment| !segment.bytes.is_empty())
            .chain(std::iter::once(&self.stub))
    }
}

fn in_ram(ram: &[Range<u64>], range: &Range<u64>) -> bool {
    ram.iter()
        .any(|region| region.start <= range.start && range.end <= region.end)
}

/// Just below the kernel (the 32 bytes under the Pi's 0x80000 are unused),
/// else just after its last byte (`.bss` included): in RAM, touching no segment.
fn stub_address(segments: &[Segment], ram: &[Range<u64>]) -> Result<u64, ProbeError> {
    let low = segments[0].address;
    let high = segments.iter().map(|s| s.range().end).max().unwrap_or(low);
    let below = (low & !0xf).checked_sub(STUB_LEN);
    let above = high.checked_add(0xf).map(|end| end & !0xf);
    [below, above]
        .into_iter()
        .flatten()
        .find(|&at| {
            let range = at..at + STUB_LEN;
            in_ram(ram, &range)
                && segments
                    .iter()
                    .all(|s| s.range().end <= range.start || range.end <= s.address)
        })
        .ok_or(ProbeError::NoRoomForStub { kernel: low..high })
}

impl fmt::Display for LoadPlan {
    /// One line per write, then the entry and the registers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for segment in &self.segments {
            writeln!(
                f,
                "  {:#010x}..{:#010x}  {} bytes{}{}",
                segment.address,
                segment.range().end,
                segment.bytes.len(),
                if segment.executable { ", code" } else { "" },
                match segment.memory_size - segment.bytes.len() as u64 {
                    0 => String::new(),
                    bss => format!(" (+{bss} zeroed by the kernel)"),
                },
            )?;
        }
        writeln!(
            f,
            "  {:#010x}..{:#010x}  hand-over stub (I-cache invalidate, branch to {:#x})",
            self.stub.address,
            self.stub.range().end,
            self.entry
        )?;
        let registers: Vec<String> = self
            .registers()
            .iter()
            .map(|(register, value)| format!("{register}={value:#x}"))
            .collect();
        write!(f, "  registers: {} (EL2, MMU off)", registers.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use object::elf;

    use super::*;
    use crate::image::tests::{synthetic_elf, Segment as ElfSegment};

    /// The Pi 4's RAM as probe-rs's RaspberryPi4B target describes it.
    const PI4_RAM: Range<u64> = 0..0x3b40_0000;

    fn kernel(segments: &[ElfSegment]) -> KernelElf {
        KernelElf::from_bytes(
            Path::new("kernel.elf"),
            synthetic_elf(elf::EM_AARCH64, Some("rpi4"), segments),
        )
    }

    fn code_and_data() -> KernelElf {
        kernel(&[
            ElfSegment {
                paddr: 0x80000,
                bytes: b"code",
                bss: 0,
            },
            ElfSegment {
                paddr: 0x80010,
                bytes: b"data",
                bss: 0x1000,
            },
        ])
    }

    #[test]
    fn segments_entry_stub_and_registers_follow_the_elf() {
        let plan = LoadPlan::new(&code_and_data(), &[PI4_RAM], 0).unwrap();
        assert_eq!(plan.segments.len(), 2);
        assert_eq!(plan.segments[0].address, 0x80000);
        assert_eq!(plan.segments[0].bytes, b"code");
        assert_eq!(plan.segments[1].address, 0x80010);
        assert_eq!(plan.segments[1].range(), 0x80010..0x81014);
        assert_eq!(plan.entry, 0x80000);
        assert_eq!(plan.stub.address, 0x80000 - 32);
        assert_eq!(
            plan.registers(),
            [
                (Register::X(0), 0),
                (Register::X(1), 0),
                (Register::X(2), 0),
                (Register::X(3), 0),
                (Register::Pc, 0x7ffe0),
            ]
        );
        assert_eq!(plan.bytes(), 4 + 4 + 32);
        let writes: Vec<u64> = plan.writes().map(|s| s.address).collect();
        assert_eq!(writes, [0x80000, 0x80010, 0x7ffe0]);
    }

    /// `code_and_data` with `e_entry` (bytes 24..32 of an ELF64 header) replaced.
    fn with_entry(entry: u64) -> KernelElf {
        let mut bytes = code_and_data().bytes().to_vec();
        bytes[24..32].copy_from_slice(&entry.to_le_bytes());
        KernelElf::from_bytes(Path::new("kernel.elf"), bytes)
    }

    #[test]
    fn a_virtual_entry_point_is_translated_and_one_outside_code_refused() {
        // The synthetic segments are linked at 0xffff_0000_0000_0000 + paddr.
        let plan = LoadPlan::new(&with_entry(0xffff_0000_0008_0012), &[PI4_RAM], 0).unwrap();
        assert_eq!(plan.entry, 0x80012);
        assert_eq!(&plan.stub.bytes[24..], &0x80012u64.to_le_bytes());
        let error = LoadPlan::new(&with_entry(0x9000_0000), &[PI4_RAM], 0).unwrap_err();
        assert!(
            matches!(
                error,
                FlashError::Probe(ProbeError::EntryOutsideCode { entry: 0x9000_0000 })
            ),
            "{error}"
        );
    }

    #[test]
    fn the_stub_invalidates_the_icache_and_branches_to_the_entry() {
        let bytes = stub(0x0008_0000);
        let words: Vec<u32> = bytes[..24]
            .chunks(4)
            .map(|w| u32::from_le_bytes(w.try_into().unwrap()))
            .collect();
        assert_eq!(words[0], 0xd508_751f, "ic iallu");
        assert_eq!(words[4], 0xd61f_0200, "br x16");
        // `ldr x16` at offset 12 reads imm19 * 4 bytes ahead: the literal at 24.
        assert_eq!(12 + ((words[3] >> 5) & 0x7ffff) * 4, 24);
        assert_eq!(words[3] & 0x1f, 16);
        assert_eq!(&bytes[24..], &0x80000u64.to_le_bytes());
        assert_eq!(bytes.len() as u64, STUB_LEN);
    }

    #[test]
    fn the_device_tree_address_goes_to_x0() {
        let plan = LoadPlan::new(&code_and_data(), &[PI4_RAM], 0x2eff_2000).unwrap();
        assert_eq!(plan.registers()[0], (Register::X(0), 0x2eff_2000));
    }

    #[test]
    fn a_kernel_at_the_bottom_of_ram_gets_the_stub_after_its_bss() {
        let elf = kernel(&[ElfSegment {
            paddr: 0,
            bytes: b"code",
            bss: 0x100,
        }]);
        let plan = LoadPlan::new(&elf, &[PI4_RAM], 0).unwrap();
        assert_eq!(plan.stub.address, 0x110);
    }

    #[test]
    fn segments_outside_ram_are_refused_before_any_probe() {
        let elf = kernel(&[ElfSegment {
            paddr: 0x3b3f_fff0,
            bytes: b"code",
            bss: 0x100,
        }]);
        let error = LoadPlan::new(&elf, &[PI4_RAM], 0).unwrap_err();
        assert!(
            matches!(
                error,
                FlashError::Probe(ProbeError::OutsideRam {
                    what: "segment",
                    ..
                })
            ),
            "{error}"
        );
        assert!(error.to_string().contains("0x3b3ffff0"), "{error}");
    }

    #[test]
    fn overlapping_segments_are_refused() {
        let elf = kernel(&[
            ElfSegment {
                paddr: 0x80000,
                bytes: b"code",
                bss: 0x100,
            },
            ElfSegment {
                paddr: 0x80080,
                bytes: b"data",
                bss: 0,
            },
        ]);
        assert!(matches!(
            LoadPlan::new(&elf, &[PI4_RAM], 0),
            Err(FlashError::Probe(ProbeError::OverlappingSegments { .. }))
        ));
    }

    #[test]
    fn no_room_for_the_stub_is_an_error() {
        // RAM exactly as large as the kernel: neither below nor above fits.
        let elf = kernel(&[ElfSegment {
            paddr: 0x1000,
            bytes: &[0; 16],
            bss: 0,
        }]);
        assert!(matches!(
            LoadPlan::new(&elf, std::slice::from_ref(&(0x1000..0x1010)), 0),
            Err(FlashError::Probe(ProbeError::NoRoomForStub { .. }))
        ));
    }

    #[test]
    fn empty_and_non_elf_files_are_errors() {
        assert!(matches!(
            LoadPlan::new(&kernel(&[]), &[PI4_RAM], 0),
            Err(FlashError::NoLoadableSegments { .. })
        ));
        let text = KernelElf::from_bytes(Path::new("notes.txt"), b"plain text".to_vec());
        assert!(matches!(
            LoadPlan::new(&text, &[PI4_RAM], 0),
            Err(FlashError::NotElf { .. })
        ));
    }

    #[test]
    fn the_plan_prints_one_line_per_write() {
        let text = LoadPlan::new(&code_and_data(), &[PI4_RAM], 0)
            .unwrap()
            .to_string();
        assert!(
            text.contains("0x00080000..0x00080004  4 bytes, code"),
            "{text}"
        );
        assert!(text.contains("(+4096 zeroed by the kernel)"), "{text}");
        assert!(text.contains("hand-over stub"), "{text}");
        assert!(text.contains("pc=0x7ffe0"), "{text}");
    }
}
