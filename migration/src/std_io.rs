//! `std::io` adapters (feature `std`): read checkpoints from files and sockets,
//! write them to files.

use crate::error::{ReadError, WriteError};
use crate::io::{Sink, Source};
use alloc::string::ToString;

/// A [`Source`] over any `std::io::Read` (wrap files in a `BufReader`).
pub struct ReadSource<R: std::io::Read>(pub R);

impl<R: std::io::Read> Source for ReadSource<R> {
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), ReadError> {
        self.0.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => ReadError::Truncated,
            _ => ReadError::Io(e.to_string()),
        })
    }
    fn at_end(&mut self) -> Result<bool, ReadError> {
        let mut b = [0u8; 1];
        loop {
            match self.0.read(&mut b) {
                Ok(n) => return Ok(n == 0),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ReadError::Io(e.to_string())),
            }
        }
    }
}

/// A [`Sink`] over any `std::io::Write` (wrap files in a `BufWriter`).
pub struct WriteSink<W: std::io::Write>(pub W);

impl<W: std::io::Write> Sink for WriteSink<W> {
    fn write_all(&mut self, buf: &[u8]) -> Result<(), WriteError> {
        self.0
            .write_all(buf)
            .map_err(|e| WriteError::Io(e.to_string()))
    }
}
