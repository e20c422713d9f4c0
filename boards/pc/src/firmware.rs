//! The ACPI tables on the running PC: the `acpi` crate's handler (tables
//! are mapped write-back, identity, on demand) and the board's reading of
//! them ([`tern_board_pc::platform`]).

use alloc::boxed::Box;
use core::ptr::NonNull;

use acpi::{AcpiHandler, PhysicalMapping};
use tern_board_pc::bootinfo::{RsdpSource, RSDP_MAX_LEN};
use tern_board_pc::pagetable::Cache;
use tern_board_pc::platform::{self, Platform, PlatformError};

use crate::paging;

/// Maps firmware tables for the `acpi` crate.
#[derive(Clone, Copy)]
pub struct TableMapper;

impl AcpiHandler for TableMapper {
    unsafe fn map_physical_region<T>(
        &self,
        address: usize,
        size: usize,
    ) -> PhysicalMapping<Self, T> {
        if let Err(error) = paging::map(address as u64, size as u64, Cache::WriteBack) {
            // The access below faults and dumps: the tables are unusable.
            crate::log::warn(format_args!(
                "ACPI table at {address:#x} not mapped: {error}"
            ));
        }
        // SAFETY: identity mapping: the table's physical address is its
        // address, now mapped; the `acpi` crate asked for `size` bytes of a
        // `T` there (the caller's contract).
        unsafe {
            PhysicalMapping::new(
                address,
                NonNull::new_unchecked(address as *mut T),
                size,
                size,
                *self,
            )
        }
    }

    fn unmap_physical_region<T>(_: &PhysicalMapping<Self, T>) {
        // Tables stay mapped: they are read again by later lookups.
    }
}

/// Reads the ACPI tables from the root pointer the loader passed.
pub fn read(rsdp: RsdpSource) -> Result<Platform, PlatformError> {
    let address = match rsdp {
        RsdpSource::Address(address) => address as usize,
        RsdpSource::Copy { bytes, .. } => {
            // The copy needs a stable address: leak it (36 bytes, once).
            let copy: &'static [u8; RSDP_MAX_LEN] = Box::leak(Box::new(bytes));
            copy.as_ptr() as usize
        }
    };
    // SAFETY: the address is the loader's RSDP (or the copy it passed);
    // TableMapper maps what the crate reads.
    unsafe { platform::read(TableMapper, address) }
}
