//! What a workstation does with a certificate it is issued (pairing or
//! renewal): the request it makes for its own new key, and the checks of
//! what comes back before it becomes the identity file.

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::ClientError;
use crate::wire::identity::{Identity, fingerprint, identity_file};
use crate::wire::protocol::Issued;

/// A PKCS#10 request (PEM) for `name` over `key`.
pub(crate) fn certificate_request(name: &str, key: &KeyPair) -> Result<String, rcgen::Error> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.serialize_request(key)?.pem()
}

/// Checks an issued certificate against the key it is for and the CA the
/// connection verified; returns the identity file's text.
pub fn accept(issued: &Issued, key: &KeyPair, ca_fingerprint: &str) -> Result<String, ClientError> {
    let bad = |what: &str| ClientError::Integrity(format!("the issued certificate {what}"));
    let ca = CertificateDer::from_pem_slice(issued.ca.as_bytes())
        .map_err(|_| bad("comes with no CA"))?;
    if fingerprint(&ca) != ca_fingerprint {
        return Err(bad("comes with another CA than the agent presented"));
    }
    let cert = CertificateDer::from_pem_slice(issued.certificate.as_bytes())
        .map_err(|_| bad("is not a certificate"))?;
    let (_, parsed) = X509Certificate::from_der(&cert).map_err(|_| bad("is malformed"))?;
    if parsed.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(key) {
        return Err(bad("is not for this workstation's key"));
    }
    let not_after = time::OffsetDateTime::from_unix_timestamp(issued.not_after)
        .map_err(|_| bad("has an impossible expiry"))?;
    let pem = identity_file(
        &issued.name,
        &issued.serial,
        not_after,
        &key.serialize_pem(),
        &issued.certificate,
        &issued.ca,
    );
    Identity::parse(pem.as_bytes())
        .map_err(|e| bad(&format!("does not make an identity: {e:#}")))?;
    Ok(pem)
}
