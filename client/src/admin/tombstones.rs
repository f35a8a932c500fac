//! Calls on tombstones (deletion markers): put, check, list.

use baton_proto::v1::tombstones_client::TombstonesClient as Grpc;
use baton_proto::v1::{
    CheckTombstonesRequest, CheckTombstonesResponse, ListTombstonesRequest, ListTombstonesResponse,
    PutTombstoneRequest, PutTombstoneResponse,
};

use super::{AdminClient, ClientError, Consistency};

impl AdminClient {
    /// Marks a key deleted (idempotent); with `wait` set to acknowledged, a
    /// barrier that returns once the partition's owner acknowledged it or
    /// lost its grant (the answer's `barrier` says which).
    pub async fn put_tombstone(
        &mut self,
        request: PutTombstoneRequest,
    ) -> Result<PutTombstoneResponse, ClientError> {
        self.call(|ch| {
            let request = request.clone();
            async move { Grpc::new(ch).put(request).await }
        })
        .await
    }

    /// Which of `keys` are deleted.
    pub async fn check_tombstones(
        &mut self,
        group: &str,
        keys: Vec<String>,
        consistency: Consistency,
    ) -> Result<CheckTombstonesResponse, ClientError> {
        let request = CheckTombstonesRequest {
            group: group.to_string(),
            keys,
            serializable: consistency.is_serializable(),
        };
        self.read(consistency, |ch| {
            let request = request.clone();
            async move { Grpc::new(ch).check(request).await }
        })
        .await
    }

    /// One page of tombstones in key order; `request.serializable` reads
    /// it from any node.
    pub async fn list_tombstones(
        &mut self,
        request: ListTombstonesRequest,
    ) -> Result<ListTombstonesResponse, ClientError> {
        let consistency = Consistency::serializable_if(request.serializable);
        self.read(consistency, |ch| {
            let request = request.clone();
            async move { Grpc::new(ch).list(request).await }
        })
        .await
    }
}
