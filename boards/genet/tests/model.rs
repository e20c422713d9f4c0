//! Host tests of the GENET v5 driver against a register-level model of the controller,
//! its DMA engine, the BCM54213PE PHY and a non-coherent data cache.
//!
//! The model reacts to the driver's register accesses as the hardware does (MDIO
//! completion, DMA indices, the MAC reset trap) and records every rule the driver
//! breaks as a violation; each test ends by asserting there are none. The last tests
//! drive the same model through [`GenetNet`], the kernel's `NetDevice` view.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tern_genet::net::LINK_POLL_INTERVAL_NS;
use tern_genet::regs::*;
use tern_genet::{
    CacheMaintenance, DmaMemory, Error, Genet, GenetBus, GenetNet, Link, Ring, Speed, BUFFER_SIZE,
};
use tern_hal::{MonotonicClock, NetDevice, NetError};

const RX_PHYS: u64 = 0x1000_0000;
/// Above 4 GiB, so that the high address word matters.
const TX_PHYS: u64 = 0x1_2000_0000;
const MAC: [u8; 6] = [0xdc, 0xa6, 0x32, 0x01, 0x02, 0x03];

/// A non-coherent cache as seen by the tests: which buffers the CPU touched since
/// their last clean, and which the device wrote since their last invalidate.
#[derive(Default)]
struct CacheState {
    touched: HashSet<(Ring, usize)>,
    stale: HashSet<(Ring, usize)>,
    violations: Vec<String>,
}

type Shared = Arc<Mutex<CacheState>>;

fn locate(phys: u64) -> (Ring, usize) {
    if phys >= TX_PHYS {
        (Ring::Tx, ((phys - TX_PHYS) / BUFFER_SIZE as u64) as usize)
    } else {
        (Ring::Rx, ((phys - RX_PHYS) / BUFFER_SIZE as u64) as usize)
    }
}

struct TestMemory {
    rx: Vec<Vec<u8>>,
    tx: Vec<Vec<u8>>,
    cache: Shared,
}

impl TestMemory {
    fn ring(&self, ring: Ring) -> &Vec<Vec<u8>> {
        match ring {
            Ring::Rx => &self.rx,
            Ring::Tx => &self.tx,
        }
    }

    /// The device's view of a buffer (DMA bypasses the cache).
    fn device_buffer(&mut self, ring: Ring, slot: usize) -> &mut Vec<u8> {
        match ring {
            Ring::Rx => &mut self.rx[slot],
            Ring::Tx => &mut self.tx[slot],
        }
    }
}

impl DmaMemory for TestMemory {
    fn phys_addr(&self, ring: Ring, slot: usize) -> u64 {
        let base = if ring == Ring::Rx { RX_PHYS } else { TX_PHYS };
        base + (slot * BUFFER_SIZE) as u64
    }

    fn buffer(&self, ring: Ring, slot: usize) -> &[u8] {
        let mut cache = self.cache.lock().unwrap();
        if cache.stale.contains(&(ring, slot)) {
            cache.violations.push(format!(
                "CPU read {ring:?} buffer {slot} without invalidating it after DMA"
            ));
        }
        cache.touched.insert((ring, slot));
        &self.ring(ring)[slot]
    }

    fn buffer_mut(&mut self, ring: Ring, slot: usize) -> &mut [u8] {
        self.cache.lock().unwrap().touched.insert((ring, slot));
        self.device_buffer(ring, slot)
    }
}

struct TestCache {
    cache: Shared,
    cleans: usize,
}

impl CacheMaintenance for TestCache {
    fn clean(&mut self, phys: u64, len: usize) {
        assert!(len <= BUFFER_SIZE);
        self.cleans += 1;
        self.cache.lock().unwrap().touched.remove(&locate(phys));
    }

    fn invalidate(&mut self, phys: u64, len: usize) {
        assert!(len <= BUFFER_SIZE);
        self.cache.lock().unwrap().stale.remove(&locate(phys));
    }
}

/// Counts the time the driver waited.
#[derive(Default)]
struct TestDelay {
    ns: u64,
}

impl embedded_hal::delay::DelayNs for TestDelay {
    fn delay_ns(&mut self, ns: u32) {
        self.ns += u64::from(ns);
    }
}

/// The BCM54213PE at MDIO address 1, and its link partner.
struct Phy {
    id: u32,
    regs: [u16; 32],
    reset_reads_left: u32,
    reset_stuck: bool,
    autoneg_started: bool,
    link_up: bool,
    partner_lpa: u16,
    partner_stat1000: u16,
}

impl Phy {
    fn new() -> Self {
        Self {
            id: 0x600d_84a2,
            regs: [0; 32],
            reset_reads_left: 0,
            reset_stuck: false,
            autoneg_started: false,
            link_up: true,
            partner_lpa: 0x41E1,
            partner_stat1000: 0x0C00,
        }
    }

    fn read(&mut self, reg: u8) -> u16 {
        match reg {
            0 => {
                if self.reset_reads_left > 0 {
                    if !self.reset_stuck {
                        self.reset_reads_left -= 1;
                    }
                    self.regs[0] | 0x8000
                } else {
                    self.regs[0]
                }
            }
            1 if self.link_up && self.autoneg_started => 0x7969 | 0x0024,
            1 => 0x7949,
            2 => (self.id >> 16) as u16,
            3 => self.id as u16,
            5 => self.partner_lpa,
            10 => self.partner_stat1000,
            _ => self.regs[usize::from(reg)],
        }
    }

    fn write(&mut self, reg: u8, value: u16) {
        if reg == 0 && value & 0x8000 != 0 {
            self.regs = [0; 32];
            self.autoneg_started = false;
            self.reset_reads_left = 2;
            return;
        }
        if reg == 0 {
            // The restart bit self-clears.
            self.autoneg_started |= value & 0x0200 != 0;
            self.regs[0] = value & !0x0200;
        } else {
            self.regs[usize::from(reg)] = value;
        }
    }
}

/// The controller: register file, DMA indices, MDIO, and the rule checks.
struct Model {
    regs: Vec<u32>,
    writes: Vec<(usize, u32)>,
    violations: Vec<String>,
    cache: Shared,
    phy: Phy,
    mdio_busy_reads: u32,
    mdio_stuck: bool,
    mdio_busy_left: u32,
    rx_prod: u16,
    tx_cons: u16,
}

impl Model {
    fn new(cache: Shared) -> Self {
        let mut regs = vec![0; 0x4000];
        regs[SYS_REV_CTRL / 4] = 0x0600_0000;
        // The trap: the MAC powers up held in reset.
        regs[SYS_RBUF_FLUSH_CTRL / 4] = RBUF_FLUSH_MAC_RESET;
        Self {
            regs,
            writes: Vec::new(),
            violations: Vec::new(),
            cache,
            phy: Phy::new(),
            mdio_busy_reads: 3,
            mdio_stuck: false,
            mdio_busy_left: 0,
            rx_prod: 0,
            tx_cons: 0,
        }
    }

    fn reg(&self, offset: usize) -> u32 {
        self.regs[offset / 4]
    }

    fn dma_on(&self, dma: usize) -> bool {
        self.reg(dma + DMA_CTRL) & 1 != 0
    }

    fn rx_cons(&self) -> u16 {
        self.reg(RDMA_CONS_INDEX) as u16
    }

    fn tx_prod(&self) -> u16 {
        self.reg(TDMA_PROD_INDEX) as u16
    }

    fn rx_ready(&self) -> bool {
        self.dma_on(RDMA_REGS)
            && self.reg(UMAC_CMD) & 0b10 != 0
            && self.reg(EXT_RGMII_OOB_CTRL) & (1 << 6) != 0
    }

    /// Index of the first write of `value & mask == want` to `offset`.
    fn first_write(&self, offset: usize, mask: u32, want: u32) -> Option<usize> {
        self.writes
            .iter()
            .position(|&(o, v)| o == offset && v & mask == want)
    }

    fn check_descriptor_access(&mut self, offset: usize, what: &str) {
        let (base, dma) = if (RDMA_DESC_BASE..RDMA_RING16).contains(&offset) {
            (RDMA_DESC_BASE, RDMA_REGS)
        } else if (TDMA_DESC_BASE..TDMA_RING16).contains(&offset) {
            (TDMA_DESC_BASE, TDMA_REGS)
        } else {
            return;
        };
        if !self.dma_on(dma) {
            return;
        }
        let slot = ((offset - base) / DESC_SIZE) as u16;
        let device_owns = if base == RDMA_DESC_BASE {
            // The driver owns [cons, prod): frames the device completed.
            let held = self.rx_prod.wrapping_sub(self.rx_cons());
            slot.wrapping_sub(self.rx_cons()) % 256 >= held && held < 256
        } else {
            // The device owns [cons, prod): frames posted and not yet sent.
            let posted = self.tx_prod().wrapping_sub(self.tx_cons);
            posted >= 256 || slot.wrapping_sub(self.tx_cons) % 256 < posted
        };
        if device_owns {
            self.violations.push(format!(
                "driver {what} descriptor at 0x{offset:04x} owned by the device"
            ));
        }
    }

    fn ring_configured(&self, ring: usize, dma: usize) -> bool {
        self.reg(ring + RING_BUF_SIZE) == (256 << 16 | 2048)
            && self.reg(ring + RING_END_ADDR) == 0x2FF
            && self.reg(dma + DMA_RING_CFG) & (1 << 16) != 0
    }

    fn mdio(&mut self, command: u32) {
        let phy = (command >> 21) & 0x1F;
        let reg = ((command >> 16) & 0x1F) as u8;
        let mut result = command & !(0xFFFF | 1 << 28);
        match (command >> 26) & 3 {
            2 if phy == 1 => result |= u32::from(self.phy.read(reg)),
            2 => result |= 1 << 28,
            1 if phy == 1 => self.phy.write(reg, command as u16),
            1 => {}
            _ => self
                .violations
                .push(format!("bad MDIO opcode in 0x{command:08x}")),
        }
        self.regs[MDIO_CMD / 4] = result | 1 << 29;
        self.mdio_busy_left = self.mdio_busy_reads;
    }

    /// The device receives a frame from the wire; false if the MAC/DMA drops it.
    fn deliver(&mut self, memory: &mut TestMemory, payload: &[u8], status: u32) -> bool {
        if !self.rx_ready() || self.rx_prod.wrapping_sub(self.rx_cons()) >= 256 {
            return false;
        }
        let slot = usize::from(self.rx_prod) % 256;
        let desc = RDMA_DESC_BASE + slot * DESC_SIZE;
        let phys = u64::from(self.reg(desc + DESC_ADDR_LO))
            | u64::from(self.reg(desc + DESC_ADDR_HI)) << 32;
        let (ring, buf) = locate(phys);
        assert_eq!(
            (ring, buf),
            (Ring::Rx, slot),
            "RX descriptor {slot} points elsewhere"
        );
        {
            let mut cache = self.cache.lock().unwrap();
            if cache.touched.contains(&(ring, buf)) {
                cache.violations.push(format!(
                    "RX buffer {slot} given to the device without a clean"
                ));
            }
            cache.stale.insert((ring, buf));
        }
        let data = memory.device_buffer(ring, buf);
        data[..2].fill(0xEE);
        data[2..2 + payload.len()].copy_from_slice(payload);
        let len = payload.len() as u32 + 2;
        self.regs[(desc + DESC_LENGTH_STATUS) / 4] = len << 16 | 0x6000 | status;
        self.rx_prod = self.rx_prod.wrapping_add(1);
        true
    }

    /// The device sends up to `max` posted frames and returns them.
    fn complete_tx(&mut self, memory: &mut TestMemory, max: usize) -> Vec<Vec<u8>> {
        let mut sent = Vec::new();
        while self.tx_cons != self.tx_prod() && sent.len() < max {
            let desc = TDMA_DESC_BASE + usize::from(self.tx_cons) % 256 * DESC_SIZE;
            let status = self.reg(desc + DESC_LENGTH_STATUS);
            let flags = 0x2000 | 0x4000 | 0x40 | 0x3F << 7;
            if status & flags != flags {
                self.violations.push(format!(
                    "TX descriptor status 0x{status:08x} lacks SOP/EOP/CRC/QTAG"
                ));
            }
            let phys = u64::from(self.reg(desc + DESC_ADDR_LO))
                | u64::from(self.reg(desc + DESC_ADDR_HI)) << 32;
            let (ring, slot) = locate(phys);
            assert_eq!(ring, Ring::Tx);
            let len = (status >> 16 & 0xFFF) as usize;
            sent.push(memory.device_buffer(ring, slot)[..len].to_vec());
            self.tx_cons = self.tx_cons.wrapping_add(1);
        }
        sent
    }
}

impl GenetBus for Model {
    fn read(&mut self, offset: usize) -> u32 {
        self.check_descriptor_access(offset, "read");
        match offset {
            RDMA_PROD_INDEX => u32::from(self.rx_prod),
            TDMA_CONS_INDEX => u32::from(self.tx_cons),
            MDIO_CMD => {
                let value = self.reg(MDIO_CMD);
                if self.mdio_busy_left > 0 && !self.mdio_stuck {
                    self.mdio_busy_left -= 1;
                    if self.mdio_busy_left == 0 {
                        self.regs[MDIO_CMD / 4] &= !(1 << 29);
                    }
                }
                value
            }
            _ => self.reg(offset),
        }
    }

    fn write(&mut self, offset: usize, value: u32) {
        self.writes.push((offset, value));
        self.check_descriptor_access(offset, "wrote");
        if (0x800..0x1000).contains(&offset)
            && self.reg(SYS_RBUF_FLUSH_CTRL) & RBUF_FLUSH_MAC_RESET != 0
        {
            self.violations.push(format!(
                "UMAC write to 0x{offset:04x} dropped: MAC held in reset"
            ));
            return;
        }
        match offset {
            SYS_REV_CTRL | RDMA_PROD_INDEX | TDMA_CONS_INDEX => {
                self.violations
                    .push(format!("write to read-only 0x{offset:04x}"));
                return;
            }
            UMAC_CMD if value & 0b10 != 0 && self.reg(EXT_RGMII_OOB_CTRL) & (1 << 6) == 0 => {
                self.violations
                    .push("RX enabled before RGMII_MODE_EN".into());
            }
            o if (o == RDMA_REGS + DMA_CTRL || o == TDMA_REGS + DMA_CTRL) && value & 1 != 0 => {
                let ring = if o == RDMA_REGS + DMA_CTRL {
                    RDMA_RING16
                } else {
                    TDMA_RING16
                };
                if !self.ring_configured(ring, o - DMA_CTRL) || value & (1 << 17) == 0 {
                    self.violations.push(format!(
                        "DMA enabled at 0x{o:04x} before its ring 16 was configured"
                    ));
                }
            }
            RDMA_CONS_INDEX if self.dma_on(RDMA_REGS) => {
                let new = value as u16;
                if new.wrapping_sub(self.rx_cons()) > self.rx_prod.wrapping_sub(self.rx_cons()) {
                    self.violations
                        .push(format!("RX consumer index {new} passes the producer"));
                }
                let slot = usize::from(self.rx_cons()) % 256;
                if self
                    .cache
                    .lock()
                    .unwrap()
                    .touched
                    .contains(&(Ring::Rx, slot))
                {
                    self.violations
                        .push(format!("RX buffer {slot} returned without a clean"));
                }
            }
            TDMA_PROD_INDEX if self.dma_on(TDMA_REGS) => {
                let new = value as u16;
                if new.wrapping_sub(self.tx_cons) > 256 {
                    self.violations
                        .push(format!("TX producer index {new} overruns the ring"));
                }
                let slot = usize::from(self.tx_prod()) % 256;
                if self
                    .cache
                    .lock()
                    .unwrap()
                    .touched
                    .contains(&(Ring::Tx, slot))
                {
                    self.violations
                        .push(format!("TX buffer {slot} posted without a clean"));
                }
            }
            MDIO_CMD if value & (1 << 29) != 0 => {
                self.mdio(value);
                return;
            }
            _ => {}
        }
        self.regs[offset / 4] = value;
    }
}

type Driver = Genet<Model, TestMemory, TestCache, TestDelay>;

fn parts() -> (Model, TestMemory, TestCache, TestDelay) {
    let cache: Shared = Arc::default();
    let memory = TestMemory {
        rx: vec![vec![0; BUFFER_SIZE]; 256],
        tx: vec![vec![0; BUFFER_SIZE]; 256],
        cache: cache.clone(),
    };
    let test_cache = TestCache {
        cache: cache.clone(),
        cleans: 0,
    };
    (Model::new(cache), memory, test_cache, TestDelay::default())
}

fn start(configure: impl FnOnce(&mut Model)) -> Result<Driver, Error> {
    let (mut model, memory, cache, delay) = parts();
    configure(&mut model);
    Genet::new(model, memory, cache, delay, MAC)
}

fn no_violations(genet: &mut Driver) {
    let (model, memory, _) = genet.parts_mut();
    assert_eq!(model.violations, Vec::<String>::new());
    assert_eq!(
        memory.cache.lock().unwrap().violations,
        Vec::<String>::new()
    );
}

fn link_up(genet: &mut Driver) -> Link {
    genet.poll_link().unwrap().expect("link up")
}

#[test]
fn bring_up_follows_the_required_order() {
    let mut genet = start(|_| {}).unwrap();
    no_violations(&mut genet);
    let (model, _, cache) = genet.parts_mut();
    let out_of_reset = model
        .first_write(SYS_RBUF_FLUSH_CTRL, RBUF_FLUSH_MAC_RESET, 0)
        .unwrap();
    let first_cmd = model.first_write(UMAC_CMD, 0, 0).unwrap();
    assert!(out_of_reset < first_cmd);
    let rgmii = model
        .first_write(EXT_RGMII_OOB_CTRL, 1 << 6, 1 << 6)
        .unwrap();
    let rx_dma = model.first_write(RDMA_REGS + DMA_CTRL, 1, 1).unwrap();
    let tx_dma = model.first_write(TDMA_REGS + DMA_CTRL, 1, 1).unwrap();
    let rx_ring = model
        .first_write(RDMA_REGS + DMA_RING_CFG, 1 << 16, 1 << 16)
        .unwrap();
    let tx_ring = model
        .first_write(TDMA_REGS + DMA_RING_CFG, 1 << 16, 1 << 16)
        .unwrap();
    assert!(rgmii < rx_dma && rx_ring < rx_dma && tx_ring < tx_dma);
    assert_eq!(
        model.reg(EXT_RGMII_OOB_CTRL) & (1 << 16 | 1 << 6 | 1 << 5),
        1 << 16 | 1 << 6
    );
    assert_eq!(model.reg(UMAC_MAC0), 0xdca6_3201);
    assert_eq!(model.reg(UMAC_MAC1), 0x0203);
    assert_eq!(model.reg(UMAC_MAX_FRAME_LEN), 1536);
    assert_eq!(model.reg(RBUF_CTRL) & RBUF_ALIGN_2B, RBUF_ALIGN_2B);
    assert_eq!(model.reg(SYS_PORT_CTRL), PORT_MODE_EXT_GPHY);
    // RX and TX stay off in the MAC until the link speed is known.
    assert_eq!(model.reg(UMAC_CMD) & 0b11, 0);
    // Every RX buffer was cleaned before the device got it.
    assert_eq!(cache.cleans, 256);
    for slot in 0..256 {
        let desc = RDMA_DESC_BASE + slot * DESC_SIZE;
        assert_eq!(model.reg(desc + DESC_LENGTH_STATUS), 2048 << 16 | 0x8000);
        assert_eq!(
            u64::from(model.reg(desc + DESC_ADDR_LO)),
            RX_PHYS + (slot * BUFFER_SIZE) as u64
        );
    }
    assert!(model.phy.autoneg_started);
    assert_eq!(model.phy.regs[9], 0x0300);
}

#[test]
fn the_model_catches_a_driver_that_skips_the_mac_reset_trap() {
    let (mut model, ..) = parts();
    model.write(UMAC_CMD, 3);
    assert_eq!(model.reg(UMAC_CMD), 0);
    assert_eq!(model.violations.len(), 1);
}

#[test]
fn wrong_revision_and_phy_problems_are_typed_errors() {
    let rev = start(|m| m.regs[0] = 0x0500_0000).err();
    assert_eq!(rev, Some(Error::UnsupportedRevision(0x0500_0000)));
    let id = start(|m| m.phy.id = 0x0143_bc70).err();
    assert_eq!(id, Some(Error::WrongPhyId(0x0143_bc70)));
    let stuck = start(|m| m.mdio_stuck = true).err();
    assert_eq!(stuck, Some(Error::MdioTimeout { phy: 1, reg: 2 }));
    let reset = start(|m| m.phy.reset_stuck = true).err();
    assert_eq!(reset, Some(Error::PhyResetTimeout));
}

#[test]
fn mdio_reads_and_writes_reach_the_phy() {
    let mut genet = start(|_| {}).unwrap();
    genet.mdio_write(1, 0x1C, 0xABCD).unwrap();
    assert_eq!(genet.mdio_read(1, 0x1C).unwrap(), 0xABCD);
    assert_eq!(genet.mdio_read(1, 2).unwrap(), 0x600d);
    assert_eq!(
        genet.mdio_read(7, 2),
        Err(Error::MdioReadFail { phy: 7, reg: 2 })
    );
    let (model, ..) = genet.parts_mut();
    let last = model
        .writes
        .iter()
        .rev()
        .find(|w| w.0 == MDIO_CMD)
        .unwrap()
        .1;
    assert_eq!(last, 1 << 29 | 2 << 26 | 7 << 21 | 2 << 16);
    no_violations(&mut genet);
}

#[test]
fn link_speed_and_duplex_are_programmed() {
    let cases = [
        (0x41E1, 0x0C00, Speed::Mbps1000, true, 2),
        (0x41E1, 0x0400, Speed::Mbps1000, false, 2),
        (0x4181, 0, Speed::Mbps100, true, 1),
        (0x4081, 0, Speed::Mbps100, false, 1),
        (0x4041, 0, Speed::Mbps10, true, 0),
        (0x4021, 0, Speed::Mbps10, false, 0),
    ];
    for (lpa, stat1000, speed, full_duplex, field) in cases {
        let mut genet = start(|m| {
            m.phy.partner_lpa = lpa;
            m.phy.partner_stat1000 = stat1000;
        })
        .unwrap();
        assert_eq!(link_up(&mut genet), Link { speed, full_duplex });
        let cmd = genet.parts_mut().0.reg(UMAC_CMD);
        assert_eq!(cmd >> 2 & 3, field);
        assert_eq!(cmd & 1 << 10 == 0, full_duplex);
        assert_eq!(cmd & 0b11, 0b11);
        no_violations(&mut genet);
    }
    let mut none = start(|m| {
        m.phy.partner_lpa = 0x4001;
        m.phy.partner_stat1000 = 0;
    })
    .unwrap();
    assert_eq!(none.poll_link(), Err(Error::NoCommonMode));
    let mut down = start(|m| m.phy.link_up = false).unwrap();
    assert_eq!(down.poll_link(), Ok(None));
    assert_eq!(down.parts_mut().0.reg(UMAC_CMD) & 0b11, 0);
}

fn frame(n: usize) -> Vec<u8> {
    (0..60 + n % 1400).map(|i| (i + n) as u8).collect()
}

#[test]
fn rx_hands_out_frames_across_ring_and_index_wrap() {
    // The producer index starts near 2^16, so it wraps during the test.
    let mut genet = start(|m| m.rx_prod = 0xFF80).unwrap();
    let (model, memory, _) = genet.parts_mut();
    assert!(
        !model.deliver(memory, &frame(0), 0),
        "RX must be off before the link"
    );
    link_up(&mut genet);
    let mut received = 0;
    let mut delivered = 0;
    for round in 0..6 {
        // Fill the whole ring (256 frames), one more is dropped by the device.
        let (model, memory, _) = genet.parts_mut();
        for _ in 0..256 {
            assert!(model.deliver(memory, &frame(delivered), 0));
            delivered += 1;
        }
        assert!(
            !model.deliver(memory, &frame(0), 0),
            "round {round}: ring full"
        );
        while let Some(rx) = genet.receive() {
            assert_eq!(rx.data(), frame(received).as_slice());
            received += 1;
        }
        assert_eq!(received, delivered);
    }
    assert_eq!(genet.stats().rx_frames, 1536);
    assert_eq!(genet.parts_mut().0.rx_cons(), 0xFF80u16.wrapping_add(1536));
    no_violations(&mut genet);
}

#[test]
fn error_frames_are_counted_and_dropped() {
    let mut genet = start(|_| {}).unwrap();
    link_up(&mut genet);
    let (model, memory, _) = genet.parts_mut();
    for (n, status) in [(1, 0x02), (2, 0), (3, 0x01), (4, 0x10), (5, 0), (6, 0x04)] {
        assert!(model.deliver(memory, &frame(n), status));
    }
    // A frame without EOP (spread over buffers) is dropped too.
    assert!(model.deliver(memory, &frame(7), 0));
    let desc = RDMA_DESC_BASE + 6 * DESC_SIZE + DESC_LENGTH_STATUS;
    model.regs[desc / 4] &= !0x4000;
    let mut good = Vec::new();
    while let Some(rx) = genet.receive() {
        good.push(rx.data().to_vec());
    }
    assert_eq!(good, vec![frame(2), frame(5)]);
    let stats = genet.stats();
    assert_eq!((stats.rx_frames, stats.rx_errors), (2, 5));
    assert_eq!(genet.parts_mut().0.rx_cons(), 7);
    no_violations(&mut genet);
}

#[test]
fn tx_queues_frames_across_ring_and_index_wrap() {
    let mut genet = start(|m| m.tx_cons = 0xFFA0).unwrap();
    link_up(&mut genet);
    let mut sent = Vec::new();
    for n in 0..700 {
        let data = frame(n);
        genet
            .transmit(data.len(), |buf| buf.copy_from_slice(&data))
            .unwrap();
        if n % 100 == 99 {
            let (model, memory, _) = genet.parts_mut();
            sent.extend(model.complete_tx(memory, usize::MAX));
        }
    }
    let expected: Vec<_> = (0..700).map(frame).collect();
    assert_eq!(sent, expected);
    assert_eq!(genet.reclaim_tx(), 100);
    assert_eq!(genet.tx_in_flight(), 0);
    assert_eq!(genet.parts_mut().0.tx_prod(), 0xFFA0u16.wrapping_add(700));
    no_violations(&mut genet);
}

#[test]
fn tx_ring_full_short_frames_and_bad_lengths() {
    let mut genet = start(|_| {}).unwrap();
    link_up(&mut genet);
    assert_eq!(genet.transmit(0, |_| {}), Err(Error::BadLength(0)));
    assert_eq!(genet.transmit(1537, |_| {}), Err(Error::BadLength(1537)));
    for _ in 0..256 {
        genet.transmit(20, |buf| buf.fill(0xAB)).unwrap();
    }
    assert_eq!(genet.transmit(20, |_| {}), Err(Error::TxRingFull));
    let (model, memory, _) = genet.parts_mut();
    let sent = model.complete_tx(memory, 1);
    let mut padded = vec![0xAB; 20];
    padded.resize(60, 0);
    assert_eq!(sent, vec![padded]);
    // The one freed descriptor is reclaimed and reused.
    genet.transmit(60, |buf| buf.fill(1)).unwrap();
    assert_eq!(genet.tx_in_flight(), 256);
    no_violations(&mut genet);
}

#[test]
fn a_link_that_drops_and_returns_at_another_speed_is_reprogrammed() {
    let mut genet = start(|_| {}).unwrap();
    assert_eq!(link_up(&mut genet).speed, Speed::Mbps1000);
    genet.parts_mut().0.phy.link_up = false;
    assert_eq!(genet.poll_link(), Ok(None));
    assert_eq!(genet.link(), None);
    let phy = &mut genet.parts_mut().0.phy;
    phy.link_up = true;
    phy.partner_lpa = 0x4181;
    phy.partner_stat1000 = 0;
    let link = link_up(&mut genet);
    assert_eq!(
        link,
        Link {
            speed: Speed::Mbps100,
            full_duplex: true
        }
    );
    assert_eq!(genet.link(), Some(link));
    assert_eq!(genet.parts_mut().0.reg(UMAC_CMD) >> 2 & 3, 1);
    no_violations(&mut genet);
}

/// A clock the test moves by hand.
struct TestClock(AtomicU64);

impl MonotonicClock for TestClock {
    fn now_ns(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    fn counter_hz(&self) -> u64 {
        1_000_000_000
    }
}

impl TestClock {
    fn advance(&self, ns: u64) {
        self.0.fetch_add(ns, Ordering::SeqCst);
    }
}

type Net = GenetNet<Model, TestMemory, TestCache, TestDelay>;

fn net(configure: impl FnOnce(&mut Model)) -> (Net, &'static TestClock) {
    let clock: &'static TestClock = Box::leak(Box::new(TestClock(AtomicU64::new(7))));
    (GenetNet::new(start(configure).unwrap(), MAC, clock), clock)
}

#[test]
fn net_device_follows_the_link_on_its_poll_interval() {
    let (mut net, clock) = net(|m| m.phy.link_up = false);
    assert_eq!(net.mac_address(), MAC);
    assert_eq!(net.max_frame_len(), 1514);
    assert!(!net.link_up());
    assert!(!net.can_transmit());
    assert_eq!(net.transmit(&frame(1)), Err(NetError::Busy));
    net.genet().parts_mut().0.phy.link_up = true;
    // The PHY is read again only once the interval has passed.
    clock.advance(LINK_POLL_INTERVAL_NS - 1);
    assert!(!net.can_transmit());
    clock.advance(1);
    assert!(net.can_transmit());
    assert!(net.link_up());
    assert_eq!(
        net.genet().link().map(|link| link.speed),
        Some(Speed::Mbps1000)
    );
    no_violations(net.genet());
}

#[test]
fn net_device_moves_frames_and_checks_lengths() {
    let (mut net, _) = net(|_| {});
    assert!(net.link_up());
    net.transmit(&frame(3)).unwrap();
    let (model, memory, _) = net.genet().parts_mut();
    assert_eq!(model.complete_tx(memory, 10), vec![frame(3)]);
    assert!(model.deliver(memory, &frame(4), 0));
    assert!(model.deliver(memory, &frame(5), 0));
    let mut buf = [0u8; 1514];
    let len = net.receive(&mut buf).expect("frame 4");
    assert_eq!(&buf[..len], frame(4).as_slice());
    // A frame longer than the caller's buffer is dropped, and its buffer returned.
    assert_eq!(net.receive(&mut [0u8; 10]), None);
    assert_eq!(net.receive(&mut buf), None);
    assert_eq!(net.genet().parts_mut().0.rx_cons(), 2);
    assert_eq!(net.transmit(&[]), Err(NetError::BadLength(0)));
    assert_eq!(net.transmit(&[0; 1515]), Err(NetError::BadLength(1515)));
    no_violations(net.genet());
}

#[test]
fn net_device_reports_a_full_ring_as_busy_and_recovers() {
    let (mut net, _) = net(|_| {});
    for n in 0..256 {
        net.transmit(&frame(n)).unwrap();
    }
    assert!(!net.can_transmit());
    assert_eq!(net.transmit(&frame(0)), Err(NetError::Busy));
    let (model, memory, _) = net.genet().parts_mut();
    assert_eq!(model.complete_tx(memory, 1), vec![frame(0)]);
    assert!(net.can_transmit());
    net.transmit(&frame(256)).unwrap();
    no_violations(net.genet());
}

#[test]
fn net_device_counts_an_mdio_failure_as_link_down() {
    let (mut net, clock) = net(|_| {});
    assert!(net.link_up());
    net.genet().parts_mut().0.mdio_stuck = true;
    clock.advance(LINK_POLL_INTERVAL_NS);
    assert!(!net.can_transmit());
    assert!(!net.link_up());
    assert!(matches!(net.last_error(), Some(Error::MdioTimeout { .. })));
    let model = net.genet().parts_mut().0;
    model.mdio_stuck = false;
    model.mdio_busy_left = 0;
    model.regs[MDIO_CMD / 4] &= !(1 << 29);
    clock.advance(LINK_POLL_INTERVAL_NS);
    assert!(net.can_transmit());
    assert_eq!(net.last_error(), None);
    no_violations(net.genet());
}
