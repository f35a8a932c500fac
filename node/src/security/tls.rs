//! TLS material of a node.

use std::path::Path;

use anyhow::Context;

/// TLS material of a node, read from its files at start.
#[derive(Clone)]
pub struct TlsConfig {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub ca_pem: Vec<u8>,
    /// Clients must present a certificate signed by the CA.
    pub mutual: bool,
}

impl TlsConfig {
    /// Reads the certificate chain, its key and the CA from their files;
    /// an error names the flag whose file cannot be read.
    pub fn read(cert: &Path, key: &Path, ca: &Path, mutual: bool) -> anyhow::Result<Self> {
        let read = |flag: &str, path: &Path| {
            std::fs::read(path).with_context(|| format!("{flag}: cannot read {}", path.display()))
        };
        Ok(Self {
            cert_pem: read("--tls-cert", cert)?,
            key_pem: read("--tls-key", key)?,
            ca_pem: read("--tls-ca", ca)?,
            mutual,
        })
    }
}
