//! Calls on the Raft cluster itself: status, membership, barrier, history
//! compaction, backup.

use std::time::Duration;

use baton_proto::v1::admin_client::AdminClient as Grpc;
use baton_proto::v1::{
    AddNodeRequest, BackupRequest, BarrierRequest, BarrierResponse, ClusterStatusRequest,
    ClusterStatusResponse, CompactRequest, CompactResponse, MembershipResponse, PromoteNodeRequest,
    RemoveNodeRequest,
};
use tonic::{Response, Status};

use super::{AdminClient, ClientError, MemberStatus};
use crate::code_name;

/// A backup of the whole state, as of `revision`: what `baton-node
/// --restore-from` reads.
#[derive(Clone, Debug)]
pub struct Backup {
    pub revision: u64,
    pub data: Vec<u8>,
}

impl AdminClient {
    /// The leader's view of the cluster.
    pub async fn cluster_status(&mut self) -> Result<ClusterStatusResponse, ClientError> {
        self.on_leader(|mut c| async move { c.cluster_status(ClusterStatusRequest {}).await })
            .await
    }

    /// The leader's view plus every member's own answer (or why it gave none).
    /// When no leader answers within a few seconds (no quorum), the view is
    /// that of the first node that answers: its `leader_id` is then 0 or not
    /// its own `node_id`, which says so.
    pub async fn member_statuses(
        &mut self,
    ) -> Result<(ClusterStatusResponse, Vec<MemberStatus>), ClientError> {
        let budget = self.timeout.min(Duration::from_secs(3));
        let mut quick = AdminClient::from_endpoints(self.endpoints.clone(), budget);
        let leader = match quick.cluster_status().await {
            Ok(leader) => leader,
            Err(ClientError::Unavailable { .. }) => self
                .endpoints
                .any_status()
                .await
                .map_err(ClientError::Status)?,
            Err(e) => return Err(e),
        };
        // Every member at once: a frozen one costs one probe timeout.
        let asks = leader.members.iter().map(|m| async {
            if m.id == leader.node_id {
                return (Some(leader.clone()), None);
            }
            let probe = self.endpoints.timing().probe;
            let asked = match self.endpoints.channel(&m.addr) {
                Ok(channel) => tokio::time::timeout(
                    probe,
                    Grpc::new(channel).cluster_status(ClusterStatusRequest {}),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(Status::deadline_exceeded(format!(
                        "no answer within {probe:?} (frozen, or a socket that never answers)"
                    )))
                }),
                Err(e) => Err(Status::invalid_argument(e.to_string())),
            };
            match asked {
                Ok(r) => (Some(r.into_inner()), None),
                Err(s) => (
                    None,
                    Some(format!("{}: {}", code_name(s.code()), s.message())),
                ),
            }
        });
        let answers = futures::future::join_all(asks).await;
        let members = leader
            .members
            .iter()
            .zip(answers)
            .map(|(m, (status, error))| MemberStatus {
                id: m.id,
                addr: m.addr.clone(),
                voter: m.voter,
                status,
                error,
                matched_index: m.matched_index,
            })
            .collect();
        Ok((leader, members))
    }

    /// Adds a node as a learner; with `promote`, makes it a voter once caught up.
    pub async fn add_node(
        &mut self,
        id: u64,
        addr: &str,
        promote: bool,
    ) -> Result<MembershipResponse, ClientError> {
        let request = AddNodeRequest {
            id,
            addr: addr.to_string(),
            promote,
        };
        self.on_leader(|mut c| {
            let request = request.clone();
            async move { c.add_node(request).await }
        })
        .await
    }

    pub async fn promote_node(&mut self, id: u64) -> Result<MembershipResponse, ClientError> {
        self.on_leader(|mut c| async move { c.promote_node(PromoteNodeRequest { id }).await })
            .await
    }

    pub async fn remove_node(&mut self, id: u64) -> Result<MembershipResponse, ClientError> {
        self.on_leader(|mut c| async move { c.remove_node(RemoveNodeRequest { id }).await })
            .await
    }

    /// Commits an empty entry; returns once the leader has applied it.
    pub async fn barrier(&mut self) -> Result<BarrierResponse, ClientError> {
        self.on_leader(|mut c| async move { c.barrier(BarrierRequest {}).await })
            .await
    }

    /// Drops the watch history up to and including `revision` on every node.
    pub async fn compact(&mut self, revision: u64) -> Result<CompactResponse, ClientError> {
        self.on_leader(|mut c| async move { c.compact(CompactRequest { revision }).await })
            .await
    }

    /// The leader's backup of the whole state, whole: a stream that ends
    /// short of the size it announced is UNAVAILABLE, and retried.
    pub async fn backup(&mut self) -> Result<Backup, ClientError> {
        self.on_leader(|mut c| async move {
            let mut stream = c.backup(BackupRequest {}).await?.into_inner();
            let (mut revision, mut total, mut data) = (0, 0, Vec::new());
            while let Some(chunk) = stream.message().await? {
                revision = chunk.revision;
                total = chunk.total_bytes;
                data.extend_from_slice(&chunk.data);
            }
            if data.len() as u64 != total {
                return Err(Status::unavailable(format!(
                    "the backup stream ended after {} of {total} bytes",
                    data.len()
                )));
            }
            Ok(Response::new(Backup { revision, data }))
        })
        .await
    }
}
