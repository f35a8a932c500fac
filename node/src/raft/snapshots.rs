//! Snapshots by revisions as well as by entries.
//!
//! openraft builds a snapshot every `snapshot_every` log entries. An entry
//! may carry a batch of up to a thousand commands, so a count of entries
//! says little about how much log a snapshot would let go of: this task
//! also asks for one every `snapshot_every` revisions (one per command),
//! counted from the node's start or its last request. openraft ignores a
//! request while a build is under way.

use tokio::sync::watch;

use super::BatonRaft;
use crate::store::StateMachineStore;

/// Runs until `stop` turns true or Raft stops.
pub async fn run(
    raft: BatonRaft,
    sm: StateMachineStore,
    every: u64,
    mut stop: watch::Receiver<bool>,
) {
    let mut changes = sm.hub().changes();
    let mut since = *changes.borrow_and_update();
    loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
        let revision = *changes.borrow_and_update();
        if revision >= since.saturating_add(every) {
            since = revision;
            if raft.trigger().snapshot().await.is_err() {
                return;
            }
        }
    }
}
