//! The parts of the sync-lab bench other tools share: bandwidth traces in the
//! `<seconds> <Mbit/s>` format (`tern demo --sync` shapes a link after one).

pub mod trace;
