//! Building x86_64 4-level page tables for an identity-mapped kernel: RAM
//! write-back, device registers uncached, framebuffers write-combining, each
//! range with the largest pages that fit (1 GiB where the CPU has them,
//! 2 MiB, 4 KiB at unaligned edges), huge pages split when a later mapping
//! needs a different attribute inside them.
//!
//! The tables live in physical memory that a [`TableMemory`] hands out and
//! gives access to: the kernel's heap (identity-mapped) on the PC, plain
//! vectors in the host tests. Nothing here touches CR3 or the TLB: the
//! board loads the root and flushes.
//!
//! Cache attributes are chosen through the page-attribute table: the board
//! programs PAT entry 1 as write-combining ([`PAT_VALUE`]); entries 0 (WB)
//! and 3 (UC) keep their power-on meaning.

use core::fmt;

/// Entries per table.
pub const ENTRIES: usize = 512;
/// Bytes of a small page.
pub const PAGE_4K: u64 = 4096;
/// Bytes of a large page.
pub const PAGE_2M: u64 = 2 << 20;
/// Bytes of a huge page.
pub const PAGE_1G: u64 = 1 << 30;

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const PWT: u64 = 1 << 3;
const PCD: u64 = 1 << 4;
/// Page size bit of a PDPT or PD entry (a 1 GiB or 2 MiB leaf).
const HUGE: u64 = 1 << 7;
/// Physical address bits of an entry (bits 12..52).
const ADDRESS: u64 = 0x000f_ffff_ffff_f000;
/// The attribute bits a leaf's meaning depends on (besides its size).
const ATTRIBUTES: u64 = PRESENT | WRITABLE | PWT | PCD;

/// The IA32_PAT value the board writes: PA0 WB, PA1 WC (instead of WT),
/// PA2 UC-, PA3 UC, and the same again for PA4..7.
pub const PAT_VALUE: u64 = 0x0007_0106_0007_0106;

/// How the CPU caches a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cache {
    /// Ordinary RAM.
    WriteBack,
    /// Framebuffers: writes are combined, reads uncached (PAT entry 1).
    WriteCombining,
    /// Device registers: every access goes to the device in order.
    Uncached,
}

impl Cache {
    /// The PWT/PCD bits selecting this type's PAT entry (0, 1 or 3).
    fn bits(self) -> u64 {
        match self {
            Cache::WriteBack => 0,
            Cache::WriteCombining => PWT,
            Cache::Uncached => PWT | PCD,
        }
    }

    fn from_bits(bits: u64) -> Self {
        match bits & (PWT | PCD) {
            0 => Cache::WriteBack,
            PWT => Cache::WriteCombining,
            _ => Cache::Uncached,
        }
    }
}

/// Why a range could not be mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// No memory for another page table.
    OutOfTables,
    /// The range wraps around or lies beyond the physical address width.
    BadRange {
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
    },
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfTables => f.write_str("no memory left for page tables"),
            Self::BadRange { start, end } => write!(
                f,
                "{start:#x}..{end:#x} is beyond the CPU's physical address width"
            ),
        }
    }
}

/// Where page tables live: zeroed 4 KiB tables by physical address.
pub trait TableMemory {
    /// A new zeroed table's physical address, `None` when out of memory.
    fn allocate(&mut self) -> Option<u64>;
    /// The table at physical address `phys` (one [`allocate`]d before, or
    /// the root).
    ///
    /// [`allocate`]: TableMemory::allocate
    fn table(&mut self, phys: u64) -> &mut [u64; ENTRIES];
}

/// An identity map under construction or in use.
pub struct PageTables<M> {
    memory: M,
    root: u64,
    /// The CPU has 1 GiB pages (CPUID 0x8000_0001 EDX bit 26).
    huge_1g: bool,
    /// One past the highest physical address the CPU can reach.
    limit: u64,
}

/// The table level an entry sits in, with the bytes one entry covers.
#[derive(Clone, Copy)]
enum Level {
    Pml4,
    Pdpt,
    Pd,
    Pt,
}

impl Level {
    fn span(self) -> u64 {
        match self {
            Level::Pml4 => 512 * PAGE_1G,
            Level::Pdpt => PAGE_1G,
            Level::Pd => PAGE_2M,
            Level::Pt => PAGE_4K,
        }
    }

    fn index(self, address: u64) -> usize {
        let shift = match self {
            Level::Pml4 => 39,
            Level::Pdpt => 30,
            Level::Pd => 21,
            Level::Pt => 12,
        };
        ((address >> shift) & 511) as usize
    }

    fn next(self) -> Option<Level> {
        match self {
            Level::Pml4 => Some(Level::Pdpt),
            Level::Pdpt => Some(Level::Pd),
            Level::Pd => Some(Level::Pt),
            Level::Pt => None,
        }
    }

    /// The bits of a leaf entry at this level.
    fn leaf(self, address: u64, cache: Cache) -> u64 {
        let pat_free = PRESENT | WRITABLE | cache.bits() | address;
        match self {
            Level::Pt => pat_free,
            _ => pat_free | HUGE,
        }
    }
}

/// What a lookup found for an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The physical address (the same, for an identity map).
    pub phys: u64,
    /// The bytes of the page holding it.
    pub page_size: u64,
    /// Its cache type.
    pub cache: Cache,
}

impl<M: TableMemory> PageTables<M> {
    /// Empty tables (a fresh root) in `memory`, for a CPU reaching
    /// `phys_bits` bits of physical address, with or without 1 GiB pages.
    pub fn new(mut memory: M, phys_bits: u8, huge_1g: bool) -> Result<Self, MapError> {
        let root = memory.allocate().ok_or(MapError::OutOfTables)?;
        Ok(Self {
            memory,
            root,
            huge_1g,
            limit: 1u64 << phys_bits.min(52),
        })
    }

    /// The root table's physical address (CR3).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Identity-maps `[start, end)`, widened to whole 4 KiB pages, writable
    /// with `cache`. Parts already mapped get the new attribute.
    pub fn map(&mut self, start: u64, end: u64, cache: Cache) -> Result<(), MapError> {
        let (start, end) = self.page_range(start, end)?;
        self.walk(self.root, Level::Pml4, start, end, Some(cache))
    }

    /// Removes the mapping of `[start, end)` (widened to whole 4 KiB pages):
    /// accesses there fault.
    pub fn unmap(&mut self, start: u64, end: u64) -> Result<(), MapError> {
        let (start, end) = self.page_range(start, end)?;
        self.walk(self.root, Level::Pml4, start, end, None)
    }

    fn page_range(&self, start: u64, end: u64) -> Result<(u64, u64), MapError> {
        let bad = MapError::BadRange { start, end };
        let aligned_end = end.checked_next_multiple_of(PAGE_4K).ok_or(bad)?;
        if start >= end || aligned_end > self.limit {
            return Err(bad);
        }
        Ok((start & !(PAGE_4K - 1), aligned_end))
    }

    /// Sets (`Some`) or clears (`None`) the leaves covering `[start, end)`
    /// below the table `table` of `level`.
    fn walk(
        &mut self,
        table: u64,
        level: Level,
        start: u64,
        end: u64,
        cache: Option<Cache>,
    ) -> Result<(), MapError> {
        let span = level.span();
        let mut address = start;
        while address < end {
            let entry_start = address & !(span - 1);
            let entry_end = entry_start + span;
            let chunk_end = end.min(entry_end);
            let whole = address == entry_start && chunk_end == entry_end;
            let index = level.index(address);
            let entry = self.memory.table(table)[index];
            let leaf_allowed = match level {
                Level::Pt | Level::Pd => true,
                Level::Pdpt => self.huge_1g,
                Level::Pml4 => false,
            };
            let huge_leaf = entry & PRESENT != 0
                && (matches!(level, Level::Pt)
                    || (entry & HUGE != 0 && !matches!(level, Level::Pml4)));
            if huge_leaf && cache == Some(Cache::from_bits(entry)) {
                // Already mapped as asked: keep the larger page.
            } else if whole && leaf_allowed {
                self.memory.table(table)[index] =
                    cache.map_or(0, |cache| level.leaf(entry_start, cache));
            } else if let Some(next) = level.next() {
                // Nothing mapped there: nothing to unmap.
                if cache.is_some() || entry & PRESENT != 0 {
                    let child = self.child(table, level, index, entry, entry_start)?;
                    self.walk(child, next, address, chunk_end, cache)?;
                }
            }
            address = chunk_end;
        }
        Ok(())
    }

    /// The table below entry `index` of `table` (at `level`, covering from
    /// `entry_start`), made if missing and split from a huge leaf if the
    /// entry is one.
    fn child(
        &mut self,
        table: u64,
        level: Level,
        index: usize,
        entry: u64,
        entry_start: u64,
    ) -> Result<u64, MapError> {
        if entry & PRESENT != 0 && (entry & HUGE == 0 || matches!(level, Level::Pml4)) {
            return Ok(entry & ADDRESS);
        }
        let child = self.memory.allocate().ok_or(MapError::OutOfTables)?;
        if entry & PRESENT != 0 {
            // A huge leaf: the new table repeats it in smaller pages.
            let cache = Cache::from_bits(entry);
            let next = level.next().unwrap_or(Level::Pt);
            let step = next.span();
            let new = self.memory.table(child);
            for (i, slot) in new.iter_mut().enumerate() {
                *slot = next.leaf(entry_start + i as u64 * step, cache);
            }
        }
        self.memory.table(table)[index] = child | PRESENT | WRITABLE;
        Ok(child)
    }

    /// How `address` is mapped, `None` when it is not.
    pub fn translate(&mut self, address: u64) -> Option<Translation> {
        let mut table = self.root;
        let mut level = Level::Pml4;
        loop {
            let entry = self.memory.table(table)[level.index(address)];
            if entry & PRESENT == 0 {
                return None;
            }
            let leaf =
                matches!(level, Level::Pt) || (entry & HUGE != 0 && !matches!(level, Level::Pml4));
            if leaf {
                let span = level.span();
                return Some(Translation {
                    phys: (entry & ADDRESS & !(span - 1)) | (address & (span - 1)),
                    page_size: span,
                    cache: Cache::from_bits(entry & ATTRIBUTES),
                });
            }
            table = entry & ADDRESS;
            level = level.next()?;
        }
    }

    /// The table memory, to hand back or inspect.
    pub fn memory_mut(&mut self) -> &mut M {
        &mut self.memory
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// PAT bit of a 4 KiB entry, and of a huge leaf: never set (entries 0,
    /// 1 and 3 are enough).
    const PAT_4K: u64 = 1 << 7;
    const PAT_HUGE: u64 = 1 << 12;

    /// Tables in a map from made-up physical addresses, with a budget.
    struct Tables {
        tables: HashMap<u64, Box<[u64; ENTRIES]>>,
        next: u64,
        budget: usize,
    }

    impl Tables {
        fn new(budget: usize) -> Self {
            Self {
                tables: HashMap::new(),
                next: 0x10_0000,
                budget,
            }
        }
    }

    impl TableMemory for Tables {
        fn allocate(&mut self) -> Option<u64> {
            self.budget = self.budget.checked_sub(1)?;
            let phys = self.next;
            self.next += PAGE_4K;
            self.tables.insert(phys, Box::new([0; ENTRIES]));
            Some(phys)
        }

        fn table(&mut self, phys: u64) -> &mut [u64; ENTRIES] {
            self.tables.get_mut(&phys).expect("a table")
        }
    }

    fn tables(huge_1g: bool) -> PageTables<Tables> {
        PageTables::new(Tables::new(1000), 46, huge_1g).unwrap()
    }

    fn at(t: &mut PageTables<Tables>, address: u64) -> Option<(u64, Cache)> {
        t.translate(address).map(|tr| {
            assert_eq!(tr.phys, address, "identity");
            (tr.page_size, tr.cache)
        })
    }

    #[test]
    fn ram_gets_the_largest_pages_that_fit() {
        let mut t = tables(true);
        // 1 MiB .. 6.5 GiB + 12 KiB: 4 KiB up to 2 MiB, 2 MiB pages up to
        // 1 GiB, 1 GiB pages, 2 MiB pages, then 4 KiB at the end.
        let end = 6 * PAGE_1G + PAGE_1G / 2 + 3 * PAGE_4K;
        t.map(0x10_0000, end, Cache::WriteBack).unwrap();
        assert_eq!(at(&mut t, 0xf_f000), None);
        assert_eq!(at(&mut t, 0x10_0000), Some((PAGE_4K, Cache::WriteBack)));
        assert_eq!(at(&mut t, PAGE_2M), Some((PAGE_2M, Cache::WriteBack)));
        assert_eq!(at(&mut t, PAGE_1G), Some((PAGE_1G, Cache::WriteBack)));
        assert_eq!(
            at(&mut t, 5 * PAGE_1G + 7),
            Some((PAGE_1G, Cache::WriteBack))
        );
        assert_eq!(at(&mut t, 6 * PAGE_1G), Some((PAGE_2M, Cache::WriteBack)));
        assert_eq!(at(&mut t, end - 1), Some((PAGE_4K, Cache::WriteBack)));
        assert_eq!(at(&mut t, end), None);
        // Without 1 GiB pages the middle is 2 MiB pages.
        let mut t = tables(false);
        t.map(0, 4 * PAGE_1G, Cache::WriteBack).unwrap();
        assert_eq!(at(&mut t, 3 * PAGE_1G), Some((PAGE_2M, Cache::WriteBack)));
    }

    #[test]
    fn a_device_inside_a_huge_page_splits_it_and_keeps_the_rest() {
        let mut t = tables(true);
        t.map(0, 4 * PAGE_1G, Cache::WriteBack).unwrap();
        // A 16 KiB register window at 0xfebf_0000, uncached.
        t.map(0xfebf_0000, 0xfebf_4000, Cache::Uncached).unwrap();
        assert_eq!(at(&mut t, 0xfebf_0000), Some((PAGE_4K, Cache::Uncached)));
        assert_eq!(at(&mut t, 0xfebf_3fff), Some((PAGE_4K, Cache::Uncached)));
        assert_eq!(at(&mut t, 0xfebf_4000), Some((PAGE_4K, Cache::WriteBack)));
        assert_eq!(at(&mut t, 0xfeaf_ffff), Some((PAGE_4K, Cache::WriteBack)));
        assert_eq!(at(&mut t, 0xfe80_0000), Some((PAGE_2M, Cache::WriteBack)));
        assert_eq!(
            at(&mut t, 0xc000_0000 - 1),
            Some((PAGE_1G, Cache::WriteBack))
        );
        // A framebuffer, write-combining, above 4 GiB where nothing was.
        t.map(0x80_0000_0000, 0x80_0040_0000, Cache::WriteCombining)
            .unwrap();
        assert_eq!(
            at(&mut t, 0x80_0020_0000),
            Some((PAGE_2M, Cache::WriteCombining))
        );
    }

    #[test]
    fn mapping_again_with_the_same_attribute_keeps_huge_pages() {
        let mut t = tables(true);
        t.map(0, 2 * PAGE_1G, Cache::WriteBack).unwrap();
        let before = t.memory_mut().budget;
        // An ACPI table inside RAM, mapped again write-back.
        t.map(0x7ffe_1000, 0x7ffe_1100, Cache::WriteBack).unwrap();
        assert_eq!(at(&mut t, 0x7ffe_1000), Some((PAGE_1G, Cache::WriteBack)));
        assert_eq!(t.memory_mut().budget, before);
    }

    #[test]
    fn unmapping_a_guard_page_leaves_its_neighbours() {
        let mut t = tables(false);
        t.map(0, PAGE_1G, Cache::WriteBack).unwrap();
        t.unmap(0x20_3000, 0x20_3001).unwrap();
        assert_eq!(at(&mut t, 0x20_3000), None);
        assert_eq!(at(&mut t, 0x20_2fff), Some((PAGE_4K, Cache::WriteBack)));
        assert_eq!(at(&mut t, 0x20_4000), Some((PAGE_4K, Cache::WriteBack)));
        assert_eq!(at(&mut t, 0x40_0000), Some((PAGE_2M, Cache::WriteBack)));
        // Unmapping where nothing is mapped allocates nothing.
        let before = t.memory_mut().budget;
        t.unmap(0x100_0000_0000, 0x100_4000_0000).unwrap();
        assert_eq!(t.memory_mut().budget, before);
    }

    #[test]
    fn bad_ranges_and_exhaustion_are_errors() {
        let mut t = tables(false);
        assert_eq!(
            t.map(5, 5, Cache::WriteBack),
            Err(MapError::BadRange { start: 5, end: 5 })
        );
        assert!(matches!(
            t.map(1 << 46, (1 << 46) + 1, Cache::Uncached),
            Err(MapError::BadRange { .. })
        ));
        assert!(matches!(
            t.map(u64::MAX - 10, u64::MAX, Cache::Uncached),
            Err(MapError::BadRange { .. })
        ));
        let mut small = PageTables::new(Tables::new(3), 46, false).unwrap();
        // Root + PDPT + PD fit, the PT for a 4 KiB page does not.
        assert_eq!(
            small.map(0x1000, 0x2000, Cache::WriteBack),
            Err(MapError::OutOfTables)
        );
    }

    #[test]
    fn entries_use_the_pat_entries_the_board_programs() {
        let mut t = tables(false);
        t.map(0, PAGE_2M, Cache::Uncached).unwrap();
        t.map(PAGE_2M, PAGE_2M + PAGE_4K, Cache::WriteCombining)
            .unwrap();
        let pml4 = t.root();
        let pdpt = t.memory_mut().table(pml4)[0] & ADDRESS;
        let pd = t.memory_mut().table(pdpt)[0] & ADDRESS;
        let uc = t.memory_mut().table(pd)[0];
        assert_eq!(uc & (PWT | PCD | HUGE | PAT_HUGE), PWT | PCD | HUGE);
        let pt = t.memory_mut().table(pd)[1] & ADDRESS;
        let wc = t.memory_mut().table(pt)[0];
        assert_eq!(wc & (PWT | PCD | PAT_4K), PWT);
        // PAT entry 1 is WC (1), 3 is UC (0), 0 is WB (6).
        assert_eq!((PAT_VALUE >> 8) & 7, 1);
        assert_eq!((PAT_VALUE >> 24) & 7, 0);
        assert_eq!(PAT_VALUE & 7, 6);
    }
}
