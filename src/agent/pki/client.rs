//! Client certificates: issuing a whole identity (a key made here, for
//! `fileagent client issue`), signing a key a workstation made itself (a
//! certificate signing request, for pairing and renewal), and the rule for
//! client names. Every certificate issued is recorded under `clients/`.

use anyhow::{Context, Result};
use rcgen::{ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256};
use time::OffsetDateTime;

use super::{CLIENTS_DIR, base_params, load_ca, write_new};
use crate::agent::config::Config;
use crate::wire::identity::validate_client_name;

/// A client certificate just issued by [`issue_client`].
#[derive(Debug)]
pub struct IssuedClient {
    /// The identity file's text (PEM).
    pub pem: String,
    /// Hex serial number.
    pub serial: String,
    /// Expiry.
    pub not_after: OffsetDateTime,
}

/// Issues a client certificate with CN `name` for a new key made here,
/// signed by the agent's CA (run [`init`](super::init) first), records it under
/// `clients/` and returns the identity file's text.
pub fn issue_client(config: &Config, name: &str) -> Result<IssuedClient> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let signed = sign_client(config, name, &key)?;
    let pem = identity_pem(&key.serialize_pem(), &signed);
    Ok(IssuedClient {
        pem,
        serial: signed.serial,
        not_after: signed.not_after,
    })
}

/// The text of an identity file for `signed` and its key.
pub fn identity_pem(key_pem: &str, signed: &SignedClient) -> String {
    crate::wire::identity::identity_file(
        &signed.name,
        &signed.serial,
        signed.not_after,
        key_pem,
        &signed.cert_pem,
        &signed.ca_pem,
    )
}

/// A client certificate signed by the agent's CA.
#[derive(Debug, Clone)]
pub struct SignedClient {
    /// Client name (CN).
    pub name: String,
    /// Hex serial number.
    pub serial: String,
    /// Expiry.
    pub not_after: OffsetDateTime,
    /// The certificate (PEM).
    pub cert_pem: String,
    /// The agent's CA certificate (PEM).
    pub ca_pem: String,
}

/// Signs a client certificate with CN `name` over a certificate signing
/// request (PEM) made by the workstation, whose key never leaves it.
pub(crate) fn sign_client_csr(config: &Config, name: &str, csr_pem: &str) -> Result<SignedClient> {
    let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
        .context("the certificate signing request is malformed or its signature is wrong")?;
    sign_client(config, name, &csr.public_key)
}

/// Signs a client certificate with CN `name` for `public_key` with the
/// agent's CA, valid for `client_cert_lifetime`, and records it under `clients/`.
pub(crate) fn sign_client(
    config: &Config,
    name: &str,
    public_key: &impl rcgen::PublicKeyData,
) -> Result<SignedClient> {
    validate_client_name(name)?;
    let dir = &config.state_dir;
    let ca = load_ca(dir)?;
    let mut params = base_params(name, config.client_cert_lifetime)?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let serial = hex::encode(
        params
            .serial_number
            .as_ref()
            .map(|s| s.to_bytes())
            .unwrap_or_default(),
    );
    let not_after = params.not_after;
    let cert = params.signed_by(public_key, &ca.issuer)?;
    let record = dir.join(CLIENTS_DIR).join(format!("{name}-{serial}.crt"));
    write_new(&record, cert.pem().as_bytes(), 0o644)?;
    Ok(SignedClient {
        name: name.to_string(),
        serial,
        not_after,
        cert_pem: cert.pem(),
        ca_pem: ca.pem,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::config_in;
    use super::super::{init, load_agent};
    use super::*;
    use crate::wire::identity::Identity;

    #[test]
    fn issued_identity_round_trips_and_is_recorded() {
        let tmp = tempfile::tempdir().unwrap();
        let config = config_in(tmp.path());
        init(&config).unwrap();
        let issued = issue_client(&config, "alice-laptop").unwrap();
        let identity = Identity::parse(issued.pem.as_bytes()).unwrap();
        assert_eq!(identity.name(), "alice-laptop");
        identity.check_validity().unwrap();
        let agent = load_agent(&config.state_dir).unwrap();
        assert_eq!(identity.ca, agent.ca);
        let record = config
            .state_dir
            .join(CLIENTS_DIR)
            .join(format!("alice-laptop-{}.crt", issued.serial));
        assert!(record.exists());
    }

    #[test]
    fn issuing_needs_a_ca_and_a_plain_name() {
        let tmp = tempfile::tempdir().unwrap();
        let config = config_in(tmp.path());
        let err = issue_client(&config, "bob").unwrap_err();
        assert!(format!("{err:#}").contains("fileagent init"), "{err:#}");
        init(&config).unwrap();
        for bad in ["", "../x", "a b", ".hidden", "-flag", &"x".repeat(65)] {
            assert!(issue_client(&config, bad).is_err(), "{bad:?} accepted");
        }
    }
}
