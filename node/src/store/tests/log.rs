//! The Raft log and vote: acknowledged writes survive a crash, purges and
//! truncations are durable, and a data dir of another format is refused.

use std::process::Command as Process;

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::RaftLogReader;

use super::*;

const CHILD_DIR: &str = "BATON_TEST_CRASH_CHILD_DIR";
const CHILD_STEP: &str = "BATON_TEST_CRASH_CHILD_STEP";

/// Runs one step of [`acknowledged_writes_survive_abort`] in a child process
/// that then aborts: no destructors run, so sled's own flush-on-drop never
/// happens and only what was flushed before the acknowledgement is on disk.
fn crash_after(dir: &std::path::Path, step: &str) {
    let status = Process::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "store::tests::log::acknowledged_writes_survive_abort",
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

/// Applying does not flush: the log rebuilds the applied state after a
/// crash, so it is never purged past what is applied. A purge past it (a
/// follower told to purge behind a snapshot it is still installing) waits
/// for the state machine, then goes ahead.
#[tokio::test]
async fn the_log_is_not_purged_past_the_applied_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, mut sm) = open(dir.path()).expect("open");
    let entries: Vec<Entry> = (1..=20).map(|i| barrier(1, i)).collect();
    append_acknowledged(&mut log, entries.clone()).await;
    sm.apply(entries[..10].to_vec()).await.expect("apply");
    let mut reader = log.clone();
    let mut purge = Box::pin(log.purge(log_id(1, 1, 11)));
    assert!(
        futures::poll!(&mut purge).is_pending(),
        "a purge past the applied state waits for it"
    );
    assert_eq!(indexes(&mut reader).await, (1..=20).collect::<Vec<_>>());
    sm.apply(entries[10..12].to_vec()).await.expect("apply");
    purge.await.expect("purge once applied");
    assert_eq!(indexes(&mut reader).await, (12..=20).collect::<Vec<_>>());
}

#[tokio::test]
async fn purge_and_truncate_are_durable_and_consistent() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut log, mut sm) = open(dir.path()).expect("open");
        let entries: Vec<Entry> = (1..=20).map(|i| barrier(1, i)).collect();
        append_acknowledged(&mut log, entries.clone()).await;
        sm.apply(entries).await.expect("apply");
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
        let (mut log, mut sm) = open(dir.path()).expect("open");
        let entries: Vec<Entry> = (1..=20).map(|i| barrier(1, i)).collect();
        append_acknowledged(&mut log, entries.clone()).await;
        sm.apply(entries).await.expect("apply");
        log.purge(log_id(1, 1, 5)).await.expect("purge");
        append_acknowledged(&mut log, vec![barrier(1, 21)]).await;
    }
    // Read the tree as it is on disk, without `open` finishing the purge.
    let db = sled::open(dir.path().join("sled")).expect("sled");
    let keys: Vec<u64> = db
        .open_tree(schema::LOG_TREE)
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
