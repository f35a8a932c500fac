//! Which node to talk to: the one place where every client (the admin
//! client and so `batonctl`, watches, shard maps, the worker SDK) picks an
//! endpoint, so that a frozen node costs a fraction of a call's budget once,
//! not the whole budget on every call.
//!
//! - **Probes are concurrent.** The leader is found by asking every endpoint
//!   at once. A listed node is taken for the leader only when it says so
//!   itself (its followers go on naming a frozen leader until they elect
//!   another); the first such answer wins, unless one arriving within
//!   [`SETTLE`] after it leads in a higher term (an isolated old leader still
//!   names itself).
//! - **Every attempt has its own timeout**, a fraction of the call's budget
//!   ([`Timing::for_budget`]); a node that does not answer within it is
//!   *silent* for [`SILENT_FOR`]: tried after the others, and never believed
//!   to lead. A call on the leader that is slower than its attempt timeout
//!   goes on only if the leader still answers, as the leader, a probe.
//! - **The leader is remembered** across calls and forgotten at its first
//!   failure; rounds are separated by jittered, growing pauses.
//!
//! Clones share what they learned (the leader, the silent nodes, the
//! connections).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_proto::v1::admin_client::AdminClient as Grpc;
use baton_proto::v1::{ClusterStatusRequest, ClusterStatusResponse};
use futures::stream::{FuturesUnordered, StreamExt};
use rand::Rng;
use tonic::{Code, Status};

use crate::transport::{NodeChannel, Transport};
use crate::ClientError;

/// How long a node that did not answer in time is tried after the others
/// (and never believed to lead).
pub const SILENT_FOR: Duration = Duration::from_secs(2);

/// A leader whose quorum has not answered it for this long has lost it:
/// heartbeats go every 100 ms by default, and a node's leader lease is
/// 500 ms; links of up to 150 ms each way still ack within about 400 ms.
pub const NO_QUORUM: Duration = Duration::from_millis(600);

/// After the first useful probe answer, how long answers naming a leader of a
/// higher term may still come in.
pub const SETTLE: Duration = Duration::from_millis(30);

/// Per-attempt timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// A probe (`ClusterStatus`, answered locally by any node).
    pub probe: Duration,
    /// How long a call waits before it checks that the node it waits on is
    /// still alive (and, on the leader, still leading).
    pub attempt: Duration,
}

impl Timing {
    /// Timeouts for calls whose whole budget is `budget`: a probe gets a
    /// tenth of it (0.2–1 s); an attempt, after which the leader is probed
    /// to tell slow from frozen, an eighth (0.3–2 s). A frozen node costs a
    /// small part of the budget and leaves time to try others.
    pub fn for_budget(budget: Duration) -> Self {
        Self {
            probe: (budget / 10).clamp(Duration::from_millis(200), Duration::from_secs(1)),
            attempt: (budget / 8).clamp(Duration::from_millis(300), Duration::from_secs(2)),
        }
    }
}

#[derive(Default)]
struct Memory {
    /// The leader, by the address this client reaches it at.
    leader: Option<String>,
    silent_until: HashMap<String, Instant>,
    channels: HashMap<String, NodeChannel>,
    /// Node id → the endpoint it answered at: nodes are told apart by id,
    /// since the address a node advertises may be spelled differently from
    /// the one a client reaches it at (a Kubernetes service name, NAT, a
    /// port-forward).
    ids: HashMap<u64, String>,
}

/// A cluster's endpoints and what was learned about them.
#[derive(Clone)]
pub struct Endpoints {
    addrs: Arc<[String]>,
    transport: Transport,
    timing: Timing,
    memory: Arc<Mutex<Memory>>,
}

/// `HOST:PORT` endpoints, each entry possibly a comma-separated list; checks
/// that each one makes a valid address.
pub(crate) fn split(endpoints: &[String]) -> Result<Vec<String>, ClientError> {
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

impl Endpoints {
    pub fn new(
        endpoints: &[String],
        transport: Transport,
        timing: Timing,
    ) -> Result<Self, ClientError> {
        Ok(Self {
            addrs: split(endpoints)?.into(),
            transport,
            timing,
            memory: Arc::default(),
        })
    }

    /// The same endpoints over `transport`; what was learned starts afresh
    /// (it was learned over another transport).
    pub fn with_transport(&self, transport: Transport) -> Self {
        Self {
            addrs: self.addrs.clone(),
            transport,
            timing: self.timing,
            memory: Arc::default(),
        }
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    pub fn joined(&self) -> String {
        self.addrs.join(",")
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// A (lazily connecting) channel to `addr`, shared by every call to it.
    /// Calls on it are timed by their callers (a probe, an attempt).
    pub fn channel(&self, addr: &str) -> Result<NodeChannel, ClientError> {
        if let Some(c) = self.memory().channels.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = self
            .transport
            .endpoint(addr)?
            .connect_timeout(self.timing.probe)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        let channel = self.transport.wrap(endpoint.connect_lazy());
        self.memory()
            .channels
            .insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    /// `addr` did not answer in time: skip it for a while, and drop its
    /// connection (a frozen peer's may never recover by itself).
    pub fn silent(&self, addr: &str) {
        let mut memory = self.memory();
        memory
            .silent_until
            .insert(addr.to_string(), Instant::now() + SILENT_FOR);
        memory.channels.remove(addr);
        if memory.leader.as_deref() == Some(addr) {
            memory.leader = None;
        }
    }

    fn is_silent(&self, addr: &str) -> bool {
        self.memory()
            .silent_until
            .get(addr)
            .is_some_and(|until| Instant::now() < *until)
    }

    /// `addr` answered: it is no longer skipped.
    pub fn answered(&self, addr: &str) {
        crate::mark_answered();
        self.memory().silent_until.remove(addr);
    }

    /// The endpoints in the order to try them: those not skipped first, in
    /// the order given, then the skipped ones.
    pub fn order(&self) -> Vec<String> {
        let mut addrs: Vec<String> = self.addrs.to_vec();
        addrs.sort_by_key(|a| self.is_silent(a));
        addrs
    }

    pub fn leader(&self) -> Option<String> {
        self.memory().leader.clone()
    }

    /// Forgets the leader (it stopped answering as one).
    pub fn forget_leader(&self) {
        self.memory().leader = None;
    }

    /// The leader's address and a channel to it: the remembered one, or the
    /// one the endpoints name, asked all at once. UNAVAILABLE when none
    /// answers within the probe timeout or none knows a leader that is not
    /// silent.
    pub async fn find_leader(&self) -> Result<(String, NodeChannel), Status> {
        if let Some(addr) = self.leader() {
            let channel = self.channel(&addr).map_err(to_status)?;
            return Ok((addr, channel));
        }
        let addr = self.probe_all().await?;
        let channel = self.channel(&addr).map_err(to_status)?;
        self.memory().leader = Some(addr.clone());
        Ok((addr, channel))
    }

    /// `ClusterStatus` of the node at `addr`, within the probe timeout; one
    /// that does not answer in time is skipped for a while. `None`: no
    /// answer (or a refusal).
    async fn probe(&self, addr: &str) -> Option<ClusterStatusResponse> {
        let channel = self.channel(addr).ok()?;
        let asked = tokio::time::timeout(
            self.timing.probe,
            Grpc::new(channel).cluster_status(ClusterStatusRequest {}),
        )
        .await;
        match asked {
            Ok(answer) => answer.ok().map(tonic::Response::into_inner),
            Err(_) => {
                self.silent(addr);
                None
            }
        }
    }

    /// Whether the node at `addr` answers a probe at all (any role): asked
    /// while a call it serves from its own state is slow, to tell a busy or
    /// lagging node from a frozen one.
    pub async fn answers(&self, addr: &str) -> bool {
        self.probe(addr).await.is_some()
    }

    /// Whether the node at `addr` still answers, within the probe timeout,
    /// that it leads with a quorum behind it: asked while a call on it is
    /// slow, to tell a slow leader (keep waiting) from a frozen, isolated or
    /// deposed one (move on).
    pub async fn still_leads(&self, addr: &str) -> bool {
        self.probe(addr).await.is_some_and(|status| {
            status.leader_id == status.node_id
                && status.removed_at_index.is_none()
                && has_quorum(&status)
        })
    }

    /// The first answer of any endpoint to `ClusterStatus`, asked of all at
    /// once: what a node knows when no leader can be found.
    pub async fn any_status(&self) -> Result<ClusterStatusResponse, Status> {
        let mut probes: FuturesUnordered<_> = self
            .order()
            .into_iter()
            .map(|addr| async move { self.probe(&addr).await })
            .collect();
        while let Some(answer) = probes.next().await {
            if let Some(status) = answer {
                return Ok(status);
            }
        }
        Err(Status::unavailable("no endpoint answered"))
    }

    /// Asks every endpoint for its view at once; returns the answer naming
    /// the leader of the highest term among those in by [`SETTLE`] after the
    /// first useful one.
    async fn probe_all(&self) -> Result<String, Status> {
        let mut probes: FuturesUnordered<_> = self
            .order()
            .into_iter()
            .map(|addr| async move {
                let result = match self.channel(&addr) {
                    Ok(channel) => tokio::time::timeout(
                        self.timing.probe,
                        Grpc::new(channel).cluster_status(ClusterStatusRequest {}),
                    )
                    .await
                    .unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer"))),
                    Err(e) => Err(to_status(e)),
                };
                (addr, result.map(|r| r.into_inner()))
            })
            .collect();
        let mut best: Option<(ClusterStatusResponse, String)> = None;
        let mut settle_by: Option<Instant> = None;
        let mut removed = 0;
        let mut refused: Option<Status> = None;
        let mut last = Status::unavailable("no endpoint answered");
        loop {
            let next = match settle_by {
                Some(by) => match tokio::time::timeout_at(by.into(), probes.next()).await {
                    Ok(next) => next,
                    Err(_) => break,
                },
                None => probes.next().await,
            };
            let Some((addr, result)) = next else { break };
            match result {
                Ok(status) => {
                    self.answered(&addr);
                    self.memory().ids.insert(status.node_id, addr.clone());
                    let leader_endpoint = self.memory().ids.get(&status.leader_id).cloned();
                    if let Some(index) = status.removed_at_index {
                        removed += 1;
                        last = Status::failed_precondition(format!(
                            "node {} at {addr} was removed from the cluster (the membership at log index {index} no longer lists it): give the endpoints of current members",
                            status.node_id
                        ));
                    } else if status.leader_id == 0 {
                        last = Status::unavailable(format!("{addr} knows no leader yet"));
                    } else if status.leader_id == status.node_id && !has_quorum(&status) {
                        // openraft keeps a leader cut off from its peers a
                        // leader; the majority elects another meanwhile.
                        last = Status::unavailable(format!(
                            "{addr} leads but has heard no quorum for {} ms",
                            status.quorum_acked_ms_ago.unwrap_or_default()
                        ));
                    } else if status.leader_id == status.node_id {
                        // It says so itself: reach it where it answered.
                        if best.as_ref().is_none_or(|(b, _)| status.term > b.term) {
                            best = Some((status, addr.clone()));
                            settle_by.get_or_insert(Instant::now() + SETTLE);
                        }
                    } else if let Some(endpoint) = leader_endpoint {
                        // One of the endpoints: believed when it answers
                        // for itself (followers go on naming a frozen
                        // leader until they elect another).
                        last = Status::unavailable(format!(
                            "{addr} names node {} at {endpoint} the leader, which has not answered for itself",
                            status.leader_id
                        ));
                    } else if self.is_silent(&status.leader_addr) {
                        last = Status::unavailable(format!(
                            "{addr} names node {} at {} the leader, which did not answer in time",
                            status.leader_id, status.leader_addr
                        ));
                    } else if best.as_ref().is_none_or(|(b, _)| status.term > b.term) {
                        // Not among the endpoints: reach it where it says.
                        let leader_addr = status.leader_addr.clone();
                        best = Some((status, leader_addr));
                        settle_by.get_or_insert(Instant::now() + SETTLE);
                    }
                }
                Err(s) if matches!(s.code(), Code::DeadlineExceeded | Code::Cancelled) => {
                    self.silent(&addr);
                    last = Status::unavailable(format!(
                        "{addr} did not answer within {:?}",
                        self.timing.probe
                    ));
                }
                Err(s) if lost_connection(&s) => {
                    last = Status::unavailable(format!("{addr}: {}", s.message()));
                }
                // A refusal that is not about reachability (bad
                // credentials, say): what the caller sees if no other
                // endpoint does better.
                Err(s) => refused = Some(s),
            }
        }
        match best {
            Some((_, addr)) => Ok(addr),
            // Nothing to retry: every endpoint is a removed node.
            None if removed == self.addrs.len() => Err(last),
            None if refused.is_some() => Err(refused.unwrap_or(last)),
            None if last.code() == Code::FailedPrecondition => {
                Err(Status::unavailable(last.message().to_string()))
            }
            None => Err(last),
        }
    }
}

/// Whether a node that says it leads has heard from a quorum lately (one
/// just elected has no figure yet).
fn has_quorum(status: &ClusterStatusResponse) -> bool {
    status
        .quorum_acked_ms_ago
        .is_none_or(|ms| Duration::from_millis(ms) < NO_QUORUM)
}

pub(crate) fn to_status(e: ClientError) -> Status {
    Status::invalid_argument(e.to_string())
}

/// A pause before the next round of attempts: `base` doubled `round` times
/// (at most `max`), then jittered to 50–100% so clients that failed together
/// do not retry together.
pub fn backoff(base: Duration, max: Duration, round: u32) -> Duration {
    let full = base.saturating_mul(1 << round.min(16)).min(max);
    full.mul_f64(rand::rng().random_range(0.5..=1.0))
}

/// Whether a call failed because its connection broke or never worked (the
/// node died, restarted or froze mid-call), not because a server answered.
/// The call may or may not have taken effect, as with any timeout.
/// UNAVAILABLE is always retried. tonic reports a broken
/// connection as UNKNOWN, CANCELLED or INTERNAL with the transport error (an
/// h2 protocol error, a reset, a closed stream) as the status's source; a
/// status a server sent has no source, so its message is never taken for
/// one (it may quote user data).
pub fn lost_connection(status: &Status) -> bool {
    use std::error::Error as _;
    status.code() == Code::Unavailable
        || matches!(
            status.code(),
            Code::Unknown | Code::Cancelled | Code::Internal | Code::DeadlineExceeded
        ) && status.source().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_are_a_fraction_of_the_budget() {
        let t = Timing::for_budget(Duration::from_secs(10));
        assert_eq!(t.probe, Duration::from_secs(1));
        assert_eq!(t.attempt, Duration::from_millis(1250));
        let t = Timing::for_budget(Duration::from_secs(1));
        assert_eq!(t.probe, Duration::from_millis(200));
        assert_eq!(t.attempt, Duration::from_millis(300));
    }

    #[test]
    fn backoff_grows_and_is_jittered_within_bounds() {
        let base = Duration::from_millis(50);
        let max = Duration::from_secs(1);
        for round in 0..20 {
            let full = (base * 2u32.pow(round.min(16))).min(max);
            let b = backoff(base, max, round);
            assert!(
                b <= full && b >= full / 2,
                "round {round}: {b:?} of {full:?}"
            );
        }
    }

    #[test]
    fn transport_failures_are_lost_connections_and_answers_are_not() {
        let broken = || -> Box<dyn std::error::Error + Send + Sync> {
            Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
        };
        let mut h2 = Status::from_error(broken());
        assert_eq!(h2.code(), Code::Unknown);
        for lost in [
            Status::unavailable("tcp connect error"),
            std::mem::replace(&mut h2, Status::ok("")),
            Status::from_error(broken()),
        ] {
            assert!(lost_connection(&lost), "{lost:?}");
        }
        // Sent by a server: no source, whatever the message says.
        for answer in [
            Status::failed_precondition("stale session"),
            Status::not_found("group \"g\" does not exist"),
            Status::unknown("h2 protocol error: error reading a body from connection"),
            Status::deadline_exceeded("no owner acknowledged key db-connection-1"),
            Status::internal("cannot encode the reply"),
        ] {
            assert!(!lost_connection(&answer), "{answer:?}");
        }
    }

    #[test]
    fn silent_endpoints_are_tried_last_and_forgotten_as_leader() {
        let e = Endpoints::new(
            &["127.0.0.1:1,127.0.0.1:2,127.0.0.1:3".to_string()],
            Transport::default(),
            Timing::for_budget(Duration::from_secs(1)),
        )
        .expect("valid endpoints");
        e.memory().leader = Some("127.0.0.1:1".into());
        e.silent("127.0.0.1:1");
        assert_eq!(e.leader(), None);
        assert_eq!(e.order(), ["127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:1"]);
        e.answered("127.0.0.1:1");
        assert!(!e.is_silent("127.0.0.1:1"));
    }
}
