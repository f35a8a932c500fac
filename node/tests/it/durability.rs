//! What an acknowledged write survives: SIGKILL of real processes, with
//! the applied state on disk behind the log (applying does not flush).

use std::collections::BTreeMap;
use std::time::Duration;

use baton_client::{AdminClient, Consistency};

use crate::fixture::procs::single_process_with;
use crate::fixture::worker::{create_group, put_tombstone};

const WAIT: Duration = Duration::from_secs(30);

/// Applying a write does not flush the state machine: its reply goes out
/// once the entry is flushed in the log, and the state on disk catches up
/// with the next append's flush. SIGKILL right after the last reply (and
/// after snapshots that purged the log behind them) leaves the applied
/// state on disk behind the log; the restarted node re-applies the log and
/// every acknowledged tombstone is there, at the revision it was
/// acknowledged with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_between_apply_and_checkpoint_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Snapshots (and purges behind them) every 40 entries, so the kill
    // comes after several.
    let flags = ["--snapshot-every", "40"];
    let (grpc, _, node) = single_process_with(dir.path(), &flags);
    let mut admin = AdminClient::new(&[grpc.to_string()], WAIT).expect("client");
    create_group(&mut admin, "g", 8).await;
    let mut acknowledged = BTreeMap::new();
    for i in 0..150 {
        let key = format!("k{i}");
        let put = put_tombstone(&mut admin, "g", &key).await;
        acknowledged.insert(key, put.revision);
    }
    let last = acknowledged.values().max().copied().expect("puts");
    node.sigkill();

    let (grpc, _, node) = single_process_with(dir.path(), &flags);
    let mut admin = AdminClient::new(&[grpc.to_string()], WAIT).expect("client");
    let keys: Vec<String> = acknowledged.keys().cloned().collect();
    let checked = admin
        .check_tombstones("g", keys, Consistency::Linearizable)
        .await
        .expect("check after restart");
    assert!(
        checked.revision >= last,
        "the restarted node is at revision {}, before the last acknowledged write ({last})",
        checked.revision
    );
    for result in &checked.results {
        let revision = result.tombstone.as_ref().map(|t| t.revision);
        assert_eq!(
            (result.deleted, revision),
            (true, acknowledged.get(&result.key).copied()),
            "tombstone {} after the restart",
            result.key
        );
    }
    node.sigterm(Duration::from_secs(8));
}
