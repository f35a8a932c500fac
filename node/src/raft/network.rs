//! Raft transport over gRPC: one tonic channel per peer, reused by every RPC.
//!
//! openraft's requests and replies travel bincode-encoded inside
//! `baton.v1.RaftPayload` (see `proto/baton/v1/raft.proto`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use baton_proto::v1::raft_client::RaftClient;
use baton_proto::v1::RaftPayload;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::{NodeId, TypeConfig};
use crate::config::Security;
use crate::security::access::AUTHORIZATION;

/// Largest Raft message a node accepts or sends. Snapshot chunks are 1 MiB and
/// append batches are bounded by openraft's `max_payload_entries`; this leaves
/// room for large commands without letting a peer make us buffer without bound.
pub const MAX_RAFT_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// How this node dials its peers (Raft, requests forwarded to the leader,
/// joining). A node listening on one specific address dials from it too, so
/// peers, firewalls and proxies see its connections come from its own
/// address; one listening on all interfaces lets the system choose. With TLS
/// it dials over TLS and presents its own certificate; with an admin token
/// it sends the token (peers check it on Raft traffic).
#[derive(Clone, Debug, Default)]
pub struct PeerDialer {
    source: Option<IpAddr>,
    tls: Option<ClientTlsConfig>,
    token: Option<MetadataValue<Ascii>>,
}

impl PeerDialer {
    pub fn new(listen: SocketAddr, security: &Security) -> anyhow::Result<Self> {
        let tls = security.tls.as_ref().map(|tls| {
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&tls.ca_pem))
                .identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem))
        });
        let token = security
            .admin_token
            .as_ref()
            .map(|t| {
                MetadataValue::try_from(format!("Bearer {t}")).map(|mut v| {
                    // Kept out of Debug output (and so out of logs).
                    v.set_sensitive(true);
                    v
                })
            })
            .transpose()
            .context("the admin token cannot travel in a header")?;
        Ok(Self {
            source: (!listen.ip().is_unspecified()).then(|| listen.ip()),
            tls,
            token,
        })
    }

    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, tonic::transport::Error> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))?
            .local_address(self.source)
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true);
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone())?;
        }
        Ok(endpoint)
    }

    /// Adds this node's credentials (the admin token, if any) to a request.
    pub fn authorize<T>(&self, request: &mut tonic::Request<T>) {
        if let Some(token) = &self.token {
            request.metadata_mut().insert(AUTHORIZATION, token.clone());
        }
    }
}

/// Creates the per-peer clients openraft asks for, reusing one channel per
/// peer address across reconnects and replication-stream restarts.
#[derive(Clone, Default)]
pub struct Network {
    dialer: PeerDialer,
    channels: Arc<Mutex<HashMap<(NodeId, String), Channel>>>,
}

impl Network {
    pub fn new(dialer: PeerDialer) -> Self {
        Self {
            dialer,
            channels: Arc::default(),
        }
    }

    /// How this node dials its peers.
    pub fn dialer(&self) -> &PeerDialer {
        &self.dialer
    }

    /// The channel to peer `target` at `addr`, shared with its Raft client.
    pub fn channel(&self, target: NodeId, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = channels.get(&(target, addr.to_string())) {
            return Ok(channel.clone());
        }
        // A peer whose address changed gets a new channel; drop the old one.
        channels.retain(|(id, _), _| *id != target);
        let channel = self
            .dialer
            .endpoint(addr)?
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        channels.insert((target, addr.to_string()), channel.clone());
        Ok(channel)
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        let client = self.channel(target, &node.addr).map(|channel| {
            RaftClient::new(channel)
                .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES)
        });
        Peer {
            target,
            addr: node.addr.clone(),
            client,
            dialer: self.dialer.clone(),
        }
    }
}

/// The connection to one peer.
pub struct Peer {
    target: NodeId,
    addr: String,
    /// An error here means the peer's address could not even be parsed; every
    /// RPC then reports the peer unreachable.
    client: Result<RaftClient<Channel>, tonic::transport::Error>,
    dialer: PeerDialer,
}

#[derive(Debug, thiserror::Error)]
#[error("peer {target} at {addr}: {message}")]
struct PeerError {
    target: NodeId,
    addr: String,
    message: String,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl Peer {
    fn error(&self, message: impl Into<String>) -> PeerError {
        PeerError {
            target: self.target,
            addr: self.addr.clone(),
            message: message.into(),
        }
    }

    async fn call<Req, Resp, E>(
        &mut self,
        kind: RpcKind,
        request: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let data = bincode::serialize(request)
            .map_err(|e| RPCError::Network(NetworkError::new(&self.error(e.to_string()))))?;
        let mut client = match &self.client {
            Ok(client) => client.clone(),
            Err(e) => {
                return Err(RPCError::Unreachable(Unreachable::new(
                    &self.error(e.to_string()),
                )))
            }
        };
        let mut request = tonic::Request::new(RaftPayload { data });
        request.set_timeout(option.hard_ttl());
        self.dialer.authorize(&mut request);
        let reply = match kind {
            RpcKind::AppendEntries => client.append_entries(request).await,
            RpcKind::Vote => client.vote(request).await,
            RpcKind::InstallSnapshot => client.install_snapshot(request).await,
        };
        let reply = reply.map_err(|status| self.status_to_error(status))?;
        let result: Result<Resp, RaftError<NodeId, E>> =
            bincode::deserialize(&reply.get_ref().data)
                .map_err(|e| RPCError::Network(NetworkError::new(&self.error(e.to_string()))))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    fn status_to_error<E: std::error::Error>(
        &self,
        status: tonic::Status,
    ) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
        let err = self.error(format!("{}: {}", status.code(), status.message()));
        match status.code() {
            // Refused or reset connections: the peer is down. openraft backs off
            // before retrying an unreachable peer instead of spinning.
            tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&err)),
            _ => RPCError::Network(NetworkError::new(&err)),
        }
    }
}

#[derive(Clone, Copy)]
enum RpcKind {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        self.call(RpcKind::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(RpcKind::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.call(RpcKind::Vote, &rpc, &option).await
    }
}
