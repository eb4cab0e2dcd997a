//! The agent's small PKI, made with rcgen: its CA, its server certificate and
//! the client identities it issues.
//!
//! Layout of `state_dir`: `ca.key`, `ca.crt`, `server.key`, `server.crt`, and
//! `clients/<name>-<serial>.crt` recording every issued client certificate.
//! Keys are ECDSA P-256, written once with mode 0600 and never overwritten:
//! [`init`] is idempotent. The server certificate is re-signed (same key)
//! when the configured names change or it nears expiry.
//!
//! The client side, in `client`: [`issue_client`] writes the identity files
//! that [`crate::wire::identity`] reads, and `sign_client_csr` signs a key a
//! workstation made for itself (pairing, renewal).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;

use crate::agent::config::Config;
use crate::durable::{self, Existing};
use crate::wire::identity::{fingerprint, host_name};

mod client;
pub mod registry;
mod server;

pub(crate) use client::sign_client_csr;
pub use client::{IssuedClient, SignedClient, identity_pem, issue_client};
pub(crate) use server::server_cert_due;
pub use server::{ServerCertAction, server_names};

/// Lifetime of the agent's CA.
pub(crate) const CA_LIFETIME: Duration = Duration::from_secs(20 * 365 * 24 * 3600);
/// Certificates are valid from this long before issue, for clock skew.
const BACKDATE: Duration = Duration::from_secs(3600);

const CA_KEY: &str = "ca.key";
const CA_CERT: &str = "ca.crt";
const SERVER_KEY: &str = "server.key";
const SERVER_CERT: &str = "server.crt";
/// Folder in `state_dir` with a copy of every issued client certificate.
pub(crate) const CLIENTS_DIR: &str = "clients";
/// The revocation list in `state_dir` (PEM, signed by the agent's CA).
pub(crate) const REVOCATION_LIST: &str = "revoked.crl";

/// What [`init`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitReport {
    /// A new CA was created.
    pub created_ca: bool,
    /// What happened to the server certificate.
    pub server_cert: ServerCertAction,
    /// Names in the server certificate.
    pub names: Vec<String>,
    /// SHA-256 fingerprint of the CA certificate.
    pub ca_fingerprint: String,
}

/// The agent's TLS material, loaded from `state_dir`.
#[derive(Debug)]
pub struct AgentCredentials {
    /// The CA that client certificates must chain to.
    pub ca: CertificateDer<'static>,
    /// The server certificate.
    pub cert: CertificateDer<'static>,
    /// The server's private key.
    pub key: PrivateKeyDer<'static>,
    /// The certificate revocation list, read again whenever it changes
    /// (it need not exist).
    pub revocations: std::path::PathBuf,
}

/// Fails unless `state_dir` holds the agent's CA: every command but `serve`
/// and `init` works on an existing agent's keys, and making new ones in a
/// stray `./fileagent-data` would print codes and certificates no running
/// agent knows. `source` says where the config came from.
pub(crate) fn require_existing(
    config: &Config,
    source: &crate::agent::config::Source,
) -> Result<()> {
    let dir = &config.state_dir;
    if dir.join(CA_KEY).exists() {
        return Ok(());
    }
    let shown = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
    let hint = match source {
        crate::agent::config::Source::BuiltIn => format!(
            "without a config file the state directory is ./{} in the current directory; run this \
             command where `fileagent serve` runs, or pass the agent's config with --config \
             (a package install has /etc/fileagent/config.toml, which is found by itself)",
            crate::agent::config::LOCAL_DATA_DIR
        ),
        crate::agent::config::Source::File(path) => format!(
            "that is the state_dir of {}; is it the agent's config? `fileagent serve` or \
             `fileagent init` creates the keys",
            path.display()
        ),
    };
    Err(NoAgentKeys(format!(
        "no agent keys in {} (config: {source}): {hint}",
        shown.display()
    ))
    .into())
}

/// `require_existing` found no CA: the command was run in the wrong place
/// or with the wrong config (a usage error, not a fault of the agent).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NoAgentKeys(String);

/// Creates `state_dir` and, where absent, the CA and the server key; (re)signs
/// the server certificate when missing, near expiry or for other names.
pub fn init(config: &Config) -> Result<InitReport> {
    let dir = &config.state_dir;
    create_private_dir(dir)?;
    create_private_dir(&dir.join(CLIENTS_DIR))?;

    let created_ca = !dir.join(CA_KEY).exists();
    if created_ca {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        // A random tag keeps CAs of same-named hosts (every "raspberrypi")
        // apart, so a foreign certificate is reported as unknown, not forged.
        let tag = hex::encode(&random_serial()?[..4]);
        let name = format!("fileagent CA on {} ({tag})", host_name());
        let mut params = base_params(&name, CA_LIFETIME)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key)?;
        // The certificate first: a key without a certificate would be
        // unusable, while a certificate without its key is simply redone.
        write_new(&dir.join(CA_CERT), cert.pem().as_bytes(), 0o644)?;
        write_new(&dir.join(CA_KEY), key.serialize_pem().as_bytes(), 0o600)?;
    }
    let ca = load_ca(dir)?;

    let names = server_names(config);
    let action = server::ensure_cert(dir, &ca, &names)?;
    Ok(InitReport {
        created_ca,
        server_cert: action,
        names,
        ca_fingerprint: fingerprint(&ca.der),
    })
}

/// Loads the agent's CA, server certificate and key from `state_dir`.
pub fn load_agent(state_dir: &Path) -> Result<AgentCredentials> {
    let read_cert = |name: &str| -> Result<CertificateDer<'static>> {
        let path = state_dir.join(name);
        CertificateDer::from_pem_file(&path)
            .with_context(|| format!("cannot read certificate {}", path.display()))
    };
    let key_path = state_dir.join(SERVER_KEY);
    Ok(AgentCredentials {
        ca: read_cert(CA_CERT)?,
        cert: read_cert(SERVER_CERT)?,
        key: PrivateKeyDer::from_pem_file(&key_path)
            .with_context(|| format!("cannot read key {}", key_path.display()))?,
        revocations: state_dir.join(REVOCATION_LIST),
    })
}

/// Writes `contents` to a new file with `mode`, atomically; never replaces.
pub(crate) fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    durable::write(path, contents, mode, Existing::Keep)
        .with_context(|| format!("cannot create {} (does it already exist?)", path.display()))
}

fn replace(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    durable::write(path, contents, mode, Existing::Replace)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn create_private_dir(dir: &Path) -> Result<()> {
    durable::create_dir(dir, 0o700)
        .with_context(|| format!("cannot create directory {}", dir.display()))
}

fn base_params(common_name: &str, lifetime: Duration) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "fileagent");
    params.distinguished_name = dn;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + lifetime;
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
    Ok(params)
}

fn random_serial() -> Result<[u8; 16]> {
    let mut serial = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut serial)
        .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
    serial[0] &= 0x7f; // positive
    serial[0] |= 0x01; // and of full length
    Ok(serial)
}

fn read_key(path: &Path) -> Result<KeyPair> {
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read key {}", path.display()))?;
    KeyPair::from_pem(&pem).with_context(|| format!("{} is not a valid key", path.display()))
}

/// The CA as an rcgen issuer, with its certificate as DER and as PEM text.
pub(crate) struct Ca {
    pub(crate) issuer: Issuer<'static, KeyPair>,
    pub(crate) der: CertificateDer<'static>,
    pub(crate) pem: String,
}

/// Loads the agent's CA certificate and key from `dir`.
pub(crate) fn load_ca(dir: &Path) -> Result<Ca> {
    let cert_path = dir.join(CA_CERT);
    let pem = std::fs::read_to_string(&cert_path).with_context(|| {
        format!(
            "cannot read the agent CA {} (run `fileagent init` first)",
            cert_path.display()
        )
    })?;
    let der = CertificateDer::from_pem_slice(pem.as_bytes())
        .with_context(|| format!("{} holds no certificate", cert_path.display()))?;
    let key = read_key(&dir.join(CA_KEY))?;
    let issuer = Issuer::from_ca_cert_der(&der, key)
        .with_context(|| format!("{} is not a usable CA certificate", cert_path.display()))?;
    Ok(Ca { issuer, der, pem })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    pub(crate) fn config_in(dir: &Path) -> Config {
        Config {
            state_dir: dir.join("state"),
            spool_dir: dir.join("spool"),
            server_names: vec!["localhost".into(), "127.0.0.1".into()],
            ..Config::default()
        }
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn init_is_idempotent_and_keys_are_private() {
        let tmp = tempfile::tempdir().unwrap();
        let config = config_in(tmp.path());
        let first = init(&config).unwrap();
        assert!(first.created_ca);
        assert_eq!(first.server_cert, ServerCertAction::Created);
        let ca_key = std::fs::read(config.state_dir.join(CA_KEY)).unwrap();
        let server_key = std::fs::read(config.state_dir.join(SERVER_KEY)).unwrap();
        for key in [CA_KEY, SERVER_KEY] {
            assert_eq!(mode(&config.state_dir.join(key)), 0o600, "{key}");
        }
        assert_eq!(mode(&config.state_dir), 0o700);

        let second = init(&config).unwrap();
        assert!(!second.created_ca);
        assert_eq!(second.server_cert, ServerCertAction::Kept);
        assert_eq!(second.ca_fingerprint, first.ca_fingerprint);
        assert_eq!(
            std::fs::read(config.state_dir.join(CA_KEY)).unwrap(),
            ca_key
        );
        assert_eq!(
            std::fs::read(config.state_dir.join(SERVER_KEY)).unwrap(),
            server_key
        );
    }

    #[test]
    fn new_server_names_renew_the_certificate_with_the_same_key() {
        let tmp = tempfile::tempdir().unwrap();
        let mut config = config_in(tmp.path());
        init(&config).unwrap();
        let key = std::fs::read(config.state_dir.join(SERVER_KEY)).unwrap();
        config.server_names.push("printer.example".into());
        let report = init(&config).unwrap();
        assert_eq!(report.server_cert, ServerCertAction::Renewed);
        assert_eq!(
            std::fs::read(config.state_dir.join(SERVER_KEY)).unwrap(),
            key
        );
        assert_eq!(init(&config).unwrap().server_cert, ServerCertAction::Kept);
    }

    /// Gives the server certificate only `left` of validity.
    pub(crate) fn age_server_cert(config: &Config, left: Duration) {
        let ca = load_ca(&config.state_dir).unwrap();
        server::sign_server_cert(&config.state_dir, &ca, &server_names(config), left).unwrap();
    }

    #[test]
    fn a_server_certificate_near_expiry_is_renewed_with_the_same_key() {
        let tmp = tempfile::tempdir().unwrap();
        let config = config_in(tmp.path());
        init(&config).unwrap();
        assert!(!server_cert_due(&config));
        let key = std::fs::read(config.state_dir.join(SERVER_KEY)).unwrap();
        age_server_cert(&config, Duration::from_secs(10 * 24 * 3600));
        assert!(server_cert_due(&config));
        assert_eq!(
            init(&config).unwrap().server_cert,
            ServerCertAction::Renewed
        );
        assert!(!server_cert_due(&config));
        assert_eq!(
            std::fs::read(config.state_dir.join(SERVER_KEY)).unwrap(),
            key
        );
    }

    #[test]
    fn default_names_cover_host_localhost_and_listen_ip() {
        let config = Config::default();
        let names = server_names(&config);
        assert!(names.contains(&"localhost".to_string()));
        assert!(names.contains(&"127.0.0.1".to_string()));
        let local = Config::local();
        assert!(server_names(&local).contains(&"127.0.0.1".to_string()));
    }

    #[test]
    fn write_new_never_overwrites() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("k");
        write_new(&path, b"one", 0o600).unwrap();
        assert!(write_new(&path, b"two", 0o600).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
    }
}
