//! rustls configurations for both ends: TLS 1.3 only, the `ring` provider,
//! ALPN `fileagent/1`, and mutual authentication against the agent's own CA.
//!
//! The agent accepts only client certificates that chain to its CA
//! (`WebPkiClientVerifier`); the workstation accepts only a server
//! certificate that chains to the CA in its identity file. There is no
//! trust-on-first-use and no way to switch verification off.

use std::sync::Arc;

use anyhow::{Context, Result};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::CertificateDer;

use crate::identity::Identity;
use crate::pki::AgentCredentials;
use crate::protocol::ALPN;

/// The crypto provider used everywhere (`ring`: small, cross-compiles with
/// only a C cross compiler).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &CertificateDer<'static>) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.clone())
        .context("the agent CA certificate is not usable as a trust anchor")?;
    Ok(roots)
}

/// The agent's TLS configuration.
pub fn server_config(creds: AgentCredentials) -> Result<Arc<ServerConfig>> {
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(&creds.ca)?), provider())
            .build()
            .context("cannot build the client certificate verifier")?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 is not available in the crypto provider")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![creds.cert], creds.key)
        .context("the server key does not match the server certificate")?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// A workstation's TLS configuration for talking to the agent of `identity`.
pub fn client_config(identity: Identity) -> Result<Arc<ClientConfig>> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 is not available in the crypto provider")?
        .with_root_certificates(roots(&identity.ca)?)
        .with_client_auth_cert(vec![identity.cert], identity.key)
        .context("the identity's key does not match its certificate")?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}
