//! Host tests of the GENET v5 driver against a register-level model of the controller,
//! its DMA engine, the BCM54213PE PHY and a non-coherent data cache.
//!
//! The model reacts to the driver's register accesses as the hardware does (MDIO
//! completion, DMA indices, the MAC reset trap) and records every rule the driver
//! breaks as a violation; each test ends by asserting there are none. Its register
//! map (`map`) is its own, declared from U-Boot's and Linux's GENET sources, never
//! taken from the driver's `regs`: the last tests move each register the driver uses
//! to a wrong offset and check that the model catches every one. Further tests drive
//! the same model through [`GenetNet`], the kernel's `NetDevice` view.

mod map;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use map::*;
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

// The BCM54xx shadow registers of the RGMII delays (Linux `brcmphy.h`).
/// AUX_CTL; bits 2:0 select a shadow, 7 the misc control.
const PHY_AUX_CTL: u8 = 0x18;
/// Misc control: the RX skew (RXC delayed against RXD).
const MISC_RGMII_SKEW_EN: u16 = 0x0100;
/// Misc control: write enable.
const MISC_WREN: u16 = 0x8000;
/// The 0x1C shadow window; bits 14:10 select, bit 15 writes, bits 9:0 data.
const PHY_SHD: u8 = 0x1C;
/// Shadow 0x1C/3, clock control: GTXCLK delayed against TXD.
const CLK_CTL_GTXCLK_EN: u16 = 0x0200;
/// Our advertisement's and the partner's symmetric pause bit (802.3 `ADVERTISE_PAUSE_CAP`).
const PAUSE_CAP: u16 = 0x0400;

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
    /// AUX_CTL misc shadow and the 0x1C clock-control shadow; their power-up
    /// values are the opposite of "rgmii-rxid", so only a driver that programs
    /// them gets it.
    misc: u16,
    clk_ctl: u16,
    misc_selected: bool,
    shadow_selected: u16,
    /// A reset was issued and the PHY has since reported it done.
    reset_done: bool,
    reset_issued: bool,
    /// The last BMSR read reported the link up.
    link_reported: bool,
}

/// Power-up misc and clock-control shadows: RX skew off, GTXCLK delay on.
const PHY_POWER_UP_MISC: u16 = 0x0010;
const PHY_POWER_UP_CLK_CTL: u16 = CLK_CTL_GTXCLK_EN;

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
            misc: PHY_POWER_UP_MISC,
            clk_ctl: PHY_POWER_UP_CLK_CTL,
            misc_selected: false,
            shadow_selected: 0,
            reset_done: false,
            reset_issued: false,
            link_reported: false,
        }
    }

    /// Whether the PHY delays RXC (RX skew).
    fn rx_delay(&self) -> bool {
        self.misc & MISC_RGMII_SKEW_EN != 0
    }

    /// Whether the PHY delays GTXCLK.
    fn tx_delay(&self) -> bool {
        self.clk_ctl & CLK_CTL_GTXCLK_EN != 0
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
                    self.reset_done = self.reset_issued;
                    self.regs[0]
                }
            }
            1 => {
                self.link_reported = self.link_up && self.autoneg_started;
                if self.link_reported {
                    0x7969 | 0x0024
                } else {
                    0x7949
                }
            }
            PHY_AUX_CTL if self.misc_selected => self.misc | 0x7,
            PHY_SHD => {
                let data = if self.shadow_selected == 3 {
                    self.clk_ctl
                } else {
                    0
                };
                self.shadow_selected << 10 | data
            }
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
            self.reset_issued = true;
            self.reset_done = false;
            self.misc = PHY_POWER_UP_MISC;
            self.clk_ctl = PHY_POWER_UP_CLK_CTL;
            return;
        }
        if reg == PHY_AUX_CTL {
            self.misc_selected = false;
            if value & 0x7 == 0x7 && value & MISC_WREN != 0 {
                self.misc = value & !(MISC_WREN | 0x7);
            } else if value & 0x7 == 0x7 && value >> 12 & 0x7 == 0x7 {
                self.misc_selected = true;
            }
            return;
        }
        if reg == PHY_SHD {
            let shadow = value >> 10 & 0x1F;
            if value & 0x8000 != 0 {
                if shadow == 3 {
                    self.clk_ctl = value & 0x3FF;
                }
            } else {
                self.shadow_selected = shadow;
            }
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

#[test]
fn bring_up_follows_the_required_order() {
    let mut genet = start(|_| {}).unwrap();
    no_violations(&mut genet);
    let (model, _, cache) = genet.parts_mut();
    assert_eq!(model.configuration(), Vec::<String>::new());
    let out_of_reset = model
        .first_write(SYS_RBUF_FLUSH_CTRL, MAC_RESET, 0)
        .unwrap();
    let first_cmd = model.first_write(UMAC_CMD, 0, 0).unwrap();
    assert!(out_of_reset < first_cmd);
    let rgmii = model
        .first_write(EXT_RGMII_OOB_CTRL, 1 << 6, 1 << 6)
        .unwrap();
    let rx_dma = model.first_write(RX_CTRL + DMA_CTRL, 1, 1).unwrap();
    let tx_dma = model.first_write(TX_CTRL + DMA_CTRL, 1, 1).unwrap();
    let rx_ring = model
        .first_write(RX_CTRL + DMA_RING_CFG, 1 << 16, 1 << 16)
        .unwrap();
    let tx_ring = model
        .first_write(TX_CTRL + DMA_RING_CFG, 1 << 16, 1 << 16)
        .unwrap();
    assert!(rgmii < rx_dma && rx_ring < rx_dma && tx_ring < tx_dma);
    // "rgmii-rxid": the MAC delays TXC (ID mode on).
    assert_eq!(
        model.reg(EXT_RGMII_OOB_CTRL) & (1 << 16 | 1 << 6 | 1 << 5),
        1 << 6
    );
    assert_eq!(model.reg(UMAC_MAC0), 0xdca6_3201);
    assert_eq!(model.reg(UMAC_MAC1), 0x0203);
    assert_eq!(model.reg(UMAC_MAX_FRAME_LEN), 1536);
    assert_eq!(model.reg(RBUF_CTRL) & RBUF_ALIGN_2B, RBUF_ALIGN_2B);
    assert_eq!(model.reg(SYS_PORT_CTRL), PORT_MODE_EXT_GPHY);
    // RX and TX stay off, the UMAC in reset, until the link speed is known.
    assert_eq!(
        model.reg(UMAC_CMD) & (CMD_TX_EN | CMD_RX_EN | CMD_SW_RESET),
        CMD_SW_RESET
    );
    // Every RX buffer was cleaned before the device got it.
    assert_eq!(cache.cleans, 256);
    for slot in 0..256 {
        let desc = RX_DMA + slot * DESC_SIZE;
        assert_eq!(model.reg(desc + DESC_LENGTH_STATUS), 2048 << 16 | DMA_OWN);
        assert_eq!(
            u64::from(model.reg(desc + DESC_ADDRESS_LO)),
            RX_PHYS + (slot * BUFFER_SIZE) as u64
        );
    }
    assert!(model.phy.autoneg_started);
    assert_eq!(model.phy.regs[9], 0x0300);
}

#[test]
fn the_model_catches_a_driver_that_skips_the_mac_reset_trap() {
    let (mut model, ..) = parts();
    let before = model.reg(UMAC_CMD);
    model.write(UMAC_CMD, CMD_SW_RESET);
    assert_eq!(model.reg(UMAC_CMD), before);
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
    genet.mdio_write(1, 0x1E, 0xABCD).unwrap();
    assert_eq!(genet.mdio_read(1, 0x1E).unwrap(), 0xABCD);
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
        assert_eq!(cmd >> CMD_SPEED_SHIFT & 3, field);
        assert_eq!(cmd & CMD_HD_EN == 0, full_duplex);
        assert_eq!(cmd & (CMD_TX_EN | CMD_RX_EN), CMD_TX_EN | CMD_RX_EN);
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
    assert_eq!(
        down.parts_mut().0.reg(UMAC_CMD) & (CMD_TX_EN | CMD_RX_EN),
        0
    );
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
    let desc = RX_DMA + 6 * DESC_SIZE + DESC_LENGTH_STATUS;
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
    assert_eq!(genet.parts_mut().0.reg(UMAC_CMD) >> CMD_SPEED_SHIFT & 3, 1);
    no_violations(&mut genet);
}

#[test]
fn rgmii_delays_are_programmed_on_both_sides() {
    // (setting, PHY RX delay, PHY TX delay, MAC ID_MODE_DIS)
    for (delays, phy_tx, id_mode_dis) in [
        (RgmiiDelays::PhyRx, false, false),
        (RgmiiDelays::PhyBoth, true, true),
    ] {
        let mut genet = start_with(delays, |_| {}).unwrap();
        assert_eq!(genet.delays(), delays);
        let (model, ..) = genet.parts_mut();
        assert!(model.phy.rx_delay(), "{delays:?}: the PHY's RX delay");
        assert_eq!(
            model.phy.tx_delay(),
            phy_tx,
            "{delays:?}: the PHY's TX delay"
        );
        assert_eq!(
            model.reg(EXT_RGMII_OOB_CTRL) & ID_MODE_DIS != 0,
            id_mode_dis,
            "{delays:?}: ID_MODE_DIS"
        );
        assert_eq!(model.configuration(), Vec::<String>::new());
        link_up(&mut genet);
        no_violations(&mut genet);
    }
    assert_eq!(RgmiiDelays::from_name("rxid"), Some(RgmiiDelays::PhyRx));
    assert_eq!(RgmiiDelays::from_name("id"), Some(RgmiiDelays::PhyBoth));
    assert_eq!(RgmiiDelays::from_name("txid"), None);
    assert_eq!(RgmiiDelays::PhyBoth.name(), "id");
}

#[test]
fn the_phy_delays_survive_only_if_set_after_the_phy_reset() {
    // The model's PHY reset restores RX skew off and GTXCLK delay on: a driver
    // that trusted those defaults would fail the one-delay-per-direction rule.
    let mut phy = Phy::new();
    phy.write(0, 0x8000);
    let (model, ..) = parts();
    let mut model = Model { phy, ..model };
    model.regs[EXT_RGMII_OOB_CTRL / 4] = RGMII_LINK | RGMII_MODE_EN;
    let wrong = model.configuration();
    assert!(
        wrong.contains(&"the PHY's RX clock delay is off".to_string()),
        "{wrong:#?}"
    );
    assert!(
        wrong
            .iter()
            .any(|w| w.starts_with("TX clock delayed by the MAC: true, by the PHY: true")),
        "{wrong:#?}"
    );
}

#[test]
fn the_mac_stays_in_reset_until_the_phy_reset_and_the_link() {
    let mut genet = start(|m| m.phy.link_up = false).unwrap();
    assert_eq!(genet.poll_link(), Ok(None));
    let (model, ..) = genet.parts_mut();
    assert_ne!(
        model.reg(UMAC_CMD) & CMD_SW_RESET,
        0,
        "released with the link down"
    );
    let phy_reset = model
        .first_write(MDIO_CMD, 0x0400_ffff, 0x0400_8000)
        .unwrap();
    let held = model
        .first_write(UMAC_CMD, CMD_SW_RESET, CMD_SW_RESET)
        .unwrap();
    assert!(held < phy_reset);
    // The MAC reset pulse: asserted, at least 10 us, released.
    let assert_at = model
        .first_write(SYS_RBUF_FLUSH_CTRL, MAC_RESET, MAC_RESET)
        .unwrap();
    let release_at = model
        .first_write(SYS_RBUF_FLUSH_CTRL, MAC_RESET, 0)
        .unwrap();
    assert!(assert_at < release_at && release_at < held);
    model.phy.link_up = true;
    link_up(&mut genet);
    let (model, ..) = genet.parts_mut();
    assert_eq!(
        model.reg(UMAC_CMD) & (CMD_SW_RESET | CMD_RX_EN | CMD_TX_EN),
        CMD_RX_EN | CMD_TX_EN
    );
    no_violations(&mut genet);
}

#[test]
fn the_model_catches_a_short_pulse_and_an_early_release() {
    let (mut model, ..) = parts();
    model.write(SYS_RBUF_FLUSH_CTRL, MAC_RESET);
    model.now.fetch_add(9_999, Ordering::SeqCst);
    model.write(SYS_RBUF_FLUSH_CTRL, 0);
    model.write(UMAC_CMD, CMD_RX_PAUSE_IGNORE | CMD_TX_PAUSE_IGNORE);
    model.write(UMAC_CMD, CMD_TX_EN);
    assert_eq!(
        model.violations,
        [
            "MAC reset pulse of 9999 ns, under 10 us".to_string(),
            "UMAC out of software reset (0x10000100) before the PHY reset finished and the link was up".into(),
            "UMAC out of software reset (0x1) before the PHY reset finished and the link was up".into(),
            "UMAC_CMD 0x1 honours pause frames that were not negotiated".into(),
        ]
    );
}

#[test]
fn pause_frames_are_ignored_when_pause_is_not_negotiated() {
    // The partner offers symmetric and asymmetric pause; Tern advertises neither.
    let mut genet = start(|m| m.phy.partner_lpa = 0x41E1 | PAUSE_CAP | 0x0800).unwrap();
    link_up(&mut genet);
    let (model, ..) = genet.parts_mut();
    assert_eq!(model.phy.regs[4] & (PAUSE_CAP | 0x0800), 0);
    let ignore = CMD_RX_PAUSE_IGNORE | CMD_TX_PAUSE_IGNORE;
    assert_eq!(model.reg(UMAC_CMD) & ignore, ignore);
    no_violations(&mut genet);
}

#[test]
fn buffer_and_dma_controls_left_by_linux_are_written_whole() {
    let mut genet = start(|_| {}).unwrap();
    link_up(&mut genet);
    let (model, memory, _) = genet.parts_mut();
    for offset in [RBUF_CTRL, TBUF_CTRL, RX_CTRL + DMA_CTRL, TX_CTRL + DMA_CTRL] {
        assert!(
            !model.reads.contains(&offset),
            "{} read",
            model.name(offset)
        );
    }
    assert_eq!(model.configuration(), Vec::<String>::new());
    // No status block shifts the frames either way.
    assert!(model.deliver(memory, &frame(1), 0));
    let data = frame(2);
    genet
        .transmit(data.len(), |buf| buf.copy_from_slice(&data))
        .unwrap();
    assert_eq!(genet.receive().map(|rx| rx.data().to_vec()), Some(frame(1)));
    let (model, memory, _) = genet.parts_mut();
    assert_eq!(model.complete_tx(memory, 1), vec![frame(2)]);
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
    let len = net.receive(&mut buf).expect("frame 4").len;
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
    model.regs[MDIO_CMD / 4] &= !MDIO_START_BUSY;
    clock.advance(LINK_POLL_INTERVAL_NS);
    assert!(net.can_transmit());
    assert_eq!(net.last_error(), None);
    no_violations(net.genet());
}

/// The access stream of a driver with one wrong register offset: every access the
/// driver makes inside `from` lands `shift` bytes further on. Exactly what the model
/// would see if the driver's constant for that register (or that descriptor table)
/// were off by `shift`.
struct Miswired {
    model: Model,
    from: Range<usize>,
    shift: isize,
}

impl Miswired {
    fn at(&self, offset: usize) -> usize {
        if self.from.contains(&offset) {
            offset.wrapping_add_signed(self.shift)
        } else {
            offset
        }
    }
}

impl GenetBus for Miswired {
    fn read(&mut self, offset: usize) -> u32 {
        let offset = self.at(offset);
        self.model.read(offset)
    }

    fn write(&mut self, offset: usize, value: u32) {
        let offset = self.at(offset);
        self.model.write(offset, value)
    }
}

/// Brings a driver up over `bus` and uses it as the kernel does (link, MDIO, three
/// frames each way); returns everything the model and the checks found wrong, and
/// the registers the driver touched.
fn exercise(from: Range<usize>, shift: isize) -> (Vec<String>, BTreeSet<usize>) {
    let (model, memory, cache, delay) = parts();
    let bus = Miswired { model, from, shift };
    let mut genet = match Genet::new(bus, memory, cache, delay, MAC, RgmiiDelays::default()) {
        Ok(genet) => genet,
        Err(error) => return (vec![format!("bring-up failed: {error}")], BTreeSet::new()),
    };
    let mut found = Vec::new();
    let gigabit = Link {
        speed: Speed::Mbps1000,
        full_duplex: true,
    };
    match genet.poll_link() {
        Ok(Some(link)) if link == gigabit => {}
        other => found.push(format!("link: {other:?}")),
    }
    if let Err(error) = genet
        .mdio_write(1, 0x1E, 0x1234)
        .and_then(|()| genet.mdio_read(1, 0x1E))
        .map(|value| assert_eq!(value, 0x1234, "MDIO round trip"))
    {
        found.push(format!("MDIO: {error}"));
    }
    let (model, memory, _) = genet.parts_mut();
    for n in 0..3 {
        if !model.model.deliver(memory, &frame(n), 0) {
            found.push(format!("RX frame {n} not taken by the device"));
        }
    }
    // At most a few: a driver reading the wrong index could otherwise walk the ring.
    let received: Vec<Vec<u8>> = (0..5)
        .map_while(|_| genet.receive().map(|rx| rx.data().to_vec()))
        .collect();
    if received != (0..3).map(frame).collect::<Vec<_>>() {
        found.push(format!(
            "received {} frames, not frames 0..3",
            received.len()
        ));
    }
    for n in 10..13 {
        let data = frame(n);
        if let Err(error) = genet.transmit(data.len(), |buf| buf.copy_from_slice(&data)) {
            found.push(format!("TX frame {n}: {error}"));
        }
    }
    let (model, memory, _) = genet.parts_mut();
    if model.model.complete_tx(memory, 10) != (10..13).map(frame).collect::<Vec<_>>() {
        found.push("the device did not send frames 10..13".into());
    }
    found.extend(model.model.configuration());
    found.extend(model.model.violations.iter().cloned());
    found.extend(memory.cache.lock().unwrap().violations.iter().cloned());
    (found, model.model.accessed.clone())
}

#[test]
fn a_driver_with_one_wrong_offset_is_caught() {
    // UMAC_MAX_FRAME_LEN at 0x0818 instead of 0x0814 (UMAC + 0x014).
    let (found, _) = exercise(UMAC_MAX_FRAME_LEN..UMAC_MAX_FRAME_LEN + 4, 4);
    assert!(
        found.contains(&"write of 0x600 to 0x0818, not a GENET v5 register".to_string()),
        "{found:#?}"
    );
    assert!(
        found.contains(&format!(
            "UMAC_MAX_FRAME_LEN (0x{UMAC_MAX_FRAME_LEN:04x}) is 0x5ee under mask 0xffffffff, expected 0x600"
        )),
        "{found:#?}"
    );
    // The correct driver, through the same harness, leaves nothing to report.
    let (found, _) = exercise(0..0, 0);
    assert_eq!(found, Vec::<String>::new());
}

/// Every register the driver uses, moved one word up and one word down, and each
/// descriptor table moved by one word: the model must catch each of these drivers.
#[test]
fn every_register_offset_of_the_driver_is_checked_by_the_model() {
    let (clean, accessed) = exercise(0..0, 0);
    assert_eq!(clean, Vec::<String>::new());
    let known: HashMap<usize, Register> = registers()
        .into_iter()
        .map(|register| (register.offset, register))
        .collect();
    // The driver uses the registers of every block of the map.
    assert!(accessed.len() >= 40, "{accessed:x?}");
    let mut mutants: Vec<(String, Range<usize>)> = accessed
        .iter()
        .map(|&offset| (known[&offset].name.to_string(), offset..offset + 4))
        .collect();
    for (name, base) in [("RX descriptors", RX_DMA), ("TX descriptors", TX_DMA)] {
        mutants.push((name.into(), base..base + DESCRIPTORS * DESC_SIZE));
    }
    let missed: Vec<String> = mutants
        .into_iter()
        .flat_map(|(name, from)| [(name.clone(), from.clone(), 4), (name, from, -4)])
        .filter(|(_, from, shift)| from.start >= 4 && exercise(from.clone(), *shift).0.is_empty())
        .map(|(name, _, shift)| format!("{name} {shift:+}"))
        .collect();
    assert_eq!(
        missed,
        Vec::<String>::new(),
        "offsets the model did not catch"
    );
}
