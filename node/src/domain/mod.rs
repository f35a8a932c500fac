//! The assignment domain: the replicated state and the commands that change it.
//!
//! Pure Rust: no async, no I/O, no clock. Every replica applies the same commands
//! in the same order and must reach the same state, so nothing here may depend on
//! anything but its inputs.
//!
//! For now the state is only the revision; groups, sessions, the rebalancer,
//! handoff and tombstones come next (issue #4).

use serde::{Deserialize, Serialize};

/// A change proposed through Raft. Each variant is applied by [`State::apply`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Changes nothing but the revision; used to prove the cluster commits writes.
    Barrier,
}

/// What applying one log entry produced, returned to the proposer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandResult {
    /// The revision at which the entry was applied.
    pub revision: u64,
}

/// The replicated state.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Cluster-wide counter bumped by every applied log entry: the Raft log index
    /// of the last applied entry.
    pub revision: u64,
}

impl State {
    /// Applies the log entry at `revision`. `command` is `None` for entries that
    /// carry no command (Raft's blank and membership entries); they still bump
    /// the revision so that revisions and log indexes stay the same number.
    pub fn apply(&mut self, revision: u64, command: Option<&Command>) -> CommandResult {
        debug_assert!(revision > self.revision || self.revision == 0);
        self.revision = revision;
        match command {
            None | Some(Command::Barrier) => {}
        }
        CommandResult { revision }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_bumps_the_revision_to_its_index() {
        let mut state = State::default();
        assert_eq!(state.apply(1, None).revision, 1);
        assert_eq!(state.apply(2, Some(&Command::Barrier)).revision, 2);
        assert_eq!(state.revision, 2);
    }
}
