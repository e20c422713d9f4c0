//! The RTL8168 driver against a register-level model of the chip (QEMU has
//! none): registers at their own widths, the reset, the ID registers loaded
//! from the eFuse, PHYAR and a PHY that autonegotiates, and the descriptor
//! DMA of both rings with OWN and EOR, in memory the model reaches by
//! physical address. The register map below is the model's own, from the
//! RTL8169/8168 register table. Every test ends with "no violations".

use tern_nic::model::{CountingDelay, Memory, ModelDma};
use tern_nic::{EthernetDriver, Link, RegisterBus, Speed, TxError};
use tern_rtl8168::{Error, Rtl8168, BUFFER_SIZE, RING_SIZE};

mod map {
    pub const IDR0: usize = 0x00;
    pub const MAR0: usize = 0x08;
    pub const TNPDS: usize = 0x20;
    pub const CR: usize = 0x37;
    pub const TPPOLL: usize = 0x38;
    pub const IMR: usize = 0x3c;
    pub const ISR: usize = 0x3e;
    pub const TCR: usize = 0x40;
    pub const RCR: usize = 0x44;
    pub const CFG9346: usize = 0x50;
    pub const PHYAR: usize = 0x60;
    pub const PHYSTATUS: usize = 0x6c;
    pub const RMS: usize = 0xda;
    pub const CPLUSCMD: usize = 0xe0;
    pub const RDSAR: usize = 0xe4;
    pub const MTPS: usize = 0xec;

    /// The width each register must be accessed at (bytes).
    pub fn width(offset: usize) -> Option<usize> {
        Some(match offset {
            0x00..=0x05 | CR | TPPOLL | CFG9346 | PHYSTATUS | MTPS => 1,
            IMR | ISR | RMS | CPLUSCMD => 2,
            0x08 | 0x0c | TNPDS | 0x24 | TCR | RCR | PHYAR | RDSAR | 0xe8 => 4,
            _ => return None,
        })
    }
}

const MAC: [u8; 6] = [0x00, 0xe0, 0x4c, 0x68, 0x01, 0x02];
const PEER: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const OWN: u32 = 1 << 31;
const EOR: u32 = 1 << 30;
const FS: u32 = 1 << 29;
const LS: u32 = 1 << 28;
/// RTL8168h's version bits in TxConfig.
const XID: u32 = 0x5410_0000;

#[derive(Default, Clone)]
struct Faults {
    absent: bool,
    reset_stuck: bool,
    mac: Option<[u8; 6]>,
    phy_stuck: bool,
    no_phy: bool,
    link: Option<u8>,
}

struct Model {
    regs: [u8; 256],
    memory: Memory,
    faults: Faults,
    violations: Vec<String>,
    reset_reads: u32,
    phy_reads: u32,
    autoneg: bool,
    tx_index: usize,
    rx_index: usize,
    sent: Vec<Vec<u8>>,
    missed: usize,
    filtered: usize,
}

impl Model {
    fn new(memory: Memory, faults: Faults) -> Self {
        let mut model = Self {
            regs: [0; 256],
            memory,
            faults,
            violations: Vec::new(),
            reset_reads: 0,
            phy_reads: 0,
            autoneg: false,
            tx_index: 0,
            rx_index: 0,
            sent: Vec::new(),
            missed: 0,
            filtered: 0,
        };
        model.power_on();
        model
    }

    /// Power-on / reset values: the ID registers from the eFuse, TCR with
    /// the chip's version, everything else idle.
    fn power_on(&mut self) {
        let regs = &mut self.regs;
        regs.fill(0);
        regs[map::IDR0..map::IDR0 + 6].copy_from_slice(&self.faults.mac.unwrap_or(MAC));
        regs[map::TCR..map::TCR + 4].copy_from_slice(&XID.to_le_bytes());
        regs[map::IMR] = 0xff;
        self.tx_index = 0;
        self.rx_index = 0;
    }

    fn get(&self, offset: usize, width: usize) -> u32 {
        let mut bytes = [0u8; 4];
        bytes[..width].copy_from_slice(&self.regs[offset..offset + width]);
        u32::from_le_bytes(bytes)
    }

    fn set(&mut self, offset: usize, width: usize, value: u32) {
        self.regs[offset..offset + width].copy_from_slice(&value.to_le_bytes()[..width]);
    }

    fn ring(&self, at: usize) -> u64 {
        u64::from(self.get(at, 4)) | u64::from(self.get(at + 4, 4)) << 32
    }

    fn check_width(&mut self, offset: usize, width: usize) {
        if map::width(offset) != Some(width) {
            self.violations
                .push(format!("{width}-byte access to register {offset:#x}"));
        }
    }

    fn running(&self) -> (bool, bool) {
        let cr = self.regs[map::CR];
        (cr & (1 << 3) != 0, cr & (1 << 2) != 0)
    }

    fn phy(&mut self, value: u32) {
        self.phy_reads = if self.faults.phy_stuck { u32::MAX } else { 2 };
        let reg = (value >> 16) & 31;
        if value & OWN != 0 {
            if reg == 0 && value & (1 << 9) != 0 && value & (1 << 12) != 0 {
                self.autoneg = true;
            }
        } else {
            let data: u32 = match reg {
                _ if self.faults.no_phy => 0xffff,
                2 => 0x001c,
                3 => 0xc800,
                1 if self.autoneg => 0x796d,
                _ => 0,
            };
            self.set(map::PHYAR, 4, reg << 16 | data);
        }
        // The flag reports completion only after the pending reads.
        let flag = value & OWN;
        self.set(map::PHYAR, 4, (self.get(map::PHYAR, 4) & !OWN) | flag);
    }

    fn phyar_read(&mut self) -> u32 {
        let value = self.get(map::PHYAR, 4);
        if self.phy_reads > 0 && self.phy_reads != u32::MAX {
            self.phy_reads -= 1;
            if self.phy_reads == 0 {
                // Done: a write clears the flag, a read sets it.
                let done = value ^ OWN;
                self.set(map::PHYAR, 4, done);
                return done;
            }
        }
        value
    }

    fn transmit(&mut self) {
        let (_, tx_on) = self.running();
        if !tx_on {
            self.violations
                .push("TPPOLL with the transmitter off".into());
            return;
        }
        let base = self.ring(map::TNPDS);
        let max = usize::from(self.regs[map::MTPS]) * 128;
        loop {
            if self.tx_index == RING_SIZE {
                self.violations
                    .push("the card walked past the TX ring's end (no EOR)".into());
                self.tx_index = 0;
                return;
            }
            let desc = base + (self.tx_index * 16) as u64;
            let opts1 = self.memory.read_u32(desc);
            if opts1 & OWN == 0 {
                return;
            }
            if opts1 & (FS | LS) != FS | LS {
                self.violations
                    .push(format!("TX descriptor {} not a whole frame", self.tx_index));
            }
            let length = (opts1 & 0xffff) as usize;
            if length < 60 || length > max {
                self.violations.push(format!(
                    "TX frame of {length} bytes (short frames must be padded, MTPS {max})"
                ));
            }
            let buffer = self.memory.read_u64(desc + 8);
            self.sent.push(self.memory.read(buffer, length));
            self.memory.write_u32(desc, opts1 & !OWN);
            self.tx_index = if opts1 & EOR != 0 {
                0
            } else {
                self.tx_index + 1
            };
        }
    }

    fn inject(&mut self, frame: &[u8]) -> bool {
        self.inject_with(frame, 0)
    }

    /// Receives `frame` (the card adds 4 bytes of CRC); `status` are extra
    /// opts1 bits (errors).
    fn inject_with(&mut self, frame: &[u8], status: u32) -> bool {
        let (rx_on, _) = self.running();
        let rcr = self.get(map::RCR, 4);
        if !rx_on {
            self.missed += 1;
            return false;
        }
        let ours = rcr & (1 << 1) != 0 && frame[..6] == self.regs[map::IDR0..map::IDR0 + 6];
        let broadcast = rcr & (1 << 3) != 0 && frame[..6] == [0xff; 6];
        if !ours && !broadcast {
            self.filtered += 1;
            return false;
        }
        let mut wire = frame.to_vec();
        wire.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        if wire.len() > usize::from(self.get(map::RMS, 2) as u16) {
            self.missed += 1;
            return false;
        }
        let base = self.ring(map::RDSAR);
        let mut written = 0;
        let mut first = true;
        while written < wire.len() {
            let desc = base + (self.rx_index * 16) as u64;
            let opts1 = self.memory.read_u32(desc);
            if opts1 & OWN == 0 {
                self.missed += 1;
                return false;
            }
            let size = (opts1 & 0x3fff) as usize;
            let chunk = size.min(wire.len() - written);
            let buffer = self.memory.read_u64(desc + 8);
            self.memory.write(buffer, &wire[written..written + chunk]);
            written += chunk;
            let last = written == wire.len();
            let mut bits = opts1 & EOR | if first { FS } else { 0 };
            if last {
                bits |= LS | status | wire.len() as u32;
            } else {
                bits |= chunk as u32;
            }
            self.memory.write_u32(desc, bits);
            first = false;
            self.rx_index = if opts1 & EOR != 0 {
                0
            } else {
                self.rx_index + 1
            };
            if self.rx_index == RING_SIZE {
                self.violations
                    .push("the card walked past the RX ring's end (no EOR)".into());
                self.rx_index = 0;
            }
        }
        true
    }
}

impl RegisterBus for Model {
    fn read32(&mut self, offset: usize) -> u32 {
        if self.faults.absent {
            return u32::MAX;
        }
        self.check_width(offset, 4);
        if offset == map::PHYAR {
            return self.phyar_read();
        }
        self.get(offset, 4)
    }

    fn write32(&mut self, offset: usize, value: u32) {
        self.check_width(offset, 4);
        let (rx_on, tx_on) = self.running();
        match offset {
            map::TCR if !tx_on => self
                .violations
                .push("TxConfig written with the transmitter off (lost)".into()),
            map::RCR if !rx_on => self
                .violations
                .push("RxConfig written with the receiver off (lost)".into()),
            map::TCR => {
                // The version bits are read-only.
                self.set(offset, 4, (value & !0x7cf0_0000) | XID);
            }
            map::PHYAR => self.phy(value),
            0x20 | 0x24 | 0xe4 | 0xe8 if rx_on || tx_on => {
                self.violations
                    .push(format!("ring address {offset:#x} changed while running"));
                self.set(offset, 4, value);
            }
            _ => self.set(offset, 4, value),
        }
    }

    fn read16(&mut self, offset: usize) -> u16 {
        self.check_width(offset, 2);
        self.get(offset, 2) as u16
    }

    fn write16(&mut self, offset: usize, value: u16) {
        self.check_width(offset, 2);
        if offset == map::ISR {
            let isr = self.get(offset, 2) & !u32::from(value);
            self.set(offset, 2, isr);
            return;
        }
        self.set(offset, 2, value.into());
    }

    fn read8(&mut self, offset: usize) -> u8 {
        self.check_width(offset, 1);
        match offset {
            map::CR if self.reset_reads > 0 => {
                if !self.faults.reset_stuck {
                    self.reset_reads -= 1;
                    if self.reset_reads == 0 {
                        self.power_on();
                        return 0;
                    }
                }
                1 << 4
            }
            map::PHYSTATUS => {
                if self.autoneg {
                    self.faults.link.unwrap_or(0b1_0011)
                } else {
                    0
                }
            }
            _ => self.regs[offset],
        }
    }

    fn write8(&mut self, offset: usize, value: u8) {
        self.check_width(offset, 1);
        match offset {
            map::CR if value & (1 << 4) != 0 => self.reset_reads = 2,
            map::TPPOLL if value & (1 << 6) != 0 => self.transmit(),
            map::CFG9346 if value != 0xc0 && value != 0 => {
                self.violations.push(format!("Cfg9346 = {value:#x}"))
            }
            _ => self.regs[offset] = value,
        }
    }
}

type Driver = Rtl8168<Model, ModelDma, CountingDelay>;

fn bring_up(faults: Faults) -> Result<Driver, Error> {
    let memory = Memory::default();
    let model = Model::new(memory.clone(), faults);
    Rtl8168::new(model, &mut ModelDma::new(memory), CountingDelay::default())
}

fn up() -> Driver {
    bring_up(Faults::default()).unwrap()
}

fn no_violations(d: &mut Driver) {
    let v = &d.bus_mut().violations;
    assert!(v.is_empty(), "violations: {v:#?}");
}

fn frame(to: [u8; 6], n: usize, len: usize) -> Vec<u8> {
    let mut f = to.to_vec();
    f.extend_from_slice(&PEER);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend((0..len - 14).map(|i| (i * 7 + n) as u8));
    f
}

#[test]
fn bring_up_programs_the_chip_in_order() {
    let mut d = up();
    assert_eq!(d.mac_address(), MAC);
    assert_eq!(d.version(), XID);
    assert!(tern_rtl8168::supports(0x10ec, 0x8168));
    assert!(!tern_rtl8168::supports(0x10ec, 0x8125), "2.5G chips differ");
    let m = d.bus_mut();
    assert_eq!(m.regs[map::CR] & 0b1100, 0b1100, "RE and TE");
    assert_eq!(m.get(map::TCR, 4), 3 << 24 | 7 << 8 | XID);
    assert_eq!(
        m.get(map::RCR, 4) & 0b1010,
        0b1010,
        "physical match and broadcast"
    );
    assert_eq!(m.get(map::RMS, 2), BUFFER_SIZE as u32);
    assert_eq!(m.regs[map::MTPS], 16);
    assert_eq!(m.get(map::IMR, 2), 0, "interrupts masked");
    assert_eq!(m.regs[map::CFG9346], 0, "configuration locked again");
    assert_eq!(m.get(map::MAR0, 4) | m.get(map::MAR0 + 4, 4), 0);
    let rx = m.ring(map::RDSAR);
    assert!(rx > 1 << 32 && rx.is_multiple_of(256), "{rx:#x}");
    for slot in 0..RING_SIZE {
        let opts1 = m.memory.read_u32(rx + slot as u64 * 16);
        let eor = if slot == RING_SIZE - 1 { EOR } else { 0 };
        assert_eq!(opts1, OWN | eor | BUFFER_SIZE as u32, "slot {slot}");
    }
    assert_eq!(
        d.poll_link(),
        Some(Link {
            speed: Speed::Mbps1000,
            full_duplex: true
        })
    );
    no_violations(&mut d);
}

#[test]
fn the_link_speed_and_duplex_come_from_phystatus() {
    for (status, link) in [
        (0b0_0000, None),
        (0b0_1010, Some((Speed::Mbps100, false))),
        (0b0_0111, Some((Speed::Mbps10, true))),
        (0b1_0011, Some((Speed::Mbps1000, true))),
    ] {
        let mut d = bring_up(Faults {
            link: Some(status),
            ..Faults::default()
        })
        .unwrap();
        let expected = link.map(|(speed, full_duplex)| Link { speed, full_duplex });
        assert_eq!(d.poll_link(), expected, "{status:#b}");
    }
}

#[test]
fn typed_errors_for_every_bring_up_failure() {
    let cases = [
        (
            Faults {
                absent: true,
                ..Faults::default()
            },
            Error::NoDevice,
        ),
        (
            Faults {
                reset_stuck: true,
                ..Faults::default()
            },
            Error::ResetTimeout,
        ),
        (
            Faults {
                mac: Some([0; 6]),
                ..Faults::default()
            },
            Error::NoMacAddress,
        ),
        (
            Faults {
                mac: Some([1, 2, 3, 4, 5, 6]),
                ..Faults::default()
            },
            Error::NoMacAddress,
        ),
        (
            Faults {
                phy_stuck: true,
                ..Faults::default()
            },
            Error::PhyTimeout(2),
        ),
        (
            Faults {
                no_phy: true,
                ..Faults::default()
            },
            Error::NoPhy(0xffff_ffff),
        ),
    ];
    for (faults, expected) in cases {
        assert_eq!(bring_up(faults).err(), Some(expected));
    }
    let memory = Memory::default();
    let mut dma = ModelDma::new(memory.clone());
    dma.budget = 8192;
    let model = Model::new(memory, Faults::default());
    assert_eq!(
        Rtl8168::new(model, &mut dma, CountingDelay::default()).err(),
        Some(Error::OutOfDmaMemory)
    );
}

#[test]
fn frames_flow_both_ways_and_the_rings_wrap() {
    let mut d = up();
    let mut buf = [0u8; 1514];
    let mut n = 0;
    for round in 0..150 {
        let burst = 1 + round % 6;
        let frames: Vec<Vec<u8>> = (0..burst)
            .map(|i| {
                frame(
                    if i % 3 == 0 { [0xff; 6] } else { MAC },
                    n + i,
                    60 + (n + i) * 13 % 1454,
                )
            })
            .collect();
        for f in &frames {
            assert!(d.bus_mut().inject(f), "frame {n}");
        }
        for f in &frames {
            let len = d.receive(&mut buf).unwrap();
            assert_eq!(&buf[..len], &f[..], "the CRC is not handed out");
        }
        assert_eq!(d.receive(&mut buf), None);
        n += burst;
    }
    assert!(!d.bus_mut().inject(&frame(PEER, 0, 60)), "not ours");
    assert_eq!(d.bus_mut().filtered, 1);
    let mut queued = Vec::new();
    for i in 0..700 {
        let f = frame(PEER, i, 60 + i % 1454);
        if !d.can_transmit() {
            panic!("ring full at {i}");
        }
        d.transmit(&f).unwrap();
        queued.push(f);
    }
    assert_eq!(d.bus_mut().sent, queued);
    assert_eq!(d.stats().tx_frames, 700);
    assert_eq!(d.stats().rx_frames, n as u64);
    no_violations(&mut d);
}

#[test]
fn short_frames_are_padded_and_bad_lengths_refused() {
    let mut d = up();
    let arp = frame([0xff; 6], 0, 42);
    d.transmit(&arp).unwrap();
    let sent = d.bus_mut().sent.pop().unwrap();
    assert_eq!(sent.len(), 60);
    assert_eq!(&sent[..42], &arp[..]);
    assert!(sent[42..].iter().all(|&b| b == 0), "zero padding");
    assert_eq!(d.transmit(&[]), Err(TxError::BadLength(0)));
    assert_eq!(d.transmit(&[0; 1515]), Err(TxError::BadLength(1515)));
    no_violations(&mut d);
}

#[test]
fn a_ring_the_card_has_not_sent_is_full() {
    let mut d = up();
    // Turn the card's transmitter off behind the driver's back, so that
    // nothing is sent: the 257th frame finds no free descriptor.
    d.bus_mut().regs[map::CR] &= !(1 << 2);
    for i in 0..RING_SIZE {
        d.transmit(&frame(PEER, i, 60)).unwrap();
    }
    assert!(!d.can_transmit());
    assert_eq!(d.transmit(&frame(PEER, 0, 60)), Err(TxError::RingFull));
    let m = d.bus_mut();
    assert_eq!(
        m.violations.len(),
        RING_SIZE,
        "TPPOLL with the transmitter off"
    );
    m.violations.clear();
    m.regs[map::CR] |= 1 << 2;
    m.write8(map::TPPOLL, 1 << 6);
    assert!(d.can_transmit());
    assert_eq!(d.bus_mut().sent.len(), RING_SIZE);
    no_violations(&mut d);
}

#[test]
fn error_split_and_oversized_frames_are_dropped_and_counted() {
    let mut d = up();
    let mut buf = [0u8; 1514];
    assert!(d.bus_mut().inject_with(&frame(MAC, 0, 100), 1 << 21));
    // 2500 bytes + CRC span two 2 KiB buffers.
    d.bus_mut().write16(map::RMS, 4000);
    assert!(d.bus_mut().inject(&frame(MAC, 1, 2500)));
    let good = frame(MAC, 2, 300);
    assert!(d.bus_mut().inject(&good));
    assert_eq!(d.receive(&mut buf), Some(300));
    assert_eq!(&buf[..300], &good[..]);
    assert_eq!(d.stats().rx_errors, 2);
    assert!(d.bus_mut().inject(&frame(MAC, 3, 1000)));
    let mut small = [0u8; 600];
    assert_eq!(d.receive(&mut small), None);
    assert_eq!(d.stats().rx_errors, 3);
    // The ring is whole again: 255 more frames fit and arrive.
    for i in 0..RING_SIZE {
        assert!(d.bus_mut().inject(&frame(MAC, i, 64)), "{i}");
        assert_eq!(d.receive(&mut buf), Some(64));
    }
    no_violations(&mut d);
}

#[test]
fn the_model_catches_config_before_enable_and_wrong_widths() {
    let mut m = Model::new(Memory::default(), Faults::default());
    m.write32(map::RCR, 0xe70a);
    m.write8(map::CR, 0b1100);
    m.write32(map::TNPDS, 0x1000);
    m.write32(map::CR, 0);
    m.read16(map::TCR);
    assert_eq!(
        m.violations,
        [
            "RxConfig written with the receiver off (lost)",
            "ring address 0x20 changed while running",
            "4-byte access to register 0x37",
            "2-byte access to register 0x40",
        ]
    );
}
