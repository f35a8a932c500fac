//! The store against openraft's storage suite, plus what the suite does
//! not cover: durability across a crash (`log`), and the state machine's
//! generations, history and checkpoints (`state_machine`).

mod log;
mod state_machine;

use std::collections::{BTreeMap, BTreeSet};

use openraft::storage::RaftLogStorageExt;
use openraft::testing::{log_id, StoreBuilder, Suite};
use openraft::{BasicNode, EntryPayload, Membership};
use tempfile::TempDir;

use super::types::{Entry, TypeConfig};
use super::*;
use crate::domain::command::{Compact, CreateGroup, PutTombstone};
use crate::domain::{Command, Proposals};

struct TempStore;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for TempStore {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir =
            tempfile::tempdir().map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
        let (log, sm) =
            open(dir.path()).map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Read, e))?;
        // The suite purges logs it never applied, which `LogStore::purge`
        // waits for in a node (the purge rule): lift the rule for it alone.
        sm.hub().publish(Vec::new(), 0, u64::MAX);
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() -> Result<(), StorageError> {
    Suite::test_all(TempStore)
}

fn entry(term: u64, index: u64, payload: EntryPayload<TypeConfig>) -> Entry {
    Entry {
        log_id: log_id(term, 1, index),
        payload,
    }
}

fn barrier(term: u64, index: u64) -> Entry {
    entry(
        term,
        index,
        EntryPayload::Normal(Proposals::One(Command::Barrier.at(0))),
    )
}

/// Appends and waits for openraft's flush callback, i.e. for the point where
/// openraft counts the entries as durable.
async fn append_acknowledged(log: &mut LogStore, entries: Vec<Entry>) {
    log.blocking_append(entries)
        .await
        .expect("append acknowledged");
}

fn membership(voters: &[u64]) -> Membership<u64, BasicNode> {
    let nodes: BTreeMap<u64, BasicNode> = voters
        .iter()
        .map(|id| (*id, BasicNode::new(format!("127.0.0.1:{}", 7400 + id))))
        .collect();
    Membership::new(vec![voters.iter().copied().collect::<BTreeSet<_>>()], nodes)
}

/// A snapshot built from `sm` now.
async fn built_snapshot(sm: &mut StateMachineStore) -> types::Snapshot {
    use openraft::storage::RaftStateMachine;
    use openraft::RaftSnapshotBuilder;
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("snapshot built")
}

/// An entry proposing `command` at leader time 1 s.
fn command(term: u64, index: u64, command: Command) -> Entry {
    entry(
        term,
        index,
        EntryPayload::Normal(Proposals::One(command.at(1_000))),
    )
}
