//! [`PolledNet`]: a driver as the kernel's [`NetDevice`], its link read at
//! most every [`LINK_POLL_INTERVAL_NS`] from the run loop (the drivers take
//! no interrupts).

use tern_hal::{MonotonicClock, NetDevice, NetError, Received};

use crate::Link;

/// The longest frame handed to or from the kernel: a 1500-byte MTU plus the
/// Ethernet header, without FCS (the cards append and strip it).
pub const FRAME_LEN: usize = 1514;
/// How often the link is read (a register read or an MDIO exchange).
pub const LINK_POLL_INTERVAL_NS: u64 = 250_000_000;

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxError {
    /// Every transmit descriptor is the card's.
    RingFull,
    /// Empty, or longer than [`FRAME_LEN`].
    BadLength(usize),
}

/// What [`PolledNet`] needs from a driver.
pub trait EthernetDriver {
    /// The driver's error type (kept for diagnostics).
    type Error: Copy;
    /// The station address.
    fn mac_address(&self) -> [u8; 6];
    /// Reads the link (and programs the MAC for it when it changed).
    fn poll_link(&mut self) -> Result<Option<Link>, Self::Error>;
    /// Copies the next good received frame into `buf`, returning its
    /// length; a frame longer than `buf` is dropped (and counted).
    fn receive(&mut self, buf: &mut [u8]) -> Option<usize>;
    /// Whether a transmit descriptor is free (reclaiming finished ones).
    fn can_transmit(&mut self) -> bool;
    /// Queues one frame.
    fn transmit(&mut self, frame: &[u8]) -> Result<(), TxError>;
}

/// A driver as a [`NetDevice`].
pub struct PolledNet<D: EthernetDriver> {
    driver: D,
    clock: &'static dyn MonotonicClock,
    polled_at: Option<u64>,
    link: Option<Link>,
    last_error: Option<D::Error>,
}

impl<D: EthernetDriver> PolledNet<D> {
    /// Wraps a brought-up driver; the link is read at once.
    pub fn new(driver: D, clock: &'static dyn MonotonicClock) -> Self {
        let mut net = Self {
            driver,
            clock,
            polled_at: None,
            link: None,
            last_error: None,
        };
        net.poll_link();
        net
    }

    fn poll_link(&mut self) {
        let now = self.clock.now_ns();
        if self
            .polled_at
            .is_some_and(|at| now.saturating_sub(at) < LINK_POLL_INTERVAL_NS)
        {
            return;
        }
        self.polled_at = Some(now);
        match self.driver.poll_link() {
            Ok(link) => {
                self.link = link;
                self.last_error = None;
            }
            Err(error) => {
                self.link = None;
                self.last_error = Some(error);
            }
        }
    }

    /// The link as last read.
    pub fn link(&self) -> Option<Link> {
        self.link
    }

    /// The error of the last link read, if it failed (the link counts as
    /// down).
    pub fn last_error(&self) -> Option<D::Error> {
        self.last_error
    }

    /// The driver, for diagnostics.
    pub fn driver(&mut self) -> &mut D {
        &mut self.driver
    }
}

impl<D: EthernetDriver + Send> NetDevice for PolledNet<D>
where
    D::Error: Send,
{
    fn mac_address(&self) -> [u8; 6] {
        self.driver.mac_address()
    }

    fn max_frame_len(&self) -> usize {
        FRAME_LEN
    }

    fn link_up(&self) -> bool {
        self.link.is_some()
    }

    fn receive(&mut self, buf: &mut [u8]) -> Option<Received> {
        self.poll_link();
        self.driver.receive(buf).map(Received::unchecked)
    }

    fn can_transmit(&mut self) -> bool {
        self.poll_link();
        self.link.is_some() && self.driver.can_transmit()
    }

    fn transmit(&mut self, frame: &[u8]) -> Result<(), NetError> {
        if frame.is_empty() || frame.len() > FRAME_LEN {
            return Err(NetError::BadLength(frame.len()));
        }
        // A frame queued while the link is down would leave, stale, when it
        // returns.
        if self.link.is_none() {
            return Err(NetError::Busy);
        }
        self.driver.transmit(frame).map_err(|error| match error {
            TxError::RingFull => NetError::Busy,
            TxError::BadLength(len) => NetError::BadLength(len),
        })
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::Speed;
    use core::sync::atomic::{AtomicU64, Ordering};
    use std::vec::Vec;

    /// A clock the test moves by hand.
    struct HandClock(AtomicU64);

    impl MonotonicClock for HandClock {
        fn now_ns(&self) -> u64 {
            self.0.load(Ordering::Relaxed)
        }
        fn counter_hz(&self) -> u64 {
            1_000_000_000
        }
    }

    #[derive(Default)]
    struct FakeDriver {
        link_reads: u32,
        link: Option<Link>,
        fail_link: bool,
        sent: Vec<Vec<u8>>,
        full: bool,
    }

    impl EthernetDriver for FakeDriver {
        type Error = u8;
        fn mac_address(&self) -> [u8; 6] {
            [2, 0, 0, 0, 0, 1]
        }
        fn poll_link(&mut self) -> Result<Option<Link>, u8> {
            self.link_reads += 1;
            if self.fail_link {
                Err(7)
            } else {
                Ok(self.link)
            }
        }
        fn receive(&mut self, _: &mut [u8]) -> Option<usize> {
            None
        }
        fn can_transmit(&mut self) -> bool {
            !self.full
        }
        fn transmit(&mut self, frame: &[u8]) -> Result<(), TxError> {
            if self.full {
                return Err(TxError::RingFull);
            }
            self.sent.push(frame.to_vec());
            Ok(())
        }
    }

    const UP: Link = Link {
        speed: Speed::Mbps1000,
        full_duplex: true,
    };

    #[test]
    fn the_link_is_read_on_a_timer_and_gates_transmission() {
        let clock: &'static HandClock =
            std::boxed::Box::leak(std::boxed::Box::new(HandClock(AtomicU64::new(0))));
        let mut net = PolledNet::new(FakeDriver::default(), clock);
        assert_eq!(net.driver().link_reads, 1);
        assert!(!net.link_up());
        assert_eq!(net.transmit(&[0; 60]), Err(NetError::Busy));
        net.driver().link = Some(UP);
        // Not re-read before the interval.
        assert!(!net.can_transmit());
        assert_eq!(net.driver().link_reads, 1);
        clock.0.store(LINK_POLL_INTERVAL_NS, Ordering::Relaxed);
        assert!(net.can_transmit());
        assert_eq!(net.link(), Some(UP));
        assert_eq!(net.transmit(&[1; 60]), Ok(()));
        assert_eq!(net.transmit(&[]), Err(NetError::BadLength(0)));
        assert_eq!(
            net.transmit(&[0; FRAME_LEN + 1]),
            Err(NetError::BadLength(FRAME_LEN + 1))
        );
        net.driver().full = true;
        assert_eq!(net.transmit(&[1; 60]), Err(NetError::Busy));
        assert_eq!(net.driver().sent.len(), 1);
        // A failed link read counts as down and is kept.
        net.driver().fail_link = true;
        clock.0.store(2 * LINK_POLL_INTERVAL_NS, Ordering::Relaxed);
        let mut buf = [0u8; 64];
        assert_eq!(net.receive(&mut buf), None);
        assert!(!net.link_up());
        assert_eq!(net.last_error(), Some(7));
    }
}
