//! Cluster status and membership: adding, promoting and removing nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use baton_proto::v1::admin_client::AdminClient;
use baton_proto::v1::raft_client::RaftClient;
use baton_proto::v1::{
    AddNodeRequest, ClusterStatusRequest, ClusterStatusResponse, FeaturesRequest, Member,
    MembershipResponse, PromoteNodeRequest, RaftRole, RemoveNodeRequest,
};
use openraft::raft::ClientWriteResponse;
use openraft::{BasicNode, ChangeMembers, RaftMetrics, ServerState};
use tonic::Status;

use crate::api::write_error;
use crate::cluster::{Leader, FEATURES};
use crate::config::parse_peer_addr;
use crate::domain::quoted;
use crate::raft::{NodeId, TypeConfig};
use crate::store::LogStore;

/// How long a new node may take to catch up before `AddNode` gives up waiting.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the leader waits for a node it is asked to add to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

type Metrics = RaftMetrics<NodeId, BasicNode>;

pub struct Membership {
    pub(super) leader: Leader,
    pub(super) addr: String,
    pub(super) log: LogStore,
}

impl Membership {
    fn metrics(&self) -> Metrics {
        self.leader.metrics()
    }

    pub fn status(&self) -> ClusterStatusResponse {
        let metrics = self.metrics();
        let removed_at_index = self.leader.removal().get();
        // A removed node names no leader: clients must not take its view.
        let (leader_id, leader_addr) = Leader::known_leader(&metrics)
            .filter(|_| removed_at_index.is_none())
            .unwrap_or_default();
        let state = match metrics.state {
            ServerState::Leader => RaftRole::Leader,
            ServerState::Follower => RaftRole::Follower,
            ServerState::Candidate => RaftRole::Candidate,
            ServerState::Learner => RaftRole::Learner,
            ServerState::Shutdown => RaftRole::Shutdown,
        };
        ClusterStatusResponse {
            node_id: self.leader.id(),
            node_addr: self.addr.clone(),
            state: state.into(),
            term: metrics.current_term,
            leader_id,
            leader_addr,
            last_log_index: metrics.last_log_index.unwrap_or_default(),
            committed_index: self.log.committed_index(),
            applied_index: metrics.last_applied.map_or(0, |l| l.index),
            snapshot_index: metrics.snapshot.map_or(0, |l| l.index),
            purged_index: metrics.purged.map_or(0, |l| l.index),
            revision: self.leader.state_machine().revision(),
            members: members(&metrics),
            removed_at_index,
            quorum_acked_ms_ago: metrics.millis_since_quorum_ack,
        }
    }

    pub async fn add_node(&self, r: AddNodeRequest) -> Result<MembershipResponse, Status> {
        let AddNodeRequest { id, addr, promote } = r;
        validate_id(id)?;
        parse_peer_addr(&addr).map_err(Status::invalid_argument)?;
        let current = members(&self.metrics());
        if let Some(m) = current.iter().find(|m| m.id == id) {
            return Err(Status::already_exists(format!(
                "node {id} is already a {} of this cluster at {}; to replace it, remove it first (`batonctl cluster remove-node {id}`) or pick another id",
                if m.voter { "voter" } else { "learner" },
                m.addr
            )));
        }
        if let Some(m) = current.iter().find(|m| m.addr == addr) {
            return Err(Status::already_exists(format!(
                "address {addr} already belongs to node {}; each node needs its own address",
                m.id
            )));
        }
        self.probe_new_node(id, &addr).await?;

        let added = tokio::time::timeout(
            CATCH_UP_TIMEOUT,
            self.leader.raft().add_learner(id, BasicNode::new(addr.clone()), true),
        )
        .await
        .map_err(|_| {
            Status::deadline_exceeded(format!(
                "node {id} was added as a learner but has not caught up within {}s; it keeps catching up: check it with `batonctl cluster status`, then `batonctl cluster promote {id}`",
                CATCH_UP_TIMEOUT.as_secs()
            ))
        })?
        .map_err(write_error)?;
        let mut revision = self.revision_of(&added);
        if promote {
            let promoted = self
                .leader
                .raft()
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await
                .map_err(write_error)?;
            revision = self.revision_of(&promoted);
        }
        tracing::info!(node = id, %addr, promote, "added node");
        Ok(self.membership_response(revision))
    }

    pub async fn promote_node(&self, r: PromoteNodeRequest) -> Result<MembershipResponse, Status> {
        let id = r.id;
        validate_id(id)?;
        match members(&self.metrics()).iter().find(|m| m.id == id) {
            None => {
                return Err(Status::not_found(format!(
                    "node {id} is not a member of this cluster; add it first with `batonctl cluster add-node {id} HOST:PORT`"
                )))
            }
            Some(m) if m.voter => {
                return Err(Status::failed_precondition(format!("node {id} is already a voter")))
            }
            Some(_) => {}
        }
        let changed = self
            .leader
            .raft()
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(write_error)?;
        tracing::info!(node = id, "promoted node to voter");
        Ok(self.membership_response(self.revision_of(&changed)))
    }

    pub async fn remove_node(&self, r: RemoveNodeRequest) -> Result<MembershipResponse, Status> {
        let id = r.id;
        validate_id(id)?;
        let current = members(&self.metrics());
        let Some(member) = current.iter().find(|m| m.id == id) else {
            let known: Vec<u64> = current.iter().map(|m| m.id).collect();
            return Err(Status::not_found(format!(
                "node {id} is not a member of this cluster (members: {known:?})"
            )));
        };
        let change = if member.voter {
            let voters = current.iter().filter(|m| m.voter).count();
            if voters == 1 {
                return Err(Status::failed_precondition(format!(
                    "node {id} is the last voter; a cluster cannot remove its last voter (add and promote another node first)"
                )));
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        // retain=false: a removed voter does not linger as a learner.
        let changed = self
            .leader
            .raft()
            .change_membership(change, false)
            .await
            .map_err(write_error)?;
        tracing::info!(node = id, "removed node");
        Ok(self.membership_response(self.revision_of(&changed)))
    }

    /// Checks that `addr` is a running baton node with id `id` that belongs to
    /// no cluster yet, so that a typo or a wrong port changes nothing.
    async fn probe_new_node(&self, id: NodeId, addr: &str) -> Result<(), Status> {
        let unreachable = |e: String| {
            Status::failed_precondition(format!(
                "cannot reach node {id} at {addr} ({e}); start it first, e.g. `baton-node --id {id} --listen {addr} --join {}`, and check that the leader can reach that address",
                self.addr
            ))
        };
        let endpoint = self
            .leader
            .dialer()
            .endpoint(addr)
            .map_err(|e| {
                Status::invalid_argument(format!("address {} is not usable: {e}", quoted(addr)))
            })?
            .connect_timeout(PROBE_TIMEOUT)
            .timeout(PROBE_TIMEOUT);
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let remote = AdminClient::new(channel.clone())
            .cluster_status(ClusterStatusRequest {})
            .await
            .map_err(|s| unreachable(s.message().to_string()))?
            .into_inner();
        if remote.node_id != id {
            return Err(Status::failed_precondition(format!(
                "{addr} answers as node {}, not node {id}; check the id and the address",
                remote.node_id
            )));
        }
        // This cluster's log may hold entries that carry a batch of commands
        // (`cluster::batcher`), which an older node cannot read: it would stop
        // at the first, or, catching up by snapshot, count revisions (and
        // fencing tokens) from the log index, below everyone else's.
        let mut request = tonic::Request::new(FeaturesRequest {});
        self.leader.dialer().authorize(&mut request);
        let missing: Vec<&str> = match RaftClient::new(channel).features(request).await {
            Ok(answer) => {
                let theirs = &answer.get_ref().features;
                FEATURES
                    .iter()
                    .copied()
                    .filter(|f| !theirs.iter().any(|t| t == f))
                    .collect()
            }
            Err(s) if s.code() == tonic::Code::Unimplemented => FEATURES.to_vec(),
            Err(s) => return Err(unreachable(s.message().to_string())),
        };
        if !missing.is_empty() {
            return Err(Status::failed_precondition(format!(
                "node {id} at {addr} runs an older baton-node that cannot read this cluster's log (it lacks {}); run the same version as the other members on it, then add it again",
                missing.join(", ")
            )));
        }
        // A fresh node (started with --join) has no membership yet. One with a
        // membership may rejoin only if it was part of this cluster before;
        // a node that formed its own cluster would bring a conflicting log.
        let ours: BTreeSet<NodeId> = members(&self.metrics()).iter().map(|m| m.id).collect();
        let shares_history = remote
            .members
            .iter()
            .any(|m| m.id != id && ours.contains(&m.id));
        if !remote.members.is_empty() && !shares_history {
            let theirs: Vec<u64> = remote.members.iter().map(|m| m.id).collect();
            return Err(Status::failed_precondition(format!(
                "node {id} at {addr} already belongs to another cluster (members {theirs:?}); restart it with an empty --data-dir and `--join {}`",
                self.addr
            )));
        }
        Ok(())
    }

    /// The revision a membership change was applied at (its entry takes
    /// one, like any entry without a command).
    fn revision_of(&self, changed: &ClientWriteResponse<TypeConfig>) -> u64 {
        changed.data.last().map_or_else(
            || self.leader.state_machine().revision(),
            |result| result.revision,
        )
    }

    fn membership_response(&self, revision: u64) -> MembershipResponse {
        MembershipResponse {
            revision,
            members: members(&self.metrics()),
        }
    }
}

fn members(metrics: &Metrics) -> Vec<Member> {
    let membership = metrics.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    // `None` for a member the leader has not heard from since it took office.
    let matched: BTreeMap<NodeId, Option<u64>> = metrics
        .replication
        .as_ref()
        .map(|r| {
            r.iter()
                .map(|(id, log)| (*id, log.map(|l| l.index)))
                .collect()
        })
        .unwrap_or_default();
    membership
        .nodes()
        .map(|(id, node)| Member {
            id: *id,
            addr: node.addr.clone(),
            voter: voters.contains(id),
            matched_index: matched.get(id).copied().flatten(),
        })
        .collect()
}

fn validate_id(id: NodeId) -> Result<(), Status> {
    if id == 0 {
        return Err(Status::invalid_argument(
            "node id must be a positive integer (1, 2, …); 0 is reserved",
        ));
    }
    Ok(())
}
