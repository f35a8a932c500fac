//! deploy/compose.yaml on the machine's Docker engine: the 3-node cluster
//! comes up healthy, `batonctl cluster status` answers through it, a worker
//! that is stopped hands its partitions to the other one, and with one node
//! container stopped the cluster still elects a leader and takes writes.
//! Everything is torn down at the end, volumes included.
//!
//! Needs a running engine, `docker-compose` and the image `baton:local`
//! (`deploy/image.sh --debug`), so it is ignored by a plain `cargo test`:
//! `scripts/test` builds the image and runs it when `docker info` succeeds,
//! and says in one line why it did not otherwise.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

const PROJECT: &str = "baton-compose-test";

fn compose_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/compose.yaml")
}

fn compose(args: &[&str]) -> Output {
    Command::new("docker-compose")
        .arg("-p")
        .arg(PROJECT)
        .arg("-f")
        .arg(compose_file())
        .args(args)
        .output()
        .expect("run docker-compose")
}

fn ok(args: &[&str]) -> String {
    let out = compose(args);
    assert!(
        out.status.success(),
        "docker-compose {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `batonctl ARGS --json` run inside `service`, parsed; None while it fails.
fn batonctl(service: &str, args: &[&str]) -> Option<Value> {
    let mut full = vec!["exec", "-T", service, "batonctl"];
    full.extend_from_slice(args);
    full.push("--json");
    let out = compose(&full);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

/// Polls `check` until it yields a value, for at most `limit`.
fn eventually<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Tears the project down, volumes included, however the test ends.
struct Down;

impl Drop for Down {
    fn drop(&mut self) {
        let _ = compose(&["down", "-v", "--remove-orphans", "-t", "5"]);
    }
}

fn holders(assignment: &Value) -> Vec<(String, u64)> {
    assignment["workers"]
        .as_array()
        .map(|ws| {
            ws.iter()
                .filter_map(|w| Some((w["id"].as_str()?.to_string(), w["count"].as_u64()?)))
                .filter(|(_, n)| *n > 0)
                .collect()
        })
        .unwrap_or_default()
}

fn settled(a: &Value) -> bool {
    a["moving"].as_array().is_some_and(Vec::is_empty)
        && a["unassigned"].as_array().is_some_and(Vec::is_empty)
}

#[test]
#[ignore = "needs a Docker engine and the baton:local image; scripts/test runs it"]
fn compose_cluster_serves_hands_off_and_survives_a_node() {
    let _ = compose(&["down", "-v", "--remove-orphans", "-t", "1"]);
    let _down = Down;
    ok(&["up", "-d"]);

    // Three members, one leader, as seen through the first node.
    let status = eventually("a leader and 3 members", Duration::from_secs(90), || {
        batonctl("n1", &["cluster", "status"]).filter(|s| {
            s["leader_id"].as_u64().is_some_and(|l| l > 0)
                && s["members"].as_array().is_some_and(|m| m.len() == 3)
        })
    });
    let leader = status["leader_id"].as_u64().expect("leader id");

    // Both demo workers hold half of the group.
    eventually(
        "both workers hold 32 partitions",
        Duration::from_secs(90),
        || {
            batonctl("n1", &["assignment", "show", "demo"]).filter(|a| {
                settled(a) && {
                    let mut h = holders(a);
                    h.sort();
                    h == [("worker-a".to_string(), 32), ("worker-b".to_string(), 32)]
                }
            })
        },
    );

    // Stopping a worker (SIGTERM) hands its partitions to the other.
    ok(&["stop", "-t", "20", "worker-a"]);
    eventually("worker-b holds all 64", Duration::from_secs(60), || {
        batonctl("n1", &["assignment", "show", "demo"])
            .filter(|a| settled(a) && holders(a) == [("worker-b".to_string(), 64)])
    });

    // The leader's container stops; the other two elect one and take writes.
    let stopped = format!("n{leader}");
    let survivor = if leader == 1 { "n2" } else { "n1" };
    ok(&["stop", "-t", "5", &stopped]);
    let status = eventually("a new leader", Duration::from_secs(60), || {
        batonctl(survivor, &["cluster", "status"]).filter(|s| {
            s["leader_id"]
                .as_u64()
                .is_some_and(|l| l > 0 && l != leader)
        })
    });
    let put = eventually("a tombstone put", Duration::from_secs(30), || {
        batonctl(survivor, &["tombstone", "put", "demo", "account-42"])
    });
    assert!(
        put["revision"].as_u64().is_some_and(|r| r > 0),
        "the write was committed: {put}"
    );
    println!(
        "compose: leader n{leader} stopped, n{} leads, tombstone at revision {}",
        status["leader_id"], put["revision"]
    );
}
