//! The Raft log and vote in sled.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, LogState, RaftLogReader, Vote};
use prometheus::Histogram;

use super::schema::{
    log_index as index_of, log_key as key, KEY_COMMITTED, KEY_LAST_PURGED, KEY_VOTE, LOG_TREE,
    META_TREE,
};
use super::types::{Entry, LogId, NodeId, StorageError, TypeConfig};
use super::{decode, encode, io_err};
use crate::watch::hub::Hub;

/// The Raft log (one sled key per entry, big-endian index) and the vote. Cheap to
/// clone: clones share the same trees.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    /// The commit index openraft last reported, for `/metrics` and `/readyz`.
    committed: AtomicU64,
    /// The first index not purged. Purged entries are deleted a few at a
    /// time with later appends (see `purge`); reads never return them.
    readable_from: AtomicU64,
    /// Every entry below this index is deleted from disk: appends scan for
    /// purged entries only while this is below `readable_from`.
    deleted_below: AtomicU64,
    /// Entries per append (the store's `baton_log_append_entries`).
    append_entries: Histogram,
    /// Where the state machine publishes the log index it has applied and
    /// written to this same sled database (see `purge`).
    hub: Arc<Hub>,
}

/// How long a purge waits for the state machine to have written the applied
/// state it purges up to (a snapshot being installed) before it fails.
const PURGE_WAITS_FOR_APPLY: Duration = Duration::from_secs(120);

/// Purged entries deleted with each append, at most (or twice the entries
/// appended, if more).
const DELETE_PER_APPEND: usize = 256;

impl LogStore {
    pub(super) fn open(
        db: sled::Db,
        append_entries: Histogram,
        hub: Arc<Hub>,
    ) -> Result<Self, StorageError> {
        let err = |e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e);
        let log = db.open_tree(LOG_TREE).map_err(err)?;
        let meta = db.open_tree(META_TREE).map_err(err)?;
        let store = Self {
            inner: Arc::new(Inner {
                db,
                log,
                meta,
                committed: AtomicU64::new(0),
                readable_from: AtomicU64::new(0),
                deleted_below: AtomicU64::new(0),
                append_entries,
                hub,
            }),
        };
        // Entries behind `last_purged` that are still there (appends delete
        // them gradually, and a crash can come first) go now.
        if let Some(purged) = store.last_purged()? {
            store.remove_range(..=purged.index)?;
            store
                .inner
                .readable_from
                .store(purged.index + 1, Ordering::Relaxed);
            store
                .inner
                .deleted_below
                .store(purged.index + 1, Ordering::Relaxed);
        }
        if let Some(c) = store.read_committed_sync()? {
            store.inner.committed.store(c.index, Ordering::Relaxed);
        }
        Ok(store)
    }

    /// The highest log index openraft has reported as committed (0 if none).
    pub fn committed_index(&self) -> u64 {
        self.inner.committed.load(Ordering::Relaxed)
    }

    pub(super) async fn flush_and_close(self) -> Result<(), StorageError> {
        self.flush(ErrorSubject::Store).await
    }

    fn last_purged(&self) -> Result<Option<LogId>, StorageError> {
        self.read_meta(KEY_LAST_PURGED, ErrorSubject::Logs)
    }

    fn read_committed_sync(&self) -> Result<Option<LogId>, StorageError> {
        self.read_meta(KEY_COMMITTED, ErrorSubject::Store)
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
        subject: ErrorSubject<NodeId>,
    ) -> Result<Option<T>, StorageError> {
        let stored = self.inner.meta.get(key);
        match stored.map_err(|e| io_err(subject.clone(), ErrorVerb::Read, e))? {
            Some(bytes) => {
                Ok(Some(decode(&bytes).map_err(|e| {
                    io_err(subject.clone(), ErrorVerb::Read, *e)
                })?))
            }
            None => Ok(None),
        }
    }

    fn write_meta<T: serde::Serialize>(
        &self,
        key: &[u8],
        value: &T,
        subject: ErrorSubject<NodeId>,
    ) -> Result<(), StorageError> {
        let bytes = encode(value).map_err(|e| io_err(subject.clone(), ErrorVerb::Write, *e))?;
        self.inner
            .meta
            .insert(key, bytes)
            .map_err(|e| io_err(subject, ErrorVerb::Write, e))?;
        Ok(())
    }

    async fn flush(&self, subject: ErrorSubject<NodeId>) -> Result<(), StorageError> {
        self.inner
            .db
            .flush_async()
            .await
            .map_err(|e| io_err(subject, ErrorVerb::Write, e))?;
        Ok(())
    }

    fn remove_range(&self, range: impl RangeBounds<u64>) -> Result<(), StorageError> {
        let err = |e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e);
        let mut batch = sled::Batch::default();
        for item in self.inner.log.range(key_range(range)) {
            let (k, _) = item.map_err(err)?;
            batch.remove(k);
        }
        self.inner.log.apply_batch(batch).map_err(err)
    }
}

fn key_range(range: impl RangeBounds<u64>) -> (Bound<[u8; 8]>, Bound<[u8; 8]>) {
    let map = |b: Bound<&u64>| match b {
        Bound::Included(i) => Bound::Included(key(*i)),
        Bound::Excluded(i) => Bound::Excluded(key(*i)),
        Bound::Unbounded => Bound::Unbounded,
    };
    (map(range.start_bound()), map(range.end_bound()))
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let err = |e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e);
        let mut entries = Vec::new();
        let readable_from = self.inner.readable_from.load(Ordering::Relaxed);
        for item in self.inner.log.range(key_range(range)) {
            let (k, v) = item.map_err(err)?;
            if index_of(&k).is_some_and(|i| i < readable_from) {
                continue;
            }
            let entry: Entry = decode(&v).map_err(|e| {
                let index = index_of(&k).unwrap_or_default();
                StorageError::from(openraft::StorageIOError::read_log_at_index(index, &*e))
            })?;
            entries.push(entry);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.last_purged()?;
        let last_in_log = match self
            .inner
            .log
            .last()
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?
        {
            Some((_, v)) => {
                let entry: Entry =
                    decode(&v).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, *e))?;
                Some(entry.log_id)
            }
            None => None,
        };
        let last_log_id = std::cmp::max(last_in_log, last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.write_meta(KEY_VOTE, vote, ErrorSubject::Vote)?;
        // Durability: a vote must survive a crash before we answer the candidate,
        // or we could vote twice in one term.
        self.flush(ErrorSubject::Vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.read_meta(KEY_VOTE, ErrorSubject::Vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not flushed: the commit index is a hint that speeds up re-applying after
        // a restart; losing it costs nothing but that.
        match committed {
            Some(c) => self.write_meta(KEY_COMMITTED, &c, ErrorSubject::Store)?,
            None => {
                self.inner
                    .meta
                    .remove(KEY_COMMITTED)
                    .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Delete, e))?;
            }
        }
        self.inner
            .committed
            .store(committed.map_or(0, |c| c.index), Ordering::Relaxed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.read_committed_sync()
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut batch = sled::Batch::default();
        let mut appended = 0usize;
        for entry in entries {
            let bytes = encode(&entry).map_err(|e| {
                StorageError::from(openraft::StorageIOError::write_log_entry(entry.log_id, &*e))
            })?;
            batch.insert(&key(entry.log_id.index), bytes);
            appended += 1;
        }
        // Purged entries go with the appends (see `purge`), while some are
        // left: at least twice as many as this append adds, so deleting
        // keeps ahead of the log however large the leader's batches grow.
        let readable_from = self.inner.readable_from.load(Ordering::Relaxed);
        let mut all_deleted = false;
        if self.inner.deleted_below.load(Ordering::Relaxed) < readable_from {
            let at_most = DELETE_PER_APPEND.max(2 * appended);
            let mut deleting = 0;
            for item in self.inner.log.range(..key(readable_from)).take(at_most) {
                let (k, _) = item.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                batch.remove(k);
                deleting += 1;
            }
            all_deleted = deleting < at_most;
        }
        self.inner.append_entries.observe(appended as f64);
        self.inner
            .log
            .apply_batch(batch)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        if all_deleted {
            self.inner
                .deleted_below
                .fetch_max(readable_from, Ordering::Relaxed);
        }
        // Durability: openraft counts an entry towards the commit quorum once the
        // callback fires, so it fires only after sled's flush has completed.
        let flushed = self.inner.db.flush_async().await;
        match flushed {
            Ok(_) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let message = e.to_string();
                callback.log_io_completed(Err(std::io::Error::other(message)));
                Err(io_err(ErrorSubject::Logs, ErrorVerb::Write, e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.remove_range(log_id.index..)?;
        // Durability: conflicting entries must not reappear after a crash and be
        // counted as ours once we have accepted the leader's log in their place.
        self.flush(ErrorSubject::Logs).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Durability: applying does not flush (see `apply_entries`), so the log
        // is what rebuilds the applied state after a crash; it must never be
        // purged past the applied state on disk. The state machine shares this
        // sled database, so the flush below makes everything written before it
        // durable, including the applied state waited for here.
        //
        // Waited for, not refused: a follower that installs a snapshot is told
        // to purge up to it as soon as the install is handed to the state
        // machine, before it is written. The install needs nothing from the
        // Raft core that waits here, so it finishes, and only then may the log
        // behind it go (a crash in between would leave a log that starts after
        // an applied state that is not on disk).
        let hub = &self.inner.hub;
        let caught_up =
            tokio::time::timeout(PURGE_WAITS_FOR_APPLY, hub.wait_for_index(log_id.index));
        if !matches!(caught_up.await, Ok(Ok(_))) {
            let applied = hub.applied().index;
            let reason = std::io::Error::other(format!(
                "refusing to purge the log up to {log_id}: the applied state is at index {applied} after {PURGE_WAITS_FOR_APPLY:?}, and the entries after it are all that would rebuild it after a crash"
            ));
            return Err(io_err(ErrorSubject::Logs, ErrorVerb::Delete, reason));
        }
        // Durability: `last_purged` is persisted before any entry is deleted, so
        // after a crash the log never looks shorter than it claims to be; `open`
        // finishes an interrupted purge.
        self.write_meta(KEY_LAST_PURGED, &log_id, ErrorSubject::Logs)?;
        self.flush(ErrorSubject::Logs).await?;
        // Not deleted here: openraft waits for this in its core loop, and
        // deleting a snapshot's worth of entries (100,000 by default) at once
        // held up heartbeats long enough for elections. Reads skip them, and
        // appends delete them a few at a time.
        self.inner
            .readable_from
            .fetch_max(log_id.index + 1, Ordering::Relaxed);
        Ok(())
    }
}
