//! Stratum over TLS (`stratum[].tls`): the server configuration built from the port's PEM
//! certificate chain and key. rustls with the `ring` provider, chosen explicitly rather than as
//! the process default, so nothing else in the binary (or a test) can change which one a port
//! uses. The certificate is read at start and again on SIGHUP ([`TlsPort::replace`]): new
//! handshakes use the new one, connections already up keep theirs.

use std::sync::{Arc, PoisonError, RwLock};

use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

/// A server configuration for one port: TLS 1.2 and 1.3 with rustls's safe defaults, no
/// client certificates (miners authenticate with `mining.authorize`).
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, rustls::Error> {
    // rustls deprecates its ring provider for lacking post-quantum key exchange; aws-lc-rs,
    // which has it, needs a C and assembly build (and cmake) that ring does not. Stratum
    // protects session secrets for minutes, not decades.
    #[allow(deprecated)]
    let provider = ring::default_provider();
    ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
}

/// A port's TLS configuration, replaceable while the port serves.
#[derive(Debug)]
pub struct TlsPort(RwLock<Arc<ServerConfig>>);

impl TlsPort {
    pub fn new(cfg: ServerConfig) -> Self {
        TlsPort(RwLock::new(Arc::new(cfg)))
    }

    /// The configuration a handshake starting now uses.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn replace(&self, cfg: ServerConfig) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(cfg);
    }
}
