//! The virtio-net driver: `virtio-drivers`' transports and virtqueues, with
//! the receive offloads and the non-blocking transmit its own `VirtIONet`
//! lacks.
//!
//! `virtio-drivers` 0.13 negotiates a fixed feature set without checksum or
//! segmentation offloads, and its `send` waits until the device has consumed
//! each frame. Under QEMU that makes every frame, and every ACK a receiver
//! sends, a round trip through the emulator. This driver:
//!
//! - negotiates `GUEST_CSUM` and `GUEST_TSO4` when the device offers them:
//!   the host hands over a TCP stream's segments merged into frames of up
//!   to 64 KiB, with checksums it vouches for ([`RxChecksum::Trusted`]), so
//!   the kernel handles one frame where it handled up to 44;
//! - takes mergeable receive buffers (`MRG_RXBUF`): a frame fills as many
//!   page-sized buffers as it needs, so the ring holds 256 small frames or
//!   16 merged ones in [`RX_MEMORY`];
//! - queues frames to send and takes their buffers back for the next ones
//!   once the device has used them, without waiting.
//!
//! The node still sends frames of at most 1514 bytes with checksums computed
//! by smoltcp (no transmit offloads: smoltcp cannot leave a partial
//! checksum for the device to finish).

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

use bitflags::bitflags;
use tern_hal::{NetDevice, NetError, Received, RxChecksum};
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::Transport;

use crate::virtio::HeapHal;

/// Receive virtqueue length (QEMU's devices take up to 256).
const RX_QUEUE_SIZE: usize = 256;
/// Transmit virtqueue length.
const TX_QUEUE_SIZE: usize = 128;
/// The receive queue's index.
const RX_QUEUE: u16 = 0;
/// The transmit queue's index.
const TX_QUEUE: u16 = 1;
/// The longest Ethernet frame (without FCS) the node sends: a 1500-byte MTU.
const MAX_FRAME_LEN: usize = 1514;
/// The longest merged frame large receive hands over: an IPv4 packet of
/// 65535 bytes behind an Ethernet header (and a VLAN tag).
const MAX_MERGED_LEN: usize = 65535 + 18;
/// Memory the receive buffers may take.
const RX_MEMORY: usize = 1 << 20;
/// One mergeable receive buffer.
const MERGEABLE_BUFFER_LEN: usize = 4096;

bitflags! {
    /// The feature bits this driver knows (virtio 1.2, §5.1.3).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct Features: u64 {
        /// The device checks (or trusts) received checksums.
        const GUEST_CSUM = 1 << 1;
        /// The device has a MAC address in its configuration.
        const MAC = 1 << 5;
        /// The device may hand over merged TCP/IPv4 segments.
        const GUEST_TSO4 = 1 << 7;
        /// A received frame may span several buffers.
        const MRG_RXBUF = 1 << 15;
        /// Notifications suppressed by ring indices.
        const RING_EVENT_IDX = 1 << 29;
        /// A virtio 1.0 (not legacy) device.
        const VERSION_1 = 1 << 32;
    }
}

/// `flags` of a received header: the checksum is partial (the frame comes
/// from the host's memory, where it was never corrupted by a wire).
const HDR_NEEDS_CSUM: u8 = 1;
/// `flags` of a received header: the device checked the checksum.
const HDR_DATA_VALID: u8 = 2;

/// A virtio-net device on any transport, as a [`NetDevice`].
pub struct VirtioNet<T: Transport> {
    transport: T,
    mac: [u8; 6],
    rx: VirtQueue<HeapHal, RX_QUEUE_SIZE>,
    tx: VirtQueue<HeapHal, TX_QUEUE_SIZE>,
    /// The buffers the device holds for receiving, by the token (head
    /// descriptor) the queue gave each.
    rx_buffers: Vec<Option<Box<[u8]>>>,
    /// The frames the device has not sent yet, by token, with the length
    /// handed to it.
    tx_buffers: Vec<Option<(Box<[u8]>, usize)>>,
    /// Transmit buffers the device is done with, for the next frames.
    tx_free: Vec<Box<[u8]>>,
    /// Bytes of the virtio-net header before each frame (12, or 10 for a
    /// legacy device without mergeable buffers).
    header_len: usize,
    /// Whether a frame may span several receive buffers.
    mergeable: bool,
    /// The longest frame a receive buffer holds.
    receive_len: usize,
}

// SAFETY: the kernel is single-core and the device is only ever used from
// the run loop (never from an interrupt handler), so moving it between
// "threads" cannot race on the transport's registers or the rings.
unsafe impl<T: Transport> Send for VirtioNet<T> {}

impl<T: Transport> VirtioNet<T> {
    /// Initialises the device behind `transport` and fills its receive
    /// ring; `None` (after printing why through defmt) when it refuses.
    pub fn new(mut transport: T) -> Option<Self> {
        let offered = Features::GUEST_CSUM
            | Features::MAC
            | Features::GUEST_TSO4
            | Features::MRG_RXBUF
            | Features::RING_EVENT_IDX
            | Features::VERSION_1;
        let features = transport.begin_init(offered);
        // Merged segments come with trusted checksums only.
        let large_receive = features.contains(Features::GUEST_TSO4 | Features::GUEST_CSUM);
        let event_idx = features.contains(Features::RING_EVENT_IDX);
        let queues = VirtQueue::new(&mut transport, RX_QUEUE, false, event_idx).and_then(|rx| {
            VirtQueue::new(&mut transport, TX_QUEUE, false, event_idx).map(|tx| (rx, tx))
        });
        let mac = transport.read_config_space::<[u8; 6]>(0);
        let ((rx, tx), mac) = match (queues, mac) {
            (Ok(queues), Ok(mac)) => (queues, mac),
            (Err(error), _) | (_, Err(error)) => {
                defmt::error!("virtio-net: {}", defmt::Display2Format(&error));
                return None;
            }
        };
        transport.finish_init();
        let receive_len = if large_receive {
            MAX_MERGED_LEN
        } else {
            MAX_FRAME_LEN
        };
        let mut net = Self {
            transport,
            mac,
            rx,
            tx,
            rx_buffers: (0..RX_QUEUE_SIZE).map(|_| None).collect(),
            tx_buffers: (0..TX_QUEUE_SIZE).map(|_| None).collect(),
            tx_free: Vec::new(),
            header_len: if features.intersects(Features::VERSION_1 | Features::MRG_RXBUF) {
                12
            } else {
                10
            },
            mergeable: features.contains(Features::MRG_RXBUF),
            receive_len,
        };
        let buffer_len = if net.mergeable {
            MERGEABLE_BUFFER_LEN
        } else {
            net.header_len + receive_len
        };
        let buffers = (RX_MEMORY / buffer_len).clamp(1, RX_QUEUE_SIZE);
        for _ in 0..buffers {
            if !net.give_rx_buffer(vec![0; buffer_len].into_boxed_slice()) {
                break;
            }
        }
        defmt::info!(
            "virtio-net: large receive {}, mergeable buffers {}, {} receive buffers of {} bytes",
            large_receive,
            net.mergeable,
            buffers,
            buffer_len
        );
        Some(net)
    }

    /// Hands `buffer` to the device for a frame to come; whether the ring
    /// took it.
    fn give_rx_buffer(&mut self, mut buffer: Box<[u8]>) -> bool {
        // SAFETY: the buffer is owned by `rx_buffers` from here until
        // `pop_used` returns it, and nothing reads or moves it meanwhile (a
        // boxed slice's contents do not move with the box).
        let Ok(token) = (unsafe { self.rx.add(&[], &mut [&mut buffer[..]]) }) else {
            return false;
        };
        self.rx_buffers[usize::from(token)] = Some(buffer);
        if self.rx.should_notify() {
            self.transport.notify(RX_QUEUE);
        }
        true
    }

    /// The next buffer the device filled, and how many bytes it wrote.
    fn pop_rx(&mut self) -> Option<(Box<[u8]>, usize)> {
        let token = self.rx.peek_used()?;
        let mut buffer = self.rx_buffers[usize::from(token)].take()?;
        // SAFETY: `buffer` is the one `give_rx_buffer` added under `token`.
        match unsafe { self.rx.pop_used(token, &[], &mut [&mut buffer[..]]) } {
            Ok(used) => {
                let used = (used as usize).min(buffer.len());
                Some((buffer, used))
            }
            Err(_) => {
                self.rx_buffers[usize::from(token)] = Some(buffer);
                None
            }
        }
    }

    /// Takes back the buffers of the frames the device has sent.
    fn reclaim_tx(&mut self) {
        while let Some(token) = self.tx.peek_used() {
            let Some((buffer, len)) = self.tx_buffers[usize::from(token)].take() else {
                return;
            };
            // SAFETY: `buffer[..len]` is what `transmit` added under `token`.
            if unsafe { self.tx.pop_used(token, &[&buffer[..len]], &mut []) }.is_err() {
                self.tx_buffers[usize::from(token)] = Some((buffer, len));
                return;
            }
            self.tx_free.push(buffer);
        }
    }
}

impl<T: Transport> NetDevice for VirtioNet<T> {
    fn mac_address(&self) -> [u8; 6] {
        self.mac
    }

    fn max_frame_len(&self) -> usize {
        MAX_FRAME_LEN
    }

    fn max_receive_len(&self) -> usize {
        self.receive_len
    }

    fn link_up(&self) -> bool {
        // QEMU's virtio-net link is up unless the monitor says otherwise;
        // the status field is not negotiated.
        true
    }

    fn receive(&mut self, buf: &mut [u8]) -> Option<Received> {
        let (first, used) = self.pop_rx()?;
        let header_len = self.header_len.min(used);
        let header = &first[..header_len];
        let trusted = header
            .first()
            .is_some_and(|f| f & (HDR_NEEDS_CSUM | HDR_DATA_VALID) != 0);
        // The buffers the frame spans: the first names them.
        let spans = match header.get(10..12) {
            Some(n) if self.mergeable => u16::from_le_bytes([n[0], n[1]]).max(1),
            _ => 1,
        };
        let mut len = 0;
        let mut fits =
            used >= self.header_len && copy_into(buf, &mut len, &first[header_len..used]);
        self.give_rx_buffer(first);
        for _ in 1..spans {
            let Some((next, used)) = self.pop_rx() else {
                fits = false;
                break;
            };
            fits &= copy_into(buf, &mut len, &next[..used]);
            self.give_rx_buffer(next);
        }
        fits.then_some(Received {
            len,
            checksum: if trusted {
                RxChecksum::Trusted
            } else {
                RxChecksum::Unchecked
            },
        })
    }

    fn can_transmit(&mut self) -> bool {
        self.reclaim_tx();
        self.tx.available_desc() >= 1
    }

    fn transmit(&mut self, frame: &[u8]) -> Result<(), NetError> {
        if frame.is_empty() || frame.len() > MAX_FRAME_LEN {
            return Err(NetError::BadLength(frame.len()));
        }
        self.reclaim_tx();
        let len = self.header_len + frame.len();
        let mut buffer = self
            .tx_free
            .pop()
            .unwrap_or_else(|| vec![0; self.header_len + MAX_FRAME_LEN].into_boxed_slice());
        // An all-zero header: no offloads asked for.
        buffer[..self.header_len].fill(0);
        buffer[self.header_len..len].copy_from_slice(frame);
        // SAFETY: the buffer is owned by `tx_buffers` until `reclaim_tx`
        // pops it, and nothing writes or moves its contents meanwhile.
        let Ok(token) = (unsafe { self.tx.add(&[&buffer[..len]], &mut []) }) else {
            self.tx_free.push(buffer);
            return Err(NetError::Busy);
        };
        self.tx_buffers[usize::from(token)] = Some((buffer, len));
        if self.tx.should_notify() {
            self.transport.notify(TX_QUEUE);
        }
        Ok(())
    }
}

impl<T: Transport> Drop for VirtioNet<T> {
    fn drop(&mut self) {
        // The device must not write into buffers that are freed next.
        self.transport.queue_unset(RX_QUEUE);
        self.transport.queue_unset(TX_QUEUE);
    }
}

/// Appends `data` to the frame in `buf` (of `len` bytes so far); whether it
/// fit (a frame that does not is dropped whole).
fn copy_into(buf: &mut [u8], len: &mut usize, data: &[u8]) -> bool {
    let Some(to) = buf.get_mut(*len..*len + data.len()) else {
        return false;
    };
    to.copy_from_slice(data);
    *len += data.len();
    true
}
