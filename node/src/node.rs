//! Assembling and running one node: storage, Raft, the gRPC and HTTP servers,
//! cluster formation (single node, static bootstrap or join), and shutdown.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use baton_proto::v1::admin_client::AdminClient;
use baton_proto::v1::admin_server::AdminServer;
use baton_proto::v1::raft_server::RaftServer;
use baton_proto::v1::tombstones_server::TombstonesServer;
use baton_proto::v1::watch_server::WatchServer;
use baton_proto::v1::worker_server::WorkerServer;
use baton_proto::v1::AddNodeRequest;
use openraft::error::{InitializeError, RaftError};
use openraft::storage::RaftLogStorage;
use openraft::BasicNode;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::api::admin::AdminApi;
use crate::api::gate::GateLayer;
use crate::api::limits;
use crate::api::raft::RaftApi;
use crate::api::tombstones::TombstonesApi;
use crate::api::watch::WatchApi;
use crate::api::worker::WorkerApi;
use crate::cluster::leases::Leases;
use crate::cluster::Leader;
use crate::config::{Bootstrap, NodeConfig, TlsConfig};
use crate::raft::network::{Network, MAX_RAFT_MESSAGE_BYTES};
use crate::raft::pre_vote::{self, ElectionTiming, LeaderContact};
use crate::raft::removal::Removal;
use crate::raft::{BatonRaft, NodeId, PeerDialer};
use crate::security::access::{host, Access};
use crate::store::{self, LogStore, StateMachineStore};

/// How long shutdown waits for in-flight requests before closing anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A running node.
pub struct Node {
    id: NodeId,
    addr: String,
    grpc_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    raft: BatonRaft,
    log: LogStore,
    sm: StateMachineStore,
    stop: watch::Sender<bool>,
    grpc_task: JoinHandle<Result<(), tonic::transport::Error>>,
    http_task: Option<JoinHandle<anyhow::Result<()>>>,
    duties_task: JoinHandle<()>,
    elector_task: JoinHandle<()>,
    dialer: PeerDialer,
}

impl Node {
    /// Opens the data dir, starts Raft and the servers, and makes the node part
    /// of a cluster as `config.bootstrap` says. With `Bootstrap::Join` this
    /// returns once the cluster has added (and promoted) this node.
    pub async fn start(config: NodeConfig) -> anyhow::Result<Node> {
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {} (--listen)", config.listen))?;
        Self::start_on(config, listener).await
    }

    /// [`Node::start`] on a gRPC listener bound beforehand, in place of
    /// `config.listen`. A static cluster (`Bootstrap::InitialMembers`, which a
    /// restore needs) must know every member's address before any starts;
    /// holding the bound listeners until then leaves no moment in which
    /// another process can take a port, as binding and releasing one does.
    pub async fn start_on(config: NodeConfig, listener: TcpListener) -> anyhow::Result<Node> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
        let (mut log, mut sm) = store::open(&config.data_dir)?;
        sm.hub().set_subscriber_buffer(config.watch_buffer);

        let grpc_addr = listener.local_addr()?;
        let addr = config
            .advertise
            .clone()
            .unwrap_or_else(|| grpc_addr.to_string());
        let http_listener = match config.http {
            Some(http) => Some(
                crate::http::bind(http)
                    .await
                    .with_context(|| format!("cannot listen on {http} (--http)"))?,
            ),
            None => None,
        };
        let http_addr = http_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;

        if let Some(path) = &config.restore_from {
            let members = match &config.bootstrap {
                Bootstrap::InitialMembers(members) => members.clone(),
                _ => BTreeMap::from([(config.id, addr.clone())]),
            };
            restore(
                &mut log,
                &mut sm,
                path,
                members,
                config.restore_revision_bump,
            )
            .await?;
        }

        let raft_config = config.tuning.to_config().context("invalid Raft timing")?;
        let dialer = PeerDialer::new(config.listen, &config.security)?;
        let network = Network::new(dialer.clone());
        let raft = BatonRaft::new(
            config.id,
            raft_config.clone(),
            network.clone(),
            log.clone(),
            sm.clone(),
        )
        .await
        .context("cannot start Raft")?;

        let (stop, stopped) = watch::channel(false);
        let until_stopped = |mut rx: watch::Receiver<bool>| async move {
            // An error means the sender is gone, which also means stop.
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let initial_hosts = match &config.bootstrap {
            Bootstrap::InitialMembers(members) => {
                members.values().map(|a| host(a).to_string()).collect()
            }
            Bootstrap::SingleNode => vec![host(&addr).to_string()],
            Bootstrap::Join(_) => Vec::new(),
        };
        let access = Access::new(
            config.security.admin_token.clone(),
            config.security.tls.as_ref().is_some_and(|t| t.mutual),
            raft.clone(),
            initial_hosts,
        );
        let contact = Arc::new(LeaderContact::default());
        let timing = ElectionTiming::new(&raft_config);
        let raft_service = RaftServer::new(RaftApi::new(raft.clone(), contact.clone(), timing))
            .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES);
        let leases = Arc::new(Leases::default());
        let removal = Arc::new(Removal::new(config.id));
        let leader = Leader::new(
            config.id,
            raft.clone(),
            sm.clone(),
            dialer.clone(),
            removal.clone(),
        );
        let admin_service = AdminServer::new(AdminApi::new(
            leader.clone(),
            leases.clone(),
            addr.clone(),
            log.clone(),
        ))
        .max_decoding_message_size(limits::ADMIN_REQUEST_BYTES);
        let tombstones_service = TombstonesServer::new(TombstonesApi::new(leader.clone()))
            .max_decoding_message_size(limits::TOMBSTONES_REQUEST_BYTES);
        let watch_service = WatchServer::new(WatchApi::new(leader.clone(), stopped.clone()))
            .max_decoding_message_size(limits::WATCH_REQUEST_BYTES);
        let worker_service = WorkerServer::new(WorkerApi::new(
            leader.clone(),
            leases.clone(),
            stopped.clone(),
        ))
        .max_decoding_message_size(limits::WORKER_REQUEST_BYTES);
        // Responses pass the oversize mapping last, so it also sees the
        // gate's refusals and the leader's answers to forwarded calls.
        let mut server = tonic::transport::Server::builder().layer(
            tower::ServiceBuilder::new()
                .map_response(limits::oversize_as_resource_exhausted)
                .layer(GateLayer::new(access, leader.clone())),
        );
        if let Some(tls) = &config.security.tls {
            server = server
                .tls_config(server_tls(tls))
                .context("cannot use the TLS certificate and key (--tls-cert, --tls-key)")?;
        }
        let grpc_task = tokio::spawn(
            server
                .add_service(raft_service)
                .add_service(admin_service)
                .add_service(tombstones_service)
                .add_service(worker_service)
                .add_service(watch_service)
                .serve_with_incoming_shutdown(
                    // tonic leaves Nagle on for sockets it did not accept itself;
                    // with it, a small watch or Raft message can wait out the
                    // peer's delayed ACK (40 ms).
                    TcpListenerStream::new(listener).map(|accepted| {
                        accepted.and_then(|socket| socket.set_nodelay(true).map(|()| socket))
                    }),
                    until_stopped(stopped.clone()),
                ),
        );
        let http_task = http_listener.map(|l| {
            tokio::spawn(crate::http::serve(
                l,
                raft.clone(),
                removal.clone(),
                log.clone(),
                sm.clone(),
                leases.clone(),
                until_stopped(stopped.clone()),
            ))
        });

        let elector_task = tokio::spawn(pre_vote::run(
            raft.clone(),
            network,
            contact,
            removal.clone(),
            timing,
            stopped.clone(),
        ));
        // Not awaited at shutdown: it holds nothing and ends with `stop`.
        tokio::spawn(crate::raft::snapshots::run(
            raft.clone(),
            sm.clone(),
            config.tuning.snapshot_every,
            stopped.clone(),
        ));
        let duties_task = tokio::spawn(crate::cluster::duties::run(
            leader,
            leases,
            config.history,
            stopped.clone(),
        ));
        let node = Node {
            id: config.id,
            addr,
            grpc_addr,
            http_addr,
            raft,
            log,
            sm,
            stop,
            grpc_task,
            http_task,
            duties_task,
            elector_task,
            dialer,
        };
        if let Err(e) = node.form_cluster(&config.bootstrap).await {
            node.shutdown().await?;
            return Err(e);
        }
        Ok(node)
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The address other nodes and clients reach this node at.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// What this node's store observes (the counters behind `/metrics`).
    pub fn store_metrics(&self) -> &store::StoreMetrics {
        self.sm.metrics()
    }

    pub fn raft(&self) -> &BatonRaft {
        &self.raft
    }

    /// The state machine's revision (see `StateMachineStore::apply_entry`:
    /// at or above the last applied log index).
    pub fn revision(&self) -> u64 {
        self.sm.revision()
    }

    /// Waits until this node has applied (and published) `revision`;
    /// `false` if it stops first.
    pub async fn wait_revision(&self, revision: u64) -> bool {
        self.sm.hub().wait_for(revision).await.is_ok()
    }

    async fn form_cluster(&self, bootstrap: &Bootstrap) -> anyhow::Result<()> {
        match bootstrap {
            Bootstrap::SingleNode => {
                self.initialize(BTreeMap::from([(self.id, self.addr.clone())]))
                    .await
            }
            Bootstrap::InitialMembers(members) => {
                // Only the lowest id initializes; the others wait to be contacted.
                if members.keys().next() == Some(&self.id) {
                    self.initialize(members.clone()).await?;
                }
                Ok(())
            }
            Bootstrap::Join(seeds) => {
                if self.raft.is_initialized().await? {
                    tracing::info!("already a member; --join ignored");
                    return Ok(());
                }
                join(self.id, &self.addr, seeds, &self.dialer).await
            }
        }
    }

    /// Initializes the cluster unless this node's disk says it already was.
    async fn initialize(&self, members: BTreeMap<NodeId, String>) -> anyhow::Result<()> {
        if self.raft.is_initialized().await? {
            return Ok(());
        }
        let nodes: BTreeMap<NodeId, BasicNode> = members
            .into_iter()
            .map(|(id, addr)| (id, BasicNode::new(addr)))
            .collect();
        match self.raft.initialize(nodes.clone()).await {
            Ok(()) => {
                tracing::info!(members = ?nodes.keys().collect::<Vec<_>>(), "initialized the cluster");
                Ok(())
            }
            // Another path (a vote or log from a peer) got there first: fine.
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(e).context("cannot initialize the cluster"),
        }
    }

    /// Stops accepting requests, lets in-flight ones finish (up to a bound),
    /// stops Raft and flushes storage.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        match tokio::time::timeout(DRAIN_TIMEOUT, self.grpc_task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!("gRPC server ended with an error: {e}"),
            Ok(Err(e)) => tracing::warn!("gRPC server task failed: {e}"),
            Err(_) => tracing::warn!("in-flight requests did not finish within {DRAIN_TIMEOUT:?}"),
        }
        if let Some(task) = self.http_task {
            match tokio::time::timeout(DRAIN_TIMEOUT, task).await {
                Ok(Ok(Ok(()))) => {}
                other => tracing::warn!("HTTP server did not stop cleanly: {other:?}"),
            }
        }
        if let Err(e) = self.elector_task.await {
            tracing::warn!("election timer task failed: {e}");
        }
        if let Err(e) = self.duties_task.await {
            tracing::warn!("leader duties task failed: {e}");
        }
        self.raft
            .shutdown()
            .await
            .context("Raft did not shut down cleanly")?;
        drop(self.raft);
        store::close(self.log, self.sm).await
    }
}

/// Asks a running cluster, through any of `seeds`, to add this node and
/// promote it to voter. Retries while the cluster is unreachable or has no
/// leader; gives up at once on an answer that retrying cannot change.
async fn join(id: NodeId, addr: &str, seeds: &[String], dialer: &PeerDialer) -> anyhow::Result<()> {
    let mut backoff = Duration::from_millis(200);
    loop {
        for seed in seeds {
            let connected = match dialer.endpoint(seed) {
                Ok(endpoint) => endpoint.connect().await,
                Err(e) => Err(e),
            };
            let mut client = match connected {
                Ok(channel) => AdminClient::new(channel),
                Err(e) => {
                    tracing::warn!("cannot reach {seed} to join the cluster: {e}");
                    continue;
                }
            };
            let mut request = tonic::Request::new(AddNodeRequest {
                id,
                addr: addr.to_string(),
                promote: true,
            });
            dialer.authorize(&mut request);
            match client.add_node(request).await {
                Ok(reply) => {
                    let revision = reply.get_ref().revision;
                    tracing::info!(%seed, revision, "joined the cluster as a voter");
                    return Ok(());
                }
                Err(s) if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Aborted) => {
                    tracing::warn!("joining through {seed}: {}; retrying", s.message());
                }
                Err(s) if s.code() == tonic::Code::AlreadyExists => bail!(
                    "cannot join: {}. This node's data dir is empty, so if it is that member it lost its Raft state and must not vote under the same id again: remove it first or join with a new --id",
                    s.message()
                ),
                Err(s) => bail!("cannot join through {seed}: {} ({:?})", s.message(), s.code()),
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// The gRPC server's TLS: this node's certificate; with mutual TLS, clients
/// must present one signed by the CA.
fn server_tls(tls: &TlsConfig) -> ServerTlsConfig {
    let config = ServerTlsConfig::new().identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem));
    if tls.mutual {
        config.client_ca_root(Certificate::from_pem(&tls.ca_pem))
    } else {
        config
    }
}

/// Seeds an empty data dir from a backup file (`--restore-from`), `bump`
/// revisions past the backup's (`--restore-revision-bump`). A data dir that
/// already holds a cluster's state is left alone, so the flags can stay set
/// across restarts.
async fn restore(
    log: &mut LogStore,
    sm: &mut StateMachineStore,
    path: &Path,
    members: BTreeMap<NodeId, String>,
    bump: u64,
) -> anyhow::Result<()> {
    let log_state = log.get_log_state().await?;
    let vote = log.read_vote().await?;
    if log_state.last_log_id.is_some() || vote.is_some() || sm.revision() > 0 {
        tracing::warn!(
            "--restore-from {}: this data dir already holds a cluster's state; starting from that, not from the backup (wipe the data dir to restore)",
            path.display()
        );
        return Ok(());
    }
    let file = std::fs::read(path)
        .with_context(|| format!("--restore-from: cannot read {}", path.display()))?;
    let members = members
        .into_iter()
        .map(|(id, addr)| (id, BasicNode::new(addr)))
        .collect();
    let restored = sm
        .restore_backup(&file, members, bump)
        .await
        .with_context(|| format!("--restore-from: cannot restore {}", path.display()))?;
    // Members restored with different margins would hold different entries
    // under one log index; the operator compares these lines.
    tracing::info!(
        backup_revision = restored.backup_revision,
        revision = restored.revision,
        bump,
        "restored the state from {} at revision {} (the backup's {} plus --restore-revision-bump {bump}); every initial member must report the same revision",
        path.display(),
        restored.revision,
        restored.backup_revision,
    );
    Ok(())
}
