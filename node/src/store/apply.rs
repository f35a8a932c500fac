//! Applying committed entries: the domain state changes in memory, and the
//! applied position, the events and (now and then) a state checkpoint are
//! written in one atomic batch. See the [module docs](super::state_machine)
//! for the on-disk shape.

use std::sync::atomic::Ordering;
use std::time::Instant;

use openraft::{EntryPayload, ErrorVerb};

use super::encode;
use super::schema::{history_key, KEY_COMPACTED};
use super::state_machine::{codec_err, sm_err, written, StateMachineStore};
use super::types::{Entry, StorageError, StoredMembership};
use crate::clock::now_ms;
use crate::domain::{Change, CommandResult, LeaveReason};
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
    ) -> Result<Vec<CommandResult>, StorageError>
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
                let index = entry.log_id.index;
                let result = match &entry.payload {
                    EntryPayload::Blank => applied.state.apply(index, None),
                    EntryPayload::Normal(proposal) => {
                        let since = applied.state.handoff_started(&proposal.command);
                        let result = applied.state.apply(index, Some(proposal));
                        if let (Some(since), Ok(_)) = (since, &result.outcome) {
                            let ms = now_ms().saturating_sub(since);
                            metrics.handoff_seconds.observe(ms as f64 / 1000.0);
                        }
                        result
                    }
                    EntryPayload::Membership(m) => {
                        applied.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                        applied.state.apply(index, None)
                    }
                };
                applied.last_applied = Some(entry.log_id);
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
                history.extend(Batch::of(index, result.events.clone()));
                results.push(result);
            }
            let state = &applied.state;
            let checkpoint =
                state.revision >= applied.checkpoint + CHECKPOINT_EVERY.max(state.entries());
            let mut batch = sled::Batch::default();
            let built = Self::put_applied(
                &mut batch,
                &applied.last_applied,
                &applied.membership,
                checkpoint.then_some(state),
            )
            .and_then(|()| Self::put_history(&mut batch, &history));
            written(built)?;
            if state.compacted != compacted_before {
                let value = encode(&state.compacted).map_err(codec_err(ErrorVerb::Write));
                batch.insert(KEY_COMPACTED, written(value)?);
            }
            let checkpoint_revision = if checkpoint {
                state.revision
            } else {
                applied.checkpoint
            };
            let drop_to = state.compacted.min(checkpoint_revision);
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
            applied.checkpoint = checkpoint_revision;
            applied.dropped = applied.dropped.max(drop_to);
            let applied_index = applied.last_applied.map_or(0, |l| l.index);
            (results, history, state.revision, applied_index)
        };
        // Watchers get the events before the flush: the entries are committed
        // (durable in a majority's logs), and re-applying them after a crash
        // yields the same events at the same revisions, so nothing a watcher
        // saw can change. This takes an fsync off every delivery.
        self.inner.hub.publish(history, revision);
        self.inner
            .written_applied
            .store(applied_index, Ordering::Release);
        // Durability without a flush here: the replies sent when this returns
        // report entries that are committed, i.e. flushed in a majority's logs,
        // and applying them again after a crash gives the same revisions and
        // events. The applied state on disk may lag behind memory; openraft
        // re-applies the log after it on restart. What makes that safe is that
        // the log is never purged past applied state on disk: openraft purges
        // only behind a snapshot, which is flushed before it is reported, and
        // `LogStore::purge` refuses any purge past the written applied
        // position, flushing first (one sled database: a flush makes every
        // earlier write durable, the log's and the state's alike). The next
        // log append's flush carries this batch to disk anyway. An fsync here
        // was a third one in series per write.
        metrics
            .apply_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(results)
    }
}
