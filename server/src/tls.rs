//! TLS for the public listener: the certificate and key from `[tls]`,
//! loaded once at startup.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Tls;

/// Builds the rustls config from `[tls]`, or `None` when TLS is off. Every
/// error names the config key whose file is at fault, so a bad deployment
/// fails at startup with something an operator can act on.
pub fn server_config(tls: &Tls) -> Result<Option<Arc<ServerConfig>>, String> {
    let (Some(cert_path), Some(key_path)) = (&tls.cert, &tls.key) else {
        return Ok(None);
    };
    let cert_pem = read("tls.cert", cert_path)?;
    let key_pem = read("tls.key", key_path)?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            format!(
                "tls.cert {}: not a PEM certificate: {e}",
                cert_path.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "tls.cert {}: no PEM certificate in the file",
            cert_path.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("tls.key {}: not a PEM private key: {e}", key_path.display()))?;
    // ring rather than the process-wide default provider: aws-lc-rs would
    // need cmake to build, and nothing else here installs a default.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "tls.key {} does not fit tls.cert {}: {e}",
                key_path.display(),
                cert_path.display()
            )
        })?;
    // HTTP/1.1 only: WebSockets are HTTP/1.1 upgrades here, and a browser
    // offered h2 would expect RFC 8441 WebSockets, which are not served.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{key} {}: cannot read: {e}", path.display()))
}
