//! [`GenetNet`]: the driver as the kernel's [`NetDevice`], with the PHY's link polled
//! on a timer from the run loop (the driver has no interrupts).

use embedded_hal::delay::DelayNs;
use tern_hal::{MonotonicClock, NetDevice, NetError, Received};

use crate::{CacheMaintenance, DmaMemory, Error, Genet, GenetBus};

/// The longest frame handed to or from the kernel: a 1500-byte MTU plus the Ethernet
/// header, without FCS (the MAC appends and strips it).
pub const KERNEL_FRAME_LEN: usize = 1514;
/// How often the link is read over MDIO (five register reads, a few µs each).
pub const LINK_POLL_INTERVAL_NS: u64 = 250_000_000;

/// A brought-up [`Genet`] as a [`NetDevice`].
pub struct GenetNet<B, M, C, D> {
    genet: Genet<B, M, C, D>,
    mac: [u8; 6],
    clock: &'static dyn MonotonicClock,
    /// When the link was last polled; `None` before the first poll.
    polled_at: Option<u64>,
    link_up: bool,
    /// The last MDIO error, kept for diagnostics; the link counts as down.
    last_error: Option<Error>,
}

impl<B: GenetBus, M: DmaMemory, C: CacheMaintenance, D: DelayNs> GenetNet<B, M, C, D> {
    /// Wraps `genet` (brought up with `mac`); the link is polled at once and then
    /// every [`LINK_POLL_INTERVAL_NS`] of `clock`.
    pub fn new(genet: Genet<B, M, C, D>, mac: [u8; 6], clock: &'static dyn MonotonicClock) -> Self {
        let mut net = Self {
            genet,
            mac,
            clock,
            polled_at: None,
            link_up: false,
            last_error: None,
        };
        net.poll_link();
        net
    }

    /// Reads the link if the last read is older than [`LINK_POLL_INTERVAL_NS`].
    fn poll_link(&mut self) {
        let now = self.clock.now_ns();
        if self
            .polled_at
            .is_some_and(|at| now.saturating_sub(at) < LINK_POLL_INTERVAL_NS)
        {
            return;
        }
        self.polled_at = Some(now);
        match self.genet.poll_link() {
            Ok(link) => {
                self.link_up = link.is_some();
                self.last_error = None;
            }
            Err(error) => {
                self.link_up = false;
                self.last_error = Some(error);
            }
        }
    }

    /// The driver, for diagnostics (link speed, counters).
    pub fn genet(&mut self) -> &mut Genet<B, M, C, D> {
        &mut self.genet
    }

    /// The MDIO error of the last link poll, if it failed.
    pub fn last_error(&self) -> Option<Error> {
        self.last_error
    }
}

impl<B, M, C, D> NetDevice for GenetNet<B, M, C, D>
where
    B: GenetBus + Send,
    M: DmaMemory + Send,
    C: CacheMaintenance + Send,
    D: DelayNs + Send,
{
    fn mac_address(&self) -> [u8; 6] {
        self.mac
    }

    fn max_frame_len(&self) -> usize {
        KERNEL_FRAME_LEN
    }

    fn link_up(&self) -> bool {
        self.link_up
    }

    fn receive(&mut self, buf: &mut [u8]) -> Option<Received> {
        self.poll_link();
        let frame = self.genet.receive()?;
        let data = frame.data();
        let len = data.len();
        if len > buf.len() {
            return None;
        }
        buf[..len].copy_from_slice(data);
        Some(Received::unchecked(len))
    }

    fn can_transmit(&mut self) -> bool {
        self.poll_link();
        self.link_up
            && (self.genet.tx_in_flight() < crate::regs::DESCRIPTORS || self.genet.reclaim_tx() > 0)
    }

    fn transmit(&mut self, frame: &[u8]) -> Result<(), NetError> {
        if frame.is_empty() || frame.len() > KERNEL_FRAME_LEN {
            return Err(NetError::BadLength(frame.len()));
        }
        // The MAC's transmitter is off while the link is down: a queued frame would
        // leave, stale, when it returns.
        if !self.link_up {
            return Err(NetError::Busy);
        }
        self.genet
            .transmit(frame.len(), |buf| buf.copy_from_slice(frame))
            .map_err(|error| match error {
                Error::TxRingFull => NetError::Busy,
                Error::BadLength(len) => NetError::BadLength(len),
                _ => NetError::Device,
            })
    }
}
