//! Peers: their addresses ([`PeerAddr`]) and how this node dials them
//! ([`PeerDialer`]) for Raft, for requests forwarded to the leader and for
//! joining.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use super::{Security, AUTHORIZATION};

/// A peer's address as other nodes dial it: `HOST:PORT`, the host a name,
/// an IPv4 address or a bracketed IPv6 address, the port 1 to 65535. The one
/// place a peer address is checked; every flag and request that names a
/// peer goes through [`PeerAddr::parse`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerAddr(String);

/// Why a string is not a [`PeerAddr`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("address {addr:?} is not HOST:PORT ({why}); example: 10.0.0.5:7400")]
pub struct BadPeerAddr {
    addr: String,
    why: &'static str,
}

impl PeerAddr {
    /// Checks that `addr` is `HOST:PORT` as other nodes dial it.
    pub fn parse(addr: &str) -> Result<Self, BadPeerAddr> {
        let bad = |why| BadPeerAddr {
            addr: addr.to_string(),
            why,
        };
        if addr.contains("://") {
            return Err(bad("leave out the scheme"));
        }
        let Some((host, port)) = addr.rsplit_once(':') else {
            return Err(bad("no port"));
        };
        match port.parse::<u16>() {
            Ok(0) | Err(_) => return Err(bad("the port must be 1 to 65535")),
            Ok(_) => {}
        }
        let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'))
        {
            inner.parse::<Ipv6Addr>().is_ok()
        } else {
            !host.is_empty()
                && host.len() <= 253
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
        };
        if !host_ok {
            return Err(bad("the host must be a name, an IPv4 address or [IPv6]"));
        }
        Ok(Self(addr.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host, brackets of an IPv6 address removed: what a peer's
    /// certificate must be valid for.
    pub fn host(&self) -> &str {
        host(&self.0)
    }
}

/// The host of `HOST:PORT` (brackets of an IPv6 address removed), for an
/// address that may not have been checked (one read from the membership).
pub fn host(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

impl FromStr for PeerAddr {
    type Err = BadPeerAddr;

    fn from_str(addr: &str) -> Result<Self, BadPeerAddr> {
        Self::parse(addr)
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for PeerAddr {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<PeerAddr> for String {
    fn from(addr: PeerAddr) -> String {
        addr.0
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_addresses() {
        for ok in ["127.0.0.1:7400", "node-1.baton.svc:7400", "[::1]:7400"] {
            assert_eq!(
                PeerAddr::parse(ok).map(String::from),
                Ok(ok.to_string()),
                "{ok}"
            );
        }
        for bad in [
            "",
            "127.0.0.1",
            "127.0.0.1:0",
            "host:99999",
            ":7400",
            "a b:1",
            "[zz]:1",
            "http://a:1",
        ] {
            assert!(PeerAddr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hosts_of_peer_addresses() {
        let host_of = |a: &str| PeerAddr::parse(a).map(|a| a.host().to_string());
        assert_eq!(
            host_of("node-1.baton.svc:7400"),
            Ok("node-1.baton.svc".to_string())
        );
        assert_eq!(host_of("[::1]:7400"), Ok("::1".to_string()));
        assert_eq!(host_of("10.0.0.5:7400"), Ok("10.0.0.5".to_string()));
    }
}
