//! The admin client.

use std::error::Error as _;
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
/// through whichever endpoint answers; a call that fails with UNAVAILABLE
/// (node down, no leader yet, leadership moved) is retried against the current
/// leader until `timeout` passes. Every other answer is returned as it is.
pub struct AdminClient {
    endpoints: Vec<String>,
    timeout: Duration,
    transport: Transport,
    leader: Option<(String, NodeChannel)>,
}

fn channel(
    transport: &Transport,
    addr: &str,
    timeout: Duration,
) -> Result<NodeChannel, ClientError> {
    let endpoint = transport.endpoint(addr)?;
    Ok(transport.wrap(
        endpoint
            .connect_timeout(Duration::from_secs(1).min(timeout))
            .timeout(timeout)
            .connect_lazy(),
    ))
}

/// Whether a call failed because its connection broke (the node died or
/// restarted mid-call), not because a server answered. The call may or may
/// not have taken effect, as with any timeout; baton's writes are safe to
/// repeat (a repeated one is refused or returns the first result).
/// tonic reports it as UNKNOWN or CANCELLED ("connection closed"), with the
/// transport error as the source.
pub(crate) fn lost_connection(status: &Status) -> bool {
    status
        .source()
        .is_some_and(|e| e.downcast_ref::<tonic::transport::Error>().is_some())
}

/// `HOST:PORT` endpoints, each entry possibly a comma-separated list; checks
/// that each one makes a valid address.
pub(crate) fn split_endpoints(endpoints: &[String]) -> Result<Vec<String>, ClientError> {
    let endpoints: Vec<String> = endpoints
        .iter()
        .flat_map(|e| e.split(','))
        .map(|e| e.trim().trim_start_matches("http://").to_string())
        .filter(|e| !e.is_empty())
        .collect();
    if endpoints.is_empty() {
        return Err(ClientError::NoEndpoints);
    }
    for e in &endpoints {
        Transport::default().endpoint(e)?;
    }
    Ok(endpoints)
}

impl AdminClient {
    /// A client for a cluster reachable at any of `endpoints` (`HOST:PORT`).
    /// Connects lazily: nothing is dialled until the first call.
    pub fn new(endpoints: &[String], timeout: Duration) -> Result<Self, ClientError> {
        let endpoints = split_endpoints(endpoints)?;
        Ok(Self {
            endpoints,
            timeout,
            transport: Transport::default(),
            leader: None,
        })
    }

    /// Uses TLS and a token as `transport` says (default: plaintext).
    pub fn with_transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self.leader = None;
        self
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Finds the leader: the first endpoint that answers names it.
    async fn find_leader(&mut self) -> Result<NodeChannel, Status> {
        if let Some((_, channel)) = &self.leader {
            return Ok(channel.clone());
        }
        let mut last = Status::unavailable("no endpoint tried");
        for addr in self.endpoints.clone() {
            let to_status = |e: ClientError| Status::invalid_argument(e.to_string());
            let endpoint_channel =
                channel(&self.transport, &addr, self.timeout).map_err(to_status)?;
            match Grpc::new(endpoint_channel.clone())
                .cluster_status(ClusterStatusRequest {})
                .await
            {
                Ok(reply) => {
                    let status = reply.into_inner();
                    if status.leader_id == 0 {
                        last = Status::unavailable(format!("{addr} knows no leader yet"));
                        continue;
                    }
                    let leader = if status.leader_id == status.node_id {
                        endpoint_channel
                    } else {
                        channel(&self.transport, &status.leader_addr, self.timeout)
                            .map_err(to_status)?
                    };
                    self.leader = Some((status.leader_addr, leader.clone()));
                    return Ok(leader);
                }
                Err(s) if s.code() == Code::Unavailable => last = s,
                Err(s) => return Err(s),
            }
        }
        Err(last)
    }

    /// The leader's address, as the endpoint that answered names it.
    pub(crate) async fn leader_addr(&mut self) -> Result<String, Status> {
        self.find_leader().await?;
        Ok(self
            .leader
            .as_ref()
            .map(|(addr, _)| addr.clone())
            .unwrap_or_default())
    }

    /// Forgets the leader (it stopped answering as one).
    pub(crate) fn forget_leader(&mut self) {
        self.leader = None;
    }

    /// Runs `call` against the leader (given a channel to it, for any of
    /// baton's services), retrying on UNAVAILABLE until the timeout.
    pub async fn call<T, F, Fut>(&mut self, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut(NodeChannel) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let start = Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            let result = match self.find_leader().await {
                Ok(channel) => call(channel).await.map(Response::into_inner),
                Err(s) => Err(s),
            };
            match result {
                Ok(reply) => return Ok(reply),
                Err(s) if s.code() == Code::Unavailable || lost_connection(&s) => {
                    self.leader = None;
                    if start.elapsed() + pause > self.timeout {
                        return Err(ClientError::Unavailable {
                            waited: start.elapsed(),
                            endpoints: self.endpoints.join(","),
                            last: s.message().to_string(),
                        });
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
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
    pub async fn member_statuses(
        &mut self,
    ) -> Result<(ClusterStatusResponse, Vec<MemberStatus>), ClientError> {
        let leader = self.cluster_status().await?;
        let mut members = Vec::new();
        for m in &leader.members {
            let (status, error) = if m.id == leader.node_id {
                (Some(leader.clone()), None)
            } else {
                let short = self.timeout.min(Duration::from_secs(2));
                match Grpc::new(channel(&self.transport, &m.addr, short)?)
                    .cluster_status(ClusterStatusRequest {})
                    .await
                {
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
