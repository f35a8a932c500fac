//! The state machine and its snapshots in sled.
//!
//! The applied state lives in sled trees per *generation* (`sm.<n>` and its
//! checkpoint's `checkpoint.<n>`); the `meta` tree names the current
//! generation. Applying entries writes into the current generation with one
//! atomic batch (and now and then a checkpoint after it). Installing a
//! snapshot fills a fresh generation, then switches `sm_generation` and the
//! stored snapshot in one transaction, so a crash leaves either the old state
//! or the new one, never a mix, and no key of the old state survives into the
//! new one.
//!
//! The domain state is event-sourced on disk: each apply batch writes the
//! applied position and the events it caused, not the whole state. A full
//! state *checkpoint* is written once as many revisions have passed as the
//! state has entries (at least [`CHECKPOINT_EVERY`](super::CHECKPOINT_EVERY)), so its cost stays O(1)
//! per write however large the state grows; opening replays the events after
//! the checkpoint, never more than the state's own size. Compaction is the
//! one change that is not an event: its revision is stored by itself, and
//! the events after the checkpoint stay on disk (unserved) until the next
//! checkpoint even when compacted. Writing the whole state per batch, or
//! every 10,000 revisions, made writes cost O(state).
//!
//! The event history lives in the same generation tree, one key per revision
//! that caused events (`hist/` + big-endian revision), written in the same batch
//! as the state it led to, and dropped up to the compacted revision by the
//! committed `Compact` command. Snapshots carry the history that is still kept,
//! so a node that installs one can serve watches from the same revisions as the
//! others. What is applied is published to the [`Hub`] once it is durable.
//!
//! This file holds the state machine itself: opening it, its shared state,
//! and openraft's `RaftStateMachine`, which hands applying to `apply.rs` and
//! snapshots to `snapshot.rs`; backups (`backup.rs`) and history reads
//! (`history.rs`) add their own methods. Tree and key names are in
//! [`schema`](super::schema).

use std::io::Cursor;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::RaftStateMachine;
use openraft::{ErrorSubject, ErrorVerb};

use super::metrics::StoreMetrics;
use super::schema::{
    checkpoint_tree_name, generation_tree_name, history_key, CHECKPOINT_PREFIX, GENERATION_PREFIX,
    KEY_APPLIED, KEY_COMPACTED, KEY_GENERATION, KEY_MEMBERSHIP, KEY_REVISION, KEY_SNAPSHOT,
    KEY_STATE, META_TREE, SNAPSHOT_TREE,
};
use super::types::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use super::{decode, encode, io_err};
use crate::domain::{CommandResult, State};
use crate::watch::hub::{Batch, Hub};

/// The state machine. Cheap to clone: clones (the snapshot builder, the API's
/// read handle) share one state.
#[derive(Clone)]
pub struct StateMachineStore {
    pub(super) inner: Arc<Inner>,
}

// Shared with the other files of the store (applying, snapshots, backups,
// history reads), which each add their part of `StateMachineStore`.
pub(super) struct Inner {
    pub(super) db: sled::Db,
    /// The `meta` tree: the current generation.
    pub(super) meta: sled::Tree,
    /// The `snapshot` tree: the stored snapshot.
    pub(super) snapshots: sled::Tree,
    /// Held while the stored snapshot is checked and replaced (see
    /// `store_snapshot`).
    pub(super) snapshot_lock: Mutex<()>,
    pub(super) applied: Mutex<Applied>,
    pub(super) hub: Arc<Hub>,
    pub(super) metrics: StoreMetrics,
}

/// Everything the state machine holds, as of `last_applied`.
pub(super) struct Applied {
    pub(super) generation: u64,
    /// The current generation's tree (`sm.<generation>`).
    pub(super) tree: sled::Tree,
    /// The current generation's checkpoint tree (`checkpoint.<generation>`).
    pub(super) checkpoints: sled::Tree,
    pub(super) last_applied: Option<LogId>,
    pub(super) membership: StoredMembership,
    pub(super) state: State,
    /// The revision of the stored state checkpoint.
    pub(super) checkpoint: u64,
    /// The history on disk is dropped up to this revision (the compacted
    /// revision, but never past the checkpoint: replay needs what follows).
    pub(super) dropped: u64,
}

/// Applying changes the state in memory before its batch is written; a
/// batch that cannot be written leaves memory ahead of disk, which must never
/// be served. A node whose disk refuses writes stops here (as etcd does when
/// its WAL cannot be written); on restart it recovers from what is on disk.
pub(super) fn written<T>(result: Result<T, StorageError>) -> Result<T, StorageError> {
    if let Err(e) = &result {
        tracing::error!("cannot write the applied state ({e}); stopping this node");
        std::process::abort();
    }
    result
}

pub(super) fn sm_err(verb: ErrorVerb) -> impl Fn(sled::Error) -> StorageError {
    move |e| io_err(ErrorSubject::StateMachine, verb, e)
}

pub(super) fn codec_err(verb: ErrorVerb) -> impl Fn(bincode::Error) -> StorageError {
    move |e| io_err(ErrorSubject::StateMachine, verb, *e)
}

impl StateMachineStore {
    pub(super) fn open(db: sled::Db) -> Result<Self, StorageError> {
        let read = sm_err(ErrorVerb::Read);
        let meta = db.open_tree(META_TREE).map_err(&read)?;
        let generation = match meta.get(KEY_GENERATION).map_err(&read)? {
            Some(v) => decode(&v).map_err(codec_err(ErrorVerb::Read))?,
            None => 0,
        };
        let current = generation_tree_name(generation);
        let current_checkpoints = checkpoint_tree_name(generation);
        // A crash during a snapshot install can leave a half-written newer
        // generation, and a crash right after one the old generation: drop both.
        for name in db.tree_names() {
            let is_stale = std::str::from_utf8(&name).is_ok_and(|n| {
                (n.starts_with(GENERATION_PREFIX) && n != current)
                    || (n.starts_with(CHECKPOINT_PREFIX) && n != current_checkpoints)
            });
            if is_stale {
                db.drop_tree(&name).map_err(sm_err(ErrorVerb::Delete))?;
            }
        }
        let tree = db.open_tree(&current).map_err(&read)?;
        let checkpoints = db.open_tree(&current_checkpoints).map_err(&read)?;
        let snapshots = db.open_tree(SNAPSHOT_TREE).map_err(&read)?;
        // Format 4 kept the checkpoint and the snapshot in the shared trees
        // (see `schema`): moved, the copy first, so a crash in between
        // leaves both places holding the same bytes.
        let write = sm_err(ErrorVerb::Write);
        for (from, key, to) in [
            (&tree, KEY_STATE, &checkpoints),
            (&meta, KEY_SNAPSHOT, &snapshots),
        ] {
            if let Some(old) = from.get(key).map_err(&read)? {
                to.insert(key, old).map_err(&write)?;
                from.remove(key).map_err(&write)?;
            }
        }
        let get = |key: &[u8]| tree.get(key).map_err(&read);
        let last_applied = match get(KEY_APPLIED)? {
            Some(v) => decode(&v).map_err(codec_err(ErrorVerb::Read))?,
            None => None,
        };
        let membership = match get(KEY_MEMBERSHIP)? {
            Some(v) => decode(&v).map_err(codec_err(ErrorVerb::Read))?,
            None => StoredMembership::default(),
        };
        let mut state: State = match checkpoints.get(KEY_STATE).map_err(&read)? {
            Some(v) => decode(&v).map_err(codec_err(ErrorVerb::Read))?,
            None => State::default(),
        };
        let checkpoint = state.revision;
        let applied_index = last_applied.map_or(0, |l: LogId| l.index);
        // The revision is stored with the applied position; a data dir of
        // format 4 has none, and there the revision was the log index.
        let revision = match get(KEY_REVISION)? {
            Some(v) => decode(&v).map_err(codec_err(ErrorVerb::Read))?,
            None => applied_index,
        };
        // The checkpoint is written after the applied position it is at (see
        // `apply_entries`), never ahead of it: a state ahead of the applied
        // position would have openraft apply entries to it a second time.
        if state.revision > revision {
            let reason = std::io::Error::other(format!(
                "the state checkpoint is at revision {}, ahead of the applied revision {revision}",
                state.revision
            ));
            return Err(io_err(ErrorSubject::StateMachine, ErrorVerb::Read, reason));
        }
        // Replay the events applied after the checkpoint.
        if revision > state.revision {
            for item in tree.range(history_key(state.revision + 1)..=history_key(u64::MAX)) {
                let (_, value) = item.map_err(&read)?;
                let batch: Batch = decode(&value).map_err(codec_err(ErrorVerb::Read))?;
                state.revision = batch.revision;
                for event in &batch.events {
                    state.apply_event(batch.revision, event);
                }
            }
            state.revision = revision;
        }
        if let Some(v) = get(KEY_COMPACTED)? {
            let compacted: u64 = decode(&v).map_err(codec_err(ErrorVerb::Read))?;
            state.compacted = state.compacted.max(compacted);
        }
        let metrics_err = |e| io_err(ErrorSubject::StateMachine, ErrorVerb::Read, e);
        let hub = Arc::new(Hub::new(state.revision, applied_index).map_err(metrics_err)?);
        let applied = Applied {
            generation,
            tree,
            checkpoints,
            last_applied,
            membership,
            dropped: state.compacted.min(checkpoint),
            state,
            checkpoint,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                meta,
                snapshots,
                snapshot_lock: Mutex::new(()),
                applied: Mutex::new(applied),
                hub,
                metrics: StoreMetrics::new().map_err(metrics_err)?,
            }),
        })
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Applied> {
        // A panic while holding the lock cannot leave `Applied` half-updated in a
        // way the disk disagrees with: the disk is written first, memory after.
        self.inner
            .applied
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn lock_snapshots(&self) -> MutexGuard<'_, ()> {
        self.inner
            .snapshot_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The revision of the last applied entry (0 before the first).
    pub fn revision(&self) -> u64 {
        self.lock().state.revision
    }

    /// Reads the applied state. Keep `f` short: applying waits meanwhile.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.lock().state)
    }

    /// Histograms and counters that applying feeds.
    pub fn metrics(&self) -> &StoreMetrics {
        &self.inner.metrics
    }

    /// Where applied events are published.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.inner.hub
    }

    /// Adds the applied position, revision and membership to `batch`.
    pub(super) fn put_applied(
        batch: &mut sled::Batch,
        last_applied: &Option<LogId>,
        revision: u64,
        membership: &StoredMembership,
    ) -> Result<(), StorageError> {
        let write = codec_err(ErrorVerb::Write);
        batch.insert(KEY_APPLIED, encode(last_applied).map_err(&write)?);
        batch.insert(KEY_REVISION, encode(&revision).map_err(&write)?);
        batch.insert(KEY_MEMBERSHIP, encode(membership).map_err(&write)?);
        Ok(())
    }

    /// Writes `state` as the checkpoint in `checkpoints`, a generation's
    /// checkpoint tree.
    pub(super) fn put_checkpoint(
        checkpoints: &sled::Tree,
        state: &State,
    ) -> Result<(), StorageError> {
        let bytes = encode(state).map_err(codec_err(ErrorVerb::Write))?;
        checkpoints
            .insert(KEY_STATE, bytes)
            .map_err(sm_err(ErrorVerb::Write))?;
        Ok(())
    }

    pub(super) fn put_history(
        batch: &mut sled::Batch,
        history: &[Batch],
    ) -> Result<(), StorageError> {
        for b in history {
            let value = encode(b).map_err(codec_err(ErrorVerb::Write))?;
            batch.insert(history_key(b.revision), value);
        }
        Ok(())
    }

    /// The kept history in `tree` (after `compacted`), in revision order.
    pub(super) fn read_history(
        tree: &sled::Tree,
        compacted: u64,
    ) -> Result<Vec<Batch>, StorageError> {
        tree.range(history_key(compacted + 1)..=history_key(u64::MAX))
            .map(|item| {
                let (_, value) = item.map_err(sm_err(ErrorVerb::Read))?;
                decode(&value).map_err(codec_err(ErrorVerb::Read))
            })
            .collect()
    }

    pub(super) async fn flush(&self) -> Result<(), StorageError> {
        self.inner
            .db
            .flush_async()
            .await
            .map_err(sm_err(ErrorVerb::Write))?;
        Ok(())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = self.lock();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<CommandResult>>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        self.apply_entries(entries).await
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        self.install(meta, snapshot).await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self.stored_snapshot()?.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
