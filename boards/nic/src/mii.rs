//! IEEE 802.3 clause-22 PHY registers and bits every copper PHY has.

/// Basic mode control.
pub const BMCR: u8 = 0;
/// Basic mode status.
pub const BMSR: u8 = 1;
/// PHY identifier, high half.
pub const PHYSID1: u8 = 2;
/// PHY identifier, low half.
pub const PHYSID2: u8 = 3;
/// BMCR: reset (self-clearing).
pub const BMCR_RESET: u16 = 1 << 15;
/// BMCR: autonegotiation enable.
pub const BMCR_ANENABLE: u16 = 1 << 12;
/// BMCR: restart autonegotiation (self-clearing).
pub const BMCR_ANRESTART: u16 = 1 << 9;
/// BMSR: link up (latches low).
pub const BMSR_LSTATUS: u16 = 1 << 2;
/// BMSR: autonegotiation complete.
pub const BMSR_ANEGCOMPLETE: u16 = 1 << 5;
