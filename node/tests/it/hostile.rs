//! What a hostile or careless client can make a node pay: refused requests,
//! sent through real gRPC to a real `baton-node` process, must cost no log
//! entry, little memory and little time, and answer with a short message
//! and the documented code.

use std::time::{Duration, Instant};

use baton_proto::v1 as pb;
use baton_proto::v1::admin_client::AdminClient;
use baton_proto::v1::tombstones_client::TombstonesClient;
use baton_proto::v1::worker_client::WorkerClient;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::fixture;

use crate::fixture::procs::{single_process, status_of, Proc};
use crate::fixture::worker::settle;

/// The node's resident set, from /proc.
fn rss_bytes(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc status");
    kib * 1024
}

/// Asserts `result` was refused with `code` and a message a human can read
/// (under 1 KB, so it fits any client's metadata limit).
fn refused<T: std::fmt::Debug>(what: &str, result: Result<T, Status>, code: Code) {
    let status = result.expect_err(what);
    assert_eq!(status.code(), code, "{what}: {status:?}");
    assert!(
        status.message().len() < 1024,
        "{what}: a {}-byte message",
        status.message().len()
    );
}

fn config(partitions: u32) -> pb::GroupConfig {
    pb::GroupConfig {
        partitions: Some(partitions),
        ..Default::default()
    }
}

fn full_ranges(copies: usize) -> Vec<pb::PartitionRange> {
    vec![
        pb::PartitionRange {
            first: 0,
            last: 65_535
        };
        copies
    ]
}

async fn log_index(addr: std::net::SocketAddr) -> u64 {
    status_of(addr).await.expect("status").last_log_index
}

/// A single-node process with group "g" of 65,536 partitions, all held by
/// worker "w" (its lease outlasts the test), and what the node had written
/// and held in memory at that point.
struct Target {
    addr: std::net::SocketAddr,
    http: std::net::SocketAddr,
    proc: Proc,
    admin: AdminClient<Channel>,
    tombstones: TombstonesClient<Channel>,
    worker: WorkerClient<Channel>,
    joined: pb::JoinResponse,
    held: pb::AssignmentResponse,
    log_before: u64,
    rss_before: u64,
    _dir: tempfile::TempDir,
}

impl Target {
    async fn start() -> Target {
        let dir = tempfile::tempdir().expect("tempdir");
        let (addr, http, proc) = single_process(dir.path());
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let mut admin = AdminClient::new(channel.clone());
        let tombstones = TombstonesClient::new(channel.clone());
        let mut worker = WorkerClient::new(channel);

        admin
            .create_group(pb::CreateGroupRequest {
                group: "g".into(),
                config: Some(config(65_536)),
            })
            .await
            .expect("create g");
        let joined = worker
            .join(pb::JoinRequest {
                group: "g".into(),
                worker: "w".into(),
                // Long enough that no expiry is written during the test.
                ttl_ms: Some(300_000),
                ..Default::default()
            })
            .await
            .expect("join")
            .into_inner();
        // The rebalancer grants w everything; wait until that is written.
        let mut client =
            baton_client::AdminClient::new(&[addr.to_string()], fixture::WAIT).expect("client");
        let held = settle(&mut client, "g", "w holds all", |a| a.unassigned.is_empty()).await;
        let log_before = log_index(addr).await;
        let rss_before = rss_bytes(proc.pid().as_raw());
        Target {
            addr,
            http,
            proc,
            admin,
            tombstones,
            worker,
            joined,
            held,
            log_before,
            rss_before,
            _dir: dir,
        }
    }

    /// Asserts that what was sent since the start cost no log entry and
    /// little memory, and left the node ready; returns the log index.
    async fn paid_nothing(&self) -> u64 {
        let log_after = log_index(self.addr).await;
        let rss_after = rss_bytes(self.proc.pid().as_raw());
        let (log_before, rss_before) = (self.log_before, self.rss_before);
        assert_eq!(
            log_after, log_before,
            "refused and empty requests were written to the log"
        );
        let grown = rss_after.saturating_sub(rss_before);
        eprintln!(
            "log index {log_before} → {log_after}; RSS {} → {} MB",
            rss_before >> 20,
            rss_after >> 20
        );
        assert!(
            grown < 64 << 20,
            "RSS grew by {} MB ({} → {} MB)",
            grown >> 20,
            rss_before >> 20,
            rss_after >> 20
        );
        let (code, body) = fixture::http_get(self.http, "/readyz").await;
        assert_eq!(code, 200, "not ready after the requests: {body}");
        log_after
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_are_refused_from_their_length_without_a_write() {
    let mut target = Target::start().await;
    let (admin, tombstones) = (&mut target.admin, &mut target.tombstones);
    let huge_key = "k".repeat(3 << 20);
    for _ in 0..50 {
        let put = tombstones
            .put(pb::PutTombstoneRequest {
                group: "g".into(),
                key: huge_key.clone(),
                ..Default::default()
            })
            .await;
        refused("a put of a 3 MB key", put, Code::InvalidArgument);
    }
    let (code, body) = fixture::http_get(target.http, "/readyz").await;
    assert_eq!(code, 200, "not ready after the puts: {body}");
    // Over a service's decoding limit: refused from the length prefix,
    // with a code no client can take for COMPACTED (OUT_OF_RANGE).
    let put = tombstones
        .put(pb::PutTombstoneRequest {
            group: "g".into(),
            key: "k".repeat(5 << 20),
            ..Default::default()
        })
        .await;
    refused("a 5 MB put", put, Code::ResourceExhausted);
    let moved = admin
        .move_partitions(pb::MovePartitionsRequest {
            group: "g".into(),
            partitions: full_ranges(300_000),
            to: "w".into(),
        })
        .await;
    refused("a 2 MB move", moved, Code::ResourceExhausted);
    target.paid_nothing().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_naming_no_group_or_an_impossible_one_are_refused_without_a_write() {
    let mut target = Target::start().await;
    let (admin, tombstones, worker) = (
        &mut target.admin,
        &mut target.tombstones,
        &mut target.worker,
    );
    for _ in 0..10 {
        let put = tombstones
            .put(pb::PutTombstoneRequest {
                group: "nowhere".into(),
                key: "k".into(),
                ..Default::default()
            })
            .await;
        refused("a put to an unknown group", put, Code::NotFound);
        let create = admin
            .create_group(pb::CreateGroupRequest {
                group: String::new(),
                config: Some(config(1)),
            })
            .await;
        refused("a group with an empty name", create, Code::InvalidArgument);
    }
    for partitions in [0, 1_000_000_000] {
        let create = admin
            .create_group(pb::CreateGroupRequest {
                group: "h".into(),
                config: Some(config(partitions)),
            })
            .await;
        refused(
            "a group of {partitions} partitions",
            create,
            Code::InvalidArgument,
        );
    }
    let long_name = "a".repeat(20_000);
    let get = admin
        .get_group(pb::GetGroupRequest {
            group: long_name.clone(),
            serializable: false,
        })
        .await;
    refused(
        "a get of a 20,000-character name",
        get,
        Code::InvalidArgument,
    );
    let put = tombstones
        .put(pb::PutTombstoneRequest {
            group: long_name.clone(),
            key: "k".into(),
            ..Default::default()
        })
        .await;
    refused(
        "a put to a 20,000-character name",
        put,
        Code::InvalidArgument,
    );
    let join = worker
        .join(pb::JoinRequest {
            group: long_name,
            worker: "w2".into(),
            ..Default::default()
        })
        .await;
    refused(
        "a join to a 20,000-character name",
        join,
        Code::InvalidArgument,
    );

    target.paid_nothing().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_that_changes_nothing_is_answered_without_a_write() {
    let mut target = Target::start().await;
    let admin = &mut target.admin;
    // An update that changes nothing is answered, at the current revision,
    // without a write.
    let group = admin
        .get_group(pb::GetGroupRequest {
            group: "g".into(),
            serializable: false,
        })
        .await
        .expect("get g")
        .into_inner()
        .group
        .expect("g");
    let updated = admin
        .update_group(pb::UpdateGroupRequest {
            group: "g".into(),
            config: None,
            if_revision: group.config_revision,
        })
        .await
        .expect("an empty update is answered")
        .into_inner()
        .group
        .expect("g");
    assert_eq!(updated.config_revision, group.config_revision);

    target.paid_nothing().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_release_or_a_no_op_move_of_5000_full_ranges_answers_quickly_without_a_write() {
    let mut target = Target::start().await;
    let joined = target.joined.clone();
    let (admin, worker) = (&mut target.admin, &mut target.worker);
    // 5,000 copies of the full range, 40 KB: refused (no partition is held
    // with that token) or normalized, but quickly, and with nothing written.
    let started = Instant::now();
    let release = worker
        .release(pb::ReleaseRequest {
            group: "g".into(),
            worker: "w".into(),
            partitions: full_ranges(5_000),
            token: u64::MAX,
            session: joined.session,
        })
        .await;
    refused(
        "a release with a stale token",
        release,
        Code::FailedPrecondition,
    );
    let took = started.elapsed();
    eprintln!("a release of 5,000 full ranges answered in {took:?}");
    assert!(
        took < Duration::from_millis(100),
        "a release of 5,000 full ranges took {took:?}"
    );
    let started = Instant::now();
    let moved = admin
        .move_partitions(pb::MovePartitionsRequest {
            group: "g".into(),
            partitions: full_ranges(5_000),
            to: "w".into(),
        })
        .await
        .expect("moving w's partitions to w changes nothing");
    let moved = moved.into_inner();
    assert!(
        moved.grants.is_empty() && moved.handoffs.is_empty(),
        "{moved:?}"
    );
    let took = started.elapsed();
    eprintln!("a move of 5,000 full ranges answered in {took:?}");
    assert!(
        took < Duration::from_millis(100),
        "a move of 5,000 full ranges took {took:?}"
    );

    target.paid_nothing().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_release_of_5000_full_ranges_is_one_quick_write() {
    let mut target = Target::start().await;
    let log_after = target.paid_nothing().await;
    let (held, joined, worker) = (&target.held, &target.joined, &mut target.worker);
    // The same release with w's token (unchanged: nothing was written) is
    // a write, of one merged range.
    let token = held.workers[0].grants[0].token;
    let started = Instant::now();
    worker
        .release(pb::ReleaseRequest {
            group: "g".into(),
            worker: "w".into(),
            partitions: full_ranges(5_000),
            token,
            session: joined.session,
        })
        .await
        .expect("w releases everything it holds");
    let took = started.elapsed();
    eprintln!("a valid release of 5,000 full ranges committed in {took:?}");
    assert!(
        took < Duration::from_millis(100),
        "a valid release of 5,000 full ranges took {took:?}"
    );
    assert!(
        log_index(target.addr).await > log_after,
        "a valid release is written"
    );
}
