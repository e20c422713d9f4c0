//! Kernel ELFs: which board they were built for, and the raw image a board
//! without an ELF loader boots (rpi4's `kernel8.img`).

use std::path::{Path, PathBuf};

use object::elf::{FileHeader64, PT_LOAD};
use object::read::elf::{FileHeader, ProgramHeader};
use object::Endianness;

use crate::{Board, FlashError, Variant};

/// The non-loaded section in which every Tern kernel names its board.
pub const BOARD_SECTION: &str = ".tern_board";

/// A kernel ELF read into memory.
pub struct KernelElf {
    path: PathBuf,
    data: Vec<u8>,
}

impl KernelElf {
    /// Reads the ELF at `path`.
    pub fn read(path: &Path) -> Result<Self, FlashError> {
        let data = std::fs::read(path).map_err(|source| FlashError::Read {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self::from_bytes(path, data))
    }

    /// Wraps ELF bytes that came from `path`.
    pub fn from_bytes(path: &Path, data: Vec<u8>) -> Self {
        Self {
            path: path.to_owned(),
            data,
        }
    }

    /// Where the ELF came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The ELF's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    fn header(&self) -> Result<(&FileHeader64<Endianness>, Endianness), FlashError> {
        let not_elf = |error: object::read::Error| FlashError::NotElf {
            path: self.path.clone(),
            reason: error.to_string(),
        };
        let header = FileHeader64::<Endianness>::parse(self.data.as_slice()).map_err(not_elf)?;
        let endian = header.endian().map_err(not_elf)?;
        Ok((header, endian))
    }

    /// The board name in the kernel's `.tern_board` section.
    pub fn board_name(&self) -> Result<String, FlashError> {
        let (header, endian) = self.header()?;
        let not_elf = |error: object::read::Error| FlashError::NotElf {
            path: self.path.clone(),
            reason: error.to_string(),
        };
        let sections = header
            .sections(endian, self.data.as_slice())
            .map_err(not_elf)?;
        let (_, section) = sections
            .section_by_name(endian, BOARD_SECTION.as_bytes())
            .ok_or_else(|| FlashError::NoBoardSection {
                path: self.path.clone(),
            })?;
        let contents =
            object::read::elf::SectionHeader::data(section, endian, self.data.as_slice())
                .map_err(not_elf)?;
        // The linker may pad the section; the name is the text before that.
        let name = String::from_utf8_lossy(contents);
        Ok(name.trim_end_matches(['\0', '\n', ' ']).to_owned())
    }

    /// Checks that the kernel is `variant` of `board`: machine and board section.
    pub fn check(&self, board: Board, variant: Variant) -> Result<(), FlashError> {
        let (header, endian) = self.header()?;
        let machine = header.e_machine(endian);
        if machine != board.machine() {
            return Err(FlashError::WrongMachine {
                path: self.path.clone(),
                board,
                found: machine,
            });
        }
        let expected = board.section_name(variant);
        let found = self.board_name()?;
        if found != expected {
            return Err(FlashError::WrongBoard {
                path: self.path.clone(),
                expected,
                found,
            });
        }
        Ok(())
    }

    /// The raw image: every loadable segment's file bytes placed at its
    /// physical address relative to the lowest one, gaps zero-filled (what
    /// `llvm-objcopy -O binary` produces). Fails beyond `limit` bytes.
    pub fn raw_image(&self, limit: u64) -> Result<Vec<u8>, FlashError> {
        let (header, endian) = self.header()?;
        let data = self.data.as_slice();
        let not_elf = |error: object::read::Error| FlashError::NotElf {
            path: self.path.clone(),
            reason: error.to_string(),
        };
        let mut segments = Vec::new();
        for segment in header.program_headers(endian, data).map_err(not_elf)? {
            if segment.p_type(endian) != PT_LOAD || segment.p_filesz(endian) == 0 {
                continue;
            }
            let bytes = segment
                .data(endian, data)
                .map_err(|()| FlashError::NotElf {
                    path: self.path.clone(),
                    reason: "a loadable segment lies outside the file".into(),
                })?;
            segments.push((segment.p_paddr(endian), bytes));
        }
        let base = segments
            .iter()
            .map(|(address, _)| *address)
            .min()
            .ok_or_else(|| FlashError::NoLoadableSegments {
                path: self.path.clone(),
            })?;
        let end = segments
            .iter()
            .map(|(address, bytes)| address.saturating_add(bytes.len() as u64))
            .max()
            .unwrap_or(base);
        let size = end - base;
        if size > limit {
            return Err(FlashError::ImageTooLarge { size, limit });
        }
        let mut image = vec![0; size as usize];
        for (address, bytes) in segments {
            let at = (address - base) as usize;
            image[at..at + bytes.len()].copy_from_slice(bytes);
        }
        Ok(image)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use object::elf;
    use object::write::elf::{FileHeader, ProgramHeader, SectionHeader, Writer};

    use super::*;

    /// One loadable segment of a synthetic ELF: physical address and bytes.
    pub(crate) struct Segment<'a> {
        pub paddr: u64,
        pub bytes: &'a [u8],
        /// Extra zero-initialised memory after the bytes (like `.bss`).
        pub bss: u64,
    }

    /// A synthetic kernel ELF with `segments` and a `.tern_board` section.
    pub(crate) fn synthetic_elf(
        machine: u16,
        board: Option<&str>,
        segments: &[Segment],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let mut writer = Writer::new(Endianness::Little, true, &mut out);
        writer.reserve_file_header();
        writer.reserve_program_headers(segments.len() as u32);
        let offsets: Vec<usize> = segments
            .iter()
            .map(|segment| writer.reserve(segment.bytes.len(), 16))
            .collect();
        writer.reserve_null_section_index();
        let section = board.map(|name| {
            let section_name = writer.add_section_name(BOARD_SECTION.as_bytes());
            writer.reserve_section_index();
            (section_name, writer.reserve(name.len(), 1), name)
        });
        writer.reserve_shstrtab_section_index();
        writer.reserve_shstrtab();
        writer.reserve_section_headers();

        writer
            .write_file_header(&FileHeader {
                os_abi: 0,
                abi_version: 0,
                e_type: elf::ET_EXEC,
                e_machine: machine,
                e_entry: segments.first().map_or(0, |segment| segment.paddr),
                e_flags: 0,
            })
            .unwrap();
        writer.write_align_program_headers();
        for (segment, offset) in segments.iter().zip(&offsets) {
            writer.write_program_header(&ProgramHeader {
                p_type: elf::PT_LOAD,
                p_flags: elf::PF_R | elf::PF_X,
                p_offset: *offset as u64,
                // Virtual addresses differ from physical ones, as in a
                // higher-half kernel: the raw image must follow p_paddr.
                p_vaddr: segment.paddr + 0xffff_0000_0000_0000,
                p_paddr: segment.paddr,
                p_filesz: segment.bytes.len() as u64,
                p_memsz: segment.bytes.len() as u64 + segment.bss,
                p_align: 16,
            });
        }
        for segment in segments {
            writer.write_align(16);
            writer.write(segment.bytes);
        }
        if let Some((_, _, name)) = section {
            writer.write(name.as_bytes());
        }
        writer.write_shstrtab();
        writer.write_null_section_header();
        if let Some((section_name, offset, name)) = section {
            writer.write_section_header(&SectionHeader {
                name: Some(section_name),
                sh_type: elf::SHT_PROGBITS,
                sh_flags: 0,
                sh_addr: 0,
                sh_offset: offset as u64,
                sh_size: name.len() as u64,
                sh_link: 0,
                sh_info: 0,
                sh_addralign: 1,
                sh_entsize: 0,
            });
        }
        writer.write_shstrtab_section_header();
        out
    }

    fn kernel(machine: u16, board: Option<&str>, segments: &[Segment]) -> KernelElf {
        KernelElf::from_bytes(
            Path::new("kernel.elf"),
            synthetic_elf(machine, board, segments),
        )
    }

    #[test]
    fn raw_image_lays_segments_out_by_physical_address() {
        let elf = kernel(
            elf::EM_AARCH64,
            Some("rpi4"),
            &[
                Segment {
                    paddr: 0x80000,
                    bytes: b"code",
                    bss: 0,
                },
                // A gap of 4 bytes, then data followed by bss that the image omits.
                Segment {
                    paddr: 0x80008,
                    bytes: b"data",
                    bss: 0x1000,
                },
            ],
        );
        assert_eq!(elf.raw_image(1 << 20).unwrap(), b"code\0\0\0\0data");
    }

    #[test]
    fn raw_image_over_the_limit_is_an_error() {
        let elf = kernel(
            elf::EM_AARCH64,
            Some("rpi4"),
            &[
                Segment {
                    paddr: 0x80000,
                    bytes: b"code",
                    bss: 0,
                },
                Segment {
                    paddr: 0x4000_0000,
                    bytes: b"far",
                    bss: 0,
                },
            ],
        );
        assert!(matches!(
            elf.raw_image(32 << 20),
            Err(FlashError::ImageTooLarge { size, limit }) if size == 0x4000_0000 - 0x80000 + 3 && limit == 32 << 20
        ));
    }

    #[test]
    fn an_elf_without_loadable_bytes_has_no_image() {
        let elf = kernel(elf::EM_AARCH64, Some("rpi4"), &[]);
        assert!(matches!(
            elf.raw_image(1 << 20),
            Err(FlashError::NoLoadableSegments { .. })
        ));
    }

    #[test]
    fn the_board_section_and_machine_are_checked() {
        let segment = [Segment {
            paddr: 0x80000,
            bytes: b"code",
            bss: 0,
        }];
        let virt = kernel(elf::EM_AARCH64, Some("virt"), &segment);
        assert_eq!(virt.board_name().unwrap(), "virt");
        virt.check(Board::Virt, Variant::Tern).unwrap();
        let error = virt.check(Board::Rpi4, Variant::Tern).unwrap_err();
        assert!(
            matches!(&error, FlashError::WrongBoard { expected, found, .. } if expected == "rpi4" && found == "virt"),
            "{error}"
        );
        assert!(error.to_string().contains("built for virt"), "{error}");

        let chainloader = kernel(elf::EM_AARCH64, Some("rpi4-chainloader"), &segment);
        chainloader
            .check(Board::Rpi4, Variant::Chainloader)
            .unwrap();
        assert!(chainloader.check(Board::Rpi4, Variant::Tern).is_err());

        let pc = kernel(elf::EM_X86_64, Some("pc"), &segment);
        assert!(matches!(
            pc.check(Board::Rpi4, Variant::Tern),
            Err(FlashError::WrongMachine {
                found: elf::EM_X86_64,
                ..
            })
        ));

        let anonymous = kernel(elf::EM_AARCH64, None, &segment);
        assert!(matches!(
            anonymous.check(Board::Virt, Variant::Tern),
            Err(FlashError::NoBoardSection { .. })
        ));
    }

    #[test]
    fn a_non_elf_file_is_a_clear_error() {
        let text = KernelElf::from_bytes(
            Path::new("notes.txt"),
            b"not an elf at all, just text".to_vec(),
        );
        assert!(matches!(
            text.check(Board::Pc, Variant::Tern),
            Err(FlashError::NotElf { .. })
        ));
    }
}
