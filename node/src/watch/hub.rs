//! Where the state machine publishes what it applied: the [`Hub`], and the
//! [`Batch`] of events one revision caused (also the record of the stored
//! history).
//!
//! This half of event delivery sits *below* the store: the store publishes
//! into the hub after each apply and snapshot install, and must not depend on
//! the [`Feed`](super::Feed) that reads its history, which sits above it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch, Semaphore};

use super::metrics::WatchMetrics;
use crate::domain::Event;

/// Batches a subscriber may have waiting before it is cut off, by default.
pub const DEFAULT_SUBSCRIBER_BUFFER: usize = 1024;
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
pub(super) enum Ended {
    Overflow,
    Compacted(u64),
}

struct Subscriber {
    tx: mpsc::Sender<(Arc<Batch>, Instant)>,
    ended: Arc<OnceLock<Ended>>,
}

/// A log index applied here and the revision it brought the state to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub index: u64,
    pub revision: u64,
}

struct Subscribers {
    published: u64,
    by_group: HashMap<String, Vec<Subscriber>>,
}

/// Where the state machine publishes what it applied, once it is durable.
pub struct Hub {
    subscribers: Mutex<Subscribers>,
    published: watch::Sender<u64>,
    /// The log index applied and published here, with its revision: a
    /// linearizable point is a log index (the leader's read index), and a
    /// log entry may hold several revisions.
    applied: watch::Sender<Applied>,
    buffer: AtomicUsize,
    /// Permits to read the history (see [`CONCURRENT_HISTORY_READS`]).
    pub(super) history_reads: Arc<Semaphore>,
    metrics: WatchMetrics,
}

pub(super) struct Subscription {
    /// Batches with the time they were published here.
    pub(super) rx: mpsc::Receiver<(Arc<Batch>, Instant)>,
    pub(super) ended: Arc<OnceLock<Ended>>,
}

impl Hub {
    /// A hub whose history is complete up to `published`, the revision of
    /// log index `index`.
    pub fn new(published: u64, index: u64) -> Result<Self, prometheus::Error> {
        Ok(Self {
            applied: watch::channel(Applied {
                index,
                revision: published,
            })
            .0,
            subscribers: Mutex::new(Subscribers {
                published,
                by_group: HashMap::new(),
            }),
            published: watch::channel(published).0,
            buffer: AtomicUsize::new(DEFAULT_SUBSCRIBER_BUFFER),
            history_reads: Arc::new(Semaphore::new(CONCURRENT_HISTORY_READS)),
            metrics: WatchMetrics::new()?,
        })
    }

    /// What delivering events observes, for `/metrics`.
    pub fn metrics(&self) -> &WatchMetrics {
        &self.metrics
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

    /// Waits until log index `index` has been applied and published here;
    /// returns the revision applied then (at or after `index`'s). `Err` if
    /// the node stops first.
    pub async fn wait_for_index(&self, index: u64) -> Result<u64, FeedError> {
        let mut changes = self.applied.subscribe();
        let applied = changes
            .wait_for(|a| a.index >= index)
            .await
            .map_err(|_| FeedError::Stopped)?;
        Ok(applied.revision)
    }

    /// The log index applied and published here, with its revision.
    pub fn applied(&self) -> Applied {
        *self.applied.borrow()
    }

    /// Hands `batches` (in revision order) to their groups' subscribers and
    /// marks everything up to `revision`, log index `index`, published.
    pub fn publish(&self, batches: impl IntoIterator<Item = Batch>, revision: u64, index: u64) {
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
        self.mark_applied(index, subs.published);
    }

    fn mark_applied(&self, index: u64, revision: u64) {
        self.applied.send_if_modified(|a| {
            let newer = index > a.index;
            if newer {
                *a = Applied { index, revision };
            }
            newer
        });
    }

    /// A snapshot moved this node past history it never published: every
    /// subscriber ends with COMPACTED, as it would have had to re-list anyway.
    pub fn skip_to(&self, compacted: u64, revision: u64, index: u64) {
        let mut subs = self.lock();
        for (_, list) in subs.by_group.drain() {
            for s in list {
                let _ = s.ended.set(Ended::Compacted(compacted));
            }
        }
        subs.published = subs.published.max(revision);
        self.published.send_replace(subs.published);
        self.mark_applied(index, subs.published);
    }

    /// Subscribes to `group` if nothing after `position` has been published;
    /// otherwise the caller must read the history up to [`Hub::published`]
    /// first.
    pub(super) fn subscribe(&self, group: &str, position: u64) -> Option<Subscription> {
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
