//! The replicated state as a whole: barriers, compaction of the event
//! history, and backups.

use baton_proto::v1 as pb;
use tonic::Status;

use crate::cluster::Leader;
use crate::domain::command::Compact;
use crate::domain::{Command, Reply};

/// Backup chunks stay well under the 4 MiB default gRPC message limit.
const BACKUP_CHUNK_BYTES: usize = 1024 * 1024;

pub type BackupStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::BackupChunk, Status>> + Send>>;

pub struct WholeState {
    pub(super) leader: Leader,
}

impl WholeState {
    pub async fn barrier(&self) -> Result<pb::BarrierResponse, Status> {
        let committed = self.leader.propose(Command::Barrier).await?;
        Ok(pb::BarrierResponse {
            revision: committed.revision,
            leader_id: self.leader.id(),
        })
    }

    pub async fn compact(&self, r: pb::CompactRequest) -> Result<pb::CompactResponse, Status> {
        let committed = self
            .leader
            .propose(Command::Compact(Compact {
                revision: r.revision,
            }))
            .await?;
        let compacted = match committed.reply {
            Reply::Compacted { revision } => revision,
            other => {
                return Err(Status::internal(format!(
                    "unexpected reply to a compaction: {other:?}"
                )))
            }
        };
        Ok(pb::CompactResponse {
            compacted,
            revision: committed.revision,
        })
    }

    pub async fn backup(&self) -> Result<BackupStream, Status> {
        // Everything committed before the call is in the backup.
        self.leader.linearizable_point().await?;
        let sm = self.leader.state_machine().clone();
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
        Ok(Box::pin(tokio_stream::iter(chunks)))
    }
}
