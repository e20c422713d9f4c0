//! Realtek RTL8111/RTL8168 (PCI 10ec:8168, 10ec:8161), the commonest
//! gigabit chip on desktop boards, in its descriptor ("C+") mode: one RX
//! and one TX ring of [`RING_SIZE`] descriptors with 2 KiB buffers, polled.
//!
//! QEMU has no model of it, so the crate is tested against a register-level
//! model with its own register map (`tests/model.rs`); `docs/nics.md` has
//! the bring-up and what only hardware can prove. Registers go through a
//! [`RegisterBus`] at their own width (8, 16 or 32 bits), descriptors and
//! buffers live in [`Dma`] regions.
//!
//! Unlike Intel's rings there is no tail register: each descriptor carries
//! an OWN bit, and EOR on the last sends the card back to the first.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod regs;

use core::sync::atomic::{fence, Ordering};

use embedded_hal::delay::DelayNs;
use regs::*;
use tern_nic::rings::{Rings, RxDescriptor, DESCRIPTOR_SIZE};
pub use tern_nic::rings::{BUFFER_SIZE, RING_SIZE};
use tern_nic::{mii, Dma, DmaRegion, EthernetDriver, Link, RegisterBus, Speed, Stats, TxError};

/// The shortest frame on the wire without FCS: the chip does not pad short
/// frames itself (Linux pads them too), so the driver does.
pub const MIN_FRAME: usize = 60;
/// Bytes of CRC the card leaves at the end of a received frame.
const CRC: usize = 4;
/// How many 1 ms polls a reset may take.
const RESET_POLLS: u32 = 100;
/// How many 25 µs polls a PHY access may take.
const PHY_POLLS: u32 = 2000;

/// PCI device IDs of the RTL8111/8168 family (Linux `r8169`).
const DEVICE_IDS: &[u16] = &[0x8168, 0x8161];

/// Whether `vendor:device` is a card this driver takes.
pub fn supports(vendor: u16, device: u16) -> bool {
    vendor == 0x10ec && DEVICE_IDS.contains(&device)
}

/// What can go wrong bringing the card up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The registers read all ones: no card answers at the BAR.
    #[error("no RTL8168 answers (TxConfig reads all ones)")]
    NoDevice,
    /// CR.RST did not clear.
    #[error("the chip reset did not finish")]
    ResetTimeout,
    /// The station address is all zeros, all ones or multicast.
    #[error("no valid MAC address in the ID registers")]
    NoMacAddress,
    /// A PHY access did not finish.
    #[error("PHY access to register {0} timed out")]
    PhyTimeout(u8),
    /// The PHY reports an ID of zero or all ones.
    #[error("no PHY answers (ID {0:#010x})")]
    NoPhy(u32),
    /// No DMA memory for the rings.
    #[error("out of DMA memory for the rings")]
    OutOfDmaMemory,
}

/// An RTL8111/8168, brought up and polled.
pub struct Rtl8168<B, D: Dma, T> {
    bus: B,
    delay: T,
    rings: Rings<D::Region>,
    mac: [u8; 6],
    /// The chip's version bits from TxConfig (for diagnostics).
    version: u32,
}

/// opts1 of a descriptor given to the card: OWN, EOR on the last slot.
fn owned(slot: usize, low: u32) -> u32 {
    let end = if slot == RING_SIZE - 1 { DESC_EOR } else { 0 };
    DESC_OWN | end | low
}

impl<B: RegisterBus, D: Dma, T: DelayNs> Rtl8168<B, D, T> {
    /// Brings the chip up: identity check, reset, station address,
    /// interrupts masked, rings (high address half first, as Linux does for
    /// boards that need it), packet size limits, then receiver and
    /// transmitter on and only then their configuration (the RTL8139's rule,
    /// which iPXE keeps for the whole family), PHY checked and
    /// autonegotiation restarted. The link is read by
    /// [`Rtl8168::poll_link`].
    pub fn new(bus: B, dma: &mut D, delay: T) -> Result<Self, Error> {
        let rings = Rings::allocate(dma, 256).ok_or(Error::OutOfDmaMemory)?;
        let mut nic = Self {
            bus,
            delay,
            rings,
            mac: [0; 6],
            version: 0,
        };
        let tcr = nic.bus.read32(TCR);
        if tcr == u32::MAX {
            return Err(Error::NoDevice);
        }
        nic.version = tcr & 0x7cf0_0000;
        nic.reset()?;
        nic.mac = core::array::from_fn(|i| nic.bus.read8(IDR0 + i));
        let mac = nic.mac;
        if mac == [0; 6] || mac == [0xff; 6] || mac[0] & 1 != 0 {
            return Err(Error::NoMacAddress);
        }
        nic.bus.write16(IMR, 0);
        nic.bus.write16(ISR, 0xffff);
        nic.bus.write8(CFG9346, CFG9346_UNLOCK);
        // No multicast: the kernel needs unicast and broadcast only.
        nic.bus.write32(MAR0, 0);
        nic.bus.write32(MAR0 + 4, 0);
        nic.init_rings();
        nic.bus.write16(RMS, BUFFER_SIZE as u16);
        nic.bus.write8(MTPS, (BUFFER_SIZE / 128) as u8);
        nic.bus.write8(CR, CR_RE | CR_TE);
        nic.bus.write32(TCR, TCR_VALUE);
        nic.bus.write32(RCR, RCR_VALUE);
        nic.bus.write8(CFG9346, CFG9346_LOCK);
        nic.start_autonegotiation()?;
        Ok(nic)
    }

    fn reset(&mut self) -> Result<(), Error> {
        self.bus.write8(CR, CR_RST);
        for _ in 0..RESET_POLLS {
            self.delay.delay_ms(1);
            if self.bus.read8(CR) & CR_RST == 0 {
                return Ok(());
            }
        }
        Err(Error::ResetTimeout)
    }

    fn init_rings(&mut self) {
        for slot in 0..RING_SIZE {
            self.arm_rx(slot);
        }
        for (low, high, phys) in [
            (TNPDS_LO, TNPDS_HI, self.rings.tx_ring.phys()),
            (RDSAR_LO, RDSAR_HI, self.rings.rx_ring.phys()),
        ] {
            self.bus.write32(high, (phys >> 32) as u32);
            self.bus.write32(low, phys as u32);
        }
    }

    /// Gives RX descriptor `slot` to the card with its buffer.
    fn arm_rx(&mut self, slot: usize) {
        let at = slot * DESCRIPTOR_SIZE;
        let buffer = self.rings.rx_buffer(slot);
        let ring = &mut self.rings.rx_ring;
        ring.write_u32(at + 4, 0);
        ring.write_u64(at + 8, buffer);
        // Ownership last: the card may take the descriptor at once.
        fence(Ordering::Release);
        ring.write_u32(at, owned(slot, BUFFER_SIZE as u32));
    }

    fn phy_read(&mut self, reg: u8) -> Result<u16, Error> {
        self.bus.write32(PHYAR, u32::from(reg & 31) << 16);
        for _ in 0..PHY_POLLS {
            self.delay.delay_us(25);
            let phyar = self.bus.read32(PHYAR);
            if phyar & PHYAR_FLAG != 0 {
                return Ok(phyar as u16);
            }
        }
        Err(Error::PhyTimeout(reg))
    }

    fn phy_write(&mut self, reg: u8, value: u16) -> Result<(), Error> {
        self.bus.write32(
            PHYAR,
            PHYAR_FLAG | u32::from(reg & 31) << 16 | u32::from(value),
        );
        for _ in 0..PHY_POLLS {
            self.delay.delay_us(25);
            if self.bus.read32(PHYAR) & PHYAR_FLAG == 0 {
                return Ok(());
            }
        }
        Err(Error::PhyTimeout(reg))
    }

    fn start_autonegotiation(&mut self) -> Result<(), Error> {
        let id =
            u32::from(self.phy_read(mii::PHYSID1)?) << 16 | u32::from(self.phy_read(mii::PHYSID2)?);
        if id == 0 || id == u32::MAX {
            return Err(Error::NoPhy(id));
        }
        self.phy_write(mii::BMCR, mii::BMCR_ANENABLE | mii::BMCR_ANRESTART)
    }

    /// The link, from PHYSTATUS.
    pub fn poll_link(&mut self) -> Option<Link> {
        let status = self.bus.read8(PHYSTATUS);
        (status & PHYSTATUS_LINK != 0).then_some(Link {
            speed: if status & PHYSTATUS_1000 != 0 {
                Speed::Mbps1000
            } else if status & PHYSTATUS_100 != 0 {
                Speed::Mbps100
            } else {
                Speed::Mbps10
            },
            full_duplex: status & PHYSTATUS_FULL_DUPLEX != 0,
        })
    }

    /// The station address.
    pub fn mac_address(&self) -> [u8; 6] {
        self.mac
    }

    /// The chip's version bits (TxConfig & 0x7cf00000, as Linux reads them).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The driver's counters.
    pub fn stats(&self) -> Stats {
        self.rings.stats()
    }

    /// The register bus, for diagnostics or the tests' model.
    pub fn bus_mut(&mut self) -> &mut B {
        &mut self.bus
    }

    /// Takes back the TX descriptors the card has sent (OWN clear);
    /// returns how many.
    pub fn reclaim_tx(&mut self) -> usize {
        self.rings
            .reclaim_tx(|ring, slot| ring.read_u32(slot * DESCRIPTOR_SIZE) & DESC_OWN == 0)
    }
}

impl<B: RegisterBus, D: Dma, T: DelayNs> EthernetDriver for Rtl8168<B, D, T> {
    type Error = Error;

    fn mac_address(&self) -> [u8; 6] {
        self.mac
    }

    fn poll_link(&mut self) -> Result<Option<Link>, Error> {
        Ok(Rtl8168::poll_link(self))
    }

    /// Copies the next good frame into `buf`; frames with errors, spread
    /// over several buffers, or longer than `buf` are dropped and counted.
    fn receive(&mut self, buf: &mut [u8]) -> Option<usize> {
        loop {
            let slot = self.rings.rx_next();
            let opts1 = self.rings.rx_ring.read_u32(slot * DESCRIPTOR_SIZE);
            if opts1 & DESC_OWN != 0 {
                return None;
            }
            fence(Ordering::Acquire);
            let descriptor = RxDescriptor {
                first: opts1 & DESC_FS != 0,
                last: opts1 & DESC_LS != 0,
                error: opts1 & RX_RES != 0,
                length: ((opts1 & RX_LENGTH_MASK) as usize).saturating_sub(CRC),
            };
            let delivered = self.rings.take_rx(descriptor, buf);
            self.arm_rx(slot);
            self.rings.advance_rx();
            if delivered.is_some() {
                return delivered;
            }
        }
    }

    fn can_transmit(&mut self) -> bool {
        self.rings.tx_in_flight() < RING_SIZE || self.reclaim_tx() > 0
    }

    /// Queues `frame` (without FCS; short frames are zero-padded to 60
    /// bytes) and tells the card to look at its ring.
    fn transmit(&mut self, frame: &[u8]) -> Result<(), TxError> {
        if !self.can_transmit() {
            return Err(TxError::RingFull);
        }
        let (slot, buffer, length) = self.rings.stage_tx(frame, MIN_FRAME, RING_SIZE)?;
        let at = slot * DESCRIPTOR_SIZE;
        let ring = &mut self.rings.tx_ring;
        ring.write_u32(at + 4, 0);
        ring.write_u64(at + 8, buffer);
        fence(Ordering::Release);
        ring.write_u32(at, owned(slot, DESC_FS | DESC_LS | length as u32));
        self.rings.commit_tx();
        fence(Ordering::Release);
        self.bus.write8(TPPOLL, TPPOLL_NPQ);
        Ok(())
    }
}
