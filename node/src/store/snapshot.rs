//! Snapshots: building one from the applied state (off the runtime's
//! threads), keeping it in the `snapshot` tree, and installing one received from
//! the leader into a fresh generation (see the [module
//! docs](super::state_machine) for why a generation).

use std::io::Cursor;
use std::time::{Duration, Instant};

use openraft::{ErrorSubject, ErrorVerb, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};

use sled::transaction::{ConflictableTransactionError, Transactional};

use super::schema::{checkpoint_tree_name, generation_tree_name, KEY_GENERATION, KEY_SNAPSHOT};
use super::state_machine::{codec_err, Applied, StateMachineStore};
use super::types::{LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use super::{decode, encode, io_err};
use crate::clock;
use crate::domain::State;
use crate::watch::hub::Batch;

/// What a snapshot carries.
#[derive(Serialize, Deserialize)]
pub(super) struct SnapshotPayload {
    pub(super) last_applied: Option<LogId>,
    pub(super) membership: StoredMembership,
    pub(super) state: State,
    /// The event history after `state.compacted`, in revision order.
    pub(super) history: Vec<Batch>,
}

/// A snapshot as kept on disk: its metadata and its bytes, in one sled value.
#[derive(Serialize, Deserialize)]
pub(super) struct StoredSnapshot {
    pub(super) meta: SnapshotMeta,
    pub(super) data: Vec<u8>,
}

/// The leading field of a [`StoredSnapshot`].
#[derive(Deserialize)]
struct StoredSnapshotHead {
    meta: SnapshotMeta,
}

fn err_codec_snapshot(e: bincode::ErrorKind) -> StorageError {
    io_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e)
}

impl StateMachineStore {
    /// The stored snapshot's metadata, without decoding its data.
    fn stored_snapshot_meta(&self) -> Result<Option<SnapshotMeta>, StorageError> {
        let err = |e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e);
        match self.inner.snapshots.get(KEY_SNAPSHOT).map_err(err)? {
            // `StoredSnapshot` starts with its metadata; bincode reads that
            // prefix and leaves the data alone.
            Some(v) => Ok(Some(
                decode::<StoredSnapshotHead>(&v)
                    .map_err(|e| err_codec_snapshot(*e))?
                    .meta,
            )),
            None => Ok(None),
        }
    }

    pub(super) fn stored_snapshot(&self) -> Result<Option<StoredSnapshot>, StorageError> {
        let err = |e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e);
        match self.inner.snapshots.get(KEY_SNAPSHOT).map_err(err)? {
            Some(v) => Ok(Some(decode(&v).map_err(|e| err_codec_snapshot(*e))?)),
            None => Ok(None),
        }
    }

    /// A copy of the applied state with its kept history (under the state
    /// lock, which applying waits for).
    pub(super) fn payload(&self) -> Result<SnapshotPayload, StorageError> {
        let applied = self.lock();
        Ok(SnapshotPayload {
            last_applied: applied.last_applied,
            membership: applied.membership.clone(),
            state: applied.state.clone(),
            history: Self::read_history(&applied.tree, applied.state.compacted)?,
        })
    }

    /// Copies the applied state, encodes it and stores it as the current
    /// snapshot (not yet flushed); returns it and how long applying waited.
    fn store_snapshot(&self) -> Result<(SnapshotMeta, Vec<u8>, Duration), StorageError> {
        let started = Instant::now();
        // Applying waits only while the state is copied, not while it is
        // encoded or stored.
        let payload = self.payload()?;
        let blocked_apply = started.elapsed();
        let data = encode(&payload).map_err(codec_err(ErrorVerb::Write))?;
        let nanos = clock::now_nanos();
        let last = payload.last_applied;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: payload.membership,
            snapshot_id: format!(
                "{}-{}-{nanos:x}",
                last.map_or(0, |l| l.leader_id.term),
                last.map_or(0, |l| l.index)
            ),
        };
        let stored = StoredSnapshot { meta, data };
        let bytes = encode(&stored).map_err(codec_err(ErrorVerb::Write))?;
        {
            // Checked and stored under the snapshot lock: a snapshot
            // installed from the leader meanwhile (which switches under the
            // same lock) is never replaced by this older one. Not the state
            // lock: storing a large snapshot writes a file, and applying
            // need not wait for that.
            let snapshots = self.lock_snapshots();
            let stored_is_newer = self
                .stored_snapshot_meta()?
                .is_some_and(|s| s.last_log_id > stored.meta.last_log_id);
            if !stored_is_newer {
                self.inner
                    .snapshots
                    .insert(KEY_SNAPSHOT, bytes)
                    .map_err(|e| {
                        io_err(
                            ErrorSubject::Snapshot(Some(stored.meta.signature())),
                            ErrorVerb::Write,
                            e,
                        )
                    })?;
            }
            drop(snapshots);
        }
        let StoredSnapshot { meta, data } = stored;
        Ok((meta, data, blocked_apply))
    }

    /// Installs a snapshot: see [`RaftStateMachine::install_snapshot`],
    /// which calls this.
    pub(super) async fn install(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let signature = Some(meta.signature());
        let snap_err = |verb| {
            let signature = signature.clone();
            move |e: sled::Error| io_err(ErrorSubject::Snapshot(signature.clone()), verb, e)
        };
        let data = snapshot.into_inner();
        let payload: SnapshotPayload = decode(&data).map_err(|e| {
            StorageError::from(StorageIOError::read_snapshot(signature.clone(), &*e))
        })?;
        if payload.last_applied != meta.last_log_id {
            let reason = std::io::Error::other(format!(
                "snapshot data is at {:?} but its metadata says {:?}",
                payload.last_applied, meta.last_log_id
            ));
            return Err(StorageIOError::read_snapshot(signature, &reason).into());
        }

        // 1. Fill a fresh generation and make it durable.
        let (old_generation, new_generation) = {
            let applied = self.lock();
            (applied.generation, applied.generation + 1)
        };
        let open_fresh = |name: String| {
            let tree = self
                .inner
                .db
                .open_tree(name)
                .map_err(snap_err(ErrorVerb::Write))?;
            tree.clear().map_err(snap_err(ErrorVerb::Write))?;
            Ok::<_, StorageError>(tree)
        };
        let tree = open_fresh(generation_tree_name(new_generation))?;
        let checkpoints = open_fresh(checkpoint_tree_name(new_generation))?;
        let mut batch = sled::Batch::default();
        Self::put_applied(
            &mut batch,
            &meta.last_log_id,
            payload.state.revision,
            &meta.last_membership,
        )?;
        Self::put_history(&mut batch, &payload.history)?;
        tree.apply_batch(batch)
            .map_err(snap_err(ErrorVerb::Write))?;
        Self::put_checkpoint(&checkpoints, &payload.state)?;
        self.flush().await?;

        // 2. Switch to it and record the snapshot in one atomic step.
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        let generation = encode(&new_generation).map_err(codec_err(ErrorVerb::Write))?;
        let snapshot = encode(&stored).map_err(codec_err(ErrorVerb::Write))?;
        {
            // Two trees (see `schema` for why the snapshot has its own), one
            // atomic step: a sled transaction.
            let _applied = self.lock();
            let _snapshots = self.lock_snapshots();
            (&self.inner.meta, &self.inner.snapshots)
                .transaction(|(meta, snapshots)| {
                    meta.insert(KEY_GENERATION, generation.as_slice())?;
                    snapshots.insert(KEY_SNAPSHOT, snapshot.as_slice())?;
                    Ok::<(), ConflictableTransactionError<()>>(())
                })
                .map_err(|e| {
                    let reason = std::io::Error::other(format!("{e:?}"));
                    io_err(
                        ErrorSubject::Snapshot(signature.clone()),
                        ErrorVerb::Write,
                        reason,
                    )
                })?;
        }
        // Durability: openraft deletes the log that this snapshot replaces once we
        // return, so the switch must be on disk first.
        self.flush().await?;

        let (compacted, revision) = (payload.state.compacted, payload.state.revision);
        let index = meta.last_log_id.map_or(0, |l| l.index);
        {
            let mut applied = self.lock();
            *applied = Applied {
                generation: new_generation,
                tree,
                checkpoints,
                last_applied: meta.last_log_id,
                membership: meta.last_membership.clone(),
                checkpoint: payload.state.revision,
                dropped: payload.state.compacted,
                state: payload.state,
            };
        }
        // Watchers continue across the jump when the snapshot's history reaches
        // back to what they have; otherwise they must re-list.
        let hub = &self.inner.hub;
        let published = hub.published();
        if compacted <= published {
            let newer = payload
                .history
                .into_iter()
                .filter(|b| b.revision > published);
            hub.publish(newer, revision, index);
        } else {
            hub.skip_to(compacted, revision, index);
        }
        // 3. Drop the old generation; if we crash first, `open` drops it.
        for name in [
            generation_tree_name(old_generation),
            checkpoint_tree_name(old_generation),
        ] {
            self.inner
                .db
                .drop_tree(name)
                .map_err(snap_err(ErrorVerb::Delete))?;
        }
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let started = Instant::now();
        // Copying, encoding and storing a large state takes seconds of CPU:
        // on a runtime thread that would hold up Raft's heartbeats long
        // enough for the followers to elect another leader.
        let this = self.clone();
        let (meta, data, blocked_apply) =
            tokio::task::spawn_blocking(move || this.store_snapshot())
                .await
                .map_err(|e| {
                    io_err(
                        ErrorSubject::Snapshot(None),
                        ErrorVerb::Write,
                        std::io::Error::other(format!("the snapshot build failed: {e}")),
                    )
                })??;
        // Durability: openraft purges the log behind a snapshot once this returns,
        // so the snapshot must be on disk first.
        self.flush().await?;
        let metrics = &self.inner.metrics;
        metrics
            .snapshot_bytes
            .set(i64::try_from(data.len()).unwrap_or(i64::MAX));
        metrics
            .snapshot_build_seconds
            .set(started.elapsed().as_secs_f64());
        metrics
            .snapshot_blocked_apply_seconds
            .set(blocked_apply.as_secs_f64());
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}
