//! TLS for `wss://` upstreams: rustls with ring (as the public listener;
//! aws-lc-rs would need cmake), Mozilla's root certificates compiled in
//! (webpki-roots), so a certificate is judged the same on every host
//! whatever its system store holds, and ALPN `http/1.1`, the only HTTP a
//! WebSocket handshake here speaks.

use std::sync::{Arc, LazyLock};

use rustls::ClientConfig;

/// The client configuration every upstream uses by default.
pub fn default_config() -> Arc<ClientConfig> {
    static CONFIG: LazyLock<Arc<ClientConfig>> = LazyLock::new(|| {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        config_trusting(roots)
    });
    CONFIG.clone()
}

/// A client configuration that trusts `roots` only.
pub fn config_trusting(roots: rustls::RootCertStore) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}
