//! Raspberry Pi 4 GENET v5 Ethernet driver: MAC bring-up, MDIO and the BCM54213PE PHY,
//! and the RX/TX DMA rings of the default queue 16, polled (no interrupts).
//!
//! Every register access goes through a [`GenetBus`]: on the Pi it is [`MmioBus`] over
//! the tock-registers [`regs::GenetWindow`] the board maps at 0xFD58_0000; on the host
//! the tests plug in a register-level model of the controller (see `docs/genet.md`).
//! The crate has no `unsafe`: the board creates the `&'static GenetWindow`.
//!
//! DMA is not cache-coherent on the BCM2711, so the driver calls the board's
//! [`CacheMaintenance`] around every hand-over, and it takes its packet buffers from the
//! board's [`DmaMemory`] as plain ARM physical addresses.
//!
//! [`GenetNet`] adapts the driver to the kernel's `tern_hal::NetDevice`.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod net;
pub mod regs;

pub use net::GenetNet;

use embedded_hal::delay::DelayNs;
use regs::*;
use tock_registers::fields::FieldValue;
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::LocalRegisterCopy;

/// Size of every RX and TX buffer the board must provide (U-Boot `RX_BUF_LENGTH`).
pub const BUFFER_SIZE: usize = 2048;
/// The 2-byte header GENET prepends to received frames (`RBUF_ALIGN_2B`).
pub const RX_HEADER: usize = 2;
/// Largest frame the MAC accepts: 1500 + 14 + VLAN 4 + Broadcom tag 6 + FCS 4 + pad 8
/// (U-Boot `ENET_MAX_MTU_SIZE`).
pub const MAX_FRAME_LEN: u32 = 1536;
/// Shortest Ethernet frame without FCS; shorter TX frames are zero-padded to it.
pub const MIN_FRAME_LEN: usize = 60;
/// MDIO address of the Pi 4's BCM54213PE.
pub const PHY_ADDRESS: u8 = 1;
/// PHY identifier of the BCM54213PE (PHYSID1 << 16 | PHYSID2); the low 4 bits are the
/// revision and are ignored, as Linux's `PHY_ID_BCM54213PE` match does.
pub const BCM54213PE_ID: u32 = 0x600d_84a2;
const PHY_ID_MASK: u32 = 0xFFFF_FFF0;
/// The major revision nibble GENET v5 reports in `SYS_REV_CTRL` bits 27:24.
const GENET_V5_MAJOR: u32 = 6;

/// How many times an MDIO operation is polled, 1 µs apart, before [`Error::MdioTimeout`].
const MDIO_POLLS: u32 = 10_000;
/// How many times the PHY reset bit is polled, 1 ms apart, before [`Error::PhyResetTimeout`].
const PHY_RESET_POLLS: u32 = 500;
/// Length of the MAC reset pulse in `SYS_RBUF_FLUSH_CTRL` (Linux `bcmgenet_umac_reset`:
/// `udelay(10)`), a floor the model checks.
const MAC_RESET_PULSE_US: u32 = 10;

// IEEE 802.3 clause 22 registers and bits of the PHY.
const MII_BMCR: u8 = 0;
const MII_BMSR: u8 = 1;
const MII_PHYSID1: u8 = 2;
const MII_PHYSID2: u8 = 3;
const MII_ADVERTISE: u8 = 4;
const MII_LPA: u8 = 5;
const MII_CTRL1000: u8 = 9;
const MII_STAT1000: u8 = 10;
const BMCR_RESET: u16 = 1 << 15;
const BMCR_ANENABLE: u16 = 1 << 12;
const BMCR_ANRESTART: u16 = 1 << 9;
const BMSR_LSTATUS: u16 = 1 << 2;
const BMSR_ANEGCOMPLETE: u16 = 1 << 5;
/// 802.3 selector plus 10/100 half and full duplex.
const ADVERTISE_ALL_10_100: u16 = 0x01E1;
const ADVERTISE_100FULL: u16 = 0x0100;
const ADVERTISE_100HALF: u16 = 0x0080;
const ADVERTISE_10FULL: u16 = 0x0040;
const ADVERTISE_10HALF: u16 = 0x0020;
const ADVERTISE_1000FULL: u16 = 0x0200;
const ADVERTISE_1000HALF: u16 = 0x0100;
const LPA_1000FULL: u16 = 0x0800;
const LPA_1000HALF: u16 = 0x0400;

// The BCM54xx shadow registers that hold the RGMII clock delays (Linux
// `drivers/net/phy/broadcom.c`, `bcm54xx_config_clock_delay`, and `brcmphy.h`).
/// Auxiliary control; bits 2:0 select a shadow register (`MII_BCM54XX_AUX_CTL`).
const MII_BCM54XX_AUX_CTL: u8 = 0x18;
/// The "misc control" shadow of AUX_CTL (`MII_BCM54XX_AUXCTL_SHDWSEL_MISC`).
const AUXCTL_SHDWSEL_MISC: u16 = 0x7;
/// A read selects the shadow in bits 14:12 (`MII_BCM54XX_AUXCTL_SHDWSEL_READ_SHIFT`).
const AUXCTL_READ_SHIFT: u16 = 12;
/// Write enable of the misc shadow (`MII_BCM54XX_AUXCTL_MISC_WREN`).
const AUXCTL_MISC_WREN: u16 = 0x8000;
/// The PHY's RX clock delay, RXC against RXD (`..._MISC_RGMII_SKEW_EN`).
const AUXCTL_MISC_RGMII_SKEW_EN: u16 = 0x0100;
/// The 0x1C shadow register window (`MII_BCM54XX_SHD`): bits 14:10 select, bit 15 writes.
const MII_BCM54XX_SHD: u8 = 0x1C;
const SHD_WRITE: u16 = 0x8000;
const SHD_SELECT_SHIFT: u16 = 10;
const SHD_DATA_MASK: u16 = 0x03FF;
/// Clock control shadow (`BCM54810_SHD_CLK_CTL`).
const SHD_CLK_CTL: u16 = 0x3;
/// The PHY's TX clock delay, GTXCLK against TXD (`BCM54810_SHD_CLK_CTL_GTXCLK_EN`).
const SHD_CLK_GTXCLK_EN: u16 = 0x0200;

/// Who adds the ~2 ns RGMII clock delay in each direction. Exactly one of the board,
/// the PHY and the MAC must; the Pi 4's board adds none. Both sides are programmed
/// explicitly rather than trusting reset defaults (U-Boot and circle rely on them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RgmiiDelays {
    /// `rgmii-rxid`, the Pi 4 device tree's `phy-mode` and what Linux programs: the
    /// PHY delays RXC (skew on) and not GTXCLK; the MAC delays TXC (`ID_MODE_DIS` clear).
    #[default]
    PhyRx,
    /// `rgmii-id` on the PHY with the MAC's delay off (`ID_MODE_DIS` set): the PHY
    /// delays both clocks, what U-Boot and circle get from the PHY's reset defaults.
    /// The other setting to try when frames are lost on first bring-up.
    PhyBoth,
}

impl RgmiiDelays {
    /// Parses the setting's name: `rxid` or `id`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "rxid" => Some(Self::PhyRx),
            "id" => Some(Self::PhyBoth),
            _ => None,
        }
    }

    /// The setting's name, as [`RgmiiDelays::from_name`] reads it.
    pub fn name(self) -> &'static str {
        match self {
            Self::PhyRx => "rxid",
            Self::PhyBoth => "id",
        }
    }
}

/// Register access backend: every access of the driver goes through it, so that a
/// model can react between accesses (MDIO completion, DMA progress) in host tests.
pub trait GenetBus {
    /// Reads the 32-bit register at byte `offset` from the GENET base.
    fn read(&mut self, offset: usize) -> u32;
    /// Writes the 32-bit register at byte `offset` from the GENET base.
    fn write(&mut self, offset: usize, value: u32);
}

/// The real backend: volatile accesses to the memory-mapped register window.
pub struct MmioBus {
    window: &'static GenetWindow,
}

impl MmioBus {
    /// Wraps the register window the board mapped (device memory at 0xFD58_0000 on
    /// the Pi 4, e.g. from a tock-registers `StaticRef`, whose creation is the board's
    /// `unsafe` with its SAFETY argument).
    pub fn new(window: &'static GenetWindow) -> Self {
        Self { window }
    }
}

impl GenetBus for MmioBus {
    /// Offsets outside the window read as all ones, like an unanswered bus read; the
    /// driver only uses the constants of [`regs`], which are all inside.
    fn read(&mut self, offset: usize) -> u32 {
        self.window.word(offset).map_or(u32::MAX, |r| r.get())
    }

    fn write(&mut self, offset: usize, value: u32) {
        if let Some(r) = self.window.word(offset) {
            r.set(value);
        }
    }
}

/// Data-cache maintenance by physical address range, provided by the board.
pub trait CacheMaintenance {
    /// Writes dirty lines of the range back to memory (before the device reads it).
    fn clean(&mut self, phys: u64, len: usize);
    /// Discards cached lines of the range (after the device wrote it).
    fn invalidate(&mut self, phys: u64, len: usize);
}

/// Which DMA ring a buffer belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ring {
    /// Receive ring.
    Rx,
    /// Transmit ring.
    Tx,
}

/// Packet buffers shared with the DMA engine: one of [`BUFFER_SIZE`] bytes per
/// descriptor slot (256 per ring), provided by the board.
pub trait DmaMemory {
    /// Plain ARM physical address of the buffer (not the 0xC000_0000 bus alias).
    fn phys_addr(&self, ring: Ring, slot: usize) -> u64;
    /// CPU view of the buffer.
    fn buffer(&self, ring: Ring, slot: usize) -> &[u8];
    /// Mutable CPU view of the buffer.
    fn buffer_mut(&mut self, ring: Ring, slot: usize) -> &mut [u8];
}

/// What can go wrong with the controller, the PHY or the caller's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// `SYS_REV_CTRL` does not report a GENET v5.
    #[error("GENET revision register 0x{0:08x} is not a GENET v5")]
    UnsupportedRevision(u32),
    /// A DMA buffer of the board is shorter than [`BUFFER_SIZE`].
    #[error("DMA buffer {slot} of the {ring:?} ring is shorter than {BUFFER_SIZE} bytes")]
    BufferTooSmall {
        /// The ring.
        ring: Ring,
        /// The slot.
        slot: usize,
    },
    /// An MDIO operation did not finish in time.
    #[error("MDIO operation on PHY {phy} register {reg} timed out")]
    MdioTimeout {
        /// PHY address.
        phy: u8,
        /// Register.
        reg: u8,
    },
    /// The PHY did not answer an MDIO read.
    #[error("PHY {phy} did not answer the read of register {reg}")]
    MdioReadFail {
        /// PHY address.
        phy: u8,
        /// Register.
        reg: u8,
    },
    /// The PHY at [`PHY_ADDRESS`] is not a BCM54213PE.
    #[error("unexpected PHY ID 0x{0:08x} (expected a BCM54213PE, 0x600d84a2)")]
    WrongPhyId(u32),
    /// The PHY stayed in reset.
    #[error("the PHY did not leave reset")]
    PhyResetTimeout,
    /// Autonegotiation finished without a mode both ends support.
    #[error("autonegotiation found no common speed and duplex")]
    NoCommonMode,
    /// The frame to send is empty or longer than the maximum frame length.
    #[error("frame length {0} is outside 1..={MAX_FRAME_LEN}")]
    BadLength(usize),
    /// All 256 TX descriptors are owned by the device.
    #[error("the TX ring is full")]
    TxRingFull,
}

/// Link speed negotiated by the PHY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speed {
    /// 10 Mb/s.
    Mbps10,
    /// 100 Mb/s.
    Mbps100,
    /// 1000 Mb/s.
    Mbps1000,
}

/// An established link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Speed.
    pub speed: Speed,
    /// Full (true) or half duplex.
    pub full_duplex: bool,
}

/// Counters of the driver's own decisions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames handed out by [`Genet::receive`].
    pub rx_frames: u64,
    /// Frames dropped because of error bits, a missing SOP/EOP or a bad length.
    pub rx_errors: u64,
    /// Frames queued by [`Genet::transmit`].
    pub tx_frames: u64,
}

/// The GENET v5 controller, brought up and polled.
pub struct Genet<B, M, C, D> {
    bus: B,
    memory: M,
    cache: C,
    delay: D,
    /// Driver's RX consumer index (16-bit, the slot is its low 8 bits).
    rx_cons: u16,
    /// Driver's TX producer index.
    tx_prod: u16,
    /// Last device TX consumer index seen: descriptors in [tx_done, tx_prod) are the device's.
    tx_done: u16,
    link: Option<Link>,
    stats: Stats,
    delays: RgmiiDelays,
}

fn slot(index: u16) -> usize {
    usize::from(index) % DESCRIPTORS
}

fn desc(base: usize, slot: usize, word: usize) -> usize {
    base + slot * DESC_SIZE + word
}

impl<B: GenetBus, M: DmaMemory, C: CacheMaintenance, D: DelayNs> Genet<B, M, C, D> {
    /// Brings the controller up: checks the v5 revision, pulses the MAC reset and
    /// leaves the UMAC in software reset, clears what an earlier user left in the RX/TX
    /// buffer and DMA controls, programs the MAC address and frame length, selects
    /// RGMII with the MAC's side of `delays`, sets up both rings of queue 16 and enables
    /// DMA, then checks the PHY ID, resets the PHY, programs the PHY's side of `delays`
    /// and starts autonegotiation. The UMAC leaves reset, with its speed and RX and TX
    /// on, once [`Genet::poll_link`] sees the link.
    pub fn new(
        bus: B,
        memory: M,
        cache: C,
        delay: D,
        mac: [u8; 6],
        delays: RgmiiDelays,
    ) -> Result<Self, Error> {
        let mut genet = Self {
            bus,
            memory,
            cache,
            delay,
            rx_cons: 0,
            tx_prod: 0,
            tx_done: 0,
            link: None,
            stats: Stats::default(),
            delays,
        };
        genet.check_buffers()?;
        let rev = genet.bus.read(SYS_REV_CTRL);
        if (rev >> 24) & 0xF != GENET_V5_MAJOR {
            return Err(Error::UnsupportedRevision(rev));
        }
        genet.bus.write(SYS_PORT_CTRL, PORT_MODE_EXT_GPHY);
        genet.reset_umac();
        genet.mask_interrupts();
        genet.bus.write(
            UMAC_MAC0,
            u32::from_be_bytes([mac[0], mac[1], mac[2], mac[3]]),
        );
        genet
            .bus
            .write(UMAC_MAC1, u32::from_be_bytes([0, 0, mac[4], mac[5]]));
        genet.disable_dma();
        genet.init_rx_ring();
        genet.init_tx_ring();
        genet.enable_rgmii();
        genet.enable_dma();
        genet.init_phy()?;
        Ok(genet)
    }

    fn check_buffers(&self) -> Result<(), Error> {
        for ring in [Ring::Rx, Ring::Tx] {
            for slot in 0..DESCRIPTORS {
                if self.memory.buffer(ring, slot).len() < BUFFER_SIZE {
                    return Err(Error::BufferTooSmall { ring, slot });
                }
            }
        }
        Ok(())
    }

    /// The MAC reset pulse of Linux's `bcmgenet_umac_reset` (at least 10 µs), then the
    /// UMAC's software reset, held until the link is up (Linux `reset_umac`), and the
    /// buffer controls written whole: a 64-byte status block an earlier user (Linux)
    /// enabled would otherwise shift every frame.
    fn reset_umac(&mut self) {
        self.bus.write(SYS_RBUF_FLUSH_CTRL, RBUF_FLUSH_MAC_RESET);
        self.delay.delay_us(MAC_RESET_PULSE_US);
        self.bus.write(SYS_RBUF_FLUSH_CTRL, 0);
        self.delay.delay_us(10);
        self.bus.write(UMAC_CMD, UMAC_CMD_BITS::SW_RESET::SET.value);
        self.delay.delay_us(2);
        self.bus.write(UMAC_MIB_CTRL, MIB_RESET_ALL);
        self.bus.write(UMAC_MIB_CTRL, 0);
        self.bus.write(UMAC_MAX_FRAME_LEN, MAX_FRAME_LEN);
        self.bus.write(RBUF_CTRL, RBUF_ALIGN_2B);
        self.bus.write(TBUF_CTRL, 0);
        self.bus.write(RBUF_TBUF_SIZE_CTRL, 1);
    }

    /// The driver polls, so every interrupt source is masked and cleared.
    fn mask_interrupts(&mut self) {
        for (mask, clear) in [
            (INTRL2_0_CPU_MASK_SET, INTRL2_0_CPU_CLEAR),
            (INTRL2_1_CPU_MASK_SET, INTRL2_1_CPU_CLEAR),
        ] {
            self.bus.write(mask, u32::MAX);
            self.bus.write(clear, u32::MAX);
        }
    }

    /// Written whole: ring enables an earlier user left for other queues go too.
    fn disable_dma(&mut self) {
        for regs in [TDMA_REGS, RDMA_REGS] {
            self.bus.write(regs + DMA_CTRL, 0);
        }
        self.bus.write(UMAC_TX_FLUSH, 1);
        self.delay.delay_us(10);
        self.bus.write(UMAC_TX_FLUSH, 0);
    }

    /// Ring registers shared by both directions: whole ring of 256 descriptors, 2 KiB buffers.
    fn init_ring_geometry(&mut self, ring: usize, dma: usize) {
        self.bus.write(dma + DMA_SCB_BURST_SIZE, 8);
        self.bus.write(ring + RING_START_ADDR, 0);
        self.bus.write(
            ring + RING_END_ADDR,
            (DESCRIPTORS * DESC_SIZE / 4 - 1) as u32,
        );
        self.bus.write(
            ring + RING_BUF_SIZE,
            ((DESCRIPTORS as u32) << 16) | BUFFER_SIZE as u32,
        );
    }

    fn init_rx_ring(&mut self) {
        self.init_ring_geometry(RDMA_RING16, RDMA_REGS);
        self.bus.write(RDMA_READ_PTR, 0);
        self.bus.write(RDMA_WRITE_PTR, 0);
        // The producer index cannot be written: align the consumer on it (as U-Boot).
        let prod = (self.bus.read(RDMA_PROD_INDEX) & INDEX_MASK) as u16;
        self.rx_cons = prod;
        self.bus.write(RDMA_CONS_INDEX, u32::from(prod));
        // XON/XOFF thresholds: 5 and 256/16 descriptors (U-Boot `DMA_FC_THRESH_VALUE`).
        self.bus.write(RDMA_XON_XOFF_THRESH, (5 << 16) | 16);
        let owned = (DESC_BITS::LENGTH.val(BUFFER_SIZE as u32) + DESC_BITS::OWN::SET).value;
        for slot in 0..DESCRIPTORS {
            let phys = self.memory.phys_addr(Ring::Rx, slot);
            // No dirty line may later be evicted over what the device writes.
            self.cache.clean(phys, BUFFER_SIZE);
            self.write_desc(RDMA_DESC_BASE, slot, phys, owned);
        }
        self.bus.write(RDMA_REGS + DMA_RING_CFG, 1 << DEFAULT_QUEUE);
    }

    fn init_tx_ring(&mut self) {
        self.init_ring_geometry(TDMA_RING16, TDMA_REGS);
        self.bus.write(TDMA_READ_PTR, 0);
        self.bus.write(TDMA_WRITE_PTR, 0);
        // The consumer index cannot be written: align the producer on it (as U-Boot).
        let cons = (self.bus.read(TDMA_CONS_INDEX) & INDEX_MASK) as u16;
        self.tx_prod = cons;
        self.tx_done = cons;
        self.bus.write(TDMA_PROD_INDEX, u32::from(cons));
        self.bus.write(TDMA_RING16 + RING_MBUF_DONE_THRESH, 1);
        self.bus.write(TDMA_FLOW_PERIOD, 0);
        self.bus.write(TDMA_REGS + DMA_RING_CFG, 1 << DEFAULT_QUEUE);
    }

    fn write_desc(&mut self, base: usize, slot: usize, phys: u64, length_status: u32) {
        self.bus.write(desc(base, slot, DESC_ADDR_LO), phys as u32);
        self.bus
            .write(desc(base, slot, DESC_ADDR_HI), (phys >> 32) as u32);
        self.bus
            .write(desc(base, slot, DESC_LENGTH_STATUS), length_status);
    }

    /// RGMII mode with the MAC's side of the delays (Linux `bcmgenet_mii_config`).
    fn enable_rgmii(&mut self) {
        let mut oob = LocalRegisterCopy::<u32, RGMII_OOB_BITS::Register>::new(
            self.bus.read(EXT_RGMII_OOB_CTRL),
        );
        let mac_delay = match self.delays {
            RgmiiDelays::PhyRx => RGMII_OOB_BITS::ID_MODE_DIS::CLEAR,
            RgmiiDelays::PhyBoth => RGMII_OOB_BITS::ID_MODE_DIS::SET,
        };
        oob.modify(
            RGMII_OOB_BITS::OOB_DISABLE::CLEAR
                + RGMII_OOB_BITS::RGMII_LINK::SET
                + RGMII_OOB_BITS::RGMII_MODE_EN::SET
                + mac_delay,
        );
        self.bus.write(EXT_RGMII_OOB_CTRL, oob.get());
    }

    /// Written whole: DMA on for ring 16 only.
    fn enable_dma(&mut self) {
        let enable = (DMA_CTRL_BITS::DMA_EN::SET + DMA_CTRL_BITS::RING16_BUF_EN::SET).value;
        for regs in [TDMA_REGS, RDMA_REGS] {
            self.bus.write(regs + DMA_CTRL, enable);
        }
    }

    /// The PHY's side of the delays, after its reset (which restores the defaults):
    /// the RX skew is on in both settings, GTXCLK's delay only in [`RgmiiDelays::PhyBoth`].
    fn set_phy_delays(&mut self) -> Result<(), Error> {
        let select_misc = AUXCTL_SHDWSEL_MISC | AUXCTL_SHDWSEL_MISC << AUXCTL_READ_SHIFT;
        self.mdio_write(PHY_ADDRESS, MII_BCM54XX_AUX_CTL, select_misc)?;
        let misc = self.mdio_read(PHY_ADDRESS, MII_BCM54XX_AUX_CTL)?;
        let misc = (misc & !AUXCTL_SHDWSEL_MISC)
            | AUXCTL_MISC_WREN
            | AUXCTL_MISC_RGMII_SKEW_EN
            | AUXCTL_SHDWSEL_MISC;
        self.mdio_write(PHY_ADDRESS, MII_BCM54XX_AUX_CTL, misc)?;
        let select_clk = SHD_CLK_CTL << SHD_SELECT_SHIFT;
        self.mdio_write(PHY_ADDRESS, MII_BCM54XX_SHD, select_clk)?;
        let clk = self.mdio_read(PHY_ADDRESS, MII_BCM54XX_SHD)? & SHD_DATA_MASK;
        let clk = match self.delays {
            RgmiiDelays::PhyRx => clk & !SHD_CLK_GTXCLK_EN,
            RgmiiDelays::PhyBoth => clk | SHD_CLK_GTXCLK_EN,
        };
        self.mdio_write(PHY_ADDRESS, MII_BCM54XX_SHD, SHD_WRITE | select_clk | clk)
    }

    /// The RGMII delay setting the driver programmed.
    pub fn delays(&self) -> RgmiiDelays {
        self.delays
    }

    fn init_phy(&mut self) -> Result<(), Error> {
        let id = u32::from(self.mdio_read(PHY_ADDRESS, MII_PHYSID1)?) << 16
            | u32::from(self.mdio_read(PHY_ADDRESS, MII_PHYSID2)?);
        if id & PHY_ID_MASK != BCM54213PE_ID & PHY_ID_MASK {
            return Err(Error::WrongPhyId(id));
        }
        self.mdio_write(PHY_ADDRESS, MII_BMCR, BMCR_RESET)?;
        let mut polls = 0;
        while self.mdio_read(PHY_ADDRESS, MII_BMCR)? & BMCR_RESET != 0 {
            polls += 1;
            if polls >= PHY_RESET_POLLS {
                return Err(Error::PhyResetTimeout);
            }
            self.delay.delay_ms(1);
        }
        self.set_phy_delays()?;
        // No pause advertised: pause is never negotiated, and `poll_link` has the MAC
        // ignore pause frames.
        self.mdio_write(PHY_ADDRESS, MII_ADVERTISE, ADVERTISE_ALL_10_100)?;
        self.mdio_write(
            PHY_ADDRESS,
            MII_CTRL1000,
            ADVERTISE_1000FULL | ADVERTISE_1000HALF,
        )?;
        self.mdio_write(PHY_ADDRESS, MII_BMCR, BMCR_ANENABLE | BMCR_ANRESTART)
    }

    fn mdio_command(
        &mut self,
        command: FieldValue<u32, MDIO_CMD_BITS::Register>,
        phy: u8,
        reg: u8,
    ) -> Result<u32, Error> {
        let command = command
            + MDIO_CMD_BITS::PMD.val(u32::from(phy))
            + MDIO_CMD_BITS::REG.val(u32::from(reg))
            + MDIO_CMD_BITS::START_BUSY::SET;
        self.bus.write(MDIO_CMD, command.value);
        for _ in 0..MDIO_POLLS {
            let status =
                LocalRegisterCopy::<u32, MDIO_CMD_BITS::Register>::new(self.bus.read(MDIO_CMD));
            if !status.is_set(MDIO_CMD_BITS::START_BUSY) {
                return Ok(status.get());
            }
            self.delay.delay_us(1);
        }
        Err(Error::MdioTimeout { phy, reg })
    }

    /// Reads a clause-22 PHY register over MDIO.
    pub fn mdio_read(&mut self, phy: u8, reg: u8) -> Result<u16, Error> {
        let status = LocalRegisterCopy::<u32, MDIO_CMD_BITS::Register>::new(self.mdio_command(
            MDIO_CMD_BITS::OP::Read,
            phy,
            reg,
        )?);
        if status.is_set(MDIO_CMD_BITS::READ_FAIL) {
            return Err(Error::MdioReadFail { phy, reg });
        }
        Ok(status.read(MDIO_CMD_BITS::DATA) as u16)
    }

    /// Writes a clause-22 PHY register over MDIO.
    pub fn mdio_write(&mut self, phy: u8, reg: u8, value: u16) -> Result<(), Error> {
        let command = MDIO_CMD_BITS::OP::Write + MDIO_CMD_BITS::DATA.val(u32::from(value));
        self.mdio_command(command, phy, reg).map(|_| ())
    }

    /// Checks the PHY's link. When it is up and autonegotiated, takes the UMAC out of
    /// its software reset (the first time) with the speed and duplex and pause frames
    /// ignored (pause is not advertised, so never negotiated), then enables its receiver
    /// and transmitter (Linux `bcmgenet_mac_config`); again on each link change.
    /// Returns the current link, `None` while it is down.
    pub fn poll_link(&mut self) -> Result<Option<Link>, Error> {
        // The link bit latches low: the second read gives the current state.
        self.mdio_read(PHY_ADDRESS, MII_BMSR)?;
        let bmsr = self.mdio_read(PHY_ADDRESS, MII_BMSR)?;
        if bmsr & BMSR_LSTATUS == 0 || bmsr & BMSR_ANEGCOMPLETE == 0 {
            self.link = None;
            return Ok(None);
        }
        let link = self.resolve_link()?;
        if self.link != Some(link) {
            let speed = match link.speed {
                Speed::Mbps10 => UMAC_CMD_BITS::SPEED::Mbps10,
                Speed::Mbps100 => UMAC_CMD_BITS::SPEED::Mbps100,
                Speed::Mbps1000 => UMAC_CMD_BITS::SPEED::Mbps1000,
            };
            let duplex = if link.full_duplex {
                UMAC_CMD_BITS::HD_EN::CLEAR
            } else {
                UMAC_CMD_BITS::HD_EN::SET
            };
            let mut cmd = LocalRegisterCopy::<u32, UMAC_CMD_BITS::Register>::new(0);
            cmd.write(
                speed
                    + duplex
                    + UMAC_CMD_BITS::RX_PAUSE_IGNORE::SET
                    + UMAC_CMD_BITS::TX_PAUSE_IGNORE::SET,
            );
            self.bus.write(UMAC_CMD, cmd.get());
            self.delay.delay_us(2);
            cmd.modify(UMAC_CMD_BITS::TX_EN::SET + UMAC_CMD_BITS::RX_EN::SET);
            self.bus.write(UMAC_CMD, cmd.get());
            self.link = Some(link);
        }
        Ok(Some(link))
    }

    /// The best mode both ends advertise (802.3 priority order).
    fn resolve_link(&mut self) -> Result<Link, Error> {
        let ctrl1000 = self.mdio_read(PHY_ADDRESS, MII_CTRL1000)?;
        let stat1000 = self.mdio_read(PHY_ADDRESS, MII_STAT1000)?;
        let link = |speed, full_duplex| Ok(Link { speed, full_duplex });
        if ctrl1000 & ADVERTISE_1000FULL != 0 && stat1000 & LPA_1000FULL != 0 {
            return link(Speed::Mbps1000, true);
        }
        if ctrl1000 & ADVERTISE_1000HALF != 0 && stat1000 & LPA_1000HALF != 0 {
            return link(Speed::Mbps1000, false);
        }
        let common =
            self.mdio_read(PHY_ADDRESS, MII_ADVERTISE)? & self.mdio_read(PHY_ADDRESS, MII_LPA)?;
        if common & ADVERTISE_100FULL != 0 {
            link(Speed::Mbps100, true)
        } else if common & ADVERTISE_100HALF != 0 {
            link(Speed::Mbps100, false)
        } else if common & ADVERTISE_10FULL != 0 {
            link(Speed::Mbps10, true)
        } else if common & ADVERTISE_10HALF != 0 {
            link(Speed::Mbps10, false)
        } else {
            Err(Error::NoCommonMode)
        }
    }

    /// The link programmed by the last [`Genet::poll_link`], if up.
    pub fn link(&self) -> Option<Link> {
        self.link
    }

    /// The driver's counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Returns the next good received frame, dropping (and counting) error frames on
    /// the way. The buffer goes back to the device when the [`RxFrame`] is dropped.
    pub fn receive(&mut self) -> Option<RxFrame<'_, B, M, C, D>> {
        loop {
            let prod = (self.bus.read(RDMA_PROD_INDEX) & INDEX_MASK) as u16;
            if prod == self.rx_cons {
                return None;
            }
            let slot = slot(self.rx_cons);
            let status = LocalRegisterCopy::<u32, DESC_BITS::Register>::new(self.bus.read(desc(
                RDMA_DESC_BASE,
                slot,
                DESC_LENGTH_STATUS,
            )));
            let length = status.read(DESC_BITS::LENGTH) as usize;
            let good = status.get() & DESC_RX_ERRORS == 0
                && status.is_set(DESC_BITS::SOP)
                && status.is_set(DESC_BITS::EOP)
                && length > RX_HEADER
                && length <= BUFFER_SIZE;
            if good {
                let phys = self.memory.phys_addr(Ring::Rx, slot);
                // The CPU must not see lines cached before the device wrote the frame.
                self.cache.invalidate(phys, length);
                self.stats.rx_frames += 1;
                return Some(RxFrame {
                    genet: self,
                    slot,
                    len: length - RX_HEADER,
                });
            }
            self.stats.rx_errors += 1;
            self.release_rx(slot);
        }
    }

    /// Gives the buffer of `slot` (the driver's consumer slot) back to the device.
    fn release_rx(&mut self, slot: usize) {
        let phys = self.memory.phys_addr(Ring::Rx, slot);
        self.cache.clean(phys, BUFFER_SIZE);
        self.rx_cons = self.rx_cons.wrapping_add(1);
        self.bus.write(RDMA_CONS_INDEX, u32::from(self.rx_cons));
    }

    /// Takes back the TX descriptors the device has finished; returns how many.
    pub fn reclaim_tx(&mut self) -> usize {
        let cons = (self.bus.read(TDMA_CONS_INDEX) & INDEX_MASK) as u16;
        let done = cons.wrapping_sub(self.tx_done);
        self.tx_done = cons;
        usize::from(done)
    }

    /// Number of TX descriptors the device still owns.
    pub fn tx_in_flight(&self) -> usize {
        usize::from(self.tx_prod.wrapping_sub(self.tx_done))
    }

    /// Queues one frame of `len` bytes (without FCS, which the MAC appends): `fill`
    /// writes it into the DMA buffer, frames under 60 bytes are zero-padded. Reclaims
    /// finished descriptors first when the ring is full.
    pub fn transmit(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) -> Result<(), Error> {
        if len == 0 || len > MAX_FRAME_LEN as usize {
            return Err(Error::BadLength(len));
        }
        if self.tx_in_flight() >= DESCRIPTORS {
            self.reclaim_tx();
            if self.tx_in_flight() >= DESCRIPTORS {
                return Err(Error::TxRingFull);
            }
        }
        let slot = slot(self.tx_prod);
        let wire_len = len.max(MIN_FRAME_LEN);
        let buffer = &mut self.memory.buffer_mut(Ring::Tx, slot)[..wire_len];
        buffer[len..].fill(0);
        fill(&mut buffer[..len]);
        let phys = self.memory.phys_addr(Ring::Tx, slot);
        self.cache.clean(phys, wire_len);
        let status = DESC_BITS::LENGTH.val(wire_len as u32)
            + DESC_BITS::SOP::SET
            + DESC_BITS::EOP::SET
            + DESC_BITS::TX_APPEND_CRC::SET
            + DESC_BITS::TX_QTAG.val(0x3F);
        self.write_desc(TDMA_DESC_BASE, slot, phys, status.value);
        self.tx_prod = self.tx_prod.wrapping_add(1);
        self.bus.write(TDMA_PROD_INDEX, u32::from(self.tx_prod));
        self.stats.tx_frames += 1;
        Ok(())
    }

    /// The backend, DMA memory and cache parts, for a board's diagnostics or for a
    /// model playing the device's part in tests.
    pub fn parts_mut(&mut self) -> (&mut B, &mut M, &mut C) {
        (&mut self.bus, &mut self.memory, &mut self.cache)
    }
}

/// A received frame, borrowed from the RX ring; dropping it returns the buffer to the
/// device (smoltcp `RxToken` style).
pub struct RxFrame<'a, B: GenetBus, M: DmaMemory, C: CacheMaintenance, D: DelayNs> {
    genet: &'a mut Genet<B, M, C, D>,
    slot: usize,
    len: usize,
}

impl<B: GenetBus, M: DmaMemory, C: CacheMaintenance, D: DelayNs> RxFrame<'_, B, M, C, D> {
    /// The frame from the destination MAC address on, without the 2-byte GENET header.
    pub fn data(&self) -> &[u8] {
        &self.genet.memory.buffer(Ring::Rx, self.slot)[RX_HEADER..RX_HEADER + self.len]
    }
}

impl<B: GenetBus, M: DmaMemory, C: CacheMaintenance, D: DelayNs> Drop for RxFrame<'_, B, M, C, D> {
    fn drop(&mut self) {
        self.genet.release_rx(self.slot);
    }
}
