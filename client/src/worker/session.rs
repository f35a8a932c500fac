//! The worker's background tasks: join (again after a lost lease), turn the
//! watch stream into events, and acknowledge tombstones (the keepalive loop
//! is in `keepalive.rs`).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_proto::v1 as pb;
use baton_proto::v1::admin_client::AdminClient as AdminGrpc;
use baton_proto::v1::tombstones_client::TombstonesClient;
use baton_proto::v1::worker_client::WorkerClient;
use tokio::sync::mpsc;
use tonic::Code;

use super::clock::Stamp;
use super::holdings::{Change, Ending};
use super::{Grant, HoldEnd, Shared, WorkerError, WorkerEvent};
use crate::partitions::{from_proto, to_proto};
use crate::watch::{compacted_revision, Watch};
use crate::ClientError;

pub struct JoinSettings {
    pub ttl: Option<Duration>,
    pub explicit_margin: Option<Duration>,
    pub weight: Option<u32>,
    pub labels: BTreeMap<String, String>,
    pub patience: Duration,
}

/// A session just joined.
pub struct Joined {
    epoch: u64,
    session: u64,
    /// The join's revision: the watch starts after it.
    revision: u64,
    granted: Vec<pb::PartitionRange>,
}

type Sender = mpsc::Sender<(u64, WorkerEvent)>;

/// Joins as session `epoch`; waits out a previous session of the same id
/// (a restarted worker) up to the patience.
pub async fn join(
    shared: &Arc<Shared>,
    settings: &JoinSettings,
    epoch: u64,
) -> Result<Joined, WorkerError> {
    let request = pb::JoinRequest {
        group: shared.group.clone(),
        worker: shared.id.clone(),
        ttl_ms: settings
            .ttl
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        weight: settings.weight,
        labels: settings.labels.clone().into_iter().collect(),
    };
    let started = Instant::now();
    let (sent, reply) = loop {
        let sent = Stamp::now();
        let result = shared
            .admin
            .lock()
            .await
            .call(|ch| {
                let request = request.clone();
                async move { WorkerClient::new(ch).join(request).await }
            })
            .await;
        match result {
            Ok(reply) => break (sent, reply),
            Err(e) if e.code() == Some(Code::AlreadyExists) => {
                if started.elapsed() > settings.patience {
                    return Err(WorkerError::IdInUse {
                        worker: shared.id.clone(),
                        group: shared.group.clone(),
                        waited: started.elapsed(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let group = shared
        .admin
        .lock()
        .await
        .call(|ch| {
            let request = pb::GetGroupRequest {
                group: shared.group.clone(),
                serializable: true,
            };
            async move { AdminGrpc::new(ch).get_group(request).await }
        })
        .await?;
    if let Some(ms) = group
        .group
        .and_then(|g| g.config)
        .and_then(|c| c.handoff_timeout_ms)
    {
        shared.handoff_timeout_ms.store(ms, Ordering::Relaxed);
    }
    let rules = {
        let mut rules = shared.rules.lock().unwrap_or_else(|p| p.into_inner());
        rules.ttl = Duration::from_millis(reply.ttl_ms);
        rules.margin = settings.explicit_margin.unwrap_or(rules.ttl / 10);
        *rules
    };
    // The leader started the lease when it applied the join, after `sent`.
    shared.lease.begin(epoch, rules.deadline(sent));
    shared.change_holdings(|_| HoldEnd::SessionEnded, |h| h.begin(epoch, reply.session));
    Ok(Joined {
        epoch,
        session: reply.session,
        revision: reply.revision,
        granted: reply.granted,
    })
}

/// How one session ended.
enum End {
    /// Left the group (shutdown or an operator's drain) or the group is gone.
    Finished,
    /// The lease is lost: join again. `gone`: the server has already ended
    /// the session (nothing is left to protect by waiting).
    Lost { gone: bool },
    /// The application dropped its event stream.
    Abandoned,
}

/// Serves sessions one after the other until the worker leaves the group.
pub async fn run(shared: Arc<Shared>, settings: JoinSettings, first: Joined, tx: Sender) {
    let mut joined = first;
    loop {
        let epoch = joined.epoch;
        let keepalive = tokio::spawn(super::keepalive::keep_alive(
            shared.clone(),
            epoch,
            joined.session,
        ));
        let end = serve(&shared, &joined, &tx).await;
        keepalive.abort();
        match end {
            End::Finished | End::Abandoned => break,
            End::Lost { gone } => {
                shared.lose_lease(epoch, HoldEnd::LeaseLost);
                let unreleased = shared.holdings().held();
                // The application learns of the loss from the lease itself
                // (`Events::next` checks it first), so an event that does
                // not fit behind what it has not read yet is not missed.
                let _ = tx.try_send((epoch, WorkerEvent::LeaseLost));
                // Not at once: the next owner must not be granted these
                // partitions within the margin the application was promised.
                shared.end_lost_session(epoch, joined.session, gone).await;
                if shared.shutting_down.load(Ordering::SeqCst) {
                    *shared
                        .lost_in_shutdown
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = Some(unreleased);
                    break;
                }
                if tx.is_closed() {
                    break;
                }
                let mut pause = Duration::from_millis(100);
                joined = loop {
                    if shared.shutting_down.load(Ordering::SeqCst) || tx.is_closed() {
                        shared.finished.send_replace(true);
                        return;
                    }
                    match join(&shared, &settings, epoch + 1).await {
                        Ok(j) => break j,
                        Err(e) => {
                            tracing::warn!("joining again after a lost lease: {e}");
                            tokio::time::sleep(pause).await;
                            pause = (pause * 2).min(Duration::from_secs(5));
                        }
                    }
                };
                if shared.shutting_down.load(Ordering::SeqCst) {
                    // A shutdown began while joining: the new session has
                    // shown the application nothing, so it ends at once.
                    let _ = shared.leave(joined.session, false).await;
                    break;
                }
            }
        }
    }
    shared.finished.send_replace(true);
}

/// Turns one session's watch stream into events until the session ends.
async fn serve(shared: &Arc<Shared>, joined: &Joined, tx: &Sender) -> End {
    let epoch = joined.epoch;
    let granted = from_proto(&joined.granted);
    let first = shared.change_holdings(
        |_| HoldEnd::Released,
        |h| h.grant(&granted, joined.revision),
    );
    if let Some(change) = first {
        if let Some(end) = deliver(shared, epoch, change, tx).await {
            return end;
        }
    }
    let mut position = joined.revision;
    let mut watch = match open_watch(shared, position) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("cannot watch: {e}");
            return End::Lost { gone: false };
        }
    };
    loop {
        let next = tokio::select! {
            () = shared.lease.lost(epoch) => return lost(shared),
            next = watch.next() => next,
        };
        let mut reopen = false;
        let changes = match next {
            Ok(message) => {
                position = message.revision;
                shared.change_holdings(
                    |c: &Vec<Change>| cause_of(c),
                    |h| {
                        message
                            .events
                            .iter()
                            .flat_map(|e| h.apply(e))
                            .collect::<Vec<_>>()
                    },
                )
            }
            Err(ClientError::Status(s)) if compacted_revision(&s).is_some() => {
                match reconcile(shared, joined.session, position).await {
                    Ok((at, changes)) => {
                        position = at;
                        reopen = true;
                        changes
                    }
                    Err(e) => {
                        tracing::warn!("re-listing after a compacted watch: {e}");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        Vec::new()
                    }
                }
            }
            Err(e) => {
                // No node served the watch for a long while; keep trying
                // (the lease decides whether the worker may go on).
                tracing::warn!("watch: {e}");
                Vec::new()
            }
        };
        if reopen {
            match open_watch(shared, position) {
                Ok(w) => watch = w,
                Err(e) => {
                    tracing::warn!("cannot watch: {e}");
                    return End::Lost { gone: false };
                }
            }
        }
        for change in changes {
            if let Some(end) = deliver(shared, epoch, change, tx).await {
                return end;
            }
        }
    }
}

/// How a lost lease ended the session.
fn lost(shared: &Shared) -> End {
    End::Lost {
        gone: shared.lease.state().gone,
    }
}

/// Why what these changes took away stopped being held.
fn cause_of(changes: &[Change]) -> HoldEnd {
    if changes.iter().any(|c| matches!(c, Change::Ended { .. })) {
        HoldEnd::SessionEnded
    } else if changes
        .iter()
        .any(|c| matches!(c, Change::Resharded { .. }))
    {
        HoldEnd::Resharded
    } else {
        HoldEnd::Released
    }
}

fn open_watch(shared: &Shared, position: u64) -> Result<Watch, ClientError> {
    let request = pb::WatchRequest {
        group: shared.group.clone(),
        from_revision: position + 1,
        worker: shared.id.clone(),
        kinds: Vec::new(),
    };
    // The lease, not the watch, decides when to give up.
    Ok(Watch::new(
        &shared.endpoints,
        request,
        Duration::from_secs(365 * 86_400),
    )?
    .with_transport(shared.transport.clone()))
}

/// Sends one change to the application; `Some` when it ends the session.
async fn deliver(shared: &Arc<Shared>, epoch: u64, change: Change, tx: &Sender) -> Option<End> {
    let event = match change {
        Change::Assigned { partitions, token } => WorkerEvent::Assigned(Grant {
            partitions,
            token,
            epoch,
            shared: shared.clone(),
        }),
        Change::Revoked {
            partitions,
            revision,
        } => WorkerEvent::Revoked {
            partitions,
            deadline: {
                let timeout =
                    Duration::from_millis(shared.handoff_timeout_ms.load(Ordering::Relaxed));
                // The timeout comes from the server: a nonsense one must
                // not panic the worker.
                let now = Instant::now();
                now.checked_add(timeout)
                    .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365))
            },
            revision,
        },
        Change::Tombstone {
            key,
            partition,
            revision,
        } => WorkerEvent::Tombstone {
            key,
            partition,
            revision,
        },
        Change::Resharded {
            partitions,
            revision,
        } => WorkerEvent::Resharded {
            partitions,
            revision,
        },
        Change::HandoffTimeout { ms } => {
            shared.handoff_timeout_ms.store(ms, Ordering::Relaxed);
            return None;
        }
        Change::Ended { reason, .. } => {
            return Some(match reason {
                Ending::Left => End::Finished,
                // The server expired or evicted it: already gone there.
                Ending::Expired => End::Lost { gone: true },
                Ending::GroupDeleted => {
                    shared.lose_lease(epoch, HoldEnd::SessionEnded);
                    let _ = tx.try_send((epoch, WorkerEvent::LeaseLost));
                    End::Finished
                }
            });
        }
    };
    // An application that stops reading must not keep the session task
    // from seeing the lease end (and closing the session after the margin).
    tokio::select! {
        sent = tx.send((epoch, event)) => sent.is_err().then_some(End::Abandoned),
        () = shared.lease.lost(epoch) => Some(lost(shared)),
    }
}

/// After the watch history was compacted past `position`: what changed,
/// from a fresh listing, and tombstones put on held partitions since.
async fn reconcile(
    shared: &Arc<Shared>,
    session: u64,
    position: u64,
) -> Result<(u64, Vec<Change>), ClientError> {
    let mut admin = shared.admin.lock().await;
    let listing = admin
        .call(|ch| {
            let request = pb::GetAssignmentRequest {
                group: shared.group.clone(),
                serializable: false,
            };
            async move { AdminGrpc::new(ch).get_assignment(request).await }
        })
        .await?;
    let mut changes = shared.change_holdings(
        |c: &Vec<Change>| cause_of(c),
        |h| h.reconcile(&listing, session),
    );
    let held = shared.holdings().held();
    let mut tombstones = Vec::new();
    for range in &held {
        // Every page, or the barrier would count a deletion past the first
        // page as handled once a later revision is acknowledged.
        let mut after_key = String::new();
        loop {
            let page = admin
                .call(|ch| {
                    let request = pb::ListTombstonesRequest {
                        group: shared.group.clone(),
                        partitions: to_proto(std::slice::from_ref(range)).pop(),
                        limit: 0,
                        serializable: false,
                        after_key: after_key.clone(),
                    };
                    async move { TombstonesClient::new(ch).list(request).await }
                })
                .await?;
            // Later ones come from the watch, resumed at `listing.revision`.
            tombstones.extend(
                page.tombstones
                    .into_iter()
                    .filter(|t| t.revision > position && t.revision <= listing.revision),
            );
            if page.next_key.is_empty() {
                break;
            }
            if page.next_key <= after_key {
                return Err(ClientError::Status(tonic::Status::internal(
                    "a tombstone list page's next_key did not advance past the request's after_key",
                )));
            }
            after_key = page.next_key;
        }
    }
    tombstones.sort_by_key(|t| t.revision);
    changes.extend(tombstones.into_iter().map(|t| Change::Tombstone {
        key: t.key,
        partition: t.partition,
        revision: t.revision,
    }));
    Ok((listing.revision, changes))
}

/// Sends tombstone acknowledgements (the highest revision handled) to the
/// leader, for as long as the worker exists.
pub async fn acknowledge(shared: Arc<Shared>) {
    let mut acks = shared.acks.subscribe();
    let mut finished = shared.finished.subscribe();
    loop {
        tokio::select! {
            changed = acks.changed() => if changed.is_err() { return },
            _ = finished.wait_for(|f| *f) => return,
        }
        let (session, revision) = *acks.borrow_and_update();
        let request = pb::AckTombstonesRequest {
            group: shared.group.clone(),
            worker: shared.id.clone(),
            session,
            revision,
        };
        let result = shared
            .admin
            .lock()
            .await
            .call(|ch| {
                let request = request.clone();
                async move { TombstonesClient::new(ch).ack(request).await }
            })
            .await;
        if let Err(e) = result {
            tracing::warn!("acknowledging tombstones up to revision {revision}: {e}");
        }
    }
}
