//! What the boot loader hands over: PVH `hvm_start_info` or the multiboot2
//! information structure: the memory map, the command line, where the ACPI
//! tables are, and (multiboot2) the framebuffer GRUB set up.
//!
//! Everything is read once, before the heap exists, into a fixed-size
//! [`BootInfo`] (usable RAM ranges, a copy of the command line and of the
//! RSDP); after that the loader's structures may be overwritten by the heap.
//! The parsers work on byte slices and check every size against them, so bad
//! input gives a [`BootInfoError`]; only [`read`] turns physical addresses
//! into slices.

use core::fmt;

/// Multiboot2's value of EAX at entry.
pub const MULTIBOOT2_MAGIC: u32 = 0x36d7_6289;
/// `hvm_start_info.magic` ("xEn3" with the high bit of the first byte set).
pub const PVH_START_MAGIC: u32 = 0x336e_c578;
/// E820 / multiboot2 type of ordinary usable RAM.
const RAM_TYPE: u32 = 1;
/// Multiboot2 information tag types.
const MB2_TAG_END: u32 = 0;
const MB2_TAG_CMDLINE: u32 = 1;
const MB2_TAG_MEMORY_MAP: u32 = 6;
const MB2_TAG_FRAMEBUFFER: u32 = 8;
const MB2_TAG_ACPI_OLD: u32 = 14;
const MB2_TAG_ACPI_NEW: u32 = 15;
/// Bytes of `struct hvm_start_info` up to and including the memory map
/// fields (version 1).
const PVH_START_INFO_SIZE: usize = 0x38;
/// Bytes of `struct hvm_memmap_table_entry`.
const PVH_MEMMAP_ENTRY_SIZE: usize = 24;
/// Most usable ranges kept; firmware maps have a few dozen at most.
pub const MAX_REGIONS: usize = 64;

/// Which boot protocol started the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// QEMU's `-kernel` through the PVH ELF note.
    Pvh,
    /// GRUB's `multiboot2` command.
    Multiboot2,
}

impl Protocol {
    /// The protocol's name, for the boot log.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Pvh => "PVH",
            Self::Multiboot2 => "multiboot2",
        }
    }
}

/// Why the boot information could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootInfoError {
    /// Neither the multiboot2 magic in EAX nor a PVH start info at EBX.
    UnknownProtocol {
        /// EAX at entry.
        magic: u32,
        /// EBX at entry.
        info: u32,
    },
    /// The structure at EBX is not a PVH start info (its magic is this).
    NotPvh(u32),
    /// The PVH start info predates memory maps (version 0) or has none.
    NoPvhMemoryMap,
    /// The multiboot2 information has no memory-map tag.
    NoMultiboot2MemoryMap,
    /// A structure, tag or entry is shorter than its format requires or
    /// runs past the end of its container.
    Truncated,
    /// The map lists no usable RAM at all.
    NoUsableMemory,
    /// An ACPI RSDP tag holds more bytes than an RSDP has.
    BadRsdp(usize),
}

impl fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownProtocol { magic, info } => write!(
                f,
                "unknown boot protocol (EAX={magic:#x}, EBX={info:#x}): boot through PVH or multiboot2"
            ),
            Self::NotPvh(magic) => write!(f, "no PVH start info (magic {magic:#x})"),
            Self::NoPvhMemoryMap => f.write_str("PVH start info carries no memory map"),
            Self::NoMultiboot2MemoryMap => {
                f.write_str("multiboot2 information carries no memory map")
            }
            Self::Truncated => f.write_str("boot information truncated or malformed"),
            Self::NoUsableMemory => f.write_str("the memory map lists no usable RAM"),
            Self::BadRsdp(len) => write!(f, "the RSDP copy has {len} bytes (at most {RSDP_MAX_LEN})"),
        }
    }
}

/// A half-open range `[start, end)` of physical addresses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Region {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl Region {
    /// Bytes in the range.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the range holds no byte.
    pub fn is_empty(&self) -> bool {
        self.start >= self.end
    }
}

/// The usable RAM ranges of the machine, in the loader's order.
#[derive(Clone, Debug)]
pub struct MemoryMap {
    /// The protocol the map came from.
    pub protocol: Protocol,
    regions: [Region; MAX_REGIONS],
    len: usize,
    /// Usable ranges that did not fit in `regions` (counted, not lost
    /// silently).
    pub dropped: usize,
}

impl MemoryMap {
    fn new(protocol: Protocol) -> Self {
        Self {
            protocol,
            regions: [Region::default(); MAX_REGIONS],
            len: 0,
            dropped: 0,
        }
    }

    fn push(&mut self, start: u64, size: u64, kind: u32) {
        if kind != RAM_TYPE || size == 0 {
            return;
        }
        if self.len == MAX_REGIONS {
            self.dropped += 1;
            return;
        }
        self.regions[self.len] = Region {
            start,
            end: start.saturating_add(size),
        };
        self.len += 1;
    }

    fn non_empty(self) -> Result<Self, BootInfoError> {
        if self.len == 0 {
            Err(BootInfoError::NoUsableMemory)
        } else {
            Ok(self)
        }
    }

    /// The usable ranges.
    pub fn regions(&self) -> &[Region] {
        &self.regions[..self.len]
    }

    /// Total usable RAM in bytes.
    pub fn usable_bytes(&self) -> u64 {
        self.regions().iter().map(Region::len).sum()
    }

    /// The usable ranges clipped to `[floor, ceiling)`, empty ones left out.
    pub fn clipped(&self, floor: u64, ceiling: u64) -> impl Iterator<Item = Region> + '_ {
        self.regions()
            .iter()
            .map(move |r| Region {
                start: r.start.max(floor),
                end: r.end.min(ceiling),
            })
            .filter(|r| !r.is_empty())
    }

    /// The largest usable range that lies at or above `floor` and below
    /// `ceiling`, clipped to them: where the heap starts.
    pub fn largest_free(&self, floor: u64, ceiling: u64) -> Option<Region> {
        self.clipped(floor, ceiling).max_by_key(Region::len)
    }

    /// The usable RAM at or above `floor` with the `excluded` ranges cut
    /// out (the kernel image, memory already handed out), in map order.
    pub fn free_ranges(&self, floor: u64, excluded: &[Region]) -> alloc::vec::Vec<Region> {
        let mut free: alloc::vec::Vec<Region> = self.clipped(floor, u64::MAX).collect();
        for cut in excluded {
            free = free
                .into_iter()
                .flat_map(|r| {
                    let below = Region {
                        start: r.start,
                        end: r.end.min(cut.start),
                    };
                    let above = Region {
                        start: r.start.max(cut.end),
                        end: r.end,
                    };
                    [below, above]
                })
                .filter(|r| !r.is_empty())
                .collect();
        }
        free
    }

    /// One past the highest usable byte.
    pub fn end(&self) -> u64 {
        self.regions().iter().map(|r| r.end).max().unwrap_or(0)
    }
}

/// Longest kernel command line kept (a line of shell commands).
pub const CMDLINE_MAX: usize = 1024;
/// Bytes of an ACPI 2.0+ RSDP (a 1.0 RSDP has the first 20).
pub const RSDP_MAX_LEN: usize = 36;

/// The kernel command line: the shell commands a node runs at boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandLine {
    bytes: [u8; CMDLINE_MAX],
    len: usize,
    /// Bytes of the loader's line, when it was longer than [`CMDLINE_MAX`].
    overlong: Option<usize>,
}

/// Why a command line cannot be used (none of it runs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandLineError {
    /// The line is longer than [`CMDLINE_MAX`] bytes.
    TooLong(usize),
    /// The line is not UTF-8.
    NotUtf8,
}

impl fmt::Display for CommandLineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong(len) => write!(
                f,
                "the kernel command line has {len} bytes, more than {CMDLINE_MAX}: none of it runs"
            ),
            Self::NotUtf8 => f.write_str("the kernel command line is not UTF-8: none of it runs"),
        }
    }
}

impl Default for CommandLine {
    fn default() -> Self {
        Self {
            bytes: [0; CMDLINE_MAX],
            len: 0,
            overlong: None,
        }
    }
}

impl CommandLine {
    /// The line up to its first NUL byte (loaders terminate it with one).
    pub fn from_bytes(line: &[u8]) -> Self {
        let line = line.split(|&b| b == 0).next().unwrap_or_default();
        let mut out = Self::default();
        if line.len() > CMDLINE_MAX {
            out.overlong = Some(line.len());
        } else {
            out.bytes[..line.len()].copy_from_slice(line);
            out.len = line.len();
        }
        out
    }

    /// The line as text.
    pub fn text(&self) -> Result<&str, CommandLineError> {
        if let Some(len) = self.overlong {
            return Err(CommandLineError::TooLong(len));
        }
        core::str::from_utf8(&self.bytes[..self.len]).map_err(|_| CommandLineError::NotUtf8)
    }
}

/// Where the ACPI root pointer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RsdpSource {
    /// At this physical address (PVH's `rsdp_paddr`, or found by a scan of
    /// the BIOS area).
    Address(u64),
    /// A copy the loader put in its information (multiboot2 tags 14/15):
    /// the RSDP's bytes.
    Copy {
        /// The RSDP, 20 (ACPI 1.0) or 36 bytes.
        bytes: [u8; RSDP_MAX_LEN],
        /// How many of `bytes` the copy has.
        len: usize,
    },
}

/// How a framebuffer's pixels are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FramebufferKind {
    /// Direct colour: each channel's bit position and width.
    Rgb {
        /// Red channel (position, bits).
        red: (u8, u8),
        /// Green channel.
        green: (u8, u8),
        /// Blue channel.
        blue: (u8, u8),
    },
    /// Palette-indexed pixels (not drawn on).
    Indexed,
    /// VGA text mode: `width` × `height` are characters, two bytes each.
    EgaText,
}

/// The framebuffer GRUB set up (multiboot2 tag 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Framebuffer {
    /// Physical address of the first pixel.
    pub address: u64,
    /// Bytes from one line to the next.
    pub pitch: u32,
    /// Pixels (characters for text mode) per line.
    pub width: u32,
    /// Lines.
    pub height: u32,
    /// Bits per pixel.
    pub bpp: u8,
    /// Pixel layout.
    pub kind: FramebufferKind,
}

/// Everything the kernel keeps from the boot loader.
#[derive(Clone, Debug)]
pub struct BootInfo {
    /// Usable RAM.
    pub memory_map: MemoryMap,
    /// The kernel command line (empty when the loader gave none).
    pub cmdline: CommandLine,
    /// The ACPI root pointer, when the loader passed it.
    pub rsdp: Option<RsdpSource>,
    /// The framebuffer, when the loader set one up.
    pub framebuffer: Option<Framebuffer>,
}

/// A little-endian field of `bytes` at `offset`.
fn field<const N: usize>(bytes: &[u8], offset: usize) -> Result<[u8; N], BootInfoError> {
    bytes
        .get(offset..offset.checked_add(N).ok_or(BootInfoError::Truncated)?)
        .and_then(|b| b.try_into().ok())
        .ok_or(BootInfoError::Truncated)
}

fn u8_at(bytes: &[u8], offset: usize) -> Result<u8, BootInfoError> {
    field::<1>(bytes, offset).map(|[b]| b)
}

fn u32_at(bytes: &[u8], offset: usize) -> Result<u32, BootInfoError> {
    field(bytes, offset).map(u32::from_le_bytes)
}

fn u64_at(bytes: &[u8], offset: usize) -> Result<u64, BootInfoError> {
    field(bytes, offset).map(u64::from_le_bytes)
}

/// What a PVH start info points to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PvhStartInfo {
    /// The memory map.
    pub memmap: PvhMemmap,
    /// Physical address of the NUL-terminated command line (0: none).
    pub cmdline_paddr: u64,
    /// Physical address of the ACPI RSDP (0: none given).
    pub rsdp_paddr: u64,
}

/// Where a PVH start info says its memory map is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PvhMemmap {
    /// Physical address of the first `hvm_memmap_table_entry`.
    pub address: u64,
    /// Number of entries.
    pub entries: u32,
}

impl PvhMemmap {
    /// Bytes the table occupies.
    pub fn size(&self) -> usize {
        self.entries as usize * PVH_MEMMAP_ENTRY_SIZE
    }
}

/// Reads a `struct hvm_start_info` (Xen's `arch-x86/hvm/start_info.h`):
/// magic 0x00, version 0x04, cmdline_paddr 0x18, rsdp_paddr 0x20,
/// memmap_paddr 0x28, memmap_entries 0x30.
pub fn parse_pvh_start_info(info: &[u8]) -> Result<PvhStartInfo, BootInfoError> {
    let magic = u32_at(info, 0)?;
    if magic != PVH_START_MAGIC {
        return Err(BootInfoError::NotPvh(magic));
    }
    if u32_at(info, 4)? < 1 {
        return Err(BootInfoError::NoPvhMemoryMap);
    }
    let memmap = PvhMemmap {
        address: u64_at(info, 0x28)?,
        entries: u32_at(info, 0x30)?,
    };
    if memmap.address == 0 || memmap.entries == 0 {
        return Err(BootInfoError::NoPvhMemoryMap);
    }
    Ok(PvhStartInfo {
        memmap,
        cmdline_paddr: u64_at(info, 0x18)?,
        rsdp_paddr: u64_at(info, 0x20)?,
    })
}

/// Reads a PVH memory map: `hvm_memmap_table_entry { u64 addr, size; u32
/// type, reserved; }` records.
pub fn parse_pvh_memmap(table: &[u8]) -> Result<MemoryMap, BootInfoError> {
    if !table.len().is_multiple_of(PVH_MEMMAP_ENTRY_SIZE) {
        return Err(BootInfoError::Truncated);
    }
    let mut map = MemoryMap::new(Protocol::Pvh);
    for entry in table.chunks_exact(PVH_MEMMAP_ENTRY_SIZE) {
        map.push(u64_at(entry, 0)?, u64_at(entry, 8)?, u32_at(entry, 16)?);
    }
    map.non_empty()
}

/// Reads a multiboot2 information structure: the memory map (tag 6, which
/// must be there), the command line (1), the framebuffer (8) and the ACPI
/// RSDP copies (14, 15; the newer wins). `info` may extend past the
/// structure; its `total_size` field bounds it.
pub fn parse_multiboot2(info: &[u8]) -> Result<BootInfo, BootInfoError> {
    let total = u32_at(info, 0)? as usize;
    let info = info.get(..total).ok_or(BootInfoError::Truncated)?;
    let mut memory_map = None;
    let mut cmdline = CommandLine::default();
    let mut rsdp = None;
    let mut framebuffer = None;
    let mut offset = 8;
    while offset < info.len() {
        let kind = u32_at(info, offset)?;
        let size = u32_at(info, offset + 4)? as usize;
        let tag = info
            .get(offset..offset.saturating_add(size))
            .filter(|tag| tag.len() >= 8)
            .ok_or(BootInfoError::Truncated)?;
        match kind {
            MB2_TAG_END => break,
            MB2_TAG_CMDLINE => cmdline = CommandLine::from_bytes(&tag[8..]),
            MB2_TAG_MEMORY_MAP => memory_map = Some(parse_multiboot2_memory_map(tag)?),
            MB2_TAG_FRAMEBUFFER => framebuffer = Some(parse_multiboot2_framebuffer(tag)?),
            MB2_TAG_ACPI_OLD if rsdp.is_none() => rsdp = Some(rsdp_copy(&tag[8..])?),
            MB2_TAG_ACPI_NEW => rsdp = Some(rsdp_copy(&tag[8..])?),
            _ => {}
        }
        // Tags start 8-byte aligned.
        offset += size.next_multiple_of(8);
    }
    Ok(BootInfo {
        memory_map: memory_map.ok_or(BootInfoError::NoMultiboot2MemoryMap)?,
        cmdline,
        rsdp,
        framebuffer,
    })
}

/// The RSDP bytes of a multiboot2 ACPI tag.
fn rsdp_copy(body: &[u8]) -> Result<RsdpSource, BootInfoError> {
    if body.len() > RSDP_MAX_LEN {
        return Err(BootInfoError::BadRsdp(body.len()));
    }
    let mut bytes = [0; RSDP_MAX_LEN];
    bytes[..body.len()].copy_from_slice(body);
    Ok(RsdpSource::Copy {
        bytes,
        len: body.len(),
    })
}

/// A multiboot2 framebuffer tag: `u64 addr; u32 pitch, width, height; u8
/// bpp, type; u16 reserved;` then, for direct colour (type 1), the red,
/// green and blue field positions and sizes.
fn parse_multiboot2_framebuffer(tag: &[u8]) -> Result<Framebuffer, BootInfoError> {
    let kind = match u8_at(tag, 29)? {
        0 => FramebufferKind::Indexed,
        1 => {
            let channel = |at| Ok::<_, BootInfoError>((u8_at(tag, at)?, u8_at(tag, at + 1)?));
            FramebufferKind::Rgb {
                red: channel(32)?,
                green: channel(34)?,
                blue: channel(36)?,
            }
        }
        _ => FramebufferKind::EgaText,
    };
    Ok(Framebuffer {
        address: u64_at(tag, 8)?,
        pitch: u32_at(tag, 16)?,
        width: u32_at(tag, 20)?,
        height: u32_at(tag, 24)?,
        bpp: u8_at(tag, 28)?,
        kind,
    })
}

/// The entries of a multiboot2 memory-map tag: `{ u64 base_addr, length;
/// u32 type, reserved; }`, `entry_size` bytes apart.
fn parse_multiboot2_memory_map(tag: &[u8]) -> Result<MemoryMap, BootInfoError> {
    let entry_size = u32_at(tag, 8)? as usize;
    if entry_size < 24 {
        return Err(BootInfoError::Truncated);
    }
    let mut map = MemoryMap::new(Protocol::Multiboot2);
    let entries = tag.get(16..).ok_or(BootInfoError::Truncated)?;
    for entry in entries.chunks_exact(entry_size) {
        map.push(u64_at(entry, 0)?, u64_at(entry, 8)?, u32_at(entry, 16)?);
    }
    map.non_empty()
}

/// Where legacy BIOSes keep the RSDP: on a 16-byte boundary of the EBDA's
/// first KiB or of 0xE0000..0x100000, with the signature `RSD PTR ` and a
/// zero checksum over its first 20 bytes. `area` holds the bytes from
/// physical address `base`; returns the RSDP's address.
pub fn find_rsdp(area: &[u8], base: u64) -> Option<u64> {
    area.chunks(16)
        .enumerate()
        .filter(|(_, chunk)| chunk.starts_with(b"RSD PTR "))
        .find(|(i, _)| {
            area.get(i * 16..i * 16 + 20)
                .is_some_and(|rsdp| rsdp.iter().fold(0u8, |sum, b| sum.wrapping_add(*b)) == 0)
        })
        .map(|(i, _)| base + i as u64 * 16)
}

/// Reads the boot information at physical address `info`, choosing the
/// protocol by `magic` (EAX at entry).
///
/// # Safety
///
/// `info` must be EBX as the boot loader left it, with the structures it
/// points to intact and identity-mapped.
pub unsafe fn read(magic: u32, info: u32) -> Result<BootInfo, BootInfoError> {
    let unknown = BootInfoError::UnknownProtocol { magic, info };
    if info == 0 {
        return Err(unknown);
    }
    let address = info as usize as *const u8;
    if magic == MULTIBOOT2_MAGIC {
        // SAFETY: the magic says EBX is a multiboot2 information structure,
        // whose first field is its total size.
        let total = unsafe { address.cast::<u32>().read_unaligned() } as usize;
        // SAFETY: the loader provides `total` bytes of information there.
        let bytes = unsafe { core::slice::from_raw_parts(address, total) };
        return parse_multiboot2(bytes);
    }
    // SAFETY: without the multiboot2 magic, EBX is PVH's start info (any
    // other loader is refused by its magic); a version-1 start info has at
    // least these bytes.
    let start_info = unsafe { core::slice::from_raw_parts(address, PVH_START_INFO_SIZE) };
    let start = parse_pvh_start_info(start_info).map_err(|error| match error {
        BootInfoError::NotPvh(_) => unknown,
        other => other,
    })?;
    // SAFETY: the start info says the table is there, with this many
    // entries.
    let table = unsafe {
        core::slice::from_raw_parts(
            start.memmap.address as usize as *const u8,
            start.memmap.size(),
        )
    };
    let memory_map = parse_pvh_memmap(table)?;
    let cmdline = match start.cmdline_paddr {
        0 => CommandLine::default(),
        // SAFETY: the loader put a NUL-terminated string there; reading
        // stops at its NUL or one byte past the longest line kept.
        paddr => unsafe { read_c_string(paddr) },
    };
    let rsdp = match start.rsdp_paddr {
        // SAFETY: the BIOS areas are identity-mapped low memory.
        0 => unsafe { scan_bios_for_rsdp() }.map(RsdpSource::Address),
        paddr => Some(RsdpSource::Address(paddr)),
    };
    Ok(BootInfo {
        memory_map,
        cmdline,
        rsdp,
        framebuffer: None,
    })
}

/// The NUL-terminated string at `paddr`, read up to [`CMDLINE_MAX`] + 1
/// bytes.
///
/// # Safety
///
/// A NUL-terminated string must start at `paddr`, identity-mapped.
unsafe fn read_c_string(paddr: u64) -> CommandLine {
    let mut line = [0u8; CMDLINE_MAX + 1];
    let mut len = 0;
    while len < line.len() {
        // SAFETY: within the string or its NUL, per the caller.
        let byte = unsafe { (paddr as usize as *const u8).add(len).read_volatile() };
        if byte == 0 {
            break;
        }
        line[len] = byte;
        len += 1;
    }
    CommandLine::from_bytes(&line[..len])
}

/// Looks for the RSDP where a legacy BIOS puts it (QEMU's PVH boot passes
/// none when its option ROM did not find it).
///
/// # Safety
///
/// The first MiB must be identity-mapped and readable (it is, on a PC).
unsafe fn scan_bios_for_rsdp() -> Option<u64> {
    // SAFETY: the BIOS data area's EBDA segment pointer at 0x40E.
    let ebda = u64::from(unsafe { (0x40e as *const u16).read_volatile() }) << 4;
    let areas = [(ebda, 1024), (0xe_0000, 0x2_0000)];
    areas
        .into_iter()
        .filter(|&(base, _)| (0x400..0x10_0000).contains(&base))
        .find_map(|(base, len)| {
            // SAFETY: low memory below 1 MiB, identity-mapped, read only.
            let area = unsafe { core::slice::from_raw_parts(base as usize as *const u8, len) };
            find_rsdp(area, base)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A multiboot2 information structure with the given tags, each a type
    /// and a body, padded to 8 bytes, closed by the end tag.
    fn multiboot2(tags: &[(u32, Vec<u8>)]) -> Vec<u8> {
        let mut out = vec![0u8; 8];
        for (kind, body) in tags.iter().chain([(MB2_TAG_END, Vec::new())].iter()) {
            out.extend_from_slice(&kind.to_le_bytes());
            out.extend_from_slice(&(8 + body.len() as u32).to_le_bytes());
            out.extend_from_slice(body);
            out.resize(out.len().next_multiple_of(8), 0);
        }
        let total = out.len() as u32;
        out[..4].copy_from_slice(&total.to_le_bytes());
        out
    }

    fn entry(base: u64, length: u64, kind: u32) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&base.to_le_bytes());
        out.extend_from_slice(&length.to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out
    }

    fn memory_map_tag(entries: &[(u64, u64, u32)]) -> (u32, Vec<u8>) {
        let mut body = Vec::new();
        body.extend_from_slice(&24u32.to_le_bytes());
        body.extend_from_slice(&0u32.to_le_bytes());
        for &(base, length, kind) in entries {
            body.extend(entry(base, length, kind));
        }
        (MB2_TAG_MEMORY_MAP, body)
    }

    #[test]
    fn multiboot2_memory_map_keeps_usable_ranges() {
        let cmdline = (1, b"tern\0".to_vec());
        let info = multiboot2(&[
            cmdline,
            memory_map_tag(&[
                (0, 0x9fc00, 1),
                (0xf0000, 0x10000, 2),
                (0x10_0000, 0x1ff0_0000, 1),
            ]),
        ]);
        let boot = parse_multiboot2(&info).unwrap();
        assert_eq!(boot.cmdline.text(), Ok("tern"));
        assert_eq!(boot.rsdp, None);
        assert_eq!(boot.framebuffer, None);
        let map = boot.memory_map;
        assert_eq!(map.protocol, Protocol::Multiboot2);
        assert_eq!(
            map.regions(),
            &[
                Region {
                    start: 0,
                    end: 0x9fc00
                },
                Region {
                    start: 0x10_0000,
                    end: 0x2000_0000
                },
            ]
        );
        assert_eq!(map.usable_bytes(), 0x9fc00 + 0x1ff0_0000);
    }

    #[test]
    fn multiboot2_without_memory_map_is_an_error() {
        let info = multiboot2(&[(1, b"tern\0".to_vec())]);
        assert_eq!(
            parse_multiboot2(&info).unwrap_err(),
            BootInfoError::NoMultiboot2MemoryMap
        );
    }

    #[test]
    fn multiboot2_with_only_reserved_memory_is_an_error() {
        let info = multiboot2(&[memory_map_tag(&[(0, 0x1000, 2)])]);
        assert_eq!(
            parse_multiboot2(&info).unwrap_err(),
            BootInfoError::NoUsableMemory
        );
    }

    #[test]
    fn multiboot2_bad_sizes_are_errors_not_panics() {
        let good = multiboot2(&[memory_map_tag(&[(0x10_0000, 0x10_0000, 1)])]);
        // Total size larger than the buffer.
        let mut long = good.clone();
        long[..4].copy_from_slice(&(good.len() as u32 + 8).to_le_bytes());
        assert_eq!(
            parse_multiboot2(&long).unwrap_err(),
            BootInfoError::Truncated
        );
        // A tag claiming fewer than 8 bytes.
        let mut tiny = good.clone();
        tiny[12..16].copy_from_slice(&4u32.to_le_bytes());
        assert_eq!(
            parse_multiboot2(&tiny).unwrap_err(),
            BootInfoError::Truncated
        );
        // A tag running past the end.
        let mut past = good.clone();
        past[12..16].copy_from_slice(&0x1000u32.to_le_bytes());
        assert_eq!(
            parse_multiboot2(&past).unwrap_err(),
            BootInfoError::Truncated
        );
        // A memory-map tag too short for its header.
        let mut header = multiboot2(&[(MB2_TAG_MEMORY_MAP, vec![24, 0, 0, 0])]);
        assert_eq!(
            parse_multiboot2(&header).unwrap_err(),
            BootInfoError::Truncated
        );
        header[8..12].copy_from_slice(&MB2_TAG_END.to_le_bytes());
        assert_eq!(
            parse_multiboot2(&header).unwrap_err(),
            BootInfoError::NoMultiboot2MemoryMap
        );
        // Entries smaller than the format's 24 bytes.
        let mut small = good.clone();
        small[16..20].copy_from_slice(&8u32.to_le_bytes());
        assert_eq!(
            parse_multiboot2(&small).unwrap_err(),
            BootInfoError::Truncated
        );
        // Every prefix of a valid structure.
        for len in 0..good.len() {
            assert!(
                parse_multiboot2(&good[..len]).is_err(),
                "prefix of {len} bytes"
            );
        }
    }

    fn pvh_start_info(version: u32, memmap: u64, entries: u32) -> Vec<u8> {
        let mut info = vec![0u8; PVH_START_INFO_SIZE];
        info[0..4].copy_from_slice(&PVH_START_MAGIC.to_le_bytes());
        info[4..8].copy_from_slice(&version.to_le_bytes());
        info[0x18..0x20].copy_from_slice(&0x9000u64.to_le_bytes());
        info[0x20..0x28].copy_from_slice(&0xf_5a40u64.to_le_bytes());
        info[0x28..0x30].copy_from_slice(&memmap.to_le_bytes());
        info[0x30..0x34].copy_from_slice(&entries.to_le_bytes());
        info
    }

    #[test]
    fn pvh_start_info_locates_the_memory_map() {
        let info = pvh_start_info(1, 0x7000, 3);
        let start = parse_pvh_start_info(&info).unwrap();
        assert_eq!(
            start.memmap,
            PvhMemmap {
                address: 0x7000,
                entries: 3
            }
        );
        assert_eq!(start.memmap.size(), 72);
        assert_eq!(start.cmdline_paddr, 0x9000);
        assert_eq!(start.rsdp_paddr, 0xf_5a40);
    }

    #[test]
    fn pvh_start_info_errors() {
        assert_eq!(
            parse_pvh_start_info(&pvh_start_info(0, 0x7000, 3)).unwrap_err(),
            BootInfoError::NoPvhMemoryMap
        );
        assert_eq!(
            parse_pvh_start_info(&pvh_start_info(1, 0, 0)).unwrap_err(),
            BootInfoError::NoPvhMemoryMap
        );
        let mut wrong = pvh_start_info(1, 0x7000, 3);
        wrong[0] ^= 1;
        assert_eq!(
            parse_pvh_start_info(&wrong).unwrap_err(),
            BootInfoError::NotPvh(PVH_START_MAGIC ^ 1)
        );
        assert_eq!(
            parse_pvh_start_info(&pvh_start_info(1, 0x7000, 3)[..0x30]).unwrap_err(),
            BootInfoError::Truncated
        );
    }

    #[test]
    fn pvh_memory_map_and_heap_placement() {
        let mut table = entry(0, 0x9fc00, 1);
        table.extend(entry(0x9fc00, 0x400, 2));
        table.extend(entry(0x10_0000, 0x1fee_0000, 1));
        table.extend(entry(0x1_0000_0000, 0x8000_0000, 1));
        let map = parse_pvh_memmap(&table).unwrap();
        assert_eq!(map.protocol, Protocol::Pvh);
        assert_eq!(map.regions().len(), 3);
        // The heap: largest range above the kernel end, below 4 GiB.
        let heap = map.largest_free(0x15_0000, 1 << 32).unwrap();
        assert_eq!(
            heap,
            Region {
                start: 0x15_0000,
                end: 0x1ffe_0000
            }
        );
        // Nothing fits above the ceiling.
        assert_eq!(map.largest_free(0x2000_0000, 0x3000_0000), None);
        assert_eq!(
            parse_pvh_memmap(&table[..30]).unwrap_err(),
            BootInfoError::Truncated
        );
    }

    #[test]
    fn multiboot2_command_line_rsdp_and_framebuffer() {
        let mut rsdp_v1 = b"RSD PTR ".to_vec();
        rsdp_v1.resize(20, 0);
        let mut rsdp_v2 = b"RSD PTR ".to_vec();
        rsdp_v2.resize(36, 2);
        let mut fb = Vec::new();
        fb.extend_from_slice(&0xfd00_0000u64.to_le_bytes());
        for word in [4096u32, 1024, 768] {
            fb.extend_from_slice(&word.to_le_bytes());
        }
        fb.extend_from_slice(&[32, 1, 0, 0, 16, 8, 8, 8, 0, 8, 0, 0]);
        let info = multiboot2(&[
            (1, b"net 10.0.2.2/24; key insecure\0".to_vec()),
            (15, rsdp_v2.clone()),
            (14, rsdp_v1),
            (8, fb),
            memory_map_tag(&[(0x10_0000, 0x100_0000, 1)]),
        ]);
        let boot = parse_multiboot2(&info).unwrap();
        assert_eq!(boot.cmdline.text(), Ok("net 10.0.2.2/24; key insecure"));
        // The ACPI 2.0 copy wins over the 1.0 one, whatever their order.
        let mut bytes = [0; RSDP_MAX_LEN];
        bytes.copy_from_slice(&rsdp_v2);
        assert_eq!(boot.rsdp, Some(RsdpSource::Copy { bytes, len: 36 }));
        assert_eq!(
            boot.framebuffer,
            Some(Framebuffer {
                address: 0xfd00_0000,
                pitch: 4096,
                width: 1024,
                height: 768,
                bpp: 32,
                kind: FramebufferKind::Rgb {
                    red: (16, 8),
                    green: (8, 8),
                    blue: (0, 8)
                },
            })
        );
        // An RSDP tag longer than an RSDP, a truncated framebuffer tag.
        let long = multiboot2(&[(15, vec![0; 40]), memory_map_tag(&[(0, 0x1000, 1)])]);
        assert_eq!(
            parse_multiboot2(&long).unwrap_err(),
            BootInfoError::BadRsdp(40)
        );
        let short = multiboot2(&[(8, vec![0; 12]), memory_map_tag(&[(0, 0x1000, 1)])]);
        assert_eq!(
            parse_multiboot2(&short).unwrap_err(),
            BootInfoError::Truncated
        );
    }

    #[test]
    fn command_lines_too_long_or_not_utf8_run_nothing() {
        let long = vec![b'x'; CMDLINE_MAX + 1];
        assert_eq!(
            CommandLine::from_bytes(&long).text(),
            Err(CommandLineError::TooLong(CMDLINE_MAX + 1))
        );
        let exact = vec![b'x'; CMDLINE_MAX];
        assert_eq!(
            CommandLine::from_bytes(&exact).text().unwrap().len(),
            CMDLINE_MAX
        );
        assert_eq!(
            CommandLine::from_bytes(b"net \xff\0").text(),
            Err(CommandLineError::NotUtf8)
        );
        assert_eq!(CommandLine::from_bytes(b"").text(), Ok(""));
    }

    #[test]
    fn the_rsdp_scan_wants_signature_alignment_and_checksum() {
        let mut area = vec![0u8; 256];
        // Misaligned signature: ignored.
        area[8..16].copy_from_slice(b"RSD PTR ");
        // Aligned but bad checksum.
        area[32..40].copy_from_slice(b"RSD PTR ");
        area[40] = 1;
        // Aligned with a good checksum.
        area[96..104].copy_from_slice(b"RSD PTR ");
        let sum = area[96..116].iter().fold(0u8, |s, b| s.wrapping_add(*b));
        area[104] = 0u8.wrapping_sub(sum);
        assert_eq!(find_rsdp(&area, 0xe_0000), Some(0xe_0000 + 96));
        assert_eq!(find_rsdp(&area[..100], 0xe_0000), None);
    }

    #[test]
    fn free_ranges_cut_out_the_kernel_and_the_first_heap() {
        let mut table = entry(0, 0x9fc00, 1);
        table.extend(entry(0x10_0000, 0x7fee_0000, 1));
        table.extend(entry(0x1_0000_0000, 0x1_8000_0000, 1));
        let map = parse_pvh_memmap(&table).unwrap();
        assert_eq!(map.end(), 0x2_8000_0000);
        let kernel = Region {
            start: 0x10_0000,
            end: 0x40_0000,
        };
        let heap = Region {
            start: 0x40_0000,
            end: 0x7ffe_0000,
        };
        assert_eq!(
            map.free_ranges(0x10_0000, &[kernel, heap]),
            [Region {
                start: 0x1_0000_0000,
                end: 0x2_8000_0000
            }]
        );
        let middle = Region {
            start: 0x1_4000_0000,
            end: 0x1_5000_0000,
        };
        assert_eq!(
            map.free_ranges(0, &[middle]),
            [
                Region {
                    start: 0,
                    end: 0x9fc00
                },
                Region {
                    start: 0x10_0000,
                    end: 0x7ffe_0000
                },
                Region {
                    start: 0x1_0000_0000,
                    end: 0x1_4000_0000
                },
                Region {
                    start: 0x1_5000_0000,
                    end: 0x2_8000_0000
                },
            ]
        );
    }

    #[test]
    fn ranges_beyond_capacity_are_counted() {
        let table: Vec<u8> = (0..MAX_REGIONS as u64 + 3)
            .flat_map(|i| entry(i << 20, 0x1000, 1))
            .collect();
        let map = parse_pvh_memmap(&table).unwrap();
        assert_eq!(map.regions().len(), MAX_REGIONS);
        assert_eq!(map.dropped, 3);
    }
}
