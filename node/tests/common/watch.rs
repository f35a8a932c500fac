//! Watch streams for tests: open one on a given node, read it while checking
//! the stream's own promises (order, no gap or duplicate between messages, a
//! revision never split), and replay the events onto a listed state.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use baton_proto::v1 as pb;
use baton_proto::v1::watch_client::WatchClient;
use pb::watch_event::Event as E;
use tonic::{Status, Streaming};

use super::WAIT;

pub fn request(group: &str, from_revision: u64) -> pb::WatchRequest {
    pb::WatchRequest {
        group: group.into(),
        from_revision,
        worker: String::new(),
        kinds: Vec::new(),
    }
}

/// What one watch stream delivered.
pub struct Watched {
    pub stream: Streaming<pb::WatchResponse>,
    /// The revision the stream said it starts after.
    pub start: u64,
    /// Every event up to here has been delivered.
    pub position: u64,
    pub events: Vec<pb::WatchEvent>,
    /// Messages without events.
    pub progress: usize,
}

/// Opens a watch on the node at `addr`; fails with the server's status.
pub async fn open(addr: &str, request: pb::WatchRequest) -> Result<Watched, Status> {
    let mut client = WatchClient::connect(format!("http://{addr}"))
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut stream = client.watch(request).await?.into_inner();
    let first = stream
        .message()
        .await?
        .ok_or_else(|| Status::unknown("the stream ended before its first message"))?;
    assert!(
        first.events.is_empty(),
        "the first message only says where the stream starts"
    );
    Ok(Watched {
        stream,
        start: first.revision,
        position: first.revision,
        events: Vec::new(),
        progress: 0,
    })
}

impl Watched {
    /// Reads one message, checking it against what came before.
    pub async fn read(&mut self) -> Result<pb::WatchResponse, Status> {
        let message = self
            .stream
            .message()
            .await?
            .ok_or_else(|| Status::unknown("the stream ended without a status"))?;
        if message.events.is_empty() {
            assert!(
                message.revision >= self.position,
                "progress went back from {} to {}",
                self.position,
                message.revision
            );
            self.progress += 1;
        } else {
            assert!(
                message.revision > self.position,
                "revision {} delivered after {} (a duplicate or out of order)",
                message.revision,
                self.position
            );
            for e in &message.events {
                assert_eq!(
                    e.revision, message.revision,
                    "one message carries one revision"
                );
            }
            self.events.extend(message.events.iter().cloned());
        }
        self.position = message.revision;
        Ok(message)
    }

    /// Reads until everything up to `revision` has been delivered.
    pub async fn read_until(&mut self, revision: u64) {
        let deadline = Instant::now() + WAIT;
        while self.position < revision {
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::timeout(left, self.read())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "the stream did not reach {revision} in time (at {})",
                        self.position
                    )
                })
                .expect("the stream goes on");
        }
    }
}

/// The revisions of events in a list, each once, in order: what a stream
/// delivered, for comparing two streams.
pub fn revisions(events: &[pb::WatchEvent]) -> Vec<u64> {
    let mut out: Vec<u64> = events.iter().map(|e| e.revision).collect();
    out.dedup();
    out
}

/// Partition → (owner, token) as a listed assignment says.
pub fn owners(a: &pb::AssignmentResponse) -> BTreeMap<u32, (String, u64)> {
    let mut out = BTreeMap::new();
    for w in &a.workers {
        for r in &w.ranges {
            for p in r.start..=r.end {
                out.insert(p, (w.id.clone(), 0));
            }
        }
    }
    out
}

/// Applies watch events to partition ownership (owner, fencing token).
pub fn replay(owners: &mut BTreeMap<u32, (String, u64)>, events: &[pb::WatchEvent]) {
    for e in events {
        match &e.event {
            Some(E::Granted(g)) => {
                for r in &g.ranges {
                    for p in r.start..=r.end {
                        owners.insert(p, (g.worker.clone(), g.token));
                    }
                }
            }
            Some(E::Released(rel)) => {
                for r in &rel.ranges {
                    for p in r.start..=r.end {
                        let owner = owners.remove(&p);
                        assert_eq!(
                            owner.map(|o| o.0).as_deref(),
                            Some(rel.worker.as_str()),
                            "partition {p} released by its owner"
                        );
                    }
                }
            }
            _ => {}
        }
    }
}

/// Drops tokens, for comparing with a listed assignment (which has none per
/// partition).
pub fn without_tokens(owners: &BTreeMap<u32, (String, u64)>) -> BTreeMap<u32, String> {
    owners.iter().map(|(p, (o, _))| (*p, o.clone())).collect()
}

/// Long enough for a few progress notifications.
pub const PROGRESS_WAIT: Duration = Duration::from_millis(2500);

/// [`open`], retrying while the node answers UNAVAILABLE (as during a
/// failover), the way a client does.
pub async fn open_retrying(addr: &str, request: pb::WatchRequest) -> Watched {
    let deadline = Instant::now() + WAIT;
    loop {
        match open(addr, request.clone()).await {
            Ok(watched) => return watched,
            Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => panic!("watch on {addr}: {s:?}"),
        }
    }
}
