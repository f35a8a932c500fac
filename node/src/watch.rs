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

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::store::StateMachineStore;

pub mod hub;
pub mod metrics;

pub use crate::store::HISTORY_READ_BYTES;
pub use hub::{
    Batch, BatchHead, FeedError, Hub, CONCURRENT_HISTORY_READS, DEFAULT_SUBSCRIBER_BUFFER,
};
use hub::{Ended, Subscription};
pub use metrics::WatchMetrics;

/// Stored batches (of any group) looked at by one history read.
const HISTORY_CHUNK: usize = 1024;

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
                            .hub()
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
