//! Framing: each frame is a `u32` little-endian length, then that many bytes.

use crate::error::FrameError;
use alloc::vec::Vec;

/// Largest frame body accepted by default: a 64 KiB chunk plus its envelope,
/// with room for a large offer (a 1 GiB checkpoint in 64 KiB chunks lists
/// 16384 chunks of at most 43 encoded bytes each).
pub const MAX_FRAME: u32 = 1024 * 1024;

/// Appends `body` as one frame to `out`.
pub fn write_frame(body: &[u8], max: u32, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let len =
        u32::try_from(body.len())
            .ok()
            .filter(|&l| l <= max)
            .ok_or(FrameError::Oversized {
                len: body.len() as u64,
                max,
            })?;
    out.try_reserve(4 + body.len())
        .map_err(|_| FrameError::OutOfMemory)?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(body);
    Ok(())
}

/// Reassembles frames from a byte stream delivered in arbitrary pieces.
/// Memory is bounded by `max` + 4 bytes plus one push.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    max: u32,
}

impl FrameDecoder {
    /// A decoder refusing frames longer than `max` bytes.
    pub fn new(max: u32) -> Self {
        Self {
            buf: Vec::new(),
            max,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), FrameError> {
        self.buf
            .try_reserve(bytes.len())
            .map_err(|_| FrameError::OutOfMemory)?;
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// The next complete frame body, `Ok(None)` when more bytes are needed.
    /// An announced length above the maximum is an error before any allocation.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let Some(head) = self.buf.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_le_bytes(*head);
        if len > self.max {
            return Err(FrameError::Oversized {
                len: u64::from(len),
                max: self.max,
            });
        }
        let end = 4 + len as usize;
        if self.buf.len() < end {
            return Ok(None);
        }
        let body = self.buf[4..end].to_vec();
        self.buf.drain(..end);
        Ok(Some(body))
    }

    /// Call at end of stream: leftover bytes mean the peer cut a frame short.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated {
                have: self.buf.len() as u64,
            })
        }
    }
}
