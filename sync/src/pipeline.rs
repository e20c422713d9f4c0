//! Overlapping compression with sending: while chunk k is on the wire, chunk k+1 is
//! being compressed. In the kernel the sender drives [`Pipeline`] (it has no threads:
//! it compresses when the NIC queue has room and sends when a frame is ready); on the
//! host sync-lab runs the same schedule with two threads.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::ops::Range;

/// Splits a buffer into chunks and tracks which are compressed, queued and sent,
/// allowing at most `depth` compressed chunks to wait for the wire.
#[derive(Clone, Debug)]
pub struct Pipeline {
    len: usize,
    chunk: usize,
    depth: usize,
    next_compress: usize,
    ready: VecDeque<(usize, Vec<u8>)>,
    sending: Option<usize>,
    sent: usize,
}

impl Pipeline {
    /// A pipeline over `len` bytes in chunks of `chunk` bytes (at least 1) with up to
    /// `depth` (at least 1) compressed chunks buffered.
    pub fn new(len: usize, chunk: usize, depth: usize) -> Self {
        Pipeline {
            len,
            chunk: chunk.max(1),
            depth: depth.max(1),
            next_compress: 0,
            ready: VecDeque::new(),
            sending: None,
            sent: 0,
        }
    }

    /// Number of chunks.
    pub fn chunks(&self) -> usize {
        self.len.div_ceil(self.chunk)
    }

    /// Byte range of chunk `i`.
    pub fn range(&self, i: usize) -> Range<usize> {
        let start = (i * self.chunk).min(self.len);
        start..(start + self.chunk).min(self.len)
    }

    /// The next chunk to compress, if there is one and the buffer has room.
    pub fn next_compress(&self) -> Option<(usize, Range<usize>)> {
        (self.next_compress < self.chunks() && self.ready.len() < self.depth)
            .then(|| (self.next_compress, self.range(self.next_compress)))
    }

    /// Hands over the compressed frame of the chunk returned by [`Pipeline::next_compress`].
    pub fn compressed(&mut self, frame: Vec<u8>) {
        self.ready.push_back((self.next_compress, frame));
        self.next_compress += 1;
    }

    /// Takes the next frame to put on the wire, if the wire is free and one is ready.
    pub fn next_send(&mut self) -> Option<(usize, Vec<u8>)> {
        if self.sending.is_some() {
            return None;
        }
        let (i, f) = self.ready.pop_front()?;
        self.sending = Some(i);
        Some((i, f))
    }

    /// Marks the frame in flight as delivered.
    pub fn sent(&mut self) {
        if self.sending.take().is_some() {
            self.sent += 1;
        }
    }

    /// True once every chunk has been delivered.
    pub fn is_done(&self) -> bool {
        self.sent == self.chunks()
    }
}

/// Completion time of a two-stage pipeline (compress, then send) over chunks with the
/// given per-chunk times and an unbounded buffer: chunk k's send starts when both its
/// compression and chunk k−1's send have finished. The serial time is the sum of all.
pub fn pipelined_time(compress_s: &[f64], send_s: &[f64]) -> f64 {
    let mut comp_done = 0.0;
    let mut send_done: f64 = 0.0;
    for (c, s) in compress_s.iter().zip(send_s) {
        comp_done += c;
        send_done = send_done.max(comp_done) + s;
    }
    send_done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_delivers_every_chunk_in_order_with_bounded_buffer() {
        let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let mut p = Pipeline::new(data.len(), 300, 1);
        assert_eq!(p.chunks(), 4);
        let mut out = Vec::new();
        while !p.is_done() {
            if let Some((_, r)) = p.next_compress() {
                p.compressed(tern_codec::encode_frame(tern_codec::Codec::Lz4, &data[r]));
                // Buffer of one: no second compression before a send.
                assert!(p.next_compress().is_none());
            }
            if let Some((_, f)) = p.next_send() {
                out.extend(tern_codec::decode_frame(&f, 300).unwrap());
                p.sent();
            }
        }
        assert_eq!(out, data);
    }

    #[test]
    fn pipelined_time_overlaps_the_stages() {
        // Compress 1 s, send 2 s per chunk, 3 chunks: 1 + 3·2 = 7 s (serial: 9 s).
        assert_eq!(pipelined_time(&[1.0; 3], &[2.0; 3]), 7.0);
        // Compression-bound: 3·2 + 1 = 7 s.
        assert_eq!(pipelined_time(&[2.0; 3], &[1.0; 3]), 7.0);
    }
}
