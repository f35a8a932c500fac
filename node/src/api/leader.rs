//! What every service needs to reach the leader: routing (handle here, or
//! forward once to the leader), proposing a command, and linearizable reads.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::BasicNode;
use tonic::transport::Channel;
use tonic::{Request, Status};

use super::access::AUTHORIZATION;
use super::{check_leader_error, domain_error, group_not_found, not_leader, write_error};
use crate::domain::{Command, Event, Group, Reply, State};
use crate::raft::removal::Removal;
use crate::raft::{BatonRaft, NodeId, PeerDialer};
use crate::store::StateMachineStore;
use baton_proto::v1::raft_client::RaftClient;
use baton_proto::v1::ReadIndexRequest;

/// Set on a request that one node forwarded to the node it believes leads.
const FORWARDED_BY: &str = "baton-forwarded-by";

/// How long a follower waits for the leader's read index, and then to apply it.
const READ_INDEX_TIMEOUT: Duration = Duration::from_secs(5);

type Metrics = openraft::RaftMetrics<NodeId, BasicNode>;

/// Where a leader-only request is served.
pub enum Route {
    Local,
    /// A channel to the leader; wrap it in the service's client.
    Forward(Channel),
}

/// A committed command's reply.
pub struct Committed {
    pub revision: u64,
    pub reply: Reply,
    pub events: Vec<Event>,
}

/// The leader's clock, stamped on proposals (time matters to some
/// commands), in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub struct Leader {
    id: NodeId,
    raft: BatonRaft,
    sm: StateMachineStore,
    /// The channel to the last leader we forwarded to.
    channel: Mutex<Option<(String, Channel)>>,
    dialer: PeerDialer,
    /// A removed node serves no client request (see `raft::removal`).
    removal: Arc<Removal>,
}

impl Leader {
    pub fn new(
        id: NodeId,
        raft: BatonRaft,
        sm: StateMachineStore,
        dialer: PeerDialer,
        removal: Arc<Removal>,
    ) -> Self {
        Self {
            id,
            raft,
            sm,
            channel: Mutex::new(None),
            dialer,
            removal,
        }
    }

    pub fn removal(&self) -> &Removal {
        &self.removal
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn raft(&self) -> &BatonRaft {
        &self.raft
    }

    pub fn dialer(&self) -> &PeerDialer {
        &self.dialer
    }

    pub fn metrics(&self) -> Metrics {
        self.raft.metrics().borrow().clone()
    }

    /// The leader this node knows, with its address.
    pub fn known_leader(metrics: &Metrics) -> Option<(NodeId, String)> {
        let id = metrics.current_leader?;
        let addr = metrics
            .membership_config
            .membership()
            .get_node(&id)?
            .addr
            .clone();
        Some((id, addr))
    }

    /// Decides whether this node serves a leader-only request or forwards it.
    /// A forwarded request is never forwarded again, so a stale view of who
    /// leads cannot make a request bounce between nodes.
    pub fn route<T>(&self, request: &Request<T>) -> Result<Route, Status> {
        self.removal.check()?;
        let metrics = self.metrics();
        if metrics.current_leader == Some(self.id) {
            // A leader that has committed its own removal keeps leading until its
            // next tick; openraft 0.9 must not be asked to propose in that window
            // (it trips a debug assertion). Send the caller elsewhere.
            if !metrics
                .membership_config
                .membership()
                .voter_ids()
                .any(|v| v == self.id)
            {
                return Err(Status::unavailable(
                    "this node has been removed from the cluster and is stepping down; retry on another node",
                ));
            }
            return Ok(Route::Local);
        }
        if request.metadata().contains_key(FORWARDED_BY) {
            return Err(not_leader(Self::known_leader(&metrics)));
        }
        self.leader_channel(&metrics).map(Route::Forward)
    }

    /// A channel to the leader `metrics` name.
    fn leader_channel(&self, metrics: &Metrics) -> Result<Channel, Status> {
        let Some((leader_id, leader_addr)) = Self::known_leader(metrics) else {
            return Err(not_leader(None));
        };
        let mut cached = self.channel.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((addr, channel)) = &*cached {
            if *addr == leader_addr {
                return Ok(channel.clone());
            }
        }
        let channel = self
            .dialer
            .endpoint(&leader_addr)
            .map_err(|e| {
                Status::internal(format!(
                    "leader {leader_id} has an unusable address {leader_addr:?}: {e}"
                ))
            })?
            .connect_lazy();
        *cached = Some((leader_addr, channel.clone()));
        Ok(channel)
    }

    /// The leader's read index: the log index a linearizable read must have
    /// applied. Asked of the leader when this node is a follower.
    async fn read_index(&self) -> Result<u64, Status> {
        let metrics = self.metrics();
        if metrics.current_leader == Some(self.id) {
            let (read, _) = self
                .raft
                .get_read_log_id()
                .await
                .map_err(check_leader_error)?;
            return Ok(read.map_or(0, |l| l.index));
        }
        let channel = self.leader_channel(&metrics)?;
        let mut request = Request::new(ReadIndexRequest {});
        request.set_timeout(READ_INDEX_TIMEOUT);
        self.dialer.authorize(&mut request);
        let reply = RaftClient::new(channel).read_index(request).await?;
        Ok(reply.into_inner().index)
    }

    /// Waits until this node has applied (and published) the leader's read
    /// index, and returns it: a linearizable point to start from.
    pub async fn linearizable_point(&self) -> Result<u64, Status> {
        self.removal.check()?;
        let index = self.read_index().await?;
        let caught_up = tokio::time::timeout(READ_INDEX_TIMEOUT, self.sm.hub().wait_for(index));
        match caught_up.await {
            Ok(Ok(())) => Ok(index),
            Ok(Err(_)) => Err(Status::unavailable("this node is shutting down; use another node")),
            Err(_) => Err(Status::unavailable(format!(
                "this node has not applied the leader's read index {index} within {READ_INDEX_TIMEOUT:?} (it is behind); use another node or retry"
            ))),
        }
    }

    /// Waits for a call forwarded to the leader this node knows, unless that
    /// changes first: a forward stuck on a leader that froze or was cut off
    /// answers UNAVAILABLE as soon as the node hears of its successor, so
    /// the client retries there instead of waiting out its own timeout.
    /// Like any timeout, the call may or may not have taken effect.
    pub async fn forward<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        let mut metrics = self.raft.metrics();
        let leader = metrics.borrow().current_leader;
        tokio::select! {
            result = call => result.map_err(forward_failed),
            _ = metrics.wait_for(|m| m.current_leader != leader) => Err(Status::unavailable(
                "the leader changed while this call was forwarded to it; it may or may not have taken effect; retry",
            )),
        }
    }

    /// The request to send to the leader: same message, deadline and admin
    /// token, marked as forwarded.
    pub fn forwarded<T>(&self, request: Request<T>) -> Request<T> {
        let kept: Vec<_> = ["grpc-timeout", AUTHORIZATION]
            .into_iter()
            .filter_map(|key| Some((key, request.metadata().get(key)?.clone())))
            .collect();
        let mut forwarded = Request::new(request.into_inner());
        for (key, value) in kept {
            forwarded.metadata_mut().insert(key, value);
        }
        forwarded
            .metadata_mut()
            .insert(FORWARDED_BY, self.id.into());
        forwarded
    }

    /// Commits `command` (this node must lead: call after `route`) and returns
    /// its reply, or its domain error as a status. Nothing is acknowledged
    /// before the entry is committed on a majority and applied here.
    ///
    /// Only what can apply is written: the command is first checked against
    /// this node's state. A request that would be refused, or would change
    /// nothing, is answered without a log entry, once a linearizable read
    /// confirms the verdict: this node may have lost office, or not yet
    /// applied what it committed, and a refusal from a stale state would
    /// be wrong. A request that passes costs no extra round.
    ///
    /// The command is stamped here, once, with this leader's clock: the
    /// time every replica decides it at.
    pub async fn propose(&self, command: Command) -> Result<Committed, Status> {
        let proposal = command.at(now_ms());
        if self
            .sm
            .read(|s| s.check(&proposal))
            .map_or(true, |r| r.is_some())
        {
            self.raft
                .ensure_linearizable()
                .await
                .map_err(check_leader_error)?;
            let (revision, verdict) = self.sm.read(|s| (s.revision, s.check(&proposal)));
            match verdict {
                Err(e) => return Err(domain_error(&e)),
                Ok(Some(reply)) => {
                    return Ok(Committed {
                        revision,
                        reply,
                        events: Vec::new(),
                    })
                }
                Ok(None) => {}
            }
        }
        let written = self
            .raft
            .client_write(proposal)
            .await
            .map_err(write_error)?;
        let result = written.data;
        match result.outcome {
            Ok(reply) => Ok(Committed {
                revision: result.revision,
                reply,
                events: result.events,
            }),
            Err(e) => Err(domain_error(&e)),
        }
    }

    /// Reads the state: after confirming leadership with a quorum and applying
    /// up to the read index (linearizable), or as this node has it
    /// (`serializable`). A linearizable read must be routed to the leader first.
    pub async fn read<R>(
        &self,
        serializable: bool,
        f: impl FnOnce(&State) -> R,
    ) -> Result<R, Status> {
        // A removed node's state is stale by an unknown amount: not even a
        // serializable read is answered from it.
        self.removal.check()?;
        if !serializable {
            self.raft
                .ensure_linearizable()
                .await
                .map_err(check_leader_error)?;
        }
        Ok(self.sm.read(f))
    }

    /// Reads one group (see [`Leader::read`]) with the state's revision, or
    /// answers NOT_FOUND.
    pub async fn read_group<R>(
        &self,
        serializable: bool,
        name: &str,
        f: impl FnOnce(u64, &Group) -> R,
    ) -> Result<R, Status> {
        self.read(serializable, |s| {
            s.groups.get(name).map(|g| f(s.revision, g))
        })
        .await?
        .ok_or_else(|| group_not_found(name))
    }
}

/// What the caller hears when forwarding to the leader broke on the way
/// (the leader died or restarted mid-call): UNAVAILABLE, so clients retry,
/// instead of the CANCELLED or UNKNOWN that tonic reports for a closed
/// connection, which no longer carries its cause once it crosses this node
/// (and which clients rightly do not retry). Like any timeout, the call may
/// or may not have taken effect; baton's writes are safe to repeat.
pub fn forward_failed(status: Status) -> Status {
    use std::error::Error as _;
    // tonic attaches a source only to the statuses it makes itself from a
    // transport failure (an h2 error, a reset, a timeout); a status the
    // leader sent has none and passes through as it is.
    if status.source().is_some() {
        Status::unavailable(format!(
            "the connection to the leader broke while forwarding this call ({}); it may or may not have taken effect; retry",
            status.message()
        ))
    } else {
        status
    }
}

/// Serves a leader-only call locally or forwards it: `serve!(leader, request,
/// Client::method, local expression)`.
#[macro_export]
macro_rules! on_leader {
    ($leader:expr, $request:ident, $client:ident :: $method:ident, $local:expr) => {
        match $leader.route(&$request)? {
            $crate::api::leader::Route::Forward(channel) => {
                return $leader
                    .forward($client::new(channel).$method($leader.forwarded($request)))
                    .await;
            }
            $crate::api::leader::Route::Local => $local,
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_proto::v1::admin_client::AdminClient;
    use baton_proto::v1::ClusterStatusRequest;

    /// A "leader" that accepts connections and drops them at once, as a
    /// process killed mid-call (or a proxy in front of one) does.
    #[tokio::test]
    async fn a_forward_whose_connection_breaks_answers_unavailable() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                drop(socket);
            }
        });
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect_lazy();
        let status = AdminClient::new(channel)
            .cluster_status(ClusterStatusRequest {})
            .await
            .expect_err("nothing answers");
        let forwarded = forward_failed(status.clone());
        assert_eq!(
            forwarded.code(),
            tonic::Code::Unavailable,
            "{status:?} became {forwarded:?}"
        );
        // An answer from the leader passes through as it is.
        let answer = Status::failed_precondition("stale");
        assert_eq!(
            forward_failed(answer).code(),
            tonic::Code::FailedPrecondition
        );
    }
}
