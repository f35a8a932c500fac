//! Three workers sharing a group of 12 partitions on a 3-node in-process
//! cluster: they are balanced, a stale release is refused, a silent worker's
//! partitions move only after its TTL, a draining worker's only once it
//! releases them, and the leader's metrics tell the same story. Each test
//! replays the steps before the one it pins (with their checks).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::fixture::worker::*;
use crate::fixture::*;
use baton_client::AdminClient;
use baton_proto::v1 as pb;
use baton_proto::v1::worker_client::WorkerClient;
use tonic::Code;

/// The three workers' lease.
const TTL: Duration = Duration::from_millis(2_000);

struct Three {
    cluster: Cluster,
    admin: AdminClient,
    w1: TestWorker,
    w2: TestWorker,
    w3: Option<TestWorker>,
}

impl Three {
    /// w1, w2 and w3 join group "g" and are balanced, 4 partitions each.
    async fn balanced() -> Three {
        let cluster = three_nodes().await;
        let endpoints: Vec<String> = cluster
            .running
            .values()
            .map(|n| n.addr().to_string())
            .collect();
        let mut admin = AdminClient::new(&endpoints, WAIT).expect("client");
        create_group(&mut admin, "g", 12).await;
        let ttl = TTL;
        let w1 = TestWorker::join(&endpoints, "g", "w1", ttl).await;
        let w2 = TestWorker::join(&endpoints, "g", "w2", ttl).await;
        let w3 = TestWorker::join(&endpoints, "g", "w3", ttl).await;

        let balanced = settle(&mut admin, "g", "balanced", |a| {
            counts(a) == BTreeMap::from([("w1".into(), 4), ("w2".into(), 4), ("w3".into(), 4)])
        })
        .await;
        assert!(balanced.unassigned.is_empty());

        Three {
            cluster,
            admin,
            w1,
            w2,
            w3: Some(w3),
        }
    }

    /// w3 stops sending keepalives: its partitions go to the others, only
    /// after its TTL.
    async fn w3_goes_silent(&mut self) {
        let (admin, ttl) = (&mut self.admin, TTL);
        let w3 = self.w3.take().expect("w3 still keeps alive");
        let last_ack = w3.go_silent().await;
        // Just before its lease can have run out, w3 still holds everything.
        tokio::time::sleep_until((last_ack + ttl - Duration::from_millis(300)).into()).await;
        let a = assignment(admin, "g").await;
        assert_eq!(
            counts(&a).get("w3"),
            Some(&4),
            "nothing of w3's was granted before its TTL: {a:?}"
        );
        let moved = wait_assignment(admin, "g", WAIT, "w3's partitions reassigned", |a| {
            !a.workers.iter().any(|w| w.id == "w3")
                && a.unassigned.is_empty()
                && a.moving.is_empty()
        })
        .await;
        let after = last_ack.elapsed();
        assert!(
            after >= ttl,
            "w3's partitions moved {after:?} after its last keepalive, before its TTL {ttl:?}"
        );
        assert_eq!(
            counts(&moved),
            BTreeMap::from([("w1".into(), 6), ("w2".into(), 6)])
        );
    }

    /// w2 drains: its partitions are revoked, and granted to w1 only once
    /// released.
    async fn w2_drains(&mut self) {
        let admin = &mut self.admin;
        let w2 = &self.w2;
        let w2_session = w2.session;
        admin
            .call(|ch| async move {
                WorkerClient::new(ch)
                    .leave(pb::LeaveRequest {
                        group: "g".into(),
                        worker: "w2".into(),
                        session: w2_session,
                        drain: true,
                    })
                    .await
            })
            .await
            .expect("leave");
        let revoking = wait_assignment(admin, "g", WAIT, "w2's partitions revoked", |a| {
            a.moving
                .iter()
                .map(|m| m.ranges.iter().map(|r| r.last - r.first + 1).sum::<u32>())
                .sum::<u32>()
                == 6
        })
        .await;
        assert_eq!(
            counts(&revoking).get("w1"),
            Some(&6),
            "nothing granted before the release"
        );
        let held = route_all(admin, "g", 12).await;
        let mut by_token: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
        for (p, (o, t)) in &held {
            if o == "w2" {
                by_token.entry(*t).or_default().push(*p);
            }
        }
        for (token, partitions) in by_token {
            let release = pb::ReleaseRequest {
                group: "g".into(),
                worker: "w2".into(),
                session: w2_session,
                partitions: partitions
                    .iter()
                    .map(|p| pb::PartitionRange {
                        first: *p,
                        last: *p,
                    })
                    .collect(),
                token,
            };
            admin
                .call(|ch| {
                    let release = release.clone();
                    async move { WorkerClient::new(ch).release(release).await }
                })
                .await
                .expect("release after drain");
        }
        let drained = wait_assignment(admin, "g", WAIT, "w2 drained", |a| {
            counts(a) == BTreeMap::from([("w1".into(), 12)]) && a.moving.is_empty()
        })
        .await;
        assert_eq!(
            drained.workers.len(),
            1,
            "w2's session closed after its last release"
        );
    }

    async fn shutdown(self) {
        drop((self.w1, self.w2, self.w3));
        self.cluster.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_are_balanced_four_partitions_each() {
    Three::balanced().await.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_with_a_stale_token_is_refused_and_changes_nothing() {
    let mut three = Three::balanced().await;
    let (admin, w1) = (&mut three.admin, &three.w1);
    let tokens = route_all(admin, "g", 12).await;
    let (p, (owner, token)) = tokens
        .iter()
        .find(|(_, (o, _))| o == "w1")
        .map(|(p, t)| (*p, t.clone()))
        .expect("w1 holds");
    assert_eq!(owner, "w1");
    let stale = pb::ReleaseRequest {
        group: "g".into(),
        worker: "w1".into(),
        session: w1.session,
        partitions: vec![pb::PartitionRange { first: p, last: p }],
        token: token - 1,
    };
    let err = admin
        .call(|ch| {
            let stale = stale.clone();
            async move { WorkerClient::new(ch).release(stale).await }
        })
        .await
        .expect_err("stale token");
    assert_eq!(err.code(), Some(Code::FailedPrecondition), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("with fencing token {}", token - 1)),
        "{err}"
    );
    assert_eq!(route_all(admin, "g", 12).await, tokens, "nothing changed");

    three.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_workers_partitions_go_to_the_others_only_after_its_ttl() {
    let mut three = Three::balanced().await;
    three.w3_goes_silent().await;
    three.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_workers_partitions_are_granted_only_once_it_releases_them() {
    let mut three = Three::balanced().await;
    three.w3_goes_silent().await;
    three.w2_drains().await;
    three.shutdown().await;
}

/// After w3's lease ran out and w2 drained, the leader's /metrics tell the
/// same story, down to the partitions the rounds placed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leaders_metrics_count_sessions_partitions_expiries_and_handoffs() {
    let mut three = Three::balanced().await;
    three.w3_goes_silent().await;
    three.w2_drains().await;
    let cluster = &three.cluster;
    let leader = cluster.leader(None, WAIT).await;
    let http = cluster.node(leader).http_addr().expect("http enabled");
    let (code, body) = http_get(http, "/metrics").await;
    assert_eq!(code, 200);
    for (series, expected) in [
        (r#"baton_sessions{group="g"}"#, 1.0),
        (r#"baton_partitions{group="g",worker="w1"}"#, 12.0),
        (r#"baton_partitions_unassigned{group="g"}"#, 0.0),
        (r#"baton_handoffs_in_flight{group="g"}"#, 0.0),
        (r#"baton_tombstones{group="g"}"#, 0.0),
        ("baton_lease_expiries_total", 1.0),
    ] {
        assert_eq!(metric(&body, series), Some(expected), "{series} in\n{body}");
    }
    assert!(
        metric(&body, "baton_handoff_seconds_count").is_some_and(|n| n >= 1.0),
        "w2's drained partitions count as handoffs:\n{body}"
    );
    assert!(metric(&body, "baton_apply_seconds_count").is_some_and(|n| n > 0.0));
    // Every partition placed by a round: the 12 new ones, w3's 4 after its
    // lease ran out, w2's 6 as it drained. (Balancing moves depend on how
    // the joins interleaved with the first round.)
    assert_eq!(
        metric(&body, r#"baton_moves_total{group="g",reason="place"}"#),
        Some(22.0),
        "{body}"
    );
    assert!(
        metric(&body, "baton_log_append_entries_sum").is_some_and(|n| n > 0.0),
        "every node counts the entries it appended:\n{body}"
    );
    three.shutdown().await;
}
