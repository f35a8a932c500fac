//! Test workers: they join over gRPC and keep their lease alive on a real
//! keepalive stream that follows the leader, the way the SDK will; and helpers
//! to read and settle a group's assignment.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use baton_client::AdminClient;
use baton_proto::v1 as pb;
use baton_proto::v1::admin_client::AdminClient as AdminGrpc;
use baton_proto::v1::tombstones_client::TombstonesClient;
use baton_proto::v1::worker_client::WorkerClient;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use super::WAIT;

/// Address of the node that says it leads, asking each endpoint in turn.
pub async fn leader_addr(endpoints: &[String]) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        for e in endpoints {
            let Ok(mut c) = AdminGrpc::connect(format!("http://{e}")).await else {
                continue;
            };
            if let Ok(s) = c.cluster_status(pb::ClusterStatusRequest {}).await {
                let s = s.into_inner();
                if s.leader_id != 0 && s.leader_id == s.node_id {
                    return s.node_addr;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no leader found among {endpoints:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub struct TestWorker {
    pub id: String,
    pub session: u64,
    /// When the last acknowledged keepalive was sent.
    pub acked: watch::Receiver<Option<Instant>>,
    pub keepalive: JoinHandle<Result<(), tonic::Status>>,
}

impl TestWorker {
    pub async fn join(endpoints: &[String], group: &str, id: &str, ttl: Duration) -> TestWorker {
        let mut admin = AdminClient::new(endpoints, WAIT).expect("client");
        let request = pb::JoinRequest {
            group: group.into(),
            worker: id.into(),
            ttl_ms: Some(u64::try_from(ttl.as_millis()).expect("ttl")),
            weight: None,
            labels: Default::default(),
        };
        let joined = admin
            .call(|ch| {
                let request = request.clone();
                async move { WorkerClient::new(ch).join(request).await }
            })
            .await
            .expect("join");
        let (acked_tx, mut acked) = watch::channel(None);
        let keepalive = tokio::spawn(keep_alive(
            endpoints.to_vec(),
            pb::KeepAliveRequest {
                group: group.into(),
                worker: id.into(),
                session: joined.session,
            },
            ttl,
            acked_tx,
        ));
        // The session is alive once the leader has acknowledged a keepalive.
        tokio::time::timeout(WAIT, acked.wait_for(Option::is_some))
            .await
            .expect("a keepalive is acknowledged in time")
            .expect("keepalive loop running");
        TestWorker {
            id: id.into(),
            session: joined.session,
            acked,
            keepalive,
        }
    }

    /// Stops sending keepalives; returns when the last acknowledged one was sent.
    pub async fn go_silent(self) -> Instant {
        if self.keepalive.is_finished() {
            let ended = self.keepalive.await;
            panic!("{}'s keepalives had already stopped: {ended:?}", self.id);
        }
        self.keepalive.abort();
        let acked = *self.acked.borrow();
        acked.expect("at least one keepalive was acknowledged")
    }
}

/// Sends a keepalive every TTL/4 on one stream to the leader, following the
/// leader when it changes, until the session is refused.
pub async fn keep_alive(
    endpoints: Vec<String>,
    message: pb::KeepAliveRequest,
    ttl: Duration,
    acked: watch::Sender<Option<Instant>>,
) -> Result<(), tonic::Status> {
    loop {
        let addr = leader_addr(&endpoints).await;
        let connected = tokio::time::timeout(
            Duration::from_secs(2),
            WorkerClient::connect(format!("http://{addr}")),
        )
        .await;
        let Ok(Ok(mut client)) = connected else {
            continue;
        };
        let (tx, rx) = mpsc::channel(1);
        // Queue the first keepalive before awaiting the call: a streaming call
        // may not complete until its request stream has yielded something.
        let mut sent = Instant::now();
        if tx.send(message.clone()).await.is_err() {
            continue;
        }
        let called = tokio::time::timeout(
            Duration::from_secs(2),
            client.keep_alive(ReceiverStream::new(rx)),
        )
        .await;
        let Ok(called) = called else {
            continue;
        };
        let mut replies = match called {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == Code::Unavailable => continue,
            Err(s) => return Err(s),
        };
        loop {
            match replies.message().await {
                Ok(Some(_)) => {
                    acked.send_replace(Some(sent));
                }
                Ok(None) => break,
                Err(s) if s.code() == Code::Unavailable => break,
                Err(s) => return Err(s),
            }
            tokio::time::sleep(ttl / 4).await;
            sent = Instant::now();
            if tx.send(message.clone()).await.is_err() {
                break;
            }
        }
    }
}

pub async fn assignment(admin: &mut AdminClient, group: &str) -> pb::AssignmentResponse {
    let request = pb::GetAssignmentRequest {
        group: group.into(),
        serializable: false,
    };
    admin
        .call(|ch| {
            let request = request.clone();
            async move { AdminGrpc::new(ch).get_assignment(request).await }
        })
        .await
        .expect("assignment")
}

/// Polls the assignment (the workers are other tasks; there is no watch API
/// yet) until `done` holds, or fails after `within`.
pub async fn wait_assignment(
    admin: &mut AdminClient,
    group: &str,
    within: Duration,
    what: &str,
    done: impl Fn(&pb::AssignmentResponse) -> bool,
) -> pb::AssignmentResponse {
    let deadline = Instant::now() + within;
    loop {
        let a = assignment(admin, group).await;
        if done(&a) {
            return a;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {within:?}; last: {a:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The session `worker` has in an assignment listing (0 when none).
pub fn session_in(a: &pb::AssignmentResponse, worker: &str) -> u64 {
    a.workers
        .iter()
        .find(|w| w.id == worker)
        .map_or(0, |w| w.session)
}

/// The session `worker` has in `group` now (0 when none).
pub async fn session_of(admin: &mut AdminClient, group: &str, worker: &str) -> u64 {
    session_in(&assignment(admin, group).await, worker)
}

/// Plays well-behaved workers: whatever is being handed off is released by its
/// owner (with its token) until the group is settled and `done` holds.
pub async fn settle(
    admin: &mut AdminClient,
    group: &str,
    what: &str,
    done: impl Fn(&pb::AssignmentResponse) -> bool,
) -> pb::AssignmentResponse {
    let deadline = Instant::now() + WAIT;
    loop {
        let a = assignment(admin, group).await;
        if a.moving.is_empty() && done(&a) {
            return a;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not settled within {WAIT:?}; last: {a:?}"
        );
        for handoff in &a.moving {
            let held = route_all(admin, group, a.partitions).await;
            let mut by_token: BTreeMap<u64, Vec<pb::PartitionRange>> = BTreeMap::new();
            for r in &handoff.ranges {
                for p in r.start..=r.end {
                    if let Some((_, token)) = held.get(&p).filter(|(o, _)| *o == handoff.from) {
                        by_token
                            .entry(*token)
                            .or_default()
                            .push(pb::PartitionRange { start: p, end: p });
                    }
                }
            }
            for (token, partitions) in by_token {
                let release = pb::ReleaseRequest {
                    group: group.into(),
                    worker: handoff.from.clone(),
                    session: session_in(&a, &handoff.from),
                    partitions,
                    token,
                };
                // A release can race a rebalance; a refused one is retried on the next round.
                let _ = admin
                    .call(|ch| {
                        let release = release.clone();
                        async move { WorkerClient::new(ch).release(release).await }
                    })
                    .await;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn counts(a: &pb::AssignmentResponse) -> BTreeMap<String, u32> {
    a.workers.iter().map(|w| (w.id.clone(), w.count)).collect()
}

pub async fn route_all(
    admin: &mut AdminClient,
    group: &str,
    partitions: u32,
) -> BTreeMap<u32, (String, u64)> {
    let mut out = BTreeMap::new();
    for p in 0..partitions {
        let request = pb::RouteRequest {
            group: group.into(),
            locator: Some(pb::route_request::Locator::Partition(p)),
            serializable: false,
        };
        let r = admin
            .call(|ch| {
                let request = request.clone();
                async move { AdminGrpc::new(ch).route(request).await }
            })
            .await
            .expect("route");
        out.insert(p, (r.owner, r.token));
    }
    out
}

pub async fn create_group(admin: &mut AdminClient, group: &str, partitions: u32) {
    let config = pb::GroupConfig {
        partitions: Some(partitions),
        ..Default::default()
    };
    admin
        .create_group(group, config)
        .await
        .expect("create group");
}

/// Puts a tombstone on `key` (the group's TTL, waiting for the commit).
pub async fn put_tombstone(
    admin: &mut AdminClient,
    group: &str,
    key: &str,
) -> pb::PutTombstoneResponse {
    put_tombstone_for(admin, group, key, None).await
}

/// Puts a tombstone on `key` kept for `ttl_ms` (default: the group's).
pub async fn put_tombstone_for(
    admin: &mut AdminClient,
    group: &str,
    key: &str,
    ttl_ms: Option<u64>,
) -> pb::PutTombstoneResponse {
    let request = pb::PutTombstoneRequest {
        group: group.into(),
        key: key.into(),
        ttl_ms,
        ..Default::default()
    };
    admin
        .call(|ch| {
            let request = request.clone();
            async move { TombstonesClient::new(ch).put(request).await }
        })
        .await
        .expect("tombstone put")
}
