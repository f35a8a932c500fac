//! The admin client: finding the leader and retrying (this file), and one
//! typed method per admin call, by what it concerns: the Raft cluster
//! (`cluster.rs`), groups, their assignment and workers (`groups.rs`),
//! tombstones (`tombstones.rs`).

use std::future::Future;
use std::time::{Duration, Instant};

use baton_proto::v1::admin_client::AdminClient as Grpc;
use baton_proto::v1::ClusterStatusResponse;
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

mod cluster;
mod groups;
mod tombstones;

pub use cluster::Backup;

/// Which node answers a read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Consistency {
    /// The leader, once it has confirmed it still leads: the latest
    /// committed state.
    #[default]
    Linearizable,
    /// Any node, from its own state (one cut off from the leader too): fast
    /// and available, but possibly behind.
    Serializable,
}

impl Consistency {
    /// `Serializable` when `serializable` is set (a `--serializable` flag).
    pub fn serializable_if(serializable: bool) -> Self {
        if serializable {
            Consistency::Serializable
        } else {
            Consistency::Linearizable
        }
    }

    /// The request field that asks the node not to confirm its leadership.
    fn is_serializable(self) -> bool {
        self == Consistency::Serializable
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
        self.endpoints = self.endpoints.with_transport(transport);
        self
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
                Ok((addr, channel)) => {
                    (self.attempt(&addr, call(channel), start).await, Some(addr))
                }
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
                    self.within_budget(start, pause, &s)?;
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

    /// UNAVAILABLE (with the last failure) if a pause from now would leave
    /// the call's budget.
    fn within_budget(
        &self,
        start: Instant,
        pause: Duration,
        last: &Status,
    ) -> Result<(), ClientError> {
        if start.elapsed() + pause > self.timeout {
            return Err(ClientError::Unavailable {
                waited: start.elapsed(),
                endpoints: self.endpoints.joined(),
                last: last.message().to_string(),
            });
        }
        Ok(())
    }

    /// Waits for one call on the leader at `addr`. Past each attempt timeout
    /// the leader is probed: a slow one that still leads is waited for (a
    /// write is never sent twice because it was slow), one that does not
    /// answer as the leader is left, with UNAVAILABLE. The call's budget
    /// still bounds the wait, with DEADLINE_EXCEEDED: it may or may not have
    /// taken effect.
    async fn attempt<T, Fut>(&self, addr: &str, call: Fut, start: Instant) -> Result<T, Status>
    where
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        tokio::pin!(call);
        loop {
            let left = self.timeout.saturating_sub(start.elapsed());
            match tokio::time::timeout(self.endpoints.timing().attempt.min(left), &mut call).await {
                Ok(result) => return result.map(Response::into_inner),
                Err(_) if start.elapsed() >= self.timeout => {
                    return Err(Status::deadline_exceeded(format!(
                        "the leader at {addr} did not answer within {:?}; the call may or may not have taken effect",
                        self.timeout
                    )))
                }
                Err(_) => {
                    if !self.endpoints.still_leads(addr).await {
                        return Err(Status::unavailable(format!(
                            "the leader at {addr} stopped answering as the leader (frozen, cut off or deposed)"
                        )));
                    }
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
        let order = self.endpoints.order();
        let mut round = 0;
        loop {
            let addr = order[round % order.len()].clone();
            let channel = self.endpoints.channel(&addr)?;
            let attempt = self.endpoints.timing().attempt;
            let result = tokio::time::timeout(attempt, call(channel))
                .await
                .unwrap_or_else(|_| {
                    self.endpoints.silent(&addr);
                    Err(Status::unavailable(format!(
                        "{addr} did not answer within {attempt:?}"
                    )))
                });
            match result {
                Ok(reply) => {
                    self.endpoints.answered(&addr);
                    return Ok(reply.into_inner());
                }
                Err(s) if lost_connection(&s) => {
                    let pause = backoff(
                        Duration::from_millis(20),
                        Duration::from_secs(1),
                        (round / order.len()) as u32,
                    );
                    round += 1;
                    self.within_budget(start, pause, &s)?;
                    // The next endpoint at once; a pause after a full round.
                    if round % order.len() == 0 {
                        tokio::time::sleep(pause).await;
                    }
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

    /// Runs `call` on the leader or, for a serializable read, on any node.
    async fn read<T, F, Fut>(&mut self, consistency: Consistency, call: F) -> Result<T, ClientError>
    where
        F: FnMut(NodeChannel) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        match consistency {
            Consistency::Linearizable => self.call(call).await,
            Consistency::Serializable => self.call_any(call).await,
        }
    }
}
