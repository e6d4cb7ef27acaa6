//! The protocol to a route's endpoints, resolved at build time: HTTP/1.1 or HTTP/2 (h2c),
//! gRPC, and TLS to the endpoint with its verification as a ready rustls client configuration.
//!
//! Data flow: [`build`](super::build) calls [`resolve`] per path rule with the Ingress's
//! annotations ([`IngressProtocol`]), the Service port's `appProtocol` and the Index (Secrets,
//! ConfigMaps); the result hangs on the [`Route`](super::Route) and the proxy's upstream pools
//! use it as is. Pure: a bad CA or a missing Secret becomes a reason the route answers 503
//! with (and a diagnostic), never TLS that verifies less than was asked.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::annotations::{IngressProtocol, Protocol};
use crate::index::{Index, ObjectKey};

/// How a route's requests reach its endpoints, when not plaintext HTTP/1.1.
#[derive(Debug)]
pub struct BackendProtocol {
    /// The protocol.
    pub protocol: Protocol,
    /// TLS to the endpoints (HTTPS, GRPCS).
    pub tls: Option<UpstreamTls>,
    /// Why the route cannot reach its endpoints as asked (a CA that does not load); its
    /// requests are answered 503 with it.
    pub broken: Option<String>,
}

/// TLS to a backend's endpoints.
pub struct UpstreamTls {
    /// The client configuration (roots or no verification, client certificate, ALPN, SNI).
    pub config: Arc<ClientConfig>,
    /// The name the certificate is verified against and SNI names.
    pub server_name: ServerName<'static>,
    /// Whether the endpoint's certificate is verified.
    pub verified: bool,
    /// Tells the settings apart in the connection pools' keys; the same settings give the
    /// same tag in every table, so pooled connections outlive table updates.
    pub pool_tag: String,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .field("verified", &self.verified)
            .finish_non_exhaustive()
    }
}

impl BackendProtocol {
    /// What `/table` shows.
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "protocol": self.protocol.as_str(),
            "tlsName": self.tls.as_ref().map(|t| server_name_str(&t.server_name)),
            "tlsVerified": self.tls.as_ref().map(|t| t.verified),
            "broken": self.broken,
        })
    }
}

fn server_name_str(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(d) => d.as_ref().to_string(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        _ => String::new(),
    }
}

/// The protocol to `service`'s endpoints for an Ingress of namespace `ns`: the annotation,
/// else the Service port's `appProtocol`; `None` for plaintext HTTP/1.1 (nothing to hold).
/// `report` gets what the user should know (verification off by default, a broken CA).
pub fn resolve(
    ns: &str,
    ingress: &IngressProtocol,
    backend: &super::Backend,
    app_protocol: Option<&str>,
    index: &Index,
    report: &mut impl FnMut(String),
) -> Option<Arc<BackendProtocol>> {
    let service = &backend.service;
    // The name a certificate is checked against unless `proxy-ssl-name` says: the external
    // host of an ExternalName Service, else the Service's own DNS name.
    let default_name = match &backend.target {
        super::Target::ExternalName { host, .. } => host.clone(),
        _ => format!("{}.{}.svc", service.name, service.namespace),
    };
    let protocol = ingress.protocol.or_else(|| app_protocol.and_then(Protocol::from_app_protocol))?;
    if protocol == Protocol::Http {
        return None;
    }
    let (tls, broken) = if protocol.tls() {
        match client_tls(ns, ingress, service, &default_name, protocol, index, report) {
            Ok(tls) => (Some(tls), None),
            Err(why) => {
                report(format!("TLS to service {service}: {why}; its routes answer 503"));
                (None, Some(why))
            }
        }
    } else {
        (None, None)
    };
    Some(Arc::new(BackendProtocol { protocol, tls, broken }))
}

fn client_tls(
    ns: &str,
    ingress: &IngressProtocol,
    service: &ObjectKey,
    default_name: &str,
    protocol: Protocol,
    index: &Index,
    report: &mut impl FnMut(String),
) -> Result<UpstreamTls, String> {
    let mut ca: Option<Vec<u8>> = None;
    let mut client: Option<(Vec<u8>, Vec<u8>)> = None;
    if let Some(name) = &ingress.ssl_secret {
        let key = match name.split_once('/') {
            Some((ns, name)) => ObjectKey::new(ns, name),
            None => ObjectKey::new(ns, name.as_str()),
        };
        let secret = index.secrets.get(&key).ok_or_else(|| {
            format!(
                "proxy-ssl-secret {key} not found (erratum reads Secrets of type kubernetes.io/tls and Opaque; \
                 a CA bundle alone can be a ConfigMap named by {})",
                super::annotations::BACKEND_CA_CONFIGMAP
            )
        })?;
        ca = field(secret, "ca.crt");
        if let (Some(cert), Some(key)) = (field(secret, "tls.crt"), field(secret, "tls.key")) {
            client = Some((cert, key));
        }
        if ca.is_none() && ingress.verify == Some(true) {
            return Err(format!("proxy-ssl-secret {key} has no ca.crt to verify with"));
        }
    }
    if let Some(name) = &ingress.ca_configmap {
        let key = ObjectKey::new(ns, name.as_str());
        let map = index.config_maps.get(&key).ok_or_else(|| format!("ConfigMap {key} not found"))?;
        let pem = map
            .data
            .as_ref()
            .and_then(|d| d.get("ca.crt"))
            .ok_or_else(|| format!("ConfigMap {key} has no ca.crt"))?;
        ca = Some(pem.clone().into_bytes());
    }
    // A CA given means verify (ingress-nginx verifies only with `proxy-ssl-verify: on`);
    // none given means ingress-nginx's default, no verification, said out loud.
    let verify = ingress.verify.unwrap_or(ca.is_some());
    if !verify && ingress.verify.is_none() {
        report(format!(
            "TLS to service {service} is not verified (no CA given: ingress-nginx's default); \
             set proxy-ssl-secret or {} to verify, or proxy-ssl-verify: \"off\" to say so",
            super::annotations::BACKEND_CA_CONFIGMAP
        ));
    }
    if verify && ca.is_none() {
        return Err("proxy-ssl-verify is on but no CA is given (proxy-ssl-secret with ca.crt)".into());
    }
    let name = ingress.name.clone().unwrap_or_else(|| default_name.to_string());
    let server_name =
        ServerName::try_from(name.clone()).map_err(|_| format!("proxy-ssl-name {name:?} is not a name"))?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match (&ca, verify) {
        (Some(pem), true) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("ca.crt: {e}"))?;
                roots.add(cert).map_err(|e| format!("ca.crt: {e}"))?;
            }
            if roots.is_empty() {
                return Err("ca.crt holds no certificate".into());
            }
            builder.with_root_certificates(roots)
        }
        _ => builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerification(provider))),
    };
    let mut config = match &client {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("tls.crt: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("tls.key: {e}"))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| format!("client certificate: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = if protocol.http2() { vec![b"h2".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    // SNI by default (ingress-nginx's `proxy-ssl-server-name` defaults to off; erratum sends
    // it unless told not to: servers that host several names need it).
    config.enable_sni = ingress.sni.unwrap_or(true);

    let mut hasher = std::hash::DefaultHasher::new();
    (protocol.as_str(), &ca, &client, &name, verify, config.enable_sni).hash(&mut hasher);
    Ok(UpstreamTls {
        config: Arc::new(config),
        server_name,
        verified: verify,
        pool_tag: format!("{:016x}", hasher.finish()),
    })
}

/// TLS to an `auth-url` over HTTPS, as ingress-nginx does it: SNI, HTTP/1.1, the certificate
/// not verified (nginx's `proxy_ssl_verify` is off by default; reported on the Ingress).
/// One client configuration for all, made once.
pub fn unverified(name: &str) -> Result<UpstreamTls, String> {
    static CONFIG: std::sync::LazyLock<Result<Arc<ClientConfig>, String>> = std::sync::LazyLock::new(|| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    });
    let config = CONFIG.clone()?;
    let server_name =
        ServerName::try_from(name.to_string()).map_err(|_| format!("{name:?} is not a name"))?;
    Ok(UpstreamTls { config, server_name, verified: false, pool_tag: "auth-url".into() })
}

/// The `appProtocol` of the Service port `backend` resolves to.
pub fn app_protocol<'a>(index: &'a Index, backend: &super::Backend) -> Option<&'a str> {
    let spec = index.services.get(&backend.service)?.spec.as_ref()?;
    spec.ports
        .iter()
        .flatten()
        .find(|p| match &backend.port {
            super::PortRef::Number(n) => p.port == *n,
            super::PortRef::Name(name) => p.name.as_deref() == Some(name.as_str()),
        })?
        .app_protocol
        .as_deref()
}

fn field(secret: &Secret, name: &str) -> Option<Vec<u8>> {
    if let Some(v) = secret.data.as_ref().and_then(|d| d.get(name)) {
        return Some(v.0.clone());
    }
    secret.string_data.as_ref().and_then(|d| d.get(name)).map(|v| v.clone().into_bytes())
}

/// `proxy-ssl-verify: off`: any certificate is accepted, but the handshake's signatures are
/// still checked (the peer holds the key of the certificate it showed).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
