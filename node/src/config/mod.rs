//! Node configuration: command-line flags, `BATON_*` environment variables and
//! an optional TOML file, resolved into a [`NodeConfig`].
//!
//! Precedence: flag > environment variable > config file > built-in default.
//!
//! Files: `args` declares the flags ([`Args`]); `resolve` merges them with
//! the file and the defaults and checks them; this file holds what they
//! resolve into.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

mod args;
mod resolve;
#[cfg(test)]
mod tests;

pub use args::Args;
pub use resolve::parse_initial_members;

// The TLS and token settings are the security layer's; they are named here
// too because they are part of a node's configuration.
use crate::raft::{NodeId, RaftTuning};
use crate::security::PeerAddr;
pub use crate::security::{Security, TlsConfig};

/// Default gRPC address of a node.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7400";
/// Default HTTP address (health and metrics).
pub const DEFAULT_HTTP: &str = "127.0.0.1:7480";
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "baton-data";

/// How long the event history is kept for watches to resume from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryRetention {
    pub revisions: u64,
    pub age: std::time::Duration,
}

impl Default for HistoryRetention {
    fn default() -> Self {
        Self {
            revisions: 100_000,
            age: std::time::Duration::from_secs(3600),
        }
    }
}

/// How a node becomes part of a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bootstrap {
    /// A cluster of this one node (the embedded default).
    SingleNode,
    /// Static membership; the lowest id initializes the cluster.
    InitialMembers(BTreeMap<NodeId, String>),
    /// Ask a running cluster, through any of these nodes, to add this node.
    Join(Vec<String>),
}

/// A node's resolved configuration.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: NodeId,
    pub listen: SocketAddr,
    /// `None`: advertise the address the listener is bound to.
    pub advertise: Option<String>,
    pub data_dir: PathBuf,
    /// `None`: no HTTP server.
    pub http: Option<SocketAddr>,
    pub bootstrap: Bootstrap,
    pub tuning: RaftTuning,
    pub history: HistoryRetention,
    /// Revisions each watcher may have queued on this node.
    pub watch_buffer: usize,
    /// A backup file to seed an empty data dir from.
    pub restore_from: Option<PathBuf>,
    /// Revisions a restore jumps past the backup's (`--restore-revision-bump`).
    pub restore_revision_bump: u64,
    pub security: Security,
}

/// The margin a restore adds to the backup's revision by default: 11 days
/// of writes at 1 per second, about 3 hours at 100 per second.
pub const DEFAULT_RESTORE_REVISION_BUMP: u64 = 1_000_000;
/// The largest margin accepted: keeps revisions far from `u64::MAX` and
/// within what JSON numbers and signed 64-bit clients carry exactly.
pub const MAX_RESTORE_REVISION_BUMP: u64 = 1_000_000_000_000_000;

impl NodeConfig {
    /// A single-node configuration on an OS-chosen port, for tests and tools.
    pub fn ephemeral(id: NodeId, data_dir: PathBuf) -> Self {
        Self {
            id,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            data_dir,
            http: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            bootstrap: Bootstrap::SingleNode,
            tuning: RaftTuning::default(),
            history: HistoryRetention::default(),
            watch_buffer: crate::watch::DEFAULT_SUBSCRIBER_BUFFER,
            restore_from: None,
            restore_revision_bump: DEFAULT_RESTORE_REVISION_BUMP,
            security: Security::default(),
        }
    }
}

/// Checks that `addr` is `HOST:PORT` as other nodes dial it (see
/// [`PeerAddr`]); the reason, if not, is for the operator.
pub fn parse_peer_addr(addr: &str) -> Result<(), String> {
    PeerAddr::parse(addr).map(drop).map_err(|e| e.to_string())
}
