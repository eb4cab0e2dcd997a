//! The agent's server certificate: the names it carries (configured, or
//! this host's), signing it with the agent's CA, and when it is due again
//! (missing, other names, or near expiry).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use rcgen::{ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{Ca, SERVER_CERT, SERVER_KEY, base_params, read_key, replace, write_new};
use crate::agent::config::Config;
use crate::wire::identity::host_name;

/// Lifetime of the server certificate.
pub(crate) const SERVER_CERT_LIFETIME: Duration = Duration::from_secs(2 * 365 * 24 * 3600);
/// The server certificate is re-signed when it has less than this left.
pub(crate) const SERVER_CERT_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// What [`init`](super::init) did with the server certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerCertAction {
    /// A new key and certificate were created.
    Created,
    /// The existing key got a new certificate (names changed or near expiry).
    Renewed,
    /// The existing certificate was kept.
    Kept,
}

/// Names for the server certificate: the configured ones, or the host name,
/// `localhost`, `<hostname>.local` and the listen IP (loopback addresses
/// when listening on all addresses).
pub fn server_names(config: &Config) -> Vec<String> {
    if !config.server_names.is_empty() {
        return config.server_names.clone();
    }
    let mut names = Vec::new();
    let host = host_name();
    if !host.is_empty() && host != "localhost" {
        names.push(host.clone());
        if !host.contains('.') {
            names.push(format!("{host}.local"));
        }
    }
    names.push("localhost".into());
    let ips: Vec<IpAddr> = match config.listen {
        addr if addr.ip().is_unspecified() => {
            vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()]
        }
        SocketAddr::V4(addr) => vec![(*addr.ip()).into()],
        SocketAddr::V6(addr) => vec![(*addr.ip()).into()],
    };
    names.extend(ips.iter().map(IpAddr::to_string));
    names
}

/// Makes the server key where absent and (re)signs its certificate when
/// it is missing, names other hosts or nears expiry; says which it did.
pub(super) fn ensure_cert(dir: &Path, ca: &Ca, names: &[String]) -> Result<ServerCertAction> {
    let server_key_path = dir.join(SERVER_KEY);
    let action = if !server_key_path.exists() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        write_new(&server_key_path, key.serialize_pem().as_bytes(), 0o600)?;
        ServerCertAction::Created
    } else if server_cert_fits(&dir.join(SERVER_CERT), names)? {
        ServerCertAction::Kept
    } else {
        ServerCertAction::Renewed
    };
    if action != ServerCertAction::Kept {
        sign_server_cert(dir, ca, names, SERVER_CERT_LIFETIME)?;
    }
    Ok(action)
}

/// Signs the server key's certificate for `names`, valid for `lifetime`.
pub(super) fn sign_server_cert(
    dir: &Path,
    ca: &Ca,
    names: &[String],
    lifetime: Duration,
) -> Result<()> {
    let key = read_key(&dir.join(SERVER_KEY))?;
    let mut params = base_params(&names[0], lifetime)?;
    params.subject_alt_names = names.iter().map(|n| san(n)).collect::<Result<_>>()?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &ca.issuer)?;
    replace(&dir.join(SERVER_CERT), cert.pem().as_bytes(), 0o644)
}

/// Whether [`init`](super::init) would re-sign the server certificate now: it is
/// missing, names other hosts, or has less than [`SERVER_CERT_RENEW_BEFORE`] left.
pub(crate) fn server_cert_due(config: &Config) -> bool {
    !server_cert_fits(&config.state_dir.join(SERVER_CERT), &server_names(config)).unwrap_or(false)
}

fn san(name: &str) -> Result<SanType> {
    Ok(match name.parse::<IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(
            name.try_into()
                .with_context(|| format!("server name {name:?} is not a valid DNS name"))?,
        ),
    })
}

/// True when the server certificate exists, has all `names` and more than
/// [`SERVER_CERT_RENEW_BEFORE`] left.
fn server_cert_fits(path: &Path, names: &[String]) -> Result<bool> {
    let Ok(der) = CertificateDer::from_pem_file(path) else {
        return Ok(false);
    };
    let (_, cert) = X509Certificate::from_der(&der)
        .with_context(|| format!("{} is not a valid certificate", path.display()))?;
    let renew_at = OffsetDateTime::now_utc() + SERVER_CERT_RENEW_BEFORE;
    if cert.validity().not_after.to_datetime() < renew_at {
        return Ok(false);
    }
    let present: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(ext)) => ext
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(b) => {
                    ip_of(b).map(|ip| ip.to_string())
                }
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let wanted = names.iter().map(|n| match n.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => n.clone(),
    });
    Ok(wanted.into_iter().all(|n| present.contains(&n)))
}

fn ip_of(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}
