//! TLS certificates of the routing table: Ingress `spec.tls` Secrets, chosen by SNI.
//!
//! Pure: PEM is parsed and the key loaded while the table is built, so a handshake only
//! clones an `Arc<CertifiedKey>` from the current snapshot.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::route::{normalize_host, wildcard_suffix};

/// Certificates by server name.
#[derive(Clone, Debug, Default)]
pub struct TlsTable {
    pub(crate) exact: HashMap<String, Arc<CertifiedKey>>,
    pub(crate) wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// From an Ingress `tls` entry without hosts: served when SNI matches nothing.
    pub(crate) default: Option<Arc<CertifiedKey>>,
}

impl TlsTable {
    /// The certificate for a TLS ClientHello's server name.
    pub fn lookup(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = server_name {
            let name = normalize_host(name);
            if let Some(cert) = self.exact.get(&*name) {
                return Some(cert.clone());
            }
            if let Some(cert) = wildcard_suffix(&name).and_then(|s| self.wildcard.get(s)) {
                return Some(cert.clone());
            }
        }
        self.default.clone()
    }

    /// Number of server names with a certificate.
    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    /// Whether no certificate is configured.
    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.default.is_none()
    }
}

/// Loads a `kubernetes.io/tls` Secret into a certificate chain and signing key.
pub(crate) fn load_secret(secret: &Secret) -> Result<Arc<CertifiedKey>, String> {
    if let Some(t) = secret.type_.as_deref().filter(|t| *t != "kubernetes.io/tls") {
        return Err(format!("secret type is {t:?}, expected \"kubernetes.io/tls\""));
    }
    let field = |name: &str| -> Result<Vec<u8>, String> {
        if let Some(v) = secret.data.as_ref().and_then(|d| d.get(name)) {
            return Ok(v.0.clone());
        }
        if let Some(v) = secret.string_data.as_ref().and_then(|d| d.get(name)) {
            return Ok(v.clone().into_bytes());
        }
        Err(format!("secret has no {name}"))
    };
    let cert_pem = field("tls.crt")?;
    let key_pem = field("tls.key")?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls.crt: {e}"))?;
    if chain.is_empty() {
        return Err("tls.crt holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| format!("tls.key: {e}"))?;
    let signing_key =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| format!("tls.key: {e}"))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|e| format!("tls.crt does not match tls.key: {e}"))?;
    Ok(Arc::new(certified))
}
