//! TLS, mutual TLS and the admin token, on a 3-node cluster that formed (and
//! replicates) over mutual TLS: clients with a certificate signed by the
//! cluster's CA are served, clients without one are not; calls that change
//! the cluster need the token; a worker acts only under its certificate's
//! name; Raft traffic is taken only from members.

use std::time::Duration;

use crate::fixture::{Cluster, WAIT};
use baton_client::proto as pb;
use baton_client::proto::raft_client::RaftClient;
use baton_client::proto::tombstones_client::TombstonesClient;
use baton_client::proto::worker_client::WorkerClient;
use baton_client::{AdminClient, ClientError, Transport};
use baton_node::config::{Security, TlsConfig};
use baton_node::Bootstrap;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

const TOKEN: &str = "an-admin-token-for-tests-only";

/// A test CA that signs certificates for names.
struct Pki {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

struct Leaf {
    cert: String,
    key: String,
}

impl Pki {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let pem = params.self_signed(&key).expect("CA certificate").pem();
        Self { params, key, pem }
    }

    fn leaf(&self, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(names)
            .expect("params")
            .signed_by(&key, &Issuer::from_params(&self.params, &self.key))
            .expect("certificate");
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn transport(&self, leaf: Option<&Leaf>) -> Transport {
        let transport = Transport::tls(self.pem.as_bytes());
        match leaf {
            Some(l) => transport.identity(l.cert.as_bytes(), l.key.as_bytes()),
            None => transport,
        }
    }

    /// A channel to one node (no leader-finding), presenting `leaf`.
    fn channel(&self, addr: &str, leaf: &Leaf) -> Channel {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.pem))
            .identity(Identity::from_pem(&leaf.cert, &leaf.key));
        Endpoint::from_shared(format!("https://{addr}"))
            .expect("endpoint")
            .tls_config(tls)
            .expect("TLS config")
            .connect_lazy()
    }
}

fn code<T: std::fmt::Debug>(result: Result<T, ClientError>) -> Option<Code> {
    match result {
        Ok(ok) => panic!("expected a refusal, got {ok:?}"),
        Err(e) => e.code(),
    }
}

fn join_request(worker: &str) -> tonic::Request<pb::JoinRequest> {
    tonic::Request::new(pb::JoinRequest {
        group: "g".into(),
        worker: worker.into(),
        ttl_ms: Some(60_000),
        ..Default::default()
    })
}

/// A 3-node cluster formed over mutual TLS with the admin token, and group
/// "g" created by an operator with a certificate and the token and applied
/// on every node.
struct Secure {
    pki: Pki,
    node_cert: Leaf,
    operator: Leaf,
    cluster: Cluster,
    leader: u64,
    follower: u64,
    endpoints: Vec<String>,
}

impl Secure {
    async fn start() -> Secure {
        let pki = Pki::new();
        let node_cert = pki.leaf(&["127.0.0.1", "localhost"]);
        let security = Security {
            tls: Some(TlsConfig {
                cert_pem: node_cert.cert.clone().into_bytes(),
                key_pem: node_cert.key.clone().into_bytes(),
                ca_pem: pki.pem.clone().into_bytes(),
                mutual: true,
            }),
            admin_token: Some(TOKEN.to_string()),
        };
        // The cluster forms over mutual TLS: joins carry the token, Raft the
        // nodes' certificates.
        let mut cluster = Cluster::new();
        let mut config = cluster.config(1, Bootstrap::SingleNode);
        config.security = security.clone();
        cluster.start(config).await;
        for id in 2..=3 {
            let seeds = cluster
                .running
                .values()
                .map(|n| n.addr().to_string())
                .collect();
            let mut config = cluster.config(id, Bootstrap::Join(seeds));
            config.security = security.clone();
            cluster.start(config).await;
        }
        let leader = cluster.leader(None, WAIT).await;
        let follower = (1..=3).find(|id| *id != leader).expect("a follower");
        let endpoints: Vec<String> = cluster
            .running
            .values()
            .map(|n| n.addr().to_string())
            .collect();
        let operator = pki.leaf(&["operator"]);
        let secure = Secure {
            pki,
            node_cert,
            operator,
            cluster,
            leader,
            follower,
            endpoints,
        };

        // An operator with a certificate and the token is served.
        let with_token = secure
            .pki
            .transport(Some(&secure.operator))
            .token(TOKEN)
            .expect("token");
        let mut op = secure.admin(with_token, WAIT);
        op.create_group("g", group()).await.expect("created");
        let revision = op.barrier().await.expect("barrier").revision;
        secure.cluster.applied_everywhere(revision).await;
        secure
    }

    fn admin(&self, transport: Transport, timeout: Duration) -> AdminClient {
        AdminClient::new(&self.endpoints, timeout)
            .expect("client")
            .with_transport(transport)
    }
}

fn group() -> pb::GroupConfig {
    pb::GroupConfig {
        partitions: Some(8),
        ..Default::default()
    }
}

/// The whole setup is the test: the cluster forms over mutual TLS (joins
/// carry the token, Raft the nodes' certificates), and an operator with a
/// certificate and the token creates a group that every node applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutual_tls_cluster_forms_and_serves_an_operator_with_certificate_and_token() {
    let secure = Secure::start().await;
    secure.cluster.shutdown().await;
}

/// Without the token (or with a wrong one) a change is refused; reads are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_without_the_admin_token_is_refused_but_a_read_is_served() {
    let secure = Secure::start().await;
    let (pki, operator) = (&secure.pki, &secure.operator);
    let group = group();
    let admin = |transport, timeout| secure.admin(transport, timeout);
    let mut no_token = admin(pki.transport(Some(operator)), WAIT);
    assert_eq!(
        code(no_token.create_group("h", group).await),
        Some(Code::Unauthenticated)
    );
    let wrong = pki
        .transport(Some(operator))
        .token("not-the-admin-token")
        .expect("token");
    assert_eq!(
        code(admin(wrong, WAIT).create_group("h", group).await),
        Some(Code::Unauthenticated)
    );
    let status = no_token.cluster_status().await.expect("status is a read");
    assert_eq!(status.members.len(), 3);

    secure.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_or_without_tls_is_not_served() {
    let secure = Secure::start().await;
    let pki = &secure.pki;
    let admin = |transport, timeout| secure.admin(transport, timeout);
    // Without a client certificate, or without TLS, nothing is served.
    let short = Duration::from_secs(2);
    let anonymous = admin(pki.transport(None), short).cluster_status().await;
    assert!(
        anonymous.is_err(),
        "served without a certificate: {anonymous:?}"
    );
    let plaintext = admin(Transport::default(), short).cluster_status().await;
    assert!(plaintext.is_err(), "served in plaintext: {plaintext:?}");

    secure.cluster.shutdown().await;
}

/// A worker acts under its certificate's name only, also through a
/// follower (which forwards to the leader under its own certificate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_joins_and_leaves_under_its_certificates_name_only() {
    let secure = Secure::start().await;
    let worker_a = secure.pki.leaf(&["worker-a"]);
    let follower_addr = secure.cluster.node(secure.follower).addr().to_string();
    let mut worker = WorkerClient::new(secure.pki.channel(&follower_addr, &worker_a));
    let joined = worker
        .join(join_request("worker-a"))
        .await
        .expect("worker-a joins as itself")
        .into_inner();
    let refused = worker.join(join_request("worker-b")).await.err();
    assert_eq!(refused.map(|s| s.code()), Some(Code::PermissionDenied));
    let leave = worker
        .leave(pb::LeaveRequest {
            group: "g".into(),
            worker: "worker-a".into(),
            session: joined.session,
            drain: false,
        })
        .await;
    assert!(leave.is_ok(), "worker-a may leave: {leave:?}");
    secure.cluster.shutdown().await;
}

/// A node decodes a unary request's first message and drops what follows,
/// so a second message must not hide that the first names another worker:
/// such a body is refused before it is served or forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_message_does_not_hide_another_workers_name() {
    let secure = Secure::start().await;
    let worker_a = secure.pki.leaf(&["worker-a"]);
    for id in [secure.leader, secure.follower] {
        let addr = secure.cluster.node(id).addr().to_string();
        let mut grpc = tonic::client::Grpc::new(secure.pki.channel(&addr, &worker_a));
        grpc.ready().await.expect("channel ready");
        let messages = futures::stream::iter([
            join_request("worker-b").into_inner(),
            join_request("worker-a").into_inner(),
        ]);
        let answer = grpc
            .client_streaming::<_, pb::JoinRequest, pb::JoinResponse, _>(
                tonic::Request::new(messages),
                tonic::codegen::http::uri::PathAndQuery::from_static("/baton.v1.Worker/Join"),
                tonic_prost::ProstCodec::default(),
            )
            .await;
        assert_eq!(
            answer.map(|r| r.into_inner().session).map_err(|s| s.code()),
            Err(Code::InvalidArgument),
            "node {id} must refuse a body of two messages from worker-a"
        );
    }
    secure.cluster.shutdown().await;
}

/// Also through a follower, which forwards to the leader under its own
/// certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cannot_release_or_ack_for_another_worker() {
    let secure = Secure::start().await;
    let pki = &secure.pki;
    let worker_a = pki.leaf(&["worker-a"]);
    let follower_addr = secure.cluster.node(secure.follower).addr().to_string();
    let mut worker = WorkerClient::new(pki.channel(&follower_addr, &worker_a));
    let joined = worker
        .join(join_request("worker-a"))
        .await
        .expect("worker-a joins as itself")
        .into_inner();
    worker
        .leave(pb::LeaveRequest {
            group: "g".into(),
            worker: "worker-a".into(),
            session: joined.session,
            drain: false,
        })
        .await
        .expect("worker-a leaves");
    let release_other = worker
        .release(pb::ReleaseRequest {
            group: "g".into(),
            worker: "worker-b".into(),
            session: joined.session,
            partitions: vec![pb::PartitionRange { first: 0, last: 0 }],
            token: joined.token,
        })
        .await
        .err();
    assert_eq!(
        release_other.map(|s| s.code()),
        Some(Code::PermissionDenied)
    );
    let ack_other = TombstonesClient::new(pki.channel(&follower_addr, &worker_a))
        .ack(pb::AckTombstonesRequest {
            group: "g".into(),
            worker: "worker-b".into(),
            session: joined.session,
            revision: 1,
        })
        .await
        .err();
    assert_eq!(ack_other.map(|s| s.code()), Some(Code::PermissionDenied));

    secure.cluster.shutdown().await;
}

/// Raft traffic: only from a member's certificate, and with the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_traffic_is_taken_only_from_a_members_certificate_with_the_token() {
    let secure = Secure::start().await;
    let (pki, node_cert) = (&secure.pki, &secure.node_cert);
    let worker_a = pki.leaf(&["worker-a"]);
    let leader_addr = secure.cluster.node(secure.leader).addr().to_string();
    let payload = || pb::RaftPayload { data: Vec::new() };
    let from_worker = RaftClient::new(pki.channel(&leader_addr, &worker_a))
        .vote(payload())
        .await
        .err();
    assert_eq!(from_worker.map(|s| s.code()), Some(Code::PermissionDenied));
    let without_token = RaftClient::new(pki.channel(&leader_addr, node_cert))
        .vote(payload())
        .await
        .err();
    assert_eq!(without_token.map(|s| s.code()), Some(Code::Unauthenticated));

    secure.cluster.shutdown().await;
}
