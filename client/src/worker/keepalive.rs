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
use crate::admin::AdminClient;

/// Keeps the lease of session `epoch` alive on one stream to the leader,
/// following the leader, until the lease is lost or the task is aborted.
pub async fn keep_alive(shared: Arc<Shared>, epoch: u64, session: u64) {
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
        let mut sent = Stamp::now();
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
            Ok(Err(s)) if ends_lease(&shared, epoch, s.code()) => return,
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
                Ok(Err(s)) if ends_lease(&shared, epoch, s.code()) => return,
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
            sent = Stamp::now();
            if requests.send(message.clone()).await.is_err() {
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
