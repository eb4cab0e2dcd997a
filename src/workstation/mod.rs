//! The workstation's library client: connects to an agent over mutually
//! authenticated TLS and runs protocol operations on one connection.
//!
//! Errors are typed ([`ClientError`]) because the CLI maps them to exit
//! codes, and each says what failed and what to do. TLS failures are
//! translated from rustls' terms into the likely cause (wrong agent, identity
//! from another agent, expired or refused certificate).

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::wire::identity::Identity;
use crate::wire::protocol::{
    AgentStatus, Connection, DEFAULT_PORT, FileEntry, MAX_REPLY_HEADER_LEN, ProtocolError, Reply,
    Request,
};

mod body;
pub mod config;
mod digest;
pub(crate) mod enrol;
mod error;
mod get;
pub mod pair;
mod send;

pub use digest::HASH_WHILE_SENDING_MIN;

pub use error::ClientError;
use error::explain_io;
pub(crate) use error::{connect_error, hung_up, tls_advice, unexpected};
pub use get::{Fetched, check_destination};
use send::FileStamp;
pub use send::Sent;

/// Time to establish the TCP connection and the TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Time the agent may take to answer (it fsyncs big files before replying).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(300);
pub use crate::wire::protocol::RECONNECT_AFTER_IDLE;
/// Retries of `fileagent send` after a network failure, unless told otherwise.
pub const DEFAULT_RETRIES: u32 = 4;
/// Wait before the first retry; it doubles for each further one.
pub const RETRY_FIRST_WAIT: Duration = Duration::from_secs(1);
/// Longest wait between retries.
pub const RETRY_MAX_WAIT: Duration = Duration::from_secs(30);

/// Wait before retry number `attempt` (1-based): 1 s, 2 s, 4 s, ... at most
/// [`RETRY_MAX_WAIT`].
pub fn retry_wait(attempt: u32) -> Duration {
    RETRY_FIRST_WAIT
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(RETRY_MAX_WAIT)
}

/// Time a body may go without data in either direction.
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A phase of a long operation, for progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Computing the SHA-256 of a local file.
    Hashing,
    /// Sending a body.
    Sending,
    /// Receiving a body.
    Receiving,
}

/// Receives progress of long operations (implemented by the CLI's bars).
pub trait Observer {
    /// A phase of `total` bytes begins.
    fn phase(&mut self, _phase: Phase, _total: u64) {}
    /// `done` bytes of the current phase are complete.
    fn progress(&mut self, _done: u64) {}
    /// The agent has the digest of the file being sent and keeps partial
    /// uploads: if the transfer is interrupted from now on, it keeps what it
    /// received, and sending the file again resumes where it stopped.
    fn resumable(&mut self) {}
    /// The agent verified the whole body and is told to store it: from now
    /// on an interruption may leave the file stored.
    fn committing(&mut self) {}
}

/// An observer that ignores everything.
impl Observer for () {}

/// Whether `send` compresses bodies on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Compression {
    /// Compress text files of 1 KiB or more, but not binary ones or formats
    /// that are compressed already (.bgcode, .gz, .3mf, ...)
    // (This doc comment is `--help` text: the rule is codec::auto_compresses.)
    #[default]
    Auto,
    /// Compress every file.
    Always,
    /// Never compress.
    Never,
}

/// Splits `HOST[:PORT]` (IPv6 as `[addr]:port`); the port defaults to 7341.
pub fn parse_agent(agent: &str) -> Result<(String, u16), ClientError> {
    let bad = || ClientError::BadAddress(agent.to_string());
    if let Ok(addr) = agent.parse::<SocketAddr>() {
        return Ok((addr.ip().to_string(), addr.port()));
    }
    if let Ok(ip) = agent
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
    {
        return Ok((ip.to_string(), DEFAULT_PORT));
    }
    let (host, port) = match agent.rsplit_once(':') {
        Some((host, port)) => (host, port.parse::<u16>().map_err(|_| bad())?),
        None => (agent, DEFAULT_PORT),
    };
    if host.is_empty() || host.contains([':', '/', ' ']) {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// The connection to an agent.
pub(crate) type Conn = Connection<TlsStream<TcpStream>>;

/// Where and how to connect: kept so an idle connection can be reopened.
struct Endpoint {
    host: String,
    port: u16,
    addr: String,
    server_name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
    /// This workstation's client name.
    name: String,
    /// SHA-256 fingerprint of the agent's CA.
    ca_fingerprint: String,
}

impl Endpoint {
    /// TCP connection and TLS handshake, within [`CONNECT_TIMEOUT`].
    async fn open(&self) -> Result<Connection<TlsStream<TcpStream>>, ClientError> {
        let connect = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| connect_error(&e, &self.addr))?;
            tcp.set_nodelay(true).ok();
            TlsConnector::from(Arc::clone(&self.tls))
                .connect(self.server_name.clone(), tcp)
                .await
                .map_err(|e| {
                    hung_up(&e, &self.addr).unwrap_or_else(|| ClientError::Tls {
                        addr: self.addr.clone(),
                        reason: tls_advice(&e, &self.host),
                    })
                })
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| ClientError::Connect {
                addr: self.addr.clone(),
                reason: format!(
                    "no answer within {CONNECT_TIMEOUT:?}: check the address and that port {} is reachable",
                    self.port
                ),
            })??;
        Ok(Connection::new(stream, MAX_REPLY_HEADER_LEN))
    }
}

/// An authenticated connection to an agent. A connection left idle longer
/// than [`RECONNECT_AFTER_IDLE`] (e.g. while a big file is hashed) is
/// reopened before the next request, before the agent's `header_timeout`
/// closes it.
pub struct Client {
    conn: Connection<TlsStream<TcpStream>>,
    endpoint: Endpoint,
    last_used: Instant,
    reconnect_after: Duration,
    compression: Compression,
    /// Path, size and mtime of the last file hashed, and its digest: a
    /// retried send does not hash again.
    digest_cache: Option<(FileStamp, String)>,
    /// Files this large or larger are hashed while they are sent.
    hash_while_sending_min: u64,
    /// The connection is out of step; reopened before the next request.
    out_of_step: bool,
}

impl Client {
    /// Connects to `agent` (`HOST[:PORT]`) with `identity`, verifying the
    /// agent against the CA in the identity.
    pub async fn connect(agent: &str, identity: Identity) -> Result<Client, ClientError> {
        let (host, port) = parse_agent(agent)?;
        let addr = format!("{host}:{port}");
        let server_name = ServerName::try_from(host.clone())
            .map_err(|_| ClientError::BadAddress(agent.into()))?;
        let name = identity.name();
        let ca_fingerprint = crate::wire::identity::fingerprint(&identity.ca);
        let tls = crate::wire::tls::client_config(identity).map_err(|e| ClientError::Tls {
            addr: addr.clone(),
            reason: format!("{e:#}"),
        })?;
        let endpoint = Endpoint {
            host,
            port,
            addr,
            server_name,
            tls,
            name,
            ca_fingerprint,
        };
        Ok(Client {
            conn: endpoint.open().await?,
            endpoint,
            last_used: Instant::now(),
            reconnect_after: RECONNECT_AFTER_IDLE,
            compression: Compression::Auto,
            digest_cache: None,
            hash_while_sending_min: HASH_WHILE_SENDING_MIN,
            out_of_step: false,
        })
    }

    /// Changes [`RECONNECT_AFTER_IDLE`] for this client (for agents with a
    /// short `header_timeout`).
    pub fn set_reconnect_after(&mut self, idle: Duration) {
        self.reconnect_after = idle;
    }

    /// From what size on `send_file` hashes a file while sending it, the
    /// digest following inside the body (default [`HASH_WHILE_SENDING_MIN`]).
    pub fn set_hash_while_sending_min(&mut self, bytes: u64) {
        self.hash_while_sending_min = bytes;
    }

    /// Sets when `send_file` offers to compress the body (default: auto).
    pub fn set_compression(&mut self, compression: Compression) {
        self.compression = compression;
    }

    /// The agent's address as connected.
    pub fn addr(&self) -> &str {
        &self.endpoint.addr
    }

    /// The TLS 1.3 cipher suite of the current connection, e.g.
    /// `TLS13_CHACHA20_POLY1305_SHA256`.
    pub fn cipher_suite(&self) -> String {
        self.conn
            .get_ref()
            .get_ref()
            .1
            .negotiated_cipher_suite()
            .map_or_else(|| "unknown".into(), crate::wire::tls::suite_name)
    }

    /// Round trip time of a `ping`.
    pub async fn ping(&mut self) -> Result<Duration, ClientError> {
        let started = Instant::now();
        match self.request(&Request::Ping).await? {
            Reply::Pong => Ok(started.elapsed()),
            other => Err(unexpected(&other)),
        }
    }

    /// The agent's status.
    pub async fn status(&mut self) -> Result<AgentStatus, ClientError> {
        match self.request(&Request::Status).await? {
            Reply::Status(status) => Ok(status),
            other => Err(unexpected(&other)),
        }
    }

    /// The files ready in the spool.
    pub async fn list(&mut self) -> Result<Vec<FileEntry>, ClientError> {
        match self.request(&Request::List).await? {
            Reply::Files { files } => Ok(files),
            other => Err(unexpected(&other)),
        }
    }

    /// Deletes a file from the spool; returns whether it had been forwarded
    /// to OctoPrint (which keeps its copy).
    pub async fn delete(&mut self, name: &str) -> Result<bool, ClientError> {
        match self.request(&Request::Delete { name: name.into() }).await? {
            Reply::Deleted { forwarded, .. } => Ok(forwarded),
            other => Err(unexpected(&other)),
        }
    }

    /// Starts a print of `name` (or of the oldest file waiting) on the
    /// agent's printer: a person's act, which says the bed is clear.
    /// Returns the name of the file that started.
    pub async fn print(&mut self, name: Option<&str>) -> Result<String, ClientError> {
        let request = Request::Print {
            name: name.map(str::to_owned),
        };
        match self.request(&request).await? {
            Reply::Printing { name } => Ok(name),
            other => Err(unexpected(&other)),
        }
    }

    /// Asks the agent for a new certificate for a new key made here, and
    /// replaces the identity file at `path` with it (atomically, mode 0600).
    /// Returns the new expiry.
    pub async fn renew(&mut self, path: &Path) -> Result<time::OffsetDateTime, ClientError> {
        let local = |error| ClientError::Local {
            what: "cannot renew the identity file",
            path: path.to_path_buf(),
            error,
        };
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| local(io::Error::other(e)))?;
        let csr = enrol::certificate_request(&self.endpoint.name, &key)
            .map_err(|e| local(io::Error::other(e)))?;
        let issued = match self.request(&Request::Renew { csr }).await? {
            Reply::Renewed(issued) => issued,
            other => return Err(unexpected(&other)),
        };
        let pem = enrol::accept(&issued, &key, &self.endpoint.ca_fingerprint)?;
        crate::durable::write(
            path,
            pem.as_bytes(),
            0o600,
            crate::durable::Existing::Replace,
        )
        .map_err(local)?;
        time::OffsetDateTime::from_unix_timestamp(issued.not_after).map_err(|_| {
            ClientError::Integrity("the renewed certificate has an impossible expiry".into())
        })
    }

    /// Drops the current connection and opens a new one (after a network
    /// error, before retrying).
    pub async fn reconnect(&mut self) -> Result<(), ClientError> {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.conn.shutdown()).await;
        self.conn = self.endpoint.open().await?;
        self.last_used = Instant::now();
        Ok(())
    }

    /// Closes the connection cleanly.
    pub async fn close(mut self) {
        let _ = self.conn.shutdown().await;
    }

    /// The connection is out of step (a body left unread): the next
    /// request opens a new one.
    fn drop_connection(&mut self) {
        self.out_of_step = true;
    }

    async fn request(&mut self, request: &Request) -> Result<Reply, ClientError> {
        if self.out_of_step || self.last_used.elapsed() > self.reconnect_after {
            self.out_of_step = false;
            let _ = self.conn.shutdown().await;
            self.conn = self.endpoint.open().await?;
        }
        self.timed(|conn| conn.write_message(request)).await?;
        self.reply().await
    }

    /// The next reply, past any progress of a body that has ended.
    async fn reply(&mut self) -> Result<Reply, ClientError> {
        self.reply_observed(&mut ()).await
    }

    /// The next reply; the progress of a body that arrives meanwhile (a
    /// slow link may still carry most of a body the client has written)
    /// goes to `observer`.
    async fn reply_observed(
        &mut self,
        observer: &mut (dyn Observer + Send),
    ) -> Result<Reply, ClientError> {
        let reply = loop {
            let reply = self
                .conn
                .expect_message::<Reply>(REPLY_TIMEOUT)
                .await
                .map_err(|e| self.explain(e))?;
            match reply {
                Reply::Progress { received } => observer.progress(received),
                reply => break reply,
            }
        };
        self.last_used = Instant::now();
        match reply {
            Reply::Error { code, message } => Err(ClientError::Refused { code, message }),
            reply => Ok(reply),
        }
    }

    async fn timed<'a, F, Fut>(&'a mut self, op: F) -> Result<(), ClientError>
    where
        F: FnOnce(&'a mut Connection<TlsStream<TcpStream>>) -> Fut,
        Fut: std::future::Future<Output = io::Result<()>> + 'a,
    {
        let addr = self.endpoint.addr.clone();
        self.last_used = Instant::now();
        match tokio::time::timeout(BODY_IDLE_TIMEOUT, op(&mut self.conn)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(explain_io(e, &addr)),
            Err(_) => Err(ProtocolError::Timeout(BODY_IDLE_TIMEOUT).into()),
        }
    }

    fn explain(&self, e: ProtocolError) -> ClientError {
        match e {
            ProtocolError::Io(e) => explain_io(e, &self.endpoint.addr),
            ProtocolError::UnexpectedEof => {
                ClientError::Protocol(ProtocolError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the agent closed the connection (it may be shutting down, or refused this client; see its log)",
                )))
            }
            other => ClientError::Protocol(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_addresses_parse() {
        assert_eq!(
            parse_agent("pi.local").unwrap(),
            ("pi.local".into(), DEFAULT_PORT)
        );
        assert_eq!(
            parse_agent("pi.local:9000").unwrap(),
            ("pi.local".into(), 9000)
        );
        assert_eq!(parse_agent("127.0.0.1:1").unwrap(), ("127.0.0.1".into(), 1));
        assert_eq!(parse_agent("[::1]:7").unwrap(), ("::1".into(), 7));
        assert_eq!(parse_agent("::1").unwrap(), ("::1".into(), DEFAULT_PORT));
        for bad in ["", ":7341", "pi:port", "pi:99999", "a b", "http://pi"] {
            assert!(parse_agent(bad).is_err(), "{bad:?} accepted");
        }
    }
}
