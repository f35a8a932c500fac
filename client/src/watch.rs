//! A watch stream that survives node failures: it reconnects to the next
//! endpoint and resumes from the last revision it delivered, so the caller sees
//! every event once, in order, across any number of reconnects.

use std::time::{Duration, Instant};

use crate::transport::{NodeChannel, Transport};
use baton_proto::v1::watch_client::WatchClient;
use baton_proto::v1::{WatchRequest, WatchResponse};
use tonic::{Code, Status, Streaming};

use crate::ClientError;

/// Metadata of the OUT_OF_RANGE that ends a watch whose start is compacted.
pub const COMPACTED_REVISION: &str = "baton-compacted-revision";
/// Metadata of the RESOURCE_EXHAUSTED that cuts off a watcher that fell behind.
pub const RESUME_REVISION: &str = "baton-resume-revision";

/// The compacted revision carried by a status, if it says the watch start was
/// compacted: re-list the group and watch again from the list's revision + 1.
pub fn compacted_revision(status: &Status) -> Option<u64> {
    if status.code() != Code::OutOfRange {
        return None;
    }
    status
        .metadata()
        .get(COMPACTED_REVISION)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// A resumable watch over a list of endpoints.
pub struct Watch {
    endpoints: Vec<String>,
    transport: Transport,
    next_endpoint: usize,
    request: WatchRequest,
    /// Every event up to this revision has been delivered.
    position: Option<u64>,
    stream: Option<Streaming<WatchResponse>>,
    /// How long to keep trying while no node serves the watch.
    patience: Duration,
}

impl Watch {
    /// A watch as `request` asks, served by any of `endpoints`; gives up
    /// when no endpoint has served it for `patience`.
    pub fn new(
        endpoints: &[String],
        request: WatchRequest,
        patience: Duration,
    ) -> Result<Self, ClientError> {
        let endpoints = crate::admin::split_endpoints(endpoints)?;
        Ok(Self {
            endpoints,
            transport: Transport::default(),
            next_endpoint: 0,
            request,
            position: None,
            stream: None,
            patience,
        })
    }

    /// Every event up to this revision has been delivered.
    pub fn position(&self) -> Option<u64> {
        self.position
    }

    /// Uses TLS and a token as `transport` says (default: plaintext).
    pub fn with_transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    fn channel(&mut self) -> Result<(String, NodeChannel), ClientError> {
        let addr = self.endpoints[self.next_endpoint % self.endpoints.len()].clone();
        self.next_endpoint += 1;
        let channel = self
            .transport
            .endpoint(&addr)?
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        Ok((addr, self.transport.wrap(channel)))
    }

    /// The next message: events of whole revisions, or a progress notification
    /// (no events). Reconnects and resumes on its own when a node goes away or
    /// cuts this watcher off for being slow; other errors end the watch
    /// (a compacted start: see [`compacted_revision`]).
    pub async fn next(&mut self) -> Result<WatchResponse, ClientError> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            let result = match &mut self.stream {
                Some(stream) => stream.message().await,
                None => {
                    let mut request = self.request.clone();
                    if let Some(p) = self.position {
                        request.from_revision = p + 1;
                    }
                    let (_, channel) = self.channel()?;
                    match WatchClient::new(channel).watch(request).await {
                        Ok(stream) => {
                            self.stream = Some(stream.into_inner());
                            continue;
                        }
                        Err(s) => Err(s),
                    }
                }
            };
            let status = match result {
                Ok(Some(message)) => {
                    // Never backwards, even across a resume on a node that
                    // restates where it starts.
                    if self.position.is_none_or(|p| message.revision >= p) {
                        self.position = Some(message.revision);
                    }
                    return Ok(message);
                }
                Ok(None) => Status::unavailable("the node ended the stream"),
                Err(s) => s,
            };
            self.stream = None;
            let retry = matches!(status.code(), Code::Unavailable | Code::ResourceExhausted)
                || crate::admin::lost_connection(&status);
            if !retry {
                return Err(ClientError::Status(status));
            }
            if start.elapsed() + pause > self.patience {
                return Err(ClientError::Unavailable {
                    waited: start.elapsed(),
                    endpoints: self.endpoints.join(","),
                    last: status.message().to_string(),
                });
            }
            // A slow reader resumes at once; a failed node is given a moment.
            if status.code() != Code::ResourceExhausted {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
    }
}
