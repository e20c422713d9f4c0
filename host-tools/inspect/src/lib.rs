//! The inspector's reusable part: live nodes' tasks as `inspect --node`
//! shows them ([`node`]); the connection is `tern-client`'s.

pub mod node;
