//! Who may talk to this node and how it talks to its peers: TLS material
//! ([`tls`]), the peers' addresses and how this node dials them ([`peer`]),
//! and the settings that tie them together ([`Security`]).
//!
//! Sits below [`crate::raft`]: the Raft transport dials peers with these
//! settings. [`access`], which checks incoming requests against them, sits
//! with the API's layer (the `layering` table says so).

pub mod access;
pub mod peer;
pub mod tls;

pub use peer::{BadPeerAddr, PeerAddr, PeerDialer};
pub use tls::TlsConfig;

/// The header that carries the admin token (sent by peers with Raft traffic,
/// checked by the API).
pub const AUTHORIZATION: &str = "authorization";

/// Who may do what: transport security and the admin token.
#[derive(Clone, Default)]
pub struct Security {
    /// `None`: plaintext gRPC.
    pub tls: Option<TlsConfig>,
    /// `None`: admin calls need no token.
    pub admin_token: Option<String>,
}

/// Says which settings are on, never the key or the token.
impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field(
                "tls",
                &self
                    .tls
                    .as_ref()
                    .map(|t| if t.mutual { "mutual" } else { "server" }),
            )
            .field("admin_token", &self.admin_token.as_ref().map(|_| "set"))
            .finish()
    }
}
