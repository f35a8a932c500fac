//! Raft gauges for `/metrics`, set from openraft's metrics at every scrape
//! (openraft keeps the numbers; these only show them).

use openraft::RaftMetrics as OpenraftMetrics;
use prometheus::{IntGauge, Registry};

use super::NodeId;

#[derive(Clone)]
pub struct RaftMetrics {
    term: IntGauge,
    leader_id: IntGauge,
    is_leader: IntGauge,
    last_log_index: IntGauge,
    committed_index: IntGauge,
    applied_index: IntGauge,
    snapshot_index: IntGauge,
    voters: IntGauge,
    learners: IntGauge,
}

fn as_gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl RaftMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        Ok(Self {
            term: IntGauge::new("baton_raft_term", "Current Raft term.")?,
            leader_id: IntGauge::new(
                "baton_raft_leader_id",
                "Id of the leader this node follows; 0 when none is known.",
            )?,
            is_leader: IntGauge::new("baton_raft_is_leader", "1 if this node is the leader.")?,
            last_log_index: IntGauge::new(
                "baton_raft_last_log_index",
                "Index of the last entry in this node's log.",
            )?,
            committed_index: IntGauge::new(
                "baton_raft_committed_index",
                "Highest log index known to be committed.",
            )?,
            applied_index: IntGauge::new(
                "baton_raft_applied_index",
                "Highest log index applied to the state machine.",
            )?,
            snapshot_index: IntGauge::new(
                "baton_raft_snapshot_index",
                "Last log index covered by this node's snapshot.",
            )?,
            voters: IntGauge::new("baton_raft_voters", "Voters in the cluster membership.")?,
            learners: IntGauge::new("baton_raft_learners", "Learners in the cluster membership.")?,
        })
    }

    /// Adds these gauges to `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        for g in [
            &self.term,
            &self.leader_id,
            &self.is_leader,
            &self.last_log_index,
            &self.committed_index,
            &self.applied_index,
            &self.snapshot_index,
            &self.voters,
            &self.learners,
        ] {
            registry.register(Box::new(g.clone()))?;
        }
        Ok(())
    }

    /// Sets the gauges from openraft's metrics and the commit index the log
    /// store last saved.
    pub fn observe(&self, m: &OpenraftMetrics<NodeId, openraft::BasicNode>, committed: u64) {
        self.term.set(as_gauge(m.current_term));
        self.leader_id.set(as_gauge(m.current_leader.unwrap_or(0)));
        self.is_leader
            .set(i64::from(m.current_leader == Some(m.id)));
        self.last_log_index
            .set(as_gauge(m.last_log_index.unwrap_or(0)));
        self.committed_index.set(as_gauge(committed));
        self.applied_index
            .set(as_gauge(m.last_applied.map_or(0, |l| l.index)));
        self.snapshot_index
            .set(as_gauge(m.snapshot.map_or(0, |l| l.index)));
        let membership = m.membership_config.membership();
        self.voters
            .set(as_gauge(membership.voter_ids().count() as u64));
        self.learners
            .set(as_gauge(membership.learner_ids().count() as u64));
    }
}
