//! A link that changes speed, the RGMII delays, the MAC and PHY resets, pause frames and the controls Linux leaves behind.

use crate::*;

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
