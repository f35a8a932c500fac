//! The worker's background tasks: join (again after a lost lease), keep the
//! lease alive on one stream to the leader, turn the watch stream into
//! events, and acknowledge tombstones.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_proto::v1 as pb;
use baton_proto::v1::admin_client::AdminClient as AdminGrpc;
use baton_proto::v1::tombstones_client::TombstonesClient;
use baton_proto::v1::worker_client::WorkerClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use super::holdings::{Change, Ending};
use super::{Grant, Shared, WorkerError, WorkerEvent};
use crate::admin::AdminClient;
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
        let sent = Instant::now();
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
    *shared.session.lock().unwrap_or_else(|p| p.into_inner()) = (epoch, reply.session);
    shared.holdings().clear();
    Ok(Joined {
        epoch,
        session: reply.session,
        revision: reply.token,
        granted: reply.granted,
    })
}

/// How one session ended.
enum End {
    /// Left the group (shutdown or an operator's drain) or the group is gone.
    Finished,
    /// The lease is lost: join again.
    Lost,
    /// The application dropped its event stream.
    Abandoned,
}

/// Serves sessions one after the other until the worker leaves the group.
pub async fn run(shared: Arc<Shared>, settings: JoinSettings, first: Joined, tx: Sender) {
    let mut joined = first;
    loop {
        let epoch = joined.epoch;
        let keepalive = tokio::spawn(keep_alive(shared.clone(), epoch, joined.session));
        let end = serve(&shared, &joined, &tx).await;
        keepalive.abort();
        match end {
            End::Finished | End::Abandoned => break,
            End::Lost => {
                shared.lease.lose(epoch);
                if tx.send((epoch, WorkerEvent::LeaseLost)).await.is_err() {
                    break;
                }
                if shared.shutting_down.load(Ordering::SeqCst) {
                    break;
                }
                // The session may still be alive on the server: end it so its
                // partitions move now (this worker has stopped them).
                let _ = shared.leave(false).await;
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
            }
        }
    }
    shared.finished.send_replace(true);
}

/// Turns one session's watch stream into events until the session ends.
async fn serve(shared: &Arc<Shared>, joined: &Joined, tx: &Sender) -> End {
    let epoch = joined.epoch;
    let granted = from_proto(&joined.granted);
    let first = shared.holdings().grant(&granted, joined.revision);
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
            return End::Lost;
        }
    };
    loop {
        let next = tokio::select! {
            () = shared.lease.lost(epoch) => return End::Lost,
            next = watch.next() => next,
        };
        let mut reopen = false;
        let changes = match next {
            Ok(message) => {
                position = message.revision;
                let mut holdings = shared.holdings();
                message
                    .events
                    .iter()
                    .flat_map(|e| holdings.apply(e))
                    .collect::<Vec<_>>()
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
                    return End::Lost;
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
            deadline: Instant::now()
                + Duration::from_millis(shared.handoff_timeout_ms.load(Ordering::Relaxed)),
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
                Ending::Expired => End::Lost,
                Ending::GroupDeleted => {
                    shared.lease.lose(epoch);
                    let _ = tx.send((epoch, WorkerEvent::LeaseLost)).await;
                    End::Finished
                }
            });
        }
    };
    if tx.send((epoch, event)).await.is_err() {
        return Some(End::Abandoned);
    }
    None
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
    let mut changes = shared.holdings().reconcile(&listing, session);
    let held = shared.holdings().held();
    let mut tombstones = Vec::new();
    for range in &held {
        let list = admin
            .call(|ch| {
                let request = pb::ListTombstonesRequest {
                    group: shared.group.clone(),
                    partitions: to_proto(std::slice::from_ref(range)).pop(),
                    limit: 0,
                    serializable: false,
                };
                async move { TombstonesClient::new(ch).list(request).await }
            })
            .await?;
        tombstones.extend(
            list.tombstones
                .into_iter()
                .filter(|t| t.revision > position && t.revision <= listing.revision),
        );
    }
    tombstones.sort_by_key(|t| t.revision);
    changes.extend(tombstones.into_iter().map(|t| Change::Tombstone {
        key: t.key,
        partition: t.partition,
        revision: t.revision,
    }));
    Ok((listing.revision, changes))
}

/// Keeps the lease of session `epoch` alive on one stream to the leader,
/// following the leader, until the lease is lost or the task is aborted.
async fn keep_alive(shared: Arc<Shared>, epoch: u64, session: u64) {
    let message = pb::KeepAliveRequest {
        group: shared.group.clone(),
        worker: shared.id.clone(),
        session,
    };
    let Ok(admin) = AdminClient::new(&shared.endpoints, Duration::from_secs(1)) else {
        return;
    };
    let mut admin = admin.with_transport(shared.transport.clone());
    let interval = shared.rules().ttl / 4;
    let mut pause = Duration::from_millis(20);
    while shared.lease.valid(epoch) {
        let addr = match admin.leader_addr().await {
            Ok(a) => a,
            Err(_) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
                continue;
            }
        };
        let Ok(endpoint) = shared.transport.endpoint(&addr) else {
            admin.forget_leader();
            continue;
        };
        let channel = shared.transport.wrap(endpoint.connect_lazy());
        let (requests, rx) = mpsc::channel(1);
        // Queue the first keepalive before awaiting the call: a streaming
        // call may not complete until its request stream yields something.
        let mut sent = Instant::now();
        if requests.send(message.clone()).await.is_err() {
            return;
        }
        let called = tokio::time::timeout(
            interval,
            WorkerClient::new(channel).keep_alive(ReceiverStream::new(rx)),
        )
        .await;
        let mut replies = match called {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(s)) if ends_session(s.code()) => {
                shared.lease.lose(epoch);
                return;
            }
            Ok(Err(_)) | Err(_) => {
                admin.forget_leader();
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
                continue;
            }
        };
        loop {
            match tokio::time::timeout(interval, replies.message()).await {
                Ok(Ok(Some(_))) => {
                    let deadline = shared.rules().deadline(sent);
                    if !shared.lease.acknowledged(epoch, sent, deadline) {
                        return;
                    }
                    pause = Duration::from_millis(20);
                }
                Ok(Err(s)) if ends_session(s.code()) => {
                    shared.lease.lose(epoch);
                    return;
                }
                // Ended, refused (not the leader any more) or silent.
                Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
                    admin.forget_leader();
                    break;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = shared.lease.lost(epoch) => return,
            }
            sent = Instant::now();
            if requests.send(message.clone()).await.is_err() {
                break;
            }
        }
    }
}

/// The server says the session is gone (expired, evicted, left).
fn ends_session(code: Code) -> bool {
    matches!(code, Code::NotFound | Code::FailedPrecondition)
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
