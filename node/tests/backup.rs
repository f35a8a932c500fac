//! Backup and restore: `batonctl backup FILE` from a running cluster, the
//! cluster wiped, a new 3-node cluster started with `--restore-from FILE`,
//! and the state (groups, sessions, assignment, tombstones) read back equal;
//! revisions and fencing tokens go on from the backup's.

mod common;

use std::collections::BTreeMap;

use baton_client::proto as pb;
use baton_client::proto::admin_client::AdminClient as AdminGrpc;
use baton_client::proto::tombstones_client::TombstonesClient;
use baton_client::proto::worker_client::WorkerClient;
use baton_client::AdminClient;
use baton_node::Bootstrap;
use common::procs::{ctl_json, free_port};
use common::worker::{assignment, put_tombstone, settle};
use common::{three_nodes, Cluster, WAIT};

/// Everything a backup must carry, as the API shows it, without the
/// revision each answer is read at.
#[derive(Debug, PartialEq)]
struct Observed {
    groups: Vec<pb::Group>,
    assignments: Vec<pb::AssignmentResponse>,
    workers: Vec<Vec<pb::WorkerInfo>>,
    tombstones: Vec<Vec<pb::TombstoneInfo>>,
}

const GROUPS: [&str; 2] = ["orders", "mail"];

async fn observe(admin: &mut AdminClient) -> Observed {
    let mut groups = admin
        .call(|ch| async move {
            AdminGrpc::new(ch)
                .list_groups(pb::ListGroupsRequest::default())
                .await
        })
        .await
        .expect("groups")
        .groups;
    groups.sort_by(|a, b| a.name.cmp(&b.name));
    let (mut assignments, mut workers, mut tombstones) = (Vec::new(), Vec::new(), Vec::new());
    for group in GROUPS {
        let mut assignment = assignment(admin, group).await;
        assignment.revision = 0;
        assignments.push(assignment);
        let listed = admin
            .call(|ch| async move {
                AdminGrpc::new(ch)
                    .list_workers(pb::ListWorkersRequest {
                        group: group.to_string(),
                        ..Default::default()
                    })
                    .await
            })
            .await
            .expect("workers");
        workers.push(listed.workers);
        let listed = admin
            .call(|ch| async move {
                TombstonesClient::new(ch)
                    .list(pb::ListTombstonesRequest {
                        group: group.to_string(),
                        ..Default::default()
                    })
                    .await
            })
            .await
            .expect("tombstones");
        assert!(!listed.truncated);
        tombstones.push(listed.tombstones);
    }
    Observed {
        groups,
        assignments,
        workers,
        tombstones,
    }
}

/// Joins `worker` with a lease long enough to outlive the test (nobody
/// keeps it alive); returns its fencing token.
async fn join(admin: &mut AdminClient, group: &str, worker: &str) -> u64 {
    let request = pb::JoinRequest {
        group: group.to_string(),
        worker: worker.to_string(),
        ttl_ms: Some(300_000),
        ..Default::default()
    };
    admin
        .call(|ch| {
            let request = request.clone();
            async move { WorkerClient::new(ch).join(request).await }
        })
        .await
        .expect("join")
        .token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_restored_from_a_backup_has_the_same_state_and_moves_on_from_its_revision() {
    let cluster = three_nodes().await;
    let mut admin = cluster.admin();
    for (group, partitions) in GROUPS.into_iter().zip([64, 12]) {
        let config = pb::GroupConfig {
            partitions: Some(partitions),
            ..Default::default()
        };
        admin.create_group(group, config).await.expect("group");
    }
    let mut tokens = Vec::new();
    for worker in ["w1", "w2", "w3"] {
        tokens.push(join(&mut admin, "orders", worker).await);
    }
    tokens.push(join(&mut admin, "mail", "m1").await);
    for key in ["account-1", "account-2", "account-3"] {
        put_tombstone(&mut admin, "orders", key).await;
    }
    settle(&mut admin, "orders", "3 workers hold all", |a| {
        a.unassigned.is_empty() && a.workers.iter().all(|w| w.count > 0)
    })
    .await;
    settle(&mut admin, "mail", "m1 holds all", |a| {
        a.unassigned.is_empty()
    })
    .await;
    let before = observe(&mut admin).await;
    assert_eq!(before.groups.len(), 2);
    assert_eq!(before.tombstones[0].len(), 3);
    assert_eq!(before.workers[0].len(), 3);

    // Served by a follower: it waits for the leader's read index first.
    let leader = cluster.leader(None, WAIT).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let file = cluster.root.path().join("baton.backup");
    let path = file.to_str().expect("UTF-8 path");
    let reply = ctl_json(cluster.node(follower).addr(), &["backup", path]);
    let backup_revision = reply["revision"].as_u64().expect("revision");
    assert_eq!(
        reply["bytes"].as_u64(),
        std::fs::metadata(&file).ok().map(|m| m.len())
    );
    assert!(!file.with_extension("backup.partial").exists());

    // Wipe: stop every node and delete its data.
    let root = cluster.root.path().to_path_buf();
    let backup = tempfile::tempdir().expect("tempdir");
    let kept = backup.path().join("baton.backup");
    std::fs::copy(&file, &kept).expect("keep the backup");
    drop(admin);
    cluster.shutdown().await;
    assert!(!root.exists(), "the old cluster's data is gone");

    // A damaged backup is refused before anything starts.
    let mut restored = Cluster::new();
    let damaged = backup.path().join("damaged.backup");
    let mut bytes = std::fs::read(&kept).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&damaged, bytes).expect("write");
    let mut config = restored.config(1, Bootstrap::SingleNode);
    config.restore_from = Some(damaged);
    let refused = baton_node::Node::start(config)
        .await
        .err()
        .map(|e| format!("{e:#}"));
    assert!(
        refused.as_deref().is_some_and(|e| e.contains("checksum")),
        "{refused:?}"
    );

    // Restore every member of a new cluster from the same file.
    let addrs: BTreeMap<u64, String> = (1..=3).map(|id| (id, free_port().to_string())).collect();
    for id in 1..=3 {
        let mut config = restored.config(id, Bootstrap::InitialMembers(addrs.clone()));
        config.listen = addrs[&id].parse().expect("address");
        config.restore_from = Some(kept.clone());
        restored.start(config).await;
    }
    restored.leader(None, WAIT).await;
    let mut admin = restored.admin();
    let after = observe(&mut admin).await;
    assert_eq!(after, before);

    // Time goes on from the backup: later revisions and fencing tokens are
    // higher than anything it holds.
    let barrier = admin.barrier().await.expect("barrier");
    assert!(barrier.revision > backup_revision);
    let token = join(&mut admin, "orders", "w4").await;
    assert!(
        tokens.iter().all(|t| token > *t),
        "new token {token} after {tokens:?}"
    );
    restored.shutdown().await;
}
