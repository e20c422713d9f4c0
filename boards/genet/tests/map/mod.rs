//! The GENET v5 register map as the test model knows it, declared here from
//! the sources and **not** from the driver's `tern_genet::regs`, so that a
//! wrong offset in the driver shows up as an access to the wrong register.
//!
//! Sources, cited per block: U-Boot `drivers/net/bcmgenet.c` (v5 only:
//! `GENET_*_OFF`, `SYS_*`, `EXT_RGMII_OOB_CTRL`, `RBUF_*`, `UMAC_*`,
//! `MDIO_CMD`, `GENET_RX_OFF`/`GENET_TX_OFF`, `DMA_RING_SIZE`,
//! `DMA_DESC_*`, `*DMA_RING_REG_BASE`, `*DMA_REG_BASE`); Linux
//! `drivers/net/ethernet/broadcom/genet/bcmgenet.h` (block offsets,
//! `INTRL2_CPU_*`, `EXT_*`, `RBUF_STATUS`, `UMAC_HD_BKP_CTRL`) and
//! `bcmgenet.c` (`genet_dma_ring_regs_v4`: the ring registers with their
//! `_HI` words, `bcmgenet_dma_regs_v3plus`: `DMA_STATUS`). Offsets are
//! spelled as the sources spell them: block base + offset in the block.

// `SYS + 0x00` keeps the sources' spelling, so that each line can be checked
// against them.
#![allow(clippy::identity_op)]

/// Block bases (Linux `GENET_*_OFF`, U-Boot `GENET_*_OFF`).
pub const SYS: usize = 0x0000;
/// EXT block.
pub const EXT: usize = 0x0080;
/// First level-2 interrupt controller.
pub const INTRL2_0: usize = 0x0200;
/// Second level-2 interrupt controller.
pub const INTRL2_1: usize = 0x0240;
/// RX buffer block.
pub const RBUF: usize = 0x0300;
/// UniMAC block.
pub const UMAC: usize = 0x0800;
/// RX DMA: descriptors first (U-Boot `GENET_RX_OFF`).
pub const RX_DMA: usize = 0x2000;
/// TX DMA (U-Boot `GENET_TX_OFF`).
pub const TX_DMA: usize = 0x4000;

/// SYS: revision (bits 27:24 = 6 on v5), read-only.
pub const SYS_REV_CTRL: usize = SYS + 0x00;
/// SYS: port mode.
pub const SYS_PORT_CTRL: usize = SYS + 0x04;
/// `SYS_PORT_CTRL` for an external gigabit PHY (`PORT_MODE_EXT_GPHY`).
pub const PORT_MODE_EXT_GPHY: u32 = 3;
/// SYS: RX buffer flush; bit 1 holds the MAC in reset (U-Boot `bcmgenet_umac_reset`).
pub const SYS_RBUF_FLUSH_CTRL: usize = SYS + 0x08;
/// The MAC reset bit.
pub const MAC_RESET: u32 = 1 << 1;
/// SYS: TX buffer flush.
pub const SYS_TBUF_FLUSH_CTRL: usize = SYS + 0x0C;

/// EXT: power management (Linux `EXT_EXT_PWR_MGMT`).
pub const EXT_PWR_MGMT: usize = EXT + 0x00;
/// EXT: RGMII out-of-band control.
pub const EXT_RGMII_OOB_CTRL: usize = EXT + 0x0C;
/// `RGMII_LINK`.
pub const RGMII_LINK: u32 = 1 << 4;
/// `OOB_DISABLE`.
pub const OOB_DISABLE: u32 = 1 << 5;
/// `RGMII_MODE_EN`: without it no frame reaches the MAC.
pub const RGMII_MODE_EN: u32 = 1 << 6;
/// `ID_MODE_DIS`.
pub const ID_MODE_DIS: u32 = 1 << 16;
/// EXT: GPHY control (Linux `EXT_GPHY_CTRL`).
pub const EXT_GPHY_CTRL: usize = EXT + 0x1C;

/// INTRL2 registers, relative to an INTRL2 block (Linux `INTRL2_CPU_*`).
pub const CPU_STAT: usize = 0x00;
/// Sets status bits.
pub const CPU_SET: usize = 0x04;
/// Clears status bits.
pub const CPU_CLEAR: usize = 0x08;
/// The mask, read-only.
pub const CPU_MASK_STATUS: usize = 0x0C;
/// Sets mask bits.
pub const CPU_MASK_SET: usize = 0x10;
/// Clears mask bits.
pub const CPU_MASK_CLEAR: usize = 0x14;

/// RBUF: control.
pub const RBUF_CTRL: usize = RBUF + 0x00;
/// `RBUF_ALIGN_2B`: a 2-byte header before each received frame.
pub const RBUF_ALIGN_2B: u32 = 1 << 1;
/// RBUF: status (Linux `RBUF_STATUS`).
pub const RBUF_STATUS: usize = RBUF + 0x0C;
/// RBUF: checksum control (Linux `RBUF_CHK_CTRL`).
pub const RBUF_CHK_CTRL: usize = RBUF + 0x14;
/// RBUF: buffer sizes.
pub const RBUF_TBUF_SIZE_CTRL: usize = RBUF + 0xB4;

/// UMAC: half-duplex back-pressure (Linux `UMAC_HD_BKP_CTRL`).
pub const UMAC_HD_BKP_CTRL: usize = UMAC + 0x004;
/// UMAC: command.
pub const UMAC_CMD: usize = UMAC + 0x008;
/// `CMD_TX_EN`.
pub const CMD_TX_EN: u32 = 1 << 0;
/// `CMD_RX_EN`.
pub const CMD_RX_EN: u32 = 1 << 1;
/// `CMD_SPEED` shift (2 bits).
pub const CMD_SPEED_SHIFT: u32 = 2;
/// `CMD_HD_EN`.
pub const CMD_HD_EN: u32 = 1 << 10;
/// UMAC: MAC address bytes 0..4.
pub const UMAC_MAC0: usize = UMAC + 0x00C;
/// UMAC: MAC address bytes 4..6.
pub const UMAC_MAC1: usize = UMAC + 0x010;
/// UMAC: maximum frame length.
pub const UMAC_MAX_FRAME_LEN: usize = UMAC + 0x014;
/// UMAC: TX FIFO flush.
pub const UMAC_TX_FLUSH: usize = UMAC + 0x334;
/// UMAC: MIB counter control.
pub const UMAC_MIB_CTRL: usize = UMAC + 0x580;
/// UMAC: MDIO command.
pub const MDIO_CMD: usize = UMAC + 0x614;
/// `MDIO_START_BUSY`.
pub const MDIO_START_BUSY: u32 = 1 << 29;
/// `MDIO_READ_FAIL`.
pub const MDIO_READ_FAIL: u32 = 1 << 28;

/// Descriptors per direction (`TOTAL_DESCS`).
pub const DESCRIPTORS: usize = 256;
/// Bytes per descriptor (`DMA_DESC_SIZE`): length_status, address low, address high.
pub const DESC_SIZE: usize = 12;
/// Descriptor word: length and status.
pub const DESC_LENGTH_STATUS: usize = 0x00;
/// Descriptor word: buffer address bits 31:0.
pub const DESC_ADDRESS_LO: usize = 0x04;
/// Descriptor word: buffer address bits 63:32.
pub const DESC_ADDRESS_HI: usize = 0x08;
/// `DMA_OWN`, `DMA_EOP`, `DMA_SOP` of length_status; the length is bits 27:16.
pub const DMA_OWN: u32 = 0x8000;
/// End of packet.
pub const DMA_EOP: u32 = 0x4000;
/// Start of packet.
pub const DMA_SOP: u32 = 0x2000;
/// TX: append the CRC.
pub const DMA_TX_APPEND_CRC: u32 = 0x0040;
/// TX: the queue tag field, bits 12:7 (U-Boot sets all of it).
pub const DMA_TX_QTAG_MASK: u32 = 0x3F << 7;

/// The ring registers follow the descriptors, 0x40 bytes per ring
/// (`DMA_RING_SIZE`), rings 0..=16; the default queue is 16 (`DEFAULT_Q`).
const RING_SIZE: usize = 0x40;
/// The default queue.
const DEFAULT_Q: usize = 16;
/// RX ring 16's registers (U-Boot `RDMA_RING_REG_BASE`).
pub const RX_RING: usize = RX_DMA + DESCRIPTORS * DESC_SIZE + DEFAULT_Q * RING_SIZE;
/// TX ring 16's registers (U-Boot `TDMA_RING_REG_BASE`).
pub const TX_RING: usize = TX_DMA + DESCRIPTORS * DESC_SIZE + DEFAULT_Q * RING_SIZE;
/// RX DMA control block after the 17 rings (U-Boot `RDMA_REG_BASE`).
pub const RX_CTRL: usize = RX_DMA + DESCRIPTORS * DESC_SIZE + (DEFAULT_Q + 1) * RING_SIZE;
/// TX DMA control block (U-Boot `TDMA_REG_BASE`).
pub const TX_CTRL: usize = TX_DMA + DESCRIPTORS * DESC_SIZE + (DEFAULT_Q + 1) * RING_SIZE;

/// Ring register offsets (Linux `genet_dma_ring_regs_v4`): TX read pointer,
/// RX write pointer.
pub const RING_TX_READ_RX_WRITE_PTR: usize = 0x00;
/// Its high word.
pub const RING_TX_READ_RX_WRITE_PTR_HI: usize = 0x04;
/// TX consumer index, RX producer index: advanced by the device, read-only.
pub const RING_TX_CONS_RX_PROD_INDEX: usize = 0x08;
/// TX producer index, RX consumer index: advanced by the driver.
pub const RING_TX_PROD_RX_CONS_INDEX: usize = 0x0C;
/// Ring size << 16 | buffer size.
pub const RING_BUF_SIZE: usize = 0x10;
/// First descriptor word of the ring.
pub const RING_START_ADDR: usize = 0x14;
/// Its high word.
pub const RING_START_ADDR_HI: usize = 0x18;
/// Last descriptor word of the ring.
pub const RING_END_ADDR: usize = 0x1C;
/// Its high word.
pub const RING_END_ADDR_HI: usize = 0x20;
/// Descriptors done before an interrupt.
pub const RING_MBUF_DONE_THRESH: usize = 0x24;
/// TX flow period, RX XON/XOFF thresholds.
pub const RING_TX_FLOW_RX_XON_XOFF: usize = 0x28;
/// TX write pointer, RX read pointer.
pub const RING_TX_WRITE_RX_READ_PTR: usize = 0x2C;
/// Its high word.
pub const RING_TX_WRITE_RX_READ_PTR_HI: usize = 0x30;

/// DMA control block registers (U-Boot `DMA_RING_CFG`, `DMA_CTRL`,
/// `DMA_SCB_BURST_SIZE`; Linux `DMA_STATUS`).
pub const DMA_RING_CFG: usize = 0x00;
/// DMA enable (bit 0) and per-ring buffer enables (bit 1 + ring).
pub const DMA_CTRL: usize = 0x04;
/// `DMA_EN`.
pub const DMA_EN: u32 = 1 << 0;
/// Ring 16's buffer enable in `DMA_CTRL` (`DMA_RING_BUF_EN_SHIFT` + 16).
pub const DMA_RING16_BUF_EN: u32 = 1 << 17;
/// DMA status, read-only.
pub const DMA_STATUS: usize = 0x08;
/// SCB burst size.
pub const DMA_SCB_BURST_SIZE: usize = 0x0C;

/// How software may use a register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read and written.
    ReadWrite,
    /// Written only by the device.
    ReadOnly,
}

/// One register the model knows: where, what, how.
#[derive(Clone, Copy, Debug)]
pub struct Register {
    /// Byte offset from the GENET base.
    pub offset: usize,
    /// The sources' name.
    pub name: &'static str,
    /// How software may use it.
    pub access: Access,
}

/// Every register of the map (descriptors aside, see [`descriptor`]).
pub fn registers() -> Vec<Register> {
    use Access::*;
    let mut all = vec![
        reg(SYS_REV_CTRL, "SYS_REV_CTRL", ReadOnly),
        reg(SYS_PORT_CTRL, "SYS_PORT_CTRL", ReadWrite),
        reg(SYS_RBUF_FLUSH_CTRL, "SYS_RBUF_FLUSH_CTRL", ReadWrite),
        reg(SYS_TBUF_FLUSH_CTRL, "SYS_TBUF_FLUSH_CTRL", ReadWrite),
        reg(EXT_PWR_MGMT, "EXT_EXT_PWR_MGMT", ReadWrite),
        reg(EXT_RGMII_OOB_CTRL, "EXT_RGMII_OOB_CTRL", ReadWrite),
        reg(EXT_GPHY_CTRL, "EXT_GPHY_CTRL", ReadWrite),
        reg(RBUF_CTRL, "RBUF_CTRL", ReadWrite),
        reg(RBUF_STATUS, "RBUF_STATUS", ReadOnly),
        reg(RBUF_CHK_CTRL, "RBUF_CHK_CTRL", ReadWrite),
        reg(RBUF_TBUF_SIZE_CTRL, "RBUF_TBUF_SIZE_CTRL", ReadWrite),
        reg(UMAC_HD_BKP_CTRL, "UMAC_HD_BKP_CTRL", ReadWrite),
        reg(UMAC_CMD, "UMAC_CMD", ReadWrite),
        reg(UMAC_MAC0, "UMAC_MAC0", ReadWrite),
        reg(UMAC_MAC1, "UMAC_MAC1", ReadWrite),
        reg(UMAC_MAX_FRAME_LEN, "UMAC_MAX_FRAME_LEN", ReadWrite),
        reg(UMAC_TX_FLUSH, "UMAC_TX_FLUSH", ReadWrite),
        reg(UMAC_MIB_CTRL, "UMAC_MIB_CTRL", ReadWrite),
        reg(MDIO_CMD, "MDIO_CMD", ReadWrite),
    ];
    for (block, name) in [(INTRL2_0, "INTRL2_0"), (INTRL2_1, "INTRL2_1")] {
        for (offset, register, access) in [
            (CPU_STAT, "CPU_STAT", ReadOnly),
            (CPU_SET, "CPU_SET", ReadWrite),
            (CPU_CLEAR, "CPU_CLEAR", ReadWrite),
            (CPU_MASK_STATUS, "CPU_MASK_STATUS", ReadOnly),
            (CPU_MASK_SET, "CPU_MASK_SET", ReadWrite),
            (CPU_MASK_CLEAR, "CPU_MASK_CLEAR", ReadWrite),
        ] {
            all.push(Register {
                offset: block + offset,
                name: leak(format!("{name}.{register}")),
                access,
            });
        }
    }
    for (ring, control, direction) in [(RX_RING, RX_CTRL, "RX"), (TX_RING, TX_CTRL, "TX")] {
        let rx = direction == "RX";
        for (offset, register, access) in [
            (
                RING_TX_READ_RX_WRITE_PTR,
                if rx { "WRITE_PTR" } else { "READ_PTR" },
                ReadWrite,
            ),
            (
                RING_TX_READ_RX_WRITE_PTR_HI,
                if rx { "WRITE_PTR_HI" } else { "READ_PTR_HI" },
                ReadWrite,
            ),
            (
                RING_TX_CONS_RX_PROD_INDEX,
                if rx { "PROD_INDEX" } else { "CONS_INDEX" },
                ReadOnly,
            ),
            (
                RING_TX_PROD_RX_CONS_INDEX,
                if rx { "CONS_INDEX" } else { "PROD_INDEX" },
                ReadWrite,
            ),
            (RING_BUF_SIZE, "RING_BUF_SIZE", ReadWrite),
            (RING_START_ADDR, "START_ADDR", ReadWrite),
            (RING_START_ADDR_HI, "START_ADDR_HI", ReadWrite),
            (RING_END_ADDR, "END_ADDR", ReadWrite),
            (RING_END_ADDR_HI, "END_ADDR_HI", ReadWrite),
            (RING_MBUF_DONE_THRESH, "MBUF_DONE_THRESH", ReadWrite),
            (
                RING_TX_FLOW_RX_XON_XOFF,
                if rx { "XON_XOFF_THRESH" } else { "FLOW_PERIOD" },
                ReadWrite,
            ),
            (
                RING_TX_WRITE_RX_READ_PTR,
                if rx { "READ_PTR" } else { "WRITE_PTR" },
                ReadWrite,
            ),
            (
                RING_TX_WRITE_RX_READ_PTR_HI,
                if rx { "READ_PTR_HI" } else { "WRITE_PTR_HI" },
                ReadWrite,
            ),
        ] {
            all.push(Register {
                offset: ring + offset,
                name: leak(format!("{direction} ring 16 {register}")),
                access,
            });
        }
        for (offset, register, access) in [
            (DMA_RING_CFG, "DMA_RING_CFG", ReadWrite),
            (DMA_CTRL, "DMA_CTRL", ReadWrite),
            (DMA_STATUS, "DMA_STATUS", ReadOnly),
            (DMA_SCB_BURST_SIZE, "DMA_SCB_BURST_SIZE", ReadWrite),
        ] {
            all.push(Register {
                offset: control + offset,
                name: leak(format!("{direction} {register}")),
                access,
            });
        }
    }
    all
}

fn reg(offset: usize, name: &'static str, access: Access) -> Register {
    Register {
        offset,
        name,
        access,
    }
}

/// Register names live as long as the test process.
fn leak(name: String) -> &'static str {
    Box::leak(name.into_boxed_str())
}

/// Which descriptor word `offset` is, if it is one: (RX?, slot, word offset).
pub fn descriptor(offset: usize) -> Option<(bool, usize, usize)> {
    for (base, rx) in [(RX_DMA, true), (TX_DMA, false)] {
        if (base..base + DESCRIPTORS * DESC_SIZE).contains(&offset) {
            let at = offset - base;
            return Some((rx, at / DESC_SIZE, at % DESC_SIZE));
        }
    }
    None
}
