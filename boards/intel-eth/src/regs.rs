//! Register offsets and bits the driver uses (82574L and 82576 datasheets;
//! Linux `e1000e`/`igb` and iPXE `intel.c` name the same registers). The
//! host tests' models declare their own map from the datasheets, so a wrong
//! offset here fails a test instead of agreeing with itself.

/// Device control.
pub const CTRL: usize = 0x0000;
/// Device status.
pub const STATUS: usize = 0x0008;
/// EEPROM/flash control.
pub const EECD: usize = 0x0010;
/// EEPROM read (82574: start bit 0, done bit 1, address from bit 2, data
/// bits 31:16).
pub const EERD: usize = 0x0014;
/// Extended device control.
pub const CTRL_EXT: usize = 0x0018;
/// MDI control (PHY access).
pub const MDIC: usize = 0x0020;
/// Interrupt cause read (clears on read).
pub const ICR: usize = 0x00c0;
/// Interrupt mask clear.
pub const IMC: usize = 0x00d8;
/// Receive control.
pub const RCTL: usize = 0x0100;
/// Transmit control.
pub const TCTL: usize = 0x0400;
/// Transmit inter-packet gap.
pub const TIPG: usize = 0x0410;
/// Extended configuration control (PCH parts: the software flag of the
/// SW/FW semaphore).
pub const EXTCNF_CTRL: usize = 0x0f00;
/// Multicast table array, 128 words.
pub const MTA: usize = 0x5200;
/// Receive address low/high, entry 0.
pub const RAL0: usize = 0x5400;
/// Receive address high, entry 0 (address valid bit 31).
pub const RAH0: usize = 0x5404;
/// Firmware semaphore (PCH parts: the manageability engine's state).
pub const FWSM: usize = 0x5b54;

/// e1000e queue 0 (and the 82576's legacy aliases of its queue 0).
pub mod e1000e {
    /// RX descriptor base low.
    pub const RDBAL: usize = 0x2800;
    /// RX descriptor base high.
    pub const RDBAH: usize = 0x2804;
    /// RX ring length in bytes.
    pub const RDLEN: usize = 0x2808;
    /// RX head.
    pub const RDH: usize = 0x2810;
    /// RX tail.
    pub const RDT: usize = 0x2818;
    /// TX descriptor base low.
    pub const TDBAL: usize = 0x3800;
    /// TX descriptor base high.
    pub const TDBAH: usize = 0x3804;
    /// TX ring length in bytes.
    pub const TDLEN: usize = 0x3808;
    /// TX head.
    pub const TDH: usize = 0x3810;
    /// TX tail.
    pub const TDT: usize = 0x3818;
}

/// igb queue 0.
pub mod igb {
    /// RX descriptor base low.
    pub const RDBAL: usize = 0xc000;
    /// RX descriptor base high.
    pub const RDBAH: usize = 0xc004;
    /// RX ring length in bytes.
    pub const RDLEN: usize = 0xc008;
    /// Split and replication receive control (buffer size, descriptor
    /// type).
    pub const SRRCTL: usize = 0xc00c;
    /// RX head.
    pub const RDH: usize = 0xc010;
    /// RX tail.
    pub const RDT: usize = 0xc018;
    /// RX descriptor control (queue enable bit 25).
    pub const RXDCTL: usize = 0xc028;
    /// TX descriptor base low.
    pub const TDBAL: usize = 0xe000;
    /// TX descriptor base high.
    pub const TDBAH: usize = 0xe004;
    /// TX ring length in bytes.
    pub const TDLEN: usize = 0xe008;
    /// TX head.
    pub const TDH: usize = 0xe010;
    /// TX tail.
    pub const TDT: usize = 0xe018;
    /// TX descriptor control (queue enable bit 25).
    pub const TXDCTL: usize = 0xe028;
}

/// CTRL: full duplex.
pub const CTRL_FD: u32 = 1 << 0;
/// CTRL: set link up (the MAC follows the PHY's link).
pub const CTRL_SLU: u32 = 1 << 6;
/// CTRL: device reset (self-clearing).
pub const CTRL_RST: u32 = 1 << 26;
/// CTRL: PHY reset.
pub const CTRL_PHY_RST: u32 = 1 << 31;
/// STATUS: full duplex.
pub const STATUS_FD: u32 = 1 << 0;
/// STATUS: link up.
pub const STATUS_LU: u32 = 1 << 1;
/// STATUS: speed, bits 7:6 (0 = 10, 1 = 100, 2 or 3 = 1000).
pub const STATUS_SPEED_SHIFT: u32 = 6;
/// STATUS: LAN init done (PCH parts after a reset).
pub const STATUS_LAN_INIT_DONE: u32 = 1 << 9;
/// EECD: the NVM's auto-read after reset is done.
pub const EECD_AUTO_RD: u32 = 1 << 9;
/// CTRL_EXT: the driver has taken the device (firmware steps back).
pub const CTRL_EXT_DRV_LOAD: u32 = 1 << 28;
/// EERD: start a read.
pub const EERD_START: u32 = 1 << 0;
/// EERD: the read is done.
pub const EERD_DONE: u32 = 1 << 1;
/// MDIC: data 15:0, register 20:16, PHY 25:21, op 27:26 (1 write, 2 read),
/// ready bit 28, error bit 30.
pub const MDIC_OP_WRITE: u32 = 1 << 26;
/// MDIC: read.
pub const MDIC_OP_READ: u32 = 2 << 26;
/// MDIC: done.
pub const MDIC_READY: u32 = 1 << 28;
/// MDIC: the PHY did not answer.
pub const MDIC_ERROR: u32 = 1 << 30;
/// RCTL: receiver enable.
pub const RCTL_EN: u32 = 1 << 1;
/// RCTL: accept broadcast.
pub const RCTL_BAM: u32 = 1 << 15;
/// RCTL: strip the Ethernet CRC.
pub const RCTL_SECRC: u32 = 1 << 26;
/// TCTL: transmitter enable.
pub const TCTL_EN: u32 = 1 << 1;
/// TCTL: pad short packets.
pub const TCTL_PSP: u32 = 1 << 3;
/// TCTL: collision threshold 15 (bits 11:4).
pub const TCTL_CT: u32 = 0x0f << 4;
/// TCTL: collision distance 63 for full duplex (bits 21:12).
pub const TCTL_COLD: u32 = 0x3f << 12;
/// TIPG for copper: IPGT 8, IPGR1 8, IPGR2 6.
pub const TIPG_COPPER: u32 = 8 | 8 << 10 | 6 << 20;
/// RAH: address valid.
pub const RAH_AV: u32 = 1 << 31;
/// EXTCNF_CTRL: software owns the PHY and NVM (PCH semaphore).
pub const EXTCNF_CTRL_SWFLAG: u32 = 1 << 5;
/// FWSM: the manageability engine's firmware is valid (it may own the PHY).
pub const FWSM_FW_VALID: u32 = 1 << 15;
/// SRRCTL: 2 KiB packet buffers (bits 6:0, in KiB).
pub const SRRCTL_BSIZE_2K: u32 = 2;
/// SRRCTL: advanced descriptors, one buffer (bits 27:25 = 1).
pub const SRRCTL_DESCTYPE_ADV_ONEBUF: u32 = 1 << 25;
/// SRRCTL: drop frames when no descriptor is free.
pub const SRRCTL_DROP_EN: u32 = 1 << 31;
/// RXDCTL/TXDCTL: queue enable.
pub const QUEUE_ENABLE: u32 = 1 << 25;

/// Legacy RX descriptor: status byte offset, DD and EOP bits.
pub const LEGACY_RX_LENGTH: usize = 8;
/// Legacy RX descriptor: status (byte 12) and errors (byte 13) word.
pub const LEGACY_RX_STATUS: usize = 12;
/// Descriptor done.
pub const RX_DD: u32 = 1 << 0;
/// End of packet.
pub const RX_EOP: u32 = 1 << 1;
/// Legacy RX errors that spoil a frame (CE, SE, SEQ, CXE, RXE; bits of the
/// errors byte, shifted to the status word).
pub const LEGACY_RX_FRAME_ERRORS: u32 = (0x01 | 0x02 | 0x04 | 0x10 | 0x80) << 8;
/// Legacy TX descriptor: length, CSO, CMD word at offset 8.
pub const LEGACY_TX_CMD_EOP: u32 = 1 << 24;
/// Insert FCS.
pub const LEGACY_TX_CMD_IFCS: u32 = 1 << 25;
/// Report status.
pub const LEGACY_TX_CMD_RS: u32 = 1 << 27;
/// Legacy TX descriptor: status byte (offset 12), DD bit 0.
pub const TX_DD: u32 = 1 << 0;

/// Advanced RX write-back: status/error word at offset 8, length at 12.
pub const ADV_RX_STATUS: usize = 8;
/// Advanced RX write-back: packet length.
pub const ADV_RX_LENGTH: usize = 12;
/// Advanced RX write-back: RX data error.
pub const ADV_RX_ERROR_RXE: u32 = 1 << 29;
/// Advanced TX data descriptor: DTYP = data (bits 23:20 = 3).
pub const ADV_TX_DTYP_DATA: u32 = 3 << 20;
/// Advanced TX: end of packet.
pub const ADV_TX_DCMD_EOP: u32 = 1 << 24;
/// Advanced TX: insert FCS.
pub const ADV_TX_DCMD_IFCS: u32 = 1 << 25;
/// Advanced TX: report status.
pub const ADV_TX_DCMD_RS: u32 = 1 << 27;
/// Advanced TX: extended (advanced) descriptor.
pub const ADV_TX_DCMD_DEXT: u32 = 1 << 29;
/// Advanced TX: payload length shift in the olinfo word.
pub const ADV_TX_PAYLEN_SHIFT: u32 = 14;
