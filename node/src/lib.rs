//! `baton-node`: one node of a baton cluster.
//!
//! Modules in layers, lowest first; a module imports only from its own layer
//! or the ones below (the `layering` test holds every file to it):
//!
//! - [`domain`]: the pure replicated state (groups, sessions, assignment,
//!   tombstones) and the commands and events that change it.
//! - [`clock`] (wall time) and [`security`] (TLS material, peer addresses,
//!   the peer dialer).
//! - [`watch::hub`]: where applied events are published.
//! - [`store`]: sled storage (the on-disk [`store::schema`], the Raft log,
//!   the state machine, snapshots, backups) and the openraft type
//!   configuration it is written against.
//! - [`raft`] (openraft tuning, transport, pre-vote, removal) and [`watch`]
//!   (feeds of one group's events over the store's history and the hub).
//! - [`config`]: flags, environment and TOML resolved into a [`NodeConfig`].
//! - [`cluster`]: reaching the leader, the one propose path, linearizable
//!   reads, and what the leader does on its own (leases, leadership, duties).
//! - [`api`] (tonic services) and [`http`] (health and metrics).
//! - [`node`]: assembling and running a node.

pub mod api;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod domain;
pub mod http;
#[cfg(test)]
mod layering;
pub mod node;
pub mod raft;
pub mod security;
pub mod store;
pub mod watch;

pub use config::{Args, Bootstrap, NodeConfig};
pub use node::Node;
