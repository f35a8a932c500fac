//! The state machine and its snapshots in sled.
//!
//! The applied state lives in one sled tree per *generation* (`sm.<n>`); the
//! `meta` tree names the current generation. Applying entries writes into the
//! current generation with one atomic batch. Installing a snapshot fills a fresh
//! generation, then switches `sm_generation` and the stored snapshot in one atomic
//! batch, so a crash leaves either the old state or the new one, never a mix, and
//! no key of the old state survives into the new one.
//!
//! The domain state is event-sourced on disk: each apply batch writes the
//! applied position and the events it caused, not the whole state. A full
//! state *checkpoint* is written once as many revisions have passed as the
//! state has entries (at least [`CHECKPOINT_EVERY`]), so its cost stays O(1)
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

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, CommittedLeaderId, EntryPayload, ErrorSubject, ErrorVerb, Membership,
    RaftSnapshotBuilder, StorageIOError,
};
use serde::{Deserialize, Serialize};

use super::backup::{self, Backup, BackupError};
use super::{decode, encode, io_err, META_TREE};
use crate::api::leader::now_ms;
use crate::domain::{Change, Command, CommandResult, LeaveReason, Slot, State};
use crate::raft::{
    Entry, LogId, NodeId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use crate::watch::{Batch, Hub};

mod history;

const KEY_GENERATION: &[u8] = b"sm_generation";
const KEY_SNAPSHOT: &[u8] = b"snapshot";
const KEY_APPLIED: &[u8] = b"applied";
const KEY_MEMBERSHIP: &[u8] = b"membership";
const KEY_STATE: &[u8] = b"state";
const KEY_COMPACTED: &[u8] = b"compacted";
const GENERATION_PREFIX: &str = "sm.";
const HISTORY_PREFIX: &[u8] = b"hist/";
/// Revisions between two state checkpoints at least (more for a state with
/// more entries than this).
pub const CHECKPOINT_EVERY: u64 = 10_000;

fn history_key(revision: u64) -> Vec<u8> {
    let mut key = HISTORY_PREFIX.to_vec();
    key.extend_from_slice(&revision.to_be_bytes());
    key
}

/// The state machine. Cheap to clone: clones (the snapshot builder, the API's
/// read handle) share one state.
#[derive(Clone)]
pub struct StateMachineStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    meta: sled::Tree,
    applied: Mutex<Applied>,
    hub: Arc<Hub>,
    last_snapshot: Mutex<Option<SnapshotStats>>,
    metrics: StoreMetrics,
}

/// What applying observes, for `/metrics` (registered there).
#[derive(Clone)]
pub struct StoreMetrics {
    /// Time to apply one batch of entries, until it is durable.
    pub apply_seconds: prometheus::Histogram,
    /// Graceful handoffs: from the owner being asked to release partitions
    /// to its release being applied (this node's clock against the leader's).
    pub handoff_seconds: prometheus::Histogram,
    /// Sessions ended because their lease ran out.
    pub lease_expiries: prometheus::IntCounter,
    /// From an event being applied (and published) on this node to a watch
    /// stream taking it; live events only, not those read from the history.
    pub delivery_lag_seconds: prometheus::Histogram,
}

impl StoreMetrics {
    fn new() -> Result<Self, prometheus::Error> {
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            prometheus::Histogram::with_opts(
                prometheus::HistogramOpts::new(name, help).buckets(buckets),
            )
        };
        Ok(Self {
            apply_seconds: histogram(
                "baton_apply_seconds",
                "Time to apply one batch of committed entries, until it is durable.",
                prometheus::exponential_buckets(0.0001, 4.0, 9)?,
            )?,
            handoff_seconds: histogram(
                "baton_handoff_seconds",
                "Graceful handoffs: from the owner being asked to release partitions to the release being applied.",
                vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0],
            )?,
            lease_expiries: prometheus::IntCounter::new(
                "baton_lease_expiries_total",
                "Worker sessions ended because their lease ran out.",
            )?,
            delivery_lag_seconds: histogram(
                "baton_watch_delivery_lag_seconds",
                "Event delivery lag: from an event being applied on this node to a watch stream taking it (live events, not history catch-up).",
                prometheus::exponential_buckets(0.0001, 4.0, 9)?,
            )?,
        })
    }
}

/// When the handoff that `command` completes began (leader time, ms), if it
/// releases partitions that were being revoked.
fn handoff_started(state: &State, command: &Command) -> Option<u64> {
    state.handoff_started(command)
}

/// What the last snapshot this node built cost (for `/metrics`).
#[derive(Clone, Copy, Debug)]
pub struct SnapshotStats {
    /// Last log index it covers.
    pub index: u64,
    pub bytes: u64,
    /// From the start of the build to the snapshot being on disk.
    pub took: Duration,
    /// How long applying waited for it (the state lock's hold).
    pub blocked_apply: Duration,
}

/// Everything the state machine holds, as of `last_applied`.
struct Applied {
    generation: u64,
    tree: sled::Tree,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    state: State,
    /// The revision of the stored state checkpoint.
    checkpoint: u64,
    /// The history on disk is dropped up to this revision (the compacted
    /// revision, but never past the checkpoint: replay needs what follows).
    dropped: u64,
}

/// What a snapshot carries.
#[derive(Serialize, Deserialize)]
struct SnapshotPayload {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    state: State,
    /// The event history after `state.compacted`, in revision order.
    history: Vec<Batch>,
}

/// A snapshot as kept on disk: its metadata and its bytes, in one sled value.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// The leading field of a [`StoredSnapshot`].
#[derive(Deserialize)]
struct StoredSnapshotHead {
    meta: SnapshotMeta,
}

/// Applying changes the state in memory before its batch is written; a
/// batch that cannot be written leaves memory ahead of disk, which must never
/// be served. A node whose disk refuses writes stops here (as etcd does when
/// its WAL cannot be written); on restart it recovers from what is on disk.
fn written<T>(result: Result<T, StorageError>) -> Result<T, StorageError> {
    if let Err(e) = &result {
        tracing::error!("cannot write the applied state ({e}); stopping this node");
        std::process::abort();
    }
    result
}

fn generation_tree_name(generation: u64) -> String {
    format!("{GENERATION_PREFIX}{generation}")
}

fn sm_err(verb: ErrorVerb) -> impl Fn(sled::Error) -> StorageError {
    move |e| io_err(ErrorSubject::StateMachine, verb, e)
}

fn codec_err(verb: ErrorVerb) -> impl Fn(bincode::Error) -> StorageError {
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
        // A crash during a snapshot install can leave a half-written newer
        // generation, and a crash right after one the old generation: drop both.
        for name in db.tree_names() {
            let is_stale = std::str::from_utf8(&name)
                .is_ok_and(|n| n.starts_with(GENERATION_PREFIX) && n != current);
            if is_stale {
                db.drop_tree(&name).map_err(sm_err(ErrorVerb::Delete))?;
            }
        }
        let tree = db.open_tree(&current).map_err(&read)?;
        let get = |key: &[u8]| tree.get(key).map_err(&read);
        let last_applied = match get(KEY_APPLIED)? {
            Some(v) => decode(&v).map_err(codec_err(ErrorVerb::Read))?,
            None => None,
        };
        let membership = match get(KEY_MEMBERSHIP)? {
            Some(v) => decode(&v).map_err(codec_err(ErrorVerb::Read))?,
            None => StoredMembership::default(),
        };
        let mut state: State = match get(KEY_STATE)? {
            Some(v) => decode(&v).map_err(codec_err(ErrorVerb::Read))?,
            None => State::default(),
        };
        let checkpoint = state.revision;
        // Replay the events applied after the checkpoint.
        let applied_index = last_applied.map_or(0, |l: LogId| l.index);
        if applied_index > state.revision {
            for item in tree.range(history_key(state.revision + 1)..=history_key(u64::MAX)) {
                let (_, value) = item.map_err(&read)?;
                let batch: Batch = decode(&value).map_err(codec_err(ErrorVerb::Read))?;
                state.revision = batch.revision;
                for event in &batch.events {
                    state.apply_event(batch.revision, event);
                }
            }
            state.revision = applied_index;
        }
        if let Some(v) = get(KEY_COMPACTED)? {
            let compacted: u64 = decode(&v).map_err(codec_err(ErrorVerb::Read))?;
            state.compacted = state.compacted.max(compacted);
        }
        let hub = Arc::new(Hub::new(state.revision));
        let applied = Applied {
            generation,
            tree,
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
                applied: Mutex::new(applied),
                hub,
                last_snapshot: Mutex::new(None),
                metrics: StoreMetrics::new()
                    .map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Read, e))?,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Applied> {
        // A panic while holding the lock cannot leave `Applied` half-updated in a
        // way the disk disagrees with: the disk is written first, memory after.
        self.inner
            .applied
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

    /// What the last snapshot built here cost, if one was.
    pub fn last_snapshot(&self) -> Option<SnapshotStats> {
        *self
            .inner
            .last_snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Where applied events are published.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.inner.hub
    }

    /// Adds the applied position and membership to `batch`, and a state
    /// checkpoint when `checkpoint` says so.
    fn put_applied(
        batch: &mut sled::Batch,
        last_applied: &Option<LogId>,
        membership: &StoredMembership,
        checkpoint: Option<&State>,
    ) -> Result<(), StorageError> {
        let write = codec_err(ErrorVerb::Write);
        batch.insert(KEY_APPLIED, encode(last_applied).map_err(&write)?);
        batch.insert(KEY_MEMBERSHIP, encode(membership).map_err(&write)?);
        if let Some(state) = checkpoint {
            batch.insert(KEY_STATE, encode(state).map_err(&write)?);
        }
        Ok(())
    }

    fn put_history(batch: &mut sled::Batch, history: &[Batch]) -> Result<(), StorageError> {
        for b in history {
            let value = encode(b).map_err(codec_err(ErrorVerb::Write))?;
            batch.insert(history_key(b.revision), value);
        }
        Ok(())
    }

    /// The kept history in `tree` (after `compacted`), in revision order.
    fn read_history(tree: &sled::Tree, compacted: u64) -> Result<Vec<Batch>, StorageError> {
        tree.range(history_key(compacted + 1)..=history_key(u64::MAX))
            .map(|item| {
                let (_, value) = item.map_err(sm_err(ErrorVerb::Read))?;
                decode(&value).map_err(codec_err(ErrorVerb::Read))
            })
            .collect()
    }

    async fn flush(&self) -> Result<(), StorageError> {
        self.inner
            .db
            .flush_async()
            .await
            .map_err(sm_err(ErrorVerb::Write))?;
        Ok(())
    }

    /// The stored snapshot's metadata, without decoding its data.
    fn stored_snapshot_meta(&self) -> Result<Option<SnapshotMeta>, StorageError> {
        let err = |e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e);
        match self.inner.meta.get(KEY_SNAPSHOT).map_err(err)? {
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

    fn stored_snapshot(&self) -> Result<Option<StoredSnapshot>, StorageError> {
        let err = |e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e);
        match self.inner.meta.get(KEY_SNAPSHOT).map_err(err)? {
            Some(v) => Ok(Some(decode(&v).map_err(|e| err_codec_snapshot(*e))?)),
            None => Ok(None),
        }
    }
}

fn err_codec_snapshot(e: bincode::ErrorKind) -> StorageError {
    io_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e)
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
        *self
            .inner
            .last_snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(SnapshotStats {
            index: meta.last_log_id.map_or(0, |l| l.index),
            bytes: data.len() as u64,
            took: started.elapsed(),
            blocked_apply,
        });
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl StateMachineStore {
    /// A copy of the applied state with its kept history (under the state
    /// lock, which applying waits for).
    fn payload(&self) -> Result<SnapshotPayload, StorageError> {
        let applied = self.lock();
        Ok(SnapshotPayload {
            last_applied: applied.last_applied,
            membership: applied.membership.clone(),
            state: applied.state.clone(),
            history: Self::read_history(&applied.tree, applied.state.compacted)?,
        })
    }

    /// The applied state as a backup file. Blocks for as long as encoding
    /// takes: call it off the runtime's threads.
    pub fn export_backup(&self) -> Result<Backup, StorageError> {
        let payload = self.payload()?;
        let data = encode(&payload).map_err(codec_err(ErrorVerb::Read))?;
        Ok(Backup {
            revision: payload.state.revision,
            bytes: backup::frame(&data),
        })
    }

    /// Makes a backup file the state of this (empty) store, as a snapshot
    /// whose membership is `members`, all voters, at the backup's revision
    /// plus `bump`, with the history up to there compacted. The cluster the
    /// backup came from may have gone on past it: the jump keeps every later
    /// revision and fencing token above the ones it handed out (if it wrote
    /// fewer than `bump` entries after the backup), and a watch from that
    /// lost range gets COMPACTED instead of unrelated events. The state's
    /// own revisions (config revisions, sessions, tokens, tombstones) are the
    /// backup's, all below the jump. The revision is the snapshot's log
    /// index, so every member must restore with the same `bump`; its log id
    /// has term 0, which any election after the restore is above.
    pub async fn restore_backup(
        &mut self,
        file: &[u8],
        members: BTreeMap<NodeId, BasicNode>,
        bump: u64,
    ) -> Result<backup::Restored, BackupError> {
        let payload: SnapshotPayload =
            decode(backup::unframe(file)?).map_err(|e| BackupError::Decode(e.to_string()))?;
        let backup_revision = payload.last_applied.map_or(0, |l| l.index);
        if backup_revision != payload.state.revision {
            return Err(BackupError::Inconsistent {
                revision: backup_revision,
                state: payload.state.revision,
            });
        }
        let revision = backup_revision.checked_add(bump).ok_or(BackupError::Bump {
            revision: backup_revision,
            bump,
        })?;
        let log_id = LogId::new(CommittedLeaderId::new(0, 0), revision);
        let voters: BTreeSet<NodeId> = members.keys().copied().collect();
        let membership =
            StoredMembership::new(Some(log_id), Membership::new(vec![voters], members));
        let mut state = State {
            revision,
            compacted: revision,
            ..payload.state
        };
        // The lost cluster may have moved a partition after the backup and
        // handed its new owner a token above the backup's: the owner the
        // backup names must not come back with its older, smaller token,
        // which every sink that saw the newer one refuses. Every held
        // partition is granted anew at the restored revision (as a split
        // does); watchers re-list after the compaction and learn the tokens.
        for g in state.groups.values_mut() {
            let held = g.assignment.find(|s| s.owner.is_some());
            g.assignment.update_ranges(&held, |s| Slot {
                token: revision,
                ..s.clone()
            });
        }
        let restored = SnapshotPayload {
            last_applied: Some(log_id),
            membership: membership.clone(),
            state,
            history: Vec::new(),
        };
        let meta = SnapshotMeta {
            last_log_id: Some(log_id),
            last_membership: membership,
            snapshot_id: format!("restored-{backup_revision}-at-{revision}"),
        };
        let data = encode(&restored).map_err(|e| BackupError::Decode(e.to_string()))?;
        self.install_snapshot(&meta, Box::new(Cursor::new(data)))
            .await?;
        Ok(backup::Restored {
            backup_revision,
            revision,
        })
    }

    /// Copies the applied state, encodes it and stores it as the current
    /// snapshot (not yet flushed); returns it and how long applying waited.
    fn store_snapshot(&self) -> Result<(SnapshotMeta, Vec<u8>, Duration), StorageError> {
        let started = Instant::now();
        // Applying waits only while the state is copied and while the
        // snapshot is stored, not while it is encoded.
        let payload = self.payload()?;
        let mut blocked_apply = started.elapsed();
        let data = encode(&payload).map_err(codec_err(ErrorVerb::Write))?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
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
            // Checked and stored under the state lock: a snapshot installed
            // from the leader meanwhile (which switches under the same lock)
            // is never replaced by this older one.
            let storing = Instant::now();
            let applied = self.lock();
            let stored_is_newer = self
                .stored_snapshot_meta()?
                .is_some_and(|s| s.last_log_id > stored.meta.last_log_id);
            if !stored_is_newer {
                self.inner.meta.insert(KEY_SNAPSHOT, bytes).map_err(|e| {
                    io_err(
                        ErrorSubject::Snapshot(Some(stored.meta.signature())),
                        ErrorVerb::Write,
                        e,
                    )
                })?;
            }
            drop(applied);
            blocked_apply += storing.elapsed();
        }
        let StoredSnapshot { meta, data } = stored;
        Ok((meta, data, blocked_apply))
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = self.lock();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let started = Instant::now();
        let metrics = &self.inner.metrics;
        let (results, history, revision) = {
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
                        let since = handoff_started(&applied.state, &proposal.command);
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
            (results, history, state.revision)
        };
        // Watchers get the events before the flush: the entries are committed
        // (durable in a majority's logs), and re-applying them after a crash
        // yields the same events at the same revisions, so nothing a watcher
        // saw can change. This takes an fsync off every delivery.
        self.inner.hub.publish(history, revision);
        // Durability: the replies to these entries' proposers are sent when this
        // returns, and they report the applied state, so it is flushed first.
        self.flush().await?;
        metrics
            .apply_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(results)
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
        let name = generation_tree_name(new_generation);
        let tree = self
            .inner
            .db
            .open_tree(&name)
            .map_err(snap_err(ErrorVerb::Write))?;
        tree.clear().map_err(snap_err(ErrorVerb::Write))?;
        let mut batch = sled::Batch::default();
        Self::put_applied(
            &mut batch,
            &meta.last_log_id,
            &meta.last_membership,
            Some(&payload.state),
        )?;
        Self::put_history(&mut batch, &payload.history)?;
        tree.apply_batch(batch)
            .map_err(snap_err(ErrorVerb::Write))?;
        self.flush().await?;

        // 2. Switch to it and record the snapshot in one atomic step.
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        let mut switch = sled::Batch::default();
        switch.insert(
            KEY_GENERATION,
            encode(&new_generation).map_err(codec_err(ErrorVerb::Write))?,
        );
        switch.insert(
            KEY_SNAPSHOT,
            encode(&stored).map_err(codec_err(ErrorVerb::Write))?,
        );
        {
            let _applied = self.lock();
            self.inner
                .meta
                .apply_batch(switch)
                .map_err(snap_err(ErrorVerb::Write))?;
        }
        // Durability: openraft deletes the log that this snapshot replaces once we
        // return, so the switch must be on disk first.
        self.flush().await?;

        let (compacted, revision) = (payload.state.compacted, payload.state.revision);
        {
            let mut applied = self.lock();
            *applied = Applied {
                generation: new_generation,
                tree,
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
            hub.publish(newer, revision);
        } else {
            hub.skip_to(compacted, revision);
        }
        // 3. Drop the old generation; if we crash first, `open` drops it.
        self.inner
            .db
            .drop_tree(generation_tree_name(old_generation))
            .map_err(snap_err(ErrorVerb::Delete))?;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self.stored_snapshot()?.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
