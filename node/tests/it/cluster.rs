//! In-process cluster tests: several nodes in one process, talking real gRPC
//! over loopback on ports the OS picks, with real sled data dirs. Waits are on
//! Raft metrics (events), never sleeps.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use baton_node::raft::RaftTuning;
use baton_node::{Bootstrap, Node, NodeConfig};
use baton_proto::v1::admin_client::AdminClient as RawAdmin;
use baton_proto::v1::{AddNodeRequest, BarrierRequest, PromoteNodeRequest, RemoveNodeRequest};
use openraft::storage::RaftLogStorage;

use crate::fixture::*;

/// Three nodes elect a leader, commit 20 writes and apply them everywhere;
/// returns the cluster, the leader and the revision reached.
async fn replicated() -> (Cluster, u64, u64) {
    let cluster = three_nodes().await;
    let leader = cluster.leader(None, WAIT).await;
    assert_eq!(cluster.voters(leader), BTreeSet::from([1, 2, 3]));

    let revision = cluster.write(20).await;
    cluster.applied_everywhere(revision).await;
    for node in cluster.running.values() {
        assert_eq!(
            node.revision(),
            revision,
            "node {} state machine is at the same revision",
            node.id()
        );
    }

    (cluster, leader, revision)
}

/// Stops the leader: the two others elect a new one within 2 s, and keep
/// committing without it. Returns the revision they reached.
async fn leader_stopped(cluster: &mut Cluster, leader: u64, revision: u64) -> u64 {
    cluster.stop(leader).await;
    let stopped_at = Instant::now();
    let new_leader = cluster.leader(Some(leader), Duration::from_secs(2)).await;
    eprintln!(
        "new leader {new_leader} elected {:?} after stopping {leader}",
        stopped_at.elapsed()
    );
    assert_ne!(new_leader, leader);

    // They keep committing without it.
    let later = cluster.write(20).await;
    assert!(later > revision);
    cluster.applied_everywhere(later).await;

    later
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_a_leader_and_apply_the_same_revision_everywhere() {
    let (cluster, _, _) = replicated().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_leader_stops_the_others_elect_a_new_one_and_keep_committing() {
    let (mut cluster, leader, revision) = replicated().await;
    leader_stopped(&mut cluster, leader, revision).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_has_what_it_acknowledged_in_its_data_dir() {
    let (mut cluster, leader, revision) = replicated().await;
    leader_stopped(&mut cluster, leader, revision).await;
    // What the stopped node acknowledged is in its data dir.
    {
        let (mut log, sm) =
            baton_node::store::open(&cluster.data_dir(leader)).expect("open stopped node's data");
        let on_disk = log
            .get_log_state()
            .await
            .expect("log state")
            .last_log_id
            .map_or(0, |l| l.index);
        assert!(
            on_disk >= revision,
            "log on disk ends at {on_disk}, node had {revision}"
        );
        assert!(
            sm.revision() >= revision,
            "applied state on disk is at {}",
            sm.revision()
        );
    }

    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_restarts_from_its_data_dir_and_catches_up() {
    let (mut cluster, leader, revision) = replicated().await;
    leader_stopped(&mut cluster, leader, revision).await;
    // It restarts from that data dir and catches up.
    let before_restart = Instant::now();
    cluster.restart(leader).await;
    let last = cluster.write(5).await;
    cluster.applied_everywhere(last).await;
    eprintln!("restarted node caught up in {:?}", before_restart.elapsed());
    assert_eq!(cluster.node(leader).revision(), last);

    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_requests_to_a_follower_are_forwarded_to_the_leader() {
    let cluster = three_nodes().await;
    let leader = cluster.leader(None, WAIT).await;
    let follower = cluster
        .running
        .keys()
        .copied()
        .find(|id| *id != leader)
        .expect("a follower");
    let mut raw = RawAdmin::connect(format!("http://{}", cluster.node(follower).addr()))
        .await
        .expect("connect to follower");
    let reply = raw
        .barrier(BarrierRequest {})
        .await
        .expect("forwarded barrier")
        .into_inner();
    assert_eq!(reply.leader_id, leader, "the leader committed it");
    let applied = tokio::time::timeout(WAIT, cluster.node(follower).wait_revision(reply.revision));
    assert!(
        applied.await.is_ok_and(|running| running),
        "the follower applies the forwarded write"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learner_added_after_log_purge_catches_up_by_snapshot() {
    let mut cluster = Cluster::new();
    cluster.start_single(1).await;
    let revision = cluster.write(50).await;

    let node = cluster.node(1);
    // Snapshots and purges are by log index, which a batch makes differ
    // from the revision.
    let index = node
        .raft()
        .metrics()
        .borrow()
        .last_applied
        .map_or(0, |l| l.index);
    node.raft()
        .trigger()
        .snapshot()
        .await
        .expect("trigger snapshot");
    node.raft()
        .wait(Some(WAIT))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= index),
            "snapshot built",
        )
        .await
        .expect("snapshot");
    node.raft()
        .trigger()
        .purge_log(index)
        .await
        .expect("trigger purge");
    node.raft()
        .wait(Some(WAIT))
        .metrics(|m| m.purged.is_some_and(|p| p.index >= index), "log purged")
        .await
        .expect("purged");

    // The log no longer holds what the new node needs: it must get a snapshot.
    cluster.join(2).await;
    cluster.applied_everywhere(revision).await;
    let learner = cluster.node(2).raft().metrics().borrow().clone();
    assert!(
        learner.snapshot.is_some_and(|s| s.index >= index),
        "node 2 installed a snapshot covering the purged log: {:?}",
        learner.snapshot
    );
    // The join's own membership entries may still be on their way to node 2.
    let leader_revision = cluster.node(1).revision();
    cluster.applied_everywhere(leader_revision).await;
    assert_eq!(cluster.node(2).revision(), leader_revision);
    assert_eq!(cluster.voters(2), BTreeSet::from([1, 2]));

    // And it keeps replicating from the log afterwards.
    let later = cluster.write(3).await;
    cluster.applied_everywhere(later).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_grows_from_three_to_five_and_shrinks_back_to_three() {
    let mut cluster = three_nodes().await;
    cluster.join(4).await;
    cluster.join(5).await;
    let leader = cluster.leader(None, WAIT).await;
    assert_eq!(cluster.voters(leader), BTreeSet::from([1, 2, 3, 4, 5]));
    let revision = cluster.write(10).await;
    cluster.applied_everywhere(revision).await;

    // Remove the leader and one other node: the leader steps down once the
    // change is committed, and the remaining three carry on.
    let other = cluster
        .running
        .keys()
        .copied()
        .find(|id| *id != leader)
        .expect("another node");
    let mut admin = cluster.admin();
    admin.remove_node(leader).await.expect("remove the leader");
    admin
        .remove_node(other)
        .await
        .expect("remove another voter");
    cluster.stop(leader).await;
    cluster.stop(other).await;

    let survivor = *cluster.running.keys().next().expect("survivors");
    let expected: BTreeSet<u64> = cluster.running.keys().copied().collect();
    assert_eq!(expected.len(), 3);
    cluster
        .node(survivor)
        .raft()
        .wait(Some(WAIT))
        .metrics(
            |m| {
                m.membership_config
                    .membership()
                    .voter_ids()
                    .collect::<BTreeSet<_>>()
                    == expected
            },
            "membership shrinks to three",
        )
        .await
        .expect("three voters");
    assert_eq!(
        cluster.members(survivor),
        expected,
        "removed voters do not linger as learners"
    );
    let new_leader = cluster.leader(Some(leader), WAIT).await;
    assert!(expected.contains(&new_leader));
    let later = cluster.write(5).await;
    cluster.applied_everywhere(later).await;
    cluster.shutdown().await;
}

/// A single-node cluster, a raw admin client on it, and its Raft metrics
/// before any membership request.
struct Lone {
    cluster: Cluster,
    raw: RawAdmin<tonic::transport::Channel>,
    before: openraft::RaftMetrics<u64, openraft::BasicNode>,
}

impl Lone {
    async fn start() -> Lone {
        let mut cluster = Cluster::new();
        cluster.start_single(1).await;
        let node = cluster.node(1);
        cluster.leader(None, WAIT).await;
        let raw = RawAdmin::connect(format!("http://{}", node.addr()))
            .await
            .expect("connect");
        let before = node.raft().metrics().borrow().clone();
        Lone {
            cluster,
            raw,
            before,
        }
    }

    /// Asserts the cluster is exactly as it was: no membership change, no
    /// log entry; and stops it.
    async fn unchanged(self) {
        let after = self.cluster.node(1).raft().metrics().borrow().clone();
        let before = self.before;
        assert_eq!(
            after.membership_config, before.membership_config,
            "membership unchanged"
        );
        assert_eq!(
            after.last_log_index, before.last_log_index,
            "nothing was written to the log"
        );
        self.cluster.shutdown().await;
    }
}

fn add(id: u64, addr: &str) -> AddNodeRequest {
    AddNodeRequest {
        id,
        addr: addr.to_string(),
        promote: true,
    }
}

/// Every bad membership request answers with a precise status and leaves the
/// cluster exactly as it was: no membership change, no log entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_membership_requests_are_refused_and_change_nothing() {
    let mut lone = Lone::start().await;
    let raw = &mut lone.raw;
    let leader_addr = lone.cluster.node(1).addr().to_string();
    let cases: Vec<(&str, Result<(), tonic::Status>, tonic::Code, &str)> = vec![
        (
            "remove an unknown node",
            raw.remove_node(RemoveNodeRequest { id: 9 }).await.map(drop),
            tonic::Code::NotFound,
            "node 9 is not a member",
        ),
        (
            "promote an unknown node",
            raw.promote_node(PromoteNodeRequest { id: 9 })
                .await
                .map(drop),
            tonic::Code::NotFound,
            "node 9 is not a member",
        ),
        (
            "add with a malformed address",
            raw.add_node(add(2, "localhost")).await.map(drop),
            tonic::Code::InvalidArgument,
            "not HOST:PORT",
        ),
        (
            "add with a port out of range",
            raw.add_node(add(2, "127.0.0.1:70000")).await.map(drop),
            tonic::Code::InvalidArgument,
            "port must be 1 to 65535",
        ),
        (
            "add node id 0",
            raw.add_node(add(0, "127.0.0.1:7999")).await.map(drop),
            tonic::Code::InvalidArgument,
            "positive integer",
        ),
        (
            "remove the last voter",
            raw.remove_node(RemoveNodeRequest { id: 1 }).await.map(drop),
            tonic::Code::FailedPrecondition,
            "last voter",
        ),
        (
            "add an id twice",
            raw.add_node(add(1, "127.0.0.1:7999")).await.map(drop),
            tonic::Code::AlreadyExists,
            "node 1 is already a voter",
        ),
        (
            "add a second node on the leader's address",
            raw.add_node(add(5, &leader_addr)).await.map(drop),
            tonic::Code::AlreadyExists,
            "already belongs to node 1",
        ),
        (
            "promote a voter",
            raw.promote_node(PromoteNodeRequest { id: 1 })
                .await
                .map(drop),
            tonic::Code::FailedPrecondition,
            "already a voter",
        ),
        (
            "add a node nobody runs",
            raw.add_node(add(2, "127.0.0.1:1")).await.map(drop),
            tonic::Code::FailedPrecondition,
            "cannot reach node 2",
        ),
    ];
    for (what, result, code, message) in cases {
        let status = result.err().unwrap_or_else(|| panic!("{what}: accepted"));
        assert_eq!(status.code(), code, "{what}: {status:?}");
        assert!(
            status.message().contains(message),
            "{what}: {:?} lacks {message:?}",
            status.message()
        );
    }

    lone.unchanged().await;
}

/// A node that formed its own cluster cannot be added: its log would conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_cluster_cannot_be_added() {
    let mut lone = Lone::start().await;
    let raw = &mut lone.raw;
    let mut other = Cluster::new();
    other.start_single(2).await;
    other.leader(None, WAIT).await;
    let status = raw
        .add_node(add(2, other.node(2).addr()))
        .await
        .expect_err("a node of another cluster is refused");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(
        status
            .message()
            .contains("already belongs to another cluster"),
        "{}",
        status.message()
    );
    other.shutdown().await;
    lone.unchanged().await;
}

/// Nor can an address that answers as a different id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_that_answers_as_another_id_cannot_be_added() {
    let mut lone = Lone::start().await;
    let raw = &mut lone.raw;
    let mut other = Cluster::new();
    other.start_single(2).await;
    other.leader(None, WAIT).await;
    let status = raw
        .add_node(add(3, other.node(2).addr()))
        .await
        .expect_err("wrong id refused");
    assert!(
        status.message().contains("answers as node 2, not node 3"),
        "{}",
        status.message()
    );
    other.shutdown().await;

    lone.unchanged().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_reports_health_readiness_and_raft_metrics() {
    let mut cluster = Cluster::new();
    cluster.start_single(1).await;
    cluster.leader(None, WAIT).await;
    cluster.write(3).await;
    // Log indexes (a batch makes them differ from revisions). Raft's own
    // metrics may report the last write's apply a moment after it
    // answered, so the scrape is bracketed: at least what was applied
    // before it, at most what was logged after.
    let applied = || {
        cluster
            .node(1)
            .raft()
            .metrics()
            .borrow()
            .last_applied
            .map_or(0, |l| l.index)
    };
    let http = cluster.node(1).http_addr().expect("http enabled");
    assert_eq!(http_get(http, "/healthz").await.0, 200);
    let (code, body) = http_get(http, "/readyz").await;
    assert_eq!(code, 200, "{body}");
    let before = applied();
    let (code, metrics) = http_get(http, "/metrics").await;
    let after = cluster
        .node(1)
        .raft()
        .metrics()
        .borrow()
        .last_log_index
        .unwrap_or(0);
    assert_eq!(code, 200);
    for line in [
        "baton_raft_is_leader 1",
        "baton_raft_leader_id 1",
        "baton_raft_voters 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in\n{metrics}"
        );
    }
    for series in ["baton_raft_applied_index", "baton_raft_committed_index"] {
        let value = metric(&metrics, series).expect(series) as u64;
        assert!(
            before >= 3 && (before..=after).contains(&value),
            "{series} {value}: applied {before} before, logged {after} after:\n{metrics}"
        );
    }
    assert_eq!(http_get(http, "/nope").await.0, 404);
    cluster.shutdown().await;
}

/// A learner waiting to join has no leader: not ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_has_not_joined_is_not_ready() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut config = NodeConfig::ephemeral(7, root.path().join("n7"));
    // Static bootstrap where this node is not the lowest id: it waits for node 1.
    config.bootstrap = Bootstrap::InitialMembers(BTreeMap::from([
        (1, "127.0.0.1:1".to_string()),
        (7, "127.0.0.1:2".to_string()),
    ]));
    config.tuning = RaftTuning::default();
    let node = Node::start(config).await.expect("start");
    let (code, body) = http_get(node.http_addr().expect("http"), "/readyz").await;
    assert_eq!(code, 503);
    assert!(body.contains("no leader"), "{body}");
    node.shutdown().await.expect("shutdown");
}

/// Writes that reach the leader together share entries (the proposer's
/// batches, `cluster::batcher`) and appends (one log flush for the entries
/// queued together, the vendored openraft's `write_batch`), yet each has its
/// own revision and its own reply, and what it wrote is there under that
/// revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_sent_at_once_each_get_their_own_revision_and_reply() {
    use baton_proto::v1 as pb;
    use baton_proto::v1::tombstones_client::TombstonesClient;

    const WRITES: usize = 300;
    let cluster = three_nodes().await;
    let leader = cluster.leader(None, WAIT).await;
    let mut admin = cluster.admin();
    crate::fixture::worker::create_group(&mut admin, "g", 16).await;
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", cluster.node(leader).addr()))
            .expect("uri")
            .connect()
            .await
            .expect("connect");

    let metrics = cluster.node(leader).store_metrics();
    let (appends, commands) = (
        metrics.log_append_entries.clone(),
        metrics.entry_commands.clone(),
    );
    // The leader batches only once every member has answered its `Features`
    // call, asked in the background (again every 2 s if a member was not
    // up yet): rounds of concurrent writes until one shares an entry.
    let deadline = std::time::Instant::now() + WAIT;
    for round in 0.. {
        let (sum, count) = (commands.get_sample_sum(), commands.get_sample_count());
        let warm = (0..20).map(|i| {
            let mut client = TombstonesClient::new(channel.clone());
            async move {
                client
                    .put(pb::PutTombstoneRequest {
                        group: "g".into(),
                        key: format!("warm-{round}-{i}"),
                        ..Default::default()
                    })
                    .await
                    .expect("warm-up put")
            }
        });
        futures::future::join_all(warm).await;
        if commands.get_sample_sum() - sum > (commands.get_sample_count() - count) as f64 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the leader never batched concurrent writes within {WAIT:?}"
        );
    }
    let appends_before = appends.get_sample_count();
    let (commands_before, entries_before) =
        (commands.get_sample_sum(), commands.get_sample_count());
    let puts = (0..WRITES).map(|i| {
        let mut client = TombstonesClient::new(channel.clone());
        async move {
            let reply = client
                .put(pb::PutTombstoneRequest {
                    group: "g".into(),
                    key: format!("k{i}"),
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner().revision);
            (format!("k{i}"), reply)
        }
    });
    let replies: Vec<(String, Result<u64, tonic::Status>)> = futures::future::join_all(puts).await;
    let revisions: BTreeMap<String, u64> = replies
        .into_iter()
        .map(|(key, reply)| (key, reply.expect("every write is answered")))
        .collect();
    let distinct: BTreeSet<u64> = revisions.values().copied().collect();
    assert_eq!(distinct.len(), WRITES, "each write has its own revision");
    let flushes = appends.get_sample_count() - appends_before;
    assert!(
        flushes < WRITES as u64,
        "{WRITES} writes at once share appends: {WRITES} writes in {flushes} appends on the leader"
    );
    let applied = commands.get_sample_sum() - commands_before;
    let entries = commands.get_sample_count() - entries_before;
    assert!(
        applied > entries as f64,
        "{WRITES} writes at once share entries: {applied} commands in {entries} entries"
    );

    let checked = TombstonesClient::new(channel)
        .check(pb::CheckTombstonesRequest {
            group: "g".into(),
            keys: revisions.keys().cloned().collect(),
            serializable: false,
        })
        .await
        .expect("check")
        .into_inner();
    for result in checked.results {
        let stored = result.tombstone.map(|t| t.revision);
        assert_eq!(
            stored,
            Some(revisions[&result.key]),
            "{} holds the revision its write was answered with",
            result.key
        );
    }
    cluster.shutdown().await;
}

/// openraft counts entries, but an entry may carry many commands: a node
/// also builds a snapshot once `snapshot_every` revisions have been applied
/// (`raft::snapshots`), so a log of few, large entries is still compacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_is_built_every_snapshot_every_revisions_even_in_few_entries() {
    use baton_proto::v1 as pb;
    use baton_proto::v1::tombstones_client::TombstonesClient;

    const EVERY: u64 = 100;
    let mut cluster = Cluster::new();
    let mut config = cluster.config(1, Bootstrap::SingleNode);
    config.tuning.snapshot_every = EVERY;
    cluster.start(config).await;
    cluster.leader(None, WAIT).await;
    let mut admin = cluster.admin();
    crate::fixture::worker::create_group(&mut admin, "g", 4).await;
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", cluster.node(1).addr()))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
    let puts = (0..2 * EVERY).map(|i| {
        let mut client = TombstonesClient::new(channel.clone());
        async move {
            client
                .put(pb::PutTombstoneRequest {
                    group: "g".into(),
                    key: format!("k{i}"),
                    ..Default::default()
                })
                .await
                .expect("put")
        }
    });
    futures::future::join_all(puts).await;

    let node = cluster.node(1);
    let entries = node.raft().metrics().borrow().last_log_index.unwrap_or(0);
    assert!(
        entries < EVERY,
        "precondition: {} writes sent at once were batched into fewer than {EVERY} entries \
         (got {entries}), so only the revision count can trigger a snapshot",
        2 * EVERY
    );
    let built = node
        .raft()
        .wait(Some(WAIT))
        .metrics(|m| m.snapshot.is_some(), "a snapshot is built")
        .await;
    assert!(
        built.is_ok(),
        "no snapshot after {} revisions in {entries} entries (snapshot_every {EVERY})",
        node.revision()
    );
    cluster.shutdown().await;
}
