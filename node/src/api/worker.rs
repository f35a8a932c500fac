//! The `Worker` service: sessions, keepalive streams, release and leave.
//!
//! The gate (`api::policy`) has checked that the caller may act for the
//! worker a call names, and forwarded it to the leader, before a handler
//! here runs; a keepalive stream is refused by the gate on any node but the
//! leader, and checks each of its messages against the caller it decided.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_proto::v1 as pb;
use baton_proto::v1::worker_server::Worker;
use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::{convert, not_leader};
use crate::cluster::leadership::Confirmations;
use crate::cluster::leases::{ended, Leases, Refusal, SessionKey};
use crate::cluster::load_reports::Report;
use crate::cluster::Leader;
use crate::domain::command::{Join, Leave, Release};
use crate::domain::SessionState;
use crate::domain::{quoted, validate, Command, Reply};
use crate::raft::{BatonRaft, NodeId};
use crate::security::access::Caller;
use crate::store::StateMachineStore;

pub struct WorkerApi {
    leader: Leader,
    sm: StateMachineStore,
    leases: Arc<Leases>,
    confirmations: Arc<Confirmations>,
    stopping: watch::Receiver<bool>,
}

/// What a keepalive stream needs to renew leases.
struct Renewals {
    id: NodeId,
    leases: Arc<Leases>,
    confirmations: Arc<Confirmations>,
    raft: BatonRaft,
    sm: StateMachineStore,
}

impl Renewals {
    /// Renews the lease `m` names, only once a quorum has confirmed, in a
    /// round that began after `m` arrived, that this node still leads (the
    /// safety argument is in `cluster/leadership.rs`). Leadership is checked on
    /// every message, not once per stream: a node that lost office ends the
    /// stream with the leader's address. A failed round, or a node that is
    /// still taking over the leases of its new term, is retried for a short
    /// while first, so one lost heartbeat does not end every worker's
    /// stream at once.
    /// Renews the session, and records the keepalive's load report once it
    /// has: a refused keepalive's figures are not kept.
    async fn renew(
        &self,
        m: pb::KeepAliveRequest,
        report: Report,
    ) -> Result<pb::KeepAliveResponse, Status> {
        let key = SessionKey {
            group: m.group,
            worker: m.worker,
        };
        let started = Instant::now();
        loop {
            let refusal = match self.confirmations.confirm().await {
                Some(term) => match self.renew_confirmed(&key, m.session, term) {
                    Ok(ttl) => {
                        self.leases.record_load(&key, m.session, report);
                        return Ok(pb::KeepAliveResponse {
                            session: m.session,
                            ttl_remaining_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
                        })
                    }
                    Err(Refusal::NotLeader) if self.current_term() == term => Status::unavailable(
                        "this node has just become the leader and is taking over the leases; retry in a moment",
                    ),
                    Err(Refusal::NotLeader) => return Err(self.not_leading()),
                    Err(Refusal::Unknown) => {
                        return Err(Status::not_found(format!(
                            "worker {} has no session {} in group {} (it left or expired); join again",
                            quoted(&key.worker), m.session, quoted(&key.group)
                        )))
                    }
                    Err(Refusal::Ended(reason)) => {
                        return Err(Status::failed_precondition(format!(
                            "the leader no longer renews worker {}'s session in group {}: {reason}",
                            quoted(&key.worker), quoted(&key.group)
                        )))
                    }
                },
                None => self.not_leading(),
            };
            let leading = self.raft.metrics().borrow().current_leader == Some(self.id);
            if !leading || started.elapsed() >= RENEW_PATIENCE {
                return Err(refusal);
            }
        }
    }

    /// Renews in the tracker of `term`, which a quorum just confirmed, after
    /// reading the committed facts that end a session: the tracker learns
    /// them only on the leader's next tick, and not at all before a new
    /// leader's first.
    fn renew_confirmed(
        &self,
        key: &SessionKey,
        session: u64,
        term: u64,
    ) -> Result<Duration, Refusal> {
        let committed = self.sm.read(|s| {
            let g = s.groups.get(&key.group)?;
            let current = g.sessions.get(&key.worker).filter(|c| c.id == session)?;
            let ended = if g.deleting {
                Some(ended::DELETING)
            } else if current.state == SessionState::Evicting {
                Some(ended::EVICTED)
            } else {
                None
            };
            Some((current.ttl_ms, ended))
        });
        if let Some((_, Some(reason))) = committed {
            self.leases.end(key, reason.to_string());
        }
        let renewed = self.leases.renew(key, session, term);
        match (renewed, committed) {
            // The tracker is a cache of the applied sessions and may lag
            // a join that was just applied: adopt it from the state.
            (Err(Refusal::Unknown), Some((ttl, _))) => {
                self.leases
                    .add(key.clone(), session, Duration::from_millis(ttl));
                self.leases.renew(key, session, term)
            }
            (renewed, _) => renewed,
        }
    }

    fn current_term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    fn not_leading(&self) -> Status {
        let metrics = self.raft.metrics().borrow().clone();
        let known = Leader::known_leader(&metrics).filter(|(id, _)| *id != self.id);
        if known.is_none() && metrics.current_leader == Some(self.id) {
            return Status::unavailable(
                "this node could not confirm with a majority of voters that it still leads (it may be cut off from them); reconnect to another node",
            );
        }
        not_leader(known)
    }
}

/// How long a keepalive may wait for a confirmed renewal (failed rounds
/// retried) before the stream is refused. The SDK counts its lease from the
/// send time, so waiting costs it nothing but this bound.
const RENEW_PATIENCE: Duration = Duration::from_millis(500);

impl WorkerApi {
    pub fn new(leader: Leader, leases: Arc<Leases>, stopping: watch::Receiver<bool>) -> Self {
        let confirmations = Confirmations::start(leader.raft().clone(), stopping.clone());
        Self {
            sm: leader.state_machine().clone(),
            leader,
            leases,
            confirmations,
            stopping,
        }
    }
}

impl WorkerApi {
    /// A worker id with a live session cannot join again until that session
    /// ends: two processes would otherwise act under one id. Says which
    /// session stands in the way and when its lease runs out.
    fn refuse_while_alive(&self, group: &str, worker: &str) -> Result<(), Status> {
        let Some(older) = self
            .sm
            .read(|s| Some(s.groups.get(group)?.sessions.get(worker)?.id))
        else {
            return Ok(());
        };
        let key = SessionKey {
            group: group.to_string(),
            worker: worker.to_string(),
        };
        let when = match self.leases.standing(&key) {
            Some((session, left, ended)) if session == older => match ended {
                Some(reason) => format!(
                    "it is no longer renewed ({reason}) and expires in {} ms",
                    left.as_millis()
                ),
                None => format!(
                    "its lease runs out in {} ms unless that process keeps it alive",
                    left.as_millis()
                ),
            },
            _ => "its lease runs out at most one TTL after its last keepalive".to_string(),
        };
        Err(Status::already_exists(format!(
            "worker {} already has session {older} in group {}; {when}. Join again once it has left or expired, or use another worker id",
            quoted(worker),
            quoted(group)
        )))
    }

    /// Refuses, before anything is proposed, a call for a session that is
    /// not the worker's current one on this (leading) node. Applying the
    /// command checks again: the state may change before it commits.
    fn check_session(
        &self,
        group: &str,
        worker: &str,
        session: u64,
        consequence: &str,
    ) -> Result<(), Status> {
        // This node's applied state may lag what earlier leaders committed,
        // and session ids (join revisions) only grow: refuse here only a
        // session older than the one seen, or none at all; anything else
        // is for apply to decide.
        self.sm
            .read(|s| {
                let g = s.groups.get(group)?;
                let current = g.sessions.get(worker)?;
                (current.id > session || session == 0).then(|| {
                    crate::domain::same_session(group, worker, current, session, consequence)
                })
            })
            .unwrap_or(Ok(()))
            .map_err(|e| super::domain_error(&e))
    }
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<pb::KeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Worker for WorkerApi {
    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let r = request.into_inner();
        self.refuse_while_alive(&r.group, &r.worker)?;
        let command = Command::Join(Join {
            group: r.group.clone(),
            worker: r.worker.clone(),
            ttl_ms: r.ttl_ms,
            weight: r.weight.unwrap_or(1),
            labels: r.labels.into_iter().collect(),
        });
        let committed = self.leader.propose(command).await?;
        let Reply::Joined { session, granted } = committed.reply else {
            return Err(Status::internal("unexpected reply to a join"));
        };
        let ttl_ms = self
            .leader
            .read(true, |s| {
                s.groups
                    .get(&r.group)
                    .and_then(|g| g.sessions.get(&r.worker))
                    .map(|s| s.ttl_ms)
            })
            .await?
            .unwrap_or_default();
        let key = SessionKey {
            group: r.group,
            worker: r.worker,
        };
        self.leases.add(key, session, Duration::from_millis(ttl_ms));
        Ok(Response::new(pb::JoinResponse {
            session,
            ttl_ms,
            granted: convert::ranges(&granted),
            token: committed.revision,
            revision: committed.revision,
        }))
    }

    type KeepAliveStream = KeepAliveStream;

    async fn keep_alive(
        &self,
        request: Request<Streaming<pb::KeepAliveRequest>>,
    ) -> Result<Response<Self::KeepAliveStream>, Status> {
        // Keepalives are answered only by the leader; elsewhere the gate has
        // refused the stream with the leader's address, and the worker
        // reconnects there. It also decided whom the caller may act for.
        let caller = request
            .extensions()
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| {
                Status::internal(
                    "no caller was decided for this stream (the policy gate is missing)",
                )
            })?;
        let renewals = Renewals {
            id: self.leader.id(),
            leases: self.leases.clone(),
            confirmations: self.confirmations.clone(),
            raft: self.leader.raft().clone(),
            sm: self.sm.clone(),
        };
        let mut stopping = self.stopping.clone();
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    m = inbound.next() => Some(m),
                    _ = stopping.wait_for(|s| *s) => None,
                };
                let Some(message) = message else {
                    let shutting_down = Status::unavailable(
                        "this node is shutting down; reconnect to another node",
                    );
                    let _ = tx.send(Err(shutting_down)).await;
                    return;
                };
                let Some(Ok(m)) = message else { return };
                if let Err(e) =
                    validate::group_name(&m.group).and_then(|()| validate::worker_id(&m.worker))
                {
                    let _ = tx.send(Err(super::domain_error(&e))).await;
                    return;
                }
                if let Err(refused) = caller.may_act_as(&m.worker) {
                    let _ = tx.send(Err(refused)).await;
                    return;
                }
                let report = match convert::load_report(&m) {
                    Ok(report) => report,
                    Err(invalid) => {
                        let _ = tx.send(Err(invalid)).await;
                        return;
                    }
                };
                let reply = tokio::select! {
                    reply = renewals.renew(m, report) => reply,
                    _ = stopping.wait_for(|s| *s) => continue,
                };
                let last = reply.is_err();
                if tx.send(reply).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let r = request.into_inner();
        let partitions = convert::ranges_from("partitions", &r.partitions)?;
        self.check_session(&r.group, &r.worker, r.session, "nothing released")?;
        let command = Command::Release(Release {
            group: r.group,
            worker: r.worker,
            session: r.session,
            partitions,
            token: r.token,
        });
        let committed = self.leader.propose(command).await?;
        Ok(Response::new(pb::ReleaseResponse {
            revision: committed.revision,
        }))
    }

    async fn leave(
        &self,
        request: Request<pb::LeaveRequest>,
    ) -> Result<Response<pb::LeaveResponse>, Status> {
        let r = request.into_inner();
        self.check_session(&r.group, &r.worker, r.session, "nothing ended")?;
        let command = Command::Leave(Leave {
            group: r.group,
            worker: r.worker,
            session: Some(r.session),
            drain: r.drain,
        });
        let committed = self.leader.propose(command).await?;
        Ok(Response::new(pb::LeaveResponse {
            revision: committed.revision,
        }))
    }
}
