//! How hubhost reaches Redis, one server or a cluster: the shared command connection
//! ([`Commands`]) and the names of keys and channels ([`Keyspace`]).
//!
//! On a cluster every name of a hub starts with one hash tag, `{prefix:hub}`, so a hub's
//! channels, state and presence live in one slot: the scripts that touch several of its keys run
//! on one shard, and every server receives a hub's messages in one order, as on one Redis (the
//! move of a connection between servers relies on that order). Hubs spread over the shards.

mod commands;
mod keyspace;

pub use commands::Commands;
pub use keyspace::{Keyspace, hash_tag};
