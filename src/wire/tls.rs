//! The TLS both ends share: TLS 1.3 only, the `ring` provider with the
//! suite order this CPU prefers, the workstation's client configuration
//! (mutual authentication against the CA in its identity file) and suite
//! names. The agent's server side is `agent::tls`.
//!
//! There is no trust-on-first-use and no way to switch verification off.
//!
//! Cipher suite: both ends prefer AES-GCM where the CPU has AES and
//! carry-less multiply instructions, and ChaCha20-Poly1305 where it has not
//! (Raspberry Pi 2, 3 and 4: their Cortex-A53/A72 cores lack the ARMv8
//! crypto extensions, and software AES-GCM is far slower there). The agent's
//! order wins, since the Pi is the end that limits throughput.

use std::sync::Arc;

use anyhow::{Context, Result};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;

use crate::wire::identity::Identity;
use crate::wire::protocol::ALPN;

/// Which TLS 1.3 AEAD this end prefers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preference {
    /// AES-GCM first: the CPU accelerates it.
    AesGcm,
    /// ChaCha20-Poly1305 first: no AES instructions.
    ChaCha20,
}

/// Overrides the CPU's choice: `chacha20` or `aes-gcm`. What a Raspberry
/// Pi without AES instructions negotiates can so be measured on any
/// machine (`just bench`'s Pi-shaped row sets it on the agent, whose order
/// wins). Any other value is ignored.
pub const PREFER_ENV: &str = "FILEAGENT_TLS_PREFER";

impl Preference {
    /// Chooses by the CPU this process runs on (detected at run time),
    /// unless [`PREFER_ENV`] says otherwise.
    pub fn detect() -> Preference {
        Preference::forced().unwrap_or_else(|| Preference::for_cpu(cpu_has_aes()))
    }

    /// The preference [`PREFER_ENV`] sets, if it sets one.
    fn forced() -> Option<Preference> {
        Preference::named(&std::env::var(PREFER_ENV).ok()?)
    }

    /// `chacha20` or `aes-gcm`.
    fn named(name: &str) -> Option<Preference> {
        match name.trim().to_ascii_lowercase().as_str() {
            "chacha20" => Some(Preference::ChaCha20),
            "aes-gcm" => Some(Preference::AesGcm),
            _ => None,
        }
    }

    /// The preference for a CPU with or without AES acceleration.
    pub(crate) fn for_cpu(has_aes: bool) -> Preference {
        if has_aes {
            Preference::AesGcm
        } else {
            Preference::ChaCha20
        }
    }

    /// Why, for the log and `fileagent status`; a value of [`PREFER_ENV`]
    /// that is not a preference is said to be ignored.
    pub(crate) fn describe(self) -> String {
        let suite = match self {
            Preference::AesGcm => "AES-GCM",
            Preference::ChaCha20 => "ChaCha20-Poly1305",
        };
        let cpu = match self {
            Preference::AesGcm => "CPU has AES instructions",
            Preference::ChaCha20 => "CPU has no AES instructions",
        };
        let why = match std::env::var(PREFER_ENV) {
            Ok(value) if Preference::named(&value) == Some(self) => format!("set by {PREFER_ENV}"),
            Ok(value) => format!("{cpu}; {PREFER_ENV}={value:?} ignored: use chacha20 or aes-gcm"),
            Err(_) => cpu.to_string(),
        };
        format!("prefers {suite} ({why})")
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
pub(crate) fn provider_for(preference: Preference) -> Arc<CryptoProvider> {
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

/// `provider_for` this CPU.
pub fn provider() -> Arc<CryptoProvider> {
    provider_for(Preference::detect())
}

pub(crate) fn roots(ca: &CertificateDer<'static>) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.clone())
        .context("the agent CA certificate is not usable as a trust anchor")?;
    Ok(roots)
}

/// A workstation's TLS configuration for talking to the agent of
/// `identity`, for this CPU.
pub fn client_config(identity: Identity) -> Result<Arc<ClientConfig>> {
    client_config_for(identity, Preference::detect())
}

/// A workstation's TLS configuration with a given suite preference.
pub(crate) fn client_config_for(
    identity: Identity,
    preference: Preference,
) -> Result<Arc<ClientConfig>> {
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
pub(crate) fn suite_name(suite: rustls::SupportedCipherSuite) -> String {
    format!("{:?}", suite.suite())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preference_can_be_named() {
        assert_eq!(Preference::named("chacha20"), Some(Preference::ChaCha20));
        assert_eq!(Preference::named(" AES-GCM "), Some(Preference::AesGcm));
        assert_eq!(Preference::named("rc4"), None);
    }

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
}
