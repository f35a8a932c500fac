//! The internal `Raft` service: decodes openraft requests from peers, hands them
//! to the local Raft, and encodes the result (success or Raft error) back.

use std::sync::Arc;

use baton_proto::v1::raft_server::Raft as RaftService;
use baton_proto::v1::{RaftPayload, ReadIndexRequest, ReadIndexResponse};
use openraft::raft::AppendEntriesResponse;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use super::access::Access;
use crate::raft::pre_vote::{self, ElectionTiming, LeaderContact, PreVoteRequest};
use crate::raft::BatonRaft;

pub struct RaftApi {
    raft: BatonRaft,
    access: Arc<Access>,
    /// Stamped on every AppendEntries or snapshot chunk this node accepts:
    /// it heard a live leader (pre-vote reads it).
    contact: Arc<LeaderContact>,
    timing: ElectionTiming,
}

impl RaftApi {
    pub fn new(
        raft: BatonRaft,
        access: Arc<Access>,
        contact: Arc<LeaderContact>,
        timing: ElectionTiming,
    ) -> Self {
        Self {
            raft,
            access,
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

#[tonic::async_trait]
impl RaftService for RaftApi {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.access.peer(&request)?;
        let rpc = decode(&request)?;
        let result = self.raft.append_entries(rpc).await;
        // Anything but HigherVote means the sender's vote was accepted: it
        // is the leader this node follows.
        if matches!(&result, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
            self.contact.heard();
        }
        encode(&result)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.access.peer(&request)?;
        let rpc = decode(&request)?;
        encode(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.access.peer(&request)?;
        let rpc = decode(&request)?;
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
        self.access.peer(&request)?;
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
        request: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        self.access.peer(&request)?;
        let (read, _) = self
            .raft
            .get_read_log_id()
            .await
            .map_err(super::check_leader_error)?;
        Ok(Response::new(ReadIndexResponse {
            index: read.map_or(0, |l| l.index),
        }))
    }
}
