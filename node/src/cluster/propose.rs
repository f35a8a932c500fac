//! Proposing: the one path by which anything writes a command, for client
//! requests and the leader's duties alike.

use super::{ClusterError, Committed, Leader};
use crate::clock::now_ms;
use crate::domain::Command;

impl Leader {
    /// Commits `command` (this node must lead: call after `route`) and returns
    /// its reply, or why it was not written. Nothing is acknowledged before
    /// the entry that carries it (alone or in a batch) is committed on a
    /// majority and applied here.
    ///
    /// Only what can apply is written: the command is first checked against
    /// this node's state. A request that would be refused, or would change
    /// nothing, is answered without a log entry, once a linearizable read
    /// confirms the verdict: this node may have lost office, or not yet
    /// applied what it committed, and a refusal from a stale state would
    /// be wrong. A request that passes costs no extra round.
    ///
    /// The command is stamped here, once, with this leader's clock: the
    /// time every replica decides it at.
    pub async fn propose(&self, command: Command) -> Result<Committed, ClusterError> {
        self.propose_at(command, now_ms()).await
    }

    /// [`Leader::propose`] stamped with `at_ms`, a reading of this leader's
    /// clock taken earlier: the duties decide what to propose at one reading
    /// per tick, and a purge must remove what that reading found expired,
    /// not what has expired since.
    pub async fn propose_at(
        &self,
        command: Command,
        at_ms: u64,
    ) -> Result<Committed, ClusterError> {
        let proposal = command.at(at_ms);
        if self
            .sm
            .read(|s| s.check(&proposal))
            .map_or(true, |r| r.is_some())
        {
            self.raft.ensure_linearizable().await?;
            let (revision, verdict) = self.sm.read(|s| (s.revision, s.check(&proposal)));
            if let Some(reply) = verdict? {
                return Ok(Committed {
                    revision,
                    reply,
                    events: Vec::new(),
                });
            }
        }
        let result = self.batcher.write(proposal).await?;
        let reply = result.outcome?;
        Ok(Committed {
            revision: result.revision,
            reply,
            events: result.events,
        })
    }
}
