//! The Watch API on a 3-node in-process cluster over real gRPC: progress
//! notifications, compaction and the re-list path, slow watchers cut off
//! without holding back the others, tombstone barriers, and requests
//! validated. (Exact history under load: the `history` module.)

use crate::fixture;

use std::time::{Duration, Instant};

use crate::fixture::watch::{self as w, open, replay, tombstone_keys, without_tokens};
use crate::fixture::worker::{assignment, create_group, put_tombstone as put, settle, TestWorker};
use crate::fixture::{three_nodes, WAIT};
use baton_client::AdminClient;
use baton_proto::v1 as pb;
use baton_proto::v1::admin_client::AdminClient as AdminGrpc;
use baton_proto::v1::tombstones_client::TombstonesClient;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_streams_get_progress_that_never_goes_back() {
    let mut cluster = fixture::Cluster::new();
    cluster.start_single(1).await;
    let mut admin = cluster.admin();
    create_group(&mut admin, "idle", 4).await;
    let mut watched = open(cluster.node(1).addr(), w::request("idle", 0))
        .await
        .expect("watch");
    let start = watched.position;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let message = tokio::time::timeout(w::PROGRESS_WAIT, watched.read())
            .await
            .expect("a progress notification within 2 s on an idle stream")
            .expect("stream");
        assert!(message.events.is_empty());
        seen.push(message.revision);
    }
    // A write to the cluster that is not in this group moves progress forward.
    let other = admin.barrier().await.expect("barrier").revision;
    loop {
        let message = tokio::time::timeout(w::PROGRESS_WAIT, watched.read())
            .await
            .expect("progress")
            .expect("stream");
        seen.push(message.revision);
        if message.revision >= other {
            break;
        }
    }
    assert!(seen.iter().all(|&r| r >= start), "{seen:?} from {start}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_below_compaction_gets_compacted_and_relisting_recovers_the_state() {
    let cluster = three_nodes().await;
    let endpoints: Vec<String> = cluster
        .running
        .values()
        .map(|n| n.addr().to_string())
        .collect();
    let mut admin = cluster.admin();
    create_group(&mut admin, "c", 8).await;
    let created = assignment(&mut admin, "c").await.revision;
    let _w1 = TestWorker::join(&endpoints, "c", "w1", Duration::from_secs(10)).await;
    settle(&mut admin, "c", "w1 holds all", |a| a.unassigned.is_empty()).await;
    for i in 0..5 {
        put(&mut admin, "c", &format!("old-{i}")).await;
    }
    let compact_to = admin.barrier().await.expect("barrier").revision;
    let request = pb::CompactRequest {
        revision: compact_to,
    };
    let compacted = admin
        .call(|ch| async move { AdminGrpc::new(ch).compact(request).await })
        .await
        .expect("compact");
    assert_eq!(compacted.compacted, compact_to);
    cluster.applied_everywhere(compacted.revision).await;

    // Every node refuses the compacted start, saying where history begins.
    for node in cluster.running.values() {
        let err = open(node.addr(), w::request("c", created + 1))
            .await
            .err()
            .expect("a compacted start fails");
        assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
        assert_eq!(
            baton_client::watch::compacted_revision(&err),
            Some(compact_to),
            "{err:?}"
        );
    }

    // Re-list, then watch from the list's revision + 1 while things change.
    let listed = assignment(&mut admin, "c").await;
    let mut watched = open(&endpoints[1], w::request("c", listed.revision + 1))
        .await
        .expect("watch after re-list");
    let _w2 = TestWorker::join(&endpoints, "c", "w2", Duration::from_secs(10)).await;
    settle(&mut admin, "c", "shared by two", |a| {
        a.workers.len() == 2 && a.unassigned.is_empty()
    })
    .await;
    for i in 0..5 {
        put(&mut admin, "c", &format!("new-{i}")).await;
    }
    let now = assignment(&mut admin, "c").await;
    watched.read_until(now.revision).await;
    let mut owners = w::owners(&listed);
    replay(&mut owners, &watched.events);
    assert_eq!(without_tokens(&owners), without_tokens(&w::owners(&now)));
    assert_eq!(
        tombstone_keys(&watched.events),
        (0..5).map(|i| format!("new-{i}")).collect::<Vec<_>>()
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstone_barrier_waits_for_the_owners_ack_or_its_lease_end() {
    let mut cluster = fixture::Cluster::new();
    cluster.start_single(1).await;
    let endpoints = vec![cluster.node(1).addr().to_string()];
    let mut admin = cluster.admin();
    create_group(&mut admin, "b", 2).await;
    let ttl = Duration::from_secs(2);
    let owner = TestWorker::join(&endpoints, "b", "owner", ttl).await;
    settle(&mut admin, "b", "owner holds all", |a| {
        a.unassigned.is_empty()
    })
    .await;
    let mut events = open(&endpoints[0], w::request("b", 0))
        .await
        .expect("watch");

    let barrier_put = |key: &str| {
        let request = pb::PutTombstoneRequest {
            group: "b".into(),
            key: key.into(),
            wait: pb::Wait::Acknowledged as i32,
            wait_timeout_ms: Some(20_000),
            ..Default::default()
        };
        let mut admin = admin_for(&endpoints);
        tokio::spawn(async move {
            let started = Instant::now();
            let reply = admin
                .call(|ch| {
                    let request = request.clone();
                    async move { TombstonesClient::new(ch).put(request).await }
                })
                .await
                .expect("barrier put");
            (reply, started.elapsed())
        })
    };

    // 1. Acknowledged: the put is committed, then waits for the owner's Ack.
    let waiting = barrier_put("doc-1");
    let revision = loop {
        events.read().await.expect("stream");
        let added = events.events.iter().find_map(|e| match &e.event {
            Some(pb::watch_event::Event::TombstoneAdded(t)) => Some((e.revision, t.owner.clone())),
            _ => None,
        });
        if let Some((revision, to)) = added {
            assert_eq!(to, "owner", "the tombstone goes to the partition's owner");
            break revision;
        }
    };
    // Committed and delivered, and the put still waits.
    assert!(
        !waiting.is_finished(),
        "the barrier put returned before the owner acknowledged"
    );
    let ack = pb::AckTombstonesRequest {
        group: "b".into(),
        worker: "owner".into(),
        session: owner.session,
        revision,
    };
    admin
        .call(|ch| {
            let ack = ack.clone();
            async move { TombstonesClient::new(ch).ack(ack).await }
        })
        .await
        .expect("ack");
    let (reply, _) = waiting.await.expect("put task");
    assert_eq!(reply.barrier(), pb::Barrier::Acknowledged);
    assert_eq!(reply.owner, "owner");
    assert_eq!(reply.revision, revision);

    // 2. The owner dies: the put returns once its lease has ended, saying so.
    let waiting = barrier_put("doc-2");
    let silent_since = owner.go_silent().await;
    let (reply, _) = waiting.await.expect("put task");
    assert_eq!(reply.barrier(), pb::Barrier::OwnerExpired, "{reply:?}");
    assert!(
        silent_since.elapsed() >= ttl,
        "returned {:?} after the last acknowledged keepalive, before the {ttl:?} lease ended",
        silent_since.elapsed()
    );

    // 3. No owner: it returns at once with that fact.
    let (reply, _) = barrier_put("doc-3").await.expect("put task");
    assert_eq!(reply.barrier(), pb::Barrier::NoOwner);
    assert!(reply.owner.is_empty());
    cluster.shutdown().await;
}

fn admin_for(endpoints: &[String]) -> AdminClient {
    AdminClient::new(endpoints, WAIT).expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_requests_are_validated() {
    let mut cluster = fixture::Cluster::new();
    cluster.start_single(1).await;
    let addr = cluster.node(1).addr().to_string();
    let mut admin = cluster.admin();
    create_group(&mut admin, "v", 1).await;
    let err = |r| async { open(&addr, r).await.err().expect("refused") };
    assert_eq!(err(w::request("nope", 0)).await.code(), Code::NotFound);
    assert_eq!(
        err(w::request("Bad Name!", 0)).await.code(),
        Code::InvalidArgument
    );
    let mut bad_kind = w::request("v", 0);
    bad_kind.kinds = vec![42];
    assert_eq!(err(bad_kind).await.code(), Code::InvalidArgument);
    let future = err(w::request("v", 1_000_000)).await;
    assert_eq!(future.code(), Code::OutOfRange, "{future:?}");
    assert!(future.message().contains("future"), "{future:?}");
    cluster.shutdown().await;
}

/// Delivery latencies (write acknowledged → event received) of `watchers`
/// normal watchers while `writes` tombstones are put by 4 concurrent writers;
/// with `slow`, one more watcher that does not read until the end (its client
/// window is tiny, so the node cannot push past it). Returns the sorted
/// latencies and how the slow watcher ended.
async fn delivery_under_load(
    addr: &str,
    group: &str,
    tag: &str,
    watchers: usize,
    writes: usize,
    slow: bool,
) -> (Vec<Duration>, Option<tonic::Status>) {
    let slow_stream = if slow {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .initial_stream_window_size(Some(1024))
            .initial_connection_window_size(Some(1024))
            .connect()
            .await
            .expect("connect");
        let mut client = baton_proto::v1::watch_client::WatchClient::new(channel);
        Some(
            client
                .watch(w::request(group, 0))
                .await
                .expect("slow watch")
                .into_inner(),
        )
    } else {
        None
    };
    let mut readers = Vec::new();
    let (go_tx, go) = tokio::sync::watch::channel(0u64);
    for _ in 0..watchers {
        let mut watched = open(addr, w::request(group, 0)).await.expect("watch");
        let mut until = go.clone();
        readers.push(tokio::spawn(async move {
            let mut received = Vec::new();
            loop {
                let last = *until.borrow();
                if last != 0 && watched.position >= last {
                    return received;
                }
                tokio::select! {
                    m = watched.read() => {
                        let m = m.expect("a normal watcher is never cut off");
                        if !m.events.is_empty() {
                            received.push((m.revision, Instant::now()));
                        }
                    }
                    _ = until.changed() => {}
                }
            }
        }));
    }
    let endpoints = vec![addr.to_string()];
    let mut writers = Vec::new();
    for writer in 0..4 {
        let mut admin = admin_for(&endpoints);
        let (group, tag) = (group.to_string(), tag.to_string());
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..writes / 4 {
                let r = put(&mut admin, &group, &format!("{tag}-{writer}-{i}")).await;
                acked.push((r.revision, Instant::now()));
            }
            acked
        }));
    }
    let mut acked = std::collections::BTreeMap::new();
    for writer in writers {
        acked.extend(writer.await.expect("writer"));
    }
    let last = *acked.keys().last().expect("writes");
    go_tx.send_replace(last);
    let mut latencies = Vec::new();
    for reader in readers {
        for (revision, at) in reader.await.expect("reader") {
            if let Some(acked_at) = acked.get(&revision) {
                latencies.push(at.saturating_duration_since(*acked_at));
            }
        }
    }
    assert_eq!(
        latencies.len(),
        watchers * acked.len(),
        "every watcher got every write"
    );
    latencies.sort();
    let slow_end = match slow_stream {
        None => None,
        Some(mut stream) => loop {
            match tokio::time::timeout(WAIT, stream.message())
                .await
                .expect("slow stream ends")
            {
                Ok(Some(_)) => {}
                Ok(None) => panic!("the slow stream ended without a status"),
                Err(status) => break Some(status),
            }
        },
    };
    (latencies, slow_end)
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_watcher_is_cut_off_and_does_not_slow_the_others() {
    let mut cluster = fixture::Cluster::new();
    let mut config = cluster.config(1, baton_node::Bootstrap::SingleNode);
    // A small per-watcher buffer, so that a few hundred writes overflow it.
    config.watch_buffer = 64;
    cluster.start(config).await;
    let addr = cluster.node(1).addr().to_string();
    let mut admin = cluster.admin();
    create_group(&mut admin, "s", 64).await;
    const WATCHERS: usize = 200;
    const WRITES: usize = 400;

    delivery_under_load(&addr, "s", "warm-up", WATCHERS, 40, false).await;
    let (alone, _) = delivery_under_load(&addr, "s", "alone", WATCHERS, WRITES, false).await;
    let (with_slow, slow_end) =
        delivery_under_load(&addr, "s", "with-slow", WATCHERS, WRITES, true).await;

    let (p50_alone, p99_alone) = (quantile(&alone, 0.5), quantile(&alone, 0.99));
    let (p50_slow, p99_slow) = (quantile(&with_slow, 0.5), quantile(&with_slow, 0.99));
    println!(
        "{WATCHERS} watchers, {WRITES} writes: alone p50 {p50_alone:?} p99 {p99_alone:?}; with a slow watcher p50 {p50_slow:?} p99 {p99_slow:?}"
    );
    // 2x, plus 5 ms for scheduling jitter at millisecond scale on 2 cores.
    let slack = Duration::from_millis(5);
    assert!(
        p50_slow <= p50_alone * 2 + slack,
        "p50 {p50_slow:?} vs {p50_alone:?} alone"
    );
    assert!(
        p99_slow <= p99_alone * 2 + slack,
        "p99 {p99_slow:?} vs {p99_alone:?} alone"
    );

    let status = slow_end.expect("the slow watcher ended");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let resume: u64 = status
        .metadata()
        .get(baton_client::watch::RESUME_REVISION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("the error says where to resume");
    // Resuming from there works.
    let mut resumed = open(&addr, w::request("s", resume)).await.expect("resume");
    assert_eq!(resumed.start, resume - 1);
    resumed.read_until(resume).await;
    cluster.shutdown().await;
}
