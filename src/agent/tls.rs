//! The agent's TLS configurations: mutual authentication against its own CA
//! with a revocation-aware verifier (`WebPkiClientVerifier` plus the current
//! revocation list), ALPN `fileagent/1`, and the pairing configuration
//! (ALPN `fileagent-pair/1`, no client certificate). The suite order is the
//! agent's, for this CPU ([`crate::wire::tls::Preference`]).

use std::sync::Arc;

use anyhow::{Context, Result};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};

use crate::agent::pki::AgentCredentials;
use crate::wire::protocol::{ALPN, PAIR_ALPN};
use crate::wire::tls::{Preference, provider_for, roots};
/// The agent's TLS configuration; its suite order wins over the client's.
/// Client certificates must chain to the agent's CA and not be on its
/// revocation list, which is read again whenever it changes.
pub(crate) fn server_config_for(
    creds: AgentCredentials,
    preference: Preference,
) -> Result<Arc<ServerConfig>> {
    let provider = provider_for(preference);
    let verifier = Arc::new(RevocationAware::new(
        Arc::new(roots(&creds.ca)?),
        provider.clone(),
        creds.revocations.clone(),
    )?);
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 is not available in the crypto provider")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![creds.cert], creds.key)
        .context("the server key does not match the server certificate")?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// The agent's TLS configuration for pairing connections (ALPN
/// `fileagent-pair/1`): no client certificate, and the CA is sent along with
/// the server certificate so the workstation can check it against the
/// pairing code.
pub(crate) fn pairing_server_config_for(
    creds: AgentCredentials,
    preference: Preference,
) -> Result<Arc<ServerConfig>> {
    let mut config = ServerConfig::builder_with_provider(provider_for(preference))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 is not available in the crypto provider")?
        .with_no_client_auth()
        .with_single_cert(vec![creds.cert, creds.ca], creds.key)
        .context("the server key does not match the server certificate")?;
    config.alpn_protocols = vec![PAIR_ALPN.to_vec()];
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// Checks client certificates with webpki against the agent's CA and its
/// current revocation list: the list's file is checked (a `stat`) on each
/// handshake and read again when it changed, so a revocation takes effect
/// for the next connection without a reload.
#[derive(Debug)]
struct RevocationAware {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    path: std::path::PathBuf,
    hints: Vec<rustls::DistinguishedName>,
    current: std::sync::RwLock<(Option<FileStamp>, Arc<dyn ClientCertVerifier>)>,
}

/// What identifies a version of a file without reading it.
type FileStamp = (std::time::SystemTime, u64, u64);

fn stamp(path: &std::path::Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

impl RevocationAware {
    fn new(
        roots: Arc<RootCertStore>,
        provider: Arc<CryptoProvider>,
        path: std::path::PathBuf,
    ) -> Result<RevocationAware> {
        let stamp = stamp(&path);
        let verifier = Self::build(&roots, &provider, &path)?;
        Ok(RevocationAware {
            hints: verifier.root_hint_subjects().to_vec(),
            roots,
            provider,
            path,
            current: std::sync::RwLock::new((stamp, verifier)),
        })
    }

    fn build(
        roots: &Arc<RootCertStore>,
        provider: &Arc<CryptoProvider>,
        path: &std::path::Path,
    ) -> Result<Arc<dyn ClientCertVerifier>> {
        let crls = match std::fs::read(path) {
            Ok(pem) => vec![
                CertificateRevocationListDer::from_pem_slice(&pem)
                    .with_context(|| format!("{} holds no revocation list", path.display()))?,
            ],
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .with_crls(crls)
            .only_check_end_entity_revocation()
            .allow_unknown_revocation_status()
            .build()
            .context("cannot build the client certificate verifier")
    }

    /// The verifier for the revocation list as it is now.
    fn verifier(&self) -> Arc<dyn ClientCertVerifier> {
        let now = stamp(&self.path);
        {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            if current.0 == now {
                return current.1.clone();
            }
        }
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        match Self::build(&self.roots, &self.provider, &self.path) {
            Ok(verifier) => {
                tracing::info!(path = %self.path.display(), "revocation list loaded");
                *current = (now, verifier);
            }
            // The previous list stays in force; a broken list never opens the door.
            Err(e) => tracing::error!(
                error = format!("{e:#}"),
                "cannot load the revocation list, keeping the previous one"
            ),
        }
        current.1.clone()
    }
}

impl ClientCertVerifier for RevocationAware {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let result = self
            .verifier()
            .verify_client_cert(end_entity, intermediates, now);
        if let Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked)) = &result {
            tracing::warn!(
                client_cn = %crate::wire::identity::common_name(end_entity).unwrap_or_default(),
                serial = %crate::wire::identity::serial_of(end_entity).unwrap_or_default(),
                "refused a revoked client certificate"
            );
        }
        result
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.verifier().supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::identity::Identity;
    use crate::wire::tls::{client_config_for, provider, suite_name};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Handshakes a server and a client with these preferences in memory;
    /// returns the suite both ends agreed on.
    async fn negotiate(server: Preference, client: Preference) -> String {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::agent::config::Config {
            state_dir: dir.path().join("state"),
            server_names: vec!["localhost".into()],
            ..crate::agent::config::Config::default()
        };
        crate::agent::pki::init(&config).unwrap();
        let issued = crate::agent::pki::issue_client(&config, "suite-test").unwrap();
        let identity = Identity::parse(issued.pem.as_bytes()).unwrap();
        let server_tls = server_config_for(
            crate::agent::pki::load_agent(&config.state_dir).unwrap(),
            server,
        )
        .unwrap();
        let client_tls = client_config_for(identity, client).unwrap();
        let (a, b) = tokio::io::duplex(64 * 1024);
        let accept = tokio::spawn(async move {
            let mut tls = tokio_rustls::TlsAcceptor::from(server_tls)
                .accept(a)
                .await
                .unwrap();
            let mut byte = [0];
            tls.read_exact(&mut byte).await.unwrap();
            suite_name(tls.get_ref().1.negotiated_cipher_suite().unwrap())
        });
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(client_tls)
            .connect(name, b)
            .await
            .unwrap();
        tls.write_all(b"x").await.unwrap();
        tls.flush().await.unwrap();
        let client_side = suite_name(tls.get_ref().1.negotiated_cipher_suite().unwrap());
        let server_side = accept.await.unwrap();
        assert_eq!(client_side, server_side);
        client_side
    }

    #[test]
    fn revocations_apply_at_once_and_a_broken_list_keeps_the_last_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::agent::config::Config {
            state_dir: dir.path().join("state"),
            server_names: vec!["localhost".into()],
            ..crate::agent::config::Config::default()
        };
        crate::agent::pki::init(&config).unwrap();
        let alice = Identity::parse(
            crate::agent::pki::issue_client(&config, "alice")
                .unwrap()
                .pem
                .as_bytes(),
        )
        .unwrap();
        let bob = Identity::parse(
            crate::agent::pki::issue_client(&config, "bob")
                .unwrap()
                .pem
                .as_bytes(),
        )
        .unwrap();
        let creds = crate::agent::pki::load_agent(&config.state_dir).unwrap();
        let verifier = RevocationAware::new(
            Arc::new(roots(&creds.ca).unwrap()),
            provider(),
            creds.revocations.clone(),
        )
        .unwrap();
        let verify = |id: &Identity| {
            verifier.verify_client_cert(&id.cert, &[], rustls_pki_types::UnixTime::now())
        };
        assert!(verify(&alice).is_ok() && verify(&bob).is_ok());
        crate::agent::pki::registry::revoke(&config, "alice").unwrap();
        assert!(matches!(
            verify(&alice),
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Revoked
            ))
        ));
        assert!(verify(&bob).is_ok());
        // A list that cannot be read does not let alice back in.
        std::fs::write(&creds.revocations, "garbage").unwrap();
        assert!(verify(&alice).is_err());
        assert!(verify(&bob).is_ok());
    }

    #[tokio::test]
    async fn the_agents_preference_wins() {
        let chacha = "TLS13_CHACHA20_POLY1305_SHA256";
        let aes = "TLS13_AES_128_GCM_SHA256";
        assert_eq!(
            negotiate(Preference::ChaCha20, Preference::AesGcm).await,
            chacha
        );
        assert_eq!(
            negotiate(Preference::ChaCha20, Preference::ChaCha20).await,
            chacha
        );
        assert_eq!(
            negotiate(Preference::AesGcm, Preference::ChaCha20).await,
            aes
        );
        assert_eq!(negotiate(Preference::AesGcm, Preference::AesGcm).await, aes);
    }
}
