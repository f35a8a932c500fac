//! Process-level tests with the built `baton-node` and `batonctl` binaries:
//! real processes, real sockets, real data dirs, SIGKILL and SIGTERM.
//!
//! `batonctl` belongs to another package, so it must have been built next to
//! `baton-node` first: `scripts/test` (the README's test command) does that.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use baton_client::AdminClient;
use baton_proto::v1 as pb;

use crate::fixture;
use crate::fixture::worker::{assignment, create_group, route_all, session_of, settle, TestWorker};

use crate::fixture::procs::{
    batonctl, node_args, static_three_processes, status_of, three_processes, wait_applied, Proc,
};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_survive_kill_9_of_the_leader() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The one process cluster formed by static bootstrap (`--initial-members`,
    // as the README starts one); the others join through node 1.
    let (addrs, mut procs) = static_three_processes(dir.path());
    let endpoints: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    let mut admin = AdminClient::new(&endpoints, WAIT).expect("client");
    let mut revision = 0;
    for _ in 0..10 {
        revision = admin
            .barrier()
            .await
            .expect("the cluster commits writes")
            .revision;
    }
    let leader = admin.cluster_status().await.expect("status").leader_id;
    let leader_index = usize::try_from(leader).expect("id") - 1;
    for addr in &addrs {
        wait_applied(*addr, revision).await;
    }

    // kill -9 the leader.
    procs[leader_index]
        .take()
        .expect("leader process")
        .sigkill();
    let survivors: Vec<String> = addrs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader_index)
        .map(|(_, a)| a.to_string())
        .collect();
    let mut admin = AdminClient::new(&survivors, WAIT).expect("client");
    let after_kill = admin
        .barrier()
        .await
        .expect("the survivors elect a leader and commit");
    assert!(after_kill.revision > revision);
    assert_ne!(after_kill.leader_id, leader, "a new leader committed it");
    let status = admin.cluster_status().await.expect("status");
    assert_ne!(status.leader_id, leader);
    for _ in 0..10 {
        revision = admin.barrier().await.expect("keeps serving").revision;
    }

    // The killed node restarts from its data dir and rejoins, on its old
    // address (the membership names it): the port was freed by its own
    // death a moment ago, so another process taking it in between is
    // possible but not expected.
    procs[leader_index] = Some(Proc::spawn(
        &node_args(&addrs, leader_index + 1),
        dir.path(),
        dir.path().join(format!("node-{}.log", leader_index + 1)),
    ));
    let restarted = addrs[leader_index];
    wait_applied(restarted, revision).await;
    let own = status_of(restarted).await.expect("restarted node answers");
    assert_eq!(own.leader_id, status.leader_id, "it follows the new leader");
    assert_eq!(own.members.len(), 3);

    // batonctl shows all three members, reachable, with one leader.
    let out = Command::new(batonctl())
        .args([
            "--endpoints",
            &endpoints.join(","),
            "--json",
            "cluster",
            "status",
        ])
        .output()
        .expect("run batonctl");
    assert!(
        out.status.success(),
        "batonctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let members = json["members"].as_array().expect("members");
    assert_eq!(members.len(), 3, "{json}");
    let leaders = members.iter().filter(|m| m["state"] == "leader").count();
    assert_eq!(leaders, 1, "{json}");
    assert!(members.iter().all(|m| m["error"].is_null()), "{json}");

    // SIGTERM: every node exits 0 within a few seconds.
    for proc in procs.into_iter().flatten() {
        proc.sigterm(Duration::from_secs(8));
    }
}

/// What the README promises: `baton-node` with no flags is a working
/// single-node cluster on 127.0.0.1:7400, and `batonctl cluster status` shows
/// it as leader. (Uses the default ports; nothing else in the suite does.)
#[test]
fn no_flags_starts_a_single_node_cluster_that_batonctl_shows_as_leader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Proc::spawn(&[], dir.path(), dir.path().join("node.log"));
    let out = Command::new(batonctl())
        .args(["cluster", "status"])
        .output()
        .expect("run batonctl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "batonctl failed: {}\nnode log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        node.log_text()
    );
    assert!(text.contains("leader: node 1 at 127.0.0.1:7400"), "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with("1 "))
        .unwrap_or_default();
    assert!(row.contains("voter") && row.contains("leader"), "{text}");
    assert!(
        dir.path().join("baton-data").is_dir(),
        "data in ./baton-data"
    );
    node.sigterm(Duration::from_secs(8));
}

/// Workers w1, w2 and w3 over real keepalive streams on three `baton-node`
/// processes, balanced over group "g" of 30 partitions.
struct Keepers {
    procs: Vec<Option<Proc>>,
    endpoints: Vec<String>,
    admin: AdminClient,
    workers: Vec<TestWorker>,
    /// Every partition's owner and token once balanced.
    before: BTreeMap<u32, (String, u64)>,
    _dir: tempfile::TempDir,
}

/// The workers' lease.
const KEEPER_TTL: Duration = Duration::from_millis(3_000);

impl Keepers {
    async fn balanced() -> Keepers {
        let dir = tempfile::tempdir().expect("tempdir");
        let (addrs, procs) = three_processes(dir.path());
        let endpoints: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        let mut admin = AdminClient::new(&endpoints, fixture::WAIT).expect("client");
        create_group(&mut admin, "g", 30).await;
        let ttl = KEEPER_TTL;
        let mut workers = Vec::new();
        for id in ["w1", "w2", "w3"] {
            workers.push(TestWorker::join(&endpoints, "g", id, ttl).await);
        }
        settle(&mut admin, "g", "balanced", |a| {
            a.workers.len() == 3 && a.workers.iter().all(|w| w.count == 10)
        })
        .await;
        let before = route_all(&mut admin, "g", 30).await;

        Keepers {
            procs,
            endpoints,
            admin,
            workers,
            before,
            _dir: dir,
        }
    }

    /// kill -9 the leader while the workers are connected; watch for longer
    /// than a TTL: nobody who kept sending may expire, no owner or token
    /// changes. The admin client then talks to the survivors.
    async fn leader_killed(&mut self) {
        let (admin, procs, endpoints, workers, before, ttl) = (
            &mut self.admin,
            &mut self.procs,
            &self.endpoints,
            &self.workers,
            &self.before,
            KEEPER_TTL,
        );
        let leader = admin.cluster_status().await.expect("status").leader_id;
        let leader_index = usize::try_from(leader).expect("id") - 1;
        procs[leader_index].take().expect("leader").sigkill();
        // Watch for longer than a TTL: nobody who kept sending may expire.
        tokio::time::sleep(ttl * 2).await;
        let survivors: Vec<String> = endpoints
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != leader_index)
            .map(|(_, e)| e.clone())
            .collect();
        *admin = AdminClient::new(&survivors, fixture::WAIT).expect("client");
        let a = assignment(admin, "g").await;
        let sessions: Vec<(String, u64)> = a
            .workers
            .iter()
            .map(|w| (w.id.clone(), w.session))
            .collect();
        let expected: Vec<(String, u64)> =
            workers.iter().map(|w| (w.id.clone(), w.session)).collect();
        assert_eq!(sessions, expected, "every session survived");
        assert_eq!(
            route_all(admin, "g", 30).await,
            *before,
            "owners and tokens unchanged"
        );
        for w in workers {
            assert!(
                !w.keepalive.is_finished(),
                "{}'s keepalives were never refused",
                w.id
            );
        }
    }

    /// w3 stops sending keepalives: its partitions go to the others, only
    /// once its lease has run out.
    async fn w3_goes_silent(&mut self) {
        let (admin, ttl) = (&mut self.admin, KEEPER_TTL);
        let w3 = self.workers.pop().expect("w3");
        let last_ack = w3.go_silent().await;
        tokio::time::sleep_until((last_ack + ttl - Duration::from_millis(300)).into()).await;
        let a = assignment(admin, "g").await;
        assert_eq!(
            a.workers.iter().find(|w| w.id == "w3").map(|w| w.count),
            Some(10),
            "nothing moved early: {a:?}"
        );
        settle(admin, "g", "w3's partitions reassigned", |a| {
            a.workers.len() == 2 && a.workers.iter().all(|w| w.count == 15)
        })
        .await;
    }

    fn stop(self) {
        for proc in self.procs.into_iter().flatten() {
            proc.sigterm(Duration::from_secs(8));
        }
    }
}

/// A stale release is refused and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_release_is_refused_by_a_process_cluster_and_changes_nothing() {
    let mut keepers = Keepers::balanced().await;
    let (admin, before) = (&mut keepers.admin, &keepers.before);
    let (p, (owner, token)) = before
        .iter()
        .next()
        .map(|(p, t)| (*p, t.clone()))
        .expect("partition 0");
    let stale = pb::ReleaseRequest {
        group: "g".into(),
        session: session_of(admin, "g", &owner).await,
        worker: owner,
        partitions: vec![pb::PartitionRange { first: p, last: p }],
        token: token - 1,
    };
    let err = admin
        .call(|ch| {
            let stale = stale.clone();
            async move {
                baton_proto::v1::worker_client::WorkerClient::new(ch)
                    .release(stale)
                    .await
            }
        })
        .await
        .expect_err("stale release");
    assert_eq!(err.code(), Some(tonic::Code::FailedPrecondition), "{err}");
    assert_eq!(route_all(admin, "g", 30).await, *before);

    keepers.stop();
}

/// `kill -9` of the leader expires no session that kept sending keepalives
/// and changes no owner or token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_keep_their_partitions_through_kill_9_of_the_leader() {
    let mut keepers = Keepers::balanced().await;
    keepers.leader_killed().await;
    keepers.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_leader_kill_a_silent_workers_partitions_move_only_once_its_lease_ran_out() {
    let mut keepers = Keepers::balanced().await;
    keepers.leader_killed().await;
    keepers.w3_goes_silent().await;
    keepers.stop();
}

/// w2 drains: its partitions are revoked first, and reach w1 only once
/// released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_leader_kill_a_draining_workers_partitions_reach_the_others_only_once_released() {
    let mut keepers = Keepers::balanced().await;
    keepers.leader_killed().await;
    keepers.w3_goes_silent().await;
    let (admin, workers) = (&mut keepers.admin, &keepers.workers);
    let w2_session = workers[1].session;
    admin
        .call(|ch| async move {
            baton_proto::v1::worker_client::WorkerClient::new(ch)
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
    let revoking = assignment(admin, "g").await;
    assert_eq!(
        revoking
            .workers
            .iter()
            .find(|w| w.id == "w1")
            .map(|w| w.count),
        Some(15),
        "release before grant"
    );
    settle(admin, "g", "w2 drained", |a| {
        a.workers.len() == 1 && a.workers[0].count == 30
    })
    .await;

    keepers.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_on_another_node_after_kill_9_with_no_gap_or_duplicate() {
    use crate::fixture::watch::{self as w, open};
    use crate::fixture::worker::{assignment, create_group};
    use baton_proto::v1 as pb;
    use baton_proto::v1::tombstones_client::TombstonesClient;

    let dir = tempfile::tempdir().expect("tempdir");
    let (addrs, mut procs) = three_processes(dir.path());
    let endpoints: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    let mut admin = AdminClient::new(&endpoints, WAIT).expect("client");
    create_group(&mut admin, "k", 8).await;
    let created = assignment(&mut admin, "k").await.revision;
    let leader = admin.cluster_status().await.expect("status").leader_id;
    let watched_node = usize::try_from(leader).expect("id") - 1;
    let others: Vec<usize> = (0..3).filter(|&i| i != watched_node).collect();

    // The watcher is on the leader, which is then killed mid-load.
    let mut first = open(&endpoints[watched_node], w::request("k", created + 1))
        .await
        .expect("watch");
    let writer = {
        let mut admin = AdminClient::new(&endpoints, WAIT).expect("client");
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..150 {
                let request = pb::PutTombstoneRequest {
                    group: "k".into(),
                    key: format!("key-{i}"),
                    ..Default::default()
                };
                let r = admin
                    .call(|ch| {
                        let request = request.clone();
                        async move { TombstonesClient::new(ch).put(request).await }
                    })
                    .await
                    .expect("put (retried across the failover)");
                acked.push((format!("key-{i}"), r.revision));
            }
            acked
        })
    };
    while first.events.len() < 40 {
        first.read().await.expect("stream before the kill");
    }
    procs[watched_node].take().expect("process").sigkill();
    while first.read().await.is_ok() {}
    let resume_at = first.position + 1;

    let mut second = w::open_retrying(&endpoints[others[0]], w::request("k", resume_at)).await;
    assert_eq!(second.start, first.position);
    let acked = writer.await.expect("writer");
    let last = acked.iter().map(|(_, r)| *r).max().expect("writes");
    second.read_until(last).await;

    let mut reference = w::open_retrying(&endpoints[others[1]], w::request("k", created + 1)).await;
    reference.read_until(last).await;
    let mut combined = first.events.clone();
    combined.extend(second.events.iter().cloned());
    assert_eq!(
        combined, reference.events,
        "before the kill + after the resume = the whole history, no gap, no duplicate"
    );
    // Every acknowledged put is in it, once, at its revision.
    for (key, revision) in &acked {
        let found: Vec<u64> = combined
            .iter()
            .filter_map(|e| match &e.event {
                Some(pb::watch_event::Event::TombstoneAdded(t))
                    if t.tombstone.as_ref().is_some_and(|t| &t.key == key) =>
                {
                    Some(e.revision)
                }
                _ => None,
            })
            .collect();
        assert_eq!(found, vec![*revision], "{key}");
    }
    for proc in procs.into_iter().flatten() {
        proc.sigterm(Duration::from_secs(8));
    }
}
