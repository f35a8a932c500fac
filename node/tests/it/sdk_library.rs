//! The worker SDK as a library, in this process, against a 3-node
//! in-process cluster: the shard map routes like the server and follows a
//! split; a barrier put waits for the SDK handler. (The SDK as `batonctl
//! worker join` processes under faults: the `sdk` module.)

use std::time::{Duration, Instant};

use baton_client::ShardMap;
use baton_proto::v1 as pb;
use baton_proto::v1::admin_client::AdminClient as AdminGrpc;

use crate::fixture;
use crate::fixture::worker::{assignment, balanced, create_group};
use crate::fixture::WAIT;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_map_routes_like_the_server_and_follows_a_split() {
    let cluster = fixture::three_nodes().await;
    let endpoints: Vec<String> = (1..=3)
        .map(|i| cluster.node(i).addr().to_string())
        .collect();
    let mut admin = cluster.admin();
    create_group(&mut admin, "g", 360).await;
    let _w1 =
        fixture::worker::TestWorker::join(&endpoints, "g", "w1", Duration::from_secs(10)).await;
    let _w2 =
        fixture::worker::TestWorker::join(&endpoints, "g", "w2", Duration::from_secs(10)).await;
    balanced(&mut admin, "g", 2, 180).await;

    let map = ShardMap::connect(&endpoints, "g").await.expect("shard map");
    let settled = assignment(&mut admin, "g").await.revision;
    assert!(map.wait_for(settled, WAIT).await, "the map catches up");
    let mut grpc = AdminGrpc::connect(format!("http://{}", endpoints[0]))
        .await
        .expect("connect");
    let route = |key: String| pb::RouteRequest {
        group: "g".into(),
        locator: Some(pb::route_request::Locator::Key(key)),
        serializable: true,
    };
    for i in 0..10_000 {
        let key = format!("account-{i}");
        let server = grpc
            .route(route(key.clone()))
            .await
            .expect("route")
            .into_inner();
        let local = map.route(key.as_bytes());
        assert_eq!(local.partition, server.partition, "{key}");
        assert_eq!(local.owner.as_deref().unwrap_or(""), server.owner, "{key}");
        assert_eq!(local.token, server.token, "{key}");
    }

    // After a split the map doubles, and keys route to the children.
    let group = admin
        .call(|ch| async move {
            AdminGrpc::new(ch)
                .get_group(pb::GetGroupRequest {
                    group: "g".into(),
                    serializable: false,
                })
                .await
        })
        .await
        .expect("group");
    let if_revision = group.group.expect("group").config_revision;
    let split = admin
        .call(|ch| async move {
            AdminGrpc::new(ch)
                .split_group(pb::SplitGroupRequest {
                    group: "g".into(),
                    if_revision,
                })
                .await
        })
        .await
        .expect("split");
    assert!(map.wait_for(split.revision, WAIT).await);
    assert_eq!(map.partitions(), 720);
    for i in 0..1_000 {
        let key = format!("account-{i}");
        let server = grpc
            .route(route(key.clone()))
            .await
            .expect("route")
            .into_inner();
        let local = map.route(key.as_bytes());
        assert_eq!(
            (
                local.partition,
                local.owner.unwrap_or_default(),
                local.token
            ),
            (server.partition, server.owner, server.token),
            "{key} after the split"
        );
    }
    cluster.shutdown().await;
}

/// A `Handler` that reports each callback and holds `on_tombstone` until the
/// test lets it return.
struct Recorder {
    calls: tokio::sync::mpsc::UnboundedSender<String>,
    hold: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl baton_client::Handler for Recorder {
    async fn on_assigned(&mut self, grant: &baton_client::Grant) {
        let _ = self
            .calls
            .send(format!("assigned {:?}", grant.partitions()));
    }
    async fn on_revoked(&mut self, partitions: &baton_client::Partitions, _deadline: Instant) {
        let _ = self.calls.send(format!("revoked {partitions:?}"));
    }
    async fn on_tombstone(&mut self, key: &str, _partition: u32, _revision: u64) {
        let _ = self.calls.send(format!("tombstone {key}"));
        if let Some(hold) = self.hold.take() {
            let _ = hold.await;
        }
    }
    async fn on_lease_lost(&mut self) {
        let _ = self.calls.send("lease lost".into());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_barrier_put_returns_only_after_the_sdk_handler_returns() {
    use baton_proto::v1::tombstones_client::TombstonesClient;

    let cluster = fixture::three_nodes().await;
    let endpoints: Vec<String> = (1..=3)
        .map(|i| cluster.node(i).addr().to_string())
        .collect();
    let mut admin = cluster.admin();
    create_group(&mut admin, "g", 8).await;
    let (worker, events) = baton_client::Worker::builder(endpoints.clone(), "g")
        .id("w1")
        .ttl(Duration::from_secs(5))
        .join()
        .await
        .expect("join");
    let (calls, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let (release_handler, hold) = tokio::sync::oneshot::channel();
    let handler = Recorder {
        calls,
        hold: Some(hold),
    };
    let runner = {
        let worker = worker.clone();
        tokio::spawn(async move { events.run(&worker, handler).await })
    };
    assert_eq!(seen.recv().await.as_deref(), Some("assigned [0..=7]"));

    let put = tokio::spawn(async move {
        let request = pb::PutTombstoneRequest {
            group: "g".into(),
            key: "account-42".into(),
            wait: pb::Wait::Acknowledged as i32,
            ..Default::default()
        };
        admin
            .call(|ch| {
                let request = request.clone();
                async move { TombstonesClient::new(ch).put(request).await }
            })
            .await
    });
    assert_eq!(seen.recv().await.as_deref(), Some("tombstone account-42"));
    // The handler is still running: the barrier must still be waiting. (A
    // bounded look at something that must not happen.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !put.is_finished(),
        "the put returned before the handler did"
    );
    release_handler.send(()).expect("handler waiting");
    let reply = put.await.expect("put task").expect("put");
    assert_eq!(reply.barrier, pb::Barrier::Acknowledged as i32);
    assert_eq!(reply.owner, "w1");

    // Shutdown drains through the handler (revoked, then released for it)
    // and ends the event stream.
    let outcome = worker
        .shutdown(Duration::from_secs(10))
        .await
        .expect("shutdown");
    assert_eq!(outcome, baton_client::Shutdown::Drained);
    runner
        .await
        .expect("handler loop ends when the worker has left");
    assert_eq!(seen.recv().await.as_deref(), Some("revoked [0..=7]"));
    let a = assignment(&mut cluster.admin(), "g").await;
    assert!(a.workers.is_empty(), "w1 left: {a:?}");
    cluster.shutdown().await;
}
