//! G1 under an isolated leader (docs/design.md §3, G1): a lease renewal is
//! acknowledged only after a quorum has confirmed the acknowledging node's
//! leadership in a round that began after the keepalive arrived.
//!
//! Real `baton-node` processes on the harness's proxy backend, real gRPC,
//! the real worker SDK:
//!
//! 1. Worker A joins through the leader's endpoint only, so its keepalive
//!    stream stays on that node, and is granted every partition.
//! 2. The leader's links to both peers are cut both ways (`drop`: a pulled
//!    cable). Clients still reach every node.
//! 3. The two others elect a new leader; worker B joins there. A's session
//!    expires on the new leader (TTL + a tick) and B is granted A's partitions.
//! 4. When B's `Assigned` arrives, A's SDK must already have stopped holding
//!    every partition B got. A thread polls A's `grant.holds(p)` every
//!    millisecond and records when each turned false.
//!
//! An isolated node that goes on acknowledging A's keepalives keeps A's SDK
//! believing it holds until the partition heals, and the test says for how
//! long it overlapped with B.
//!
//! The node binary is `target/debug/baton-node` (`cargo build -p baton-node
//! --bin baton-node`), or `$BATON_NODE_BIN` to test another build.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_client::partitions::{each, ranges_of};
use baton_client::proto::admin_client::AdminClient as AdminGrpc;
use baton_client::proto::{ClusterStatusRequest, ClusterStatusResponse, GroupConfig};
use baton_client::{AdminClient, Events, Grant, Worker, WorkerEvent};
use baton_jepsen::cluster::{Backend, Cluster};
use baton_jepsen::proxy::CutMode;

const GROUP: &str = "isolated-leader";
const PARTITIONS: u32 = 8;
const TTL: Duration = Duration::from_secs(2);

/// The node binary under test.
fn node_binary() -> PathBuf {
    let path = match std::env::var_os("BATON_NODE_BIN") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/baton-node"),
    };
    assert!(
        path.is_file(),
        "node binary {} is missing: run `cargo build -p baton-node --bin baton-node` \
         in the workspace, or point BATON_NODE_BIN at a baton-node binary",
        path.display()
    );
    path
}

/// A fresh directory for the nodes' data and logs. Removed when the test
/// passes; kept (and named) when it fails, for the node logs.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!(
            "baton-isolated-leader-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("node data and logs kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Node `addr`'s own view of the cluster, or `None` if it does not answer
/// within 500 ms.
async fn status_of(addr: &str) -> Option<ClusterStatusResponse> {
    tokio::time::timeout(Duration::from_millis(500), async {
        let mut c = AdminGrpc::connect(format!("http://{addr}")).await.ok()?;
        c.cluster_status(ClusterStatusRequest {})
            .await
            .ok()
            .map(|r| r.into_inner())
    })
    .await
    .ok()
    .flatten()
}

/// Waits until every node of `ids` answers and all name one leader among
/// `ids` that says it leads; returns it. Polls every 50 ms up to `within`.
async fn agreed_leader(cluster: &Cluster, ids: &[usize], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let mut views = BTreeMap::new();
        for &id in ids {
            let addr = cluster.endpoint(id).expect("a member's endpoint");
            views.insert(id, status_of(&addr).await);
        }
        let leaders: Vec<Option<u64>> = views
            .values()
            .map(|s| s.as_ref().map(|s| s.leader_id).filter(|l| *l != 0))
            .collect();
        if let Some(Some(first)) = leaders.first() {
            let leader = usize::try_from(*first).expect("a node id fits usize");
            let agreed = leaders.iter().all(|l| *l == Some(*first));
            let leads = views
                .get(&leader)
                .and_then(Option::as_ref)
                .is_some_and(|s| {
                    s.state() == baton_client::proto::RaftRole::Leader && s.node_id == *first
                });
            if agreed && leads {
                return leader;
            }
        }
        let last = format!(
            "{:?}",
            views
                .iter()
                .map(|(id, s)| (id, s.as_ref().map(|s| (s.state(), s.term, s.leader_id))))
                .collect::<Vec<_>>()
        );
        assert!(
            Instant::now() < deadline,
            "nodes {ids:?} did not agree on a leader among themselves within {within:?}; \
             last views (state, term, leader): {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads `events` until the grants it yielded cover every partition of the
/// group; returns them by partition. Any other event fails the test.
async fn await_all_assigned(
    events: &mut Events,
    who: &str,
    within: Duration,
) -> BTreeMap<u32, Grant> {
    let deadline = tokio::time::Instant::now() + within;
    let mut grants = BTreeMap::new();
    while grants.len() < PARTITIONS as usize {
        let event = tokio::time::timeout_at(deadline, events.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{who} was not assigned all {PARTITIONS} partitions within {within:?} \
                     (has {:?})",
                    ranges_of(grants.keys().copied())
                )
            })
            .unwrap_or_else(|| panic!("{who}'s event stream ended"));
        match event {
            WorkerEvent::Assigned(grant) => {
                for p in each(grant.partitions()) {
                    grants.insert(p, grant.clone());
                }
            }
            other => panic!("{who} got {other:?} before holding every partition"),
        }
    }
    grants
}

/// Seconds since `zero`, for the printed timeline.
fn at(zero: Instant, t: Instant) -> String {
    format!("+{:.3}s", t.saturating_duration_since(zero).as_secs_f64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_does_not_renew_a_lease_the_majority_lets_expire() {
    let binary = node_binary();
    let scratch = Scratch::new();
    let cluster = Cluster::start(3, Backend::Proxy, &binary, &scratch.0)
        .await
        .expect("start a 3-node cluster on the proxy backend");
    let all = cluster.members();
    let old = agreed_leader(&cluster, &all, Duration::from_secs(15)).await;
    let peers: Vec<usize> = all.iter().copied().filter(|id| *id != old).collect();
    let old_endpoint = cluster.endpoint(old).expect("the leader's endpoint");
    let peer_endpoints: Vec<String> = peers
        .iter()
        .map(|id| cluster.endpoint(*id).expect("a peer's endpoint"))
        .collect();
    println!("binary {}; leader {old}, peers {peers:?}", binary.display());

    let mut admin =
        AdminClient::new(&cluster.endpoints(), Duration::from_secs(10)).expect("an admin client");
    admin
        .create_group(
            GROUP,
            GroupConfig {
                partitions: Some(PARTITIONS),
                ..Default::default()
            },
        )
        .await
        .expect("create the group");

    // Worker A talks to the leader only: its keepalive stream stays there.
    let (_worker_a, mut events_a) = tokio::time::timeout(
        Duration::from_secs(10),
        Worker::builder([old_endpoint.clone()], GROUP)
            .id("worker-a")
            .ttl(TTL)
            .join_patience(Duration::from_secs(5))
            .join(),
    )
    .await
    .expect("worker A joins within 10 s")
    .expect("worker A joins");
    let grants_a = await_all_assigned(&mut events_a, "worker A", Duration::from_secs(10)).await;
    assert!(
        grants_a.iter().all(|(p, g)| g.holds(*p)),
        "worker A holds every partition it was just granted"
    );

    // From here on A's application only listens: its events are recorded.
    let heard_a: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let listener = {
        let heard = heard_a.clone();
        tokio::spawn(async move {
            while let Some(event) = events_a.next().await {
                let name = match &event {
                    WorkerEvent::Assigned(g) => format!("Assigned {:?}", g.partitions()),
                    WorkerEvent::Revoked { partitions, .. } => format!("Revoked {partitions:?}"),
                    WorkerEvent::LeaseLost => "LeaseLost".to_string(),
                    other => format!("{other:?}"),
                };
                heard
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((Instant::now(), name));
            }
        })
    };

    // When each of A's grants stopped holding its partition, polled every
    // millisecond on a thread of its own.
    let ended_a: Arc<Mutex<BTreeMap<u32, Instant>>> = Arc::default();
    let stop_polling = Arc::new(AtomicBool::new(false));
    let poller = {
        let grants = grants_a.clone();
        let ended = ended_a.clone();
        let stop = stop_polling.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for (p, grant) in &grants {
                    if !grant.holds(*p) {
                        let now = Instant::now();
                        ended
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .entry(*p)
                            .or_insert(now);
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let ended = || ended_a.lock().unwrap_or_else(|e| e.into_inner()).clone();

    // Pull the old leader's cables to both peers, both ways.
    for &peer in &peers {
        cluster
            .cut(old, peer, CutMode::Drop)
            .expect("cut leader -> peer");
        cluster
            .cut(peer, old, CutMode::Drop)
            .expect("cut peer -> leader");
    }
    let cut = Instant::now();
    println!("{}: cut node {old} off from {peers:?} (drop)", at(cut, cut));

    let new = agreed_leader(&cluster, &peers, Duration::from_secs(10)).await;
    let elected = Instant::now();
    println!("{}: nodes {peers:?} follow node {new}", at(cut, elected));

    // Worker B talks to the majority only.
    let (_worker_b, mut events_b) = tokio::time::timeout(
        Duration::from_secs(10),
        Worker::builder(peer_endpoints.clone(), GROUP)
            .id("worker-b")
            .ttl(TTL)
            .join_patience(Duration::from_secs(5))
            .join(),
    )
    .await
    .expect("worker B joins the majority within 10 s")
    .expect("worker B joins the majority");
    println!(
        "{}: worker B joined through {peer_endpoints:?}",
        at(cut, Instant::now())
    );

    // Every Assigned B hears: at that instant, A must hold none of it.
    let bound = Duration::from_secs(20);
    let deadline = tokio::time::Instant::now() + bound;
    let mut held_b: BTreeMap<u32, (Instant, u64)> = BTreeMap::new();
    let mut violation: Option<(Instant, Grant, Vec<u32>)> = None;
    while held_b.len() < PARTITIONS as usize {
        let event = tokio::time::timeout_at(deadline, events_b.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "worker B was not granted A's partitions within {bound:?} of joining \
                     (has {:?}); A's session should have expired on node {new} after \
                     its TTL of {TTL:?} plus a tick",
                    ranges_of(held_b.keys().copied())
                )
            })
            .expect("worker B's event stream ended");
        let WorkerEvent::Assigned(grant) = event else {
            continue;
        };
        let arrived = Instant::now();
        let still_a: Vec<u32> = each(grant.partitions())
            .filter(|p| grants_a.get(p).is_some_and(|g| g.holds(*p)))
            .collect();
        println!(
            "{}: worker B Assigned {:?} (token {})",
            at(cut, arrived),
            grant.partitions(),
            grant.fencing_token()
        );
        if !still_a.is_empty() {
            violation = Some((arrived, grant, still_a));
            break;
        }
        for p in each(grant.partitions()) {
            // A's grant is over (checked above); the poller notes it within
            // a millisecond or so.
            let noted_by = Instant::now() + Duration::from_millis(100);
            let end = loop {
                if let Some(end) = ended().get(&p).copied() {
                    break end;
                }
                assert!(
                    Instant::now() < noted_by,
                    "A's grant of partition {p} is over but the poller noted no end"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            };
            assert!(
                end < arrived,
                "A stopped holding partition {p} at {} but B's grant of it arrived at {}",
                at(cut, end),
                at(cut, arrived)
            );
            held_b.insert(p, (arrived, grant.fencing_token()));
        }
    }

    if let Some((arrived, grant, still_a)) = violation {
        // Watch A for two TTLs more without healing: an SDK whose keepalives
        // go unacknowledged gives up within one TTL, so a grant still held
        // then was renewed by the isolated node.
        let still = ranges_of(still_a.iter().copied());
        let watch_until = arrived + 2 * TTL;
        while Instant::now() < watch_until && still_a.iter().any(|p| !ended().contains_key(p)) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let held_past_2ttl = still_a.iter().any(|p| !ended().contains_key(p));
        cluster.heal_all().expect("heal");
        let healed = Instant::now();
        let heal_bound = healed + Duration::from_secs(10);
        while Instant::now() < heal_bound && still_a.iter().any(|p| !ended().contains_key(p)) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let ends = ended();
        let last_end = still_a
            .iter()
            .map(|p| ends.get(p).copied())
            .collect::<Option<Vec<_>>>();
        let overlap = match last_end.and_then(|e| e.into_iter().max()) {
            Some(end) => format!(
                "A kept holding them for {:.3}s after B's grant (until {}{})",
                end.saturating_duration_since(arrived).as_secs_f64(),
                at(cut, end),
                if end > healed {
                    format!(", after the heal at {}", at(cut, healed))
                } else {
                    String::new()
                }
            ),
            None => format!(
                "A still held them 10 s after the heal at {}",
                at(cut, healed)
            ),
        };
        stop_polling.store(true, Ordering::Relaxed);
        let _ = poller.join();
        listener.abort();
        let heard: Vec<String> = heard_a
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(t, e)| format!("{} {e}", at(cut, *t)))
            .collect();
        cluster.stop();
        panic!(
            "G1 violated: worker B was granted {:?} (token {}) at {} (times from the cut), \
             while worker A's grant still held {still:?}. {overlap}. {} \
             A's SDK heard: {heard:?}",
            grant.partitions(),
            grant.fencing_token(),
            at(cut, arrived),
            if held_past_2ttl {
                format!(
                    "A still held them {:?} after B's grant, longer than its TTL of {TTL:?}: \
                     the isolated node {old} kept acknowledging A's keepalives.",
                    2 * TTL
                )
            } else {
                String::new()
            },
        );
    }

    let ends = ended();
    let a_last = ends.values().max().copied().expect("A's grants all ended");
    let a_first = ends.values().min().copied().expect("A's grants all ended");
    let (b_first, _) = held_b.values().min().copied().expect("B holds partitions");
    println!(
        "{}: A's SDK stopped holding (first partition {}, last {})",
        at(cut, a_last),
        at(cut, a_first),
        at(cut, a_last)
    );
    println!(
        "{}: B's first grant arrived; margin {:.3}s (A stopped {:.3}s after the cut, \
         B was granted {:.3}s after it)",
        at(cut, b_first),
        b_first.saturating_duration_since(a_last).as_secs_f64(),
        a_last.saturating_duration_since(cut).as_secs_f64(),
        b_first.saturating_duration_since(cut).as_secs_f64(),
    );
    for (t, e) in heard_a.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        println!("{}: worker A heard {e}", at(cut, *t));
    }

    cluster.heal_all().expect("heal");
    stop_polling.store(true, Ordering::Relaxed);
    poller.join().expect("the poller thread");
    listener.abort();
    cluster.stop();
}
