//! Groups, assignment, routing and tombstones over real gRPC on a 3-node
//! in-process cluster. Requests go to a follower on purpose: writes and
//! linearizable reads are forwarded to the leader.

use crate::fixture::*;
use baton_node::domain::hash::{partition_of, KeyHash};
use baton_proto::v1 as pb;
use baton_proto::v1::admin_client::AdminClient;
use baton_proto::v1::tombstones_client::TombstonesClient;
use tonic::transport::Channel;
use tonic::Code;

async fn follower_channel(cluster: &Cluster) -> Channel {
    let leader = cluster.leader(None, WAIT).await;
    let follower = cluster
        .running
        .keys()
        .copied()
        .find(|id| *id != leader)
        .expect("a follower");
    Channel::from_shared(format!("http://{}", cluster.node(follower).addr()))
        .expect("uri")
        .connect()
        .await
        .expect("connect")
}

/// A 3-node cluster and an admin client on one of its followers.
async fn follower_admin() -> (Cluster, AdminClient<Channel>) {
    let cluster = three_nodes().await;
    let channel = follower_channel(&cluster).await;
    (cluster, AdminClient::new(channel))
}

/// A 3-node cluster with group "mail-sync" of 360 partitions, created
/// through a follower; the admin client stays on that follower.
async fn with_mail_sync() -> (Cluster, AdminClient<Channel>, pb::GroupResponse) {
    let (cluster, mut admin) = follower_admin().await;
    let created = admin
        .create_group(pb::CreateGroupRequest {
            group: "mail-sync".into(),
            config: Some(config(360)),
        })
        .await
        .expect("create")
        .into_inner();
    (cluster, admin, created)
}

/// A body the gate cannot read (here two messages) goes where a readable
/// one would: a follower forwards it, and the leader's service decodes the
/// first message, as each handler did before there was a gate. Without
/// that, a follower answered "not the leader" to a read the leader serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_of_two_messages_is_answered_alike_by_leader_and_follower() {
    let (cluster, _admin, created) = with_mail_sync().await;
    for node in cluster.running.values() {
        let channel = Channel::from_shared(format!("http://{}", node.addr()))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.expect("channel ready");
        let read = pb::GetGroupRequest {
            group: "mail-sync".into(),
            serializable: false,
        };
        let answer = grpc
            .client_streaming::<_, pb::GetGroupRequest, pb::GroupResponse, _>(
                tonic::Request::new(futures::stream::iter([read.clone(), read])),
                tonic::codegen::http::uri::PathAndQuery::from_static("/baton.v1.Admin/GetGroup"),
                tonic_prost::ProstCodec::default(),
            )
            .await;
        assert_eq!(
            answer
                .map(|r| r.into_inner().group.map(|g| g.config_revision))
                .map_err(|s| (s.code(), s.message().to_string())),
            Ok(Some(created.revision)),
            "node {} (the leader is {})",
            node.id(),
            cluster.leader(None, WAIT).await
        );
    }
    cluster.shutdown().await;
}

/// A 3-node cluster with group "chat" of 16 partitions, and admin and
/// tombstone clients on a follower.
async fn with_chat() -> (Cluster, AdminClient<Channel>, TombstonesClient<Channel>) {
    let cluster = three_nodes().await;
    let channel = follower_channel(&cluster).await;
    let mut admin = AdminClient::new(channel.clone());
    let tombstones = TombstonesClient::new(channel);
    admin
        .create_group(pb::CreateGroupRequest {
            group: "chat".into(),
            config: Some(config(16)),
        })
        .await
        .expect("create");
    (cluster, admin, tombstones)
}

/// A put of a tombstone on `key` in "chat", kept for an hour.
fn put(key: String) -> pb::PutTombstoneRequest {
    pb::PutTombstoneRequest {
        group: "chat".into(),
        key,
        locator: None,
        ttl_ms: Some(3_600_000),
        ..Default::default()
    }
}

/// Puts tombstones on account-0 to account-49; returns their revisions.
async fn put_50_accounts(tombstones: &mut TombstonesClient<Channel>) -> Vec<u64> {
    let mut revisions = Vec::new();
    for i in 0..50 {
        let r = tombstones
            .put(put(format!("account-{i}")))
            .await
            .expect("put")
            .into_inner();
        revisions.push(r.revision);
    }
    revisions
}

fn config(partitions: u32) -> pb::GroupConfig {
    pb::GroupConfig {
        partitions: Some(partitions),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_created_through_a_follower_is_read_back_at_once() {
    let (cluster, mut admin, created) = with_mail_sync().await;
    let group = created.group.expect("group");
    assert_eq!(group.config.and_then(|c| c.partitions), Some(360));
    assert_eq!(group.config_revision, created.revision);
    assert_eq!(group.key_hash(), pb::KeyHash::Xxh3);

    // A linearizable read on a follower sees the write at once.
    let got = admin
        .get_group(pb::GetGroupRequest {
            group: "mail-sync".into(),
            serializable: false,
        })
        .await
        .expect("get")
        .into_inner();
    assert!(got.revision >= created.revision);
    let listed = admin
        .list_groups(pb::ListGroupsRequest {
            serializable: false,
        })
        .await
        .expect("list");
    assert_eq!(
        listed
            .get_ref()
            .groups
            .iter()
            .map(|g| g.name.as_str())
            .collect::<Vec<_>>(),
        ["mail-sync"]
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_group_requests_are_refused_with_the_documented_code_and_message() {
    let (cluster, mut admin, created) = with_mail_sync().await;
    let errors = [
        (
            admin
                .create_group(pb::CreateGroupRequest {
                    group: "mail-sync".into(),
                    config: None,
                })
                .await
                .err(),
            Code::AlreadyExists,
            "already exists",
        ),
        (
            admin
                .create_group(pb::CreateGroupRequest {
                    group: "Mail_Sync".into(),
                    config: None,
                })
                .await
                .err(),
            Code::InvalidArgument,
            "group name",
        ),
        (
            admin
                .create_group(pb::CreateGroupRequest {
                    group: "big".into(),
                    config: Some(config(70_000)),
                })
                .await
                .err(),
            Code::InvalidArgument,
            "1 to 65536",
        ),
        (
            admin
                .update_group(pb::UpdateGroupRequest {
                    group: "mail-sync".into(),
                    config: Some(pb::GroupConfig {
                        max_in_flight: Some(8),
                        ..Default::default()
                    }),
                    if_revision: 0,
                })
                .await
                .err(),
            Code::InvalidArgument,
            "if_revision is required",
        ),
        (
            admin
                .update_group(pb::UpdateGroupRequest {
                    group: "mail-sync".into(),
                    config: Some(pb::GroupConfig {
                        max_in_flight: Some(8),
                        ..Default::default()
                    }),
                    if_revision: created.revision + 1_000,
                })
                .await
                .err(),
            Code::Aborted,
            "re-read it and retry",
        ),
        (
            admin
                .get_group(pb::GetGroupRequest {
                    group: "nope".into(),
                    serializable: false,
                })
                .await
                .err(),
            Code::NotFound,
            "does not exist",
        ),
    ];
    for (err, code, text) in errors {
        let status = err.expect("refused");
        assert_eq!(status.code(), code, "{status:?}");
        assert!(
            status.message().contains(text),
            "{:?} lacks {text:?}",
            status.message()
        );
    }

    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_changes_only_the_fields_it_sets() {
    let (cluster, mut admin, created) = with_mail_sync().await;
    let group = created.group.expect("group");
    let updated = admin
        .update_group(pb::UpdateGroupRequest {
            group: "mail-sync".into(),
            config: Some(pb::GroupConfig {
                max_in_flight: Some(8),
                ..Default::default()
            }),
            if_revision: group.config_revision,
        })
        .await
        .expect("update")
        .into_inner()
        .group
        .expect("group");
    let c = updated.config.expect("config");
    assert_eq!(
        (c.max_in_flight, c.partitions),
        (Some(8), Some(360)),
        "only the set field changed"
    );

    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_doubles_the_partitions() {
    let (cluster, mut admin, created) = with_mail_sync().await;
    let group = created.group.expect("group");
    let split = admin
        .split_group(pb::SplitGroupRequest {
            group: "mail-sync".into(),
            if_revision: group.config_revision,
        })
        .await
        .expect("split")
        .into_inner()
        .group
        .expect("group");
    assert_eq!(split.config.and_then(|c| c.partitions), Some(720));

    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_group_says_so() {
    let (cluster, mut admin, _) = with_mail_sync().await;
    let frozen = admin
        .set_frozen(pb::SetFrozenRequest {
            group: "mail-sync".into(),
            frozen: true,
        })
        .await
        .expect("freeze")
        .into_inner();
    assert!(frozen.group.expect("group").frozen);

    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_group_is_not_found() {
    let (cluster, mut admin, _) = with_mail_sync().await;
    admin
        .delete_group(pb::DeleteGroupRequest {
            group: "mail-sync".into(),
            force: false,
        })
        .await
        .expect("delete");
    let gone = admin
        .get_group(pb::GetGroupRequest {
            group: "mail-sync".into(),
            serializable: false,
        })
        .await;
    assert_eq!(gone.expect_err("deleted").code(), Code::NotFound);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_without_workers_has_everything_unassigned_and_an_empty_plan() {
    let (cluster, mut admin, _) = with_chat().await;
    // No worker yet: everything is unassigned, and the plan is empty.
    let a = admin
        .get_assignment(pb::GetAssignmentRequest {
            group: "chat".into(),
            serializable: false,
        })
        .await
        .expect("assignment")
        .into_inner();
    assert_eq!(a.partitions, 16);
    assert!(a.workers.is_empty());
    assert_eq!(
        a.unassigned,
        vec![pb::PartitionRange { first: 0, last: 15 }]
    );
    let plan = admin
        .plan_assignment(pb::GetAssignmentRequest {
            group: "chat".into(),
            serializable: false,
        })
        .await
        .expect("plan")
        .into_inner();
    assert!(plan.grants.is_empty() && plan.handoffs.is_empty());

    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_routes_to_the_partition_its_hash_gives() {
    let (cluster, mut admin, _) = with_chat().await;
    // Routing follows docs/key-hashing.md.
    let routed = admin
        .route(pb::RouteRequest {
            group: "chat".into(),
            locator: Some(pb::route_request::Locator::Key("room-42".into())),
            serializable: false,
        })
        .await
        .expect("route")
        .into_inner();
    assert_eq!(
        routed.partition,
        partition_of(KeyHash::Xxh3.hash(b"room-42"), 16)
    );
    assert_eq!(routed.owner, "");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_to_a_partition_the_group_lacks_is_refused() {
    let (cluster, mut admin, _) = with_chat().await;
    let out_of_range = admin
        .route(pb::RouteRequest {
            group: "chat".into(),
            locator: Some(pb::route_request::Locator::Partition(16)),
            serializable: false,
        })
        .await
        .expect_err("partition 16 of 16");
    assert_eq!(out_of_range.code(), Code::InvalidArgument);

    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_put_of_a_tombstone_keeps_the_first() {
    let (cluster, _, mut tombstones) = with_chat().await;
    let first_revisions = put_50_accounts(&mut tombstones).await;
    let again = tombstones
        .put(put("account-7".into()))
        .await
        .expect("put again")
        .into_inner();
    assert_eq!(
        again.revision, first_revisions[7],
        "idempotent: the first put stands"
    );

    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_of_1000_keys_answers_each_in_request_order() {
    let (cluster, _, mut tombstones) = with_chat().await;
    put_50_accounts(&mut tombstones).await;
    let keys: Vec<String> = (0..1_000).map(|i| format!("account-{i}")).collect();
    let checked = tombstones
        .check(pb::CheckTombstonesRequest {
            group: "chat".into(),
            keys: keys.clone(),
            serializable: false,
        })
        .await
        .expect("check")
        .into_inner();
    assert_eq!(checked.results.len(), 1_000);
    for (i, r) in checked.results.iter().enumerate() {
        assert_eq!(r.key, keys[i], "answers in request order");
        assert_eq!(r.deleted, i < 50, "{}", r.key);
    }
    let t = checked.results[3].tombstone.clone().expect("tombstone");
    assert_eq!(
        t.partition,
        partition_of(KeyHash::Xxh3.hash(b"account-3"), 16)
    );

    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstone_listing_keeps_to_its_partitions_and_limit() {
    let (cluster, _, mut tombstones) = with_chat().await;
    put_50_accounts(&mut tombstones).await;
    let partition = partition_of(KeyHash::Xxh3.hash(b"account-3"), 16);
    let listed = tombstones
        .list(pb::ListTombstonesRequest {
            group: "chat".into(),
            partitions: Some(pb::PartitionRange {
                first: partition,
                last: partition,
            }),
            limit: 0,
            serializable: false,
            after_key: String::new(),
        })
        .await
        .expect("list")
        .into_inner();
    assert!(listed.tombstones.iter().all(|x| x.partition == partition));
    assert!(listed.tombstones.iter().any(|x| x.key == "account-3"));
    let limited = tombstones
        .list(pb::ListTombstonesRequest {
            group: "chat".into(),
            partitions: None,
            limit: 10,
            serializable: false,
            after_key: String::new(),
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(limited.tombstones.len(), 10);
    assert!(limited.truncated);

    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tombstone_requests_are_refused() {
    let (cluster, _, mut tombstones) = with_chat().await;
    let unknown = tombstones
        .put(pb::PutTombstoneRequest {
            group: "nope".into(),
            ..put("k".into())
        })
        .await;
    assert_eq!(unknown.expect_err("unknown group").code(), Code::NotFound);
    let too_many = tombstones
        .check(pb::CheckTombstonesRequest {
            group: "chat".into(),
            keys: vec!["k".into(); 10_001],
            serializable: true,
        })
        .await;
    assert_eq!(
        too_many.expect_err("batch too big").code(),
        Code::InvalidArgument
    );
    let long_key = tombstones.put(put("k".repeat(1025))).await;
    assert_eq!(
        long_key.expect_err("key too long").code(),
        Code::InvalidArgument
    );
    cluster.shutdown().await;
}
