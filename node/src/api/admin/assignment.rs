//! Assignment and workers: reading, planning and moving partitions, routing
//! a key, listing, draining and evicting workers.

use baton_proto::v1 as pb;
use tonic::Status;

use std::sync::Arc;

use crate::api::{convert, domain_error, group_not_found};
use crate::clock::now_ms;
use crate::cluster::leases::Leases;
use crate::cluster::load_reports;
use crate::cluster::Leader;
use crate::domain::command::{Evict, Leave, MovePartitions};
use crate::domain::{self, quoted, rebalancer, Change, Command, Locator};

pub struct Assignment {
    pub(super) leader: Leader,
    /// Where the load reports are (on the leader).
    pub(super) leases: Arc<Leases>,
}

impl Assignment {
    pub async fn get(&self, r: pb::GetAssignmentRequest) -> Result<pb::AssignmentResponse, Status> {
        let now = now_ms();
        let reports = self.leases.load_reports(&r.group);
        let reply = self
            .leader
            .read(r.serializable, |s| {
                let g = s.groups.get(&r.group)?;
                let mut reply = convert::assignment(&r.group, s.revision, g);
                let snapshot = load_reports::snapshot_of(g, &reports);
                let (planned, by_load) = rebalancer::round_for(s, &r.group, g, now, &snapshot);
                reply.load = Some(convert::load_picture(
                    &planned,
                    by_load,
                    !reports.is_empty(),
                ));
                Some(reply)
            })
            .await?;
        reply.ok_or_else(|| group_not_found(&r.group))
    }

    /// What the leader's duties would propose now: the load planner's round
    /// for a group balanced by load (from this node's load reports: the
    /// leader's, unless the read is serializable elsewhere), the count
    /// rules' plan otherwise.
    pub async fn plan(&self, r: pb::GetAssignmentRequest) -> Result<pb::PlanResponse, Status> {
        let now = now_ms();
        let reports = self.leases.load_reports(&r.group);
        let reply = self
            .leader
            .read(r.serializable, |s| {
                let g = s.groups.get(&r.group)?;
                let snapshot = load_reports::snapshot_of(g, &reports);
                let (planned, by_load) = rebalancer::round_for(s, &r.group, g, now, &snapshot);
                let mut reply = convert::plan(s.revision, &planned.plan);
                reply.load = Some(convert::load_picture(
                    &planned,
                    by_load,
                    !reports.is_empty(),
                ));
                Some(reply)
            })
            .await?;
        reply.ok_or_else(|| group_not_found(&r.group))
    }

    pub async fn move_partitions(
        &self,
        r: pb::MovePartitionsRequest,
    ) -> Result<pb::PlanResponse, Status> {
        let partitions = convert::ranges_from("partitions", &r.partitions)?;
        let command = Command::Move(MovePartitions {
            group: r.group.clone(),
            partitions,
            to: r.to,
        });
        let committed = self.leader.propose(command).await?;
        let plan = rebalancer::Plan::carried_out(&committed.events);
        Ok(convert::plan(committed.revision, &plan))
    }

    pub async fn route(&self, r: pb::RouteRequest) -> Result<pb::RouteResponse, Status> {
        let (locator, key) = match r.locator {
            Some(pb::route_request::Locator::Key(key)) => {
                domain::validate::key(&key).map_err(|e| domain_error(&e))?;
                (Locator::Key, key)
            }
            Some(pb::route_request::Locator::Hash(h)) => (Locator::Hash(h), String::new()),
            Some(pb::route_request::Locator::Partition(p)) => {
                (Locator::Partition(p), String::new())
            }
            None => {
                return Err(Status::invalid_argument(
                    "give a key, a hash key or a partition to route",
                ))
            }
        };
        let reply = self
            .leader
            .read_group(
                r.serializable,
                &r.group,
                |revision, g| -> Result<pb::RouteResponse, Status> {
                    let (partition, _) = g
                        .locate(&r.group, &key, &locator)
                        .map_err(|e| domain_error(&e))?;
                    let slot = g.assignment.slot(partition);
                    Ok(pb::RouteResponse {
                        revision,
                        partition,
                        owner: slot.owner.clone().unwrap_or_default(),
                        token: if slot.owner.is_some() { slot.token } else { 0 },
                        moving: slot.revoking.is_some(),
                        moving_to: slot
                            .revoking
                            .as_ref()
                            .and_then(|m| m.to.clone())
                            .unwrap_or_default(),
                    })
                },
            )
            .await??;
        Ok(reply)
    }

    pub async fn list_workers(
        &self,
        r: pb::ListWorkersRequest,
    ) -> Result<pb::ListWorkersResponse, Status> {
        let reply = self
            .leader
            .read_group(r.serializable, &r.group, |revision, g| {
                let workers = g
                    .sessions
                    .iter()
                    .map(|(id, session)| pb::WorkerInfo {
                        id: id.clone(),
                        session: session.id,
                        state: convert::session_state(session.state).into(),
                        weight: session.weight,
                        ttl_ms: session.ttl_ms,
                        labels: session.labels.clone().into_iter().collect(),
                        partitions: g.held_by(id).iter().map(domain::PartitionRange::len).sum(),
                    })
                    .collect();
                pb::ListWorkersResponse { revision, workers }
            })
            .await?;
        Ok(reply)
    }

    pub async fn drain_worker(&self, r: pb::WorkerRef) -> Result<pb::WorkerActionResponse, Status> {
        // An operator drains whichever session the worker has now.
        let command = Command::Leave(Leave {
            group: r.group,
            worker: r.worker.clone(),
            session: None,
            drain: true,
        });
        let committed = self.leader.propose(command).await?;
        let outcome = if committed
            .events
            .iter()
            .any(|e| matches!(e.change, Change::WorkerLeft { .. }))
        {
            format!("worker {} held nothing and has left", quoted(&r.worker))
        } else {
            format!(
                "worker {} is draining: its partitions are handed off, then its session closes",
                quoted(&r.worker)
            )
        };
        Ok(pb::WorkerActionResponse {
            revision: committed.revision,
            outcome,
        })
    }

    pub async fn evict_worker(&self, r: pb::WorkerRef) -> Result<pb::WorkerActionResponse, Status> {
        domain::validate::worker_id(&r.worker).map_err(|e| domain_error(&e))?;
        let ttl_ms = self
            .leader
            .read_group(true, &r.group, |_, g| {
                g.sessions.get(&r.worker).map(|session| session.ttl_ms)
            })
            .await?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "worker {} has no session in group {}",
                    quoted(&r.worker),
                    quoted(&r.group)
                ))
            })?;
        // Committed, so a new leader goes on refusing to renew the lease.
        let committed = self
            .leader
            .propose(Command::Evict(Evict {
                group: r.group.clone(),
                worker: r.worker.clone(),
            }))
            .await?;
        // From here every renewal reads the eviction from the applied state
        // (`api/worker.rs`), on this leader and any later one.
        tracing::info!(group = %r.group, worker = %r.worker, "worker evicted");
        let outcome = format!(
            "worker {} is evicting: the leader no longer renews its lease (a committed fact, kept across leader changes), so its session ends and its partitions move within {ttl_ms} ms",
            quoted(&r.worker)
        );
        let revision = committed.revision;
        Ok(pb::WorkerActionResponse { revision, outcome })
    }
}
