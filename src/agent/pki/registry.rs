//! The agent's register of the client certificates it issued: listing,
//! revocation and "last seen".
//!
//! Every issued certificate is kept as `clients/<name>-<serial>.crt` in
//! `state_dir` (see [`crate::agent::pki`]). Revocation is a certificate revocation
//! list signed by the agent's CA, `revoked.crl`, which is also the record of
//! what is revoked and when: the running agent's verifier reads it again as
//! soon as it changes ([`crate::wire::tls`]), so `fileagent client revoke` acts on
//! the next connection without a restart. "Last seen" is the modification
//! time of `seen/<serial>`, touched by the agent when a client connects (at
//! most once a minute per certificate, to spare SD cards).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Serialize;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::agent::pki::{self, CLIENTS_DIR};
use crate::wire::identity::{common_name, fingerprint};

use crate::agent::pki::REVOCATION_LIST;
/// Folder in `state_dir` whose files' times say when a client was last seen.
pub(crate) const SEEN_DIR: &str = "seen";
/// A client's "last seen" is written at most this often.
pub(crate) const SEEN_EVERY: Duration = Duration::from_secs(60);
/// Validity of each revocation list; it is re-signed on every revocation.
const CRL_LIFETIME: Duration = Duration::from_secs(20 * 365 * 24 * 3600);

/// One issued client certificate, as `fileagent client list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientRecord {
    /// Client name (the certificate's CN).
    pub name: String,
    /// Serial number (hex).
    pub serial: String,
    /// SHA-256 fingerprint of the certificate (hex).
    pub fingerprint: String,
    /// Start of validity, RFC 3339.
    pub issued: String,
    /// End of validity, RFC 3339.
    pub expires: String,
    /// Last connection, RFC 3339, if any.
    pub last_seen: Option<String>,
    /// When it was revoked, RFC 3339, if it was.
    pub revoked: Option<String>,
    /// The end of validity has passed.
    pub expired: bool,
}

/// Every issued client certificate, by name then issue date.
pub fn list(state_dir: &Path) -> Result<Vec<ClientRecord>> {
    let dir = state_dir.join(CLIENTS_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    let revoked = revoked(state_dir)?;
    let now = OffsetDateTime::now_utc();
    let mut records = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "crt") {
            continue;
        }
        let der = CertificateDer::from_pem_file(&path)
            .with_context(|| format!("cannot read certificate {}", path.display()))?;
        let (_, cert) = X509Certificate::from_der(&der)
            .with_context(|| format!("{} is not a valid certificate", path.display()))?;
        let serial = hex::encode(cert.raw_serial());
        let not_after = cert.validity().not_after.to_datetime();
        let seen = std::fs::metadata(state_dir.join(SEEN_DIR).join(&serial))
            .and_then(|m| m.modified())
            .ok();
        records.push(ClientRecord {
            name: common_name(&der).unwrap_or_default(),
            fingerprint: fingerprint(&der),
            issued: rfc3339(cert.validity().not_before.to_datetime()),
            expires: rfc3339(not_after),
            last_seen: seen.map(|t| rfc3339(t.into())),
            revoked: revoked.get(&serial).map(|t| rfc3339(*t)),
            expired: not_after < now,
            serial,
        });
    }
    records.sort_by(|a, b| (&a.name, &a.issued).cmp(&(&b.name, &b.issued)));
    Ok(records)
}

/// Revokes every certificate of client `who` (a name, or a serial or its
/// first 8+ hex digits) that is not revoked yet; returns what it revoked.
pub fn revoke(config: &crate::agent::config::Config, who: &str) -> Result<Vec<ClientRecord>> {
    let state_dir = &config.state_dir;
    let records = list(state_dir)?;
    let who_hex = who.to_ascii_lowercase();
    let matches: Vec<&ClientRecord> = records
        .iter()
        .filter(|r| r.name == who || (who_hex.len() >= 8 && r.serial.starts_with(&who_hex)))
        .collect();
    if matches.is_empty() {
        bail!(
            "no issued client is named {who:?} or has a serial starting with it: see `fileagent client list`"
        );
    }
    let fresh: Vec<ClientRecord> = matches
        .iter()
        .filter(|r| r.revoked.is_none())
        .map(|r| (*r).clone())
        .collect();
    add_to_revocation_list(config, fresh)
}

/// Revokes `records` (not revoked yet) from now on; returns them.
fn add_to_revocation_list(
    config: &crate::agent::config::Config,
    records: Vec<ClientRecord>,
) -> Result<Vec<ClientRecord>> {
    if records.is_empty() {
        return Ok(records);
    }
    let mut revoked = revoked(&config.state_dir)?;
    let now = OffsetDateTime::now_utc();
    for record in &records {
        revoked.insert(record.serial.clone(), now);
    }
    write_revocation_list(config, &revoked)?;
    Ok(records)
}

/// Revokes every certificate of client `name` but the one with serial
/// `keep` (a workstation paired again: its earlier certificate must not go
/// on working); returns those revoked.
pub(crate) fn revoke_earlier(
    config: &crate::agent::config::Config,
    name: &str,
    keep: &str,
) -> Result<Vec<ClientRecord>> {
    let earlier: Vec<ClientRecord> = list(&config.state_dir)?
        .into_iter()
        .filter(|r| r.name == name && r.serial != keep && r.revoked.is_none())
        .collect();
    add_to_revocation_list(config, earlier)
}

/// Serial (hex) → revocation time, from the revocation list if there is one.
pub fn revoked(state_dir: &Path) -> Result<HashMap<String, OffsetDateTime>> {
    let path = state_dir.join(REVOCATION_LIST);
    let pem = match std::fs::read(&path) {
        Ok(pem) => pem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let der = rustls_pki_types::CertificateRevocationListDer::from_pem_slice(&pem)
        .with_context(|| format!("{} holds no revocation list", path.display()))?;
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(&der)
        .with_context(|| format!("{} is not a valid revocation list", path.display()))?;
    Ok(crl
        .iter_revoked_certificates()
        .map(|r| (hex::encode(r.raw_serial()), r.revocation_date.to_datetime()))
        .collect())
}

fn write_revocation_list(
    config: &crate::agent::config::Config,
    revoked: &HashMap<String, OffsetDateTime>,
) -> Result<()> {
    let ca = pki::load_ca(&config.state_dir)?;
    let now = OffsetDateTime::now_utc();
    let mut entries: Vec<_> = revoked.iter().collect();
    entries.sort();
    let revoked_certs = entries
        .into_iter()
        .map(|(serial, at)| {
            Ok(rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(
                    &hex::decode(serial).context("a revoked serial is not hex")?,
                ),
                revocation_time: *at,
                reason_code: None,
                invalidity_date: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let number = u64::try_from(now.unix_timestamp_nanos() / 1000).unwrap_or(u64::MAX);
    let params = rcgen::CertificateRevocationListParams {
        this_update: now,
        next_update: now + CRL_LIFETIME,
        crl_number: rcgen::SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    let crl = params
        .signed_by(&ca.issuer)
        .context("cannot sign the revocation list")?;
    let path = config.state_dir.join(REVOCATION_LIST);
    crate::durable::write(
        &path,
        crl.pem()?.as_bytes(),
        0o644,
        crate::durable::Existing::Replace,
    )
    .with_context(|| format!("cannot write {}", path.display()))
}

/// What the running agent needs to issue client certificates (pairing,
/// renewal) and to note when clients connect.
#[derive(Debug)]
pub struct Authority {
    config: crate::agent::config::Config,
    /// Last-seen recorder.
    pub seen: LastSeen,
}

impl Authority {
    /// The authority of the agent with `config` (its `state_dir` and
    /// `client_cert_lifetime` matter).
    pub fn new(config: &crate::agent::config::Config) -> Authority {
        Authority {
            config: config.clone(),
            seen: LastSeen::new(&config.state_dir),
        }
    }

    /// The agent's state directory.
    pub fn state_dir(&self) -> &Path {
        &self.config.state_dir
    }

    /// Revokes the earlier certificates of `name` once it was paired again
    /// with serial `keep`, off the async threads; returns their serials.
    pub(crate) async fn revoke_earlier(&self, name: &str, keep: &str) -> Result<Vec<String>> {
        let (config, name, keep) = (self.config.clone(), name.to_string(), keep.to_string());
        let revoked = tokio::task::spawn_blocking(move || revoke_earlier(&config, &name, &keep))
            .await
            .context("the revoking task failed")??;
        Ok(revoked.into_iter().map(|r| r.serial).collect())
    }

    /// Signs a certificate for `name` over the workstation's request (PEM),
    /// off the async threads (it reads the CA key and fsyncs a record).
    pub(crate) async fn sign(
        &self,
        name: String,
        csr_pem: String,
    ) -> Result<crate::wire::protocol::Issued> {
        let config = self.config.clone();
        let signed =
            tokio::task::spawn_blocking(move || pki::sign_client_csr(&config, &name, &csr_pem))
                .await
                .context("the signing task failed")??;
        Ok(crate::wire::protocol::Issued {
            name: signed.name,
            serial: signed.serial,
            not_after: signed.not_after.unix_timestamp(),
            certificate: signed.cert_pem,
            ca: signed.ca_pem,
        })
    }
}

/// Records when clients connect, in `seen/<serial>` under `state_dir`.
#[derive(Debug)]
pub struct LastSeen {
    dir: PathBuf,
    recent: Mutex<HashMap<String, Instant>>,
}

impl LastSeen {
    /// A recorder for the agent with this `state_dir`.
    pub fn new(state_dir: &Path) -> LastSeen {
        LastSeen {
            dir: state_dir.join(SEEN_DIR),
            recent: Mutex::new(HashMap::new()),
        }
    }

    /// Notes that the client with certificate `cert` connected now; writes
    /// at most once per `SEEN_EVERY` per certificate. Failures are logged.
    pub fn record(&self, cert: &[u8]) {
        let Some(serial) = crate::wire::identity::serial_of(cert) else {
            return;
        };
        {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            if recent
                .get(&serial)
                .is_some_and(|at| at.elapsed() < SEEN_EVERY)
            {
                return;
            }
            recent.insert(serial.clone(), Instant::now());
        }
        if let Err(e) = self.touch(&serial) {
            tracing::warn!(error = %e, dir = %self.dir.display(), "cannot record when the client was last seen");
        }
    }

    fn touch(&self, serial: &str) -> std::io::Result<()> {
        crate::durable::create_dir(&self.dir, 0o700)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(serial))?;
        file.set_modified(SystemTime::now())
    }
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.replace_nanosecond(0)
        .unwrap_or(at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::config::Config;

    fn agent(dir: &Path) -> Config {
        let config = Config {
            state_dir: dir.join("state"),
            server_names: vec!["localhost".into()],
            ..Config::default()
        };
        pki::init(&config).unwrap();
        config
    }

    #[test]
    fn revoking_a_name_revokes_all_its_certificates_and_only_those() {
        let tmp = tempfile::tempdir().unwrap();
        let config = agent(tmp.path());
        let a1 = pki::issue_client(&config, "alice").unwrap();
        let a2 = pki::issue_client(&config, "alice").unwrap();
        let bob = pki::issue_client(&config, "bob").unwrap();
        assert_eq!(list(&config.state_dir).unwrap().len(), 3);

        let done = revoke(&config, "alice").unwrap();
        let mut serials: Vec<_> = done.iter().map(|r| r.serial.clone()).collect();
        serials.sort();
        let mut want = vec![a1.serial.clone(), a2.serial.clone()];
        want.sort();
        assert_eq!(serials, want);
        let revoked = revoked(&config.state_dir).unwrap();
        assert!(revoked.contains_key(&a1.serial) && !revoked.contains_key(&bob.serial));
        // Again: nothing new; by serial prefix: bob.
        assert!(revoke(&config, "alice").unwrap().is_empty());
        let by_serial = revoke(&config, &bob.serial[..10]).unwrap();
        assert_eq!(by_serial[0].name, "bob");
        let listed = list(&config.state_dir).unwrap();
        assert!(listed.iter().all(|r| r.revoked.is_some()));
        let err = revoke(&config, "carol").unwrap_err();
        assert!(err.to_string().contains("client list"), "{err}");
        // A short serial prefix is not a match.
        assert!(revoke(&config, &bob.serial[..4]).is_err());
    }

    #[test]
    fn last_seen_is_recorded_and_throttled() {
        let tmp = tempfile::tempdir().unwrap();
        let config = agent(tmp.path());
        let issued = pki::issue_client(&config, "alice").unwrap();
        let identity = crate::wire::identity::Identity::parse(issued.pem.as_bytes()).unwrap();
        assert_eq!(list(&config.state_dir).unwrap()[0].last_seen, None);
        let seen = LastSeen::new(&config.state_dir);
        seen.record(&identity.cert);
        let file = config.state_dir.join(SEEN_DIR).join(&issued.serial);
        let first = std::fs::metadata(&file).unwrap().modified().unwrap();
        assert!(list(&config.state_dir).unwrap()[0].last_seen.is_some());
        // Within SEEN_EVERY the file is not written again.
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(SystemTime::UNIX_EPOCH)
            .unwrap();
        seen.record(&identity.cert);
        let second = std::fs::metadata(&file).unwrap().modified().unwrap();
        assert_eq!(second, SystemTime::UNIX_EPOCH);
        assert_ne!(first, second);
    }
}
