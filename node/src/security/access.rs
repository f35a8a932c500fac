//! Who may call what.
//!
//! - With an admin token set, calls that change the cluster must carry it
//!   (`authorization: Bearer …`), or get UNAUTHENTICATED. Reads, workers,
//!   watches and tombstones do not need it: producers and workers should not
//!   hold the operators' secret.
//! - Raft traffic carries the token too when one is set (every node has it);
//!   under mutual TLS it must also come from a certificate valid for the host
//!   of a member of the cluster.
//! - Under mutual TLS a worker may act only under a name its certificate is
//!   valid for, so one worker cannot release, renew, acknowledge for or end
//!   another's session. Members (forwarding a worker's call to the leader) and
//!   callers with the admin token may act for any worker.
//!
//! Which of these each method needs is declared in `api::policy` and
//! checked by `api::gate`, before the call is decoded or forwarded.

use std::sync::Arc;

use axum::http::{HeaderMap, Request};
use rustls_pki_types::{CertificateDer, ServerName};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::Status;

use crate::domain::quoted;
use crate::raft::BatonRaft;

/// The header that carries the admin token (defined with the security
/// settings, which the Raft transport uses too).
pub use crate::security::AUTHORIZATION;

pub struct Access {
    admin_token: Option<String>,
    mutual_tls: bool,
    raft: BatonRaft,
    /// Hosts Raft traffic is accepted from while this node knows no
    /// membership yet (its --initial-members); empty for a joining node,
    /// which must accept the leader it has not heard of yet.
    initial_hosts: Vec<String>,
}

/// What a call presents: its headers and, over TLS, the caller's own
/// certificate.
pub struct Presented<'a> {
    headers: &'a HeaderMap,
    /// The chain the caller presented over TLS, its own certificate first.
    certs: Option<Arc<Vec<CertificateDer<'static>>>>,
}

impl<'a> Presented<'a> {
    /// What an HTTP/2 request presents (the certificate is in its
    /// extensions, put there by the TLS layer).
    pub fn of<B>(request: &'a Request<B>) -> Self {
        let certs = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(TlsConnectInfo::peer_certs);
        Self {
            headers: request.headers(),
            certs,
        }
    }

    /// The caller's own certificate, when it presented one over TLS.
    fn leaf(&self) -> Option<&CertificateDer<'static>> {
        self.certs.as_ref()?.first()
    }
}

/// What a caller may act as, decided once per call (a keepalive stream
/// checks each of its messages against it).
#[derive(Clone, Debug)]
pub enum Caller {
    /// No mutual TLS, a member, or an operator with the token: any worker.
    Anyone,
    /// Only the names this certificate is valid for.
    Certificate(CertificateDer<'static>),
}

impl Caller {
    pub fn may_act_as(&self, worker: &str) -> Result<(), Status> {
        match self {
            Caller::Anyone => Ok(()),
            Caller::Certificate(cert) if valid_for(cert, worker) => Ok(()),
            Caller::Certificate(_) => Err(Status::permission_denied(format!(
                "this client's certificate is not valid for the worker name {}: under mutual TLS a worker may act only under a DNS name its certificate holds (subject alternative names)",
                quoted(worker)
            ))),
        }
    }
}

impl Access {
    pub fn new(
        admin_token: Option<String>,
        mutual_tls: bool,
        raft: BatonRaft,
        initial_hosts: Vec<String>,
    ) -> Arc<Self> {
        Arc::new(Self {
            admin_token,
            mutual_tls,
            raft,
            initial_hosts,
        })
    }

    /// A call that changes the cluster: needs the admin token, if one is set.
    pub fn admin(&self, call: &Presented<'_>) -> Result<(), Status> {
        let Some(expected) = &self.admin_token else {
            return Ok(());
        };
        let given = call
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            None => Err(Status::unauthenticated(
                "this call changes the cluster and needs the admin token: pass batonctl --token-file FILE (or BATON_TOKEN), or send the header `authorization: Bearer <token>`",
            )),
            Some(token) if same(token.as_bytes(), expected.as_bytes()) => Ok(()),
            Some(_) => Err(Status::unauthenticated(
                "the admin token is wrong; use the one the nodes were started with (--admin-token)",
            )),
        }
    }

    /// Raft traffic between nodes.
    pub fn peer(&self, call: &Presented<'_>) -> Result<(), Status> {
        if self.mutual_tls && !self.is_member(call) {
            return Err(Status::permission_denied(
                "Raft traffic is accepted only from members of this cluster: the caller's certificate is not valid for any member's host",
            ));
        }
        self.admin(call).map_err(|s| {
            Status::unauthenticated(format!(
                "Raft traffic needs the cluster's admin token (is this node started with the same --admin-token as the others?): {}",
                s.message()
            ))
        })
    }

    /// Whom a worker call may act for.
    pub fn caller(&self, call: &Presented<'_>) -> Caller {
        if !self.mutual_tls
            || (self.admin_token.is_some() && self.admin(call).is_ok())
            || self.is_member(call)
        {
            return Caller::Anyone;
        }
        match call.leaf().cloned() {
            Some(cert) => Caller::Certificate(cert),
            // The TLS layer refuses clients without a certificate before a
            // call gets here; a certificate valid for nothing acts for no one.
            None => Caller::Certificate(CertificateDer::from(Vec::new())),
        }
    }

    /// Whether the caller's certificate is valid for the host of a member
    /// (or, before this node knows a membership, of an initial member). On
    /// every Raft message under mutual TLS: the certificate is parsed once
    /// and the membership is read in place.
    fn is_member(&self, call: &Presented<'_>) -> bool {
        let Some(der) = call.leaf() else {
            return false;
        };
        let Ok(cert) = webpki::EndEntityCert::try_from(der) else {
            return false;
        };
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let mut members = metrics.membership_config.membership().nodes().peekable();
        if members.peek().is_none() {
            return self.initial_hosts.is_empty()
                || self.initial_hosts.iter().any(|h| names(&cert, h));
        }
        members.any(|(_, node)| names(&cert, host(&node.addr)))
    }
}

/// Whether `cert` is valid for `name` (a DNS name or an IP address), as a
/// TLS client would check a server's certificate.
pub fn valid_for(cert: &CertificateDer<'_>, name: &str) -> bool {
    webpki::EndEntityCert::try_from(cert).is_ok_and(|c| names(&c, name))
}

fn names(cert: &webpki::EndEntityCert<'_>, name: &str) -> bool {
    ServerName::try_from(name).is_ok_and(|n| cert.verify_is_valid_for_subject_name(&n).is_ok())
}

/// The host of `HOST:PORT` (brackets of an IPv6 address removed).
pub fn host(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Compares in time that does not depend on where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_member_addresses() {
        assert_eq!(host("10.0.0.1:7400"), "10.0.0.1");
        assert_eq!(host("baton-0.baton.svc:7400"), "baton-0.baton.svc");
        assert_eq!(host("[::1]:7400"), "::1");
    }

    #[test]
    fn certificates_are_valid_only_for_their_names() {
        let cert = rcgen::generate_simple_self_signed(vec![
            "worker-a".to_string(),
            "*.workers.example".to_string(),
            "127.0.0.1".to_string(),
        ])
        .expect("certificate")
        .cert;
        let der = cert.der();
        for ok in ["worker-a", "w1.workers.example", "127.0.0.1"] {
            assert!(valid_for(der, ok), "{ok}");
        }
        for no in ["worker-b", "workers.example", "127.0.0.2", "not a name", ""] {
            assert!(!valid_for(der, no), "{no}");
        }
        assert!(Caller::Certificate(der.clone())
            .may_act_as("worker-a")
            .is_ok());
        let refused = Caller::Certificate(der.clone()).may_act_as("worker-b");
        assert_eq!(
            refused.err().map(|s| s.code()),
            Some(tonic::Code::PermissionDenied)
        );
        assert!(Caller::Anyone.may_act_as("worker-b").is_ok());
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"secret-token-123", b"secret-token-123"));
        assert!(!same(b"secret-token-123", b"secret-token-124"));
        assert!(!same(b"secret-token-123", b"secret-token-12"));
        assert!(!same(b"", b"x"));
    }
}
