//! GENET v5 register map: offsets from the controller base (0xFD58_0000 on the Pi 4)
//! and the bit fields the driver uses.
//!
//! Sources: U-Boot `drivers/net/bcmgenet.c` (v5 only, "register definitions derived
//! from Linux source") and Linux `drivers/net/ethernet/broadcom/genet/bcmgenet.h`
//! (`CMD_HD_EN`, the INTRL2 layout, the RX status bits). Each constant names its block.

use tock_registers::register_structs;
use tock_registers::registers::ReadWrite;

/// SYS block (+0x0000): revision; bits 27:24 read 6 on GENET v5 (U-Boot/Linux map 6 → v5).
pub const SYS_REV_CTRL: usize = 0x0000;
/// SYS block: port mode (U-Boot `SYS_PORT_CTRL`).
pub const SYS_PORT_CTRL: usize = 0x0004;
/// `SYS_PORT_CTRL` value for an external gigabit PHY (U-Boot `PORT_MODE_EXT_GPHY`).
pub const PORT_MODE_EXT_GPHY: u32 = 3;
/// SYS block: RX buffer flush; bit 1 holds the MAC in reset at power-up (U-Boot `SYS_RBUF_FLUSH_CTRL`).
pub const SYS_RBUF_FLUSH_CTRL: usize = 0x0008;
/// The MAC reset bit of `SYS_RBUF_FLUSH_CTRL` (U-Boot `bcmgenet_umac_reset`, `BIT(1)`).
pub const RBUF_FLUSH_MAC_RESET: u32 = 1 << 1;
/// EXT block (+0x0080) + 0x0C: RGMII out-of-band control (U-Boot `EXT_RGMII_OOB_CTRL`).
pub const EXT_RGMII_OOB_CTRL: usize = 0x008C;
/// INTRL2_0 block (+0x0200) + 0x08: interrupt clear (Linux `INTRL2_CPU_CLEAR`).
pub const INTRL2_0_CPU_CLEAR: usize = 0x0208;
/// INTRL2_0 block + 0x10: interrupt mask set (Linux `INTRL2_CPU_MASK_SET`).
pub const INTRL2_0_CPU_MASK_SET: usize = 0x0210;
/// INTRL2_1 block (+0x0240) + 0x08: interrupt clear.
pub const INTRL2_1_CPU_CLEAR: usize = 0x0248;
/// INTRL2_1 block + 0x10: interrupt mask set.
pub const INTRL2_1_CPU_MASK_SET: usize = 0x0250;
/// RBUF block (+0x0300): RX buffer control (U-Boot `RBUF_CTRL`).
pub const RBUF_CTRL: usize = 0x0300;
/// `RBUF_CTRL` bit: prepend 2 bytes to each frame so the IP header is 4-byte aligned.
/// The other bits (`RBUF_64B_EN`: a 64-byte status block before each frame, which
/// Linux turns on) stay clear: the driver writes the register whole.
pub const RBUF_ALIGN_2B: u32 = 1 << 1;
/// RBUF block + 0xB4: RX/TX buffer size control (U-Boot `RBUF_TBUF_SIZE_CTRL`).
pub const RBUF_TBUF_SIZE_CTRL: usize = 0x03B4;
/// TBUF block (+0x0600 on v5, Linux `tbuf_offset`) + 0x00: TX buffer control (Linux
/// `TBUF_CTRL`). Written 0: no 64-byte status block before each TX frame (`TBUF_64B_EN`,
/// which Linux sets and a later user must clear).
pub const TBUF_CTRL: usize = 0x0600;
/// UMAC block (+0x0800) + 0x008: MAC command (U-Boot `UMAC_CMD`).
pub const UMAC_CMD: usize = 0x0808;
/// UMAC + 0x00C: MAC address bytes 0..4 (U-Boot `UMAC_MAC0`).
pub const UMAC_MAC0: usize = 0x080C;
/// UMAC + 0x010: MAC address bytes 4..6 (U-Boot `UMAC_MAC1`).
pub const UMAC_MAC1: usize = 0x0810;
/// UMAC + 0x014: maximum frame length (U-Boot `UMAC_MAX_FRAME_LEN`).
pub const UMAC_MAX_FRAME_LEN: usize = 0x0814;
/// UMAC + 0x334: TX FIFO flush (U-Boot `UMAC_TX_FLUSH`).
pub const UMAC_TX_FLUSH: usize = 0x0B34;
/// UMAC + 0x580: MIB counter control (U-Boot `UMAC_MIB_CTRL`).
pub const UMAC_MIB_CTRL: usize = 0x0D80;
/// `UMAC_MIB_CTRL` value resetting the RX, runt and TX counters (bits 0, 1, 2).
pub const MIB_RESET_ALL: u32 = 0b111;
/// UMAC + 0x614: MDIO command (U-Boot `MDIO_CMD`, DESIGN.md "MDIO_CMD +0xE14").
pub const MDIO_CMD: usize = 0x0E14;

/// Number of DMA descriptors per direction, all given to the default queue.
pub const DESCRIPTORS: usize = 256;
/// Size of one descriptor in register space: length_status, addr_lo, addr_hi.
pub const DESC_SIZE: usize = 12;
/// Descriptor word offsets (U-Boot `DMA_DESC_*`).
pub const DESC_LENGTH_STATUS: usize = 0x0;
/// Descriptor: buffer address bits 31:0.
pub const DESC_ADDR_LO: usize = 0x4;
/// Descriptor: buffer address bits 63:32.
pub const DESC_ADDR_HI: usize = 0x8;
/// The default queue used for all descriptors (U-Boot `DEFAULT_Q`).
pub const DEFAULT_QUEUE: usize = 16;

/// RX DMA block: descriptors at +0x2000 (U-Boot `GENET_RX_OFF`).
pub const RDMA_DESC_BASE: usize = 0x2000;
/// TX DMA block: descriptors at +0x4000 (U-Boot `GENET_TX_OFF`).
pub const TDMA_DESC_BASE: usize = 0x4000;
/// Ring registers follow the descriptors: 17 rings of 0x40 bytes (U-Boot `DMA_RING_SIZE`).
const RING_REGS: usize = DESCRIPTORS * DESC_SIZE;
const RING_STRIDE: usize = 0x40;
/// RX ring 16 register base: 0x2000 + 0xC00 + 16 * 0x40 = 0x3000.
pub const RDMA_RING16: usize = RDMA_DESC_BASE + RING_REGS + DEFAULT_QUEUE * RING_STRIDE;
/// TX ring 16 register base: 0x5000.
pub const TDMA_RING16: usize = TDMA_DESC_BASE + RING_REGS + DEFAULT_QUEUE * RING_STRIDE;
/// RX DMA control block after the 17 rings: 0x3040 (U-Boot `RDMA_REG_BASE`).
pub const RDMA_REGS: usize = RDMA_DESC_BASE + RING_REGS + (DEFAULT_QUEUE + 1) * RING_STRIDE;
/// TX DMA control block: 0x5040 (U-Boot `TDMA_REG_BASE`).
pub const TDMA_REGS: usize = TDMA_DESC_BASE + RING_REGS + (DEFAULT_QUEUE + 1) * RING_STRIDE;

/// RX ring: DMA write pointer (U-Boot `RDMA_WRITE_PTR`).
pub const RDMA_WRITE_PTR: usize = RDMA_RING16;
/// RX ring: producer index, advanced by the device (U-Boot `RDMA_PROD_INDEX`).
pub const RDMA_PROD_INDEX: usize = RDMA_RING16 + 0x08;
/// RX ring: consumer index, advanced by the driver (U-Boot `RDMA_CONS_INDEX`).
pub const RDMA_CONS_INDEX: usize = RDMA_RING16 + 0x0C;
/// RX ring: XON/XOFF flow-control thresholds (U-Boot `RDMA_XON_XOFF_THRESH`).
pub const RDMA_XON_XOFF_THRESH: usize = RDMA_RING16 + 0x28;
/// RX ring: DMA read pointer (U-Boot `RDMA_READ_PTR`).
pub const RDMA_READ_PTR: usize = RDMA_RING16 + 0x2C;
/// TX ring: DMA read pointer (U-Boot `TDMA_READ_PTR`).
pub const TDMA_READ_PTR: usize = TDMA_RING16;
/// TX ring: consumer index, advanced by the device (U-Boot `TDMA_CONS_INDEX`).
pub const TDMA_CONS_INDEX: usize = TDMA_RING16 + 0x08;
/// TX ring: producer index, advanced by the driver (U-Boot `TDMA_PROD_INDEX`).
pub const TDMA_PROD_INDEX: usize = TDMA_RING16 + 0x0C;
/// TX ring: flow period (U-Boot `TDMA_FLOW_PERIOD`).
pub const TDMA_FLOW_PERIOD: usize = TDMA_RING16 + 0x28;
/// TX ring: DMA write pointer (U-Boot `TDMA_WRITE_PTR`).
pub const TDMA_WRITE_PTR: usize = TDMA_RING16 + 0x2C;
/// Ring register (relative to a ring base): ring size << 16 | buffer size.
pub const RING_BUF_SIZE: usize = 0x10;
/// Ring register: first descriptor word.
pub const RING_START_ADDR: usize = 0x14;
/// Ring register: last descriptor word (256 * 12 / 4 - 1 = 0x2FF).
pub const RING_END_ADDR: usize = 0x1C;
/// Ring register: descriptors completed before an interrupt (U-Boot `DMA_MBUF_DONE_THRESH`).
pub const RING_MBUF_DONE_THRESH: usize = 0x24;
/// DMA block register: which rings are enabled (bit = queue number).
pub const DMA_RING_CFG: usize = 0x00;
/// DMA block register: DMA enable and per-ring buffer enable.
pub const DMA_CTRL: usize = 0x04;
/// DMA block register: SCB burst size (U-Boot writes 8).
pub const DMA_SCB_BURST_SIZE: usize = 0x0C;
/// Index registers count modulo 2^16 (U-Boot masks with 0xFFFF).
pub const INDEX_MASK: u32 = 0xFFFF;

/// Bit fields of the registers and descriptors, as tock-registers field types.
/// (The macro generates `Register` types and `SET`/`CLEAR` values without docs.)
#[allow(missing_docs)]
pub mod bits {
    use tock_registers::register_bitfields;

    register_bitfields![u32,
        /// `UMAC_CMD` (U-Boot `CMD_*`, Linux `CMD_HD_EN`).
        pub UMAC_CMD_BITS [
            /// Transmitter enable.
            TX_EN OFFSET(0) NUMBITS(1) [],
            /// Receiver enable.
            RX_EN OFFSET(1) NUMBITS(1) [],
            /// Link speed.
            SPEED OFFSET(2) NUMBITS(2) [
                /// 10 Mb/s.
                Mbps10 = 0,
                /// 100 Mb/s.
                Mbps100 = 1,
                /// 1000 Mb/s.
                Mbps1000 = 2
            ],
            /// Ignore received pause frames (Linux `CMD_RX_PAUSE_IGNORE`).
            RX_PAUSE_IGNORE OFFSET(8) NUMBITS(1) [],
            /// Half duplex.
            HD_EN OFFSET(10) NUMBITS(1) [],
            /// Software reset of the UMAC: held from bring-up until the link is up
            /// (Linux `reset_umac` and `bcmgenet_mac_config`).
            SW_RESET OFFSET(13) NUMBITS(1) [],
            /// Send no pause frames (Linux `CMD_TX_PAUSE_IGNORE`).
            TX_PAUSE_IGNORE OFFSET(28) NUMBITS(1) []
        ],
        /// `MDIO_CMD` (U-Boot `MDIO_*`).
        pub MDIO_CMD_BITS [
            /// Read or write data.
            DATA OFFSET(0) NUMBITS(16) [],
            /// PHY register number.
            REG OFFSET(16) NUMBITS(5) [],
            /// PHY address.
            PMD OFFSET(21) NUMBITS(5) [],
            /// Operation.
            OP OFFSET(26) NUMBITS(2) [
                /// Write.
                Write = 1,
                /// Read.
                Read = 2
            ],
            /// The read got no answer from the PHY.
            READ_FAIL OFFSET(28) NUMBITS(1) [],
            /// Start the operation; reads 1 until it finishes.
            START_BUSY OFFSET(29) NUMBITS(1) []
        ],
        /// `EXT_RGMII_OOB_CTRL` (U-Boot `RGMII_LINK`, `OOB_DISABLE`, `RGMII_MODE_EN`, `ID_MODE_DIS`).
        pub RGMII_OOB_BITS [
            /// Link indication towards the MAC.
            RGMII_LINK OFFSET(4) NUMBITS(1) [],
            /// Out-of-band status disable.
            OOB_DISABLE OFFSET(5) NUMBITS(1) [],
            /// RGMII mode: without it no frame reaches the MAC.
            RGMII_MODE_EN OFFSET(6) NUMBITS(1) [],
            /// Disable the MAC's TX clock delay ("ID mode"); clear, the MAC delays
            /// TXC itself (Linux clears it for every RGMII mode but plain "rgmii").
            ID_MODE_DIS OFFSET(16) NUMBITS(1) []
        ],
        /// `DMA_CTRL` (U-Boot `DMA_EN`, `DMA_RING_BUF_EN_SHIFT`).
        pub DMA_CTRL_BITS [
            /// DMA engine enable.
            DMA_EN OFFSET(0) NUMBITS(1) [],
            /// Buffer enable of the default ring 16 (bit 1 + 16).
            RING16_BUF_EN OFFSET(17) NUMBITS(1) []
        ],
        /// A descriptor's length_status word (U-Boot `DMA_*`, Linux `DMA_RX_*`).
        pub DESC_BITS [
            /// RX: frame overrun.
            RX_OV OFFSET(0) NUMBITS(1) [],
            /// RX: CRC error.
            RX_CRC_ERROR OFFSET(1) NUMBITS(1) [],
            /// RX: receive error signalled by the PHY.
            RX_RXER OFFSET(2) NUMBITS(1) [],
            /// RX: non-octet aligned frame.
            RX_NO OFFSET(3) NUMBITS(1) [],
            /// RX: frame longer than the maximum length.
            RX_LG OFFSET(4) NUMBITS(1) [],
            /// TX: append the Ethernet CRC.
            TX_APPEND_CRC OFFSET(6) NUMBITS(1) [],
            /// TX: queue tag (U-Boot sets all six bits).
            TX_QTAG OFFSET(7) NUMBITS(6) [],
            /// Last descriptor of the ring.
            WRAP OFFSET(12) NUMBITS(1) [],
            /// Start of packet.
            SOP OFFSET(13) NUMBITS(1) [],
            /// End of packet.
            EOP OFFSET(14) NUMBITS(1) [],
            /// Owned by the DMA engine.
            OWN OFFSET(15) NUMBITS(1) [],
            /// Buffer or frame length in bytes.
            LENGTH OFFSET(16) NUMBITS(12) []
        ]
    ];
}

pub use bits::*;

/// RX error bits of length_status: OV, CRC_ERROR, RXER, NO, LG (Linux `DMA_RX_FI_MASK` bits).
pub const DESC_RX_ERRORS: u32 = 0x1F;

register_structs! {
    /// The 64 KiB GENET register window as 32-bit volatile cells (the Pi 4 device tree
    /// gives `reg = <0x0 0x7d580000 0x10000>`, i.e. ARM 0xFD58_0000, 64 KiB).
    pub GenetWindow {
        (0x0000 => words: [ReadWrite<u32>; 0x4000]),
        (0x10000 => @END),
    }
}

impl GenetWindow {
    /// The 32-bit register at byte `offset`, or `None` outside the window or unaligned.
    pub(crate) fn word(&self, offset: usize) -> Option<&ReadWrite<u32>> {
        if !offset.is_multiple_of(4) {
            return None;
        }
        self.words.get(offset / 4)
    }
}
