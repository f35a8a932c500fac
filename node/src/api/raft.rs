//! The internal `Raft` service: decodes openraft requests from peers, hands them
//! to the local Raft, and encodes the result (success or Raft error) back.

use std::sync::Arc;

use baton_proto::v1::raft_server::Raft as RaftService;
use baton_proto::v1::{RaftPayload, ReadIndexRequest, ReadIndexResponse};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use super::access::Access;
use crate::raft::BatonRaft;

pub struct RaftApi {
    raft: BatonRaft,
    access: Arc<Access>,
}

impl RaftApi {
    pub fn new(raft: BatonRaft, access: Arc<Access>) -> Self {
        Self { raft, access }
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
        encode(&self.raft.append_entries(rpc).await)
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
        encode(&self.raft.install_snapshot(rpc).await)
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
