//! The tombstone lifecycle over real gRPC on in-process nodes: the leader
//! purges what expired (and writes nothing while nothing has), a deletion
//! after the TTL is a new one that reaches the owner and is waited for, and
//! the SDK's re-list after a compacted watch pages to the end.

use crate::fixture;

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::fixture::procs::ctl_json;
use crate::fixture::watch::{self as w, open, Watched};
use crate::fixture::worker::{create_group, put_tombstone_for as put, settle, TestWorker};
use crate::fixture::WAIT;
use baton_client::partitions::each;
use baton_client::{AdminClient, Worker, WorkerEvent};
use baton_node::raft::BatonRaft;
use baton_proto::v1 as pb;
use baton_proto::v1::admin_client::AdminClient as AdminGrpc;
use baton_proto::v1::tombstones_client::TombstonesClient;
use pb::watch_event::Event as E;
use tonic::Code;

fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    u64::try_from(since.as_millis()).expect("ms fit")
}

/// The live tombstone of each key, as `Check` answers.
async fn check(
    admin: &mut AdminClient,
    group: &str,
    keys: &[&str],
) -> Vec<Option<pb::TombstoneInfo>> {
    let request = pb::CheckTombstonesRequest {
        group: group.into(),
        keys: keys.iter().map(|k| k.to_string()).collect(),
        serializable: false,
    };
    let r = admin
        .call(|ch| {
            let request = request.clone();
            async move { TombstonesClient::new(ch).check(request).await }
        })
        .await
        .expect("check");
    r.results
        .into_iter()
        .map(|c| {
            assert_eq!(c.deleted, c.tombstone.is_some(), "{c:?}");
            c.tombstone
        })
        .collect()
}

/// Keys `List` returns for the whole group (one page is enough here).
async fn listed(admin: &mut AdminClient, group: &str) -> Vec<String> {
    let request = pb::ListTombstonesRequest {
        group: group.into(),
        ..Default::default()
    };
    let r = admin
        .call(|ch| {
            let request = request.clone();
            async move { TombstonesClient::new(ch).list(request).await }
        })
        .await
        .expect("list");
    assert!(!r.truncated);
    r.tombstones.into_iter().map(|t| t.key).collect()
}

fn last_log_index(raft: &BatonRaft) -> Option<u64> {
    raft.metrics().borrow().last_log_index
}

/// Watches the log for `window` (the leader's duties run every 100 ms) and
/// fails if anything is appended past `index`.
async fn nothing_written(raft: &BatonRaft, index: Option<u64>, window: Duration, when: &str) {
    let grew = raft
        .wait(Some(window))
        .metrics(|m| m.last_log_index > index, "the log grows")
        .await;
    if let Ok(m) = grew {
        panic!(
            "{when}: the log grew from {index:?} to {:?} with nothing to do",
            m.last_log_index
        );
    }
}

/// Reads `watched` until `key`'s tombstone is added (`purged` false) or
/// purged; the event's revision and, for an add, the owner it was sent to.
async fn tombstone_event(watched: &mut Watched, key: &str, purged: bool) -> (u64, String) {
    let what = if purged { "purge" } else { "put" };
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, watched.read())
            .await
            .unwrap_or_else(|_| panic!("no {what} of tombstone {key:?} within {WAIT:?}"))
            .expect("the watch goes on");
        for e in &message.events {
            match &e.event {
                Some(E::TombstoneAdded(t))
                    if !purged && t.tombstone.as_ref().is_some_and(|t| t.key == key) =>
                {
                    return (e.revision, t.owner.clone())
                }
                Some(E::TombstonePurged(p)) if purged && p.key == key => {
                    return (e.revision, String::new())
                }
                _ => {}
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_tombstone_is_purged_and_nothing_is_written_while_none_expires() {
    let mut cluster = fixture::Cluster::new();
    cluster.start_single(1).await;
    let addr = cluster.node(1).addr().to_string();
    let raft = cluster.node(1).raft().clone();
    let mut admin = cluster.admin();
    create_group(&mut admin, "p", 4).await;
    let long = put(&mut admin, "p", "long", None).await;

    // A live tombstone is nothing to do.
    nothing_written(
        &raft,
        last_log_index(&raft),
        Duration::from_millis(600),
        "a live tombstone",
    )
    .await;

    let mut watched = open(&addr, w::request("p", long.revision + 1))
        .await
        .expect("watch");
    let short = put(&mut admin, "p", "short", Some(1_000)).await;
    let [Some(info), Some(_)] = &check(&mut admin, "p", &["short", "long"]).await[..] else {
        panic!("both are deleted before the TTL");
    };
    let expires_at_ms = info.expires_at_ms;
    assert_eq!(listed(&mut admin, "p").await, ["long", "short"]);

    // The leader purges it once it has expired, with one entry.
    let (purged_at, _) = tombstone_event(&mut watched, "short", true).await;
    assert!(now_ms() >= expires_at_ms, "purged before it expired");
    assert_eq!(purged_at, short.revision + 1, "one entry purges it");
    assert_eq!(last_log_index(&raft), Some(purged_at));
    assert!(matches!(
        &check(&mut admin, "p", &["short", "long"]).await[..],
        [None, Some(_)]
    ));
    assert_eq!(listed(&mut admin, "p").await, ["long"]);

    // Nothing left to purge: nothing more is written.
    nothing_written(
        &raft,
        Some(purged_at),
        Duration::from_millis(600),
        "after the purge",
    )
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_after_the_ttl_is_new_and_its_barrier_waits_for_the_owner() {
    let mut cluster = fixture::Cluster::new();
    cluster.start_single(1).await;
    let addr = cluster.node(1).addr().to_string();
    let endpoints = vec![addr.clone()];
    let mut admin = cluster.admin();
    create_group(&mut admin, "r", 1).await;
    let owner = TestWorker::join(&endpoints, "r", "owner", Duration::from_secs(10)).await;
    settle(&mut admin, "r", "owner holds it", |a| {
        a.unassigned.is_empty()
    })
    .await;
    let mut to_owner = open(
        &addr,
        pb::WatchRequest {
            worker: "owner".into(),
            ..w::request("r", 0)
        },
    )
    .await
    .expect("watch");
    let ack = |revision: u64| {
        let request = pb::AckTombstonesRequest {
            group: "r".into(),
            worker: "owner".into(),
            session: owner.session,
            revision,
        };
        let mut admin = AdminClient::new(&endpoints, WAIT).expect("client");
        async move {
            admin
                .call(|ch| {
                    let request = request.clone();
                    async move { TombstonesClient::new(ch).ack(request).await }
                })
                .await
                .expect("ack");
        }
    };

    // The first deletion, handled by the owner.
    let first = put(&mut admin, "r", "doc", Some(1_000)).await;
    let (revision, to) = tombstone_event(&mut to_owner, "doc", false).await;
    assert_eq!((revision, to.as_str()), (first.revision, "owner"));
    ack(first.revision).await;
    let [Some(info)] = &check(&mut admin, "r", &["doc"]).await[..] else {
        panic!("deleted");
    };
    // Waiting for the TTL itself, by the clock the node compares with.
    let expires_in = info.expires_at_ms.saturating_sub(now_ms()) + 1;
    tokio::time::sleep(Duration::from_millis(expires_in)).await;

    // The entity is re-created and deleted again: a new tombstone, which the
    // owner is sent and the barrier waits for.
    let request = pb::PutTombstoneRequest {
        group: "r".into(),
        key: "doc".into(),
        wait: pb::Wait::Acknowledged as i32,
        wait_timeout_ms: Some(20_000),
        ..Default::default()
    };
    let mut barrier_admin = AdminClient::new(&endpoints, WAIT).expect("client");
    let mut waiting = tokio::spawn(async move {
        barrier_admin
            .call(|ch| {
                let request = request.clone();
                async move { TombstonesClient::new(ch).put(request).await }
            })
            .await
            .expect("barrier put")
    });
    let (second, to) = tokio::select! {
        reply = &mut waiting => panic!(
            "the second deletion answered before the owner was sent it: {reply:?} (first {first:?})"
        ),
        seen = tombstone_event(&mut to_owner, "doc", false) => seen,
    };
    assert!(second > first.revision, "a new revision: {second}");
    assert_eq!(to, "owner", "sent to the owner");
    // The owner has acknowledged past the first deletion, not this one.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut waiting)
            .await
            .is_err(),
        "the barrier returned before the owner acknowledged the second deletion"
    );
    ack(second).await;
    let reply = waiting.await.expect("put task");
    assert_eq!(reply.barrier(), pb::Barrier::Acknowledged, "{reply:?}");
    assert_eq!((reply.revision, reply.owner.as_str()), (second, "owner"));
    let [Some(info)] = &check(&mut admin, "r", &["doc"]).await[..] else {
        panic!("deleted again");
    };
    assert_eq!(info.revision, second);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batonctl_lists_tombstones_a_page_at_a_time() {
    let mut cluster = fixture::Cluster::new();
    cluster.start_single(1).await;
    let addr = cluster.node(1).addr().to_string();
    let mut admin = cluster.admin();
    create_group(&mut admin, "l", 4).await;
    for key in ["a", "b", "c"] {
        put(&mut admin, "l", key, None).await;
    }
    let list = |args: &'static [&'static str]| {
        let addr = addr.clone();
        tokio::task::spawn_blocking(move || {
            let mut all = vec!["tombstone", "list", "l"];
            all.extend_from_slice(args);
            let listed = ctl_json(&addr, &all);
            let keys: Vec<String> = listed["tombstones"]
                .as_array()
                .expect("tombstones")
                .iter()
                .map(|t| t["key"].as_str().expect("key").to_string())
                .collect();
            (
                keys,
                listed["next_key"].as_str().expect("next_key").to_string(),
            )
        })
    };
    let first = list(&["--limit", "2"]).await.expect("batonctl");
    assert_eq!(first, (vec!["a".into(), "b".into()], "b".into()));
    let rest = list(&["--limit", "2", "--after", "b"])
        .await
        .expect("batonctl");
    assert_eq!(rest, (vec!["c".into()], String::new()));
    cluster.shutdown().await;
}

/// More than two `List` pages of tombstones the worker's watch never
/// delivered: keys of 300 bytes, so the client's 2 MiB HTTP/2 window holds
/// at most a few thousand of them before the node cuts the stalled watch off.
const MISSED: usize = 25_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_relists_every_tombstone_after_a_compacted_watch() {
    let mut cluster = fixture::Cluster::new();
    cluster.start_single(1).await;
    let addr = cluster.node(1).addr().to_string();
    let mut admin = cluster.admin();
    create_group(&mut admin, "big", 8).await;
    let (worker, mut events) = Worker::builder([addr.clone()], "big")
        .id("w1")
        .ttl(Duration::from_secs(10))
        .join()
        .await
        .expect("join");
    while each(&worker.held()).count() < 8 {
        tokio::time::timeout(WAIT, events.next())
            .await
            .expect("the grants arrive")
            .expect("events go on");
    }

    // The application stops reading; tombstones pile up on its one range.
    let key = |i: usize| format!("{i:06}-{}", "x".repeat(293));
    let started = Instant::now();
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let mut admin = cluster.admin();
            tokio::spawn(async move {
                for i in (w..MISSED).step_by(16) {
                    put(&mut admin, "big", &key(i), None).await;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    eprintln!("{MISSED} tombstones put in {:?}", started.elapsed());

    // Compact past all of them: the worker's watch cannot resume.
    let revision = admin.barrier().await.expect("barrier").revision;
    let request = pb::CompactRequest { revision };
    admin
        .call(|ch| async move { AdminGrpc::new(ch).compact(request).await })
        .await
        .expect("compact");
    let err = open(&addr, w::request("big", worker.session() + 1))
        .await
        .err()
        .expect("the worker's position is compacted");
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");

    // The application reads again: every tombstone arrives, once.
    let mut seen = BTreeSet::new();
    let mut delivered = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.len() < MISSED {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, events.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{} of {MISSED} tombstones delivered; the first missing: number {:?}",
                    seen.len(),
                    (0..MISSED).find(|i| !seen.contains(&key(*i))),
                )
            })
            .expect("events go on");
        match event {
            WorkerEvent::Tombstone { key, .. } => {
                delivered += 1;
                seen.insert(key);
            }
            WorkerEvent::LeaseLost => panic!("the lease was lost"),
            _ => {}
        }
    }
    assert_eq!(delivered, MISSED, "no tombstone twice");
    cluster.shutdown().await;
}
