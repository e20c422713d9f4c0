//! `tern-lab`: everything a host program needs to run Tern nodes in QEMU and
//! put them on a network, shared by `tern demo`, the controller, the system
//! tests and the benchmarks.
//!
//! - [`node`]: one QEMU machine booting a Tern kernel exactly as `flash`
//!   would, its serial console read with timeouts;
//! - [`netlab`]: a private network namespace with a bridge and taps, Linux
//!   hosts on it, links cut and shaped with `tc`;
//! - [`cluster`]: several nodes on one lab, addressed, keyed and reached
//!   through their control service (`tern-client`); on a LAN-like lab
//!   ([`lan`]: DHCP by dnsmasq, SNTP) they are keyed at flash time and found
//!   by their beacons;
//! - [`trace`] and [`shaping`]: real bandwidth traces and a link whose rate
//!   follows one.

pub mod cluster;
pub mod lan;
pub mod netlab;
pub mod node;
pub mod shaping;
pub mod trace;
