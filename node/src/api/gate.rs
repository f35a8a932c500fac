//! The policy gate: a tower layer in front of every service that enforces
//! [`super::policy`] before the handler runs. It checks who calls (admin
//! token, worker identity, membership), then where the method runs: here,
//! or forwarded to the leader as a raw HTTP/2 request (see
//! [`super::forward`]), or refused with the leader's address.
//!
//! Rows that need a field of the request have it read from the request's
//! one gRPC message, buffered up to the service's limit; a request the
//! gate cannot read (too large, compressed, malformed) is passed to the
//! service here, whose decoder refuses it as it always did.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Bytes;
use axum::http::{Request, Response};
use futures::StreamExt;
use tonic::body::Body;
use tonic::Status;
use tower::{Layer, Service};

use super::forward;
use super::policy::{self, Policy, Runs, Who};
use super::{cluster_error, not_leader};
use crate::cluster::{Leader, Route, FORWARDED_BY};
use crate::security::access::{Access, Caller, Presented};

/// The gRPC message header: a compression flag and a 4-byte length.
const MESSAGE_HEADER: usize = 5;

#[derive(Clone)]
pub struct GateLayer {
    gate: Arc<Gate>,
}

impl GateLayer {
    pub fn new(access: Arc<Access>, leader: Leader) -> Self {
        Self {
            gate: Arc::new(Gate { access, leader }),
        }
    }
}

impl<S> Layer<S> for GateLayer {
    type Service = GateService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GateService {
            gate: self.gate.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct GateService<S> {
    gate: Arc<Gate>,
    inner: S,
}

impl<S> Service<Request<Body>> for GateService<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // The service that was made ready serves this call; a clone waits
        // for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(policy) = policy::find(request.uri().path()) else {
            // Not a method of baton's: the server answers UNIMPLEMENTED.
            return Box::pin(inner.call(request));
        };
        let gate = self.gate.clone();
        Box::pin(async move {
            match gate.admit(policy, request).await {
                Ok(request) => inner.call(request).await,
                Err(answered) => Ok(answered),
            }
        })
    }
}

struct Gate {
    access: Arc<Access>,
    leader: Leader,
}

impl Gate {
    /// The request to serve here, or the answer the caller gets instead: a
    /// refusal, or the leader's answer to the forwarded request.
    async fn admit(
        &self,
        policy: &Policy,
        mut request: Request<Body>,
    ) -> Result<Request<Body>, Response<Body>> {
        let refuse = |status: Status| status.into_http();
        let presented = Presented::of(&request);
        let caller: Option<Caller> = match policy.who {
            // A worker named in the message: checked once it is read.
            Who::Anyone | Who::Worker(_) => Ok(None),
            Who::Admin => self.access.admin(&presented).map(|()| None),
            Who::Member => self.access.peer(&presented).map(|()| None),
            Who::WorkerPerMessage => Ok(Some(self.access.caller(&presented))),
        }
        .map_err(refuse)?;
        if let Some(caller) = caller {
            // The stream's handler checks each message against it.
            request.extensions_mut().insert(caller);
        }
        if let Runs::LeaderOnly = policy.runs {
            self.leader
                .check_not_removed()
                .map_err(|e| refuse(cluster_error(e)))?;
            let metrics = self.leader.metrics();
            if metrics.current_leader != Some(self.leader.id()) {
                return Err(refuse(not_leader(Leader::known_leader(&metrics))));
            }
        }
        // The message is read when the row needs a field of it, and before
        // forwarding, so a request over the service's limit is refused here
        // rather than sent on.
        let needs_message = matches!(policy.who, Who::Worker(_))
            || matches!(policy.runs, Runs::Read(_))
            || (matches!(policy.runs, Runs::Leader) && !self.leader.is_leader());
        if !needs_message {
            return self.route(policy, request, false).await;
        }
        let (request, read) = buffer(request, policy.limit).await;
        if let Who::Worker(peek) = policy.who {
            let caller = self.access.caller(&Presented::of(&request));
            // Fails closed: the service decodes the first message of a body
            // and drops what follows, so a body the gate cannot read (a
            // second message after one naming another worker, say) must
            // not reach it unchecked. Only a first message over the limit
            // passes, which the service refuses as it always did.
            match (&caller, &read) {
                (Caller::Anyone, _) | (_, Read::Oversize) => {}
                (_, Read::Message(message)) => match peek(message) {
                    Some(worker) => caller.may_act_as(&worker).map_err(refuse)?,
                    None => return Err(refuse(unreadable())),
                },
                (_, Read::Unreadable) => return Err(refuse(unreadable())),
            }
        }
        let serializable = match (&read, policy.runs) {
            // Over the limit: the service here refuses it, nothing is sent on.
            (Read::Oversize, _) => return Ok(request),
            (Read::Message(message), Runs::Read(peek)) => peek(message).unwrap_or(false),
            // A body the gate cannot read goes where a readable one would,
            // unchanged: the leader's service answers it, as it did when
            // each handler forwarded what tonic had decoded.
            _ => false,
        };
        self.route(policy, request, serializable).await
    }

    /// Serves a leader method (or a linearizable read) here if this node
    /// leads, or forwards it to the leader; anything else is served here.
    async fn route(
        &self,
        policy: &Policy,
        request: Request<Body>,
        serializable: bool,
    ) -> Result<Request<Body>, Response<Body>> {
        if serializable || !matches!(policy.runs, Runs::Leader | Runs::Read(_)) {
            return Ok(request);
        }
        let forwarded = request.headers().contains_key(FORWARDED_BY);
        match self.leader.route(forwarded) {
            Ok(Route::Local) => Ok(request),
            Ok(Route::Forward(channel)) => Err(forward::raw(&self.leader, channel, request).await),
            Err(e) => Err(cluster_error(e).into_http()),
        }
    }
}

/// What the gate could read of a request's body.
enum Read {
    /// The body's one plain (uncompressed) gRPC message.
    Message(Bytes),
    /// The first message announces more than the service takes.
    Oversize,
    /// Anything else: compressed, cut short, more than one message, broken.
    Unreadable,
}

/// The refusal of a worker's request the gate cannot read.
fn unreadable() -> Status {
    Status::invalid_argument(
        "the request must be exactly one uncompressed gRPC message (the worker it acts for is checked before it is served)",
    )
}

/// Reads the request's one message, if it is a plain (uncompressed) gRPC
/// message of at most `limit` bytes, and returns the request with its body
/// whole again.
async fn buffer(request: Request<Body>, limit: usize) -> (Request<Body>, Read) {
    let (parts, body) = request.into_parts();
    let mut stream = axum::body::Body::new(body).into_data_stream();
    let mut read: Vec<Bytes> = Vec::new();
    let mut len = 0;
    let whole = loop {
        let expected = message_len(&read).filter(|n| *n <= limit);
        if len > MESSAGE_HEADER && expected.is_none_or(|n| len > MESSAGE_HEADER + n) {
            // Larger than the service takes: not read further here.
            break false;
        }
        match stream.next().await {
            Some(Ok(chunk)) => {
                len += chunk.len();
                read.push(chunk);
            }
            Some(Err(_)) => break false,
            None => break true,
        }
    };
    if !whole {
        let oversize = message_len(&read).is_some_and(|n| n > limit);
        // Put back what was read, followed by the rest, as it came.
        let replay = futures::stream::iter(read.into_iter().map(Ok)).chain(stream);
        let body = Body::new(axum::body::Body::from_stream(replay));
        let read = if oversize {
            Read::Oversize
        } else {
            Read::Unreadable
        };
        return (Request::from_parts(parts, body), read);
    }
    let bytes: Bytes = read.concat().into();
    let read = match message_len(std::slice::from_ref(&bytes)) {
        Some(n) if n > limit => Read::Oversize,
        Some(n) if n == bytes.len() - MESSAGE_HEADER && bytes.first() == Some(&0) => {
            Read::Message(bytes.slice(MESSAGE_HEADER..))
        }
        _ => Read::Unreadable,
    };
    let body = Body::new(axum::body::Body::from(bytes));
    (Request::from_parts(parts, body), read)
}

/// The length the message header in `chunks` announces, once it is there.
fn message_len(chunks: &[Bytes]) -> Option<usize> {
    let mut header = [0u8; MESSAGE_HEADER];
    let mut filled = 0;
    for byte in chunks.iter().flat_map(|c| c.iter()).take(MESSAGE_HEADER) {
        header[filled] = *byte;
        filled += 1;
    }
    (filled == MESSAGE_HEADER).then(|| {
        let [_, a, b, c, d] = header;
        u32::from_be_bytes([a, b, c, d]) as usize
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(message: &[u8]) -> Vec<u8> {
        let len = u32::try_from(message.len()).expect("small");
        let mut framed = vec![0];
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(message);
        framed
    }

    /// A request whose body arrives in `chunks`.
    fn arriving(chunks: Vec<Vec<u8>>) -> Request<Body> {
        let stream =
            futures::stream::iter(chunks.into_iter().map(|c| Ok::<_, Status>(Bytes::from(c))));
        Request::new(Body::new(axum::body::Body::from_stream(stream)))
    }

    async fn body_of(request: Request<Body>) -> Vec<u8> {
        let mut stream = axum::body::Body::new(request.into_body()).into_data_stream();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk.expect("chunk"));
        }
        bytes
    }

    #[tokio::test]
    async fn the_message_is_read_and_the_body_stays_whole() {
        let framed = framed(b"hello");
        let (head, tail) = framed.split_at(3);
        let (request, message) = buffer(arriving(vec![head.to_vec(), tail.to_vec()]), 100).await;
        assert!(matches!(message, Read::Message(m) if m == b"hello"[..]));
        assert_eq!(body_of(request).await, framed);
    }

    #[tokio::test]
    async fn an_oversize_or_malformed_message_is_not_read_and_passes_on_as_it_came() {
        let big = framed(&[7; 64]);
        let (request, message) = buffer(arriving(vec![big.clone()]), 10).await;
        assert!(matches!(message, Read::Oversize), "over the limit");
        assert_eq!(body_of(request).await, big);

        let mut compressed = framed(b"hi");
        compressed[0] = 1;
        let (request, message) = buffer(arriving(vec![compressed.clone()]), 10).await;
        assert!(matches!(message, Read::Unreadable), "compressed");
        assert_eq!(body_of(request).await, compressed);

        let short = framed(b"hello")[..6].to_vec();
        let (request, message) = buffer(arriving(vec![short.clone()]), 10).await;
        assert!(matches!(message, Read::Unreadable), "shorter than it says");
        assert_eq!(body_of(request).await, short);
    }

    /// The service decodes a body's first message and drops the rest, so a
    /// second message must not hide the first from the gate's checks.
    #[tokio::test]
    async fn a_body_of_two_messages_is_unreadable_however_it_arrives() {
        let mut two = framed(b"victim");
        two.extend_from_slice(&framed(b"x"));
        let (request, message) = buffer(arriving(vec![two.clone()]), 100).await;
        assert!(matches!(message, Read::Unreadable), "in one chunk");
        assert_eq!(body_of(request).await, two);
        let (head, tail) = two.split_at(11);
        let (request, message) = buffer(arriving(vec![head.to_vec(), tail.to_vec()]), 100).await;
        assert!(matches!(message, Read::Unreadable), "in two chunks");
        assert_eq!(body_of(request).await, two);
    }
}
