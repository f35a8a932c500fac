//! The internal `Raft` service: decodes openraft requests from peers, hands them
//! to the local Raft, and encodes the result (success or Raft error) back.
//! Only members may call it: the gate (`api::policy`) checks that first.

use std::sync::Arc;

use baton_proto::v1::raft_server::Raft as RaftService;
use baton_proto::v1::{
    FeaturesRequest, FeaturesResponse, RaftPayload, ReadIndexRequest, ReadIndexResponse,
};
use openraft::raft::AppendEntriesResponse;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use crate::raft::pre_vote::{self, ElectionTiming, LeaderContact, PreVoteRequest};
use crate::raft::BatonRaft;

pub struct RaftApi {
    raft: BatonRaft,
    /// Stamped on every AppendEntries or snapshot chunk this node accepts:
    /// it heard a live leader (pre-vote reads it).
    contact: Arc<LeaderContact>,
    timing: ElectionTiming,
}

impl RaftApi {
    pub fn new(raft: BatonRaft, contact: Arc<LeaderContact>, timing: ElectionTiming) -> Self {
        Self {
            raft,
            contact,
            timing,
        }
    }
}

fn decode<T: DeserializeOwned>(request: &Request<RaftPayload>) -> Result<T, Status> {
    bincode::deserialize(&request.get_ref().data).map_err(|e| {
        Status::invalid_argument(format!(
            "cannot decode the Raft request ({e}); are both nodes running the same baton version?"
        ))
    })
}

fn encode<T: Serialize>(result: &T) -> Result<Response<RaftPayload>, Status> {
    let data = bincode::serialize(result)
        .map_err(|e| Status::internal(format!("cannot encode the Raft reply: {e}")))?;
    Ok(Response::new(RaftPayload { data }))
}

impl RaftApi {
    /// Refuses replication that assumes another restore than this node's.
    ///
    /// A restored cluster starts from a snapshot at log index backup + bump,
    /// term 0 (`--restore-revision-bump`, set per node). Raft takes every
    /// entry at or below a node's snapshot as agreed, so a leader restored
    /// with a smaller bump would have this node skip its entries up to this
    /// node's index, and the two would hold different states under the same
    /// indexes, silently. A leader restored alike holds nothing below that
    /// snapshot, so it never names a point below it (`from`: the entry the
    /// request continues from, or the snapshot it installs). Until its next
    /// snapshot this node refuses one that does: it stays behind, loudly,
    /// until it is wiped and restored like the others.
    fn same_restore(&self, from: Option<crate::raft::LogId>) -> Result<(), Status> {
        let restored = self.raft.metrics().borrow().snapshot;
        let Some(ours) = restored.filter(|l| l.leader_id.term == 0 && l.index > 0) else {
            return Ok(());
        };
        if from.is_some_and(|f| f.index > ours.index || f == ours) {
            return Ok(());
        }
        tracing::error!(
            restored = ours.index,
            leader_from = ?from,
            "the leader does not hold this node's restore point: every initial member must be restored from the same backup with the same --restore-revision-bump; wipe this node's data dir and restore it again"
        );
        Err(Status::failed_precondition(format!(
            "this node was restored at revision {}, and the leader holds nothing there: restore every initial member from the same backup with the same --restore-revision-bump",
            ours.index
        )))
    }
}

#[tonic::async_trait]
impl RaftService for RaftApi {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc: openraft::raft::AppendEntriesRequest<crate::raft::TypeConfig> = decode(&request)?;
        self.same_restore(rpc.prev_log_id)?;
        let result = self.raft.append_entries(rpc).await;
        // Anything but HigherVote means the sender's vote was accepted: it
        // is the leader this node follows.
        if matches!(&result, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
            self.contact.heard();
        }
        encode(&result)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode(&request)?;
        encode(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc: openraft::raft::InstallSnapshotRequest<crate::raft::TypeConfig> =
            decode(&request)?;
        self.same_restore(rpc.meta.last_log_id)?;
        let result = self.raft.install_snapshot(rpc).await;
        if result.is_ok() {
            self.contact.heard();
        }
        encode(&result)
    }

    async fn pre_vote(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc: PreVoteRequest = decode(&request)?;
        encode(&pre_vote::answer(
            &self.raft,
            &self.contact,
            self.timing,
            &rpc,
        ))
    }

    async fn read_index(
        &self,
        _: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        let (read, _) = self
            .raft
            .get_read_log_id()
            .await
            .map_err(super::check_leader_error)?;
        Ok(Response::new(ReadIndexResponse {
            index: read.map_or(0, |l| l.index),
        }))
    }

    async fn features(
        &self,
        _: Request<FeaturesRequest>,
    ) -> Result<Response<FeaturesResponse>, Status> {
        Ok(Response::new(FeaturesResponse {
            features: crate::cluster::FEATURES
                .iter()
                .map(ToString::to_string)
                .collect(),
        }))
    }
}
