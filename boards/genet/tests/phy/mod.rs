//! The BCM54213PE PHY of the model (`model.rs`): its registers, the shadow
//! registers of the RGMII delays, reset and link, and its link partner.

// The BCM54xx shadow registers of the RGMII delays (Linux `brcmphy.h`).
/// AUX_CTL; bits 2:0 select a shadow, 7 the misc control.
pub(crate) const PHY_AUX_CTL: u8 = 0x18;
/// Misc control: the RX skew (RXC delayed against RXD).
pub(crate) const MISC_RGMII_SKEW_EN: u16 = 0x0100;
/// Misc control: write enable.
pub(crate) const MISC_WREN: u16 = 0x8000;
/// The 0x1C shadow window; bits 14:10 select, bit 15 writes, bits 9:0 data.
pub(crate) const PHY_SHD: u8 = 0x1C;
/// Shadow 0x1C/3, clock control: GTXCLK delayed against TXD.
pub(crate) const CLK_CTL_GTXCLK_EN: u16 = 0x0200;
/// Our advertisement's and the partner's symmetric pause bit (802.3 `ADVERTISE_PAUSE_CAP`).
pub(crate) const PAUSE_CAP: u16 = 0x0400;

/// The BCM54213PE at MDIO address 1, and its link partner.
pub(crate) struct Phy {
    pub(crate) id: u32,
    pub(crate) regs: [u16; 32],
    pub(crate) reset_reads_left: u32,
    pub(crate) reset_stuck: bool,
    pub(crate) autoneg_started: bool,
    pub(crate) link_up: bool,
    pub(crate) partner_lpa: u16,
    pub(crate) partner_stat1000: u16,
    /// AUX_CTL misc shadow and the 0x1C clock-control shadow; their power-up
    /// values are the opposite of "rgmii-rxid", so only a driver that programs
    /// them gets it.
    pub(crate) misc: u16,
    pub(crate) clk_ctl: u16,
    pub(crate) misc_selected: bool,
    pub(crate) shadow_selected: u16,
    /// A reset was issued and the PHY has since reported it done.
    pub(crate) reset_done: bool,
    pub(crate) reset_issued: bool,
    /// The last BMSR read reported the link up.
    pub(crate) link_reported: bool,
}

/// Power-up misc and clock-control shadows: RX skew off, GTXCLK delay on.
pub(crate) const PHY_POWER_UP_MISC: u16 = 0x0010;
pub(crate) const PHY_POWER_UP_CLK_CTL: u16 = CLK_CTL_GTXCLK_EN;

impl Phy {
    pub(crate) fn new() -> Self {
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
    pub(crate) fn rx_delay(&self) -> bool {
        self.misc & MISC_RGMII_SKEW_EN != 0
    }

    /// Whether the PHY delays GTXCLK.
    pub(crate) fn tx_delay(&self) -> bool {
        self.clk_ctl & CLK_CTL_GTXCLK_EN != 0
    }

    pub(crate) fn read(&mut self, reg: u8) -> u16 {
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

    pub(crate) fn write(&mut self, reg: u8, value: u16) {
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
