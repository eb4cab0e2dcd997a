//! The workstation's side of pairing: `fileagent pair HOST[:PORT] CODE`.
//!
//! The key pair is made here and only a certificate signing request leaves
//! the machine. The agent's certificate chain is verified against the CA it
//! sends, and that CA is accepted only if its fingerprint matches the
//! code's check group now and the SPAKE2 exchange (which binds the full
//! fingerprint) confirms it; nothing is trusted on first use.

use std::sync::{Arc, Mutex};

use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::Digest;

use crate::wire::identity::fingerprint;
use crate::wire::pairing::{Exchange, PairingCode, Role, SharedKey, ca_check, exporter};
use crate::wire::protocol::{Connection, ErrorCode, Issued, PAIR_ALPN, Reply, Request};
use crate::workstation::connect::{self, Address, Conn};
use crate::workstation::enrol::{accept, certificate_request};
use crate::workstation::error::{answer, tls_advice};
use crate::workstation::{ClientError, REPLY_TIMEOUT};

/// What pairing produced.
#[derive(Debug)]
pub struct Paired {
    /// The identity file's text (new key, issued certificate, agent CA).
    pub identity_pem: String,
    /// The certificate as the agent issued it.
    pub issued: Issued,
    /// SHA-256 fingerprint of the agent's CA.
    pub ca_fingerprint: String,
    /// `HOST:PORT` paired with.
    pub address: String,
}

/// Pairs with the agent at `agent` using `code`, asking for client name
/// `name`.
pub async fn pair(agent: &str, code: &PairingCode, name: &str) -> Result<Paired, ClientError> {
    let address = Address::parse(agent)?;
    let (mut conn, agent_ca) = connect_checked(&address, code).await?;
    let key = prove_code(&mut conn, code, name, &agent_ca).await?;
    // The agent knows the code and owns the CA that signed its certificate.
    let (issued, key_pair) = request_certificate(&mut conn, name, &key, &agent_ca).await?;
    conn.shutdown().await.ok();
    let identity_pem = accept(&issued, &key_pair, &agent_ca.fingerprint)?;
    Ok(Paired {
        identity_pem,
        issued,
        ca_fingerprint: agent_ca.fingerprint,
        address: address.addr,
    })
}

/// What the handshake showed of the agent: its CA (checked against the
/// code's last group), and the TLS exporter both key confirmations cover.
struct AgentCa {
    fingerprint: String,
    exporter: [u8; 32],
}

/// Connects on the pairing ALPN, accepting the agent's chain only if its
/// CA matches the code's check group.
async fn connect_checked(
    address: &Address,
    code: &PairingCode,
) -> Result<(Conn, AgentCa), ClientError> {
    let tls_error = |reason: String| ClientError::Tls {
        addr: address.addr.clone(),
        reason,
    };
    let provider = crate::wire::tls::provider();
    let verifier = Arc::new(CodeVerifier {
        expected: code.ca_check.clone(),
        provider: provider.clone(),
        seen: Mutex::default(),
        mismatch: Mutex::default(),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_error(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![PAIR_ALPN.to_vec()];
    let conn = connect::open(address, Arc::new(config), |e| {
        match verifier.mismatch.lock().unwrap().clone() {
            Some(found) => tls_error(format!(
                "this agent is not the one that made the code: its CA check is {found}, the code's last group \
                 is {}. Check the address and the code's last group",
                code.ca_check
            )),
            None => tls_error(tls_advice(e, &address.host)),
        }
    })
    .await?;
    let tls = conn.get_ref().get_ref().1;
    if tls.alpn_protocol() != Some(PAIR_ALPN) {
        return Err(tls_error(
            "the agent does not support pairing (fileagent-pair/1): upgrade it".into(),
        ));
    }
    let ca = verifier
        .seen
        .lock()
        .unwrap()
        .clone()
        .ok_or_else(|| tls_error("the agent's CA was not checked".into()))?;
    let exporter = exporter(tls).map_err(|e| tls_error(format!("{e:#}")))?;
    let agent_ca = AgentCa {
        fingerprint: fingerprint(&ca),
        exporter,
    };
    Ok((conn, agent_ca))
}

/// The SPAKE2 exchange: both ends show they know the code, bound to the
/// agent's CA and this connection; the key that confirms the rest.
async fn prove_code(
    conn: &mut Conn,
    code: &PairingCode,
    name: &str,
    agent_ca: &AgentCa,
) -> Result<SharedKey, ClientError> {
    let (state, message) = Exchange::start(
        Role::Workstation,
        &code.ticket,
        &code.secret,
        &agent_ca.fingerprint,
    );
    conn.write_message(&Request::Pair {
        ticket: code.ticket.clone(),
        name: name.to_string(),
        spake: hex::encode(message),
    })
    .await?;
    let (spake, confirm, attempts_left) = match reply(conn).await? {
        Reply::PairChallenge {
            spake,
            confirm,
            attempts_left,
        } => (spake, confirm, attempts_left),
        other => return Err(crate::workstation::unexpected(&other)),
    };
    let wrong = || ClientError::Refused {
        code: ErrorCode::WrongCode,
        message: format!(
            "the code does not match the agent's: check it for typos (the agent counted the attempt; \
             {attempts_left} left before the code becomes void)"
        ),
    };
    let key = hex::decode(&spake)
        .ok()
        .and_then(|m| state.finish(&m).ok())
        .ok_or_else(wrong)?;
    if !key.verify(Role::Agent, &agent_ca.exporter, b"", &confirm) {
        conn.shutdown().await.ok();
        return Err(wrong());
    }
    Ok(key)
}

/// A new key pair made here; only its certificate request leaves the
/// machine, confirmed with the shared key. Returns the certificate issued
/// and the key.
async fn request_certificate(
    conn: &mut Conn,
    name: &str,
    key: &SharedKey,
    agent_ca: &AgentCa,
) -> Result<(Issued, KeyPair), ClientError> {
    let local = |e: rcgen::Error| ClientError::Local {
        what: "cannot make a key pair for",
        path: name.into(),
        error: std::io::Error::other(e),
    };
    let key_pair = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(local)?;
    let csr = certificate_request(name, &key_pair).map_err(local)?;
    let digest = sha2::Sha256::digest(csr.as_bytes());
    conn.write_message(&Request::PairConfirm {
        confirm: key.confirm(Role::Workstation, &agent_ca.exporter, &digest),
        csr,
    })
    .await?;
    match reply(conn).await? {
        Reply::Paired(issued) => Ok((issued, key_pair)),
        other => Err(crate::workstation::unexpected(&other)),
    }
}

async fn reply<S>(conn: &mut Connection<S>) -> Result<Reply, ClientError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    answer(conn.expect_message::<Reply>(REPLY_TIMEOUT).await?)
}

/// Accepts the agent's chain only if its CA (the last certificate sent)
/// matches the code's check group and signs the server certificate for the
/// name connected to; remembers that CA.
#[derive(Debug)]
struct CodeVerifier {
    expected: String,
    provider: Arc<CryptoProvider>,
    seen: Mutex<Option<CertificateDer<'static>>>,
    mismatch: Mutex<Option<String>>,
}

impl ServerCertVerifier for CodeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates.last() else {
            return Err(rustls::Error::General(
                "the agent sent no CA certificate: it does not support pairing".into(),
            ));
        };
        let found = ca_check(&fingerprint(ca));
        if found != self.expected {
            *self.mismatch.lock().unwrap() = Some(found);
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.clone().into_owned())
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?
            .verify_server_cert(end_entity, &[], server_name, ocsp_response, now)?;
        *self.seen.lock().unwrap() = Some(ca.clone().into_owned());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The config allows TLS 1.3 only.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
