//! Watches under load on a 3-node in-process cluster over real gRPC: while
//! workers join, split the partitions, tombstones are put and a worker
//! leaves, live watchers on the leader and on a follower get exactly the
//! committed events, the same as the stored history read back afterwards.

use std::time::Duration;

use crate::fixture::watch::{
    self as w, open, replay, revisions, tombstone_keys, without_tokens, Watched,
};
use crate::fixture::worker::{assignment, create_group, put_tombstone as put, settle, TestWorker};
use crate::fixture::{http_get, metric, three_nodes, Cluster, WAIT};
use baton_client::AdminClient;
use baton_proto::v1 as pb;
use baton_proto::v1::tombstones_client::TombstonesClient;
use baton_proto::v1::worker_client::WorkerClient;

async fn list_tombstones(admin: &mut AdminClient, group: &str) -> pb::ListTombstonesResponse {
    let request = pb::ListTombstonesRequest {
        group: group.into(),
        ..Default::default()
    };
    admin
        .call(|ch| {
            let request = request.clone();
            async move { TombstonesClient::new(ch).list(request).await }
        })
        .await
        .expect("list tombstones")
}

/// Group "g" on a 3-node cluster after the load, with what three watchers
/// opened before or during it got live, and the history read back after it.
struct Loaded {
    cluster: Cluster,
    admin: AdminClient,
    followers: Vec<u64>,
    /// Opened on the leader, from the group's creation.
    on_leader: Watched,
    /// Opened on a follower, from the group's creation.
    on_follower: Watched,
    /// Opened on the other follower from "now", during the load.
    from_now: Watched,
    /// Opened after the load, from the group's creation.
    history: Watched,
    /// The assignment at the end of the load.
    listed: pb::AssignmentResponse,
    workers: Vec<TestWorker>,
}

impl Loaded {
    /// Load: workers join and split the partitions, tombstones, one leaves.
    /// Checks on the way that the watches start where they were asked to.
    async fn run() -> Loaded {
        let cluster = three_nodes().await;
        let leader = cluster.leader(None, WAIT).await;
        let followers: Vec<u64> = cluster
            .running
            .keys()
            .copied()
            .filter(|&i| i != leader)
            .collect();
        let addr = |id: u64| cluster.node(id).addr().to_string();
        let endpoints: Vec<String> = cluster
            .running
            .values()
            .map(|n| n.addr().to_string())
            .collect();
        let mut admin = cluster.admin();

        create_group(&mut admin, "g", 16).await;
        let created = assignment(&mut admin, "g").await.revision;
        let mut on_leader = open(&addr(leader), w::request("g", created + 1))
            .await
            .expect("watch on the leader");
        let mut on_follower = open(&addr(followers[0]), w::request("g", created + 1))
            .await
            .expect("watch on a follower");
        assert_eq!(on_leader.start, created);
        assert_eq!(on_follower.start, created);

        // Load: workers join and split the partitions, tombstones, one leaves.
        let ttl = Duration::from_secs(10);
        let mut workers = Vec::new();
        for id in ["w1", "w2", "w3"] {
            workers.push(TestWorker::join(&endpoints, "g", id, ttl).await);
            settle(&mut admin, "g", "balanced", |a| a.unassigned.is_empty()).await;
        }
        let acked = put(&mut admin, "g", "key-0").await.revision;
        // A watch from "now" on a follower starts at or after the last acknowledged write.
        let mut from_now = open(&addr(followers[1]), w::request("g", 0))
            .await
            .expect("watch from now");
        assert!(
            from_now.start >= acked,
            "a start at now ({}) is linearizable: it sees the write acknowledged at {acked}",
            from_now.start
        );
        for i in 1..20 {
            put(&mut admin, "g", &format!("key-{i}")).await;
        }
        let leave = pb::LeaveRequest {
            group: "g".into(),
            worker: "w3".into(),
            session: workers[2].session,
            drain: false,
        };
        admin
            .call(|ch| {
                let leave = leave.clone();
                async move { WorkerClient::new(ch).leave(leave).await }
            })
            .await
            .expect("leave");
        settle(&mut admin, "g", "rebalanced after the leave", |a| {
            a.unassigned.is_empty()
        })
        .await;
        let listed = assignment(&mut admin, "g").await;
        let last = listed.revision;

        for watched in [&mut on_leader, &mut on_follower, &mut from_now] {
            watched.read_until(last).await;
        }
        // The whole history, read back from storage by a watch opened afterwards.
        let mut history = open(&addr(followers[1]), w::request("g", created + 1))
            .await
            .expect("history");
        history.read_until(last).await;

        Loaded {
            cluster,
            admin,
            followers,
            on_leader,
            on_follower,
            from_now,
            history,
            listed,
            workers,
        }
    }

    async fn shutdown(self) {
        drop(self.workers);
        self.cluster.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_on_leader_and_follower_get_exactly_the_stored_history() {
    let loaded = Loaded::run().await;
    let (history, on_leader, on_follower) =
        (&loaded.history, &loaded.on_leader, &loaded.on_follower);
    assert!(
        history.events.len() > 20,
        "the load made events: {}",
        history.events.len()
    );
    assert_eq!(
        on_leader.events, history.events,
        "live on the leader = stored history"
    );
    assert_eq!(
        on_follower.events, history.events,
        "live on a follower = stored history"
    );
    assert!(
        revisions(&history.events).windows(2).all(|p| p[0] < p[1]),
        "revisions strictly increase"
    );

    loaded.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_now_gets_everything_after_its_start() {
    let loaded = Loaded::run().await;
    let (history, from_now) = (&loaded.history, &loaded.from_now);
    let after_start: Vec<pb::WatchEvent> = history
        .events
        .iter()
        .filter(|e| e.revision > from_now.start)
        .cloned()
        .collect();
    assert_eq!(
        from_now.events, after_start,
        "a start at now gets everything after it"
    );
    loaded.shutdown().await;
}

/// Replaying the events on the (empty) state at creation reproduces the
/// listed assignment and tombstones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_the_history_reproduces_the_listed_assignment_and_tombstones() {
    let mut loaded = Loaded::run().await;
    let (history, listed, admin) = (&loaded.history, &loaded.listed, &mut loaded.admin);
    let mut owners = Default::default();
    replay(&mut owners, &history.events);
    assert_eq!(without_tokens(&owners), without_tokens(&w::owners(listed)));
    let mut listed_keys: Vec<String> = list_tombstones(admin, "g")
        .await
        .tombstones
        .into_iter()
        .map(|t| t.key)
        .collect();
    listed_keys.sort();
    assert_eq!(tombstone_keys(&history.events), listed_keys);

    loaded.shutdown().await;
}

/// Every revision the follower's watcher got live counts in its node's
/// delivery lag histogram (the history it read back would not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_revision_delivered_live_counts_in_the_delivery_lag_histogram() {
    let loaded = Loaded::run().await;
    let (cluster, followers, on_follower) =
        (&loaded.cluster, &loaded.followers, &loaded.on_follower);
    let live = revisions(&on_follower.events);
    let http = cluster
        .node(followers[0])
        .http_addr()
        .expect("http enabled");
    let (_, body) = http_get(http, "/metrics").await;
    let delivered = metric(&body, "baton_watch_delivery_lag_seconds_count").unwrap_or_default();
    assert!(
        delivered >= live.len() as f64,
        "{delivered} deliveries counted for {} live revisions",
        live.len()
    );

    loaded.shutdown().await;
}
