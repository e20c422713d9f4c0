//! The offloading controller: takes tasks from users and spreads them over
//! the nodes of a Tern cluster so that they finish soonest (the thesis's
//! chapter 5, rebuilt; `docs/controller.md`).
//!
//! - the domain ([`model`]), the program [`catalogue`] and the measured
//!   [`timings`];
//! - the scheduling core ([`sched`]), sans-IO, with its [`policy`]s and
//!   the execution history they learn from ([`estimate`]);
//! - the discrete-event simulator ([`sim`]) that runs the same core, and
//!   the Table 5-3 reproduction on it ([`bench`]);
//! - the service: the SQLite [`store`], the node layer ([`driver`]), the
//!   [`engine`] that carries the core's decisions out, the HTTP [`api`]
//!   with the web [`ui`] built from [`views`], the API's [`client`], and
//!   the command-line verbs ([`cli`]).

pub mod api;
pub mod bench;
pub mod catalogue;
pub mod cli;
pub mod client;
pub mod driver;
pub mod engine;
pub mod estimate;
pub mod model;
pub mod policy;
pub mod sched;
pub mod sim;
pub mod store;
pub mod timings;
pub mod ui;
pub mod views;
