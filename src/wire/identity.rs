//! A workstation's identity file and certificate helpers shared by both
//! ends: the CN of a certificate and its SHA-256 fingerprint.
//!
//! An identity file holds, in this order, the client's private key, its
//! certificate and the agent's CA certificate (PEM). `pki::issue_client`
//! writes them; the client reads them here.

use std::path::Path;

use anyhow::{Context, Result, bail};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The workstation renews its certificate when it has less than this left.
pub(crate) const RENEW_BEFORE: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// A workstation's identity: its key, its certificate and the agent's CA.
#[derive(Debug)]
pub struct Identity {
    /// Client private key.
    pub key: PrivateKeyDer<'static>,
    /// Client certificate.
    pub cert: CertificateDer<'static>,
    /// The agent's CA, the only trust anchor for the agent's certificate.
    pub ca: CertificateDer<'static>,
}

impl Identity {
    /// Reads an identity file (key, client certificate, agent CA).
    pub fn load(path: &Path) -> Result<Identity> {
        let text = std::fs::read(path)
            .with_context(|| format!("cannot read identity file {}", path.display()))?;
        Identity::parse(&text)
            .with_context(|| format!("{} is not a fileagent identity file", path.display()))
    }

    /// Reads an identity file whose certificate is valid now; fails with
    /// advice otherwise (see [`Identity::check_validity`]).
    pub fn load_valid(path: &Path) -> Result<Identity> {
        let identity = Identity::load(path)?;
        identity.check_validity()?;
        Ok(identity)
    }

    /// Parses an identity file's text.
    pub fn parse(text: &[u8]) -> Result<Identity> {
        let key = PrivateKeyDer::from_pem_slice(text).context("no private key found")?;
        let certs = CertificateDer::pem_slice_iter(text)
            .collect::<Result<Vec<_>, _>>()
            .context("a certificate is malformed")?;
        let [cert, ca] = <[_; 2]>::try_from(certs).map_err(|certs| {
            anyhow::anyhow!(
                "expected 2 certificates (client, then agent CA), found {}",
                certs.len()
            )
        })?;
        Ok(Identity { key, cert, ca })
    }

    /// The client name (CN of the certificate).
    pub fn name(&self) -> String {
        common_name(&self.cert).unwrap_or_default()
    }

    /// When the client certificate expires.
    pub fn expires(&self) -> Result<OffsetDateTime> {
        let (_, cert) = X509Certificate::from_der(&self.cert).context("unreadable certificate")?;
        Ok(cert.validity().not_after.to_datetime())
    }

    /// Whether the certificate is within [`RENEW_BEFORE`] of its expiry.
    pub(crate) fn due_for_renewal(&self) -> bool {
        self.expires()
            .is_ok_and(|at| at < OffsetDateTime::now_utc() + RENEW_BEFORE)
    }

    /// Fails with advice when the client certificate is expired or not yet valid.
    pub fn check_validity(&self) -> Result<()> {
        let (_, cert) = X509Certificate::from_der(&self.cert).context("unreadable certificate")?;
        let validity = cert.validity();
        let now = OffsetDateTime::now_utc();
        if now > validity.not_after.to_datetime() {
            bail!(
                "the client certificate \"{}\" expired on {}: ask the agent's administrator for a \
                 new pairing code (`fileagent pair`) and pair again",
                self.name(),
                validity.not_after
            );
        }
        if now < validity.not_before.to_datetime() {
            bail!(
                "the client certificate is not valid before {}: check this machine's clock",
                validity.not_before
            );
        }
        Ok(())
    }
}

/// The subject CN of a DER certificate, if it has one.
pub(crate) fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// SHA-256 fingerprint of a DER certificate, as lower-case hex.
pub fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(der))
}

/// The serial number (hex) of a DER certificate.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))] // used by the agent (Linux only)
pub(crate) fn serial_of(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    Some(hex::encode(cert.raw_serial()))
}

/// The text of an identity file: a comment, the client's key, its
/// certificate and the agent's CA (all PEM), as the agent issues it and as a
/// workstation saves what it was issued.
pub(crate) fn identity_file(
    name: &str,
    serial: &str,
    not_after: OffsetDateTime,
    key_pem: &str,
    cert_pem: &str,
    ca_pem: &str,
) -> String {
    let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes())
        .ok()
        .and_then(|der| common_name(&der))
        .unwrap_or_default();
    format!(
        "# fileagent identity for client \"{name}\", serial {serial}\n\
         # issued by {ca}, valid until {not_after}\n\
         # keep this file private: it holds the client's key\n{key_pem}{cert_pem}{ca_pem}"
    )
}

/// Longest client name (it becomes the certificate's CN and a file name).
pub(crate) const MAX_CLIENT_NAME_LEN: usize = 64;

/// Client names become certificate CNs and file names: keep them plain.
pub(crate) fn validate_client_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_CLIENT_NAME_LEN
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        bail!(
            "invalid client name {name:?}: use 1 to {MAX_CLIENT_NAME_LEN} letters, digits, '.', '_' \
             or '-', not starting with '.' or '-' (e.g. \"alice-laptop\")"
        );
    }
    Ok(())
}

/// This host's name (`uname -n`): what names in certificates default to
/// (the agent's server names, a workstation's client name).
#[cfg(unix)]
pub(crate) fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// This host's name (`COMPUTERNAME` on Windows): what names in
/// certificates default to (a workstation's client name).
#[cfg(not(unix))]
pub(crate) fn host_name() -> String {
    std::env::var("COMPUTERNAME").unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> (String, String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (key.serialize_pem(), cert.pem(), cert.pem())
    }

    #[test]
    fn comments_between_blocks_are_fine() {
        let (key, cert, ca) = parts();
        let text = format!("# a comment\n{key}# another\n{cert}{ca}");
        let identity = Identity::parse(text.as_bytes()).unwrap();
        assert_eq!(identity.name(), "rcgen self signed cert");
        assert_eq!(fingerprint(&identity.ca).len(), 64);
    }

    #[test]
    fn incomplete_files_say_what_is_missing() {
        let (key, cert, ca) = parts();
        let no_key = Identity::parse(format!("{cert}{ca}").as_bytes()).unwrap_err();
        assert!(no_key.to_string().contains("no private key"), "{no_key}");
        let one_cert = Identity::parse(format!("{key}{cert}").as_bytes()).unwrap_err();
        assert!(one_cert.to_string().contains("found 1"), "{one_cert}");
        let err = Identity::load(Path::new("/nonexistent/id.pem")).unwrap_err();
        assert!(
            format!("{err:#}").contains("/nonexistent/id.pem"),
            "{err:#}"
        );
    }
}
