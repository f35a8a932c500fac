//! Reading the stored event history, for a feed that catches up.

use super::decode;
use super::schema::history_key;
use super::state_machine::StateMachineStore;
use crate::watch::hub::{Batch, BatchHead, FeedError};

/// Bytes of stored batches after which one history read stops (past it by
/// one batch at most).
pub const HISTORY_READ_BYTES: usize = 1 << 20;

impl StateMachineStore {
    /// The stored batches of `group` from revision `from` up to `to`, and the
    /// revision up to which the answer is complete. One call looks at no
    /// more than `limit` stored batches (of any group) and stops once it has
    /// read [`HISTORY_READ_BYTES`] (past it by one batch at most), so a
    /// resume over a long history is read in bounded chunks: call again from
    /// the revision after the one answered. Blocks on the disk: call it off
    /// the runtime's threads.
    ///
    /// The history is keyed by revision alone, so other groups' batches are
    /// looked at too, but only their group name is decoded, never their
    /// events.
    pub fn history(
        &self,
        group: &str,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<(Vec<Batch>, u64), FeedError> {
        let (tree, generation) = {
            let applied = self.lock();
            (applied.tree.clone(), applied.generation)
        };
        let read = read_chunk(&tree, group, from, to, limit);
        // Checked after reading: a compaction meanwhile may have removed
        // some, and a snapshot installed meanwhile drops the tree read (its
        // batches may then be missing from the answer, or the read fail).
        let applied = self.lock();
        let compacted = applied.state.compacted;
        if from <= compacted {
            return Err(FeedError::Compacted { from, compacted });
        }
        if applied.generation != generation {
            // Nothing is answered: the caller reads again, from the new tree.
            return Ok((Vec::new(), from.saturating_sub(1)));
        }
        read
    }
}

fn read_chunk(
    tree: &sled::Tree,
    group: &str,
    from: u64,
    to: u64,
    limit: usize,
) -> Result<(Vec<Batch>, u64), FeedError> {
    let storage = |e: &dyn std::fmt::Display| FeedError::Storage(e.to_string());
    let mut batches = Vec::new();
    let mut covered = to;
    if from > to {
        return Ok((batches, covered));
    }
    let (mut looked_at, mut bytes) = (0, 0);
    for item in tree.range(history_key(from)..=history_key(to)) {
        let (_, value) = item.map_err(|e| storage(&e))?;
        // A stored batch starts with its revision and group: those alone are
        // decoded for every batch (as `StoredSnapshotHead` is for snapshots).
        let head: BatchHead<'_> = bincode::deserialize(&value).map_err(|e| storage(&e))?;
        if looked_at >= limit.max(1) || bytes >= HISTORY_READ_BYTES {
            covered = head.revision.saturating_sub(1);
            break;
        }
        looked_at += 1;
        bytes += value.len();
        if head.group != group {
            continue;
        }
        batches.push(decode(&value).map_err(|e| storage(&e))?);
    }
    Ok((batches, covered))
}
