//! The `Admin` service: cluster status and membership, groups, assignment and
//! routing.
//!
//! Calls that change state run on the leader, and so do linearizable reads; any
//! other node forwards them there once (see `leader.rs`). Status is local.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use baton_proto::v1 as pb;
use baton_proto::v1::admin_client::AdminClient;
use baton_proto::v1::admin_server::Admin;
use baton_proto::v1::{
    AddNodeRequest, BarrierRequest, BarrierResponse, ClusterStatusRequest, ClusterStatusResponse,
    Member, MembershipResponse, PromoteNodeRequest, RemoveNodeRequest,
};
use openraft::{BasicNode, ChangeMembers, RaftMetrics, ServerState};
use tonic::{Request, Response, Status};

use super::access::Access;
use super::convert;
use super::leader::{now_ms, Leader};
use super::{domain_error, group_not_found, write_error};
use crate::config::parse_peer_addr;
use crate::domain::command::{
    Compact, CreateGroup, DeleteGroup, Evict, Leave, MovePartitions, SetFrozen, SplitGroup,
    UpdateGroup,
};
use crate::domain::{
    self, quoted, rebalancer, Change, Command, Event, GroupConfig, Locator, Reply,
};
use crate::on_leader;
use crate::raft::NodeId;
use crate::store::{LogStore, StateMachineStore};

/// How long a new node may take to catch up before `AddNode` gives up waiting.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the leader waits for a node it is asked to add to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

pub struct AdminApi {
    access: Arc<Access>,
    addr: String,
    leader: Leader,
    log: LogStore,
    sm: StateMachineStore,
}

type Metrics = RaftMetrics<NodeId, BasicNode>;

impl AdminApi {
    pub fn new(
        access: Arc<Access>,
        leader: Leader,
        addr: String,
        log: LogStore,
        sm: StateMachineStore,
    ) -> Self {
        Self {
            access,
            addr,
            leader,
            log,
            sm,
        }
    }

    fn metrics(&self) -> Metrics {
        self.leader.metrics()
    }

    /// The group as this node (the leader, just after a write) has it.
    fn group_response(
        &self,
        revision: u64,
        name: &str,
    ) -> Result<Response<pb::GroupResponse>, Status> {
        let group = self
            .sm
            .read(|s| s.groups.get(name).map(|g| convert::group(name, g)));
        let group = group.ok_or_else(|| group_not_found(name))?;
        Ok(Response::new(pb::GroupResponse {
            revision,
            group: Some(group),
        }))
    }

    fn status(&self) -> ClusterStatusResponse {
        let metrics = self.metrics();
        let removed_at_index = self.leader.removal().get();
        // A removed node names no leader: clients must not take its view.
        let (leader_id, leader_addr) = Leader::known_leader(&metrics)
            .filter(|_| removed_at_index.is_none())
            .unwrap_or_default();
        let state = match metrics.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        ClusterStatusResponse {
            node_id: self.leader.id(),
            node_addr: self.addr.clone(),
            state: state.to_string(),
            term: metrics.current_term,
            leader_id,
            leader_addr,
            last_log_index: metrics.last_log_index.unwrap_or_default(),
            committed_index: self.log.committed_index(),
            applied_index: metrics.last_applied.map_or(0, |l| l.index),
            snapshot_index: metrics.snapshot.map_or(0, |l| l.index),
            purged_index: metrics.purged.map_or(0, |l| l.index),
            revision: self.sm.revision(),
            members: members(&metrics),
            removed_at_index,
            quorum_acked_ms_ago: metrics.millis_since_quorum_ack,
        }
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
        let remote = AdminClient::new(channel)
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

#[tonic::async_trait]
impl Admin for AdminApi {
    async fn cluster_status(
        &self,
        _request: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        Ok(Response::new(self.status()))
    }

    async fn add_node(
        &self,
        request: Request<AddNodeRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        self.access.admin(&request)?;
        let AddNodeRequest { id, addr, promote } = request.get_ref().clone();
        validate_id(id)?;
        parse_peer_addr(&addr).map_err(Status::invalid_argument)?;
        on_leader!(self.leader, request, AdminClient::add_node, ());
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
        let mut revision = added.log_id.index;
        if promote {
            let promoted = self
                .leader
                .raft()
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await
                .map_err(write_error)?;
            revision = promoted.log_id.index;
        }
        tracing::info!(node = id, %addr, promote, "added node");
        Ok(Response::new(self.membership_response(revision)))
    }

    async fn promote_node(
        &self,
        request: Request<PromoteNodeRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        self.access.admin(&request)?;
        let id = request.get_ref().id;
        validate_id(id)?;
        on_leader!(self.leader, request, AdminClient::promote_node, ());
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
        Ok(Response::new(
            self.membership_response(changed.log_id.index),
        ))
    }

    async fn remove_node(
        &self,
        request: Request<RemoveNodeRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        self.access.admin(&request)?;
        let id = request.get_ref().id;
        validate_id(id)?;
        on_leader!(self.leader, request, AdminClient::remove_node, ());
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
        Ok(Response::new(
            self.membership_response(changed.log_id.index),
        ))
    }

    async fn barrier(
        &self,
        request: Request<BarrierRequest>,
    ) -> Result<Response<BarrierResponse>, Status> {
        on_leader!(self.leader, request, AdminClient::barrier, ());
        let committed = self.leader.propose(Command::Barrier).await?;
        Ok(Response::new(BarrierResponse {
            revision: committed.revision,
            leader_id: self.leader.id(),
        }))
    }

    async fn compact(
        &self,
        request: Request<pb::CompactRequest>,
    ) -> Result<Response<pb::CompactResponse>, Status> {
        self.access.admin(&request)?;
        on_leader!(self.leader, request, AdminClient::compact, ());
        let revision = request.into_inner().revision;
        let committed = self
            .leader
            .propose(Command::Compact(Compact { revision }))
            .await?;
        let compacted = match committed.reply {
            Reply::Compacted { revision } => revision,
            other => {
                return Err(Status::internal(format!(
                    "unexpected reply to a compaction: {other:?}"
                )))
            }
        };
        Ok(Response::new(pb::CompactResponse {
            compacted,
            revision: committed.revision,
        }))
    }

    async fn create_group(
        &self,
        request: Request<pb::CreateGroupRequest>,
    ) -> Result<Response<pb::GroupResponse>, Status> {
        self.access.admin(&request)?;
        on_leader!(self.leader, request, AdminClient::create_group, ());
        let r = request.into_inner();
        let config = convert::config(GroupConfig::default(), r.config.as_ref());
        let committed = self
            .leader
            .propose(Command::CreateGroup(CreateGroup {
                group: r.group.clone(),
                config,
            }))
            .await?;
        self.group_response(committed.revision, &r.group)
    }

    async fn get_group(
        &self,
        request: Request<pb::GetGroupRequest>,
    ) -> Result<Response<pb::GroupResponse>, Status> {
        if !request.get_ref().serializable {
            on_leader!(self.leader, request, AdminClient::get_group, ());
        }
        let r = request.into_inner();
        let (revision, group) = self
            .leader
            .read_group(r.serializable, &r.group, |rev, g| {
                (rev, convert::group(&r.group, g))
            })
            .await?;
        Ok(Response::new(pb::GroupResponse {
            revision,
            group: Some(group),
        }))
    }

    async fn list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        if !request.get_ref().serializable {
            on_leader!(self.leader, request, AdminClient::list_groups, ());
        }
        let serializable = request.get_ref().serializable;
        let (revision, groups) = self
            .leader
            .read(serializable, |s| {
                (
                    s.revision,
                    s.groups
                        .iter()
                        .map(|(name, g)| convert::group(name, g))
                        .collect(),
                )
            })
            .await?;
        Ok(Response::new(pb::ListGroupsResponse { revision, groups }))
    }

    async fn update_group(
        &self,
        request: Request<pb::UpdateGroupRequest>,
    ) -> Result<Response<pb::GroupResponse>, Status> {
        self.access.admin(&request)?;
        on_leader!(self.leader, request, AdminClient::update_group, ());
        let r = request.into_inner();
        require_revision(r.if_revision)?;
        // The compare-and-set on `if_revision` makes reading the current config
        // here safe: if it changes before the update commits, the update fails.
        let current = self
            .sm
            .read(|s| s.groups.get(&r.group).map(|g| g.config.clone()));
        let current = current.ok_or_else(|| group_not_found(&r.group))?;
        let config = convert::config(current, r.config.as_ref());
        let command = Command::UpdateGroup(UpdateGroup {
            group: r.group.clone(),
            config,
            expected_revision: r.if_revision,
        });
        let committed = self.leader.propose(command).await?;
        self.group_response(committed.revision, &r.group)
    }

    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        self.access.admin(&request)?;
        on_leader!(self.leader, request, AdminClient::delete_group, ());
        let r = request.into_inner();
        let command = Command::DeleteGroup(DeleteGroup {
            group: r.group,
            force: r.force,
        });
        let committed = self.leader.propose(command).await?;
        let deleted = committed
            .events
            .iter()
            .any(|e| matches!(e.change, Change::GroupDeleted));
        Ok(Response::new(pb::DeleteGroupResponse {
            revision: committed.revision,
            deleted,
        }))
    }

    async fn split_group(
        &self,
        request: Request<pb::SplitGroupRequest>,
    ) -> Result<Response<pb::GroupResponse>, Status> {
        self.access.admin(&request)?;
        on_leader!(self.leader, request, AdminClient::split_group, ());
        let r = request.into_inner();
        require_revision(r.if_revision)?;
        let command = Command::SplitGroup(SplitGroup {
            group: r.group.clone(),
            expected_revision: r.if_revision,
        });
        let committed = self.leader.propose(command).await?;
        self.group_response(committed.revision, &r.group)
    }

    async fn set_frozen(
        &self,
        request: Request<pb::SetFrozenRequest>,
    ) -> Result<Response<pb::GroupResponse>, Status> {
        self.access.admin(&request)?;
        on_leader!(self.leader, request, AdminClient::set_frozen, ());
        let r = request.into_inner();
        let command = Command::SetFrozen(SetFrozen {
            group: r.group.clone(),
            frozen: r.frozen,
        });
        let committed = self.leader.propose(command).await?;
        self.group_response(committed.revision, &r.group)
    }

    async fn get_assignment(
        &self,
        request: Request<pb::GetAssignmentRequest>,
    ) -> Result<Response<pb::AssignmentResponse>, Status> {
        if !request.get_ref().serializable {
            on_leader!(self.leader, request, AdminClient::get_assignment, ());
        }
        let r = request.into_inner();
        let reply = self
            .leader
            .read_group(r.serializable, &r.group, |rev, g| {
                convert::assignment(&r.group, rev, g)
            })
            .await?;
        Ok(Response::new(reply))
    }

    async fn plan_assignment(
        &self,
        request: Request<pb::GetAssignmentRequest>,
    ) -> Result<Response<pb::PlanResponse>, Status> {
        if !request.get_ref().serializable {
            on_leader!(self.leader, request, AdminClient::plan_assignment, ());
        }
        let r = request.into_inner();
        let now = now_ms();
        let reply = self
            .leader
            .read_group(r.serializable, &r.group, |rev, g| {
                convert::plan(rev, &rebalancer::plan(g, now))
            })
            .await?;
        Ok(Response::new(reply))
    }

    async fn move_partitions(
        &self,
        request: Request<pb::MovePartitionsRequest>,
    ) -> Result<Response<pb::PlanResponse>, Status> {
        self.access.admin(&request)?;
        on_leader!(self.leader, request, AdminClient::move_partitions, ());
        let r = request.into_inner();
        let partitions = convert::ranges_from("partitions", &r.partitions)?;
        let command = Command::Move(MovePartitions {
            group: r.group.clone(),
            partitions,
            to: r.to,
        });
        let committed = self.leader.propose(command).await?;
        let plan = moves_of(&committed.events);
        Ok(Response::new(convert::plan(committed.revision, &plan)))
    }

    async fn route(
        &self,
        request: Request<pb::RouteRequest>,
    ) -> Result<Response<pb::RouteResponse>, Status> {
        if !request.get_ref().serializable {
            on_leader!(self.leader, request, AdminClient::route, ());
        }
        let r = request.into_inner();
        let (locator, key) = match r.locator {
            Some(pb::route_request::Locator::Key(key)) => {
                domain::validate::key(&key).map_err(|e| domain_error(&e))?;
                (Locator::Key, key)
            }
            Some(pb::route_request::Locator::Hash(h)) => (Locator::Hash(h), String::new()),
            Some(pb::route_request::Locator::Partition(p)) => {
                (Locator::Partition(p), String::new())
            }
            None => {
                return Err(Status::invalid_argument(
                    "give a key, a hash key or a partition to route",
                ))
            }
        };
        let reply = self
            .leader
            .read_group(
                r.serializable,
                &r.group,
                |revision, g| -> Result<pb::RouteResponse, Status> {
                    let (partition, _) = g
                        .locate(&r.group, &key, &locator)
                        .map_err(|e| domain_error(&e))?;
                    let slot = g.assignment.slot(partition);
                    Ok(pb::RouteResponse {
                        revision,
                        partition,
                        owner: slot.owner.clone().unwrap_or_default(),
                        token: if slot.owner.is_some() { slot.token } else { 0 },
                        moving: slot.revoking.is_some(),
                        moving_to: slot
                            .revoking
                            .as_ref()
                            .and_then(|m| m.to.clone())
                            .unwrap_or_default(),
                    })
                },
            )
            .await??;
        Ok(Response::new(reply))
    }

    async fn list_workers(
        &self,
        request: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        if !request.get_ref().serializable {
            on_leader!(self.leader, request, AdminClient::list_workers, ());
        }
        let r = request.into_inner();
        let reply = self
            .leader
            .read_group(r.serializable, &r.group, |revision, g| {
                let workers = g
                    .sessions
                    .iter()
                    .map(|(id, session)| pb::WorkerInfo {
                        id: id.clone(),
                        session: session.id,
                        state: convert::session_state(session.state).into(),
                        weight: session.weight,
                        ttl_ms: session.ttl_ms,
                        labels: session.labels.clone().into_iter().collect(),
                        partitions: g.held_by(id).iter().map(domain::PartitionRange::len).sum(),
                    })
                    .collect();
                pb::ListWorkersResponse { revision, workers }
            })
            .await?;
        Ok(Response::new(reply))
    }

    async fn drain_worker(
        &self,
        request: Request<pb::WorkerRef>,
    ) -> Result<Response<pb::WorkerActionResponse>, Status> {
        self.access.admin(&request)?;
        on_leader!(self.leader, request, AdminClient::drain_worker, ());
        let r = request.into_inner();
        // An operator drains whichever session the worker has now.
        let command = Command::Leave(Leave {
            group: r.group,
            worker: r.worker.clone(),
            session: None,
            drain: true,
        });
        let committed = self.leader.propose(command).await?;
        let outcome = if committed
            .events
            .iter()
            .any(|e| matches!(e.change, Change::WorkerLeft { .. }))
        {
            format!("worker {} held nothing and has left", quoted(&r.worker))
        } else {
            format!(
                "worker {} is draining: its partitions are handed off, then its session closes",
                quoted(&r.worker)
            )
        };
        Ok(Response::new(pb::WorkerActionResponse {
            revision: committed.revision,
            outcome,
        }))
    }

    async fn evict_worker(
        &self,
        request: Request<pb::WorkerRef>,
    ) -> Result<Response<pb::WorkerActionResponse>, Status> {
        self.access.admin(&request)?;
        on_leader!(self.leader, request, AdminClient::evict_worker, ());
        let r = request.into_inner();
        domain::validate::worker_id(&r.worker).map_err(|e| domain_error(&e))?;
        let ttl_ms = self
            .leader
            .read_group(true, &r.group, |_, g| {
                g.sessions.get(&r.worker).map(|session| session.ttl_ms)
            })
            .await?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "worker {} has no session in group {}",
                    quoted(&r.worker),
                    quoted(&r.group)
                ))
            })?;
        // Committed, so a new leader goes on refusing to renew the lease.
        let committed = self
            .leader
            .propose(Command::Evict(Evict {
                group: r.group.clone(),
                worker: r.worker.clone(),
            }))
            .await?;
        // From here every renewal reads the eviction from the applied state
        // (`api/worker.rs`), on this leader and any later one.
        tracing::info!(group = %r.group, worker = %r.worker, "worker evicted");
        let outcome = format!(
            "worker {} is evicting: the leader no longer renews its lease (a committed fact, kept across leader changes), so its session ends and its partitions move within {ttl_ms} ms",
            quoted(&r.worker)
        );
        let revision = committed.revision;
        Ok(Response::new(pb::WorkerActionResponse {
            revision,
            outcome,
        }))
    }

    type BackupStream = BackupStream;

    async fn backup(
        &self,
        request: Request<pb::BackupRequest>,
    ) -> Result<Response<BackupStream>, Status> {
        self.access.admin(&request)?;
        // Everything committed before the call is in the backup.
        self.leader.linearizable_point().await?;
        let sm = self.sm.clone();
        let backup = tokio::task::spawn_blocking(move || sm.export_backup())
            .await
            .map_err(|e| Status::internal(format!("the backup export failed: {e}")))?
            .map_err(|e| Status::internal(format!("cannot read the state to back up: {e}")))?;
        let total_bytes = backup.bytes.len() as u64;
        tracing::info!(revision = backup.revision, total_bytes, "backup exported");
        let chunks: Vec<Result<pb::BackupChunk, Status>> = backup
            .bytes
            .chunks(BACKUP_CHUNK_BYTES)
            .map(|data| {
                Ok(pb::BackupChunk {
                    revision: backup.revision,
                    total_bytes,
                    data: data.to_vec(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
}

type BackupStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::BackupChunk, Status>> + Send>>;

/// Backup chunks stay well under the 4 MiB default gRPC message limit.
const BACKUP_CHUNK_BYTES: usize = 1024 * 1024;

fn require_revision(revision: u64) -> Result<(), Status> {
    if revision == 0 {
        return Err(Status::invalid_argument(
            "if_revision is required: read the group's config_revision (`batonctl group get GROUP`) and pass it",
        ));
    }
    Ok(())
}

/// The moves a committed `Move` carried out.
fn moves_of(events: &[Event]) -> rebalancer::Plan {
    rebalancer::Plan::carried_out(events)
}
