//! The `Worker` service: sessions, keepalive streams, release and leave.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use baton_proto::v1 as pb;
use baton_proto::v1::worker_client::WorkerClient;
use baton_proto::v1::worker_server::Worker;
use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::access::Access;
use super::leader::Leader;
use super::{convert, not_leader};
use crate::domain::{validate, Command, Reply};
use crate::leases::{Leases, Refusal, SessionKey};
use crate::on_leader;
use crate::store::StateMachineStore;

pub struct WorkerApi {
    access: Arc<Access>,
    leader: Leader,
    sm: StateMachineStore,
    leases: Arc<Leases>,
    stopping: watch::Receiver<bool>,
}

impl WorkerApi {
    pub fn new(
        access: Arc<Access>,
        leader: Leader,
        sm: StateMachineStore,
        leases: Arc<Leases>,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        Self {
            access,
            leader,
            sm,
            leases,
            stopping,
        }
    }
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<pb::KeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Worker for WorkerApi {
    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        self.access.worker(&request, &request.get_ref().worker)?;
        on_leader!(self.leader, request, WorkerClient::join, ());
        let r = request.into_inner();
        let command = Command::Join {
            group: r.group.clone(),
            worker: r.worker.clone(),
            ttl_ms: r.ttl_ms,
            weight: r.weight.unwrap_or(1),
            labels: r.labels.into_iter().collect(),
            now_ms: super::leader::now_ms(),
        };
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
        }))
    }

    type KeepAliveStream = KeepAliveStream;

    async fn keep_alive(
        &self,
        request: Request<Streaming<pb::KeepAliveRequest>>,
    ) -> Result<Response<Self::KeepAliveStream>, Status> {
        // Keepalives are answered only by the leader; elsewhere the stream is
        // refused with the leader's address, and the worker reconnects there.
        let metrics = self.leader.metrics();
        if metrics.current_leader != Some(self.leader.id()) {
            return Err(not_leader(Leader::known_leader(&metrics)));
        }
        let caller = self.access.caller(&request);
        let leases = self.leases.clone();
        let raft = self.leader.raft().clone();
        let sm = self.sm.clone();
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
                let key = SessionKey {
                    group: m.group,
                    worker: m.worker,
                };
                let mut renewed = leases.renew(&key, m.session);
                if renewed == Err(Refusal::Unknown) {
                    // The tracker is a cache of the applied sessions and may lag
                    // a join that was just applied: adopt it from the state.
                    let ttl = sm.read(|s| {
                        let session = s.groups.get(&key.group)?.sessions.get(&key.worker)?;
                        (session.id == m.session).then_some(session.ttl_ms)
                    });
                    if let Some(ttl) = ttl {
                        leases.add(key.clone(), m.session, Duration::from_millis(ttl));
                        renewed = leases.renew(&key, m.session);
                    }
                }
                let reply = match renewed {
                    Ok(ttl) => Ok(pb::KeepAliveResponse {
                        session: m.session,
                        ttl_remaining_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
                    }),
                    Err(Refusal::NotLeader) => {
                        let metrics = raft.metrics().borrow().clone();
                        Err(not_leader(Leader::known_leader(&metrics)))
                    }
                    Err(Refusal::Unknown) => Err(Status::not_found(format!(
                        "worker {:?} has no session {} in group {:?} (it left or expired); join again",
                        key.worker, m.session, key.group
                    ))),
                    Err(Refusal::Ended(reason)) => Err(Status::failed_precondition(format!(
                        "the leader no longer renews worker {:?}'s session in group {:?}: {reason}",
                        key.worker, key.group
                    ))),
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
        self.access.worker(&request, &request.get_ref().worker)?;
        on_leader!(self.leader, request, WorkerClient::release, ());
        let r = request.into_inner();
        let partitions = convert::ranges_from("partitions", &r.partitions)?;
        let command = Command::Release {
            group: r.group,
            worker: r.worker,
            partitions,
            token: r.token,
        };
        let committed = self.leader.propose(command).await?;
        Ok(Response::new(pb::ReleaseResponse {
            revision: committed.revision,
        }))
    }

    async fn leave(
        &self,
        request: Request<pb::LeaveRequest>,
    ) -> Result<Response<pb::LeaveResponse>, Status> {
        self.access.worker(&request, &request.get_ref().worker)?;
        on_leader!(self.leader, request, WorkerClient::leave, ());
        let r = request.into_inner();
        let command = Command::Leave {
            group: r.group,
            worker: r.worker,
            drain: r.drain,
        };
        let committed = self.leader.propose(command).await?;
        Ok(Response::new(pb::LeaveResponse {
            revision: committed.revision,
        }))
    }
}
