//! Register offsets and bits of the RTL8111/8168 the driver uses (the
//! RTL8169/8168 datasheets' register table, as Linux `r8169` and iPXE
//! `realtek.c` name it). The host test's model declares its own map.

/// ID registers 0..6: the station address, loaded from the EEPROM/eFuse at
/// reset (8-bit).
pub const IDR0: usize = 0x00;
/// Multicast address registers, 8 bytes (two 32-bit writes).
pub const MAR0: usize = 0x08;
/// Transmit normal-priority descriptor ring address, low and high (32-bit).
pub const TNPDS_LO: usize = 0x20;
/// High half.
pub const TNPDS_HI: usize = 0x24;
/// Command register (8-bit): reset bit 4, receiver enable bit 3,
/// transmitter enable bit 2.
pub const CR: usize = 0x37;
/// Transmit priority polling (8-bit): normal-priority queue bit 6.
pub const TPPOLL: usize = 0x38;
/// Interrupt mask (16-bit).
pub const IMR: usize = 0x3c;
/// Interrupt status (16-bit, write one to clear).
pub const ISR: usize = 0x3e;
/// Transmit configuration (32-bit): hardware version bits 30:26 and 23:20,
/// interframe gap bits 25:24, max DMA burst bits 10:8.
pub const TCR: usize = 0x40;
/// Receive configuration (32-bit): accept physical match bit 1, broadcast
/// bit 3, RX FIFO threshold bits 15:13, max DMA burst bits 10:8.
pub const RCR: usize = 0x44;
/// EEPROM command (8-bit): 0xC0 unlocks the configuration registers.
pub const CFG9346: usize = 0x50;
/// PHY access (32-bit): flag bit 31, register 20:16, data 15:0.
pub const PHYAR: usize = 0x60;
/// PHY status (8-bit): full duplex bit 0, link bit 1, 10/100/1000 bits 2-4.
pub const PHYSTATUS: usize = 0x6c;
/// Maximum received packet size (16-bit).
pub const RMS: usize = 0xda;
/// C+ command (16-bit).
pub const CPLUSCMD: usize = 0xe0;
/// Receive descriptor ring address, low and high (32-bit).
pub const RDSAR_LO: usize = 0xe4;
/// High half.
pub const RDSAR_HI: usize = 0xe8;
/// Maximum transmit packet size (8-bit, in 128-byte units).
pub const MTPS: usize = 0xec;

/// CR: software reset (self-clearing).
pub const CR_RST: u8 = 1 << 4;
/// CR: receiver enable.
pub const CR_RE: u8 = 1 << 3;
/// CR: transmitter enable.
pub const CR_TE: u8 = 1 << 2;
/// TPPOLL: poll the normal-priority queue.
pub const TPPOLL_NPQ: u8 = 1 << 6;
/// CFG9346: unlock.
pub const CFG9346_UNLOCK: u8 = 0xc0;
/// CFG9346: lock.
pub const CFG9346_LOCK: u8 = 0x00;
/// TCR: interframe gap 96 bit times (3 << 24), unlimited DMA burst (7 << 8).
pub const TCR_VALUE: u32 = 3 << 24 | 7 << 8;
/// RCR: physical match, broadcast, no FIFO threshold, unlimited DMA burst.
pub const RCR_VALUE: u32 = 1 << 1 | 1 << 3 | 7 << 13 | 7 << 8;
/// PHYAR: the flag (write: start a write; read: set when data is ready).
pub const PHYAR_FLAG: u32 = 1 << 31;
/// PHYSTATUS: full duplex.
pub const PHYSTATUS_FULL_DUPLEX: u8 = 1 << 0;
/// PHYSTATUS: link up.
pub const PHYSTATUS_LINK: u8 = 1 << 1;
/// PHYSTATUS: 10 Mb/s.
pub const PHYSTATUS_10: u8 = 1 << 2;
/// PHYSTATUS: 100 Mb/s.
pub const PHYSTATUS_100: u8 = 1 << 3;
/// PHYSTATUS: 1000 Mb/s.
pub const PHYSTATUS_1000: u8 = 1 << 4;

/// Descriptor word 0 (opts1): the card owns it.
pub const DESC_OWN: u32 = 1 << 31;
/// End of ring: the card goes back to descriptor 0 after this one.
pub const DESC_EOR: u32 = 1 << 30;
/// First segment of a frame.
pub const DESC_FS: u32 = 1 << 29;
/// Last segment of a frame.
pub const DESC_LS: u32 = 1 << 28;
/// RX: the error summary bit.
pub const RX_RES: u32 = 1 << 21;
/// RX: length (CRC included) or buffer size, bits 13:0.
pub const RX_LENGTH_MASK: u32 = 0x3fff;
/// TX: frame length, bits 15:0.
pub const TX_LENGTH_MASK: u32 = 0xffff;
