//! The `Tombstones` service: deletion markers.

use baton_proto::v1 as pb;
use baton_proto::v1::tombstones_client::TombstonesClient;
use baton_proto::v1::tombstones_server::Tombstones;
use tonic::{Request, Response, Status};

use super::convert;
use super::leader::{now_ms, Leader};
use crate::domain::{Command, Locator, Reply};
use crate::on_leader;
use crate::raft::{BatonRaft, NodeId};
use crate::store::StateMachineStore;

/// Keys one `Check` may ask about, and tombstones one `List` may return.
pub const MAX_BATCH: usize = 10_000;

pub struct TombstonesApi {
    leader: Leader,
}

impl TombstonesApi {
    pub fn new(id: NodeId, raft: BatonRaft, sm: StateMachineStore) -> Self {
        Self {
            leader: Leader::new(id, raft, sm),
        }
    }
}

#[tonic::async_trait]
impl Tombstones for TombstonesApi {
    async fn put(
        &self,
        request: Request<pb::PutTombstoneRequest>,
    ) -> Result<Response<pb::PutTombstoneResponse>, Status> {
        on_leader!(self.leader, request, TombstonesClient::put, ());
        let r = request.into_inner();
        let locator = match r.locator {
            None => Locator::Key,
            Some(pb::put_tombstone_request::Locator::Hash(h)) => Locator::Hash(h),
            Some(pb::put_tombstone_request::Locator::Partition(p)) => Locator::Partition(p),
        };
        let command = Command::PutTombstone {
            group: r.group,
            key: r.key,
            locator,
            ttl_ms: r.ttl_ms,
            now_ms: now_ms(),
        };
        let committed = self.leader.propose(command).await?;
        match committed.reply {
            Reply::Tombstone {
                revision,
                partition,
            } => Ok(Response::new(pb::PutTombstoneResponse {
                revision,
                partition,
            })),
            other => Err(Status::internal(format!(
                "unexpected reply to a tombstone put: {other:?}"
            ))),
        }
    }

    async fn check(
        &self,
        request: Request<pb::CheckTombstonesRequest>,
    ) -> Result<Response<pb::CheckTombstonesResponse>, Status> {
        let keys = request.get_ref().keys.len();
        if keys > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "{keys} keys in one check; at most {MAX_BATCH}: split the batch"
            )));
        }
        if !request.get_ref().serializable {
            on_leader!(self.leader, request, TombstonesClient::check, ());
        }
        let r = request.into_inner();
        let reply = self
            .leader
            .read_group(r.serializable, &r.group, |revision, g| {
                let results = r
                    .keys
                    .iter()
                    .map(|key| {
                        let found = g.tombstones.get(key);
                        pb::CheckedKey {
                            key: key.clone(),
                            deleted: found.is_some(),
                            tombstone: found.map(|t| convert::tombstone(key, t)),
                        }
                    })
                    .collect();
                pb::CheckTombstonesResponse { revision, results }
            })
            .await?;
        Ok(Response::new(reply))
    }

    async fn list(
        &self,
        request: Request<pb::ListTombstonesRequest>,
    ) -> Result<Response<pb::ListTombstonesResponse>, Status> {
        if !request.get_ref().serializable {
            on_leader!(self.leader, request, TombstonesClient::list, ());
        }
        let r = request.into_inner();
        let limit = match r.limit {
            0 => MAX_BATCH,
            n => usize::try_from(n).unwrap_or(MAX_BATCH).min(MAX_BATCH),
        };
        let range = match &r.partitions {
            Some(p) if p.start > p.end => {
                return Err(Status::invalid_argument(format!(
                    "partitions: range {}-{} starts after it ends",
                    p.start, p.end
                )))
            }
            Some(p) => p.start..=p.end,
            None => 0..=u32::MAX,
        };
        let reply = self
            .leader
            .read_group(r.serializable, &r.group, |revision, g| {
                let mut matching = g
                    .tombstones
                    .iter()
                    .filter(|(_, t)| range.contains(&t.partition));
                let tombstones: Vec<pb::TombstoneInfo> = matching
                    .by_ref()
                    .take(limit)
                    .map(|(k, t)| convert::tombstone(k, t))
                    .collect();
                let truncated = matching.next().is_some();
                pb::ListTombstonesResponse {
                    revision,
                    tombstones,
                    truncated,
                }
            })
            .await?;
        Ok(Response::new(reply))
    }
}
