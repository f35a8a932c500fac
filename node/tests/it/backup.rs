//! Backup and restore: `batonctl backup FILE` from a running cluster, the
//! cluster wiped, a new 3-node cluster started with `--restore-from FILE`,
//! and the state (groups, sessions, assignment, tombstones) read back equal;
//! revisions and fencing tokens jump past the backup's by the restore margin,
//! and the history below the jump is compacted. (The same on real processes,
//! after the lost cluster went on past the backup: the `restore` module.)

use std::time::Duration;

use crate::fixture::procs::{ctl_json, status_of};
use crate::fixture::worker::{assignment, join_unkept, put_tombstone, settle};
use crate::fixture::{three_nodes, Cluster, Members, WAIT};
use baton_client::proto as pb;
use baton_client::proto::admin_client::AdminClient as AdminGrpc;
use baton_client::proto::tombstones_client::TombstonesClient;
use baton_client::AdminClient;
use baton_node::Bootstrap;

/// Everything a backup must carry, as the API shows it, without the
/// revision each answer is read at.
#[derive(Clone, Debug, PartialEq)]
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

/// A backup of a 3-node cluster holding two groups, four workers and three
/// tombstones, taken from a follower; the cluster is then wiped.
struct Backup {
    /// The state the backup was taken of.
    before: Observed,
    backup_revision: u64,
    /// The fencing tokens the workers got.
    tokens: Vec<u64>,
    /// The backup file (the cluster's own copy went with its data).
    kept: std::path::PathBuf,
    /// Holds the backup file.
    dir: tempfile::TempDir,
}

impl Backup {
    async fn taken() -> Backup {
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
            tokens.push(join_unkept(&mut admin, "orders", worker).await.token);
        }
        tokens.push(join_unkept(&mut admin, "mail", "m1").await.token);
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

        Backup {
            before,
            backup_revision,
            tokens,
            kept,
            dir: backup,
        }
    }

    /// Restores every member of a new cluster from the file, with the same
    /// (non-default) margin `BUMP`.
    async fn restore(&self) -> Cluster {
        let mut restored = Cluster::new();
        let kept = &self.kept;
        let mut members = Members::bind(1..=3).await;
        for id in 1..=3 {
            let mut config = restored.config(id, Bootstrap::InitialMembers(members.addrs.clone()));
            config.restore_from = Some(kept.clone());
            config.restore_revision_bump = BUMP;
            restored.start_on(config, members.listener(id)).await;
        }
        restored.leader(None, WAIT).await;
        restored
    }
}

/// The margin the restores here add to the backup's revision.
const BUMP: u64 = 5_000;

/// The whole setup is the test: a follower writes the backup (after the
/// leader's read index), whole, and the wipe leaves no data behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_writes_a_whole_backup_of_the_cluster() {
    let backup = Backup::taken().await;
    assert!(backup.kept.exists());
}

/// A damaged backup is refused before anything starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_backup_is_refused_before_anything_starts() {
    let backup = Backup::taken().await;
    let restored = Cluster::new();
    let kept = &backup.kept;
    let damaged = backup.dir.path().join("damaged.backup");
    let mut bytes = std::fs::read(kept).expect("read");
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_restored_from_a_backup_has_the_same_state() {
    let backup = Backup::taken().await;
    let (before, backup_revision) = (&backup.before, backup.backup_revision);
    let restored = backup.restore().await;
    let mut admin = restored.admin();
    let after = observe(&mut admin).await;
    // The same state, but every held partition granted anew at the
    // restored revision, above any token the lost cluster handed out.
    let mut expected = before.clone();
    for a in &mut expected.assignments {
        for w in &mut a.workers {
            for grant in &mut w.grants {
                grant.token = backup_revision + BUMP;
            }
        }
    }
    assert_eq!(after, expected);

    restored.shutdown().await;
}

/// Time goes on past the backup plus the margin: later revisions and
/// fencing tokens are higher than anything it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_cluster_moves_on_past_the_backup_plus_its_margin() {
    let backup = Backup::taken().await;
    let (tokens, backup_revision) = (&backup.tokens, backup.backup_revision);
    let restored = backup.restore().await;
    let mut admin = restored.admin();
    let barrier = admin.barrier().await.expect("barrier");
    assert!(barrier.revision > backup_revision + BUMP);
    let token = join_unkept(&mut admin, "orders", "w4").await.token;
    assert!(
        token > backup_revision + BUMP && tokens.iter().all(|t| token > *t),
        "new token {token} after {tokens:?}"
    );
    restored.shutdown().await;
}

/// The tombstone keys a node holds, read from its own state.
async fn keys_on(addr: &str, group: &str) -> Vec<String> {
    let mut client = TombstonesClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let listed = client
        .list(pb::ListTombstonesRequest {
            group: group.into(),
            serializable: true,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    listed.tombstones.into_iter().map(|t| t.key).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_restored_with_another_margin_stays_behind_instead_of_diverging() {
    let mut source = Cluster::new();
    source.start_single(1).await;
    let mut admin = source.admin();
    let config = pb::GroupConfig {
        partitions: Some(1),
        ..Default::default()
    };
    admin.create_group("g", config).await.expect("group");
    let file = source.root.path().join("baton.backup");
    let path = file.to_str().expect("UTF-8 path").to_string();
    ctl_json(source.node(1).addr(), &["backup", &path]);
    let backup = tempfile::tempdir().expect("tempdir");
    let kept = backup.path().join("baton.backup");
    std::fs::copy(&file, &kept).expect("keep the backup");
    drop(admin);
    source.shutdown().await;

    // Nodes 1 and 2 restore with one margin and go on without node 3.
    const BUMP: u64 = 1_000;
    let mut restored = Cluster::new();
    let mut members = Members::bind(1..=3).await;
    let addrs = members.addrs.clone();
    let config = |cluster: &Cluster, id: u64, bump: u64| {
        let mut config = cluster.config(id, Bootstrap::InitialMembers(addrs.clone()));
        config.restore_from = Some(kept.clone());
        config.restore_revision_bump = bump;
        config
    };
    for id in 1..=2 {
        let c = config(&restored, id, BUMP);
        restored.start_on(c, members.listener(id)).await;
    }
    let leader = restored.leader(None, WAIT).await;
    let mut admin = restored.admin();
    // More entries than the margins differ by: a member that took the
    // leader's entries up to its own restore point as agreed would miss
    // these tombstones.
    for i in 0..15 {
        put_tombstone(&mut admin, "g", &format!("k{i}")).await;
    }

    // Node 3 restores with a margin 10 higher: its snapshot sits at an index
    // where the leader holds other entries.
    let c = config(&restored, 3, BUMP + 10);
    restored.start_on(c, members.listener(3)).await;
    let last = put_tombstone(&mut admin, "g", "last").await.revision;
    let on_leader = keys_on(&addrs[&leader], "g").await;
    // Another process's progress: no event to await, so poll for a while.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        let node3 = status_of(addrs[&3].parse().expect("address"))
            .await
            .expect("node 3 answers");
        if node3.revision >= last {
            assert_eq!(
                keys_on(&addrs[&3], "g").await,
                on_leader,
                "node 3 applied up to {last} with a state of its own"
            );
        } else {
            assert!(
                keys_on(&addrs[&3], "g").await.is_empty(),
                "node 3 is behind with the backup's state"
            );
        }
        // (openraft checks, in debug builds only, that nothing it takes as
        // agreed is above what it committed: a mismatch stops its Raft.)
        let running = restored.node(3).raft().with_raft_state(|_| ()).await;
        assert!(running.is_ok(), "node 3's Raft stopped: {running:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(admin);
    restored.shutdown().await;
}
