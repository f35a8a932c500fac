//! What a node cut off from the cluster still tells: a removed node says it
//! was removed (to clients, on `/readyz`) instead of waiting and answering
//! "no leader yet"; a node without a quorum answers serializable reads from
//! its own state, and `batonctl cluster status` shows its view, marked as
//! such.

use std::process::Command;
use std::time::{Duration, Instant};

use baton_client::{AdminClient, ClientError};
use baton_proto::v1 as pb;

use crate::fixture;

use crate::fixture::procs::{batonctl, ctl, three_processes};
use crate::fixture::worker::create_group;
use crate::fixture::{http_get, three_nodes};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_says_so_on_readyz_and_to_clients() {
    let cluster = three_nodes().await;
    let mut admin = cluster.admin();
    admin.remove_node(3).await.expect("remove node 3");
    let removed = cluster.node(3);
    let http = removed.http_addr().expect("http");
    // Node 3 learns it from its own membership or from a voter answering
    // its pre-vote; there is no event to await from outside the node.
    let deadline = Instant::now() + WAIT;
    let body = loop {
        let (code, body) = http_get(http, "/readyz").await;
        if code == 503 && body.contains("removed") {
            break body;
        }
        assert!(Instant::now() < deadline, "still {code}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        body.contains("node 3 was removed from the cluster"),
        "{body}"
    );

    // A client that knows only node 3 is told at once, and not retried.
    let start = Instant::now();
    let mut only_3 = AdminClient::new(&[removed.addr().to_string()], WAIT).expect("client");
    let err = only_3
        .call(|ch| async move {
            pb::admin_client::AdminClient::new(ch)
                .list_groups(pb::ListGroupsRequest {
                    serializable: false,
                })
                .await
        })
        .await
        .expect_err("a removed node serves nothing");
    assert!(
        matches!(&err, ClientError::Status(s) if s.code() == tonic::Code::FailedPrecondition
            && s.message().contains("was removed")),
        "{err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    // Asked directly, even a serializable read is refused with the reason.
    let direct = pb::admin_client::AdminClient::connect(format!("http://{}", removed.addr()))
        .await
        .expect("connect")
        .list_groups(pb::ListGroupsRequest { serializable: true })
        .await
        .expect_err("refused");
    assert_eq!(direct.code(), tonic::Code::Unavailable, "{direct:?}");
    assert!(
        direct.message().contains("node 3 was removed"),
        "{direct:?}"
    );
    // A client that also knows a member is served.
    let mut both = AdminClient::new(
        &[
            removed.addr().to_string(),
            cluster.node(1).addr().to_string(),
        ],
        WAIT,
    )
    .expect("client");
    both.barrier().await.expect("served by the members");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_quorum_answers_serializable_reads_and_shows_its_view() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addrs, mut procs) = three_processes(dir.path());
    let endpoints: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    let mut admin = AdminClient::new(&endpoints, WAIT).expect("client");
    create_group(&mut admin, "g", 4).await;
    admin.barrier().await.expect("barrier");
    fixture::procs::wait_applied(addrs[0], admin.barrier().await.expect("barrier").revision).await;
    // The leader and another node die: a follower is left alone, without
    // a quorum and without a leader.
    let leader = admin.cluster_status().await.expect("status").leader_id;
    let leader = usize::try_from(leader - 1).expect("index");
    let other = (0..3).find(|i| *i != leader).expect("another");
    let survivor = (0..3)
        .find(|i| *i != leader && *i != other)
        .expect("survivor");
    procs[leader].take().expect("leader").sigkill();
    procs[other].take().expect("other").sigkill();
    let alone = endpoints[survivor].as_str();

    let start = Instant::now();
    let got = ctl(alone, &["--json", "group", "get", "g", "--serializable"]);
    println!(
        "serializable group get on the minority node: {:?}",
        start.elapsed()
    );
    assert!(got.contains("\"partitions\": 4"), "{got}");

    let start = Instant::now();
    let status = ctl(alone, &["cluster", "status"]);
    println!(
        "cluster status without a quorum: {:?}\n{status}",
        start.elapsed()
    );
    let expected = format!(
        "no leader answered (no quorum?); as node {} at {alone} sees it",
        survivor + 1
    );
    assert!(status.starts_with(&expected), "{status}");
    let json = ctl(alone, &["--json", "cluster", "status"]);
    let json: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(json["from_leader"], false, "{json}");
    assert_eq!(json["answered_by"], survivor + 1, "{json}");

    // A linearizable read cannot be answered, and says so.
    let out = Command::new(batonctl())
        .args(["--endpoints", alone, "--timeout", "2", "group", "get", "g"])
        .output()
        .expect("batonctl");
    assert!(!out.status.success(), "a linearizable read needs a quorum");
    for proc in procs.into_iter().flatten() {
        proc.sigterm(Duration::from_secs(8));
    }
}
