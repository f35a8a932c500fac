//! The layer above Raft and below the API: what any node needs to reach the
//! leader, and what the leader does on its own.
//!
//! - [`route`]: serve a leader-only request here, or the channel to forward
//!   it to the leader on (forwarding itself is the API's: it speaks gRPC).
//! - [`propose`]: the one way a command is written, with the leader's check
//!   first, used by the API and by the leader's [`duties`] alike; `batcher`
//!   puts the commands queued meanwhile into one Raft entry.
//! - [`read`]: linearizable and serializable reads, and the read index.
//! - [`leases`], [`leadership`], [`duties`]: worker leases, confirmed
//!   leadership for their renewals, and the leader's own work every tick.
//!
//! Errors are typed ([`ClusterError`]); the API maps them to statuses.

mod batcher;
pub mod duties;
mod error;
mod features;
pub mod leadership;
pub mod leases;
pub mod load_reports;
mod propose;
mod read;
mod route;

use std::sync::{Arc, Mutex};

use openraft::BasicNode;
use tonic::transport::Channel;

use crate::domain::{Event, Reply};
use crate::raft::removal::Removal;
use crate::raft::{BatonRaft, NodeId, PeerDialer};
use crate::store::StateMachineStore;

pub use error::ClusterError;
pub use features::{MemberFeatures, BATCHED_ENTRIES, FEATURES, LOAD_BALANCING};
pub use route::{Route, FORWARDED_BY};

type Metrics = openraft::RaftMetrics<NodeId, BasicNode>;

/// A committed command's reply.
pub struct Committed {
    pub revision: u64,
    pub reply: Reply,
    pub events: Vec<Event>,
}

/// One node's way to the leader: routing, proposing and reading. Cheap to
/// clone; clones share the channel to the leader.
#[derive(Clone)]
pub struct Leader {
    id: NodeId,
    raft: BatonRaft,
    sm: StateMachineStore,
    /// The channel to the last leader we forwarded to.
    channel: Arc<Mutex<Option<(String, Channel)>>>,
    dialer: PeerDialer,
    /// A removed node serves no client request (see `raft::removal`).
    removal: Arc<Removal>,
    /// Where every command is proposed (see `batcher`).
    batcher: batcher::Batcher,
    /// What the members' log readers understand (see `features`).
    features: MemberFeatures,
}

impl Leader {
    pub fn new(
        id: NodeId,
        raft: BatonRaft,
        sm: StateMachineStore,
        dialer: PeerDialer,
        removal: Arc<Removal>,
    ) -> Self {
        let features = MemberFeatures::new(raft.clone(), dialer.clone(), id);
        Self {
            batcher: batcher::Batcher::start(raft.clone(), features.clone()),
            features,
            id,
            raft,
            sm,
            channel: Arc::new(Mutex::new(None)),
            dialer,
            removal,
        }
    }

    /// Whether every member's log reader understands `feature` (one of
    /// [`FEATURES`]); asks those not known to, in the background.
    pub fn members_have(&self, feature: &str) -> bool {
        self.features.all_have(feature)
    }

    pub fn removal(&self) -> &Removal {
        &self.removal
    }

    /// Refuses, naming the removal, if this node was removed from the cluster.
    pub fn check_not_removed(&self) -> Result<(), ClusterError> {
        match self.removal.get() {
            None => Ok(()),
            Some(index) => Err(ClusterError::Removed(self.removal.message(index))),
        }
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn raft(&self) -> &BatonRaft {
        &self.raft
    }

    pub fn state_machine(&self) -> &StateMachineStore {
        &self.sm
    }

    pub fn dialer(&self) -> &PeerDialer {
        &self.dialer
    }

    pub fn metrics(&self) -> Metrics {
        self.raft.metrics().borrow().clone()
    }

    /// The leader this node knows, with its address.
    pub fn known_leader(metrics: &Metrics) -> Option<(NodeId, String)> {
        let id = metrics.current_leader?;
        let addr = metrics
            .membership_config
            .membership()
            .get_node(&id)?
            .addr
            .clone();
        Some((id, addr))
    }

    /// Whether this node is the leader it knows.
    pub fn is_leader(&self) -> bool {
        self.metrics().current_leader == Some(self.id)
    }
}
