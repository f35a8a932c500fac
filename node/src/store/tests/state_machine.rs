//! The state machine: applied state and snapshots survive a reopen, an
//! installed snapshot replaces the whole state, the history is compacted by
//! command and carried in snapshots, and reopening replays the events after
//! the checkpoint.

use std::io::Cursor;

use openraft::storage::RaftStateMachine;
use openraft::CommittedLeaderId;

use super::*;
use crate::store::types::LogId;
use crate::watch::hub::FeedError;

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
            results
                .iter()
                .flatten()
                .map(|r| r.revision)
                .collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        let snapshot = built_snapshot(&mut sm).await;
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
    let snapshot = built_snapshot(&mut leader).await;

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
        .filter(|n| n.starts_with("sm.") || n.starts_with("checkpoint."))
        .collect();
    assert_eq!(
        generations,
        vec!["sm.1".to_string(), "checkpoint.1".to_string()],
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
        FeedError::Compacted {
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
    let snapshot = built_snapshot(&mut sm).await;
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
        let last = 50 + CHECKPOINT_EVERY + 10;
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

/// An entry carrying a batch applies each command at its own revision, in
/// order, with its own result (a refused one among them changes nothing
/// else), its events in the history under that revision; the revision is
/// kept with the applied position, so a reopened store is at the same one
/// although log index and revision now differ.
#[tokio::test]
async fn a_batch_applies_each_command_at_its_own_revision_with_its_own_result() {
    let dir = tempfile::tempdir().expect("tempdir");
    let put = |group: &str, key: &str| {
        Command::PutTombstoneV2(PutTombstone {
            group: group.into(),
            key: key.into(),
            locator: crate::domain::Locator::Key,
            ttl_ms: None,
        })
        .at(1_000)
    };
    let batch = Proposals::Many(vec![
        put("g", "a"),
        put("missing", "b"),
        put("g", "c"),
        Command::Barrier.at(0),
    ]);
    {
        let (_log, mut sm) = open(dir.path()).expect("open");
        let create = Command::CreateGroup(CreateGroup {
            group: "g".into(),
            config: crate::domain::GroupConfig {
                partitions: 4,
                ..Default::default()
            },
        });
        let entries = vec![
            command(1, 1, create),
            entry(1, 2, EntryPayload::Normal(batch)),
            barrier(1, 3),
        ];
        let results = sm.apply(entries).await.expect("apply");
        let per_entry: Vec<Vec<u64>> = results
            .iter()
            .map(|r| r.iter().map(|c| c.revision).collect())
            .collect();
        assert_eq!(per_entry, vec![vec![1], vec![2, 3, 4, 5], vec![6]]);
        let batch = &results[1];
        assert!(batch[0].outcome.is_ok() && !batch[0].events.is_empty());
        assert!(
            batch[1].outcome.is_err() && batch[1].events.is_empty(),
            "a put to a group that does not exist is refused alone: {:?}",
            batch[1]
        );
        assert!(batch[2].outcome.is_ok() && !batch[2].events.is_empty());
        let (history, _) = sm.history("g", 1, 100, 100).expect("history");
        assert_eq!(
            history.iter().map(|b| b.revision).collect::<Vec<_>>(),
            vec![1, 2, 4],
            "events under each command's own revision"
        );
        assert_eq!(sm.revision(), 6);
        assert_eq!(sm.hub().applied().index, 3);
        assert_eq!(sm.hub().applied().revision, 6);
    }
    let (_log, sm) = open(dir.path()).expect("reopen");
    assert_eq!(sm.revision(), 6, "the revision, not the log index (3)");
    let tombstones = sm.read(|s| s.groups["g"].tombstones.len());
    assert_eq!(tombstones, 2);
}

/// A data dir of format 4 (written before batches: no stored revision, the
/// revision was the applied log index; the checkpoint in the generation's
/// tree and the snapshot in `meta`) opens with that revision, its checkpoint
/// and its snapshot moved to trees of their own, and is marked format 5 so
/// that a format-4 node will not misread it later.
#[tokio::test]
async fn a_format_4_data_dir_opens_at_its_log_index_and_is_marked_5() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (checkpoint, snapshot_meta) = {
        let (_log, mut sm) = open(dir.path()).expect("open");
        sm.apply(vec![barrier(1, 1), barrier(1, 2), barrier(1, 3)])
            .await
            .expect("apply");
        let snapshot = built_snapshot(&mut sm).await;
        let checkpoint = encode(&sm.read(Clone::clone)).expect("encode");
        (checkpoint, snapshot.meta)
    };
    {
        // What a format-4 node left.
        let db = sled::open(dir.path().join("sled")).expect("sled");
        let sm = db
            .open_tree(schema::generation_tree_name(0))
            .expect("generation");
        sm.remove(schema::KEY_REVISION).expect("remove");
        sm.insert(schema::KEY_STATE, checkpoint).expect("insert");
        let meta = db.open_tree(schema::META_TREE).expect("meta");
        let snapshots = db.open_tree(schema::SNAPSHOT_TREE).expect("snapshots");
        let stored = snapshots
            .remove(schema::KEY_SNAPSHOT)
            .expect("remove")
            .expect("a stored snapshot");
        meta.insert(schema::KEY_SNAPSHOT, stored).expect("insert");
        meta.insert(schema::KEY_FORMAT_VERSION, &4u32.to_be_bytes())
            .expect("insert");
        db.flush().expect("flush");
    }
    {
        let (_log, mut sm) = open(dir.path()).expect("a format-4 data dir opens");
        assert_eq!(sm.revision(), 3);
        let snapshot = sm.get_current_snapshot().await.expect("read");
        assert_eq!(snapshot.map(|s| s.meta), Some(snapshot_meta));
    }
    let db = sled::open(dir.path().join("sled")).expect("sled");
    let meta = db.open_tree(schema::META_TREE).expect("meta");
    let format = meta
        .get(schema::KEY_FORMAT_VERSION)
        .expect("read")
        .expect("format");
    assert_eq!(format.as_ref(), &5u32.to_be_bytes());
    assert!(meta.get(schema::KEY_SNAPSHOT).expect("read").is_none());
    let sm = db
        .open_tree(schema::generation_tree_name(0))
        .expect("generation");
    assert!(sm.get(schema::KEY_STATE).expect("read").is_none());
    let checkpoints = db
        .open_tree(schema::checkpoint_tree_name(0))
        .expect("checkpoints");
    assert!(checkpoints.get(schema::KEY_STATE).expect("read").is_some());
}
