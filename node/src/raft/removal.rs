//! Whether this node has been removed from the cluster.
//!
//! A removed node is not always told: openraft stops replicating to it once
//! the change is appended, so it often keeps the joint membership that still
//! lists it, hears no leader, and would go on answering clients with a stale
//! view ("knows no leader yet", or worse, old data). It learns it two ways:
//! its own applied membership no longer lists it (after one had, since it
//! started: a joining node replays memberships that do not list it yet), or
//! a voter answering its pre-vote (`pre_vote.rs`) has a newer applied
//! membership that does not list it. Only applied (so committed)
//! memberships count, so truncation cannot undo a removal; once its own
//! applied membership is at least as new and lists it again (it was added
//! back), it is a member again. Kept in memory: a removed node that restarts
//! learns it again at its first pre-vote if it still takes itself for a
//! voter.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tonic::Status;

use super::NodeId;

#[derive(Debug)]
pub struct Removal {
    id: NodeId,
    /// The log index of the membership that no longer lists this node.
    at: Mutex<Option<u64>>,
    /// Whether an applied membership has listed this node since it started.
    listed: AtomicBool,
}

impl Removal {
    pub fn new(id: NodeId) -> Self {
        Self {
            id,
            at: Mutex::new(None),
            listed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<u64>> {
        self.at.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The membership at log index `index` does not list this node.
    pub fn removed_at(&self, index: u64) {
        let mut at = self.lock();
        if at.is_none() {
            tracing::warn!(
                node = self.id,
                index,
                "this node was removed from the cluster (the membership at log index {index} no longer lists it); it serves no client requests and is not ready; stop it, or add it back"
            );
        }
        *at = Some(at.map_or(index, |a| a.max(index)));
    }

    /// This node's own applied membership, at log index `index`, lists it.
    pub fn listed_at(&self, index: u64) {
        self.listed.store(true, Ordering::Relaxed);
        let mut at = self.lock();
        if at.is_some_and(|a| index >= a) {
            tracing::info!(node = self.id, index, "this node is a member again");
            *at = None;
        }
    }

    pub fn was_listed(&self) -> bool {
        self.listed.load(Ordering::Relaxed)
    }

    pub fn get(&self) -> Option<u64> {
        *self.lock()
    }

    /// UNAVAILABLE, naming the removal, if this node was removed: clients
    /// move on to another endpoint.
    pub fn check(&self) -> Result<(), Status> {
        match self.get() {
            None => Ok(()),
            Some(index) => Err(Status::unavailable(self.message(index))),
        }
    }

    pub fn message(&self, index: u64) -> String {
        format!(
            "node {} was removed from the cluster (the membership at log index {index} no longer lists it); use the cluster's other nodes",
            self.id
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removal_holds_until_a_membership_as_new_lists_the_node_again() {
        let r = Removal::new(4);
        assert!(r.check().is_ok());
        r.removed_at(10);
        let refused = r.check().expect_err("removed");
        assert_eq!(refused.code(), tonic::Code::Unavailable);
        assert!(
            refused.message().contains("node 4 was removed"),
            "{refused:?}"
        );
        // An older membership that lists it changes nothing.
        r.listed_at(9);
        assert_eq!(r.get(), Some(10));
        r.listed_at(12);
        assert_eq!(r.get(), None);
    }
}
