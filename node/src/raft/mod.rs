//! openraft glue: the type configuration, the Raft tuning, and the network.

pub mod metrics;
pub mod network;
pub mod pre_vote;
pub mod removal;
pub mod snapshots;
pub use crate::security::PeerDialer;

use std::sync::Arc;

use openraft::SnapshotPolicy;

// The type configuration is declared in the store, which implements
// openraft's storage over it and sits below this module.
pub use crate::store::types::{
    BatonRaft, Entry, LogId, NodeId, Snapshot, SnapshotMeta, StorageError, StoredMembership,
    TypeConfig,
};

/// Snapshot chunks stay well under the 4 MiB default gRPC message limit.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 1024 * 1024;

/// Raft timing and log-compaction settings of one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftTuning {
    pub heartbeat_ms: u64,
    /// Election timeout: a random time in `[election_timeout_ms, 2 ×
    /// election_timeout_ms)`. openraft 0.9 first waits out the old leader's
    /// lease (`2 × election_timeout_ms`), so a crashed leader is replaced after
    /// about 3–4 × `election_timeout_ms`.
    pub election_timeout_ms: u64,
    /// Build a snapshot (and purge the log behind it) every this many
    /// entries, and every this many revisions (`snapshots`: an entry may
    /// carry a batch of commands). A snapshot copies the whole state, so taking one too often
    /// makes a large state cost O(state) per few writes: 100,000 as etcd's
    /// `--snapshot-count` (10,000 cut the load rate of 1 M tombstones in half).
    pub snapshot_every: u64,
    /// Entries kept in the log behind the snapshot, so that slightly lagging
    /// followers catch up from the log instead of a snapshot.
    pub keep_behind_snapshot: u64,
}

impl Default for RaftTuning {
    fn default() -> Self {
        // A 100 ms heartbeat as etcd; with openraft's lease wait (see above) a
        // 250 ms election timeout replaces a crashed leader in about 0.75–1 s,
        // which every crash failover and handoff waits on.
        Self {
            heartbeat_ms: 100,
            election_timeout_ms: 250,
            snapshot_every: 100_000,
            keep_behind_snapshot: 1_000,
        }
    }
}

impl RaftTuning {
    pub fn to_config(&self) -> Result<Arc<openraft::Config>, openraft::ConfigError> {
        let config = openraft::Config {
            cluster_name: "baton".to_string(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_ms,
            election_timeout_max: self.election_timeout_ms * 2,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.keep_behind_snapshot,
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
            // Elections are started by `pre_vote::run` instead, and only
            // when a majority has lost the leader too.
            enable_elect: false,
            ..Default::default()
        };
        Ok(Arc::new(config.validate()?))
    }
}
