//! The memory map handed over by the boot loader: PVH `hvm_start_info` or
//! the multiboot2 information structure.
//!
//! Both are read once, before the heap exists, into a fixed-size
//! [`MemoryMap`] of usable RAM ranges; after that the loader's structures may
//! be overwritten by the heap. The parsers work on byte slices and check
//! every size against them, so bad input gives a [`BootInfoError`]; only
//! [`read`] turns physical addresses into slices.

use core::fmt;

/// Multiboot2's value of EAX at entry.
pub const MULTIBOOT2_MAGIC: u32 = 0x36d7_6289;
/// `hvm_start_info.magic` ("xEn3" with the high bit of the first byte set).
pub const PVH_START_MAGIC: u32 = 0x336e_c578;
/// E820 / multiboot2 type of ordinary usable RAM.
const RAM_TYPE: u32 = 1;
/// Multiboot2 information tag types.
const MB2_TAG_END: u32 = 0;
const MB2_TAG_MEMORY_MAP: u32 = 6;
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

    /// The largest usable range that lies at or above `floor` and below
    /// `ceiling`, clipped to them: where the heap goes.
    pub fn largest_free(&self, floor: u64, ceiling: u64) -> Option<Region> {
        self.regions()
            .iter()
            .map(|r| Region {
                start: r.start.max(floor),
                end: r.end.min(ceiling),
            })
            .filter(|r| !r.is_empty())
            .max_by_key(Region::len)
    }
}

/// A little-endian field of `bytes` at `offset`.
fn field<const N: usize>(bytes: &[u8], offset: usize) -> Result<[u8; N], BootInfoError> {
    bytes
        .get(offset..offset.checked_add(N).ok_or(BootInfoError::Truncated)?)
        .and_then(|b| b.try_into().ok())
        .ok_or(BootInfoError::Truncated)
}

fn u32_at(bytes: &[u8], offset: usize) -> Result<u32, BootInfoError> {
    field(bytes, offset).map(u32::from_le_bytes)
}

fn u64_at(bytes: &[u8], offset: usize) -> Result<u64, BootInfoError> {
    field(bytes, offset).map(u64::from_le_bytes)
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

/// Reads the memory-map location from a `struct hvm_start_info` (Xen's
/// `arch-x86/hvm/start_info.h`).
pub fn parse_pvh_start_info(info: &[u8]) -> Result<PvhMemmap, BootInfoError> {
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
    Ok(memmap)
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

/// Reads the memory-map tag (type 6) of a multiboot2 information structure.
/// `info` may extend past the structure; its `total_size` field bounds it.
pub fn parse_multiboot2(info: &[u8]) -> Result<MemoryMap, BootInfoError> {
    let total = u32_at(info, 0)? as usize;
    let info = info.get(..total).ok_or(BootInfoError::Truncated)?;
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
            MB2_TAG_MEMORY_MAP => return parse_multiboot2_memory_map(tag),
            _ => {}
        }
        // Tags start 8-byte aligned.
        offset += size.next_multiple_of(8);
    }
    Err(BootInfoError::NoMultiboot2MemoryMap)
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

/// Reads the memory map from the boot information at physical address
/// `info`, choosing the protocol by `magic` (EAX at entry).
///
/// # Safety
///
/// `info` must be EBX as the boot loader left it, with the structures it
/// points to intact and identity-mapped.
pub unsafe fn read(magic: u32, info: u32) -> Result<MemoryMap, BootInfoError> {
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
    let memmap = parse_pvh_start_info(start_info).map_err(|error| match error {
        BootInfoError::NotPvh(_) => unknown,
        other => other,
    })?;
    // SAFETY: the start info says the table is there, with this many
    // entries.
    let table =
        unsafe { core::slice::from_raw_parts(memmap.address as usize as *const u8, memmap.size()) };
    parse_pvh_memmap(table)
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
        let map = parse_multiboot2(&info).unwrap();
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
        info[0x28..0x30].copy_from_slice(&memmap.to_le_bytes());
        info[0x30..0x34].copy_from_slice(&entries.to_le_bytes());
        info
    }

    #[test]
    fn pvh_start_info_locates_the_memory_map() {
        let info = pvh_start_info(1, 0x7000, 3);
        let memmap = parse_pvh_start_info(&info).unwrap();
        assert_eq!(
            memmap,
            PvhMemmap {
                address: 0x7000,
                entries: 3
            }
        );
        assert_eq!(memmap.size(), 72);
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
    fn ranges_beyond_capacity_are_counted() {
        let table: Vec<u8> = (0..MAX_REGIONS as u64 + 3)
            .flat_map(|i| entry(i << 20, 0x1000, 1))
            .collect();
        let map = parse_pvh_memmap(&table).unwrap();
        assert_eq!(map.regions().len(), MAX_REGIONS);
        assert_eq!(map.dropped, 3);
    }
}
