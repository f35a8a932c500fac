//! Reads: linearizable (confirmed by a quorum, up to the read index) or
//! serializable (this node's state as it is).

use std::time::Duration;

use baton_proto::v1::raft_client::RaftClient;
use baton_proto::v1::ReadIndexRequest;
use tonic::Request;

use super::{ClusterError, Leader};
use crate::domain::{Group, State};

/// How long a follower waits for the leader's read index, and then to apply it.
const READ_INDEX_TIMEOUT: Duration = Duration::from_secs(5);

impl Leader {
    /// The leader's read index: the log index a linearizable read must have
    /// applied (a log index, not a revision: an entry may carry several).
    /// Asked of the leader when this node is a follower.
    async fn read_index(&self) -> Result<u64, ClusterError> {
        let metrics = self.metrics();
        if metrics.current_leader == Some(self.id) {
            let (read, _) = self.raft.get_read_log_id().await?;
            return Ok(read.map_or(0, |l| l.index));
        }
        let channel = self.leader_channel(&metrics)?;
        let mut request = Request::new(ReadIndexRequest {});
        request.set_timeout(READ_INDEX_TIMEOUT);
        self.dialer.authorize(&mut request);
        let reply = RaftClient::new(channel)
            .read_index(request)
            .await
            .map_err(ClusterError::ReadIndex)?;
        Ok(reply.into_inner().index)
    }

    /// Waits until this node has applied (and published) the leader's read
    /// index, and returns the revision applied then: a linearizable point to
    /// start from.
    pub async fn linearizable_point(&self) -> Result<u64, ClusterError> {
        self.check_not_removed()?;
        let index = self.read_index().await?;
        let caught_up =
            tokio::time::timeout(READ_INDEX_TIMEOUT, self.sm.hub().wait_for_index(index));
        match caught_up.await {
            Ok(Ok(revision)) => Ok(revision),
            Ok(Err(_)) => Err(ClusterError::ShuttingDown),
            Err(_) => Err(ClusterError::Behind {
                index,
                timeout: READ_INDEX_TIMEOUT,
            }),
        }
    }

    /// Reads the state: after confirming leadership with a quorum and applying
    /// up to the read index (linearizable), or as this node has it
    /// (`serializable`). A linearizable read must be routed to the leader first.
    pub async fn read<R>(
        &self,
        serializable: bool,
        f: impl FnOnce(&State) -> R,
    ) -> Result<R, ClusterError> {
        // A removed node's state is stale by an unknown amount: not even a
        // serializable read is answered from it.
        self.check_not_removed()?;
        if !serializable {
            self.raft.ensure_linearizable().await?;
        }
        Ok(self.sm.read(f))
    }

    /// Reads one group (see [`Leader::read`]) with the state's revision, or
    /// answers that it does not exist.
    pub async fn read_group<R>(
        &self,
        serializable: bool,
        name: &str,
        f: impl FnOnce(u64, &Group) -> R,
    ) -> Result<R, ClusterError> {
        self.read(serializable, |s| {
            s.groups.get(name).map(|g| f(s.revision, g))
        })
        .await?
        .ok_or_else(|| ClusterError::GroupNotFound(name.to_string()))
    }
}
