//! Bring-up order, the MAC reset trap, typed errors, MDIO, and the link speed and duplex.

use crate::*;

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
