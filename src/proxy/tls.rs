//! TLS termination: rustls server config whose certificate is chosen by SNI from the current
//! routing table at each handshake, so new Secrets apply without a restart.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::table::TableReader;

/// Errors building the TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// rustls rejected the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The fallback certificate could not be generated.
    #[error("generating the fallback certificate: {0}")]
    Fallback(#[from] rcgen::Error),
}

/// Picks the certificate for a ClientHello from the table; unknown names get the fallback.
#[derive(Debug)]
struct SniResolver {
    table: TableReader,
    fallback: Arc<CertifiedKey>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.table.load().tls().lookup(hello.server_name()).unwrap_or_else(|| self.fallback.clone()))
    }
}

/// A self-signed certificate for names no Ingress covers (like ingress-nginx's "Fake
/// Certificate"): the handshake completes and the client sees a clear trust error, instead of
/// a bare protocol alert.
pub fn fallback_certificate() -> Result<Arc<CertifiedKey>, Error> {
    let cert = rcgen::generate_simple_self_signed(vec!["erratum-default-certificate.invalid".to_string()])?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key)?;
    Ok(Arc::new(CertifiedKey::new(vec![cert.cert.der().clone()], signing_key)))
}

/// The server configuration: TLS 1.2/1.3, ALPN h2 then http/1.1, certificates by SNI.
pub fn server_config(table: TableReader) -> Result<Arc<rustls::ServerConfig>, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { table, fallback: fallback_certificate()? }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
