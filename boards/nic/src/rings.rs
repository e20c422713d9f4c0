//! The descriptor-ring bookkeeping the drivers share: one RX and one TX ring
//! of [`RING_SIZE`] 16-byte descriptors with a 2 KiB buffer per slot, the
//! driver's positions in them, and what happens to a frame once the
//! descriptor says it is there (copied out or dropped and counted). What a
//! descriptor looks like and how the card is told is each driver's.

use crate::{next, Dma, DmaRegion, Stats, TxError};

/// Descriptors per ring.
pub const RING_SIZE: usize = 256;
/// Bytes per packet buffer.
pub const BUFFER_SIZE: usize = 2048;
/// Bytes per descriptor (Intel legacy and advanced, Realtek).
pub const DESCRIPTOR_SIZE: usize = 16;
/// The longest frame sent (a 1500-byte MTU plus the header, no FCS).
pub const MAX_FRAME: usize = 1514;

/// What a written-back RX descriptor says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxDescriptor {
    /// The frame starts in this buffer.
    pub first: bool,
    /// The frame ends in this buffer.
    pub last: bool,
    /// The card flagged an error.
    pub error: bool,
    /// Bytes of frame data in the buffer (CRC excluded).
    pub length: usize,
}

/// Both rings, their buffers, and the driver's positions.
pub struct Rings<R> {
    /// The RX descriptors.
    pub rx_ring: R,
    /// The TX descriptors.
    pub tx_ring: R,
    rx_buffers: R,
    tx_buffers: R,
    rx_next: usize,
    rx_discarding: bool,
    tx_next: usize,
    tx_clean: usize,
    tx_in_flight: usize,
    stats: Stats,
}

impl<R: DmaRegion> Rings<R> {
    /// Allocates the rings (aligned to `ring_align`) and their buffers;
    /// `None` when `dma` runs out.
    pub fn allocate<D: Dma<Region = R>>(dma: &mut D, ring_align: usize) -> Option<Self> {
        let ring_bytes = RING_SIZE * DESCRIPTOR_SIZE;
        let buffer_bytes = RING_SIZE * BUFFER_SIZE;
        Some(Self {
            rx_ring: dma.allocate(ring_bytes, ring_align)?,
            tx_ring: dma.allocate(ring_bytes, ring_align)?,
            rx_buffers: dma.allocate(buffer_bytes, 4096)?,
            tx_buffers: dma.allocate(buffer_bytes, 4096)?,
            rx_next: 0,
            rx_discarding: false,
            tx_next: 0,
            tx_clean: 0,
            tx_in_flight: 0,
            stats: Stats::default(),
        })
    }

    /// The bus address of RX slot `slot`'s buffer.
    pub fn rx_buffer(&self, slot: usize) -> u64 {
        self.rx_buffers.phys() + (slot * BUFFER_SIZE) as u64
    }

    /// The RX slot the driver looks at next.
    pub fn rx_next(&self) -> usize {
        self.rx_next
    }

    /// Deals with the frame RX slot `rx_next()` holds, as its descriptor
    /// `d` says: copied into `buf` (its length returned) when it is whole,
    /// error-free and fits; otherwise dropped and counted once per frame (a
    /// frame over several buffers is skipped up to its last). The driver
    /// then gives the descriptor back and calls [`Rings::advance_rx`].
    pub fn take_rx(&mut self, d: RxDescriptor, buf: &mut [u8]) -> Option<usize> {
        let whole = d.first && d.last && !self.rx_discarding;
        self.rx_discarding = !d.last;
        let fits = d.length > 0 && d.length <= buf.len() && d.length <= BUFFER_SIZE;
        if whole && !d.error && fits {
            self.rx_buffers
                .read_bytes(self.rx_next * BUFFER_SIZE, &mut buf[..d.length]);
            self.stats.rx_frames += 1;
            return Some(d.length);
        }
        if d.last {
            self.stats.rx_errors += 1;
        }
        None
    }

    /// Moves to the next RX slot.
    pub fn advance_rx(&mut self) {
        self.rx_next = next(self.rx_next, RING_SIZE);
    }

    /// Takes back the TX slots the card has finished (`done` reads a slot's
    /// descriptor), oldest first; returns how many.
    pub fn reclaim_tx(&mut self, mut done: impl FnMut(&R, usize) -> bool) -> usize {
        let mut count = 0;
        while self.tx_in_flight > 0 && done(&self.tx_ring, self.tx_clean) {
            self.tx_clean = next(self.tx_clean, RING_SIZE);
            self.tx_in_flight -= 1;
            count += 1;
        }
        count
    }

    /// TX slots the card may still own.
    pub fn tx_in_flight(&self) -> usize {
        self.tx_in_flight
    }

    /// Copies `frame`, zero-padded to `min_len`, into the next TX slot's
    /// buffer and returns the slot, the buffer's bus address and the bytes
    /// to send; `capacity` slots may be in flight at once. The driver
    /// writes the descriptor, then calls [`Rings::commit_tx`].
    pub fn stage_tx(
        &mut self,
        frame: &[u8],
        min_len: usize,
        capacity: usize,
    ) -> Result<(usize, u64, usize), TxError> {
        if frame.is_empty() || frame.len() > MAX_FRAME {
            return Err(TxError::BadLength(frame.len()));
        }
        if self.tx_in_flight >= capacity {
            return Err(TxError::RingFull);
        }
        let slot = self.tx_next;
        let offset = slot * BUFFER_SIZE;
        self.tx_buffers.write_bytes(offset, frame);
        let wire = frame.len().max(min_len);
        if wire > frame.len() {
            let zeros = [0u8; 64];
            self.tx_buffers
                .write_bytes(offset + frame.len(), &zeros[..wire - frame.len()]);
        }
        Ok((slot, self.tx_buffers.phys() + offset as u64, wire))
    }

    /// The staged slot is the card's now; returns the next slot (Intel's
    /// new tail).
    pub fn commit_tx(&mut self) -> usize {
        self.tx_next = next(self.tx_next, RING_SIZE);
        self.tx_in_flight += 1;
        self.stats.tx_frames += 1;
        self.tx_next
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }
}
