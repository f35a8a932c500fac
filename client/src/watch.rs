//! A watch stream that survives node failures: it reconnects to the next
//! endpoint and resumes from the last revision it delivered, so the caller sees
//! every event once, in order, across any number of reconnects.

use std::time::{Duration, Instant};

use crate::endpoints::{backoff, lost_connection, Endpoints, Timing};
use crate::transport::Transport;
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

/// How long a stream may stay silent before it counts as lost: nodes send a
/// progress notification at least every 2 s, so a node that says nothing for
/// this long is frozen or cut off, and the watch resumes elsewhere.
pub const SILENT_STREAM: Duration = Duration::from_secs(5);

/// How long a node that answers probes may take to start a stream (it waits
/// up to 5 s for the leader's read index).
pub const START_WITHIN: Duration = Duration::from_secs(8);

/// A resumable watch over a list of endpoints.
pub struct Watch {
    endpoints: Endpoints,
    /// The node serving the stream.
    serving: Option<String>,
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
        let endpoints = Endpoints::new(
            endpoints,
            Transport::default(),
            // A stream starts once the node has the leader's read index: a
            // second or two at most while a majority is up.
            Timing::for_budget(Duration::from_secs(8)),
        )?;
        Ok(Self::on(endpoints, request, patience))
    }

    /// A watch over `endpoints`, sharing what they learned.
    pub fn on(endpoints: Endpoints, request: WatchRequest, patience: Duration) -> Self {
        Self {
            endpoints,
            serving: None,
            request,
            position: None,
            stream: None,
            patience,
        }
    }

    /// Every event up to this revision has been delivered.
    pub fn position(&self) -> Option<u64> {
        self.position
    }

    /// Uses TLS and a token as `transport` says (default: plaintext).
    pub fn with_transport(mut self, transport: Transport) -> Self {
        self.endpoints = self.endpoints.with_transport(transport);
        self
    }

    /// Waits for a stream to start on `addr`: a node waits for the leader's
    /// read index (or to catch up) first, which is waited for as long as the
    /// node answers probes, up to [`START_WITHIN`]; a node that does not
    /// answer (frozen) is left at once.
    async fn open<T>(
        &self,
        addr: &str,
        call: impl std::future::Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        tokio::pin!(call);
        let start = Instant::now();
        loop {
            match tokio::time::timeout(self.endpoints.timing().attempt, &mut call).await {
                Ok(result) => return result,
                Err(_)
                    if start.elapsed() >= START_WITHIN || !self.endpoints.answers(addr).await =>
                {
                    return Err(Status::unavailable(format!(
                        "{addr} did not start the watch within {:?}",
                        start.elapsed()
                    )));
                }
                Err(_) => {}
            }
        }
    }

    /// The next message: events of whole revisions, or a progress notification
    /// (no events). Reconnects and resumes on its own when a node goes away or
    /// cuts this watcher off for being slow; other errors end the watch
    /// (a compacted start: see [`compacted_revision`]).
    pub async fn next(&mut self) -> Result<WatchResponse, ClientError> {
        let start = Instant::now();
        let mut round = 0;
        loop {
            let result = match &mut self.stream {
                Some(stream) => match tokio::time::timeout(SILENT_STREAM, stream.message()).await {
                    Ok(result) => result,
                    Err(_) => {
                        if let Some(addr) = &self.serving {
                            self.endpoints.silent(addr);
                        }
                        Err(Status::unavailable(format!(
                            "no message for {SILENT_STREAM:?} (a node sends progress every 2 s)"
                        )))
                    }
                },
                None => {
                    let mut request = self.request.clone();
                    if let Some(p) = self.position {
                        request.from_revision = p + 1;
                    }
                    // The first endpoint not skipped; after a failure, the
                    // next one.
                    let order = self.endpoints.order();
                    let addr = order[round as usize % order.len()].clone();
                    let channel = self.endpoints.channel(&addr)?;
                    match self
                        .open(&addr, WatchClient::new(channel).watch(request))
                        .await
                    {
                        Ok(stream) => {
                            self.endpoints.answered(&addr);
                            self.serving = Some(addr);
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
            self.serving = None;
            let retry = status.code() == Code::ResourceExhausted || lost_connection(&status);
            if !retry {
                return Err(ClientError::Status(status));
            }
            let pause = backoff(Duration::from_millis(50), Duration::from_secs(1), round);
            round += 1;
            if start.elapsed() + pause > self.patience {
                return Err(ClientError::Unavailable {
                    waited: start.elapsed(),
                    endpoints: self.endpoints.joined(),
                    last: status.message().to_string(),
                });
            }
            // A slow reader resumes at once; a failed node is given a moment.
            if status.code() != Code::ResourceExhausted {
                tokio::time::sleep(pause).await;
            }
        }
    }
}
