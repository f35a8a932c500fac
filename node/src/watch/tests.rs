//! A [`Feed`] against a real store: what it hands out and what its progress
//! bookmark promises when the hub stops feeding it (a reader cut off for
//! falling behind, history cut by a snapshot install).

use futures::FutureExt;
use openraft::storage::RaftStateMachine;
use openraft::testing::log_id;
use openraft::{EntryPayload, RaftSnapshotBuilder};
use tempfile::TempDir;

use super::*;
use crate::domain::command::{Compact, CreateGroup, PutTombstone};
use crate::domain::{Command, GroupConfig, Locator, Proposals};
use crate::store::types::Entry;

fn command(index: u64, command: Command) -> Entry {
    Entry {
        log_id: log_id(1, 1, index),
        payload: EntryPayload::Normal(Proposals::One(command.at(1_000))),
    }
}

fn create(group: &str) -> Command {
    Command::CreateGroup(CreateGroup {
        group: group.into(),
        config: GroupConfig {
            partitions: 4,
            ..Default::default()
        },
    })
}

fn put(group: &str, key: &str) -> Command {
    Command::PutTombstone(PutTombstone {
        group: group.into(),
        key: key.into(),
        locator: Locator::Key,
        ttl_ms: None,
    })
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
    sm.apply(vec![command(1, create("g"))])
        .await
        .expect("apply");
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
            command(5, Command::Compact(Compact { revision: 4 })),
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

/// Applies `count` tombstone puts, one revision each, after `last`: to `g`
/// every `every`th, to `h` otherwise; keys of `key_bytes`. Returns the
/// revisions that went to `g`.
async fn fill(
    sm: &mut StateMachineStore,
    last: u64,
    count: u64,
    every: u64,
    key_bytes: usize,
) -> Vec<u64> {
    let mut to_g = Vec::new();
    let entries: Vec<Entry> = (last + 1..=last + count)
        .map(|i| {
            let group = if i % every == 0 { "g" } else { "h" };
            if group == "g" {
                to_g.push(i);
            }
            let key = format!("{i:0>key_bytes$}");
            command(i, put(group, &key))
        })
        .collect();
    sm.apply(entries).await.expect("apply");
    to_g
}

fn revisions(batches: &[Batch]) -> Vec<u64> {
    batches.iter().map(|b| b.revision).collect()
}

#[tokio::test]
async fn a_history_read_looks_at_no_more_than_its_limit() {
    let (_dir, mut sm) = store();
    sm.apply(vec![command(1, create("g")), command(2, create("h"))])
        .await
        .expect("apply");
    let mut expected = vec![1];
    expected.extend(fill(&mut sm, 2, 3_000, 7, 8).await);
    let to = sm.hub().published();
    assert_eq!(to, 3_002);

    // Every revision holds a stored batch here, so a read that looks at no
    // more than 100 of them covers no more than 100 revisions.
    let (mut from, mut read, mut reads) = (1, Vec::new(), 0);
    while from <= to {
        let (batches, covered) = sm.history("g", from, to, 100).expect("history");
        assert!(
            covered >= from && covered - from < 100,
            "a read from {from} covered up to {covered}"
        );
        assert!(batches.iter().all(|b| b.group == "g"), "only g's batches");
        assert!(
            batches
                .iter()
                .all(|b| (from..=covered).contains(&b.revision)),
            "all within what the read covers"
        );
        read.extend(batches);
        from = covered + 1;
        reads += 1;
    }
    assert_eq!(reads, 31, "3,002 revisions in reads of 100");
    assert_eq!(
        revisions(&read),
        expected,
        "every batch of g, once, in order"
    );
}

#[tokio::test]
async fn a_history_read_stops_after_its_byte_budget() {
    let (_dir, mut sm) = store();
    sm.apply(vec![command(1, create("g"))])
        .await
        .expect("apply");
    // About 1 KB per batch: twice the budget in all.
    let count = 2 * (HISTORY_READ_BYTES as u64) / 1_000;
    fill(&mut sm, 1, count, 1, 1_000).await;
    let to = sm.hub().published();

    let (mut from, mut read, mut reads) = (1, 0, 0);
    while from <= to {
        let (batches, covered) = sm.history("g", from, to, usize::MAX).expect("history");
        let sizes: Vec<usize> = batches
            .iter()
            .map(|b| bincode::serialize(b).expect("encode").len())
            .collect();
        let largest = sizes.iter().copied().max().unwrap_or(0);
        assert!(
            sizes.iter().sum::<usize>() <= HISTORY_READ_BYTES + largest,
            "a read decodes its budget and one batch more at most"
        );
        read += batches.len() as u64;
        from = covered + 1;
        reads += 1;
    }
    assert_eq!(read, count + 1, "every batch, across the reads");
    assert!(reads >= 2, "the history is read in more than one chunk");
}

#[tokio::test]
async fn a_feed_resuming_over_a_long_history_holds_one_chunk_at_a_time() {
    let (_dir, mut sm) = store();
    sm.apply(vec![command(1, create("g")), command(2, create("h"))])
        .await
        .expect("apply");
    let mut expected = vec![1];
    expected.extend(fill(&mut sm, 2, 5 * HISTORY_CHUNK as u64, 2, 8).await);
    let to = sm.hub().published();

    let mut feed = Feed::new(sm.clone(), "g", 0);
    // A `next` dropped while the history is read (as `select!` drops it)
    // leaves the read running, kept by the feed.
    assert!(
        feed.next().now_or_never().is_none(),
        "the read is under way"
    );
    assert!(feed.reading.is_some(), "the read is kept");

    let mut delivered = Vec::new();
    let mut most_pending = 0;
    while delivered.len() < expected.len() {
        let batch = feed.next().await.expect("next");
        most_pending = most_pending.max(feed.pending.len() + 1);
        delivered.push(batch.revision);
    }
    assert_eq!(delivered, expected, "every batch of g, once, in order");
    assert!(
        most_pending <= HISTORY_CHUNK / 2,
        "one chunk (half of it g's) decoded at a time, not {most_pending}"
    );
    assert_eq!(feed.progress(), expected[expected.len() - 1]);

    // Then it goes on live.
    assert!(feed.next().now_or_never().is_none(), "caught up");
    assert!(feed.live.is_some(), "subscribed at {to}");
    sm.apply(vec![command(to + 1, put("g", "live"))])
        .await
        .expect("apply");
    assert_eq!(feed.next().await.expect("live").revision, to + 1);
}
