//! Forwarding a call to the leader: the gate forwards the raw HTTP/2
//! request of every `Runs::Leader` method (and linearizable reads) over the
//! cluster's channel to the leader, and passes the leader's answer back as
//! it is; a tombstone put, which waits for its barrier here, forwards its
//! decoded request with [`call`].
//!
//! Either way the leader sees the caller's deadline and admin token, marked
//! as forwarded ([`FORWARDED_BY`]) so it is never forwarded again; the
//! call is abandoned with UNAVAILABLE if the leader changes first, or if
//! the connection to it breaks.

use axum::http::{HeaderName, HeaderValue, Request, Response};
use tonic::body::Body;
use tonic::transport::Channel;
use tonic::Status;
use tower::ServiceExt;

use crate::cluster::{Leader, FORWARDED_BY};
use crate::security::access::AUTHORIZATION;

/// The caller's headers the leader sees; the others are this hop's own
/// (`content-type` and `te` make it a gRPC call at all).
const KEPT: [&str; 4] = ["content-type", "te", "grpc-timeout", AUTHORIZATION];

const LEADER_CHANGED: &str = "the leader changed while this call was forwarded to it; it may or may not have taken effect; retry";

/// Sends `request` to the leader on `channel` and returns the leader's
/// response, or the status the caller should hear instead.
pub async fn raw(leader: &Leader, channel: Channel, request: Request<Body>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let mut forwarded = Request::new(body);
    *forwarded.method_mut() = parts.method;
    // The channel sets the leader's scheme and authority; the path stays.
    *forwarded.uri_mut() = parts.uri;
    *forwarded.version_mut() = parts.version;
    let headers = forwarded.headers_mut();
    for key in KEPT {
        if let Some(value) = parts.headers.get(key) {
            headers.insert(HeaderName::from_static(key), value.clone());
        }
    }
    headers.insert(
        HeaderName::from_static(FORWARDED_BY),
        HeaderValue::from(leader.id()),
    );
    let changed = leader.leader_change();
    tokio::select! {
        answer = channel.oneshot(forwarded) => match answer {
            Ok(response) => response,
            Err(e) => forward_failed(Status::from_error(Box::new(e))).into_http(),
        },
        () = changed => Status::unavailable(LEADER_CHANGED).into_http(),
    }
}

/// Waits for a decoded call forwarded to the leader this node knows,
/// unless that changes first (see the module's comment).
pub async fn call<T>(
    leader: &Leader,
    call: impl std::future::Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    let changed = leader.leader_change();
    tokio::select! {
        result = call => result.map_err(forward_failed),
        () = changed => Err(Status::unavailable(LEADER_CHANGED)),
    }
}

/// The decoded request to send to the leader: same message, deadline and
/// admin token, marked as forwarded.
pub fn forwarded<T>(leader: &Leader, request: tonic::Request<T>) -> tonic::Request<T> {
    let kept: Vec<_> = ["grpc-timeout", AUTHORIZATION]
        .into_iter()
        .filter_map(|key| Some((key, request.metadata().get(key)?.clone())))
        .collect();
    let mut forwarded = tonic::Request::new(request.into_inner());
    for (key, value) in kept {
        forwarded.metadata_mut().insert(key, value);
    }
    forwarded
        .metadata_mut()
        .insert(FORWARDED_BY, leader.id().into());
    forwarded
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
        let status = AdminClient::new(channel.clone())
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
        // A raw forward that breaks the same way: a transport error with
        // its cause, so UNAVAILABLE too.
        let raw = channel
            .oneshot(
                Request::post("/baton.v1.Admin/ClusterStatus")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect_err("nothing answers");
        let status = forward_failed(Status::from_error(Box::new(raw)));
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    }
}
