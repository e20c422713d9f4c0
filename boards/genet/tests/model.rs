//! Host tests of the GENET v5 driver against a register-level model of the controller,
//! its DMA engine, the BCM54213PE PHY and a non-coherent data cache.
//!
//! The model reacts to the driver's register accesses as the hardware does (MDIO
//! completion, DMA indices, the MAC reset trap) and records every rule the driver
//! breaks as a violation; each test ends by asserting there are none. Its register
//! map (`map`) is its own, declared from U-Boot's and Linux's GENET sources, never
//! taken from the driver's `regs`: `cases::miswired` moves each register the driver
//! uses to a wrong offset and checks that the model catches every one, and
//! `cases::net_device` drives the same model through [`GenetNet`], the kernel's
//! `NetDevice` view.
//!
//! This file holds the controller, its DMA memory and cache, and the helpers the
//! tests share; `phy` the PHY; `cases` the tests, by what they exercise.

mod cases;
mod map;
mod phy;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use map::*;
use phy::*;
use tern_genet::net::LINK_POLL_INTERVAL_NS;
use tern_genet::{
    CacheMaintenance, DmaMemory, Error, Genet, GenetBus, GenetNet, Link, RgmiiDelays, Ring, Speed,
    BUFFER_SIZE,
};
use tern_hal::{MonotonicClock, NetDevice, NetError};

const RX_PHYS: u64 = 0x1000_0000;
/// Above 4 GiB, so that the high address word matters.
const TX_PHYS: u64 = 0x1_2000_0000;
const MAC: [u8; 6] = [0xdc, 0xa6, 0x32, 0x01, 0x02, 0x03];

/// The index registers of the default rings, by what they mean in each direction.
const RX_PROD: usize = RX_RING + RING_TX_CONS_RX_PROD_INDEX;
const RX_CONS: usize = RX_RING + RING_TX_PROD_RX_CONS_INDEX;
const TX_CONS: usize = TX_RING + RING_TX_CONS_RX_PROD_INDEX;
const TX_PROD: usize = TX_RING + RING_TX_PROD_RX_CONS_INDEX;

/// A non-coherent cache as seen by the tests: which buffers the CPU touched since
/// their last clean, and which the device wrote since their last invalidate.
#[derive(Default)]
struct CacheState {
    touched: HashSet<(Ring, usize)>,
    stale: HashSet<(Ring, usize)>,
    violations: Vec<String>,
}

type Shared = Arc<Mutex<CacheState>>;

/// The ring and slot of a test buffer's physical address, if it is one.
fn locate(phys: u64) -> Option<(Ring, usize)> {
    let size = BUFFER_SIZE as u64;
    let within = |base: u64| {
        (base..base + 256 * size)
            .contains(&phys)
            .then(|| ((phys - base) / size) as usize)
    };
    within(RX_PHYS)
        .map(|slot| (Ring::Rx, slot))
        .or_else(|| within(TX_PHYS).map(|slot| (Ring::Tx, slot)))
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
        let mut cache = self.cache.lock().unwrap();
        match locate(phys) {
            Some(buffer) => _ = cache.touched.remove(&buffer),
            None => cache
                .violations
                .push(format!("clean of 0x{phys:x}, not a DMA buffer")),
        }
    }

    fn invalidate(&mut self, phys: u64, len: usize) {
        assert!(len <= BUFFER_SIZE);
        let mut cache = self.cache.lock().unwrap();
        match locate(phys) {
            Some(buffer) => _ = cache.stale.remove(&buffer),
            None => cache
                .violations
                .push(format!("invalidate of 0x{phys:x}, not a DMA buffer")),
        }
    }
}

/// The model's time: nanoseconds the driver waited, shared with the [`Model`] so
/// that it can time pulses.
type Time = Arc<AtomicU64>;

/// Advances the shared time by what the driver waits.
#[derive(Default)]
struct TestDelay {
    now: Time,
}

impl embedded_hal::delay::DelayNs for TestDelay {
    fn delay_ns(&mut self, ns: u32) {
        self.now.fetch_add(u64::from(ns), Ordering::SeqCst);
    }
}

/// A value a register holds at power-up when U-Boot, the firmware or an earlier
/// boot used the controller: the driver must not rely on any reset value of the
/// registers it is required to program.
const STALE: u32 = 0x0bad;

/// The controller: register file, DMA indices, MDIO, and the rule checks.
struct Model {
    regs: Vec<u32>,
    /// The registers of the map, by offset.
    known: HashMap<usize, Register>,
    writes: Vec<(usize, u32)>,
    /// Registers written since power-up.
    written: HashSet<usize>,
    /// Registers (not descriptors) the driver read or wrote.
    accessed: BTreeSet<usize>,
    /// Registers the driver read.
    reads: BTreeSet<usize>,
    /// The driver's waits so far ([`TestDelay`]).
    now: Time,
    /// When the driver last asserted the MAC reset of `SYS_RBUF_FLUSH_CTRL`.
    mac_reset_at: Option<u64>,
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
    fn new(cache: Shared, now: Time) -> Self {
        let known: HashMap<usize, Register> = registers()
            .into_iter()
            .map(|register| (register.offset, register))
            .collect();
        let mut regs = vec![0; 0x4000];
        for (ring, control) in [(RX_RING, RX_CTRL), (TX_RING, TX_CTRL)] {
            for offset in (ring..ring + 0x34)
                .step_by(4)
                .chain([control + DMA_RING_CFG, control + DMA_SCB_BURST_SIZE])
            {
                regs[offset / 4] = STALE;
            }
        }
        regs[SYS_REV_CTRL / 4] = 0x0600_0000;
        // The trap: the MAC powers up held in reset.
        regs[SYS_RBUF_FLUSH_CTRL / 4] = MAC_RESET;
        // What Linux leaves behind (a reboot, a chainloaded kernel): status blocks
        // on both buffers, DMA on with other queues' rings enabled, the MAC running.
        regs[RBUF_CTRL / 4] = RBUF_64B_EN | RBUF_ALIGN_2B;
        regs[TBUF_CTRL / 4] = TBUF_64B_EN;
        for control in [RX_CTRL, TX_CTRL] {
            regs[(control + DMA_CTRL) / 4] = DMA_EN | 0x3_FFFE;
        }
        regs[UMAC_CMD / 4] = CMD_TX_EN | CMD_RX_EN | 2 << CMD_SPEED_SHIFT;
        // Internal PHY mode, the 1518-byte default frame length, pending link
        // interrupts, nothing masked.
        regs[UMAC_MAX_FRAME_LEN / 4] = 1518;
        for block in [INTRL2_0, INTRL2_1] {
            regs[(block + CPU_STAT) / 4] = 0x30;
        }
        Self {
            regs,
            known,
            writes: Vec::new(),
            written: HashSet::new(),
            accessed: BTreeSet::new(),
            reads: BTreeSet::new(),
            now,
            mac_reset_at: None,
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

    fn name(&self, offset: usize) -> String {
        match self.known.get(&offset) {
            Some(register) => format!("{} (0x{offset:04x})", register.name),
            None => format!("0x{offset:04x}"),
        }
    }

    fn dma_on(&self, control: usize) -> bool {
        self.reg(control + DMA_CTRL) & DMA_EN != 0
    }

    fn rx_cons(&self) -> u16 {
        self.reg(RX_CONS) as u16
    }

    fn tx_prod(&self) -> u16 {
        self.reg(TX_PROD) as u16
    }

    /// The UMAC moves frames only out of its software reset.
    fn mac_running(&self, enable: u32) -> bool {
        self.reg(UMAC_CMD) & (enable | CMD_SW_RESET) == enable
    }

    /// Pause negotiated: both ends advertise symmetric pause (802.3 annex 28B).
    fn pause_negotiated(&self) -> bool {
        self.phy.regs[4] & self.phy.partner_lpa & PAUSE_CAP != 0
    }

    fn rx_ready(&self) -> bool {
        self.dma_on(RX_CTRL)
            && self.mac_running(CMD_RX_EN)
            && self.reg(EXT_RGMII_OOB_CTRL) & RGMII_MODE_EN != 0
    }

    /// Index of the first write of `value & mask == want` to `offset`.
    fn first_write(&self, offset: usize, mask: u32, want: u32) -> Option<usize> {
        self.writes
            .iter()
            .position(|&(o, v)| o == offset && v & mask == want)
    }

    fn check_descriptor_access(&mut self, rx: bool, slot: usize, offset: usize, what: &str) {
        let control = if rx { RX_CTRL } else { TX_CTRL };
        if !self.dma_on(control) {
            return;
        }
        let slot = slot as u16;
        let device_owns = if rx {
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

    /// What a ring must hold before its DMA is enabled: every register U-Boot
    /// programs written since power-up, with the values of a 256-descriptor ring
    /// of 2048-byte buffers starting at descriptor 0, and the driver's index on
    /// the device's.
    fn check_ring_ready(&mut self, rx: bool, ctrl_value: u32) {
        let (ring, control, direction) = if rx {
            (RX_RING, RX_CTRL, "RX")
        } else {
            (TX_RING, TX_CTRL, "TX")
        };
        let mut required = vec![
            ring + RING_TX_READ_RX_WRITE_PTR,
            ring + RING_TX_PROD_RX_CONS_INDEX,
            ring + RING_BUF_SIZE,
            ring + RING_START_ADDR,
            ring + RING_END_ADDR,
            ring + RING_TX_FLOW_RX_XON_XOFF,
            ring + RING_TX_WRITE_RX_READ_PTR,
            control + DMA_RING_CFG,
            control + DMA_SCB_BURST_SIZE,
        ];
        if !rx {
            required.push(ring + RING_MBUF_DONE_THRESH);
        }
        for offset in required {
            if !self.written.contains(&offset) {
                let name = self.name(offset);
                self.violations.push(format!(
                    "{direction} DMA enabled before {name} was programmed"
                ));
            }
        }
        let expected = [
            (ring + RING_BUF_SIZE, 256 << 16 | 2048),
            (ring + RING_START_ADDR, 0),
            (ring + RING_END_ADDR, 0x2FF),
            (ring + RING_TX_READ_RX_WRITE_PTR, 0),
            (ring + RING_TX_WRITE_RX_READ_PTR, 0),
        ];
        for (offset, value) in expected {
            if self.reg(offset) != value {
                let (name, found) = (self.name(offset), self.reg(offset));
                self.violations.push(format!(
                    "{direction} DMA enabled with {name} = 0x{found:x}, not 0x{value:x}"
                ));
            }
        }
        if self.reg(control + DMA_RING_CFG) & (1 << 16) == 0 || ctrl_value & DMA_RING16_BUF_EN == 0
        {
            self.violations
                .push(format!("{direction} DMA enabled without ring 16 enabled"));
        }
        let aligned = if rx {
            self.rx_cons() == self.rx_prod
        } else {
            self.tx_prod() == self.tx_cons
        };
        if !aligned {
            self.violations.push(format!(
                "{direction} DMA enabled with the driver's index not on the device's"
            ));
        }
    }

    /// How the bring-up left the registers that have no behaviour in the model,
    /// against what the sources program: MAC address, frame length, port mode,
    /// interrupts masked and cleared, RGMII mode.
    fn configuration(&self) -> Vec<String> {
        let mut wrong = Vec::new();
        let mut expect = |offset: usize, mask: u32, want: u32| {
            let found = self.reg(offset) & mask;
            if found != want {
                wrong.push(format!(
                    "{} is 0x{found:x} under mask 0x{mask:x}, expected 0x{want:x}",
                    self.name(offset)
                ));
            }
        };
        expect(UMAC_MAC0, u32::MAX, 0xdca6_3201);
        expect(UMAC_MAC1, u32::MAX, 0x0203);
        expect(UMAC_MAX_FRAME_LEN, u32::MAX, 1536);
        expect(SYS_PORT_CTRL, u32::MAX, PORT_MODE_EXT_GPHY);
        // Written whole: no status blocks, DMA for ring 16 alone.
        expect(RBUF_CTRL, u32::MAX, RBUF_ALIGN_2B);
        expect(TBUF_CTRL, u32::MAX, 0);
        for control in [RX_CTRL, TX_CTRL] {
            expect(control + DMA_CTRL, u32::MAX, DMA_EN | DMA_RING16_BUF_EN);
        }
        expect(SYS_RBUF_FLUSH_CTRL, MAC_RESET, 0);
        expect(
            EXT_RGMII_OOB_CTRL,
            RGMII_LINK | OOB_DISABLE | RGMII_MODE_EN,
            RGMII_LINK | RGMII_MODE_EN,
        );
        for block in [INTRL2_0, INTRL2_1] {
            expect(block + CPU_MASK_STATUS, u32::MAX, u32::MAX);
            expect(block + CPU_STAT, u32::MAX, 0);
        }
        // Exactly one delay per direction: RXC only the PHY can delay; TXC the
        // PHY or the MAC (ID mode, `ID_MODE_DIS` clear), not both, not neither.
        if !self.phy.rx_delay() {
            wrong.push("the PHY's RX clock delay is off".into());
        }
        let mac_tx_delay = self.reg(EXT_RGMII_OOB_CTRL) & ID_MODE_DIS == 0;
        if mac_tx_delay == self.phy.tx_delay() {
            wrong.push(format!(
                "TX clock delayed by the MAC: {mac_tx_delay}, by the PHY: {}",
                self.phy.tx_delay()
            ));
        }
        wrong
    }

    fn mdio(&mut self, command: u32) {
        let phy = (command >> 21) & 0x1F;
        let reg = ((command >> 16) & 0x1F) as u8;
        let mut result = command & !(0xFFFF | MDIO_READ_FAIL);
        match (command >> 26) & 3 {
            2 if phy == 1 => result |= u32::from(self.phy.read(reg)),
            2 => result |= MDIO_READ_FAIL,
            1 if phy == 1 => {
                if reg == 0 && command & 0x8000 != 0 && self.reg(UMAC_CMD) & CMD_SW_RESET == 0 {
                    self.violations
                        .push("PHY reset while the UMAC is out of its software reset".into());
                }
                self.phy.write(reg, command as u16)
            }
            1 => {}
            _ => self
                .violations
                .push(format!("bad MDIO opcode in 0x{command:08x}")),
        }
        self.regs[MDIO_CMD / 4] = result | MDIO_START_BUSY;
        self.mdio_busy_left = self.mdio_busy_reads;
    }

    /// The rules of a `UMAC_CMD` write: RGMII before RX, the software reset held
    /// until the PHY is out of reset and reports the link, pause frames ignored
    /// unless pause was negotiated.
    fn check_umac_cmd(&mut self, value: u32) {
        if value & CMD_RX_EN != 0 && self.reg(EXT_RGMII_OOB_CTRL) & RGMII_MODE_EN == 0 {
            self.violations
                .push("RX enabled before RGMII_MODE_EN".into());
        }
        if value & CMD_SW_RESET == 0 && !(self.phy.reset_done && self.phy.link_reported) {
            self.violations.push(format!(
                "UMAC out of software reset (0x{value:x}) before the PHY reset finished and the link was up"
            ));
        }
        let ignore = CMD_RX_PAUSE_IGNORE | CMD_TX_PAUSE_IGNORE;
        if value & (CMD_RX_EN | CMD_TX_EN) != 0
            && !self.pause_negotiated()
            && value & ignore != ignore
        {
            self.violations.push(format!(
                "UMAC_CMD 0x{value:x} honours pause frames that were not negotiated"
            ));
        }
    }

    /// The buffer a descriptor names, or a violation.
    fn descriptor_buffer(&mut self, desc: usize, want: (Ring, usize)) -> Option<(Ring, usize)> {
        let phys = u64::from(self.reg(desc + DESC_ADDRESS_LO))
            | u64::from(self.reg(desc + DESC_ADDRESS_HI)) << 32;
        let found = locate(phys);
        if found != Some(want) {
            self.violations.push(format!(
                "descriptor at 0x{desc:04x} names 0x{phys:x}, not {want:?}'s buffer"
            ));
            return None;
        }
        found
    }

    /// The device receives a frame from the wire; false if the MAC/DMA drops it.
    fn deliver(&mut self, memory: &mut TestMemory, payload: &[u8], status: u32) -> bool {
        if !self.rx_ready() || self.rx_prod.wrapping_sub(self.rx_cons()) >= 256 {
            return false;
        }
        let slot = usize::from(self.rx_prod) % 256;
        let desc = RX_DMA + slot * DESC_SIZE;
        let Some((ring, buf)) = self.descriptor_buffer(desc, (Ring::Rx, slot)) else {
            return false;
        };
        {
            let mut cache = self.cache.lock().unwrap();
            if cache.touched.contains(&(ring, buf)) {
                cache.violations.push(format!(
                    "RX buffer {slot} given to the device without a clean"
                ));
            }
            cache.stale.insert((ring, buf));
        }
        // With RBUF_ALIGN_2B the frame follows a 2-byte header, with RBUF_64B_EN
        // a 64-byte status block.
        let rbuf = self.reg(RBUF_CTRL);
        let header = if rbuf & RBUF_ALIGN_2B != 0 { 2 } else { 0 }
            + if rbuf & RBUF_64B_EN != 0 { 64 } else { 0 };
        let data = memory.device_buffer(ring, buf);
        data[..header].fill(0xEE);
        data[header..header + payload.len()].copy_from_slice(payload);
        let len = (payload.len() + header) as u32;
        self.regs[(desc + DESC_LENGTH_STATUS) / 4] = len << 16 | DMA_SOP | DMA_EOP | status;
        self.rx_prod = self.rx_prod.wrapping_add(1);
        true
    }

    /// The device sends up to `max` posted frames and returns them (none while the
    /// TX DMA or the MAC's transmitter is off).
    fn complete_tx(&mut self, memory: &mut TestMemory, max: usize) -> Vec<Vec<u8>> {
        let mut sent = Vec::new();
        if !self.dma_on(TX_CTRL) || !self.mac_running(CMD_TX_EN) {
            return sent;
        }
        // With TBUF_64B_EN the device takes the first 64 bytes for a status block.
        let status_block = if self.reg(TBUF_CTRL) & TBUF_64B_EN != 0 {
            64
        } else {
            0
        };
        while self.tx_cons != self.tx_prod() && sent.len() < max {
            let slot = usize::from(self.tx_cons) % 256;
            let desc = TX_DMA + slot * DESC_SIZE;
            let status = self.reg(desc + DESC_LENGTH_STATUS);
            let flags = DMA_SOP | DMA_EOP | DMA_TX_APPEND_CRC | DMA_TX_QTAG_MASK;
            if status & flags != flags {
                self.violations.push(format!(
                    "TX descriptor status 0x{status:08x} lacks SOP/EOP/CRC/QTAG"
                ));
            }
            self.tx_cons = self.tx_cons.wrapping_add(1);
            let Some((ring, buf)) = self.descriptor_buffer(desc, (Ring::Tx, slot)) else {
                continue;
            };
            let len = (status >> 16 & 0xFFF) as usize;
            let data = &memory.device_buffer(ring, buf)[..len];
            sent.push(data.get(status_block..).unwrap_or_default().to_vec());
        }
        sent
    }
}

impl GenetBus for Model {
    fn read(&mut self, offset: usize) -> u32 {
        if let Some((rx, slot, _)) = descriptor(offset) {
            self.check_descriptor_access(rx, slot, offset, "read");
            return self.reg(offset);
        }
        self.accessed.insert(offset);
        self.reads.insert(offset);
        if !self.known.contains_key(&offset) {
            self.violations
                .push(format!("read of 0x{offset:04x}, not a GENET v5 register"));
            return 0;
        }
        match offset {
            RX_PROD => u32::from(self.rx_prod),
            TX_CONS => u32::from(self.tx_cons),
            MDIO_CMD => {
                let value = self.reg(MDIO_CMD);
                if self.mdio_busy_left > 0 && !self.mdio_stuck {
                    self.mdio_busy_left -= 1;
                    if self.mdio_busy_left == 0 {
                        self.regs[MDIO_CMD / 4] &= !MDIO_START_BUSY;
                    }
                }
                value
            }
            _ => self.reg(offset),
        }
    }

    fn write(&mut self, offset: usize, value: u32) {
        self.writes.push((offset, value));
        if let Some((rx, slot, _)) = descriptor(offset) {
            self.check_descriptor_access(rx, slot, offset, "wrote");
            self.regs[offset / 4] = value;
            return;
        }
        self.accessed.insert(offset);
        let Some(register) = self.known.get(&offset).copied() else {
            self.violations.push(format!(
                "write of 0x{value:x} to 0x{offset:04x}, not a GENET v5 register"
            ));
            return;
        };
        if register.access == Access::ReadOnly {
            self.violations
                .push(format!("write to read-only {}", self.name(offset)));
            return;
        }
        if (UMAC..UMAC + 0x800).contains(&offset) && self.reg(SYS_RBUF_FLUSH_CTRL) & MAC_RESET != 0
        {
            self.violations.push(format!(
                "write to {} dropped: MAC held in reset",
                self.name(offset)
            ));
            return;
        }
        self.written.insert(offset);
        for block in [INTRL2_0, INTRL2_1] {
            let (stat, mask) = ((block + CPU_STAT) / 4, (block + CPU_MASK_STATUS) / 4);
            match offset.wrapping_sub(block) {
                CPU_SET => self.regs[stat] |= value,
                CPU_CLEAR => self.regs[stat] &= !value,
                CPU_MASK_SET => self.regs[mask] |= value,
                CPU_MASK_CLEAR => self.regs[mask] &= !value,
                _ => continue,
            }
            return;
        }
        let now = self.now.load(Ordering::SeqCst);
        match offset {
            SYS_RBUF_FLUSH_CTRL if value & MAC_RESET != 0 => self.mac_reset_at = Some(now),
            SYS_RBUF_FLUSH_CTRL if self.reg(SYS_RBUF_FLUSH_CTRL) & MAC_RESET != 0 => {
                match self.mac_reset_at {
                    None => self
                        .violations
                        .push("MAC reset released without a reset pulse".into()),
                    Some(at) if now - at < 10_000 => self
                        .violations
                        .push(format!("MAC reset pulse of {} ns, under 10 us", now - at)),
                    Some(_) => {}
                }
            }
            UMAC_CMD => self.check_umac_cmd(value),
            _ => {}
        }
        match offset {
            o if (o == RX_CTRL + DMA_CTRL || o == TX_CTRL + DMA_CTRL) && value & DMA_EN != 0 => {
                self.check_ring_ready(o == RX_CTRL + DMA_CTRL, value);
            }
            RX_CONS if self.dma_on(RX_CTRL) => {
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
            TX_PROD if self.dma_on(TX_CTRL) => {
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
            MDIO_CMD if value & MDIO_START_BUSY != 0 => {
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
    let delay = TestDelay::default();
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
    (
        Model::new(cache, delay.now.clone()),
        memory,
        test_cache,
        delay,
    )
}

fn start(configure: impl FnOnce(&mut Model)) -> Result<Driver, Error> {
    start_with(RgmiiDelays::default(), configure)
}

fn start_with(delays: RgmiiDelays, configure: impl FnOnce(&mut Model)) -> Result<Driver, Error> {
    let (mut model, memory, cache, delay) = parts();
    configure(&mut model);
    Genet::new(model, memory, cache, delay, MAC, delays)
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

/// A frame of test data, different for each `n`.
fn frame(n: usize) -> Vec<u8> {
    (0..60 + n % 1400).map(|i| (i + n) as u8).collect()
}
