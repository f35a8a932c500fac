//! Calls on groups: their settings, their assignment, routing, and their
//! workers.

use baton_proto::v1::admin_client::AdminClient as Grpc;
use baton_proto::v1::{
    route_request, AssignmentResponse, CreateGroupRequest, DeleteGroupRequest, DeleteGroupResponse,
    GetAssignmentRequest, GetGroupRequest, GroupConfig, GroupResponse, ListGroupsRequest,
    ListGroupsResponse, ListWorkersRequest, ListWorkersResponse, LoadRules, MovePartitionsRequest,
    PartitionRange, PlanResponse, RouteRequest, RouteResponse, SetFrozenRequest,
    SetLoadRulesRequest, SplitGroupRequest, UpdateGroupRequest, WorkerActionResponse, WorkerRef,
};

use super::{AdminClient, ClientError, Consistency};

impl AdminClient {
    /// Creates `group`; unset config fields take the server's defaults.
    pub async fn create_group(
        &mut self,
        group: &str,
        config: GroupConfig,
    ) -> Result<GroupResponse, ClientError> {
        let request = CreateGroupRequest {
            group: group.to_string(),
            config: Some(config),
        };
        self.on_leader(|mut c| {
            let request = request.clone();
            async move { c.create_group(request).await }
        })
        .await
    }

    pub async fn get_group(
        &mut self,
        group: &str,
        consistency: Consistency,
    ) -> Result<GroupResponse, ClientError> {
        let request = GetGroupRequest {
            group: group.to_string(),
            serializable: consistency.is_serializable(),
        };
        self.read(consistency, |ch| {
            let request = request.clone();
            async move { Grpc::new(ch).get_group(request).await }
        })
        .await
    }

    pub async fn list_groups(
        &mut self,
        consistency: Consistency,
    ) -> Result<ListGroupsResponse, ClientError> {
        let request = ListGroupsRequest {
            serializable: consistency.is_serializable(),
        };
        self.read(consistency, |ch| async move {
            Grpc::new(ch).list_groups(request).await
        })
        .await
    }

    /// Changes the set fields of `config`, if the group's config revision
    /// is still `if_revision` (FAILED_PRECONDITION otherwise).
    pub async fn update_group(
        &mut self,
        group: &str,
        config: GroupConfig,
        if_revision: u64,
    ) -> Result<GroupResponse, ClientError> {
        let request = UpdateGroupRequest {
            group: group.to_string(),
            config: Some(config),
            if_revision,
        };
        self.on_leader(|mut c| {
            let request = request.clone();
            async move { c.update_group(request).await }
        })
        .await
    }

    /// Deletes `group`; with `force`, even while workers have sessions in it
    /// (`deleted` is then false until the last one has gone).
    pub async fn delete_group(
        &mut self,
        group: &str,
        force: bool,
    ) -> Result<DeleteGroupResponse, ClientError> {
        let request = DeleteGroupRequest {
            group: group.to_string(),
            force,
        };
        self.on_leader(|mut c| {
            let request = request.clone();
            async move { c.delete_group(request).await }
        })
        .await
    }

    /// Doubles the partition count, if the config revision is still
    /// `if_revision`.
    pub async fn split_group(
        &mut self,
        group: &str,
        if_revision: u64,
    ) -> Result<GroupResponse, ClientError> {
        let request = SplitGroupRequest {
            group: group.to_string(),
            if_revision,
        };
        self.on_leader(|mut c| {
            let request = request.clone();
            async move { c.split_group(request).await }
        })
        .await
    }

    /// Stops (`frozen`) or resumes rebalancing.
    pub async fn set_frozen(
        &mut self,
        group: &str,
        frozen: bool,
    ) -> Result<GroupResponse, ClientError> {
        let request = SetFrozenRequest {
            group: group.to_string(),
            frozen,
        };
        self.on_leader(|mut c| {
            let request = request.clone();
            async move { c.set_frozen(request).await }
        })
        .await
    }

    /// Balances `group` by the load its workers report, under `rules`
    /// (unset fields: the server's defaults), or (`None`) by partition
    /// count again.
    pub async fn set_load_rules(
        &mut self,
        group: &str,
        rules: Option<LoadRules>,
    ) -> Result<GroupResponse, ClientError> {
        let request = SetLoadRulesRequest {
            group: group.to_string(),
            by_count: rules.is_none(),
            rules,
        };
        self.on_leader(|mut c| {
            let request = request.clone();
            async move { c.set_load_rules(request).await }
        })
        .await
    }

    /// Who holds which partitions, what is moving, what is unassigned.
    pub async fn get_assignment(
        &mut self,
        group: &str,
        consistency: Consistency,
    ) -> Result<AssignmentResponse, ClientError> {
        let request = assignment_request(group, consistency);
        self.read(consistency, |ch| {
            let request = request.clone();
            async move { Grpc::new(ch).get_assignment(request).await }
        })
        .await
    }

    /// What the rebalancer would do now; changes nothing.
    pub async fn plan_assignment(
        &mut self,
        group: &str,
        consistency: Consistency,
    ) -> Result<PlanResponse, ClientError> {
        let request = assignment_request(group, consistency);
        self.read(consistency, |ch| {
            let request = request.clone();
            async move { Grpc::new(ch).plan_assignment(request).await }
        })
        .await
    }

    /// Hands `partitions` to worker `to` (held ones through a handoff).
    pub async fn move_partitions(
        &mut self,
        group: &str,
        partitions: Vec<PartitionRange>,
        to: &str,
    ) -> Result<PlanResponse, ClientError> {
        let request = MovePartitionsRequest {
            group: group.to_string(),
            partitions,
            to: to.to_string(),
        };
        self.on_leader(|mut c| {
            let request = request.clone();
            async move { c.move_partitions(request).await }
        })
        .await
    }

    /// Key, hash or partition → partition → owner and fencing token.
    pub async fn route(
        &mut self,
        group: &str,
        locator: route_request::Locator,
        consistency: Consistency,
    ) -> Result<RouteResponse, ClientError> {
        let request = RouteRequest {
            group: group.to_string(),
            locator: Some(locator),
            serializable: consistency.is_serializable(),
        };
        self.read(consistency, |ch| {
            let request = request.clone();
            async move { Grpc::new(ch).route(request).await }
        })
        .await
    }

    pub async fn list_workers(
        &mut self,
        group: &str,
        consistency: Consistency,
    ) -> Result<ListWorkersResponse, ClientError> {
        let request = ListWorkersRequest {
            group: group.to_string(),
            serializable: consistency.is_serializable(),
        };
        self.read(consistency, |ch| {
            let request = request.clone();
            async move { Grpc::new(ch).list_workers(request).await }
        })
        .await
    }

    /// A graceful leave on the worker's behalf: its partitions are handed
    /// off, then its session closes.
    pub async fn drain_worker(
        &mut self,
        group: &str,
        worker: &str,
    ) -> Result<WorkerActionResponse, ClientError> {
        let request = worker_ref(group, worker);
        self.on_leader(|mut c| {
            let request = request.clone();
            async move { c.drain_worker(request).await }
        })
        .await
    }

    /// Stops renewing the worker's lease: its session ends, and its
    /// partitions move, once the lease has run out.
    pub async fn evict_worker(
        &mut self,
        group: &str,
        worker: &str,
    ) -> Result<WorkerActionResponse, ClientError> {
        let request = worker_ref(group, worker);
        self.on_leader(|mut c| {
            let request = request.clone();
            async move { c.evict_worker(request).await }
        })
        .await
    }
}

fn assignment_request(group: &str, consistency: Consistency) -> GetAssignmentRequest {
    GetAssignmentRequest {
        group: group.to_string(),
        serializable: consistency.is_serializable(),
    }
}

fn worker_ref(group: &str, worker: &str) -> WorkerRef {
    WorkerRef {
        group: group.to_string(),
        worker: worker.to_string(),
    }
}
