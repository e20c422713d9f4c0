//! Minimal byte source and sink traits, so the format works without `std::io`.

use crate::error::{ReadError, WriteError};
use alloc::vec::Vec;

/// Where a checkpoint is read from: a file, a socket, a byte slice.
pub trait Source {
    /// Fills `buf` completely or fails ([`ReadError::Truncated`] at end of input).
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), ReadError>;
    /// True when no byte is left (used to reject trailing garbage).
    fn at_end(&mut self) -> Result<bool, ReadError>;
}

/// Where a checkpoint is written to.
pub trait Sink {
    /// Writes all of `buf` or fails.
    fn write_all(&mut self, buf: &[u8]) -> Result<(), WriteError>;
}

impl Source for &[u8] {
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), ReadError> {
        if self.len() < buf.len() {
            return Err(ReadError::Truncated);
        }
        let (head, tail) = self.split_at(buf.len());
        buf.copy_from_slice(head);
        *self = tail;
        Ok(())
    }
    fn at_end(&mut self) -> Result<bool, ReadError> {
        Ok(self.is_empty())
    }
}

impl Sink for Vec<u8> {
    fn write_all(&mut self, buf: &[u8]) -> Result<(), WriteError> {
        self.try_reserve(buf.len())
            .map_err(|_| WriteError::OutOfMemory)?;
        self.extend_from_slice(buf);
        Ok(())
    }
}
