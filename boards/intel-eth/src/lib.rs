//! Intel Ethernet for Tern's PC board: the **e1000e** family (82574L, which
//! QEMU models as `e1000e`; the I219 of most Intel desktops and laptops since
//! 2015) and the **igb** family (82576, QEMU's `igb`; I210/I211). One driver
//! with a part table, because the families share the register model: the
//! same CTRL/STATUS/MDIC/RCTL/TCTL/RAL registers, and descriptor rings that
//! differ only in their queue registers and descriptor layout (legacy on
//! e1000e, advanced on igb), which [`Part`] selects.
//!
//! Polled (no interrupts), one RX and one TX queue of [`RING_SIZE`]
//! descriptors with 2 KiB buffers. Every register access goes through a
//! [`RegisterBus`], and descriptors and buffers live in [`Dma`] regions, so
//! the host tests run the driver against register-level models of each part
//! (`tests/`); `docs/nics.md` has the bring-up sequence and what only
//! hardware can prove.
//!
//! **I219-only parts** (guarded by [`Part::I219`]): the software/firmware
//! semaphore (EXTCNF_CTRL.SWFLAG) held around the reset and PHY access,
//! because the manageability engine (ME) may own the PHY; waiting for
//! LAN_INIT_DONE after the reset instead of the NVM auto-read; PHY address 2.
//! Not done (see the docs): leaving the PHY's ultra-low-power state (ULP),
//! which some firmware leaves it in; K1/power gating tuning.
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

/// How many 1 ms polls a reset may take.
const RESET_POLLS: u32 = 100;
/// How many 1 ms polls the NVM auto-read or LAN init may take.
const INIT_POLLS: u32 = 100;
/// How many 10 µs polls an MDIO exchange may take.
const MDIO_POLLS: u32 = 1000;
/// How many 1 ms polls the PCH semaphore may take (Linux waits up to 1 s).
const SWFLAG_POLLS: u32 = 1000;
/// How many 1 ms polls a queue enable may take.
const QUEUE_POLLS: u32 = 10;

/// The two families' layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Legacy descriptors, queue registers at 0x2800/0x3800.
    E1000e,
    /// Advanced descriptors, queue registers at 0xC000/0xE000, queues
    /// enabled through RXDCTL/TXDCTL.
    Igb,
}

/// A supported part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// 82574L / 82574LA (QEMU's `e1000e`).
    I82574,
    /// I219-LM/-V (the PCH-integrated MAC of Intel chipsets since 2015).
    I219,
    /// 82576 (QEMU's `igb`).
    I82576,
    /// I210 / I211.
    I210,
}

/// PCI device IDs of each part (Linux `e1000e/hw.h`, `igb/e1000_hw.h`).
const I82574_IDS: &[u16] = &[0x10d3, 0x10f6];
const I219_IDS: &[u16] = &[
    0x156f, 0x1570, 0x15b7, 0x15b8, 0x15b9, 0x15d7, 0x15d8, 0x15e3, 0x15d6, 0x15bd, 0x15be, 0x15bb,
    0x15bc, 0x15df, 0x15e0, 0x15e1, 0x15e2, 0x0d4e, 0x0d4f, 0x0d4c, 0x0d4d, 0x0d53, 0x0d55, 0x15fb,
    0x15fc, 0x15f9, 0x15fa, 0x15f4, 0x15f5, 0x1a1e, 0x1a1f, 0x1a1c, 0x1a1d, 0x550a, 0x550b, 0x550c,
    0x550d, 0x550e, 0x550f, 0x5510, 0x5511, 0x0dc5, 0x0dc6, 0x0dc7, 0x0dc8, 0x57a0, 0x57a1, 0x57b3,
    0x57b4,
];
const I82576_IDS: &[u16] = &[0x10c9, 0x10e6, 0x10e7, 0x10e8, 0x150a, 0x1526];
const I210_IDS: &[u16] = &[0x1533, 0x1536, 0x1537, 0x1538, 0x157b, 0x157c, 0x1539];

impl Part {
    /// The part with this PCI identity, if the driver supports it.
    pub fn identify(vendor: u16, device: u16) -> Option<Part> {
        if vendor != 0x8086 {
            return None;
        }
        [
            (Part::I82574, I82574_IDS),
            (Part::I219, I219_IDS),
            (Part::I82576, I82576_IDS),
            (Part::I210, I210_IDS),
        ]
        .into_iter()
        .find(|(_, ids)| ids.contains(&device))
        .map(|(part, _)| part)
    }

    /// Its family.
    pub fn family(self) -> Family {
        match self {
            Part::I82574 | Part::I219 => Family::E1000e,
            Part::I82576 | Part::I210 => Family::Igb,
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Part::I82574 => "82574L",
            Part::I219 => "I219",
            Part::I82576 => "82576",
            Part::I210 => "I210/I211",
        }
    }

    /// The MDIO address of its PHY.
    pub fn phy_address(self) -> u32 {
        match self {
            Part::I219 => 2,
            _ => 1,
        }
    }
}

/// Which ring an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ring {
    /// Receive.
    Rx,
    /// Transmit.
    Tx,
}

/// What can go wrong bringing a card up or talking to its PHY.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// CTRL.RST did not clear.
    #[error("the device reset did not finish")]
    ResetTimeout,
    /// The NVM auto-read after reset did not finish (EECD.AUTO_RD; e1000e
    /// parts only: igb parts may run without an NVM).
    #[error("the NVM auto-read after reset did not finish")]
    NvmTimeout,
    /// The I219's LAN init after reset did not finish (STATUS.LAN_INIT_DONE).
    #[error("LAN init after reset did not finish")]
    LanInitTimeout,
    /// The I219's software flag could not be taken: the manageability
    /// engine (or a firmware driver) holds the PHY.
    #[error("the SW/FW semaphore is held (manageability engine present: {me_present})")]
    SemaphoreTimeout {
        /// FWSM says the ME's firmware is valid.
        me_present: bool,
    },
    /// Neither RAL0/RAH0 nor the NVM hold a station address.
    #[error("no MAC address in the receive address registers or the NVM")]
    NoMacAddress,
    /// An MDIO exchange did not finish.
    #[error("MDIO access to PHY register {0} timed out")]
    MdioTimeout(u8),
    /// The PHY did not answer.
    #[error("the PHY did not answer on register {0}")]
    MdioError(u8),
    /// No PHY answers at the part's address (all-ones or zero ID).
    #[error("no PHY at MDIO address {address} (ID {id:#010x})")]
    NoPhy {
        /// The address asked.
        address: u32,
        /// What was read.
        id: u32,
    },
    /// An igb queue did not report itself enabled.
    #[error("the {0:?} queue did not enable")]
    QueueTimeout(Ring),
    /// No DMA memory for the rings.
    #[error("out of DMA memory for the rings")]
    OutOfDmaMemory,
}

/// An Intel card, brought up and polled.
pub struct IntelEth<B, D: Dma, T> {
    bus: B,
    delay: T,
    part: Part,
    rings: Rings<D::Region>,
    mac: [u8; 6],
    link: Option<Link>,
}

/// The queue registers of a family: (RDBAL, RDBAH, RDLEN, RDH, RDT, TDBAL,
/// TDBAH, TDLEN, TDH, TDT).
struct QueueRegs {
    rdbal: usize,
    rdbah: usize,
    rdlen: usize,
    rdh: usize,
    rdt: usize,
    tdbal: usize,
    tdbah: usize,
    tdlen: usize,
    tdh: usize,
    tdt: usize,
}

fn queue_regs(family: Family) -> QueueRegs {
    match family {
        Family::E1000e => QueueRegs {
            rdbal: e1000e::RDBAL,
            rdbah: e1000e::RDBAH,
            rdlen: e1000e::RDLEN,
            rdh: e1000e::RDH,
            rdt: e1000e::RDT,
            tdbal: e1000e::TDBAL,
            tdbah: e1000e::TDBAH,
            tdlen: e1000e::TDLEN,
            tdh: e1000e::TDH,
            tdt: e1000e::TDT,
        },
        Family::Igb => QueueRegs {
            rdbal: igb::RDBAL,
            rdbah: igb::RDBAH,
            rdlen: igb::RDLEN,
            rdh: igb::RDH,
            rdt: igb::RDT,
            tdbal: igb::TDBAL,
            tdbah: igb::TDBAH,
            tdlen: igb::TDLEN,
            tdh: igb::TDH,
            tdt: igb::TDT,
        },
    }
}

impl<B: RegisterBus, D: Dma, T: DelayNs> IntelEth<B, D, T> {
    /// Brings `part` up: interrupts masked, receiver and transmitter off,
    /// device reset (I219: under the SW/FW semaphore, then LAN init; others:
    /// NVM auto-read), station address from RAL0/RAH0 or the NVM, PHY
    /// checked and autonegotiation restarted, rings set up, receiver and
    /// transmitter on. The link comes up by itself; [`IntelEth::poll_link`]
    /// reads it.
    pub fn new(bus: B, dma: &mut D, delay: T, part: Part) -> Result<Self, Error> {
        let rings = Rings::allocate(dma, 128).ok_or(Error::OutOfDmaMemory)?;
        let mut eth = Self {
            bus,
            delay,
            part,
            rings,
            mac: [0; 6],
            link: None,
        };
        eth.quiesce();
        eth.reset()?;
        eth.quiesce();
        let ctrl_ext = eth.bus.read32(CTRL_EXT);
        eth.bus.write32(CTRL_EXT, ctrl_ext | CTRL_EXT_DRV_LOAD);
        eth.mac = eth.read_mac()?;
        eth.program_filters();
        let ctrl = eth.bus.read32(CTRL);
        eth.bus
            .write32(CTRL, (ctrl | CTRL_SLU) & !(CTRL_PHY_RST | CTRL_RST));
        eth.with_phy(|eth| eth.start_autonegotiation())?;
        eth.init_rx()?;
        eth.init_tx()?;
        Ok(eth)
    }

    /// Masks and clears every interrupt, stops the receiver and the
    /// transmitter.
    fn quiesce(&mut self) {
        self.bus.write32(IMC, u32::MAX);
        self.bus.read32(ICR);
        self.bus.write32(RCTL, 0);
        self.bus.write32(TCTL, TCTL_PSP);
        // Let in-flight DMA drain (flush the posted writes first).
        self.bus.read32(STATUS);
        self.delay.delay_ms(10);
    }

    fn reset(&mut self) -> Result<(), Error> {
        let i219 = self.part == Part::I219;
        if i219 {
            self.acquire_swflag()?;
        }
        let ctrl = self.bus.read32(CTRL);
        self.bus.write32(CTRL, ctrl | CTRL_RST);
        self.delay.delay_ms(1);
        self.poll(RESET_POLLS, 1_000_000, |eth| {
            eth.bus.read32(CTRL) & CTRL_RST == 0
        })
        .ok_or(Error::ResetTimeout)?;
        if i219 {
            // The reset cleared the software flag; LAN init follows.
            self.poll(INIT_POLLS, 1_000_000, |eth| {
                eth.bus.read32(STATUS) & STATUS_LAN_INIT_DONE != 0
            })
            .ok_or(Error::LanInitTimeout)?;
            let status = self.bus.read32(STATUS);
            self.bus.write32(STATUS, status & !STATUS_LAN_INIT_DONE);
        } else {
            let loaded = self
                .poll(INIT_POLLS, 1_000_000, |eth| {
                    eth.bus.read32(EECD) & EECD_AUTO_RD != 0
                })
                .is_some();
            // An igb part without an NVM never sets AUTO_RD and still
            // works (Linux's igb goes on too; QEMU's igb models that); the
            // address check below catches a card that really has none.
            if !loaded && self.part.family() == Family::E1000e {
                return Err(Error::NvmTimeout);
            }
        }
        Ok(())
    }

    /// Calls `check` up to `times` times, `interval_ns` apart, until it
    /// holds; `None` if it never did.
    fn poll(
        &mut self,
        times: u32,
        interval_ns: u32,
        mut check: impl FnMut(&mut Self) -> bool,
    ) -> Option<()> {
        for _ in 0..times {
            if check(self) {
                return Some(());
            }
            self.delay.delay_ns(interval_ns);
        }
        check(self).then_some(())
    }

    /// I219: takes EXTCNF_CTRL.SWFLAG (the PCH's SW/FW semaphore).
    fn acquire_swflag(&mut self) -> Result<(), Error> {
        let me_present = self.bus.read32(FWSM) & FWSM_FW_VALID != 0;
        let timeout = Error::SemaphoreTimeout { me_present };
        // Wait for the current owner to let go, then claim and read back.
        self.poll(SWFLAG_POLLS, 1_000_000, |eth| {
            eth.bus.read32(EXTCNF_CTRL) & EXTCNF_CTRL_SWFLAG == 0
        })
        .ok_or(timeout)?;
        let extcnf = self.bus.read32(EXTCNF_CTRL);
        self.bus.write32(EXTCNF_CTRL, extcnf | EXTCNF_CTRL_SWFLAG);
        self.poll(SWFLAG_POLLS, 1_000_000, |eth| {
            eth.bus.read32(EXTCNF_CTRL) & EXTCNF_CTRL_SWFLAG != 0
        })
        .ok_or(timeout)
    }

    fn release_swflag(&mut self) {
        let extcnf = self.bus.read32(EXTCNF_CTRL);
        self.bus.write32(EXTCNF_CTRL, extcnf & !EXTCNF_CTRL_SWFLAG);
    }

    /// Runs `f` with the PHY to itself (I219: under the semaphore).
    fn with_phy<R>(&mut self, f: impl FnOnce(&mut Self) -> Result<R, Error>) -> Result<R, Error> {
        if self.part != Part::I219 {
            return f(self);
        }
        self.acquire_swflag()?;
        let result = f(self);
        self.release_swflag();
        result
    }

    /// The station address: RAL0/RAH0 as the NVM auto-load left them, else
    /// NVM words 0..3 through EERD.
    fn read_mac(&mut self) -> Result<[u8; 6], Error> {
        let ral = self.bus.read32(RAL0);
        let rah = self.bus.read32(RAH0);
        let mut mac = [0u8; 6];
        if rah & RAH_AV != 0 {
            mac[..4].copy_from_slice(&ral.to_le_bytes());
            mac[4..].copy_from_slice(&(rah as u16).to_le_bytes());
        } else {
            for word in 0..3 {
                self.bus.write32(EERD, (word << 2) | EERD_START);
                let mut value = None;
                for _ in 0..INIT_POLLS {
                    let eerd = self.bus.read32(EERD);
                    if eerd & EERD_DONE != 0 {
                        value = Some((eerd >> 16) as u16);
                        break;
                    }
                    self.delay.delay_us(10);
                }
                let value = value.ok_or(Error::NvmTimeout)?;
                mac[word as usize * 2..word as usize * 2 + 2].copy_from_slice(&value.to_le_bytes());
            }
        }
        let usable = mac != [0; 6] && mac != [0xff; 6] && mac[0] & 1 == 0;
        usable.then_some(mac).ok_or(Error::NoMacAddress)
    }

    /// Accepts frames to our address (RAL0/RAH0, valid) and no multicast.
    fn program_filters(&mut self) {
        let [a, b, c, d, e, f] = self.mac;
        self.bus.write32(RAL0, u32::from_le_bytes([a, b, c, d]));
        self.bus
            .write32(RAH0, u32::from(u16::from_le_bytes([e, f])) | RAH_AV);
        for word in 0..128 {
            self.bus.write32(MTA + 4 * word, 0);
        }
    }

    fn mdio(&mut self, command: u32, reg: u8) -> Result<u16, Error> {
        let address = self.part.phy_address() << 21 | u32::from(reg) << 16;
        self.bus.write32(MDIC, command | address);
        for _ in 0..MDIO_POLLS {
            self.delay.delay_us(10);
            let mdic = self.bus.read32(MDIC);
            if mdic & MDIC_READY != 0 {
                if mdic & MDIC_ERROR != 0 {
                    return Err(Error::MdioError(reg));
                }
                return Ok(mdic as u16);
            }
        }
        Err(Error::MdioTimeout(reg))
    }

    /// Reads a PHY register over MDIC.
    pub fn mdio_read(&mut self, reg: u8) -> Result<u16, Error> {
        self.mdio(MDIC_OP_READ, reg)
    }

    /// Writes a PHY register over MDIC.
    pub fn mdio_write(&mut self, reg: u8, value: u16) -> Result<(), Error> {
        self.mdio(MDIC_OP_WRITE | u32::from(value), reg).map(drop)
    }

    fn start_autonegotiation(&mut self) -> Result<(), Error> {
        let id = u32::from(self.mdio_read(mii::PHYSID1)?) << 16
            | u32::from(self.mdio_read(mii::PHYSID2)?);
        if id == 0 || id == u32::MAX {
            return Err(Error::NoPhy {
                address: self.part.phy_address(),
                id,
            });
        }
        self.mdio_write(mii::BMCR, mii::BMCR_ANENABLE | mii::BMCR_ANRESTART)
    }

    fn init_rx(&mut self) -> Result<(), Error> {
        let family = self.part.family();
        let q = queue_regs(family);
        for slot in 0..RING_SIZE {
            self.arm_rx(slot);
        }
        let phys = self.rings.rx_ring.phys();
        self.bus.write32(q.rdbal, phys as u32);
        self.bus.write32(q.rdbah, (phys >> 32) as u32);
        self.bus
            .write32(q.rdlen, (RING_SIZE * DESCRIPTOR_SIZE) as u32);
        self.bus.write32(q.rdh, 0);
        self.bus.write32(q.rdt, 0);
        if family == Family::Igb {
            self.bus.write32(
                igb::SRRCTL,
                SRRCTL_BSIZE_2K | SRRCTL_DESCTYPE_ADV_ONEBUF | SRRCTL_DROP_EN,
            );
            self.enable_queue(igb::RXDCTL, Ring::Rx)?;
        }
        // Every descriptor but one is the card's; the gap follows `rx_next`.
        self.bus.write32(q.rdt, (RING_SIZE - 1) as u32);
        self.bus.write32(RCTL, RCTL_EN | RCTL_BAM | RCTL_SECRC);
        Ok(())
    }

    fn init_tx(&mut self) -> Result<(), Error> {
        let family = self.part.family();
        let q = queue_regs(family);
        let phys = self.rings.tx_ring.phys();
        self.bus.write32(q.tdbal, phys as u32);
        self.bus.write32(q.tdbah, (phys >> 32) as u32);
        self.bus
            .write32(q.tdlen, (RING_SIZE * DESCRIPTOR_SIZE) as u32);
        self.bus.write32(q.tdh, 0);
        self.bus.write32(q.tdt, 0);
        if family == Family::Igb {
            self.enable_queue(igb::TXDCTL, Ring::Tx)?;
        }
        self.bus.write32(TIPG, TIPG_COPPER);
        self.bus
            .write32(TCTL, TCTL_EN | TCTL_PSP | TCTL_CT | TCTL_COLD);
        Ok(())
    }

    fn enable_queue(&mut self, register: usize, ring: Ring) -> Result<(), Error> {
        let control = self.bus.read32(register);
        self.bus.write32(register, control | QUEUE_ENABLE);
        self.poll(QUEUE_POLLS, 1_000_000, |eth| {
            eth.bus.read32(register) & QUEUE_ENABLE != 0
        })
        .ok_or(Error::QueueTimeout(ring))
    }

    /// Gives RX descriptor `slot` its buffer, status cleared.
    fn arm_rx(&mut self, slot: usize) {
        let buffer = self.rings.rx_buffer(slot);
        let at = slot * DESCRIPTOR_SIZE;
        self.rings.rx_ring.write_u64(at, buffer);
        // Legacy: length, checksum, status, errors, special; advanced: the
        // header address. Zero either way (DD clear).
        self.rings.rx_ring.write_u64(at + 8, 0);
    }

    /// Reads the link from STATUS.
    pub fn poll_link(&mut self) -> Option<Link> {
        let status = self.bus.read32(STATUS);
        self.link = (status & STATUS_LU != 0).then_some(Link {
            speed: match (status >> STATUS_SPEED_SHIFT) & 3 {
                0 => Speed::Mbps10,
                1 => Speed::Mbps100,
                _ => Speed::Mbps1000,
            },
            full_duplex: status & STATUS_FD != 0,
        });
        self.link
    }

    /// The station address.
    pub fn mac_address(&self) -> [u8; 6] {
        self.mac
    }

    /// The part.
    pub fn part(&self) -> Part {
        self.part
    }

    /// The driver's counters.
    pub fn stats(&self) -> Stats {
        self.rings.stats()
    }

    /// The register bus, for diagnostics or the tests' model.
    pub fn bus_mut(&mut self) -> &mut B {
        &mut self.bus
    }

    /// Takes back the TX descriptors the card has finished (DD set);
    /// returns how many.
    pub fn reclaim_tx(&mut self) -> usize {
        self.rings
            .reclaim_tx(|ring, slot| ring.read_u32(slot * DESCRIPTOR_SIZE + 12) & TX_DD != 0)
    }

    /// Descriptors the card still owns.
    pub fn tx_in_flight(&self) -> usize {
        self.rings.tx_in_flight()
    }
}

/// One TX slot always stays empty, so that a full ring is not mistaken for
/// an empty one (head == tail).
const TX_CAPACITY: usize = RING_SIZE - 1;

impl<B, D, T> EthernetDriver for IntelEth<B, D, T>
where
    B: RegisterBus,
    D: Dma,
    T: DelayNs,
{
    type Error = Error;

    fn mac_address(&self) -> [u8; 6] {
        self.mac
    }

    fn poll_link(&mut self) -> Result<Option<Link>, Error> {
        Ok(IntelEth::poll_link(self))
    }

    /// Copies the next good frame into `buf`; frames with errors, split
    /// over buffers, or longer than `buf` are dropped and counted.
    fn receive(&mut self, buf: &mut [u8]) -> Option<usize> {
        let family = self.part.family();
        loop {
            let slot = self.rings.rx_next();
            let at = slot * DESCRIPTOR_SIZE;
            let ring = &self.rings.rx_ring;
            let (status, length) = match family {
                Family::E1000e => (
                    ring.read_u32(at + LEGACY_RX_STATUS),
                    ring.read_u32(at + LEGACY_RX_LENGTH) & 0xffff,
                ),
                Family::Igb => (
                    ring.read_u32(at + ADV_RX_STATUS),
                    ring.read_u32(at + ADV_RX_LENGTH) & 0xffff,
                ),
            };
            if status & RX_DD == 0 {
                return None;
            }
            // Read the descriptor before the buffer it describes.
            fence(Ordering::Acquire);
            let error = match family {
                Family::E1000e => status & LEGACY_RX_FRAME_ERRORS != 0,
                Family::Igb => status & ADV_RX_ERROR_RXE != 0,
            };
            // Intel descriptors mark only the end of a frame.
            let descriptor = RxDescriptor {
                first: true,
                last: status & RX_EOP != 0,
                error,
                length: length as usize,
            };
            let delivered = self.rings.take_rx(descriptor, buf);
            self.arm_rx(slot);
            fence(Ordering::Release);
            self.bus.write32(queue_regs(family).rdt, slot as u32);
            self.rings.advance_rx();
            if delivered.is_some() {
                return delivered;
            }
        }
    }

    fn can_transmit(&mut self) -> bool {
        self.rings.tx_in_flight() < TX_CAPACITY || self.reclaim_tx() > 0
    }

    /// Queues `frame` (without FCS; the card appends it and pads short
    /// frames).
    fn transmit(&mut self, frame: &[u8]) -> Result<(), TxError> {
        if !self.can_transmit() {
            return Err(TxError::RingFull);
        }
        let (slot, buffer, length) = self.rings.stage_tx(frame, 0, TX_CAPACITY)?;
        let at = slot * DESCRIPTOR_SIZE;
        let length = length as u32;
        let (command, info) = match self.part.family() {
            Family::E1000e => (
                length | LEGACY_TX_CMD_EOP | LEGACY_TX_CMD_IFCS | LEGACY_TX_CMD_RS,
                0,
            ),
            Family::Igb => (
                length
                    | ADV_TX_DTYP_DATA
                    | ADV_TX_DCMD_EOP
                    | ADV_TX_DCMD_IFCS
                    | ADV_TX_DCMD_RS
                    | ADV_TX_DCMD_DEXT,
                length << ADV_TX_PAYLEN_SHIFT,
            ),
        };
        let ring = &mut self.rings.tx_ring;
        ring.write_u64(at, buffer);
        ring.write_u32(at + 8, command);
        ring.write_u32(at + 12, info);
        let tail = self.rings.commit_tx();
        // The descriptor and the buffer before the tail that hands them over.
        fence(Ordering::Release);
        self.bus
            .write32(queue_regs(self.part.family()).tdt, tail as u32);
        Ok(())
    }
}
