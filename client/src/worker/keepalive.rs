//! The keepalive loop: one stream per worker to the leader, following the
//! leader, extending the local lease with every acknowledgement.

use std::sync::Arc;
use std::time::Duration;

use baton_proto::v1 as pb;
use baton_proto::v1::worker_client::WorkerClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use super::clock::Stamp;
use super::Shared;
use crate::endpoints::{backoff, Endpoints, Timing};

/// Keeps the lease of session `epoch` alive on one stream to the leader,
/// following the leader, until the lease is lost or the task is aborted.
///
/// A keepalive unanswered for an eighth of the TTL (at most 0.5 s) makes
/// the loop probe the leader: one that still answers as a leader with a quorum (a slow link, a
/// slow round) is waited for, up to half the TTL; one that does not (frozen,
/// cut off, deposed) is left for the leader the endpoints name, which a
/// majority elects within about a second. The lease counts from the send
/// time of the last acknowledged keepalive, so a worker listing every
/// endpoint keeps its partitions through a leader freeze when the new leader
/// is elected within about half the TTL.
pub async fn keep_alive(shared: Arc<Shared>, epoch: u64, session: u64) {
    let message = pb::KeepAliveRequest {
        group: shared.group.clone(),
        worker: shared.id.clone(),
        session,
        ..Default::default()
    };
    let ttl = shared.rules().ttl;
    // A keepalive is answered within a quorum round or two; past this the
    // leader is probed (and skipped if it does not answer within as long).
    let patience = (ttl / 8).clamp(Duration::from_millis(100), Duration::from_millis(500));
    // The lease runs out 0.89 TTL after the last acknowledged keepalive was
    // sent, which may be an interval before the leader froze; what is left
    // must cover two patiences, an election (about a second) and the move:
    // every TTL/4 from a TTL of about 4 s up, every TTL/6 below.
    let interval = (ttl / 4).min((ttl / 6).max(ttl.saturating_sub(Duration::from_secs(3))));
    let timing = Timing {
        probe: patience,
        attempt: patience,
    };
    let Ok(endpoints) = Endpoints::new(&shared.endpoints, shared.transport.clone(), timing) else {
        return;
    };
    let mut round = 0;
    let pause = |round: u32| backoff(Duration::from_millis(20), Duration::from_millis(200), round);
    while shared.lease.valid(epoch) {
        let (addr, channel) = match endpoints.find_leader().await {
            Ok(found) => found,
            Err(_) => {
                tokio::time::sleep(pause(round)).await;
                round += 1;
                continue;
            }
        };
        let (requests, rx) = mpsc::channel(1);
        // Queue the first keepalive before awaiting the call: a streaming
        // call may not complete until its request stream yields something.
        let mut sent = Stamp::now();
        if requests.send(shared.with_load(&message)).await.is_err() {
            return;
        }
        let called = tokio::time::timeout(
            interval,
            WorkerClient::new(channel).keep_alive(ReceiverStream::new(rx)),
        )
        .await;
        let mut replies = match called {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(s)) if ends_lease(&shared, epoch, s.code()) => return,
            Ok(Err(_)) => {
                endpoints.forget_leader();
                tokio::time::sleep(pause(round)).await;
                round += 1;
                continue;
            }
            Err(_) => {
                endpoints.forget_leader();
                continue;
            }
        };
        loop {
            let mut waited = Duration::ZERO;
            let reply = loop {
                match tokio::time::timeout(patience, replies.message()).await {
                    Ok(reply) => break Some(reply),
                    Err(_) => {
                        waited += patience;
                        if waited >= shared.rules().ttl / 2 || !endpoints.still_leads(&addr).await {
                            break None;
                        }
                    }
                }
            };
            match reply.ok_or(()) {
                Ok(Ok(Some(_))) => {
                    let deadline = shared.rules().deadline(sent);
                    if !shared.lease.acknowledged(epoch, sent, deadline) {
                        return;
                    }
                    endpoints.answered(&addr);
                    round = 0;
                }
                Ok(Err(s)) if ends_lease(&shared, epoch, s.code()) => return,
                // Unanswered and no longer leading (frozen, cut off, a
                // socket that never answers), ended or refused.
                Err(()) | Ok(Ok(None)) | Ok(Err(_)) => {
                    endpoints.forget_leader();
                    break;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = shared.lease.lost(epoch) => return,
            }
            sent = Stamp::now();
            if requests.send(shared.with_load(&message)).await.is_err() {
                break;
            }
        }
    }
}

/// Ends the lease of `epoch` if the server's answer says it will not be
/// renewed; returns whether it did.
fn ends_lease(shared: &Shared, epoch: u64, code: Code) -> bool {
    match code {
        // No such session (it left or expired): nothing is left to end.
        Code::NotFound => shared.lease.gone(epoch),
        // Still there, but no longer renewed (evicted, or a handoff timed
        // out): it runs out on the server's clock, and the application's
        // margin still counts from now.
        Code::FailedPrecondition => shared.lease.lose(epoch),
        _ => return false,
    }
    true
}
