//! The board's RAM as a short list of address ranges, read from the device
//! tree the firmware (or QEMU) passes in `x0`: every `memory` node's `reg`,
//! less the `/memreserve/` entries, the `reg` of every `/reserved-memory`
//! child and the device tree blob itself (the boards read it again once the
//! heap is up). It is built before the heap exists, so it lives in a fixed
//! array.

use core::ops::Range;

/// Ranges a [`RamRanges`] holds at most; a split beyond that drops the
/// smaller piece (real boards have two or three banks and a few holes).
pub const MAX_RANGES: usize = 16;

/// Up to [`MAX_RANGES`] disjoint, non-empty address ranges.
#[derive(Clone, Debug)]
pub struct RamRanges {
    ranges: [Range<u64>; MAX_RANGES],
    len: usize,
}

impl Default for RamRanges {
    fn default() -> Self {
        Self::new()
    }
}

impl RamRanges {
    /// No RAM.
    pub const fn new() -> Self {
        Self {
            ranges: [const { 0..0 }; MAX_RANGES],
            len: 0,
        }
    }

    /// One range of RAM.
    pub fn single(range: Range<u64>) -> Self {
        let mut ranges = Self::new();
        ranges.add(range);
        ranges
    }

    /// Adds `range` (empty ones are ignored); false if the list is full.
    /// What it overlaps is taken out of the ranges already there first, so
    /// that overlapping memory nodes never hand the heap a byte twice.
    pub fn add(&mut self, range: Range<u64>) -> bool {
        if range.is_empty() {
            return true;
        }
        self.remove(range.clone());
        if self.len == MAX_RANGES {
            return false;
        }
        self.ranges[self.len] = range;
        self.len += 1;
        true
    }

    /// Takes `hole` out of every range, splitting a range it lies inside.
    pub fn remove(&mut self, hole: Range<u64>) {
        let mut i = 0;
        while i < self.len {
            let range = self.ranges[i].clone();
            if hole.end <= range.start || range.end <= hole.start || hole.is_empty() {
                i += 1;
                continue;
            }
            let below = range.start..hole.start.max(range.start);
            let above = hole.end.min(range.end)..range.end;
            let (keep, other) = if below.end - below.start >= above.end - above.start {
                (below, above)
            } else {
                (above, below)
            };
            if keep.is_empty() {
                self.ranges[i..self.len].rotate_left(1);
                self.len -= 1;
                continue;
            }
            self.ranges[i] = keep;
            // The other piece goes last (and is lost if the list is full).
            self.add(other);
            i += 1;
        }
    }

    /// Clips every range to `limit`, dropping what lies outside.
    pub fn clip(&mut self, limit: Range<u64>) {
        self.remove(0..limit.start);
        self.remove(limit.end..u64::MAX);
    }

    /// Keeps only whole `align`-sized blocks of RAM at or above `from`; the
    /// RAM below `from` stays as it is.
    pub fn align_above(&mut self, from: u64, align: u64) {
        let mut high = RamRanges::new();
        for range in self.iter().filter(|range| range.end > from) {
            let start = range.start.max(from).next_multiple_of(align);
            let end = range.end / align * align;
            if start < end {
                high.add(start..end);
            }
        }
        self.remove(from..u64::MAX);
        for range in high.iter() {
            self.add(range.clone());
        }
    }

    /// The ranges, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Range<u64>> {
        self.ranges[..self.len].iter()
    }

    /// Number of ranges.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is no RAM at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes in all ranges.
    pub fn total(&self) -> u64 {
        self.iter().map(|r| r.end - r.start).sum()
    }

    /// From the lowest start to the highest end (empty without RAM).
    pub fn span(&self) -> Range<u64> {
        let start = self.iter().map(|r| r.start).min().unwrap_or(0);
        let end = self.iter().map(|r| r.end).max().unwrap_or(0);
        start..end
    }

    /// Whether `range` lies wholly inside one of the ranges.
    pub fn contains(&self, range: &Range<u64>) -> bool {
        self.iter()
            .any(|r| r.start <= range.start && range.end <= r.end)
    }
}

/// What the device tree says about RAM.
#[derive(Clone, Debug)]
pub struct DeviceTreeMemory {
    /// Every `memory` node's ranges: the installed RAM the ARM sees.
    pub installed: RamRanges,
    /// [`DeviceTreeMemory::installed`] less the reserved regions and the
    /// device tree blob: what the kernel may use.
    pub usable: RamRanges,
    /// Bytes the reserved regions took out of the installed RAM.
    pub reserved_bytes: u64,
}

/// Why the device tree gave no memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceTreeError {
    /// No pointer, or no valid blob behind it.
    NoDeviceTree,
    /// The blob has no `memory` node with a `reg`.
    NoMemory,
}

impl core::fmt::Display for DeviceTreeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            DeviceTreeError::NoDeviceTree => "no valid device tree",
            DeviceTreeError::NoMemory => "no memory node in the device tree",
        })
    }
}

/// Reads the RAM of the device tree at `dtb`.
///
/// # Safety
///
/// `dtb` is 0 or points to readable memory (RAM where the firmware put the
/// blob); `fdt::Fdt::from_ptr` checks the header before trusting its size.
pub unsafe fn from_device_tree(dtb: usize) -> Result<DeviceTreeMemory, DeviceTreeError> {
    if dtb == 0 {
        return Err(DeviceTreeError::NoDeviceTree);
    }
    // SAFETY: the caller's contract; `from_ptr` validates the header.
    let fdt = unsafe { fdt::Fdt::from_ptr(dtb as *const u8) }
        .map_err(|_| DeviceTreeError::NoDeviceTree)?;
    let mut installed = RamRanges::new();
    // QEMU's raspi4b adds a second memory node for the RAM above 1 GiB, so
    // every node of type "memory" counts, not just the first.
    let memory_nodes = fdt.all_nodes().filter(|node| {
        node.property("device_type")
            .and_then(|p| p.as_str())
            .is_some_and(|t| t == "memory")
    });
    for node in memory_nodes {
        for region in node.reg().into_iter().flatten() {
            let start = region.starting_address as u64;
            let size = region.size.unwrap_or(0) as u64;
            installed.add(start..start.saturating_add(size));
        }
    }
    if installed.is_empty() {
        return Err(DeviceTreeError::NoMemory);
    }
    let mut usable = installed.clone();
    for reservation in fdt.memory_reservations() {
        let start = reservation.address() as u64;
        usable.remove(start..start.saturating_add(reservation.size() as u64));
    }
    if let Some(reserved) = fdt.find_node("/reserved-memory") {
        for child in reserved.children() {
            for region in child.reg().into_iter().flatten() {
                let start = region.starting_address as u64;
                usable.remove(start..start.saturating_add(region.size.unwrap_or(0) as u64));
            }
        }
    }
    let blob = dtb as u64;
    usable.remove(blob..blob + fdt.total_size() as u64);
    Ok(DeviceTreeMemory {
        reserved_bytes: installed.total() - usable.total(),
        installed,
        usable,
    })
}
