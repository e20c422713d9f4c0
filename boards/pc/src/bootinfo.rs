//! The memory map handed over by the boot loader: PVH `hvm_start_info` or
//! the multiboot2 information structure.
//!
//! Both are read once, before the heap exists, into a fixed-size
//! [`MemoryMap`] of usable RAM ranges; after that the loader's structures may
//! be overwritten by the heap.

use core::fmt;
use core::ptr;

use crate::boot::MULTIBOOT2_MAGIC;

/// `hvm_start_info.magic` ("xEn3" with the high bit of the first byte set).
const PVH_START_MAGIC: u32 = 0x336e_c578;
/// E820 / multiboot2 type of ordinary usable RAM.
const RAM_TYPE: u32 = 1;
/// Multiboot2 information tag types.
const MB2_TAG_END: u32 = 0;
const MB2_TAG_MEMORY_MAP: u32 = 6;
/// Most usable ranges kept; firmware maps have a few dozen at most.
const MAX_REGIONS: usize = 64;

/// Which boot protocol started the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub enum Protocol {
    /// QEMU's `-kernel` through the PVH ELF note.
    Pvh,
    /// GRUB's `multiboot2` command.
    Multiboot2,
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
    /// The PVH start info predates memory maps (version 0) or has none.
    NoPvhMemoryMap,
    /// The multiboot2 information has no memory-map tag.
    NoMultiboot2MemoryMap,
    /// A multiboot2 tag or memory-map entry has an impossible size.
    MalformedMultiboot2,
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
            Self::NoPvhMemoryMap => f.write_str("PVH start info carries no memory map"),
            Self::NoMultiboot2MemoryMap => {
                f.write_str("multiboot2 information carries no memory map")
            }
            Self::MalformedMultiboot2 => f.write_str("malformed multiboot2 information"),
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
    fn len(&self) -> u64 {
        self.end - self.start
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
            .filter(|r| r.start < r.end)
            .max_by_key(Region::len)
    }
}

/// Reads the memory map from the boot information at `info`, choosing the
/// protocol by `magic` (EAX at entry).
///
/// # Safety
///
/// `info` must be EBX as the boot loader left it, still intact and mapped.
pub unsafe fn read(magic: u32, info: u32) -> Result<MemoryMap, BootInfoError> {
    let map = if magic == MULTIBOOT2_MAGIC {
        // SAFETY: the magic says EBX is a multiboot2 information structure.
        unsafe { read_multiboot2(u64::from(info))? }
    } else if info != 0 && {
        // SAFETY: PVH puts the start info at EBX; any other loader would
        // have set the multiboot2 magic, and low memory is identity-mapped.
        unsafe { read_u32(u64::from(info)) == PVH_START_MAGIC }
    } {
        // SAFETY: the start info's magic checked out.
        unsafe { read_pvh(u64::from(info))? }
    } else {
        return Err(BootInfoError::UnknownProtocol { magic, info });
    };
    if map.len == 0 {
        return Err(BootInfoError::NoUsableMemory);
    }
    Ok(map)
}

/// # Safety
///
/// `addr` must be mapped and readable for 4 bytes.
unsafe fn read_u32(addr: u64) -> u32 {
    // SAFETY: the caller guarantees the address is readable.
    unsafe { ptr::read_unaligned(addr as *const u32) }
}

/// # Safety
///
/// `addr` must be mapped and readable for 8 bytes.
unsafe fn read_u64(addr: u64) -> u64 {
    // SAFETY: the caller guarantees the address is readable.
    unsafe { ptr::read_unaligned(addr as *const u64) }
}

/// Reads `struct hvm_start_info` (Xen's `arch-x86/hvm/start_info.h`).
///
/// # Safety
///
/// `info` must point at a valid start info.
unsafe fn read_pvh(info: u64) -> Result<MemoryMap, BootInfoError> {
    // SAFETY: (the whole body) the start info and the memory map it points
    // to are valid by the caller's guarantee and the loader's contract.
    unsafe {
        let version = read_u32(info + 4);
        if version < 1 {
            return Err(BootInfoError::NoPvhMemoryMap);
        }
        let memmap = read_u64(info + 0x28);
        let entries = read_u32(info + 0x30);
        if memmap == 0 || entries == 0 {
            return Err(BootInfoError::NoPvhMemoryMap);
        }
        let mut map = MemoryMap::new(Protocol::Pvh);
        for i in 0..u64::from(entries) {
            // struct hvm_memmap_table_entry { u64 addr, size; u32 type, reserved; }
            let entry = memmap + i * 24;
            map.push(read_u64(entry), read_u64(entry + 8), read_u32(entry + 16));
        }
        Ok(map)
    }
}

/// Reads the memory-map tag of a multiboot2 information structure.
///
/// # Safety
///
/// `info` must point at a valid multiboot2 information structure.
unsafe fn read_multiboot2(info: u64) -> Result<MemoryMap, BootInfoError> {
    // SAFETY: (the whole body) every read stays inside `total_size` bytes of
    // the structure the caller vouches for.
    unsafe {
        let total = u64::from(read_u32(info));
        let end = info + total;
        let mut tag = info + 8;
        while tag + 8 <= end {
            let kind = read_u32(tag);
            let size = u64::from(read_u32(tag + 4));
            if size < 8 || tag + size > end {
                return Err(BootInfoError::MalformedMultiboot2);
            }
            match kind {
                MB2_TAG_END => break,
                MB2_TAG_MEMORY_MAP => {
                    let entry_size = u64::from(read_u32(tag + 8));
                    if entry_size < 24 {
                        return Err(BootInfoError::MalformedMultiboot2);
                    }
                    let mut map = MemoryMap::new(Protocol::Multiboot2);
                    let mut entry = tag + 16;
                    while entry + entry_size <= tag + size {
                        map.push(read_u64(entry), read_u64(entry + 8), read_u32(entry + 16));
                        entry += entry_size;
                    }
                    return Ok(map);
                }
                _ => {}
            }
            // Tags are 8-byte aligned.
            tag += (size + 7) & !7;
        }
        Err(BootInfoError::NoMultiboot2MemoryMap)
    }
}
