//! Carrying an upload to its printers: which agents a bridge URL names
//! (`/a/NAME`, `/g/GROUP` from `client.toml`, read at each request, so a
//! new pairing needs no restart), a connection with each one's identity,
//! the send (retried on a network failure, resuming, as `fileagent send`
//! does), and every failure as the HTTP status and text a slicer shows.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::http::StatusCode;

use crate::wire::identity::Identity;
use crate::wire::protocol::ErrorCode;
use crate::workstation::config::ClientConfig;
use crate::workstation::growing::Growth;
use crate::workstation::{Client, ClientError, Sent};

/// What a bridge URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `/a/NAME`: one paired agent.
    Agent,
    /// `/g/NAME`: a group of them.
    Group,
}

/// One agent an upload goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Destination {
    /// Its name in client.toml (or its address, for a group member given so).
    pub(crate) name: String,
    /// `HOST[:PORT]`.
    pub(crate) address: String,
    /// Its identity file.
    pub(crate) identity: PathBuf,
}

/// A failure as the client hears it: status and a `text/plain` reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) status: StatusCode,
    pub(crate) text: String,
    /// The agent's error code, when the agent refused.
    pub(crate) code: Option<ErrorCode>,
}

impl Failure {
    pub(crate) fn new(status: StatusCode, text: impl Into<String>) -> Failure {
        Failure {
            status,
            text: text.into(),
            code: None,
        }
    }
}

/// The agents `kind`/`name` stands for, from client.toml in `dir`.
pub(crate) fn destinations(
    dir: &Path,
    kind: Kind,
    name: &str,
) -> Result<Vec<Destination>, Failure> {
    let config = ClientConfig::load(dir)
        .map_err(|e| Failure::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?;
    let members = match kind {
        Kind::Agent if config.agents.contains_key(name) => vec![name.to_string()],
        Kind::Agent => {
            return Err(Failure::new(
                StatusCode::NOT_FOUND,
                format!(
                    "no paired agent {name:?}: pair with it (`fileagent pair HOST CODE`); paired agents: {}",
                    none_if_empty(config.saved_agents())
                ),
            ));
        }
        Kind::Group => match config.group(name) {
            Some(members) => members.to_vec(),
            None => {
                let groups: Vec<&str> = config.groups.keys().map(String::as_str).collect();
                return Err(Failure::new(
                    StatusCode::NOT_FOUND,
                    format!(
                        "no group {name:?} in {}; groups: {}",
                        dir.join(crate::workstation::config::CLIENT_CONFIG_FILE)
                            .display(),
                        none_if_empty(groups.join(", "))
                    ),
                ));
            }
        },
    };
    members
        .into_iter()
        .map(|member| destination(&config, dir, member))
        .collect()
}

/// Where `name` (a paired agent, or an address) is, by `config` in `dir`.
pub(crate) fn destination(
    config: &ClientConfig,
    dir: &Path,
    name: String,
) -> Result<Destination, Failure> {
    let target = config
        .resolve(dir, Some(&name), None)
        .map_err(|e| Failure::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?;
    Ok(Destination {
        name,
        address: target.address,
        identity: target.identity,
    })
}

fn none_if_empty(list: String) -> String {
    if list.is_empty() { "none".into() } else { list }
}

/// A connection to `dest` with its identity.
pub(crate) async fn connect(dest: &Destination) -> Result<Client, Failure> {
    let identity = Identity::load_valid(&dest.identity).map_err(|e| {
        Failure::new(
            StatusCode::BAD_GATEWAY,
            format!(
                "{}: {e:#} (pair again: `fileagent pair HOST CODE`)",
                dest.name
            ),
        )
    })?;
    Client::connect(&dest.address, identity)
        .await
        .map_err(|e| failure(&dest.name, e))
}

/// Connections to every one of `dests` at once, in their order.
pub(crate) async fn connect_all(dests: &[Destination]) -> Vec<Result<Client, Failure>> {
    futures_util::future::join_all(dests.iter().map(connect)).await
}

/// What one send carries: the file (spooled and hashed, or still being
/// spooled), its name on the agent, the print choice, and whether it may
/// replace a different file of that name.
pub(crate) struct Parcel<'a> {
    pub(crate) path: &'a Path,
    /// Its SHA-256, when it was hashed as it was spooled.
    pub(crate) sha256: Option<&'a str>,
    /// Still being written: its size once complete, and how far it is.
    pub(crate) growing: Option<(u64, Arc<Growth>)>,
    pub(crate) name: &'a str,
    pub(crate) print: bool,
    pub(crate) overwrite: bool,
}

impl<'a> Parcel<'a> {
    /// A spooled file.
    pub(crate) fn spooled(
        file: &'a super::form::Spooled,
        name: &'a str,
        print: bool,
    ) -> Parcel<'a> {
        Parcel {
            path: file.file.path(),
            sha256: Some(&file.sha256),
            growing: None,
            name,
            print,
            overwrite: false,
        }
    }
}

/// Sends `parcel` to `dest` over `client` (opened while the upload was
/// spooled), retrying a network failure (resuming where it stopped);
/// `observer` hears its phases and progress. The client is handed back
/// (when there is one) for questions after the send.
pub(crate) async fn send(
    dest: &Destination,
    client: Result<Client, Failure>,
    parcel: &Parcel<'_>,
    observer: &mut (dyn crate::workstation::Observer + Send),
) -> (Result<Sent, Failure>, Option<Client>) {
    let (path, name) = (parcel.path, parcel.name);
    let mut client = match client {
        Ok(client) => client,
        Err(f) => return (Err(f), None),
    };
    client.set_print(Some(parcel.print));
    if let Some(sha256) = parcel.sha256 {
        // Hashed as it was spooled: not read once more for that.
        let _ = client.know_digest(path, sha256.to_string());
    }
    let mut attempt = 0;
    let result = loop {
        let sent = match &parcel.growing {
            Some((size, growth)) => {
                let growth = Arc::clone(growth);
                client
                    .send_growing(path, *size, growth, name, parcel.overwrite, observer)
                    .await
            }
            None => {
                client
                    .send_file(path, name, parcel.overwrite, observer)
                    .await
            }
        };
        match sent {
            Err(e) if e.is_transient() && attempt < crate::workstation::DEFAULT_RETRIES => {
                attempt += 1;
                tracing::info!(agent = %dest.name, error = %e, attempt, "send failed, retrying");
                tokio::time::sleep(crate::workstation::retry_wait(attempt)).await;
                if let Err(e) = client.reconnect().await
                    && !e.is_transient_reconnect()
                {
                    break Err(e);
                }
            }
            other => break other,
        }
    };
    (result.map_err(|e| failure(&dest.name, e)), Some(client))
}

/// `print` on `dest`: a person starts `name` from the slicer.
pub(crate) async fn print(dest: &Destination, name: &str) -> Result<(), Failure> {
    let mut client = connect(dest).await?;
    let result = client.print(Some(name)).await;
    client.close().await;
    result.map(|_| ()).map_err(|e| failure(&dest.name, e))
}

/// `delete` on `dest`: a person removes `name` from the agent's spool;
/// whether it was there.
pub(crate) async fn remove(dest: &Destination, name: &str) -> Result<bool, Failure> {
    let mut client = connect(dest).await?;
    let result = client.delete(name).await;
    client.close().await;
    result.map_err(|e| failure(&dest.name, e))
}

/// What a failure with agent `agent` means for the HTTP client.
pub(crate) fn failure(agent: &str, e: ClientError) -> Failure {
    use crate::wire::protocol::ProtocolError;
    let status = match &e {
        ClientError::Refused { code, .. } => match code {
            ErrorCode::Exists
            | ErrorCode::BadName
            | ErrorCode::Busy
            | ErrorCode::NotReady
            | ErrorCode::Forbidden => StatusCode::CONFLICT,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::NoSpace => StatusCode::INSUFFICIENT_STORAGE,
            _ => StatusCode::BAD_GATEWAY,
        },
        ClientError::Protocol(ProtocolError::Timeout(_) | ProtocolError::Stalled(_)) => {
            StatusCode::GATEWAY_TIMEOUT
        }
        ClientError::Local { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_GATEWAY,
    };
    let text = match &e {
        ClientError::Refused { message, .. } => format!("{agent}: {message}"),
        ClientError::Protocol(_) | ClientError::Connect { .. } => format!(
            "{agent}: {e}; nothing was stored: upload again (what the agent received is resumed)"
        ),
        _ => format!("{agent}: {e}"),
    };
    let code = match &e {
        ClientError::Refused { code, .. } => Some(*code),
        _ => None,
    };
    Failure { status, text, code }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_paired_agents_and_groups() {
        let tmp = tempfile::tempdir().unwrap();
        let config = "[agents.pi1]\naddress = \"127.0.0.1:9001\"\nidentity = \"pi1.pem\"\n\
                      [agents.pi2]\naddress = \"127.0.0.1:9002\"\nidentity = \"pi2.pem\"\n\
                      [groups]\nfarm = [\"pi2\", \"pi1\"]\n";
        std::fs::write(tmp.path().join("client.toml"), config).unwrap();
        let one = destinations(tmp.path(), Kind::Agent, "pi1").unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].address, "127.0.0.1:9001");
        assert_eq!(one[0].identity, tmp.path().join("pi1.pem"));
        let farm = destinations(tmp.path(), Kind::Group, "farm").unwrap();
        let names: Vec<&str> = farm.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["pi2", "pi1"]);
        let e = destinations(tmp.path(), Kind::Agent, "farm").unwrap_err();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert!(
            e.text.contains("paired agents: pi1 (127.0.0.1:9001), pi2"),
            "{}",
            e.text
        );
        let e = destinations(tmp.path(), Kind::Group, "pi1").unwrap_err();
        assert!(e.text.contains("groups: farm"), "{}", e.text);
    }

    #[test]
    fn each_refusal_has_its_status() {
        let refused = |code| ClientError::Refused {
            code,
            message: "why".into(),
        };
        for (code, status) in [
            (ErrorCode::Exists, 409),
            (ErrorCode::BadName, 409),
            (ErrorCode::TooLarge, 413),
            (ErrorCode::NoSpace, 507),
            (ErrorCode::Internal, 502),
        ] {
            let f = failure("pi", refused(code));
            assert_eq!(f.status.as_u16(), status, "{code}");
            assert_eq!(f.text, "pi: why");
        }
        let down = ClientError::NotListening {
            addr: "127.0.0.1:9".into(),
            reason: "is the agent running?".into(),
        };
        assert_eq!(failure("pi", down).status, StatusCode::BAD_GATEWAY);
    }
}
