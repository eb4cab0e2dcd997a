//! Client errors, and the translation of socket and TLS failures into their
//! likely cause and what to do about it.

use std::io;
use std::path::PathBuf;

use rustls::{AlertDescription, CertificateError};

use crate::wire::protocol::{ErrorCode, ProtocolError, Reply};

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The agent address is malformed.
    #[error("invalid agent address {0:?}: use HOST or HOST:PORT (e.g. pi.local:7341)")]
    BadAddress(String),
    /// TCP connection failed.
    #[error("cannot reach the agent at {addr}: {reason}")]
    Connect {
        /// Address tried.
        addr: String,
        /// What happened and what to check.
        reason: String,
    },
    /// Nothing listens at that address and port (connection refused).
    #[error("nothing listens at {addr}: {reason}")]
    NotListening {
        /// Address tried.
        addr: String,
        /// What to check.
        reason: String,
    },
    /// TLS handshake or certificate failure.
    #[error("secure connection to {addr} failed: {reason}")]
    Tls {
        /// Address tried.
        addr: String,
        /// What happened and what to do.
        reason: String,
    },
    /// The agent answered with an error.
    #[error("the agent refused: {message}")]
    Refused {
        /// Machine-readable reason.
        code: ErrorCode,
        /// The agent's explanation.
        message: String,
    },
    /// The connection broke or the agent broke the protocol (in the
    /// message, so not its `source()`).
    #[error("transfer with the agent failed: {0}")]
    Protocol(ProtocolError),
    /// A received file did not match what the agent announced.
    #[error("received data is corrupt: {0}; nothing was kept, try again")]
    Integrity(String),
    /// A local file could not be read or written.
    #[error("{what} {path}: {error}")]
    Local {
        /// What was being done.
        what: &'static str,
        /// The local path.
        path: PathBuf,
        /// The error (in the message, so not its `source()`).
        error: io::Error,
    },
}

impl ClientError {
    /// Whether trying again may help: the network failed, not the agent's
    /// verdict, the certificates or a local file.
    pub(crate) fn is_transient(&self) -> bool {
        matches!(self, ClientError::Connect { .. } | ClientError::Protocol(_))
    }

    /// Whether trying to reconnect may help once a connection had worked:
    /// an agent that refuses connections may be restarting.
    pub(crate) fn is_transient_reconnect(&self) -> bool {
        self.is_transient() || matches!(self, ClientError::NotListening { .. })
    }
}

impl From<ProtocolError> for ClientError {
    fn from(e: ProtocolError) -> Self {
        ClientError::Protocol(e)
    }
}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Protocol(ProtocolError::Io(e))
    }
}

/// With TLS 1.3 the agent checks our certificate after our side of the
/// handshake is done, so its refusal arrives as an alert on the first read.
pub(super) fn explain_io(e: io::Error, addr: &str) -> ClientError {
    let alert = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(|tls| match tls {
            rustls::Error::AlertReceived(alert) => Some(*alert),
            _ => None,
        });
    match alert {
        Some(AlertDescription::CertificateRevoked) => ClientError::Tls {
            addr: addr.into(),
            reason: "the agent refused this workstation's certificate: it was revoked (CertificateRevoked). \
                     Ask the agent's administrator for a new pairing code (`fileagent pair`) and pair again"
                .into(),
        },
        Some(alert) => ClientError::Tls {
            addr: addr.into(),
            reason: format!(
                "the agent refused this workstation's certificate ({alert:?}): the identity was issued by another \
                 agent, has expired or was revoked; pair again (`fileagent pair` on the agent prints a code)"
            ),
        },
        None => ClientError::Protocol(ProtocolError::Io(e)),
    }
}

/// What a failed TCP connect to `addr` means: nothing listens there (a
/// wrong port, no agent: not worth retrying), or the network failed.
pub(crate) fn connect_error(e: &io::Error, addr: &str) -> ClientError {
    let (addr, reason) = (addr.to_string(), connect_advice(e));
    match e.kind() {
        io::ErrorKind::ConnectionRefused => ClientError::NotListening { addr, reason },
        _ => ClientError::Connect { addr, reason },
    }
}

/// A TLS handshake the agent hung up on before answering: an agent at its
/// limit of unauthenticated connections, worth a retry. `None` for any
/// other failure (those need [`tls_advice`]).
pub(crate) fn hung_up(e: &io::Error, addr: &str) -> Option<ClientError> {
    use io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
    .then(|| ClientError::Connect {
        addr: addr.to_string(),
        reason: "the agent closed the connection during the TLS handshake (it may be busy, \
                     or it is not a fileagent agent)"
            .into(),
    })
}

fn connect_advice(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => {
            "connection refused: is `fileagent serve` running there, and listening on that address and port (default 7341)?".to_string()
        }
        _ => format!("{e}: check the host name and the network"),
    }
}

pub(crate) fn tls_advice(e: &io::Error, host: &str) -> String {
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature)) => {
            "the agent's certificate is not signed by the CA in your identity file: this is another agent, \
             or your identity belongs to another agent"
                .into()
        }
        Some(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => format!(
            "the agent's certificate is not valid for {host:?}: connect with a name it lists in its \
             server_names (see `fileagent init` on the agent), or add {host:?} there"
        ),
        Some(rustls::Error::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. })) => {
            "the agent's certificate has expired: restart the agent to renew it, and check both clocks".into()
        }
        Some(rustls::Error::AlertReceived(AlertDescription::ProtocolVersion)) => {
            "the agent does not speak TLS 1.3".into()
        }
        Some(rustls::Error::AlertReceived(AlertDescription::NoApplicationProtocol)) => {
            "the agent does not speak the fileagent/1 protocol: upgrade the older side".into()
        }
        Some(other) => other.to_string(),
        None => format!("{e} (is this really a fileagent agent?)"),
    }
}

pub(crate) fn unexpected(reply: &Reply) -> ClientError {
    ClientError::Protocol(ProtocolError::Unexpected {
        got: match reply {
            Reply::Pong => "pong",
            Reply::Continue { .. } => "continue",
            Reply::Stored { .. } => "stored",
            Reply::Files { .. } => "files",
            Reply::Body { .. } => "body",
            Reply::Complete { .. } => "complete",
            Reply::Deleted { .. } => "deleted",
            Reply::Status(_) => "status",
            Reply::PairChallenge { .. } => "pair_challenge",
            Reply::Paired(_) => "paired",
            Reply::Renewed(_) => "renewed",
            Reply::Error { .. } => "error",
            Reply::Progress { .. } => "progress",
            Reply::Verified { .. } => "verified",
            Reply::Printing { .. } => "printing",
            Reply::Watching(_) => "watching",
        },
        expected: "the reply to this request",
    })
}

/// The agent's answer: an `error` reply is [`ClientError::Refused`] (its
/// code and message as the agent said them), any other reply is for the
/// caller to match.
pub(super) fn answer(reply: Reply) -> Result<Reply, ClientError> {
    match reply {
        Reply::Error { code, message } => Err(ClientError::Refused { code, message }),
        reply => Ok(reply),
    }
}

/// Builds the [`ClientError::Local`] for one failed local I/O operation.
pub(super) type LocalError = Box<dyn FnOnce(io::Error) -> ClientError + Send>;

/// Maps a local I/O error on `path` to [`ClientError::Local`].
pub(super) fn local_error(path: &std::path::Path) -> impl Fn(&'static str) -> LocalError + use<> {
    let path = path.to_path_buf();
    move |what| {
        let path = path.clone();
        Box::new(move |error| ClientError::Local { what, path, error })
    }
}
