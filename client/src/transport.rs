//! How a client reaches the nodes: plaintext or TLS (with a client
//! certificate, for clusters that require mutual TLS), and the admin token
//! that calls changing the cluster carry.

use std::path::Path;
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};

use crate::ClientError;

/// A channel to one node that adds the client's credentials to each call.
/// Wrap it in any of baton's generated clients (`AdminClient::new(channel)`).
pub type NodeChannel = InterceptedService<Channel, Credentials>;

/// What every call carries: the admin token, if one is set.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    token: Option<MetadataValue<Ascii>>,
}

impl Interceptor for Credentials {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        Ok(request)
    }
}

/// Transport settings shared by the admin client, watches, workers and shard
/// maps. The default is plaintext without a token (a dev cluster).
#[derive(Clone, Debug, Default)]
pub struct Transport {
    tls: Option<ClientTlsConfig>,
    credentials: Credentials,
}

impl Transport {
    /// TLS, trusting the nodes' certificates when `ca_pem` (PEM) signed them.
    pub fn tls(ca_pem: &[u8]) -> Self {
        Self {
            tls: Some(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem))),
            credentials: Credentials::default(),
        }
    }

    /// Presents this certificate (for clusters that require mutual TLS). A
    /// worker's certificate must hold its worker id as a DNS name.
    pub fn identity(mut self, cert_pem: &[u8], key_pem: &[u8]) -> Self {
        let tls = self.tls.take().unwrap_or_default();
        self.tls = Some(tls.identity(Identity::from_pem(cert_pem, key_pem)));
        self
    }

    /// Sends the admin token with every call.
    pub fn token(mut self, token: &str) -> Result<Self, ClientError> {
        let mut value =
            MetadataValue::try_from(format!("Bearer {}", token.trim())).map_err(|_| {
                ClientError::BadCredentials("the admin token must be printable ASCII".to_string())
            })?;
        // Kept out of Debug output (and so out of logs).
        value.set_sensitive(true);
        self.credentials.token = Some(value);
        Ok(self)
    }

    /// Reads the files named: a CA (turns TLS on), a client certificate and
    /// key, a file holding the admin token. Each error names its file.
    pub fn from_files(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
        token_file: Option<&Path>,
    ) -> Result<Self, ClientError> {
        let read = |what: &str, path: &Path| {
            std::fs::read(path).map_err(|e| {
                ClientError::BadCredentials(format!(
                    "cannot read the {what} {}: {e}",
                    path.display()
                ))
            })
        };
        let mut transport = match ca {
            Some(ca) => Transport::tls(&read("CA certificate", ca)?),
            None => Transport::default(),
        };
        match (cert, key) {
            (Some(cert), Some(key)) => {
                if ca.is_none() {
                    return Err(ClientError::BadCredentials(
                        "a client certificate needs TLS: give the CA that signed the nodes' certificates too".into(),
                    ));
                }
                transport = transport.identity(
                    &read("client certificate", cert)?,
                    &read("client key", key)?,
                );
            }
            (None, None) => {}
            _ => {
                return Err(ClientError::BadCredentials(
                    "give both the client certificate and its key".into(),
                ))
            }
        }
        if let Some(path) = token_file {
            let token = String::from_utf8(read("token file", path)?).map_err(|_| {
                ClientError::BadCredentials(format!("{} is not text", path.display()))
            })?;
            transport = transport.token(&token)?;
        }
        Ok(transport)
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The endpoint of the node at `addr` (`HOST:PORT`).
    pub(crate) fn endpoint(&self, addr: &str) -> Result<Endpoint, ClientError> {
        let bad = |e: tonic::transport::Error| ClientError::BadEndpoint {
            endpoint: addr.to_string(),
            reason: e.to_string(),
        };
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(bad)?
            .connect_timeout(Duration::from_secs(1));
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone()).map_err(bad)?;
        }
        Ok(endpoint)
    }

    /// Wraps a connected (or lazy) channel so each call carries the token.
    pub(crate) fn wrap(&self, channel: Channel) -> NodeChannel {
        InterceptedService::new(channel, self.credentials.clone())
    }
}
