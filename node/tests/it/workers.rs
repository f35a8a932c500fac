//! Worker sessions on a 3-node in-process cluster: real Join calls and real
//! keepalive streams over gRPC, the leader's lease tracker and rebalance loop.
//! Workers here are test doubles that follow the leader the way the SDK will.

use crate::fixture;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::fixture::worker::*;
use crate::fixture::*;
use baton_client::AdminClient;
use baton_proto::v1 as pb;
use baton_proto::v1::admin_client::AdminClient as AdminGrpc;
use baton_proto::v1::worker_client::WorkerClient;
use tonic::Code;

fn endpoints(cluster: &Cluster) -> Vec<String> {
    cluster
        .running
        .values()
        .map(|n| n.addr().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_failover_expires_no_session_that_kept_its_lease() {
    let mut cluster = three_nodes().await;
    let endpoints = endpoints(&cluster);
    let mut admin = AdminClient::new(&endpoints, WAIT).expect("client");
    create_group(&mut admin, "g", 30).await;
    let ttl = Duration::from_millis(3_000);
    let mut workers = Vec::new();
    for id in ["w1", "w2", "w3"] {
        workers.push(TestWorker::join(&endpoints, "g", id, ttl).await);
    }
    settle(&mut admin, "g", "balanced", |a| {
        counts(a).values().all(|c| *c == 10) && a.workers.len() == 3
    })
    .await;
    let before = route_all(&mut admin, "g", 30).await;
    let sessions: BTreeMap<String, u64> =
        workers.iter().map(|w| (w.id.clone(), w.session)).collect();

    let leader = cluster.leader(None, WAIT).await;
    cluster.stop(leader).await;
    cluster.leader(Some(leader), WAIT).await;
    // Watch for longer than a TTL: a session the old leader tracked must not
    // expire on the new one while its worker keeps sending keepalives.
    tokio::time::sleep(ttl * 2).await;

    let survivors: Vec<String> = endpoints
        .iter()
        .filter(|e| cluster.running.values().any(|n| n.addr() == e.as_str()))
        .cloned()
        .collect();
    let mut admin = AdminClient::new(&survivors, WAIT).expect("client");
    let a = assignment(&mut admin, "g").await;
    let now_sessions: BTreeMap<String, u64> = a
        .workers
        .iter()
        .map(|w| (w.id.clone(), w.session))
        .collect();
    assert_eq!(
        now_sessions, sessions,
        "every session survived the failover"
    );
    assert_eq!(
        route_all(&mut admin, "g", 30).await,
        before,
        "owners and tokens unchanged"
    );
    for w in &workers {
        assert!(
            !w.keepalive.is_finished(),
            "{}'s keepalives were never refused",
            w.id
        );
    }
    cluster.shutdown().await;
}

/// An owner that keeps heartbeating but never releases a revoked partition: at
/// the group's handoff timeout the leader stops renewing its lease, and the
/// partitions reach the recipient only after that lease has run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_that_does_not_release_in_time_loses_its_lease_before_anything_is_granted() {
    let cluster = three_nodes().await;
    let endpoints = endpoints(&cluster);
    let mut admin = AdminClient::new(&endpoints, WAIT).expect("client");
    let handoff_timeout = Duration::from_millis(1_000);
    let create = pb::CreateGroupRequest {
        group: "g".into(),
        config: Some(pb::GroupConfig {
            partitions: Some(4),
            handoff_timeout_ms: Some(1_000),
            ..Default::default()
        }),
    };
    admin
        .call(|ch| {
            let create = create.clone();
            async move { AdminGrpc::new(ch).create_group(create).await }
        })
        .await
        .expect("create");
    let ttl = Duration::from_millis(2_000);
    let w1 = TestWorker::join(&endpoints, "g", "w1", ttl).await;
    wait_assignment(&mut admin, "g", WAIT, "w1 holds all", |a| {
        counts(a) == BTreeMap::from([("w1".into(), 4)])
    })
    .await;
    let w2 = TestWorker::join(&endpoints, "g", "w2", ttl).await;
    wait_assignment(&mut admin, "g", WAIT, "handoff to w2 started", |a| {
        !a.moving.is_empty()
    })
    .await;
    let handoff_started = Instant::now();

    // w1 never releases. The leader refuses its keepalives after the timeout.
    let acked = w1.acked.clone();
    let ended = tokio::time::timeout(WAIT, w1.keepalive)
        .await
        .expect("w1's keepalives are refused in time")
        .expect("keepalive task");
    let status = ended.expect_err("refused");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("handoff timeout"),
        "{}",
        status.message()
    );
    assert!(handoff_started.elapsed() >= handoff_timeout - Duration::from_millis(200));
    let last_ack = acked.borrow().expect("w1 was acknowledged before");
    tokio::time::sleep_until((last_ack + ttl - Duration::from_millis(300)).into()).await;
    let a = assignment(&mut admin, "g").await;
    assert_eq!(
        counts(&a).get("w1"),
        Some(&4),
        "nothing granted before w1's lease ran out: {a:?}"
    );

    let done = wait_assignment(&mut admin, "g", WAIT, "w2 holds all", |a| {
        counts(a) == BTreeMap::from([("w2".into(), 4)]) && a.moving.is_empty()
    })
    .await;
    assert!(
        last_ack.elapsed() >= ttl,
        "granted {:?} after w1's last acknowledged keepalive, before its TTL {ttl:?}",
        last_ack.elapsed()
    );
    assert_eq!(done.workers.len(), 1, "w1's session ended");
    drop(w2);
    cluster.shutdown().await;
}

/// An operator evicts a worker: the leader stops renewing its lease, and its
/// partitions move once the lease has run out, not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_worker_loses_its_partitions_when_its_lease_runs_out() {
    let cluster = three_nodes().await;
    let endpoints = endpoints(&cluster);
    let mut admin = AdminClient::new(&endpoints, WAIT).expect("client");
    create_group(&mut admin, "g", 6).await;
    let ttl = Duration::from_millis(2_000);
    let w1 = TestWorker::join(&endpoints, "g", "w1", ttl).await;
    let w2 = TestWorker::join(&endpoints, "g", "w2", ttl).await;
    settle(&mut admin, "g", "balanced", |a| {
        counts(a).values().all(|c| *c == 3) && a.workers.len() == 2
    })
    .await;

    let evict = pb::WorkerRef {
        group: "g".into(),
        worker: "w2".into(),
    };
    let reply = admin
        .call(|ch| {
            let evict = evict.clone();
            async move { AdminGrpc::new(ch).evict_worker(evict).await }
        })
        .await
        .expect("evict");
    assert!(
        reply.outcome.contains("no longer renews"),
        "{}",
        reply.outcome
    );
    let acked = w2.acked.clone();
    let ended = tokio::time::timeout(WAIT, w2.keepalive)
        .await
        .expect("refused in time")
        .expect("task");
    let status = ended.expect_err("w2's keepalives are refused");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("evicted"), "{}", status.message());
    let last_ack = acked.borrow().expect("acknowledged before");
    tokio::time::sleep_until((last_ack + ttl - Duration::from_millis(300)).into()).await;
    let a = assignment(&mut admin, "g").await;
    assert_eq!(
        counts(&a).get("w2"),
        Some(&3),
        "nothing moved before w2's lease ran out: {a:?}"
    );
    let done = wait_assignment(&mut admin, "g", WAIT, "w1 holds all", |a| {
        counts(a) == BTreeMap::from([("w1".into(), 6)])
    })
    .await;
    assert_eq!(done.workers.len(), 1);
    let unknown = pb::WorkerRef {
        group: "g".into(),
        worker: "nobody".into(),
    };
    let err = admin
        .call(|ch| {
            let unknown = unknown.clone();
            async move { AdminGrpc::new(ch).evict_worker(unknown).await }
        })
        .await
        .expect_err("unknown worker");
    assert_eq!(err.code(), Some(Code::NotFound));
    drop(w1);
    cluster.shutdown().await;
}

/// Keepalives are the leader's business: a follower refuses the stream with
/// UNAVAILABLE and names the leader to reconnect to, in the message and in
/// the `baton-leader` and `baton-leader-id` metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_redirects_keepalive_streams_to_the_leader() {
    let cluster = three_nodes().await;
    let leader = cluster.leader(None, WAIT).await;
    let follower = cluster
        .running
        .keys()
        .copied()
        .find(|id| *id != leader)
        .expect("a follower");
    let mut client = WorkerClient::connect(format!("http://{}", cluster.node(follower).addr()))
        .await
        .expect("connect");
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(pb::KeepAliveRequest {
        group: "g".into(),
        worker: "w".into(),
        session: 1,
        ..Default::default()
    })
    .await
    .expect("queue");
    let refused = client
        .keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect_err("a follower refuses keepalives");
    assert_eq!(refused.code(), Code::Unavailable);
    let leader_addr = cluster.node(leader).addr().to_string();
    assert!(
        refused.message().contains(&leader_addr),
        "{} names {leader_addr}",
        refused.message()
    );
    // And in metadata, for a client to act on without parsing the text.
    let metadata = |key: &str| {
        refused
            .metadata()
            .get(key)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(metadata("baton-leader"), Some(leader_addr));
    assert_eq!(metadata("baton-leader-id"), Some(leader.to_string()));
    cluster.shutdown().await;
}

/// Eviction is a committed fact: a leader elected after it goes on refusing
/// the evicted worker's keepalives (before, the mark lived only in the old
/// leader's memory and the new one renewed the lease), `worker list` shows
/// the session as evicting, and it ends with the reason "evicted".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eviction_survives_a_change_of_leader() {
    let mut cluster = three_nodes().await;
    let mut admin = cluster.admin();
    create_group(&mut admin, "g", 4).await;
    let ttl = Duration::from_millis(3_000);
    let w1 = TestWorker::join(&endpoints(&cluster), "g", "w1", ttl).await;
    let w2 = TestWorker::join(&endpoints(&cluster), "g", "w2", ttl).await;
    let session = w2.session;
    settle(&mut admin, "g", "balanced", |a| a.workers.len() == 2).await;
    // w2's own keepalives stop, so only the probe below speaks for it.
    w2.go_silent().await;
    let evict = pb::WorkerRef {
        group: "g".into(),
        worker: "w2".into(),
    };
    let evicted_at = admin
        .call(|ch| {
            let evict = evict.clone();
            async move { AdminGrpc::new(ch).evict_worker(evict).await }
        })
        .await
        .expect("evict")
        .revision;

    let old = cluster.leader(None, WAIT).await;
    cluster.stop(old).await;
    let new = cluster.leader(Some(old), WAIT).await;
    let mut admin = cluster.admin();
    let listed = admin
        .call(|ch| async move {
            AdminGrpc::new(ch)
                .list_workers(pb::ListWorkersRequest {
                    group: "g".into(),
                    serializable: false,
                })
                .await
        })
        .await
        .expect("list workers");
    let state = listed
        .workers
        .iter()
        .find(|w| w.id == "w2")
        .map(|w| w.state());
    assert_eq!(state, Some(pb::WorkerState::Evicting), "{listed:?}");

    let probe = pb::KeepAliveRequest {
        group: "g".into(),
        worker: "w2".into(),
        session,
        ..Default::default()
    };
    let (acked, _) = tokio::sync::watch::channel(None);
    let refused = tokio::time::timeout(
        WAIT,
        keep_alive(
            vec![cluster.node(new).addr().to_string()],
            probe,
            ttl,
            acked,
        ),
    )
    .await
    .expect("answered in time")
    .expect_err("the new leader refuses to renew an evicted session");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("evicted"),
        "{}",
        refused.message()
    );

    let mut watched = fixture::watch::open_retrying(
        cluster.node(new).addr(),
        fixture::watch::request("g", evicted_at),
    )
    .await;
    let reason = tokio::time::timeout(WAIT, async {
        loop {
            let message = watched.read().await.expect("the watch goes on");
            let left = message.events.iter().find_map(|e| match &e.event {
                Some(pb::watch_event::Event::WorkerLeft(l)) if l.worker == "w2" => Some(l.reason()),
                _ => None,
            });
            if let Some(reason) = left {
                return reason;
            }
        }
    })
    .await
    .expect("w2's session ended within the wait");
    assert_eq!(reason, pb::LeaveReason::Evicted);
    drop(w1);
    cluster.shutdown().await;
}
