//! The workstation's library client: connects to an agent over mutually
//! authenticated TLS and runs protocol operations on one connection.
//!
//! Errors are typed ([`ClientError`]) because the CLI maps them to exit
//! codes, and each says what failed and what to do. TLS failures are
//! translated from rustls' terms into the likely cause (wrong agent, identity
//! from another agent, expired or refused certificate).

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::wire::identity::Identity;
use crate::wire::protocol::{AgentStatus, FileEntry, ProtocolError, Reply, Request};

mod body;
#[cfg(feature = "bridge")]
pub mod bridge;
pub(crate) mod config;
mod connect;
mod digest;
pub(crate) mod enrol;
mod error;
mod follow;
mod get;
mod groups;
pub mod growing;
mod local_name;
mod outgoing;
pub mod pair;
mod send;

pub(crate) use digest::HASH_WHILE_SENDING_MIN;

pub(crate) use connect::parse_agent;
use connect::{Address, Conn};
pub use error::ClientError;
use error::explain_io;
use error::tls_advice;
pub(crate) use error::unexpected;
pub use follow::Fate;
pub use get::Fetched;

/// Where the bridge (`fileagent bridge`, and the web page) listens unless
/// told otherwise.
pub const BRIDGE_LISTEN: &str = "127.0.0.1:7342";
pub(crate) use get::check_destination;
use send::FileStamp;
pub use send::Sent;

/// Time the agent may take to answer (it fsyncs big files before replying).
pub(crate) const REPLY_TIMEOUT: Duration = Duration::from_secs(300);
pub(crate) use crate::wire::protocol::RECONNECT_AFTER_IDLE;
/// Retries of `fileagent send` after a network failure, unless told otherwise.
pub(crate) const DEFAULT_RETRIES: u32 = 4;
/// Wait before the first retry; it doubles for each further one.
pub(crate) const RETRY_FIRST_WAIT: Duration = Duration::from_secs(1);
/// Longest wait between retries.
pub(crate) const RETRY_MAX_WAIT: Duration = Duration::from_secs(30);

/// Wait before retry number `attempt` (1-based): 1 s, 2 s, 4 s, ... at most
/// [`RETRY_MAX_WAIT`].
pub(crate) fn retry_wait(attempt: u32) -> Duration {
    RETRY_FIRST_WAIT
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(RETRY_MAX_WAIT)
}

/// How long a connection being replaced may take to say goodbye (TLS
/// close_notify) before it is dropped anyway.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);
/// Time a body may go without data in either direction.
pub(crate) const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

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

/// Where and how to connect: kept so an idle connection can be reopened.
struct Endpoint {
    address: Address,
    tls: Arc<rustls::ClientConfig>,
    /// This workstation's client name.
    name: String,
    /// SHA-256 fingerprint of the agent's CA.
    ca_fingerprint: String,
}

impl Endpoint {
    /// A new connection, authenticated both ways.
    async fn open(&self) -> Result<Conn, ClientError> {
        let address = &self.address;
        connect::open(address, Arc::clone(&self.tls), |e| ClientError::Tls {
            addr: address.addr.clone(),
            reason: tls_advice(e, &address.host),
        })
        .await
    }
}

/// An authenticated connection to an agent. A connection left idle longer
/// than `RECONNECT_AFTER_IDLE` (e.g. while a big file is hashed) is
/// reopened before the next request, before the agent's `header_timeout`
/// closes it.
pub struct Client {
    conn: Conn,
    endpoint: Endpoint,
    last_used: Instant,
    reconnect_after: Duration,
    compression: Compression,
    /// The print choice `send_file` carries (`None`: the agent decides).
    print: Option<bool>,
    /// Path, size and mtime of the last file hashed, and its digest: a
    /// retried send does not hash again.
    digest_cache: Option<(FileStamp, String)>,
    /// Files this large or larger are hashed while they are sent.
    hash_while_sending_min: u64,
    /// The connection is out of step; reopened before the next request.
    out_of_step: bool,
    /// During `send_growing`: the file is still being written.
    growing: Option<std::sync::Arc<growing::Growth>>,
}

impl Client {
    /// Connects to `agent` (`HOST[:PORT]`) with `identity`, verifying the
    /// agent against the CA in the identity.
    pub async fn connect(agent: &str, identity: Identity) -> Result<Client, ClientError> {
        let address = Address::parse(agent)?;
        let name = identity.name();
        let ca_fingerprint = crate::wire::identity::fingerprint(&identity.ca);
        let tls = crate::wire::tls::client_config(identity).map_err(|e| ClientError::Tls {
            addr: address.addr.clone(),
            reason: format!("{e:#}"),
        })?;
        let endpoint = Endpoint {
            address,
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
            print: None,
            digest_cache: None,
            hash_while_sending_min: HASH_WHILE_SENDING_MIN,
            out_of_step: false,
            growing: None,
        })
    }

    /// Changes `RECONNECT_AFTER_IDLE` for this client (for agents with a
    /// short `header_timeout`).
    pub fn set_reconnect_after(&mut self, idle: Duration) {
        self.reconnect_after = idle;
    }

    /// From what size on `send_file` hashes a file while sending it, the
    /// digest following inside the body (default `HASH_WHILE_SENDING_MIN`).
    pub fn set_hash_while_sending_min(&mut self, bytes: u64) {
        self.hash_while_sending_min = bytes;
    }

    /// Sets when `send_file` offers to compress the body (default: auto).
    pub fn set_compression(&mut self, compression: Compression) {
        self.compression = compression;
    }

    /// Sets the print choice `send_file` carries: `Some(true)` "upload and
    /// print", `Some(false)` "upload only", `None` (default) as the agent's
    /// `auto_print` says. The agent honours it within its own rules.
    pub fn set_print(&mut self, print: Option<bool>) {
        self.print = print;
    }

    /// The agent's address as connected.
    pub fn addr(&self) -> &str {
        &self.endpoint.address.addr
    }

    /// The TLS 1.3 cipher suite of the current connection, e.g.
    /// `TLS13_CHACHA20_POLY1305_SHA256`.
    pub(crate) fn cipher_suite(&self) -> String {
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
    pub(crate) async fn reconnect(&mut self) -> Result<(), ClientError> {
        let _ = tokio::time::timeout(GOODBYE_TIMEOUT, self.conn.shutdown()).await;
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
        self.writing(|conn| conn.write_message(request)).await?;
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
        error::answer(reply)
    }

    /// Runs one write (bounded by the connection's write timeout), its
    /// failure explained.
    async fn writing<'a, F, Fut>(&'a mut self, op: F) -> Result<(), ClientError>
    where
        F: FnOnce(&'a mut Conn) -> Fut,
        Fut: std::future::Future<Output = Result<(), ProtocolError>> + 'a,
    {
        let addr = self.endpoint.address.addr.clone();
        self.last_used = Instant::now();
        op(&mut self.conn).await.map_err(|e| explain(e, &addr))
    }

    fn explain(&self, e: ProtocolError) -> ClientError {
        explain(e, &self.endpoint.address.addr)
    }
}

/// A protocol failure as the workstation's user should hear of it.
fn explain(e: ProtocolError, addr: &str) -> ClientError {
    match e {
        ProtocolError::Io(e) => explain_io(e, addr),
        ProtocolError::UnexpectedEof => ClientError::Protocol(ProtocolError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the agent closed the connection (it may be shutting down, or refused this client; see its log)",
        ))),
        other => ClientError::Protocol(other),
    }
}
