//! Applying committed entries: the domain state changes in memory, the
//! applied position, revision and events are written in one atomic batch,
//! and now and then a state checkpoint after it, in its own tree. See the
//! [module docs](super::state_machine) for the on-disk shape.

use std::time::Instant;

use openraft::{EntryPayload, ErrorVerb};

use super::encode;
use super::metrics::StoreMetrics;
use super::schema::{history_key, KEY_COMPACTED};
use super::state_machine::{codec_err, sm_err, written, Applied, StateMachineStore};
use super::types::{Entry, StorageError, StoredMembership};
use crate::clock::now_ms;
use crate::domain::{Change, Command, CommandResult, LeaveReason, Reply};
use crate::watch::hub::Batch;

/// Revisions between two state checkpoints at least (more for a state with
/// more entries than this).
pub const CHECKPOINT_EVERY: u64 = 10_000;

impl StateMachineStore {
    /// Applies committed entries: see [`RaftStateMachine::apply`], which
    /// calls this.
    pub(super) async fn apply_entries<I>(
        &mut self,
        entries: I,
    ) -> Result<Vec<Vec<CommandResult>>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let started = Instant::now();
        let metrics = &self.inner.metrics;
        let (results, history, revision, applied_index) = {
            let mut guard = self.lock();
            let applied = &mut *guard;
            // Applied in place (a copy would cost O(state) per batch). If the
            // batch then cannot be written, memory is ahead of disk: the
            // process stops rather than serve that state (see `written`).
            let compacted_before = applied.state.compacted;
            let mut results = Vec::new();
            let mut history = Vec::new();
            for entry in entries {
                let applied_here = Self::apply_entry(applied, &entry, &mut history, metrics);
                applied.last_applied = Some(entry.log_id);
                results.push(applied_here);
            }
            let state = &applied.state;
            let checkpoint =
                state.revision >= applied.checkpoint + CHECKPOINT_EVERY.max(state.entries());
            let mut batch = sled::Batch::default();
            let built = Self::put_applied(
                &mut batch,
                &applied.last_applied,
                state.revision,
                &applied.membership,
            )
            .and_then(|()| Self::put_history(&mut batch, &history));
            written(built)?;
            if state.compacted != compacted_before {
                let value = encode(&state.compacted).map_err(codec_err(ErrorVerb::Write));
                batch.insert(KEY_COMPACTED, written(value)?);
            }
            // History is dropped only behind a checkpoint already written:
            // replaying after the checkpoint needs what follows it.
            let drop_to = state.compacted.min(applied.checkpoint);
            if drop_to > applied.dropped {
                let dropped = applied
                    .tree
                    .range(history_key(applied.dropped + 1)..=history_key(drop_to));
                for item in dropped {
                    let (key, _) = written(item.map_err(sm_err(ErrorVerb::Read)))?;
                    batch.remove(key);
                }
            }
            written(
                applied
                    .tree
                    .apply_batch(batch)
                    .map_err(sm_err(ErrorVerb::Write)),
            )?;
            // The checkpoint goes into a tree of its own (see `schema`), so
            // not in the batch above: after it, so that it is never on disk
            // ahead of the applied position (sled keeps the order of writes
            // across trees; `open` refuses a checkpoint ahead anyway).
            if checkpoint {
                written(Self::put_checkpoint(&applied.checkpoints, state))?;
                applied.checkpoint = state.revision;
            }
            let applied_index = applied.last_applied.map_or(0, |l| l.index);
            applied.dropped = applied.dropped.max(drop_to);
            (results, history, state.revision, applied_index)
        };
        // Published once written (`LogStore::purge` waits for the applied
        // index published here). Watchers get the events before any flush:
        // the entries are committed (durable in a majority's logs), and
        // re-applying them after a crash yields the same events at the same
        // revisions, so nothing a watcher saw can change.
        self.inner.hub.publish(history, revision, applied_index);
        // Durability without a flush here: the replies sent when this returns
        // report entries that are committed, i.e. flushed in a majority's logs,
        // and applying them again after a crash gives the same revisions and
        // events. The applied state on disk may lag behind memory; openraft
        // re-applies the log after it on restart. What makes that safe is that
        // the log is never purged past applied state on disk: `LogStore::purge`
        // waits until the applied position it purges up to is written and
        // published, then flushes before it deletes anything (one sled
        // database: a flush makes every earlier write durable, the log's and
        // the state's alike). The next log append's flush carries this batch
        // to disk anyway. An fsync here was a third one in series per write.
        metrics
            .apply_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(results)
    }

    /// Applies one entry: one result per command it carries (one for an
    /// entry without a command), its events added to `history`.
    ///
    /// Revisions: an entry without a batch takes its log index plus the
    /// revisions that earlier batches added beyond their own entries (the
    /// offset, `revision - last applied index`); a batch of `n` commands
    /// takes the next `n`, in order, and the offset grows by `n - 1`. So in a
    /// log without batches the revision is the log index, as nodes of format
    /// 4 compute it: during a rolling upgrade, before the leader writes its
    /// first batch (only once every member reads them), every node gives
    /// every entry, and every grant its fencing token, the same revision.
    fn apply_entry(
        applied: &mut Applied,
        entry: &Entry,
        history: &mut Vec<Batch>,
        metrics: &StoreMetrics,
    ) -> Vec<CommandResult> {
        let offset = applied
            .last_applied
            .map_or(0, |l| applied.state.revision.saturating_sub(l.index));
        let first = entry.log_id.index + offset;
        match &entry.payload {
            EntryPayload::Blank => vec![applied.state.apply_empty(first)],
            EntryPayload::Membership(m) => {
                applied.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                vec![applied.state.apply_empty(first)]
            }
            EntryPayload::Normal(proposals) => {
                let proposals = proposals.as_slice();
                metrics.entry_commands.observe(proposals.len() as f64);
                (first..)
                    .zip(proposals)
                    .map(|(revision, proposal)| {
                        let since = applied.state.handoff_started(&proposal.command);
                        let result = applied.state.apply(revision, proposal);
                        if let (Some(since), Ok(_)) = (since, &result.outcome) {
                            let ms = now_ms().saturating_sub(since);
                            metrics.handoff_seconds.observe(ms as f64 / 1000.0);
                        }
                        let expiries = result.events.iter().filter(|e| {
                            matches!(
                                e.change,
                                Change::WorkerLeft {
                                    reason: LeaveReason::Expired,
                                    ..
                                }
                            )
                        });
                        metrics.lease_expiries.inc_by(expiries.count() as u64);
                        let round = match &proposal.command {
                            Command::Rebalance(c) => Some(&c.group),
                            Command::RebalanceByLoad(c) => Some(&c.group),
                            _ => None,
                        };
                        if let (Ok(Reply::Rebalanced(moved)), Some(group)) =
                            (&result.outcome, round)
                        {
                            for (reason, n) in [
                                ("place", moved.placed),
                                ("isolate", moved.isolated),
                                ("balance", moved.balanced),
                            ] {
                                if n > 0 {
                                    metrics.moves.with_label_values(&[group, reason]).inc_by(n);
                                }
                            }
                        }
                        history.extend(Batch::of(revision, result.events.clone()));
                        result
                    })
                    .collect()
            }
        }
    }
}
