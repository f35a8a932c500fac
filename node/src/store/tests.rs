use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::process::Command as Process;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{log_id, StoreBuilder, Suite};
use openraft::{
    BasicNode, CommittedLeaderId, EntryPayload, Membership, RaftLogReader, RaftSnapshotBuilder,
};
use tempfile::TempDir;

use super::*;
use crate::domain::command::{Compact, CreateGroup, PutTombstone};
use crate::domain::Command;
use crate::raft::{Entry, LogId, TypeConfig};
use crate::watch::FeedError;

struct TempStore;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for TempStore {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir =
            tempfile::tempdir().map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
        let (log, sm) =
            open(dir.path()).map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Read, e))?;
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
    entry(term, index, EntryPayload::Normal(Command::Barrier.at(0)))
}

/// Appends and waits for openraft's flush callback, i.e. for the point where
/// openraft counts the entries as durable.
async fn append_acknowledged(log: &mut LogStore, entries: Vec<Entry>) {
    log.blocking_append(entries)
        .await
        .expect("append acknowledged");
}

const CHILD_DIR: &str = "BATON_TEST_CRASH_CHILD_DIR";
const CHILD_STEP: &str = "BATON_TEST_CRASH_CHILD_STEP";

/// Runs one step of [`acknowledged_writes_survive_abort`] in a child process
/// that then aborts: no destructors run, so sled's own flush-on-drop never
/// happens and only what was flushed before the acknowledgement is on disk.
fn crash_after(dir: &std::path::Path, step: &str) {
    let status = Process::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "store::tests::acknowledged_writes_survive_abort",
            "--nocapture",
        ])
        .env(CHILD_DIR, dir)
        .env(CHILD_STEP, step)
        .status()
        .expect("spawn child");
    assert!(
        !status.success(),
        "the child must die by abort, not exit cleanly"
    );
}

/// An entry acknowledged by `append`, and a vote saved by `save_vote`, are there
/// after the process dies without a clean close. Each step runs alone in its own
/// child, so no later flush can hide a missing one.
#[test]
fn acknowledged_writes_survive_abort() {
    if let (Ok(dir), Ok(step)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_STEP)) {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let (mut log, _sm) = open(std::path::Path::new(&dir)).expect("open");
            match step.as_str() {
                "append" => {
                    append_acknowledged(&mut log, (1..=100).map(|i| barrier(1, i)).collect()).await
                }
                "vote" => log
                    .save_vote(&openraft::Vote::new(3, 7))
                    .await
                    .expect("vote"),
                other => panic!("unknown step {other}"),
            }
            // Abort while `log` is alive: dropping the last sled handle would
            // flush, which is exactly the clean close this test must not have.
            std::process::abort();
        })
    }

    let dir = tempfile::tempdir().expect("tempdir");
    // Create the database first, so that the child's only flush is the one under test.
    drop(open(dir.path()).expect("create"));
    crash_after(dir.path(), "append");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (mut log, _sm) = open(dir.path()).expect("reopen after abort");
        let entries = log.try_get_log_entries(1..=100).await.expect("read");
        assert_eq!(entries.len(), 100, "every acknowledged entry is on disk");
        let state = log.get_log_state().await.expect("state");
        assert_eq!(state.last_log_id, Some(log_id(1, 1, 100)));
    });
    crash_after(dir.path(), "vote");
    rt.block_on(async {
        let (mut log, _sm) = open(dir.path()).expect("reopen after abort");
        assert_eq!(
            log.read_vote().await.expect("vote"),
            Some(openraft::Vote::new(3, 7))
        );
    });
}

fn membership(voters: &[u64]) -> Membership<u64, BasicNode> {
    let nodes: BTreeMap<u64, BasicNode> = voters
        .iter()
        .map(|id| (*id, BasicNode::new(format!("127.0.0.1:{}", 7400 + id))))
        .collect();
    Membership::new(vec![voters.iter().copied().collect::<BTreeSet<_>>()], nodes)
}

#[tokio::test]
async fn applied_state_and_snapshot_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let snapshot_meta = {
        let (_log, mut sm) = open(dir.path()).expect("open");
        let entries = vec![
            entry(1, 1, EntryPayload::Membership(membership(&[1, 2, 3]))),
            barrier(1, 2),
            barrier(1, 3),
        ];
        let results = sm.apply(entries).await.expect("apply");
        assert_eq!(
            results.iter().map(|r| r.revision).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        let snapshot = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build");
        sm.apply(vec![barrier(2, 4)])
            .await
            .expect("apply after snapshot");
        snapshot.meta
    };
    let (_log, mut sm) = open(dir.path()).expect("reopen");
    let (applied, stored_membership) = sm.applied_state().await.expect("applied");
    assert_eq!(applied, Some(log_id(2, 1, 4)));
    assert_eq!(stored_membership.membership(), &membership(&[1, 2, 3]));
    assert_eq!(sm.revision(), 4);
    let current = sm
        .get_current_snapshot()
        .await
        .expect("read")
        .expect("a snapshot");
    assert_eq!(current.meta, snapshot_meta);
}

#[tokio::test]
async fn installed_snapshot_replaces_the_whole_state_atomically() {
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let (_l, mut leader) = open(leader_dir.path()).expect("open");
    leader
        .apply(vec![
            entry(2, 10, EntryPayload::Membership(membership(&[1, 2]))),
            barrier(2, 11),
        ])
        .await
        .expect("apply");
    let snapshot = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");

    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (_log, mut sm) = open(dir.path()).expect("open");
        sm.apply(vec![
            entry(1, 1, EntryPayload::Membership(membership(&[9]))),
            barrier(1, 2),
        ])
        .await
        .expect("apply");
        let mut received = sm.begin_receiving_snapshot().await.expect("begin");
        *received = Cursor::new(snapshot.snapshot.get_ref().clone());
        sm.install_snapshot(&snapshot.meta, received)
            .await
            .expect("install");
        assert_eq!(sm.revision(), 11);
    }
    let db = sled::open(dir.path().join("sled")).expect("sled");
    let generations: Vec<String> = db
        .tree_names()
        .iter()
        .filter_map(|n| std::str::from_utf8(n).ok().map(str::to_string))
        .filter(|n| n.starts_with("sm."))
        .collect();
    assert_eq!(
        generations,
        vec!["sm.1".to_string()],
        "old generation dropped, new one current"
    );
    drop(db);

    let (_log, mut sm) = open(dir.path()).expect("reopen");
    let (applied, stored_membership) = sm.applied_state().await.expect("applied");
    assert_eq!(applied, Some(LogId::new(CommittedLeaderId::new(2, 1), 11)));
    assert_eq!(stored_membership.membership(), &membership(&[1, 2]));
    assert_eq!(
        sm.get_current_snapshot()
            .await
            .expect("read")
            .map(|s| s.meta),
        Some(snapshot.meta)
    );
}

#[tokio::test]
async fn purge_and_truncate_are_durable_and_consistent() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut log, _sm) = open(dir.path()).expect("open");
        append_acknowledged(&mut log, (1..=20).map(|i| barrier(1, i)).collect()).await;
        log.purge(log_id(1, 1, 5)).await.expect("purge");
        assert_eq!(
            indexes(&mut log).await,
            (6..=20).collect::<Vec<_>>(),
            "purged entries are never read"
        );
        log.truncate(log_id(1, 1, 16)).await.expect("truncate");
    }
    let (mut log, _sm) = open(dir.path()).expect("reopen");
    let state = log.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 5)));
    assert_eq!(state.last_log_id, Some(log_id(1, 1, 15)));
    assert_eq!(indexes(&mut log).await, (6..=15).collect::<Vec<_>>());
}

/// The indexes of the entries a read of the whole log returns.
async fn indexes(log: &mut LogStore) -> Vec<u64> {
    log.try_get_log_entries(..)
        .await
        .expect("read")
        .iter()
        .map(|e| e.log_id.index)
        .collect()
}

#[tokio::test]
async fn purged_entries_are_deleted_by_later_appends() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut log, _sm) = open(dir.path()).expect("open");
        append_acknowledged(&mut log, (1..=20).map(|i| barrier(1, i)).collect()).await;
        log.purge(log_id(1, 1, 5)).await.expect("purge");
        append_acknowledged(&mut log, vec![barrier(1, 21)]).await;
    }
    // Read the tree as it is on disk, without `open` finishing the purge.
    let db = sled::open(dir.path().join("sled")).expect("sled");
    let keys: Vec<u64> = db
        .open_tree(log::LOG_TREE)
        .expect("log tree")
        .iter()
        .keys()
        .map(|k| u64::from_be_bytes(k.expect("key").as_ref().try_into().expect("8 bytes")))
        .collect();
    assert_eq!(keys, (6..=21).collect::<Vec<_>>());
}

#[test]
fn refuses_a_data_dir_of_another_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(open(dir.path()).expect("fresh open"));
    {
        let db = sled::open(dir.path().join("sled")).expect("sled");
        let meta = db.open_tree(META_TREE).expect("meta");
        meta.insert(KEY_FORMAT_VERSION, &99u32.to_be_bytes())
            .expect("insert");
        db.flush().expect("flush");
    }
    let err = open(dir.path()).err().expect("must refuse");
    assert!(
        matches!(err, OpenError::FormatVersion { found: 99, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("format 99"), "{err}");
}

/// An entry proposing `command` at leader time 1 s.
fn command(term: u64, index: u64, command: Command) -> Entry {
    entry(term, index, EntryPayload::Normal(command.at(1_000)))
}

#[tokio::test]
async fn history_is_compacted_by_command_and_carried_in_snapshots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_log, mut sm) = open(dir.path()).expect("open");
    let config = crate::domain::GroupConfig {
        partitions: 4,
        ..Default::default()
    };
    let create = Command::CreateGroup(CreateGroup {
        group: "g".into(),
        config,
    });
    let put = |key: &str| {
        Command::PutTombstone(PutTombstone {
            group: "g".into(),
            key: key.into(),
            locator: crate::domain::Locator::Key,
            ttl_ms: None,
        })
    };
    let entries = vec![
        command(1, 1, create),
        command(1, 2, put("a")),
        barrier(1, 3),
        command(1, 4, put("b")),
        command(1, 5, put("c")),
    ];
    sm.apply(entries).await.expect("apply");
    let all = |sm: &StateMachineStore, from| sm.history("g", from, 100, 100);
    let (batches, covered) = all(&sm, 1).expect("history");
    assert_eq!(
        batches.iter().map(|b| b.revision).collect::<Vec<_>>(),
        vec![1, 2, 4, 5],
        "revisions with events"
    );
    assert_eq!(covered, 100);
    let (limited, covered) = sm.history("g", 1, 100, 2).expect("history");
    assert_eq!(limited.len(), 2);
    assert_eq!(
        covered, 3,
        "complete up to just before the first batch left out"
    );

    sm.apply(vec![command(
        1,
        6,
        Command::Compact(Compact { revision: 2 }),
    )])
    .await
    .expect("compact");
    let err = all(&sm, 2).expect_err("compacted");
    assert_eq!(
        err,
        crate::watch::FeedError::Compacted {
            from: 2,
            compacted: 2
        }
    );
    let (kept, _) = all(&sm, 3).expect("history after the compaction");
    assert_eq!(
        kept.iter().map(|b| b.revision).collect::<Vec<_>>(),
        vec![4, 5]
    );

    // A node that installs the snapshot has the same history and compaction.
    let snapshot = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("snapshot");
    let other_dir = tempfile::tempdir().expect("tempdir");
    let (_other_log, mut other) = open(other_dir.path()).expect("open");
    other
        .install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .expect("install");
    assert_eq!(other.read(|s| s.compacted), 2);
    assert_eq!(
        all(&other, 3).expect("history"),
        all(&sm, 3).expect("history")
    );
    assert!(all(&other, 1).is_err());
    assert_eq!(other.hub().published(), 6);
}

/// The state is not rewritten on every apply: opening replays the events
/// after the last checkpoint. Whatever the mix of checkpoint, replay and
/// compaction, the reopened state equals the one in memory before.
#[tokio::test]
async fn reopening_replays_the_events_after_the_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let put = |key: String| {
        Command::PutTombstone(PutTombstone {
            group: "g".into(),
            key,
            locator: crate::domain::Locator::Key,
            ttl_ms: None,
        })
    };
    let create = Command::CreateGroup(CreateGroup {
        group: "g".into(),
        config: crate::domain::GroupConfig {
            partitions: 4,
            ..Default::default()
        },
    });
    let reopened = |dir: &std::path::Path| {
        let (_log, sm) = open(dir).expect("reopen");
        sm.read(Clone::clone)
    };

    // Before any checkpoint: everything comes from replay.
    let before = {
        let (_log, mut sm) = open(dir.path()).expect("open");
        let mut entries = vec![command(1, 1, create)];
        entries.extend((2..=50).map(|i| command(1, i, put(format!("k{i}")))));
        sm.apply(entries).await.expect("apply");
        sm.read(Clone::clone)
    };
    assert_eq!(before.revision, 50);
    assert_eq!(reopened(dir.path()), before);

    // Past a checkpoint, then more events after it, then a compaction
    // behind the checkpoint, then more events again.
    let before = {
        let (_log, mut sm) = open(dir.path()).expect("open");
        let last = 50 + state_machine::CHECKPOINT_EVERY + 10;
        let entries: Vec<Entry> = (51..=last)
            .map(|i| {
                if i % 1000 == 0 {
                    command(1, i, put(format!("k{i}")))
                } else {
                    barrier(1, i)
                }
            })
            .collect();
        sm.apply(entries).await.expect("apply");
        sm.apply(vec![command(1, last + 1, put("after-checkpoint".into()))])
            .await
            .expect("apply");
        sm.apply(vec![command(
            1,
            last + 2,
            Command::Compact(Compact { revision: 40 }),
        )])
        .await
        .expect("compact");
        sm.apply(vec![command(1, last + 3, put("after-compaction".into()))])
            .await
            .expect("apply");
        sm.read(Clone::clone)
    };
    assert_eq!(before.compacted, 40);
    assert_eq!(reopened(dir.path()), before);

    // A compaction past the checkpoint writes no checkpoint, yet the events
    // between the checkpoint and the compacted revision must still replay,
    // and the compacted revision must survive the reopening.
    let before = {
        let (_log, mut sm) = open(dir.path()).expect("open");
        let first = before.revision + 1;
        sm.apply(vec![
            command(1, first, put("past-checkpoint-1".into())),
            command(1, first + 1, put("past-checkpoint-2".into())),
        ])
        .await
        .expect("apply");
        sm.apply(vec![command(
            1,
            first + 2,
            Command::Compact(Compact {
                revision: first + 1,
            }),
        )])
        .await
        .expect("compact");
        sm.apply(vec![command(1, first + 3, put("after".into()))])
            .await
            .expect("apply");
        assert!(
            matches!(
                sm.history("g", first, first + 3, 10),
                Err(FeedError::Compacted { .. })
            ),
            "compacted history is not served"
        );
        sm.read(Clone::clone)
    };
    assert_eq!(before.compacted, before.revision - 2);
    let after = reopened(dir.path());
    assert_eq!(after, before);
    assert!(after.groups["g"]
        .tombstones
        .contains_key("past-checkpoint-1"));
}
