//! A fake baton node on 127.0.0.1:0, for testing what the worker SDK sends
//! and when: it leads a one-node "cluster", answers Join with a session that
//! holds the partitions it is configured with, answers keepalives while told
//! to, serves a worker watch from an event log the test can append to, and
//! hands every Leave and Release to the test at the moment it arrives,
//! answering only when the test says (so the test can look at the SDK's
//! state while the call is in flight).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_client::proto as pb;
use baton_client::Partitions;
use pb::admin_server::{Admin, AdminServer};
use pb::tombstones_server::{Tombstones, TombstonesServer};
use pb::watch_server::{Watch, WatchServer};
use pb::worker_server::{Worker, WorkerServer};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// A Leave or Release as it arrived, waiting for the test's answer.
pub struct Call<T> {
    pub request: T,
    pub arrived: Instant,
    answer: oneshot::Sender<Result<(), Status>>,
}

impl<T> Call<T> {
    /// Lets the fake answer the call (`Ok`: as a server that did it).
    pub fn answer(self, result: Result<(), Status>) {
        let _ = self.answer.send(result);
    }
}

pub enum Arrival {
    Leave(Call<pb::LeaveRequest>),
    Release(Call<pb::ReleaseRequest>),
}

struct State {
    ttl_ms: u64,
    granted: Partitions,
    /// Answer keepalives (false: read them and stay silent, so the SDK's
    /// lease runs out).
    answer_keepalives: AtomicBool,
    revision: AtomicU64,
    next_session: AtomicU64,
    /// The watch log: every message, in revision order.
    log: watch::Sender<Vec<pb::WatchResponse>>,
    arrivals: mpsc::UnboundedSender<Arrival>,
    addr: Mutex<String>,
}

impl State {
    fn bump(&self) -> u64 {
        self.revision.fetch_add(1, Ordering::SeqCst) + 1
    }
}

pub struct Fake {
    pub addr: String,
    state: Arc<State>,
    arrivals: mpsc::UnboundedReceiver<Arrival>,
}

impl Fake {
    /// Starts a fake whose sessions get `ttl_ms` and hold `granted` at once;
    /// the first session id is 7.
    pub async fn start(ttl_ms: u64, granted: Partitions) -> Self {
        let (tx, arrivals) = mpsc::unbounded_channel();
        let state = Arc::new(State {
            ttl_ms,
            granted,
            answer_keepalives: AtomicBool::new(true),
            revision: AtomicU64::new(10),
            next_session: AtomicU64::new(7),
            log: watch::channel(Vec::new()).0,
            arrivals: tx,
            addr: Mutex::new(String::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address").to_string();
        *state.addr.lock().expect("addr") = addr.clone();
        let node = Node(state.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(AdminServer::new(node.clone()))
                .add_service(WorkerServer::new(node.clone()))
                .add_service(WatchServer::new(node.clone()))
                .add_service(TombstonesServer::new(node))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        Self {
            addr,
            state,
            arrivals,
        }
    }

    /// Stops (or resumes) answering keepalives.
    pub fn answer_keepalives(&self, answer: bool) {
        self.state.answer_keepalives.store(answer, Ordering::SeqCst);
    }

    /// Appends an event to the watch log, as a committed revision.
    pub fn publish(&self, event: pb::watch_event::Event) {
        let revision = self.state.bump();
        self.state.log.send_modify(|log| {
            log.push(pb::WatchResponse {
                revision,
                events: vec![pb::WatchEvent {
                    revision,
                    event: Some(event),
                }],
            })
        });
    }

    /// The next Leave or Release to arrive (fails the test after 20 s).
    pub async fn next(&mut self) -> Arrival {
        tokio::time::timeout(Duration::from_secs(20), self.arrivals.recv())
            .await
            .expect("a call within 20 s")
            .expect("the fake is running")
    }

    pub async fn next_leave(&mut self) -> Call<pb::LeaveRequest> {
        match self.next().await {
            Arrival::Leave(call) => call,
            Arrival::Release(call) => panic!("a Leave expected, got {:?}", call.request),
        }
    }

    pub async fn next_release(&mut self) -> Call<pb::ReleaseRequest> {
        match self.next().await {
            Arrival::Release(call) => call,
            Arrival::Leave(call) => panic!("a Release expected, got {:?}", call.request),
        }
    }
}

#[derive(Clone)]
struct Node(Arc<State>);

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl Node {
    /// Hands a call to the test and waits for its answer.
    async fn arrive<T>(&self, wrap: fn(Call<T>) -> Arrival, request: T) -> Result<(), Status> {
        let (answer, answered) = oneshot::channel();
        let call = Call {
            request,
            arrived: Instant::now(),
            answer,
        };
        if self.0.arrivals.send(wrap(call)).is_err() {
            return Err(Status::unavailable("the test is gone"));
        }
        answered
            .await
            .unwrap_or_else(|_| Err(Status::unavailable("the test did not answer")))
    }
}

#[tonic::async_trait]
impl Worker for Node {
    async fn join(
        &self,
        _request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let revision = self.0.bump();
        Ok(Response::new(pb::JoinResponse {
            session: self.0.next_session.fetch_add(1, Ordering::SeqCst),
            ttl_ms: self.0.ttl_ms,
            granted: self
                .0
                .granted
                .iter()
                .map(|r| pb::PartitionRange {
                    first: *r.start(),
                    last: *r.end(),
                })
                .collect(),
            token: revision,
            revision,
        }))
    }

    type KeepAliveStream = Boxed<pb::KeepAliveResponse>;

    async fn keep_alive(
        &self,
        request: Request<Streaming<pb::KeepAliveRequest>>,
    ) -> Result<Response<Self::KeepAliveStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let state = self.0.clone();
        tokio::spawn(async move {
            while let Some(Ok(m)) = inbound.next().await {
                if state.answer_keepalives.load(Ordering::SeqCst) {
                    let reply = pb::KeepAliveResponse {
                        session: m.session,
                        ttl_remaining_ms: state.ttl_ms,
                    };
                    if tx.send(Ok(reply)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        self.arrive(Arrival::Release, request.into_inner()).await?;
        Ok(Response::new(pb::ReleaseResponse {
            revision: self.0.bump(),
        }))
    }

    async fn leave(
        &self,
        request: Request<pb::LeaveRequest>,
    ) -> Result<Response<pb::LeaveResponse>, Status> {
        self.arrive(Arrival::Leave, request.into_inner()).await?;
        Ok(Response::new(pb::LeaveResponse {
            revision: self.0.bump(),
        }))
    }
}

#[tonic::async_trait]
impl Watch for Node {
    type WatchStream = Boxed<pb::WatchResponse>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let from = request.into_inner().from_revision;
        let mut log = self.0.log.subscribe();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut sent = 0;
            loop {
                let new: Vec<pb::WatchResponse> = log.borrow_and_update()[sent..].to_vec();
                sent += new.len();
                for m in new.into_iter().filter(|m| m.revision >= from) {
                    if tx.send(Ok(m)).await.is_err() {
                        return;
                    }
                }
                if log.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[tonic::async_trait]
impl Tombstones for Node {
    async fn put(
        &self,
        _: Request<pb::PutTombstoneRequest>,
    ) -> Result<Response<pb::PutTombstoneResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn check(
        &self,
        _: Request<pb::CheckTombstonesRequest>,
    ) -> Result<Response<pb::CheckTombstonesResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn list(
        &self,
        _: Request<pb::ListTombstonesRequest>,
    ) -> Result<Response<pb::ListTombstonesResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn ack(
        &self,
        _: Request<pb::AckTombstonesRequest>,
    ) -> Result<Response<pb::AckTombstonesResponse>, Status> {
        Ok(Response::new(pb::AckTombstonesResponse {
            revision: self.0.revision.load(Ordering::SeqCst),
        }))
    }
}

/// Only what the SDK asks of a leader; the rest is not this fake's business.
/// (Spelled as `#[async_trait]` expands an `async fn`, which it cannot do
/// for methods a macro writes.)
macro_rules! unimplemented_admin {
    ($($name:ident($req:ty) -> $resp:ty;)*) => {
        $(fn $name<'life0, 'async_trait>(
            &'life0 self,
            _: Request<$req>,
        ) -> Pin<Box<dyn std::future::Future<Output = Result<Response<$resp>, Status>> + Send + 'async_trait>>
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            Box::pin(async { Err(Status::unimplemented("fake")) })
        })*
    };
}

#[tonic::async_trait]
impl Admin for Node {
    async fn cluster_status(
        &self,
        _: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        let addr = self.0.addr.lock().expect("addr").clone();
        Ok(Response::new(pb::ClusterStatusResponse {
            node_id: 1,
            node_addr: addr.clone(),
            state: pb::RaftRole::Leader.into(),
            leader_id: 1,
            leader_addr: addr,
            ..Default::default()
        }))
    }

    async fn get_group(
        &self,
        request: Request<pb::GetGroupRequest>,
    ) -> Result<Response<pb::GroupResponse>, Status> {
        Ok(Response::new(pb::GroupResponse {
            revision: self.0.revision.load(Ordering::SeqCst),
            group: Some(pb::Group {
                name: request.into_inner().group,
                config: Some(pb::GroupConfig {
                    handoff_timeout_ms: Some(5000),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }))
    }

    unimplemented_admin! {
        add_node(pb::AddNodeRequest) -> pb::MembershipResponse;
        promote_node(pb::PromoteNodeRequest) -> pb::MembershipResponse;
        remove_node(pb::RemoveNodeRequest) -> pb::MembershipResponse;
        barrier(pb::BarrierRequest) -> pb::BarrierResponse;
        compact(pb::CompactRequest) -> pb::CompactResponse;
        create_group(pb::CreateGroupRequest) -> pb::GroupResponse;
        list_groups(pb::ListGroupsRequest) -> pb::ListGroupsResponse;
        update_group(pb::UpdateGroupRequest) -> pb::GroupResponse;
        delete_group(pb::DeleteGroupRequest) -> pb::DeleteGroupResponse;
        split_group(pb::SplitGroupRequest) -> pb::GroupResponse;
        set_frozen(pb::SetFrozenRequest) -> pb::GroupResponse;
        set_load_rules(pb::SetLoadRulesRequest) -> pb::GroupResponse;
        get_assignment(pb::GetAssignmentRequest) -> pb::AssignmentResponse;
        plan_assignment(pb::GetAssignmentRequest) -> pb::PlanResponse;
        move_partitions(pb::MovePartitionsRequest) -> pb::PlanResponse;
        route(pb::RouteRequest) -> pb::RouteResponse;
        list_workers(pb::ListWorkersRequest) -> pb::ListWorkersResponse;
        drain_worker(pb::WorkerRef) -> pb::WorkerActionResponse;
        evict_worker(pb::WorkerRef) -> pb::WorkerActionResponse;
    }

    type BackupStream = Boxed<pb::BackupChunk>;

    async fn backup(
        &self,
        _: Request<pb::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        Err(Status::unimplemented("fake"))
    }
}
