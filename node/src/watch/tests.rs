//! A [`Feed`] against a real store: what it hands out and what its progress
//! bookmark promises when the hub stops feeding it (a reader cut off for
//! falling behind, history cut by a snapshot install).

use futures::FutureExt;
use openraft::storage::RaftStateMachine;
use openraft::testing::log_id;
use openraft::{EntryPayload, RaftSnapshotBuilder};
use tempfile::TempDir;

use super::*;
use crate::domain::{Command, GroupConfig, Locator};
use crate::raft::Entry;

fn command(index: u64, command: Command) -> Entry {
    Entry {
        log_id: log_id(1, 1, index),
        payload: EntryPayload::Normal(command),
    }
}

fn create(group: &str) -> Command {
    Command::CreateGroup {
        group: group.into(),
        config: GroupConfig {
            partitions: 4,
            ..Default::default()
        },
    }
}

fn put(group: &str, key: &str) -> Command {
    Command::PutTombstone {
        group: group.into(),
        key: key.into(),
        locator: Locator::Key,
        ttl_ms: None,
        now_ms: 1_000,
    }
}

fn store() -> (TempDir, StateMachineStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_log, sm) = crate::store::open(dir.path()).expect("open");
    (dir, sm)
}

/// A feed of `g` after `position` that is subscribed (nothing after
/// `position` is published yet, so its first poll subscribes and waits).
fn subscribed(sm: &StateMachineStore, position: u64) -> Feed {
    let mut feed = Feed::new(sm.clone(), "g", position);
    assert!(
        feed.next().now_or_never().is_none(),
        "nothing to hand out yet"
    );
    assert!(feed.live.is_some(), "subscribed");
    feed
}

#[tokio::test]
async fn progress_never_passes_a_batch_dropped_by_an_overflow() {
    let (_dir, mut sm) = store();
    sm.hub().set_subscriber_buffer(1);
    sm.apply(vec![command(1, create("g"))]).await.expect("apply");
    let mut feed = subscribed(&sm, 1);

    // The buffer holds one batch: the second cuts the reader off.
    sm.apply(vec![command(2, put("g", "a")), command(3, put("g", "b"))])
        .await
        .expect("apply");
    assert_eq!(sm.hub().published(), 3);
    let first = feed.next().await.expect("the buffered batch");
    assert_eq!(first.revision, 2);

    assert_eq!(
        feed.progress(),
        2,
        "revision 3 was never handed out: a bookmark past it would skip it on resume"
    );
    assert_eq!(
        feed.next().await.expect_err("cut off"),
        FeedError::Overflow { position: 2 },
        "the resume point is after the last batch handed out"
    );
}

#[tokio::test]
async fn progress_never_passes_history_cut_by_a_snapshot_install() {
    let (_dir, mut sm) = store();
    sm.apply(vec![command(1, create("g")), command(2, put("g", "a"))])
        .await
        .expect("apply");
    let mut feed = subscribed(&sm, 2);

    // Another node went on and compacted past this one's position: its
    // snapshot moves this node past history it never published.
    let (_other_dir, mut other) = store();
    other
        .apply(vec![
            command(1, create("g")),
            command(2, put("g", "a")),
            command(3, put("g", "b")),
            command(4, put("g", "c")),
            command(5, Command::Compact { revision: 4 }),
            command(6, put("g", "d")),
        ])
        .await
        .expect("apply");
    let snapshot = other
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("snapshot");
    sm.install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .expect("install");
    assert_eq!(sm.hub().published(), 6);

    assert_eq!(
        feed.progress(),
        2,
        "revisions 3 to 6 were never handed out: a bookmark past them skips them in the re-list"
    );
    assert_eq!(
        feed.next().await.expect_err("history cut"),
        FeedError::Compacted {
            from: 3,
            compacted: 4
        }
    );
}
