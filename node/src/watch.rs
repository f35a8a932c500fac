//! Event delivery on one node: the [`Hub`] that applied events are published
//! to, and the [`Feed`] that hands one group's events to one reader (a watch
//! stream, a tombstone barrier) in revision order with no gap and no duplicate.
//!
//! A feed first reads the stored history up to what the hub has published,
//! then subscribes; subscribing happens under the hub's lock and only when
//! nothing after the feed's position has been published yet, so the history
//! read and the live batches meet exactly. Each subscriber has its own bounded
//! buffer: publishing never waits for a reader, and a reader whose buffer is
//! full is cut off (it resumes from its last revision) instead of holding the
//! others back or growing memory.
//!
//! History is read on the blocking pool, a bounded chunk at a time, and the
//! next chunk only once the reader has taken the last one: a watch resuming
//! over a long history costs the node one chunk's decoding at a time, never
//! a runtime thread, and at most [`CONCURRENT_HISTORY_READS`] chunks are
//! read at once, whatever the number of resuming watches.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;

use crate::domain::Event;
use crate::store::StateMachineStore;

/// Batches a subscriber may have waiting before it is cut off, by default.
pub const DEFAULT_SUBSCRIBER_BUFFER: usize = 1024;
/// Stored batches (of any group) looked at by one history read.
const HISTORY_CHUNK: usize = 1024;
/// Bytes of stored batches after which one history read stops (past it by
/// one batch at most).
pub const HISTORY_READ_BYTES: usize = 1 << 20;
/// History reads running at once on one node; more wait their turn, so many
/// watches resuming together take a few blocking threads, not hundreds.
pub const CONCURRENT_HISTORY_READS: usize = 4;

/// The events of one revision, all of one group (a command changes one group).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub revision: u64,
    pub group: String,
    pub events: Vec<Event>,
}

impl Batch {
    /// The events of the entry applied at `revision`, if it caused any.
    pub fn of(revision: u64, events: Vec<Event>) -> Option<Batch> {
        let group = events.first()?.group.clone();
        Some(Batch {
            revision,
            group,
            events,
        })
    }
}

/// The leading fields of a stored [`Batch`], in its order: decoding them from
/// the stored bytes tells its group without decoding its events.
#[derive(Deserialize)]
pub struct BatchHead<'a> {
    pub revision: u64,
    #[serde(borrow)]
    pub group: &'a str,
}

/// Why a feed ended.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    #[error("revision {from} is compacted (history is kept after revision {compacted} only)")]
    Compacted { from: u64, compacted: u64 },
    #[error("the reader fell too far behind (its buffer filled up) and was cut off after revision {position}")]
    Overflow { position: u64 },
    #[error("the stored event history cannot be read: {0}")]
    Storage(String),
    #[error("this node is shutting down")]
    Stopped,
}

/// Why the hub stopped feeding a subscriber.
#[derive(Clone, Copy, Debug)]
enum Ended {
    Overflow,
    Compacted(u64),
}

struct Subscriber {
    tx: mpsc::Sender<(Arc<Batch>, Instant)>,
    ended: Arc<OnceLock<Ended>>,
}

struct Subscribers {
    published: u64,
    by_group: HashMap<String, Vec<Subscriber>>,
}

/// Where the state machine publishes what it applied, once it is durable.
pub struct Hub {
    subscribers: Mutex<Subscribers>,
    published: watch::Sender<u64>,
    buffer: AtomicUsize,
    /// Permits to read the history (see [`CONCURRENT_HISTORY_READS`]).
    history_reads: Arc<Semaphore>,
}

struct Subscription {
    /// Batches with the time they were published here.
    rx: mpsc::Receiver<(Arc<Batch>, Instant)>,
    ended: Arc<OnceLock<Ended>>,
}

impl Hub {
    /// A hub whose history is complete up to `published`.
    pub fn new(published: u64) -> Self {
        Self {
            subscribers: Mutex::new(Subscribers {
                published,
                by_group: HashMap::new(),
            }),
            published: watch::channel(published).0,
            buffer: AtomicUsize::new(DEFAULT_SUBSCRIBER_BUFFER),
            history_reads: Arc::new(Semaphore::new(CONCURRENT_HISTORY_READS)),
        }
    }

    /// Sets how many batches each new subscriber may have waiting before it
    /// is cut off.
    pub fn set_subscriber_buffer(&self, batches: usize) {
        self.buffer.store(batches.max(1), Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, Subscribers> {
        self.subscribers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Watch streams fed by this node now (those whose client went away
    /// count until the next event of their group).
    pub fn watchers(&self) -> usize {
        self.lock()
            .by_group
            .values()
            .map(|subs| subs.iter().filter(|s| !s.tx.is_closed()).count())
            .sum()
    }

    /// Every event up to this revision has been published.
    pub fn published(&self) -> u64 {
        *self.published.borrow()
    }

    /// Changes of [`Hub::published`].
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// Waits until everything up to `revision` has been applied and published
    /// here; `Err` if the node stops first.
    pub async fn wait_for(&self, revision: u64) -> Result<(), FeedError> {
        let mut changes = self.changes();
        changes
            .wait_for(|p| *p >= revision)
            .await
            .map(|_| ())
            .map_err(|_| FeedError::Stopped)
    }

    /// Hands `batches` (in revision order) to their groups' subscribers and
    /// marks everything up to `revision` published.
    pub fn publish(&self, batches: impl IntoIterator<Item = Batch>, revision: u64) {
        let mut subs = self.lock();
        for batch in batches {
            let Some(list) = subs.by_group.get_mut(&batch.group) else {
                continue;
            };
            let batch = Arc::new(batch);
            let now = Instant::now();
            list.retain(|s| match s.tx.try_send((batch.clone(), now)) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    let _ = s.ended.set(Ended::Overflow);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
        }
        subs.by_group.retain(|_, list| !list.is_empty());
        subs.published = subs.published.max(revision);
        // Under the lock, after the sends: a reader that sees `published` at P
        // already has every batch up to P in its buffer.
        self.published.send_replace(subs.published);
    }

    /// A snapshot moved this node past history it never published: every
    /// subscriber ends with COMPACTED, as it would have had to re-list anyway.
    pub fn skip_to(&self, compacted: u64, revision: u64) {
        let mut subs = self.lock();
        for (_, list) in subs.by_group.drain() {
            for s in list {
                let _ = s.ended.set(Ended::Compacted(compacted));
            }
        }
        subs.published = subs.published.max(revision);
        self.published.send_replace(subs.published);
    }

    /// Subscribes to `group` if nothing after `position` has been published;
    /// otherwise the caller must read the history up to [`Hub::published`]
    /// first.
    fn subscribe(&self, group: &str, position: u64) -> Option<Subscription> {
        let mut subs = self.lock();
        if subs.published > position {
            return None;
        }
        let (tx, rx) = mpsc::channel(self.buffer.load(Ordering::Relaxed));
        let ended = Arc::new(OnceLock::new());
        subs.by_group
            .entry(group.to_string())
            .or_default()
            .push(Subscriber {
                tx,
                ended: ended.clone(),
            });
        Some(Subscription { rx, ended })
    }
}

/// A chunk of history: its batches and the revision it is complete up to.
type Chunk = Result<(Vec<Batch>, u64), FeedError>;

/// A history read that did not finish: the runtime stopped, or it panicked.
fn join_error(e: tokio::task::JoinError) -> FeedError {
    if e.is_cancelled() {
        FeedError::Stopped
    } else {
        FeedError::Storage(format!("reading the event history failed: {e}"))
    }
}

/// One group's events after a position, for one reader.
pub struct Feed {
    sm: StateMachineStore,
    group: String,
    /// Every event of the group up to here has been handed out.
    position: u64,
    /// Read from the history, not handed out yet; all at or below `covered`.
    pending: VecDeque<Arc<Batch>>,
    covered: u64,
    /// The history chunk being read. Kept here, not in `next`'s future, so
    /// a `next` dropped by a `select!` loses neither the read nor its turn.
    reading: Option<JoinHandle<Chunk>>,
    live: Option<Subscription>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        // A read still waiting for its turn is not needed any more; one
        // running finishes its chunk on its blocking thread.
        if let Some(reading) = &self.reading {
            reading.abort();
        }
    }
}

impl Feed {
    /// A feed of `group`'s events after revision `position`. If the history
    /// no longer holds them, the feed ends with [`FeedError::Compacted`].
    pub fn new(sm: StateMachineStore, group: &str, position: u64) -> Self {
        Self {
            sm,
            group: group.to_string(),
            position,
            pending: VecDeque::new(),
            covered: position,
            reading: None,
            live: None,
        }
    }

    pub fn position(&self) -> u64 {
        self.position
    }

    /// The next batch of the group, waiting for one to be applied.
    /// Cancel-safe: a call dropped before it returns loses nothing.
    pub async fn next(&mut self) -> Result<Arc<Batch>, FeedError> {
        loop {
            if let Some(batch) = self.pending.pop_front() {
                self.position = batch.revision;
                return Ok(batch);
            }
            if let Some(reading) = &mut self.reading {
                let read = reading.await;
                self.reading = None;
                let (batches, covered) = read.map_err(join_error)??;
                self.pending.extend(batches.into_iter().map(Arc::new));
                self.covered = covered;
                continue;
            }
            self.position = self.position.max(self.covered);
            if let Some(live) = &mut self.live {
                match live.rx.recv().await {
                    // Published before our position: the history gave it already.
                    Some((batch, _)) if batch.revision <= self.position => continue,
                    Some((batch, published)) => {
                        self.sm
                            .metrics()
                            .delivery_lag_seconds
                            .observe(published.elapsed().as_secs_f64());
                        self.position = batch.revision;
                        return Ok(batch);
                    }
                    // The buffer is drained: now say why it ended.
                    None => {
                        let position = self.position;
                        return Err(match live.ended.get() {
                            Some(Ended::Overflow) => FeedError::Overflow { position },
                            Some(Ended::Compacted(compacted)) => FeedError::Compacted {
                                from: position + 1,
                                compacted: *compacted,
                            },
                            None => FeedError::Stopped,
                        });
                    }
                }
            }
            let hub = self.sm.hub();
            if let Some(live) = hub.subscribe(&self.group, self.position) {
                self.live = Some(live);
                continue;
            }
            self.reading = Some(self.read_history(hub.published()));
        }
    }

    /// Starts reading the next chunk of history after the position, up to
    /// `to`, on the blocking pool once a read permit is free.
    fn read_history(&self, to: u64) -> JoinHandle<Chunk> {
        let (sm, group, from) = (self.sm.clone(), self.group.clone(), self.position + 1);
        let permits = self.sm.hub().history_reads.clone();
        tokio::spawn(async move {
            let permit = permits
                .acquire_owned()
                .await
                .map_err(|_| FeedError::Stopped)?;
            let read = tokio::task::spawn_blocking(move || {
                // Held by the read itself: an aborted feed does not free it
                // before the read is done.
                let _permit = permit;
                sm.history(&group, from, to, HISTORY_CHUNK)
            });
            read.await.map_err(join_error)?
        })
    }

    /// The revision up to which every event of the group has been handed out,
    /// without waiting: what a progress notification reports. Never decreases,
    /// and never passes a batch this feed did not hand out: a watcher resumes
    /// (or re-lists) from it.
    pub fn progress(&mut self) -> u64 {
        if let (Some(live), true) = (&self.live, self.pending.is_empty()) {
            // Read `published` first: the hub fills the buffer, or ends the
            // subscription, before it publishes, so once both are checked
            // below an empty buffer means no batch up to it is missing.
            let published = self.sm.hub().published();
            // An ended subscription (cut off for an overflow, or history cut
            // by a snapshot install) gets nothing more: what the hub
            // published since is not in the buffer, and `next` will say how
            // the feed ended, from the position it really reached.
            if live.ended.get().is_none() && live.rx.is_empty() {
                self.position = self.position.max(published);
            }
        }
        self.position
    }
}

#[cfg(test)]
mod tests;
