//! `batonctl` against a running `baton-node` process: every group,
//! assignment, route, tombstone and worker command, in both output modes
//! (`--json` and the table an operator reads).
//!
//! `batonctl` belongs to another package, so it must have been built next to
//! `baton-node` first: `scripts/test` (the README's test command) does that.

use std::process::{Command, Output};
use std::time::Duration;

use crate::fixture::procs::{batonctl, ctl, ctl_json, single_process, Proc};

/// A single-node cluster in a fresh directory; its gRPC endpoint.
struct Node {
    endpoint: String,
    proc: Proc,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start() -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let (addr, _, proc) = single_process(dir.path());
        Node {
            endpoint: addr.to_string(),
            proc,
            _dir: dir,
        }
    }

    /// A node with group `group` of `partitions` partitions.
    fn with_group(group: &str, partitions: u32) -> Node {
        let node = Node::start();
        let partitions = partitions.to_string();
        ctl(
            &node.endpoint,
            &["group", "create", group, "--partitions", &partitions],
        );
        node
    }

    /// Stops the node: it must exit 0 within a few seconds of SIGTERM.
    fn stop(self) {
        self.proc.sigterm(Duration::from_secs(8));
    }
}

/// Runs batonctl against `endpoint` and returns what it did, failed or not.
fn run(endpoint: &str, args: &[&str]) -> Output {
    Command::new(batonctl())
        .args(["--endpoints", endpoint])
        .args(args)
        .output()
        .expect("run batonctl")
}

/// The current config revision of `group`, as `--if-revision` takes it.
fn config_revision(e: &str, group: &str) -> String {
    ctl_json(e, &["group", "get", group])["config_revision"].to_string()
}

/// Group "chat" of 8 partitions, frozen so that only moves by hand assign
/// partitions, with workers w1 and w2 joined over gRPC (their 10 s leases
/// outlast the test).
fn chat_with_two_workers() -> Node {
    let node = Node::with_group("chat", 8);
    let e = node.endpoint.as_str();
    assert_eq!(ctl_json(e, &["group", "freeze", "chat"])["frozen"], true);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    for w in ["w1", "w2"] {
        rt.block_on(async {
            let mut client =
                baton_proto::v1::worker_client::WorkerClient::connect(format!("http://{e}"))
                    .await
                    .expect("connect");
            client
                .join(baton_proto::v1::JoinRequest {
                    group: "chat".into(),
                    worker: w.into(),
                    ttl_ms: Some(10_000),
                    weight: Some(2),
                    labels: [("zone".to_string(), "a".to_string())].into(),
                })
                .await
                .expect("join");
        });
    }
    node
}

#[test]
fn batonctl_creates_lists_and_gets_groups() {
    let node = Node::start();
    let e = node.endpoint.as_str();
    let created = ctl_json(
        e,
        &[
            "group",
            "create",
            "mail-sync",
            "--partitions",
            "360",
            "--max-in-flight",
            "8",
        ],
    );
    assert_eq!(created["partitions"], 360);
    assert_eq!(created["max_in_flight"], 8);
    assert!(
        created["config_revision"].as_u64().is_some(),
        "the config revision, for --if-revision: {created}"
    );
    assert!(ctl(e, &["group", "create", "chat", "--partitions", "8"]).contains("chat"));
    let listed = ctl_json(e, &["group", "list"]);
    assert_eq!(listed["groups"].as_array().map(Vec::len), Some(2));
    assert!(ctl(e, &["group", "list"]).contains("mail-sync  360"));
    assert_eq!(
        ctl_json(e, &["group", "get", "mail-sync"])["name"],
        "mail-sync"
    );
    assert!(
        ctl(e, &["group", "get", "mail-sync", "--serializable"]).contains("partitions         360")
    );
    node.stop();
}

#[test]
fn batonctl_updates_and_splits_a_group_at_the_revision_it_names() {
    let node = Node::with_group("mail-sync", 360);
    let e = node.endpoint.as_str();
    let revision = config_revision(e, "mail-sync");
    let updated = ctl_json(
        e,
        &[
            "group",
            "update",
            "mail-sync",
            "--if-revision",
            &revision,
            "--rejoin-grace-ms",
            "5000",
        ],
    );
    assert_eq!(updated["rejoin_grace_ms"], 5000);
    let revision = updated["config_revision"]
        .as_u64()
        .expect("revision")
        .to_string();
    let split = ctl_json(
        e,
        &["group", "split", "mail-sync", "--if-revision", &revision],
    );
    assert_eq!(split["partitions"], 720);
    let revision = config_revision(e, "mail-sync");
    let updated = ctl(
        e,
        &[
            "group",
            "update",
            "mail-sync",
            "--if-revision",
            &revision,
            "--max-in-flight",
            "16",
        ],
    );
    assert!(updated.contains("max_in_flight      16"), "{updated}");
    let revision = config_revision(e, "mail-sync");
    assert!(ctl(
        e,
        &["group", "split", "mail-sync", "--if-revision", &revision]
    )
    .contains("partitions         1440"));
    node.stop();
}

#[test]
fn batonctl_passes_on_the_refusal_of_a_stale_if_revision() {
    let node = Node::with_group("mail-sync", 360);
    let e = node.endpoint.as_str();
    let revision = config_revision(e, "mail-sync");
    ctl(
        e,
        &["group", "split", "mail-sync", "--if-revision", &revision],
    );
    let stale = run(
        e,
        &["group", "split", "mail-sync", "--if-revision", &revision],
    );
    assert!(
        String::from_utf8_lossy(&stale.stderr).contains("ABORTED"),
        "a stale --if-revision is refused"
    );
    node.stop();
}

#[test]
fn batonctl_freezes_and_unfreezes_a_group() {
    let node = Node::with_group("mail-sync", 360);
    let e = node.endpoint.as_str();
    assert_eq!(
        ctl_json(e, &["group", "freeze", "mail-sync"])["frozen"],
        true
    );
    assert!(ctl(e, &["group", "unfreeze", "mail-sync"]).contains("frozen             false"));
    assert!(ctl(e, &["group", "freeze", "mail-sync"]).contains("frozen             true"));
    assert_eq!(
        ctl_json(e, &["group", "unfreeze", "mail-sync"])["frozen"],
        false
    );
    node.stop();
}

#[test]
fn batonctl_shows_a_group_without_workers_as_unassigned_with_nothing_to_move() {
    let node = Node::with_group("mail-sync", 1440);
    let e = node.endpoint.as_str();
    let shown = ctl_json(e, &["assignment", "show", "mail-sync"]);
    assert_eq!(shown["group"], "mail-sync");
    assert_eq!(shown["partitions"], 1440);
    assert_eq!(shown["workers"], serde_json::json!([]));
    assert_eq!(shown["moving"], serde_json::json!([]));
    assert_eq!(shown["unassigned"], serde_json::json!([[0, 1439]]));
    assert!(ctl(e, &["assignment", "show", "mail-sync"]).contains("unassigned: 0-1439"));
    assert_eq!(
        ctl_json(e, &["assignment", "plan", "mail-sync"])["handoffs"],
        serde_json::json!([])
    );
    assert!(ctl(e, &["assignment", "plan", "mail-sync"]).contains("nothing to move"));
    node.stop();
}

#[test]
fn batonctl_routes_a_key_or_a_partition_to_its_owner() {
    let node = Node::with_group("mail-sync", 1440);
    let e = node.endpoint.as_str();
    let routed = ctl_json(e, &["route", "mail-sync", "account-42"]);
    let partition = routed["partition"].as_u64().expect("partition");
    assert!(partition < 1440);
    assert!(ctl(e, &["route", "mail-sync", "--partition", "7"]).contains("partition 7: unassigned"));
    node.stop();
}

#[test]
fn batonctl_puts_checks_and_lists_tombstones() {
    let node = Node::with_group("mail-sync", 1440);
    let e = node.endpoint.as_str();
    let routed = ctl_json(e, &["route", "mail-sync", "account-42"]);
    let partition = routed["partition"].as_u64().expect("partition");
    let put = ctl_json(e, &["tombstone", "put", "mail-sync", "account-42"]);
    assert_eq!(
        put["partition"].as_u64(),
        Some(partition),
        "the tombstone lands on the key's partition"
    );
    assert!(
        ctl(e, &["tombstone", "put", "mail-sync", "account-43"]).contains("account-43: deleted")
    );
    let checked = ctl_json(
        e,
        &[
            "tombstone",
            "check",
            "mail-sync",
            "account-42",
            "account-44",
        ],
    );
    assert_eq!(checked["results"][0]["deleted"], true);
    assert_eq!(checked["results"][1]["deleted"], false);
    assert!(ctl(e, &["tombstone", "check", "mail-sync", "account-44"]).contains("account-44  no"));
    let listed = ctl_json(e, &["tombstone", "list", "mail-sync"]);
    assert_eq!(listed["tombstones"].as_array().map(Vec::len), Some(2));
    assert!(ctl(
        e,
        &["tombstone", "list", "mail-sync", "--partitions", "0-1439"]
    )
    .contains("account-43"));
    node.stop();
}

/// Errors reach the operator as the gRPC code and the server's message.
#[test]
fn batonctl_reports_an_error_as_its_grpc_code_and_the_servers_message() {
    let node = Node::start();
    let out = run(&node.endpoint, &["group", "get", "nope"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("NOT_FOUND") && stderr.contains("\"nope\" does not exist"),
        "{stderr}"
    );
    node.stop();
}

#[test]
fn batonctl_lists_workers_with_their_weight_and_labels() {
    let node = chat_with_two_workers();
    let e = node.endpoint.as_str();
    let workers = ctl_json(e, &["worker", "list", "chat"]);
    assert_eq!(workers["workers"][0]["id"], "w1");
    assert_eq!(workers["workers"][1]["weight"], 2);
    assert_eq!(workers["workers"][1]["labels"]["zone"], "a");
    assert!(ctl(e, &["worker", "list", "chat"]).contains("w2      active"));
    node.stop();
}

/// Moves by hand: free partitions are granted at once.
#[test]
fn batonctl_grants_free_partitions_moved_by_hand_at_once() {
    let node = chat_with_two_workers();
    let e = node.endpoint.as_str();
    let moved = ctl_json(
        e,
        &[
            "assignment",
            "move",
            "chat",
            "--partitions",
            "0-3,5",
            "--to",
            "w1",
        ],
    );
    assert_eq!(moved["grants"][0]["to"], "w1");
    assert_eq!(
        moved["grants"][0]["ranges"],
        serde_json::json!([[0, 3], [5, 5]])
    );
    assert!(ctl(
        e,
        &[
            "assignment",
            "move",
            "chat",
            "--partitions",
            "4",
            "--to",
            "w2"
        ]
    )
    .contains("grant    4 -> w2"));
    let shown = ctl_json(e, &["assignment", "show", "chat"]);
    assert_eq!(
        shown["workers"][0]["ranges"],
        serde_json::json!([[0, 3], [5, 5]])
    );
    node.stop();
}

#[test]
fn batonctl_drains_and_evicts_workers_holding_partitions() {
    let node = chat_with_two_workers();
    let e = node.endpoint.as_str();
    ctl(
        e,
        &[
            "assignment",
            "move",
            "chat",
            "--partitions",
            "0-3,5",
            "--to",
            "w1",
        ],
    );
    ctl(
        e,
        &[
            "assignment",
            "move",
            "chat",
            "--partitions",
            "4",
            "--to",
            "w2",
        ],
    );
    let drained = ctl_json(e, &["worker", "drain", "chat", "w1"]);
    assert!(
        drained["outcome"]
            .as_str()
            .unwrap_or_default()
            .contains("w1"),
        "{drained}"
    );
    assert!(ctl(e, &["worker", "evict", "chat", "w2"]).contains("no longer renews"));
    let evicted = ctl_json(e, &["worker", "evict", "chat", "w2"]);
    assert!(
        evicted["outcome"]
            .as_str()
            .unwrap_or_default()
            .contains("w2"),
        "{evicted}"
    );
    assert!(ctl(e, &["worker", "drain", "chat", "w2"]).contains("w2"));

    assert!(ctl(e, &["worker", "list", "chat"]).contains("evicting"));
    node.stop();
}

/// A group with live sessions is deleted only with --force, and then goes
/// with its last session.
#[test]
fn batonctl_deletes_a_group_with_live_sessions_only_with_force() {
    let node = chat_with_two_workers();
    let e = node.endpoint.as_str();
    let refused = run(e, &["group", "delete", "chat"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "refused without --force");
    assert!(
        stderr.contains("FAILED_PRECONDITION")
            && stderr.contains(r#"live session(s) ("w1", "w2")"#),
        "{stderr}"
    );
    assert!(ctl(e, &["group", "delete", "chat", "--force"]).contains("group chat is being deleted"));
    node.stop();
}

/// A group without sessions is deleted at once.
#[test]
fn batonctl_deletes_a_group_without_sessions_at_once() {
    let node = Node::with_group("mail-sync", 360);
    let deleted = ctl_json(&node.endpoint, &["group", "delete", "mail-sync"]);
    assert_eq!(deleted["group"], "mail-sync", "{deleted}");
    assert_eq!(deleted["deleted"], true, "{deleted}");
    node.stop();
}
