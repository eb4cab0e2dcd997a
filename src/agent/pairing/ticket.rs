//! Pending pairing codes on the agent: one JSON file per code in
//! `state_dir/pairing/`, written by `fileagent pair` and updated by the
//! running agent (attempts, outcome). The directory is private to the
//! service user, like the CA key beside it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::durable::{self, Existing};
use crate::wire::pairing::PairingCode;

/// Folder in `state_dir` holding the pending codes.
pub(crate) const PAIRING_DIR: &str = "pairing";
/// Codes that ended (or expired) are removed this long after, if nobody did.
const KEEP_ENDED: Duration = Duration::from_secs(3600);

/// One pending (or just ended) pairing code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// The code's first group; also the file's name.
    pub ticket: String,
    /// The code's secret part.
    pub secret: String,
    /// The code's CA check part.
    pub ca_check: String,
    /// Client name forced by `fileagent pair --name`, else the workstation's.
    pub name: Option<String>,
    /// Unix seconds after which the code is refused.
    pub expires: i64,
    /// Pairing exchanges started with this code.
    pub attempts: u32,
    /// How it ended, once it did.
    pub outcome: Option<Outcome>,
}

/// How a code ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    /// A workstation paired and got a certificate.
    Paired {
        /// Its client name.
        client: String,
        /// The certificate's serial.
        serial: String,
        /// Where it connected from.
        address: String,
        /// Serials of its earlier certificates, revoked by this pairing.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        replaced: Vec<String>,
    },
    /// Too many failed attempts: the code is void.
    Void,
}

impl Ticket {
    /// The code to show, for the agent whose CA check is in the ticket.
    pub fn code(&self) -> PairingCode {
        PairingCode {
            ticket: self.ticket.clone(),
            secret: self.secret.clone(),
            ca_check: self.ca_check.clone(),
        }
    }

    /// Whether the code has expired.
    pub fn expired(&self) -> bool {
        now() > self.expires
    }
}

/// Unix seconds now.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn path(state_dir: &Path, ticket: &str) -> PathBuf {
    state_dir.join(PAIRING_DIR).join(format!("{ticket}.json"))
}

/// Creates a new code valid for `ttl`, for the agent whose CA has
/// `ca_fingerprint`.
pub fn create(
    state_dir: &Path,
    ca_fingerprint: &str,
    name: Option<String>,
    ttl: Duration,
) -> Result<Ticket> {
    let dir = state_dir.join(PAIRING_DIR);
    durable::create_dir(&dir, 0o700).with_context(|| {
        format!(
            "cannot create {} (run `fileagent pair` as root or as the agent's user)",
            dir.display()
        )
    })?;
    sweep(state_dir);
    loop {
        let code = PairingCode::generate(ca_fingerprint)?;
        let ticket = Ticket {
            ticket: code.ticket,
            secret: code.secret,
            ca_check: code.ca_check,
            name: name.clone(),
            expires: now() + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2),
            attempts: 0,
            outcome: None,
        };
        let text = serde_json::to_vec_pretty(&ticket)?;
        match durable::write(
            &path(state_dir, &ticket.ticket),
            &text,
            0o600,
            Existing::Keep,
        ) {
            Ok(()) => return Ok(ticket),
            // One in a million: another pending code has this ticket.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot write a pairing code into {}", dir.display())
                });
            }
        }
    }
}

/// The code named `ticket`, if it is pending or recently ended.
pub fn load(state_dir: &Path, ticket: &str) -> Result<Option<Ticket>> {
    if ticket.len() != 4 || !ticket.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Ok(None);
    }
    let path = path(state_dir, ticket);
    match std::fs::read(&path) {
        Ok(text) => Ok(Some(serde_json::from_slice(&text).with_context(|| {
            format!("{} is not a pairing code file", path.display())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Saves an updated code.
pub fn store(state_dir: &Path, ticket: &Ticket) -> Result<()> {
    let path = path(state_dir, &ticket.ticket);
    durable::write(
        &path,
        &serde_json::to_vec_pretty(ticket)?,
        0o600,
        Existing::Replace,
    )
    .with_context(|| format!("cannot write {}", path.display()))
}

/// Removes a code (it was used, cancelled or has expired).
pub fn remove(state_dir: &Path, ticket: &str) {
    let _ = std::fs::remove_file(path(state_dir, ticket));
}

/// Removes codes that expired or ended more than an hour ago (left behind
/// by a `fileagent pair` that was killed).
pub fn sweep(state_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(state_dir.join(PAIRING_DIR)) else {
        return;
    };
    let stale_before = now() - KEEP_ENDED.as_secs() as i64;
    for entry in entries.flatten() {
        let path = entry.path();
        let ticket = std::fs::read(&path)
            .ok()
            .and_then(|t| serde_json::from_slice::<Ticket>(&t).ok());
        let stale = match ticket {
            Some(t) => t.expires < stale_before,
            // A temp file of an interrupted write, or garbage.
            None => entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|m| m.elapsed().unwrap_or_default() > KEEP_ENDED),
        };
        if stale {
            let _ = std::fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_created_loaded_updated_and_swept() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path();
        let mut t = create(
            state,
            "abcdef",
            Some("lab-pc".into()),
            Duration::from_secs(60),
        )
        .unwrap();
        assert!(!t.expired());
        assert_eq!(t.code().ca_check, crate::wire::pairing::ca_check("abcdef"));
        assert_eq!(load(state, &t.ticket).unwrap().as_ref(), Some(&t));
        assert_eq!(load(state, "../x").unwrap(), None);
        assert_eq!(load(state, "ZZZZ").unwrap(), None);
        t.attempts = 2;
        store(state, &t).unwrap();
        assert_eq!(load(state, &t.ticket).unwrap().unwrap().attempts, 2);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path(state, &t.ticket))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        // Long expired: swept; pending: kept.
        let mut old = create(state, "abcdef", None, Duration::from_secs(60)).unwrap();
        old.expires = now() - 2 * KEEP_ENDED.as_secs() as i64;
        store(state, &old).unwrap();
        sweep(state);
        assert_eq!(load(state, &old.ticket).unwrap(), None);
        assert!(load(state, &t.ticket).unwrap().is_some());
        remove(state, &t.ticket);
        assert_eq!(load(state, &t.ticket).unwrap(), None);
    }
}
