//! rustls configurations for both ends: TLS 1.3 only, the `ring` provider,
//! ALPN `fileagent/1`, and mutual authentication against the agent's own CA.
//!
//! The agent accepts only client certificates that chain to its CA
//! (`WebPkiClientVerifier`); the workstation accepts only a server
//! certificate that chains to the CA in its identity file. There is no
//! trust-on-first-use and no way to switch verification off.
//!
//! Cipher suite: both ends prefer AES-GCM where the CPU has AES and
//! carry-less multiply instructions, and ChaCha20-Poly1305 where it has not
//! (Raspberry Pi 2, 3 and 4: their Cortex-A53/A72 cores lack the ARMv8
//! crypto extensions, and software AES-GCM is far slower there). The agent's
//! order wins, since the Pi is the end that limits throughput.

use std::sync::Arc;

use anyhow::{Context, Result};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};

use crate::identity::Identity;
use crate::pki::AgentCredentials;
use crate::protocol::{ALPN, PAIR_ALPN};

/// Which TLS 1.3 AEAD this end prefers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preference {
    /// AES-GCM first: the CPU accelerates it.
    AesGcm,
    /// ChaCha20-Poly1305 first: no AES instructions.
    ChaCha20,
}

impl Preference {
    /// Chooses by the CPU this process runs on (detected at run time).
    pub fn detect() -> Preference {
        Preference::for_cpu(cpu_has_aes())
    }

    /// The preference for a CPU with or without AES acceleration.
    pub fn for_cpu(has_aes: bool) -> Preference {
        if has_aes {
            Preference::AesGcm
        } else {
            Preference::ChaCha20
        }
    }

    /// Why, for the log and `fileagent status`.
    pub fn describe(self) -> &'static str {
        match self {
            Preference::AesGcm => "prefers AES-GCM (CPU has AES instructions)",
            Preference::ChaCha20 => "prefers ChaCha20-Poly1305 (CPU has no AES instructions)",
        }
    }
}

/// Whether the CPU has AES and carry-less multiply instructions (what
/// ring's AES-GCM needs to be fast).
fn cpu_has_aes() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(all(target_arch = "arm", target_os = "linux"))]
    {
        // AArch32 reports the ARMv8 crypto extensions in AT_HWCAP2.
        const HWCAP2_AES: usize = 1 << 0;
        const HWCAP2_PMULL: usize = 1 << 1;
        let (_, hwcap2) = rustix::param::linux_hwcap();
        hwcap2 & (HWCAP2_AES | HWCAP2_PMULL) == HWCAP2_AES | HWCAP2_PMULL
    }
    #[cfg(not(any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        all(target_arch = "arm", target_os = "linux")
    )))]
    {
        false
    }
}

/// The crypto provider used everywhere (`ring`: small, cross-compiles with
/// only a C cross compiler), with its TLS 1.3 suites in `preference` order.
pub fn provider_for(preference: Preference) -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
    };
    let cipher_suites = match preference {
        Preference::AesGcm => vec![
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
            TLS13_CHACHA20_POLY1305_SHA256,
        ],
        Preference::ChaCha20 => vec![
            TLS13_CHACHA20_POLY1305_SHA256,
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
        ],
    };
    Arc::new(CryptoProvider {
        cipher_suites,
        ..rustls::crypto::ring::default_provider()
    })
}

/// [`provider_for`] this CPU.
pub fn provider() -> Arc<CryptoProvider> {
    provider_for(Preference::detect())
}

fn roots(ca: &CertificateDer<'static>) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.clone())
        .context("the agent CA certificate is not usable as a trust anchor")?;
    Ok(roots)
}

/// The agent's TLS configuration for this CPU.
pub fn server_config(creds: AgentCredentials) -> Result<Arc<ServerConfig>> {
    server_config_for(creds, Preference::detect())
}

/// The agent's TLS configuration; its suite order wins over the client's.
/// Client certificates must chain to the agent's CA and not be on its
/// revocation list, which is read again whenever it changes.
pub fn server_config_for(
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
pub fn pairing_server_config_for(
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
                client_cn = %crate::identity::common_name(end_entity).unwrap_or_default(),
                serial = %crate::identity::serial_of(end_entity).unwrap_or_default(),
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

/// A workstation's TLS configuration for talking to the agent of
/// `identity`, for this CPU.
pub fn client_config(identity: Identity) -> Result<Arc<ClientConfig>> {
    client_config_for(identity, Preference::detect())
}

/// A workstation's TLS configuration with a given suite preference.
pub fn client_config_for(identity: Identity, preference: Preference) -> Result<Arc<ClientConfig>> {
    let mut config = ClientConfig::builder_with_provider(provider_for(preference))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 is not available in the crypto provider")?
        .with_root_certificates(roots(&identity.ca)?)
        .with_client_auth_cert(vec![identity.cert], identity.key)
        .context("the identity's key does not match its certificate")?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// The TLS 1.3 suite a connection negotiated, e.g.
/// `TLS13_CHACHA20_POLY1305_SHA256`.
pub fn suite_name(suite: rustls::SupportedCipherSuite) -> String {
    format!("{:?}", suite.suite())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn the_preference_follows_the_cpu() {
        assert_eq!(Preference::for_cpu(true), Preference::AesGcm);
        assert_eq!(Preference::for_cpu(false), Preference::ChaCha20);
        let first = |p| suite_name(provider_for(p).cipher_suites[0]);
        assert_eq!(first(Preference::AesGcm), "TLS13_AES_128_GCM_SHA256");
        assert_eq!(
            first(Preference::ChaCha20),
            "TLS13_CHACHA20_POLY1305_SHA256"
        );
        for p in [Preference::AesGcm, Preference::ChaCha20] {
            assert_eq!(
                provider_for(p).cipher_suites.len(),
                3,
                "all suites stay available"
            );
        }
    }

    /// Handshakes a server and a client with these preferences in memory;
    /// returns the suite both ends agreed on.
    async fn negotiate(server: Preference, client: Preference) -> String {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::Config {
            state_dir: dir.path().join("state"),
            server_names: vec!["localhost".into()],
            ..crate::config::Config::default()
        };
        crate::pki::init(&config).unwrap();
        let issued = crate::pki::issue_client(&config, "suite-test").unwrap();
        let identity = Identity::parse(issued.pem.as_bytes()).unwrap();
        let server_tls =
            server_config_for(crate::pki::load_agent(&config.state_dir).unwrap(), server).unwrap();
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
        let config = crate::config::Config {
            state_dir: dir.path().join("state"),
            server_names: vec!["localhost".into()],
            ..crate::config::Config::default()
        };
        crate::pki::init(&config).unwrap();
        let alice = Identity::parse(
            crate::pki::issue_client(&config, "alice")
                .unwrap()
                .pem
                .as_bytes(),
        )
        .unwrap();
        let bob = Identity::parse(
            crate::pki::issue_client(&config, "bob")
                .unwrap()
                .pem
                .as_bytes(),
        )
        .unwrap();
        let creds = crate::pki::load_agent(&config.state_dir).unwrap();
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
        crate::clients::revoke(&config, "alice").unwrap();
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
