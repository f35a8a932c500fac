//! `baton-node`: one node of a baton cluster.
//!
//! Modules by responsibility: [`raft`] (openraft types, tuning, network),
//! [`store`] (sled log, state machine, snapshots), [`domain`] (the pure
//! replicated state), [`cluster`] (reaching the leader, proposing, reads,
//! and what the leader does on its own), [`api`] (tonic services),
//! [`security`] (who may call what), [`http`] (health and metrics),
//! [`config`] (flags, env, TOML) and [`node`] (assembling and running a node).

pub mod api;
pub mod cluster;
pub mod config;
pub mod domain;
pub mod http;
pub mod node;
pub mod raft;
pub mod security;
pub mod store;
pub mod watch;

pub use config::{Args, Bootstrap, NodeConfig};
pub use node::Node;
