//! TLS termination: rustls server config whose certificate is chosen by SNI from the current
//! routing table at each handshake, so new Secrets apply without a restart.

use std::sync::Arc;

use rustls::CipherSuite;
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

/// The listener's TLS: two server configurations sharing certificates and sessions, chosen
/// per handshake by the client's own cipher-suite preference (see [`Acceptor::config_for`]).
#[derive(Debug, Clone)]
pub struct Acceptor {
    /// Server order, AES-128-GCM first: for clients whose first choice is an AES suite.
    aes_first: Arc<rustls::ServerConfig>,
    /// The client's order: for clients that ask for ChaCha20-Poly1305 first.
    client_order: Arc<rustls::ServerConfig>,
}

impl Acceptor {
    /// TLS 1.2/1.3, ALPN h2 then http/1.1, certificates by SNI from `table`.
    pub fn new(table: TableReader) -> Result<Self, Error> {
        let resolver = Arc::new(SniResolver { table, fallback: fallback_certificate()? });
        let client_order = config(rustls::crypto::ring::default_provider(), resolver.clone())?;
        let mut provider = rustls::crypto::ring::default_provider();
        // A stable sort: within a rank the provider's order (TLS 1.3 before 1.2, ECDSA
        // before RSA) stays.
        provider.cipher_suites.sort_by_key(|suite| aes_rank(suite.suite()));
        let mut aes_first = config(provider, resolver)?;
        aes_first.ignore_client_order = true;
        // One session cache and ticketer for both: a client resumes whichever config served it.
        aes_first.session_storage = client_order.session_storage.clone();
        aes_first.ticketer = client_order.ticketer.clone();
        Ok(Self { aes_first: Arc::new(aes_first), client_order: Arc::new(client_order) })
    }

    /// The configuration for this ClientHello. Clients list the suites they are fast at
    /// first: one with AES instructions lists an AES-GCM suite first (OpenSSL, BoringSSL,
    /// browsers on desktops), one without lists ChaCha20-Poly1305 first (phones, small
    /// ARM boards). The first gets AES-128-GCM whatever its order (TLS 1.3's
    /// `TLS_AES_128_GCM_SHA256`, whose SHA-256 key schedule runs on SHA instructions where
    /// SHA-384's runs in portable code: ~11–16 % of a full handshake's CPU here, see
    /// BENCHMARKS.md), the second its own order. Go's crypto/tls and BoringSSL choose the
    /// same way; a ClientHello naming no suite erratum has follows the client's order (the
    /// handshake then fails as it would anyway).
    pub fn config_for(&self, hello: &ClientHello<'_>) -> &Arc<rustls::ServerConfig> {
        let ours = &self.client_order.crypto_provider().cipher_suites;
        let first = hello.cipher_suites().iter().find(|asked| ours.iter().any(|s| s.suite() == **asked));
        match first {
            Some(suite) if aes_rank(*suite) < 2 => &self.aes_first,
            _ => &self.client_order,
        }
    }

    /// The whole handshake on `io`: the ClientHello, then the configuration for it.
    pub async fn accept<IO>(&self, io: IO) -> std::io::Result<tokio_rustls::server::TlsStream<IO>>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let start = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io).await?;
        let config = self.config_for(&start.client_hello()).clone();
        start.into_stream(config).await
    }
}

/// 0 for AES-128-GCM suites, 1 for AES-256-GCM, 2 for the rest.
fn aes_rank(suite: CipherSuite) -> u8 {
    match suite {
        CipherSuite::TLS13_AES_128_GCM_SHA256
        | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
        CipherSuite::TLS13_AES_256_GCM_SHA384
        | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        | CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 1,
        _ => 2,
    }
}

fn config(
    provider: rustls::crypto::CryptoProvider,
    resolver: Arc<SniResolver>,
) -> Result<rustls::ServerConfig, Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
