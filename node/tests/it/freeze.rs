//! G4 under freezes, with real `baton-node` processes stopped by SIGSTOP (a
//! frozen node's kernel still accepts connections; nothing answers them)
//! and killed by SIGKILL: clients skip a frozen endpoint, workers keep their
//! partitions through a frozen leader, a resumed straggler deposes nobody,
//! and `batonctl watch` survives its node's `kill -9`.
//!
//! `batonctl` belongs to another package, so it must have been built next to
//! `baton-node` first: `scripts/test` (the README's test command) does that.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use baton_client::AdminClient;
use nix::sys::signal::{kill, Signal};
use serde_json::Value;

use crate::fixture;

use crate::fixture::procs::{batonctl, status_of, three_processes, wait_applied, Proc};
use crate::fixture::watch as w;
use crate::fixture::worker::{assignment, create_group, put_tombstone};

const WAIT: Duration = Duration::from_secs(30);

/// Stops a process with SIGSTOP; continues it when dropped, so a failing
/// test does not leave a frozen node behind (the Proc's own drop kills it).
struct Frozen(nix::unistd::Pid);

impl Frozen {
    fn freeze(proc: &Proc) -> Frozen {
        kill(proc.pid(), Signal::SIGSTOP).expect("SIGSTOP");
        Frozen(proc.pid())
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

/// Polls the given nodes (other processes: there is no event to await) until
/// one of them leads in a term above `above`; returns its id and term.
async fn new_leader(addrs: &[SocketAddr], above: u64) -> (u64, u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        for addr in addrs {
            if let Some(s) = status_of_quickly(*addr).await {
                if s.leader_id == s.node_id && s.term > above {
                    return (s.node_id, s.term);
                }
            }
        }
        assert!(Instant::now() < deadline, "no new leader within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A node's own status, or `None` if it does not answer within a second.
async fn status_of_quickly(addr: SocketAddr) -> Option<baton_proto::v1::ClusterStatusResponse> {
    tokio::time::timeout(Duration::from_secs(1), status_of(addr))
        .await
        .ok()
        .flatten()
}

fn joined(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs batonctl; returns whether it succeeded, how long it took, and what
/// it printed.
fn timed_ctl(endpoints: &str, args: &[&str]) -> (bool, Duration, String) {
    let start = Instant::now();
    let out = Command::new(batonctl())
        .args(["--endpoints", endpoints])
        .args(args)
        .output()
        .expect("run batonctl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), start.elapsed(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_batonctl_command_answers_within_2s_with_the_first_endpoint_frozen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addrs, procs) = three_processes(dir.path());
    let endpoints: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    let mut admin = AdminClient::new(&endpoints, WAIT).expect("client");
    create_group(&mut admin, "g", 12).await;
    let term = admin.cluster_status().await.expect("status").term;

    // Node 1, the first endpoint (and the one that initialized the cluster,
    // so most likely the leader), freezes.
    let frozen = Frozen::freeze(procs[0].as_ref().expect("node 1"));
    let all = joined(&addrs);
    let first = timed_ctl(&all, &["group", "list"]);
    println!(
        "first command right after the freeze: {:?} ({})",
        first.1,
        if first.0 { "ok" } else { "failed" }
    );
    // Whoever led, the two others lead from now on.
    new_leader(&addrs[1..], if first.0 { 0 } else { term }).await;
    let commands: &[&[&str]] = &[
        &["cluster", "status"],
        &["group", "list"],
        &["group", "get", "g"],
        &["assignment", "show", "g"],
        &["assignment", "plan", "g"],
        &["route", "g", "account-42"],
        &["tombstone", "put", "g", "account-42"],
        &["tombstone", "check", "g", "account-42"],
        &["tombstone", "list", "g"],
        &["worker", "list", "g"],
    ];
    let mut slow = Vec::new();
    for args in commands {
        let (ok, took, out) = timed_ctl(&all, args);
        println!("batonctl {}: {took:?}", args.join(" "));
        assert!(ok, "batonctl {args:?} failed with node 1 frozen: {out}");
        if took > Duration::from_secs(2) {
            slow.push(format!("{}: {took:?}", args.join(" ")));
        }
    }
    assert!(
        slow.is_empty(),
        "over 2 s with the first endpoint frozen: {slow:?}"
    );
    drop(frozen);
    for proc in procs.into_iter().flatten() {
        proc.sigterm(Duration::from_secs(8));
    }
}

/// A follower frozen for 5 s, longer than any election timeout, comes back
/// without raising the term: it cannot depose the leader a majority follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_frozen_for_5s_and_resumed_does_not_change_the_leader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addrs, procs) = three_processes(dir.path());
    let endpoints: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    let mut admin = AdminClient::new(&endpoints, WAIT).expect("client");
    let before = admin.cluster_status().await.expect("status");
    let follower = (1..=3u64)
        .find(|id| *id != before.leader_id)
        .expect("a follower");
    let index = usize::try_from(follower - 1).expect("index");

    let frozen = Frozen::freeze(procs[index].as_ref().expect("follower"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    drop(frozen);
    // Once it has caught up with a write made after it resumed, and for two
    // more seconds (four times the longest election timeout), the leader
    // and the term stay as they were.
    let revision = admin.barrier().await.expect("barrier").revision;
    wait_applied(addrs[index], revision).await;
    let watch_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < watch_until {
        for addr in &addrs {
            if let Some(s) = status_of_quickly(*addr).await {
                assert_eq!(
                    (s.leader_id, s.term),
                    (before.leader_id, before.term),
                    "node {} after node {follower} resumed",
                    s.node_id
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for proc in procs.into_iter().flatten() {
        proc.sigterm(Duration::from_secs(8));
    }
}

/// A `batonctl worker join` process, its JSON lines read on a thread.
struct CtlWorker {
    child: Child,
    lines: std::sync::mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl CtlWorker {
    fn join(endpoints: &str, group: &str, id: &str, ttl_ms: u64) -> CtlWorker {
        let mut child = Command::new(batonctl())
            .args([
                "--endpoints",
                endpoints,
                "worker",
                "join",
                group,
                "--id",
                id,
            ])
            .args(["--ttl-ms", &ttl_ms.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn batonctl worker join");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        });
        CtlWorker {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    fn drain(&mut self) {
        while let Ok(v) = self.lines.try_recv() {
            self.seen.push(v);
        }
    }
}

impl Drop for CtlWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Hold intervals per partition from a worker's lines: from `assigned` to
/// `released`, `lease_lost` or the end (`None`), in unix ms.
fn holds(lines: &[Value]) -> BTreeMap<u64, Vec<(u64, Option<u64>)>> {
    let mut out: BTreeMap<u64, Vec<(u64, Option<u64>)>> = BTreeMap::new();
    let each = |v: &Value| -> Vec<u64> {
        v["partitions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| Some(r[0].as_u64()?..=r[1].as_u64()?))
            .flatten()
            .collect()
    };
    for v in lines {
        let at = v["unix_ms"].as_u64().unwrap_or_default();
        match v["event"].as_str() {
            Some("assigned") => {
                for p in each(v) {
                    out.entry(p).or_default().push((at, None));
                }
            }
            Some("released") => {
                for p in each(v) {
                    if let Some(h) = out.get_mut(&p).and_then(|h| h.last_mut()) {
                        h.1.get_or_insert(at);
                    }
                }
            }
            Some("lease_lost") => {
                for h in out.values_mut().filter_map(|h| h.last_mut()) {
                    h.1.get_or_insert(at);
                }
            }
            _ => {}
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_listing_a_frozen_leader_first_keep_their_partitions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addrs, procs) = three_processes(dir.path());
    let endpoints: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    let mut admin = AdminClient::new(&endpoints, WAIT).expect("client");
    create_group(&mut admin, "g", 12).await;
    let before = admin.cluster_status().await.expect("status");
    let leader = usize::try_from(before.leader_id - 1).expect("index");
    // Both workers list the leader first.
    let mut order = vec![addrs[leader]];
    order.extend(
        addrs
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != leader)
            .map(|(_, a)| *a),
    );
    let ttl = Duration::from_secs(3);
    let mut workers = [
        CtlWorker::join(&joined(&order), "g", "w1", ttl.as_millis() as u64),
        CtlWorker::join(&joined(&order), "g", "w2", ttl.as_millis() as u64),
    ];
    let survivors: Vec<String> = order[1..].iter().map(ToString::to_string).collect();
    let balanced = |a: &baton_proto::v1::AssignmentResponse| {
        a.unassigned.is_empty()
            && a.moving.is_empty()
            && a.workers.len() == 2
            && a.workers.iter().all(|w| w.count == 6)
    };
    fixture::worker::settle(&mut admin, "g", "balanced", balanced).await;
    let sessions: Vec<u64> = assignment(&mut admin, "g")
        .await
        .workers
        .iter()
        .map(|w| w.session)
        .collect();

    // The leader freezes for twice the TTL.
    let frozen_at = Instant::now();
    let frozen = Frozen::freeze(procs[leader].as_ref().expect("leader"));
    let (new_leader_id, _) = new_leader(&order[1..], before.term).await;
    println!(
        "node {new_leader_id} leads {:?} after the freeze",
        frozen_at.elapsed()
    );
    let mut admin = AdminClient::new(&survivors, WAIT).expect("client");
    // Every partition is held (by the same sessions, if the workers kept
    // their leases) within TTL + 2 s of the freeze, and stays so.
    let bound = frozen_at + ttl + Duration::from_secs(2);
    let mut whole_since: Option<Instant> = None;
    while frozen_at.elapsed() < ttl * 2 {
        let a = assignment(&mut admin, "g").await;
        if balanced(&a) {
            whole_since.get_or_insert(Instant::now());
        } else {
            assert!(
                Instant::now() < bound,
                "{:?} after the leader froze, not every partition is held: {a:?}",
                frozen_at.elapsed()
            );
            whole_since = None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(whole_since.is_some(), "balanced at the end of the freeze");
    let after: Vec<u64> = assignment(&mut admin, "g")
        .await
        .workers
        .iter()
        .map(|w| w.session)
        .collect();
    drop(frozen);
    for w in &mut workers {
        w.drain();
    }
    let lost: Vec<usize> = workers
        .iter()
        .map(|w| w.seen.iter().filter(|v| v["event"] == "lease_lost").count())
        .collect();
    println!("sessions before {sessions:?}, after {after:?}; leases lost per worker {lost:?}");
    assert_eq!(
        (after, lost),
        (sessions, vec![0, 0]),
        "both workers kept their sessions and leases through the freeze"
    );
    // Never two holders: the workers' own hold intervals do not overlap.
    let (h1, h2) = (holds(&workers[0].seen), holds(&workers[1].seen));
    for (p, a) in &h1 {
        for (s1, e1) in a {
            for (s2, e2) in h2.get(p).into_iter().flatten() {
                let overlap = s1.max(s2) < &e1.unwrap_or(u64::MAX).min(e2.unwrap_or(u64::MAX));
                assert!(
                    !overlap,
                    "partition {p} held by both: w1 {s1}..{e1:?}, w2 {s2}..{e2:?}"
                );
            }
        }
    }
    for proc in procs.into_iter().flatten() {
        proc.sigterm(Duration::from_secs(8));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batonctl_watch_survives_kill_9_of_its_node_without_gap_or_duplicate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addrs, mut procs) = three_processes(dir.path());
    let endpoints: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    let mut admin = AdminClient::new(&endpoints, WAIT).expect("client");
    create_group(&mut admin, "k", 8).await;
    let from = assignment(&mut admin, "k").await.revision + 1;
    for i in 0..20 {
        put_tombstone(&mut admin, "k", &format!("before-{i}")).await;
    }
    // The watch lists node 2 first, so it is served there.
    let order = joined(&[addrs[1], addrs[0], addrs[2]]);
    let mut watch = Command::new(batonctl())
        .args(["--endpoints", &order, "--json", "watch", "k"])
        .args(["--from", &from.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn batonctl watch");
    let stdout = watch.stdout.take().expect("stdout");
    let (tx, lines) = std::sync::mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let mut seen: Vec<Value> = Vec::new();
    while seen.len() < 20 {
        seen.push(lines.recv_timeout(WAIT).expect("events before the kill"));
    }
    procs[1].take().expect("node 2").sigkill();
    let survivors = vec![endpoints[0].clone(), endpoints[2].clone()];
    let mut admin = AdminClient::new(&survivors, WAIT).expect("client");
    let mut last = 0;
    for i in 0..20 {
        last = put_tombstone(&mut admin, "k", &format!("after-{i}"))
            .await
            .revision;
    }
    while seen.last().and_then(|v| v["revision"].as_u64()) < Some(last) {
        match lines.recv_timeout(WAIT) {
            Ok(v) => seen.push(v),
            Err(_) => {
                let _ = watch.kill();
                let mut err = String::new();
                if let Some(mut e) = watch.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                panic!("the watch stopped before revision {last}: {err}");
            }
        }
    }
    assert!(
        watch.try_wait().expect("wait").is_none(),
        "batonctl watch is still running after its node's kill -9"
    );
    let _ = watch.kill();
    let _ = watch.wait();
    // The same events as a watch that never lost its node: no gap, no
    // duplicate.
    let mut reference = w::open_retrying(&endpoints[0], w::request("k", from)).await;
    reference.read_until(last).await;
    let printed: Vec<u64> = seen.iter().filter_map(|v| v["revision"].as_u64()).collect();
    assert_eq!(
        printed,
        w::revisions(&reference.events),
        "no gap, no duplicate"
    );
    for proc in procs.into_iter().flatten() {
        proc.sigterm(Duration::from_secs(8));
    }
}
