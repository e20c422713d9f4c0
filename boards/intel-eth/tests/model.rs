//! The Intel driver against register-level models of the 82574L, the I219
//! and the 82576: a register file that reacts as the datasheets describe
//! (reset, NVM auto-read, LAN init, the PCH semaphore, MDIC and a PHY that
//! autonegotiates, RX and TX DMA over descriptor rings in memory the model
//! reaches by physical address), with its own register map taken from the
//! datasheets, and a list of the rules the driver breaks. Every test ends
//! with "no violations".

use tern_intel_eth::{Error, IntelEth, Part, Ring, RING_SIZE};
use tern_nic::model::{CountingDelay as Delay, Memory, ModelDma as TestDma};
use tern_nic::{EthernetDriver, Link, RegisterBus, Speed, TxError};

/// The model's register map (82574L datasheet §10.2, 82576 datasheet §8;
/// the I219 keeps the 82574's layout and adds EXTCNF_CTRL/FWSM).
mod map {
    pub const CTRL: usize = 0x00000;
    pub const STATUS: usize = 0x00008;
    pub const EECD: usize = 0x00010;
    pub const EERD: usize = 0x00014;
    pub const CTRL_EXT: usize = 0x00018;
    pub const MDIC: usize = 0x00020;
    pub const ICR: usize = 0x000c0;
    pub const IMS: usize = 0x000d0;
    pub const IMC: usize = 0x000d8;
    pub const RCTL: usize = 0x00100;
    pub const TCTL: usize = 0x00400;
    pub const EXTCNF_CTRL: usize = 0x00f00;
    pub const MTA: usize = 0x05200;
    pub const RAL: usize = 0x05400;
    pub const RAH: usize = 0x05404;
    pub const FWSM: usize = 0x05b54;
    /// 82574L queue 0.
    pub const LEGACY_RX: usize = 0x02800;
    pub const LEGACY_TX: usize = 0x03800;
    /// 82576 queue 0.
    pub const ADV_RX: usize = 0x0c000;
    pub const ADV_TX: usize = 0x0e000;
    /// Offsets within a queue block: base low/high, length, head, tail,
    /// descriptor control; SRRCTL (RX, 82576).
    pub const BAL: usize = 0x00;
    pub const BAH: usize = 0x04;
    pub const LEN: usize = 0x08;
    pub const SRRCTL: usize = 0x0c;
    pub const HEAD: usize = 0x10;
    pub const TAIL: usize = 0x18;
    pub const DCTL: usize = 0x28;
}

const MAC: [u8; 6] = [0x00, 0x1b, 0x21, 0x3c, 0x4d, 0x5e];
const PEER: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

// ---------------------------------------------------------------- model

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    I82574,
    I219,
    I82576,
}

impl Variant {
    fn part(self) -> Part {
        match self {
            Variant::I82574 => Part::I82574,
            Variant::I219 => Part::I219,
            Variant::I82576 => Part::I82576,
        }
    }

    fn phy_address(self) -> u32 {
        if self == Variant::I219 {
            2
        } else {
            1
        }
    }

    fn advanced(self) -> bool {
        self == Variant::I82576
    }

    fn rx_block(self) -> usize {
        if self.advanced() {
            map::ADV_RX
        } else {
            map::LEGACY_RX
        }
    }

    fn tx_block(self) -> usize {
        if self.advanced() {
            map::ADV_TX
        } else {
            map::LEGACY_TX
        }
    }
}

/// Knobs for the error paths.
#[derive(Default, Clone)]
struct Faults {
    reset_stuck: bool,
    nvm_stuck: bool,
    lan_init_stuck: bool,
    /// The ME holds the semaphore for good.
    me_holds_phy: bool,
    /// RAL0/RAH0 not loaded; the NVM has this address instead.
    nvm_only_mac: Option<[u8; 6]>,
    mdio_stuck: bool,
    no_phy: bool,
    queue_stuck: bool,
    link_down: bool,
}

struct Model {
    variant: Variant,
    regs: Vec<u32>,
    memory: Memory,
    faults: Faults,
    violations: Vec<String>,
    /// Register reads until a pending reset finishes.
    reset_reads_left: u32,
    phy_bmcr: u16,
    autoneg_started: bool,
    /// Frames the card put on the wire.
    sent: Vec<Vec<u8>>,
    /// Frames refused by the address filter.
    filtered: usize,
    /// Frames dropped for want of a descriptor.
    missed: usize,
}

impl Model {
    fn new(variant: Variant, memory: Memory, faults: Faults) -> Self {
        let mut model = Self {
            variant,
            regs: vec![0; 0x20000 / 4],
            memory,
            faults,
            violations: Vec::new(),
            reset_reads_left: 0,
            phy_bmcr: 0,
            autoneg_started: false,
            sent: Vec::new(),
            filtered: 0,
            missed: 0,
        };
        model.power_on();
        model
    }

    fn reg(&self, offset: usize) -> u32 {
        self.regs[offset / 4]
    }

    fn set(&mut self, offset: usize, value: u32) {
        self.regs[offset / 4] = value;
    }

    /// The state after power-on or reset: the NVM loaded the MAC into RAL0
    /// and RAH0 (valid), EECD says the auto-read finished (82574, 82576), the
    /// I219 says LAN init is done, the ME holds the semaphore when asked to.
    fn power_on(&mut self) {
        let fwsm = if self.variant == Variant::I219 && self.faults.me_holds_phy {
            1 << 15
        } else {
            0
        };
        let extcnf = if self.faults.me_holds_phy { 1 << 5 } else { 0 };
        self.regs.iter_mut().for_each(|r| *r = 0);
        self.set(map::FWSM, fwsm);
        self.set(map::EXTCNF_CTRL, extcnf);
        self.set(map::IMS, 0x1f);
        self.set(map::TCTL, 1 << 3);
        if self.faults.nvm_only_mac.is_none() {
            self.set(
                map::RAL,
                u32::from_le_bytes([MAC[0], MAC[1], MAC[2], MAC[3]]),
            );
            self.set(
                map::RAH,
                u32::from(u16::from_le_bytes([MAC[4], MAC[5]])) | 1 << 31,
            );
        }
        if self.variant == Variant::I219 {
            if !self.faults.lan_init_stuck {
                self.set(map::STATUS, 1 << 9);
            }
        } else if !self.faults.nvm_stuck {
            self.set(map::EECD, 1 << 9 | 1 << 8);
        }
        self.phy_bmcr = 0x1140;
        self.autoneg_started = false;
    }

    fn violation(&mut self, what: String) {
        self.violations.push(what);
    }

    fn semaphore_held(&self) -> bool {
        self.reg(map::EXTCNF_CTRL) & (1 << 5) != 0
    }

    fn rx(&self, at: usize) -> usize {
        self.variant.rx_block() + at
    }

    fn tx(&self, at: usize) -> usize {
        self.variant.tx_block() + at
    }

    fn ring_ready(&self, block: usize) -> bool {
        let base =
            u64::from(self.reg(block + map::BAL)) | u64::from(self.reg(block + map::BAH)) << 32;
        let len = self.reg(block + map::LEN);
        base != 0 && len != 0 && len.is_multiple_of(128)
    }

    fn ring_base(&self, block: usize) -> u64 {
        u64::from(self.reg(block + map::BAL)) | u64::from(self.reg(block + map::BAH)) << 32
    }

    fn ring_len(&self, block: usize) -> u32 {
        self.reg(block + map::LEN) / 16
    }

    fn queue_enabled(&self, block: usize) -> bool {
        !self.variant.advanced() || self.reg(block + map::DCTL) & (1 << 25) != 0
    }

    /// The PHY on MDIC.
    fn mdic(&mut self, value: u32) {
        if self.variant == Variant::I219 && !self.semaphore_held() {
            self.violation("MDIC used without the SW/FW semaphore".into());
        }
        if self.faults.mdio_stuck {
            self.set(map::MDIC, value & !(1 << 28));
            return;
        }
        let phy = (value >> 21) & 31;
        let reg = (value >> 16) & 31;
        let op = (value >> 26) & 3;
        let ready = 1 << 28;
        if phy != self.variant.phy_address() || self.faults.no_phy {
            let data = if self.faults.no_phy { 0xffff } else { 0 };
            let error = if self.faults.no_phy { 0 } else { 1 << 30 };
            self.set(map::MDIC, (value & !0xffff) | data | ready | error);
            return;
        }
        let data = match (op, reg) {
            (2, 0) => self.phy_bmcr,
            (2, 1) if self.autoneg_started && !self.faults.link_down => 0x796d,
            (2, 1) => 0x7949,
            (2, 2) => 0x0141,
            (2, 3) => 0x0cb1,
            (2, _) => 0,
            (1, 0) => {
                let written = value as u16;
                self.autoneg_started |= written & (1 << 9) != 0 && written & (1 << 12) != 0;
                self.phy_bmcr = written & !(1 << 9);
                0
            }
            _ => 0,
        };
        self.set(map::MDIC, (value & !0xffff) | u32::from(data) | ready);
    }

    /// Receives `frame` from the wire (FCS stripped, as SECRC asks).
    fn inject(&mut self, frame: &[u8]) -> bool {
        self.inject_with_errors(frame, 0)
    }

    fn inject_with_errors(&mut self, frame: &[u8], errors: u32) -> bool {
        let block = self.variant.rx_block();
        let rctl = self.reg(map::RCTL);
        if rctl & 2 == 0 || !self.ring_ready(block) || !self.queue_enabled(block) {
            self.missed += 1;
            return false;
        }
        let ours = self.reg(map::RAH) & (1 << 31) != 0 && {
            let ral = self.reg(map::RAL).to_le_bytes();
            let rah = (self.reg(map::RAH) as u16).to_le_bytes();
            frame[..6] == [ral[0], ral[1], ral[2], ral[3], rah[0], rah[1]]
        };
        let broadcast = frame[..6] == [0xff; 6] && rctl & (1 << 15) != 0;
        if !ours && !broadcast {
            self.filtered += 1;
            return false;
        }
        // 2 KiB buffers (RCTL.BSIZE 00 or SRRCTL.BSIZEPACKET 2).
        let chunks: Vec<&[u8]> = frame.chunks(2048).collect();
        let size = self.ring_len(block);
        let head = self.reg(block + map::HEAD);
        let tail = self.reg(block + map::TAIL);
        let free = (tail + size - head) % size;
        if (free as usize) < chunks.len() {
            self.missed += 1;
            return false;
        }
        let mut head = head;
        for (i, chunk) in chunks.iter().enumerate() {
            let desc = self.ring_base(block) + u64::from(head) * 16;
            let buffer = self.memory.read_u64(desc);
            if buffer == 0 {
                self.violation(format!(
                    "RX descriptor {head} given to the card without a buffer"
                ));
                return false;
            }
            if self.variant.advanced() && self.memory.read_u64(desc + 8) != 0 {
                self.violation(format!(
                    "RX descriptor {head} has a header address (one-buffer mode)"
                ));
            }
            self.memory.write(buffer, chunk);
            let end = i + 1 == chunks.len();
            let status = 1 | if end { 2 } else { 0 };
            if self.variant.advanced() {
                self.memory.write(desc, &[0; 8]);
                self.memory.write_u32(desc + 8, status | errors);
                self.memory.write_u32(desc + 12, chunk.len() as u32);
            } else {
                self.memory.write_u32(desc + 8, chunk.len() as u32);
                self.memory.write_u32(desc + 12, status | errors << 8);
            }
            head = (head + 1) % size;
        }
        self.set(block + map::HEAD, head);
        true
    }

    /// Sends what the driver queued (TDH up to TDT).
    fn run_tx(&mut self) {
        let block = self.variant.tx_block();
        if self.reg(map::TCTL) & 2 == 0 || !self.queue_enabled(block) {
            return;
        }
        let size = self.ring_len(block);
        while self.reg(block + map::HEAD) != self.reg(block + map::TAIL) {
            let head = self.reg(block + map::HEAD);
            let desc = self.ring_base(block) + u64::from(head) * 16;
            let buffer = self.memory.read_u64(desc);
            let command = self.memory.read_u32(desc + 8);
            let length = (command & 0xffff) as usize;
            let dext = command & (1 << 29) != 0;
            if self.variant.advanced() {
                if !dext || (command >> 20) & 0xf != 3 {
                    self.violation(format!(
                        "TX descriptor {head} is not an advanced data descriptor"
                    ));
                }
                let paylen = self.memory.read_u32(desc + 12) >> 14;
                if paylen as usize != length {
                    self.violation(format!(
                        "TX descriptor {head}: PAYLEN {paylen} for {length} bytes"
                    ));
                }
            } else if dext {
                self.violation(format!("TX descriptor {head} is extended on a legacy ring"));
            }
            for (bit, name) in [(24, "EOP"), (25, "IFCS"), (27, "RS")] {
                if command & (1 << bit) == 0 {
                    self.violation(format!("TX descriptor {head} without {name}"));
                }
            }
            self.sent.push(self.memory.read(buffer, length));
            // DD in the status byte (legacy) or olinfo (advanced).
            let word = self.memory.read_u32(desc + 12);
            self.memory.write_u32(desc + 12, word | 1);
            self.set(block + map::HEAD, (head + 1) % size);
        }
    }

    fn check_write(&mut self, offset: usize, value: u32) {
        let rx = self.variant.rx_block();
        let tx = self.variant.tx_block();
        if offset == map::RCTL && value & 2 != 0 && !self.ring_ready(rx) {
            self.violation("RCTL.EN before the RX ring was programmed".into());
        }
        if offset == map::TCTL && value & 2 != 0 && !self.ring_ready(tx) {
            self.violation("TCTL.EN before the TX ring was programmed".into());
        }
        if self.variant.advanced()
            && offset == rx + map::TAIL
            && value != 0
            && !self.queue_enabled(rx)
        {
            self.violation("RDT written before RXDCTL.ENABLE (82576 §4.5.9)".into());
        }
        if offset == rx + map::TAIL && value >= self.ring_len(rx).max(1) {
            self.violation(format!("RDT {value} past the ring"));
        }
        if offset == map::CTRL
            && value & (1 << 26) != 0
            && self.variant == Variant::I219
            && !self.semaphore_held()
        {
            self.violation("I219 reset without the SW/FW semaphore".into());
        }
        if self.reset_reads_left > 0 && offset != map::CTRL {
            self.violation(format!("register {offset:#x} written during the reset"));
        }
    }
}

impl RegisterBus for Model {
    fn read32(&mut self, offset: usize) -> u32 {
        match offset {
            map::CTRL if self.reset_reads_left > 0 => {
                if !self.faults.reset_stuck {
                    self.reset_reads_left -= 1;
                    if self.reset_reads_left == 0 {
                        self.power_on();
                        return self.reg(map::CTRL);
                    }
                }
                self.reg(map::CTRL) | 1 << 26
            }
            map::STATUS => {
                let mut status = self.reg(map::STATUS);
                let up = self.autoneg_started
                    && !self.faults.link_down
                    && self.reg(map::CTRL) & (1 << 6) != 0;
                if up {
                    status |= 1 << 1 | 1 | 2 << 6;
                }
                status
            }
            map::ICR => {
                let icr = self.reg(map::ICR);
                self.set(map::ICR, 0);
                icr
            }
            _ => self.reg(offset),
        }
    }

    // Intel registers are 32 bits wide: the driver never uses narrower
    // accesses, and the model refuses them.
    fn read16(&mut self, offset: usize) -> u16 {
        panic!("16-bit read of {offset:#x}")
    }

    fn write16(&mut self, offset: usize, _: u16) {
        panic!("16-bit write of {offset:#x}")
    }

    fn read8(&mut self, offset: usize) -> u8 {
        panic!("8-bit read of {offset:#x}")
    }

    fn write8(&mut self, offset: usize, _: u8) {
        panic!("8-bit write of {offset:#x}")
    }

    fn write32(&mut self, offset: usize, value: u32) {
        assert!(
            offset.is_multiple_of(4) && offset < 0x20000,
            "register {offset:#x}"
        );
        self.check_write(offset, value);
        match offset {
            map::CTRL if value & (1 << 26) != 0 => {
                self.reset_reads_left = 2;
                self.set(map::CTRL, value & !(1 << 26));
            }
            map::MDIC => self.mdic(value),
            map::IMC => {
                let ims = self.reg(map::IMS);
                self.set(map::IMS, ims & !value);
            }
            map::EERD if value & 1 != 0 => {
                let word = (value >> 2) as usize;
                let mac = self.faults.nvm_only_mac.unwrap_or(MAC);
                let data = if word < 3 {
                    u32::from(u16::from_le_bytes([mac[word * 2], mac[word * 2 + 1]]))
                } else {
                    0xffff
                };
                self.set(map::EERD, data << 16 | 2);
            }
            map::EXTCNF_CTRL if self.faults.me_holds_phy => {}
            offset if offset == self.rx(map::DCTL) || offset == self.tx(map::DCTL) => {
                let enable = if self.faults.queue_stuck {
                    0
                } else {
                    value & (1 << 25)
                };
                self.set(offset, (value & !(1 << 25)) | enable);
            }
            offset if offset == self.rx(map::HEAD) || offset == self.tx(map::HEAD) => {
                if self.variant.advanced() && value != 0 {
                    self.violation("82576 RDH/TDH are read-only".into());
                }
                self.set(offset, value);
            }
            offset if offset == self.tx(map::TAIL) => {
                self.set(offset, value);
            }
            _ => self.set(offset, value),
        }
    }
}

// ---------------------------------------------------------------- tests

type Driver = IntelEth<Model, TestDma, Delay>;

fn bring_up(variant: Variant, faults: Faults) -> Result<(Driver, Memory), Error> {
    let memory = Memory::default();
    let model = Model::new(variant, memory.clone(), faults);
    let mut dma = TestDma::new(memory.clone());
    IntelEth::new(model, &mut dma, Delay::default(), variant.part()).map(|d| (d, memory))
}

fn up(variant: Variant) -> Driver {
    bring_up(variant, Faults::default()).unwrap().0
}

fn no_violations(driver: &mut Driver) {
    let violations = &driver.bus_mut().violations;
    assert!(violations.is_empty(), "violations: {violations:#?}");
}

fn frame(to: [u8; 6], n: usize, len: usize) -> Vec<u8> {
    let mut f = to.to_vec();
    f.extend_from_slice(&PEER);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend((0..len - 14).map(|i| (i + n) as u8));
    f
}

const VARIANTS: [Variant; 3] = [Variant::I82574, Variant::I219, Variant::I82576];

#[test]
fn parts_are_identified_by_pci_id() {
    assert_eq!(Part::identify(0x8086, 0x10d3), Some(Part::I82574));
    assert_eq!(Part::identify(0x8086, 0x15b8), Some(Part::I219));
    assert_eq!(Part::identify(0x8086, 0x0dc7), Some(Part::I219));
    assert_eq!(Part::identify(0x8086, 0x10c9), Some(Part::I82576));
    assert_eq!(Part::identify(0x8086, 0x1539), Some(Part::I210));
    assert_eq!(Part::identify(0x8086, 0x100e), None, "plain e1000");
    assert_eq!(Part::identify(0x10ec, 0x10d3), None);
}

#[test]
fn bring_up_follows_the_datasheet_order_and_the_link_comes_up() {
    for variant in VARIANTS {
        let mut d = up(variant);
        assert_eq!(d.mac_address(), MAC, "{variant:?}");
        assert_eq!(
            d.poll_link(),
            Some(Link {
                speed: Speed::Mbps1000,
                full_duplex: true
            })
        );
        let model = d.bus_mut();
        assert_eq!(model.reg(map::IMS), 0, "{variant:?}: interrupts masked");
        assert_ne!(model.reg(map::CTRL_EXT) & (1 << 28), 0, "DRV_LOAD");
        assert_eq!(
            model.reg(map::RCTL) & (1 << 1 | 1 << 15 | 1 << 26),
            1 << 1 | 1 << 15 | 1 << 26
        );
        assert_eq!(model.reg(map::RCTL) & (3 << 16), 0, "2 KiB buffers");
        assert_eq!(model.reg(map::TCTL) & (1 << 1 | 1 << 3), 1 << 1 | 1 << 3);
        let rx = variant.rx_block();
        assert_eq!(model.reg(rx + map::LEN), 256 * 16);
        assert_eq!(model.reg(rx + map::TAIL), 255, "all descriptors but one");
        assert!(model.ring_base(rx) > 1 << 32, "high address word written");
        if variant.advanced() {
            assert_eq!(model.reg(rx + map::SRRCTL) & 0x7f, 2, "2 KiB");
            assert_eq!(
                (model.reg(rx + map::SRRCTL) >> 25) & 7,
                1,
                "advanced one-buffer"
            );
        }
        assert!((0..128).all(|i| model.reg(map::MTA + 4 * i) == 0));
        if variant == Variant::I219 {
            assert!(!model.semaphore_held(), "semaphore released after bring-up");
            assert_eq!(
                model.reg(map::STATUS) & (1 << 9),
                0,
                "LAN_INIT_DONE cleared"
            );
        }
        no_violations(&mut d);
    }
}

#[test]
fn the_link_follows_the_phy() {
    let (mut d, _) = bring_up(
        Variant::I82574,
        Faults {
            link_down: true,
            ..Faults::default()
        },
    )
    .unwrap();
    assert_eq!(d.poll_link(), None);
    d.bus_mut().faults.link_down = false;
    assert!(d.poll_link().is_some());
}

#[test]
fn an_igb_part_without_nvm_auto_read_still_comes_up() {
    let (mut d, _) = bring_up(
        Variant::I82576,
        Faults {
            nvm_stuck: true,
            ..Faults::default()
        },
    )
    .unwrap();
    assert_eq!(d.mac_address(), MAC);
    no_violations(&mut d);
}

#[test]
fn the_mac_comes_from_the_nvm_when_ral_is_not_loaded() {
    let nvm = [0x00, 0x1b, 0x21, 0x99, 0x88, 0x77];
    let (mut d, _) = bring_up(
        Variant::I82574,
        Faults {
            nvm_only_mac: Some(nvm),
            ..Faults::default()
        },
    )
    .unwrap();
    assert_eq!(d.mac_address(), nvm);
    // And the filter now holds it, valid.
    let model = d.bus_mut();
    assert_eq!(model.reg(map::RAH) >> 31, 1);
    assert!(model.inject(&frame(nvm, 0, 60)));
    let mut buf = [0u8; 1514];
    assert_eq!(d.receive(&mut buf), Some(60));
    let error = bring_up(
        Variant::I82576,
        Faults {
            nvm_only_mac: Some([0xff; 6]),
            ..Faults::default()
        },
    )
    .err()
    .unwrap();
    assert_eq!(error, Error::NoMacAddress);
}

#[test]
fn typed_errors_for_every_bring_up_failure() {
    let cases: [(Variant, Faults, Error); 9] = [
        (
            Variant::I82574,
            Faults {
                reset_stuck: true,
                ..Faults::default()
            },
            Error::ResetTimeout,
        ),
        (
            Variant::I82574,
            Faults {
                nvm_stuck: true,
                ..Faults::default()
            },
            Error::NvmTimeout,
        ),
        (
            Variant::I219,
            Faults {
                lan_init_stuck: true,
                ..Faults::default()
            },
            Error::LanInitTimeout,
        ),
        (
            Variant::I219,
            Faults {
                me_holds_phy: true,
                ..Faults::default()
            },
            Error::SemaphoreTimeout { me_present: true },
        ),
        (
            Variant::I82574,
            Faults {
                mdio_stuck: true,
                ..Faults::default()
            },
            Error::MdioTimeout(2),
        ),
        (
            Variant::I82576,
            Faults {
                no_phy: true,
                ..Faults::default()
            },
            Error::NoPhy {
                address: 1,
                id: 0xffff_ffff,
            },
        ),
        (
            Variant::I82576,
            Faults {
                queue_stuck: true,
                ..Faults::default()
            },
            Error::QueueTimeout(Ring::Rx),
        ),
        (
            Variant::I82574,
            Faults {
                nvm_only_mac: Some([0; 6]),
                ..Faults::default()
            },
            Error::NoMacAddress,
        ),
        (
            Variant::I82574,
            Faults {
                nvm_only_mac: Some([0x01, 0, 0, 0, 0, 1]),
                ..Faults::default()
            },
            Error::NoMacAddress,
        ),
    ];
    for (variant, faults, expected) in cases {
        let error = bring_up(variant, faults)
            .err()
            .unwrap_or_else(|| panic!("{expected:?}"));
        assert_eq!(error, expected, "{variant:?}");
    }
    // Out of DMA memory.
    let memory = Memory::default();
    let model = Model::new(Variant::I82574, memory.clone(), Faults::default());
    let mut dma = TestDma::new(memory);
    dma.budget = 10_000;
    let error = IntelEth::new(model, &mut dma, Delay::default(), Part::I82574)
        .err()
        .unwrap();
    assert_eq!(error, Error::OutOfDmaMemory);
}

#[test]
fn frames_flow_through_both_rings_and_wrap_them() {
    for variant in VARIANTS {
        let mut d = up(variant);
        let mut buf = [0u8; 1514];
        // RX: 700 frames, a few at a time, so the 256-slot ring wraps.
        let mut n = 0;
        for round in 0..140 {
            let burst = 1 + round % 5;
            let sent: Vec<Vec<u8>> = (0..burst)
                .map(|i| {
                    frame(
                        if i % 2 == 0 { MAC } else { [0xff; 6] },
                        n + i,
                        60 + (n + i) % 1400,
                    )
                })
                .collect();
            for f in &sent {
                assert!(d.bus_mut().inject(f), "{variant:?} frame {n}");
            }
            for f in &sent {
                let len = d.receive(&mut buf).unwrap();
                assert_eq!(&buf[..len], &f[..]);
            }
            assert_eq!(d.receive(&mut buf), None);
            n += burst;
        }
        // Frames for someone else never reach the ring.
        assert!(!d.bus_mut().inject(&frame(PEER, 0, 60)));
        // TX: 700 frames, reclaimed as the card finishes them.
        let mut queued = Vec::new();
        for i in 0..700 {
            let f = frame(PEER, i, 42 + i % 1400);
            if !d.can_transmit() {
                d.bus_mut().run_tx();
            }
            d.transmit(&f).unwrap();
            queued.push(f);
            if i % 7 == 0 {
                d.bus_mut().run_tx();
            }
        }
        d.bus_mut().run_tx();
        assert_eq!(d.bus_mut().sent, queued, "{variant:?}");
        assert_eq!(d.stats().rx_frames, n as u64);
        assert_eq!(d.stats().tx_frames, 700);
        no_violations(&mut d);
    }
}

#[test]
fn a_full_ring_refuses_until_the_card_has_sent_and_a_full_rx_ring_drops() {
    for variant in VARIANTS {
        let mut d = up(variant);
        for i in 0..RING_SIZE - 1 {
            d.transmit(&frame(PEER, i, 60)).unwrap();
        }
        assert!(!d.can_transmit());
        assert_eq!(d.transmit(&frame(PEER, 0, 60)), Err(TxError::RingFull));
        d.bus_mut().run_tx();
        assert!(d.can_transmit());
        d.transmit(&frame(PEER, 1, 60)).unwrap();
        assert_eq!(d.transmit(&[]), Err(TxError::BadLength(0)));
        assert_eq!(d.transmit(&[0; 1515]), Err(TxError::BadLength(1515)));
        // RX: 255 descriptors are the card's; the 256th frame is missed.
        for i in 0..RING_SIZE {
            d.bus_mut().inject(&frame(MAC, i, 60));
        }
        assert_eq!(d.bus_mut().missed, 1, "{variant:?}");
        let mut buf = [0u8; 1514];
        let mut got = 0;
        while d.receive(&mut buf).is_some() {
            got += 1;
        }
        assert_eq!(got, RING_SIZE - 1);
        no_violations(&mut d);
    }
}

#[test]
fn error_frames_split_frames_and_frames_too_long_for_the_caller_are_dropped() {
    for variant in VARIANTS {
        let mut d = up(variant);
        let mut buf = [0u8; 1514];
        let error_bits = if variant.advanced() { 1 << 29 } else { 0x01 };
        assert!(d
            .bus_mut()
            .inject_with_errors(&frame(MAC, 0, 100), error_bits));
        // A 3000-byte frame spans two 2 KiB buffers: dropped whole.
        assert!(d.bus_mut().inject(&frame(MAC, 1, 3000)));
        let good = frame(MAC, 2, 200);
        assert!(d.bus_mut().inject(&good));
        assert_eq!(d.receive(&mut buf), Some(200));
        assert_eq!(&buf[..200], &good[..]);
        assert_eq!(d.stats().rx_errors, 2, "{variant:?}");
        // Longer than the caller's buffer.
        assert!(d.bus_mut().inject(&frame(MAC, 3, 1000)));
        let mut small = [0u8; 500];
        assert_eq!(d.receive(&mut small), None);
        assert_eq!(d.stats().rx_errors, 3);
        no_violations(&mut d);
    }
}

#[test]
fn the_model_catches_a_driver_that_enables_rx_before_its_ring() {
    // A stand-in for a broken driver: RCTL.EN first.
    let memory = Memory::default();
    let mut model = Model::new(Variant::I82574, memory, Faults::default());
    model.write32(map::RCTL, 2);
    assert_eq!(
        model.violations,
        ["RCTL.EN before the RX ring was programmed"]
    );
    let mut igb = Model::new(Variant::I82576, Memory::default(), Faults::default());
    igb.write32(map::ADV_RX + map::BAL, 0x1000);
    igb.write32(map::ADV_RX + map::LEN, 4096);
    igb.write32(map::ADV_RX + map::TAIL, 255);
    assert_eq!(
        igb.violations,
        ["RDT written before RXDCTL.ENABLE (82576 §4.5.9)"]
    );
    let mut i219 = Model::new(Variant::I219, Memory::default(), Faults::default());
    i219.write32(map::MDIC, 2 << 26 | 2 << 21 | 2 << 16);
    i219.write32(map::CTRL, 1 << 26);
    assert_eq!(
        i219.violations,
        [
            "MDIC used without the SW/FW semaphore",
            "I219 reset without the SW/FW semaphore"
        ]
    );
}
