//! The `Admin` service: cluster status and membership, groups, assignment and
//! routing. One gRPC service; its methods are served by one family each:
//! [`membership`], [`groups`], [`assignment`] and [`state`] (barrier,
//! compaction, backup).
//!
//! Who may call each method, and where it runs, is in `api::policy`: the
//! gate has checked the admin token and forwarded calls that change state,
//! and linearizable reads, to the leader before a handler here runs.

mod assignment;
mod groups;
mod membership;
mod state;

use std::sync::Arc;

use baton_proto::v1 as pb;
use baton_proto::v1::admin_server::Admin;
use tonic::{Request, Response, Status};

use crate::cluster::leases::Leases;
use crate::cluster::Leader;
use crate::store::LogStore;

use assignment::Assignment;
use groups::Groups;
use membership::Membership;
use state::{BackupStream, WholeState};

pub struct AdminApi {
    membership: Membership,
    groups: Groups,
    assignment: Assignment,
    state: WholeState,
}

impl AdminApi {
    pub fn new(leader: Leader, leases: Arc<Leases>, addr: String, log: LogStore) -> Self {
        Self {
            membership: Membership {
                leader: leader.clone(),
                addr,
                log,
            },
            groups: Groups {
                leader: leader.clone(),
            },
            assignment: Assignment {
                leader: leader.clone(),
                leases,
            },
            state: WholeState { leader },
        }
    }
}

type Answer<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl Admin for AdminApi {
    async fn cluster_status(
        &self,
        _: Request<pb::ClusterStatusRequest>,
    ) -> Answer<pb::ClusterStatusResponse> {
        Ok(Response::new(self.membership.status()))
    }

    async fn add_node(
        &self,
        request: Request<pb::AddNodeRequest>,
    ) -> Answer<pb::MembershipResponse> {
        self.membership
            .add_node(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn promote_node(
        &self,
        request: Request<pb::PromoteNodeRequest>,
    ) -> Answer<pb::MembershipResponse> {
        self.membership
            .promote_node(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Answer<pb::MembershipResponse> {
        self.membership
            .remove_node(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn barrier(&self, _: Request<pb::BarrierRequest>) -> Answer<pb::BarrierResponse> {
        self.state.barrier().await.map(Response::new)
    }

    async fn compact(&self, request: Request<pb::CompactRequest>) -> Answer<pb::CompactResponse> {
        self.state
            .compact(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn create_group(
        &self,
        request: Request<pb::CreateGroupRequest>,
    ) -> Answer<pb::GroupResponse> {
        self.groups
            .create(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_group(&self, request: Request<pb::GetGroupRequest>) -> Answer<pb::GroupResponse> {
        self.groups
            .get(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> Answer<pb::ListGroupsResponse> {
        self.groups
            .list(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn update_group(
        &self,
        request: Request<pb::UpdateGroupRequest>,
    ) -> Answer<pb::GroupResponse> {
        self.groups
            .update(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Answer<pb::DeleteGroupResponse> {
        self.groups
            .delete(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn split_group(
        &self,
        request: Request<pb::SplitGroupRequest>,
    ) -> Answer<pb::GroupResponse> {
        self.groups
            .split(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn set_frozen(
        &self,
        request: Request<pb::SetFrozenRequest>,
    ) -> Answer<pb::GroupResponse> {
        self.groups
            .set_frozen(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn set_load_rules(
        &self,
        request: Request<pb::SetLoadRulesRequest>,
    ) -> Answer<pb::GroupResponse> {
        self.groups
            .set_load_rules(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_assignment(
        &self,
        request: Request<pb::GetAssignmentRequest>,
    ) -> Answer<pb::AssignmentResponse> {
        self.assignment
            .get(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn plan_assignment(
        &self,
        request: Request<pb::GetAssignmentRequest>,
    ) -> Answer<pb::PlanResponse> {
        self.assignment
            .plan(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn move_partitions(
        &self,
        request: Request<pb::MovePartitionsRequest>,
    ) -> Answer<pb::PlanResponse> {
        self.assignment
            .move_partitions(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn route(&self, request: Request<pb::RouteRequest>) -> Answer<pb::RouteResponse> {
        self.assignment
            .route(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_workers(
        &self,
        request: Request<pb::ListWorkersRequest>,
    ) -> Answer<pb::ListWorkersResponse> {
        self.assignment
            .list_workers(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn drain_worker(
        &self,
        request: Request<pb::WorkerRef>,
    ) -> Answer<pb::WorkerActionResponse> {
        self.assignment
            .drain_worker(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn evict_worker(
        &self,
        request: Request<pb::WorkerRef>,
    ) -> Answer<pb::WorkerActionResponse> {
        self.assignment
            .evict_worker(request.into_inner())
            .await
            .map(Response::new)
    }

    type BackupStream = BackupStream;

    async fn backup(&self, _: Request<pb::BackupRequest>) -> Answer<BackupStream> {
        self.state.backup().await.map(Response::new)
    }
}
