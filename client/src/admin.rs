//! The admin client.

use std::future::Future;
use std::time::{Duration, Instant};

use baton_proto::v1::admin_client::AdminClient as Grpc;
use baton_proto::v1::{
    AddNodeRequest, BarrierRequest, BarrierResponse, ClusterStatusRequest, ClusterStatusResponse,
    CreateGroupRequest, GroupConfig, GroupResponse, MembershipResponse, PromoteNodeRequest,
    RemoveNodeRequest,
};
use tonic::{Code, Response, Status};

use crate::code_name;
pub(crate) use crate::endpoints::lost_connection;
use crate::endpoints::{backoff, Endpoints, Timing};
use crate::transport::{NodeChannel, Transport};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no endpoint given; pass --endpoints HOST:PORT[,HOST:PORT…]")]
    NoEndpoints,
    #[error("endpoint {endpoint:?} is not HOST:PORT: {reason}")]
    BadEndpoint { endpoint: String, reason: String },
    #[error("TLS or token settings: {0}")]
    BadCredentials(String),
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Status(Status),
    #[error("no baton node answered within {waited:?} (tried {endpoints}); last error: {last}")]
    Unavailable {
        waited: Duration,
        endpoints: String,
        last: String,
    },
}

impl ClientError {
    /// The gRPC code of a server's answer, if the error is one.
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Status(s) => Some(s.code()),
            _ => None,
        }
    }
}

/// One member's own view, as `batonctl cluster status` shows it.
#[derive(Clone, Debug)]
pub struct MemberStatus {
    pub id: u64,
    pub addr: String,
    pub voter: bool,
    /// The member's own answer; `None` if it could not be reached.
    pub status: Option<ClusterStatusResponse>,
    /// Why it could not be reached.
    pub error: Option<String>,
    /// Highest index the leader knows this member has.
    pub matched_index: Option<u64>,
}

/// An admin client over a list of endpoints. Calls go to the leader, found
/// by asking every endpoint at once (see [`crate::endpoints`]); a call that
/// fails with UNAVAILABLE or a lost connection (node down or frozen, no
/// leader yet, leadership moved) is retried against the current leader, each
/// attempt with its own timeout, until `timeout` passes. Every other answer
/// is returned as it is.
pub struct AdminClient {
    endpoints: Endpoints,
    timeout: Duration,
}

impl AdminClient {
    /// A client for a cluster reachable at any of `endpoints` (`HOST:PORT`),
    /// giving each call `timeout` in all. Connects lazily: nothing is dialled
    /// until the first call.
    pub fn new(endpoints: &[String], timeout: Duration) -> Result<Self, ClientError> {
        Ok(Self {
            endpoints: Endpoints::new(
                endpoints,
                Transport::default(),
                Timing::for_budget(timeout),
            )?,
            timeout,
        })
    }

    /// A client sharing what `endpoints` learned (leader, silent nodes).
    pub fn from_endpoints(endpoints: Endpoints, timeout: Duration) -> Self {
        Self { endpoints, timeout }
    }

    /// Uses TLS and a token as `transport` says (default: plaintext).
    pub fn with_transport(mut self, transport: Transport) -> Self {
        if let Ok(e) = Endpoints::new(self.endpoints.addrs(), transport, self.endpoints.timing()) {
            self.endpoints = e;
        }
        self
    }

    /// Gives each attempt this long instead of a fraction of the budget: for
    /// calls that wait on purpose (a barrier put, a backup), which a short
    /// attempt timeout would cut off and repeat.
    pub fn set_attempt_timeout(&mut self, attempt: Duration) {
        let timing = Timing {
            attempt,
            ..self.endpoints.timing()
        };
        let transport = self.endpoints.transport().clone();
        if let Ok(e) = Endpoints::new(self.endpoints.addrs(), transport, timing) {
            self.endpoints = e;
        }
    }

    pub fn transport(&self) -> &Transport {
        self.endpoints.transport()
    }

    /// What each call may take in all, retries included.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// Runs `call` against the leader (given a channel to it, for any of
    /// baton's services), retrying on UNAVAILABLE until the timeout.
    pub async fn call<T, F, Fut>(&mut self, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut(NodeChannel) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let start = Instant::now();
        let mut round = 0;
        loop {
            let (result, addr) = match self.endpoints.find_leader().await {
                Ok((addr, channel)) => (call(channel).await.map(Response::into_inner), Some(addr)),
                Err(s) => (Err(s), None),
            };
            match result {
                Ok(reply) => {
                    if let Some(addr) = &addr {
                        self.endpoints.answered(addr);
                    }
                    return Ok(reply);
                }
                Err(s) if lost_connection(&s) => {
                    // Down, frozen or no longer leading: the next probe
                    // tells which (a node that does not answer it is
                    // skipped for a while).
                    self.endpoints.forget_leader();
                    let pause = backoff(Duration::from_millis(50), Duration::from_secs(1), round);
                    round += 1;
                    if start.elapsed() + pause > self.timeout {
                        return Err(ClientError::Unavailable {
                            waited: start.elapsed(),
                            endpoints: self.endpoints.joined(),
                            last: s.message().to_string(),
                        });
                    }
                    tokio::time::sleep(pause).await;
                }
                Err(s) => {
                    if let Some(addr) = &addr {
                        self.endpoints.answered(addr);
                    }
                    return Err(ClientError::Status(s));
                }
            }
        }
    }

    /// Runs `call` on any node (the first endpoint not skipped; after a
    /// lost connection, the next): for serializable reads, which every node
    /// answers from its own state, one cut off from the leader too.
    pub async fn call_any<T, F, Fut>(&mut self, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut(NodeChannel) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let start = Instant::now();
        let mut round = 0;
        loop {
            let order = self.endpoints.order();
            let addr = order[round as usize % order.len()].clone();
            let channel = self.endpoints.channel(&addr)?;
            match call(channel).await {
                Ok(reply) => {
                    self.endpoints.answered(&addr);
                    return Ok(reply.into_inner());
                }
                Err(s) if lost_connection(&s) => {
                    if s.code() == Code::Cancelled {
                        self.endpoints.silent(&addr);
                    }
                    let pause = backoff(Duration::from_millis(20), Duration::from_secs(1), round);
                    round += 1;
                    if start.elapsed() + pause > self.timeout {
                        return Err(ClientError::Unavailable {
                            waited: start.elapsed(),
                            endpoints: self.endpoints.joined(),
                            last: s.message().to_string(),
                        });
                    }
                    tokio::time::sleep(pause).await;
                }
                Err(s) => return Err(ClientError::Status(s)),
            }
        }
    }

    async fn on_leader<T, F, Fut>(&mut self, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut(Grpc<NodeChannel>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        self.call(|channel| call(Grpc::new(channel))).await
    }

    /// The leader's view of the cluster.
    pub async fn cluster_status(&mut self) -> Result<ClusterStatusResponse, ClientError> {
        self.on_leader(|mut c| async move { c.cluster_status(ClusterStatusRequest {}).await })
            .await
    }

    /// The leader's view plus every member's own answer (or why it gave none).
    /// When no leader answers within a few seconds (no quorum), the view is
    /// that of the first node that answers: its `leader_id` is then 0 or not
    /// its own `node_id`, which says so.
    pub async fn member_statuses(
        &mut self,
    ) -> Result<(ClusterStatusResponse, Vec<MemberStatus>), ClientError> {
        let budget = self.timeout.min(Duration::from_secs(3));
        let mut quick = AdminClient::from_endpoints(self.endpoints.clone(), budget);
        let leader = match quick.cluster_status().await {
            Ok(leader) => leader,
            Err(ClientError::Unavailable { .. }) => self
                .endpoints
                .any_status()
                .await
                .map_err(ClientError::Status)?,
            Err(e) => return Err(e),
        };
        let mut members = Vec::new();
        for m in &leader.members {
            let (status, error) = if m.id == leader.node_id {
                (Some(leader.clone()), None)
            } else {
                let probe = self.endpoints.timing().probe;
                let asked = tokio::time::timeout(
                    probe,
                    Grpc::new(self.endpoints.channel(&m.addr)?)
                        .cluster_status(ClusterStatusRequest {}),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(Status::deadline_exceeded(format!(
                        "no answer within {probe:?} (frozen, or a socket that never answers)"
                    )))
                });
                match asked {
                    Ok(r) => (Some(r.into_inner()), None),
                    Err(s) => (
                        None,
                        Some(format!("{}: {}", code_name(s.code()), s.message())),
                    ),
                }
            };
            members.push(MemberStatus {
                id: m.id,
                addr: m.addr.clone(),
                voter: m.voter,
                status,
                error,
                matched_index: m.matched_index,
            });
        }
        Ok((leader, members))
    }

    /// Adds a node as a learner; with `promote`, makes it a voter once caught up.
    pub async fn add_node(
        &mut self,
        id: u64,
        addr: &str,
        promote: bool,
    ) -> Result<MembershipResponse, ClientError> {
        let request = AddNodeRequest {
            id,
            addr: addr.to_string(),
            promote,
        };
        self.on_leader(|mut c| {
            let request = request.clone();
            async move { c.add_node(request).await }
        })
        .await
    }

    pub async fn promote_node(&mut self, id: u64) -> Result<MembershipResponse, ClientError> {
        self.on_leader(|mut c| async move { c.promote_node(PromoteNodeRequest { id }).await })
            .await
    }

    pub async fn remove_node(&mut self, id: u64) -> Result<MembershipResponse, ClientError> {
        self.on_leader(|mut c| async move { c.remove_node(RemoveNodeRequest { id }).await })
            .await
    }

    /// Commits an empty entry; returns once the leader has applied it.
    pub async fn barrier(&mut self) -> Result<BarrierResponse, ClientError> {
        self.on_leader(|mut c| async move { c.barrier(BarrierRequest {}).await })
            .await
    }

    /// Creates `group`; unset config fields take the server's defaults.
    pub async fn create_group(
        &mut self,
        group: &str,
        config: GroupConfig,
    ) -> Result<GroupResponse, ClientError> {
        let request = CreateGroupRequest {
            group: group.to_string(),
            config: Some(config),
        };
        self.on_leader(|mut c| {
            let request = request.clone();
            async move { c.create_group(request).await }
        })
        .await
    }
}
