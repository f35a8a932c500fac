//! `baton-node`: one node of a baton cluster.
//!
//! Modules by responsibility: [`raft`] (openraft types, tuning, network),
//! [`store`] (sled log, state machine, snapshots), [`domain`] (the pure
//! replicated state), [`api`] (tonic services), [`http`] (health and metrics),
//! [`config`] (flags, env, TOML), [`leases`] and [`duties`] (what the leader
//! does on its own) and [`node`] (assembling and running a node).

pub mod api;
pub mod clock;
pub mod config;
pub mod domain;
pub mod duties;
pub mod http;
pub mod leadership;
pub mod leases;
pub mod node;
pub mod raft;
pub mod security;
pub mod store;
pub mod watch;

pub use config::{Args, Bootstrap, NodeConfig};
pub use node::Node;
