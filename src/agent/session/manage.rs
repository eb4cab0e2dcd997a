//! The requests that manage the agent rather than move a file: `status`,
//! `print` (a person starts a file), `delete` and `renew`.

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{info, warn};

use super::Session;
use crate::agent::spool::SpoolError;
use crate::wire::protocol::{AgentStatus, ErrorCode, Reply};

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// Signs a new certificate for this connection's client name over a new key.
    pub(super) async fn renew(&self, csr: String) -> Reply {
        match self.shared.authority.sign(self.client.clone(), csr).await {
            Ok(issued) => {
                info!(client_cn = %self.client, serial = %issued.serial, "renewed the client certificate");
                Reply::Renewed(issued)
            }
            Err(e) => {
                warn!(client_cn = %self.client, error = format!("{e:#}"), "certificate renewal refused");
                Reply::Error {
                    code: ErrorCode::BadRequest,
                    message: format!("cannot renew the certificate: {e:#}"),
                }
            }
        }
    }

    pub(super) async fn status(&self) -> AgentStatus {
        let spool = &self.shared.spool;
        let files = spool.list().await.unwrap_or_default();
        let view = self.shared.forward.view();
        AgentStatus {
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_secs: self.shared.started.elapsed().as_secs(),
            incoming: spool.incoming_count(),
            ready: files.len() as u64,
            ready_bytes: files.iter().map(|f| f.size).sum(),
            free_bytes: spool.free_space().unwrap_or(0),
            max_file_size: self.shared.max_file_size,
            client: self.client.clone(),
            printer: view.printer.clone(),
            queued: view.queued(),
            bed: view.bed_text(),
        }
    }

    /// `print`: a person starts a forwarded file (or the oldest waiting one).
    pub(super) async fn print(&mut self, name: Option<String>) -> Reply {
        use crate::agent::forward::PrintRefused;
        if let Some(name) = &name
            && let Err(e) = crate::agent::spool::validate_name(name)
        {
            return self.error_reply(&e);
        }
        match self
            .shared
            .forward
            .print(name.as_deref(), &self.client)
            .await
        {
            Ok(name) => Reply::Printing { name },
            Err(refused) => {
                let code = match &refused {
                    PrintRefused::NotFound(_) => ErrorCode::NotFound,
                    PrintRefused::Busy(_) => ErrorCode::Busy,
                    PrintRefused::NotReady(_) => ErrorCode::NotReady,
                    PrintRefused::Refused(_) => ErrorCode::BadRequest,
                    PrintRefused::Forbidden(_) => ErrorCode::Forbidden,
                };
                info!(client_cn = %self.client, file_name = name.as_deref().unwrap_or("-"), reason = %refused, "print refused");
                Reply::Error {
                    code,
                    message: refused.to_string(),
                }
            }
        }
    }

    /// `delete`: a file in `ready/`, or else the agent's copy of a file it
    /// forwarded (which OctoPrint keeps), unless that is being printed.
    pub(super) async fn delete(&mut self, name: String) -> Reply {
        use crate::agent::forward::Forget;
        let forwarded = match self.shared.spool.delete(&name).await {
            Ok(()) => false,
            Err(SpoolError::NotFound { .. }) => match self.shared.forward.forget(&name).await {
                Forget::Forgotten => true,
                Forget::Unknown => return self.error_reply(&SpoolError::NotFound { name }),
                Forget::Printing => {
                    return Reply::Error {
                        code: ErrorCode::Busy,
                        message: format!(
                            "{name:?} is being printed: cancel the print at the printer first, or delete it once the print has ended"
                        ),
                    };
                }
                Forget::Busy => {
                    return Reply::Error {
                        code: ErrorCode::Busy,
                        message: format!(
                            "the agent is busy with the print server and could not delete {name:?} now: try again in a minute"
                        ),
                    };
                }
            },
            Err(e) => return self.error_reply(&e),
        };
        info!(client_cn = %self.client, file_name = %name, forwarded, "deleted");
        Reply::Deleted { name, forwarded }
    }
}
