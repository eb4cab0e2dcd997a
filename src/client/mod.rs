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
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::codec::Compressor;
use crate::identity::Identity;
use crate::protocol::{
    AgentStatus, CHUNK_LEN, Connection, DEFAULT_PORT, DIGEST_LEN, Encoding, ErrorCode, FileEntry,
    MAX_REPLY_HEADER_LEN, ProtocolError, Reply, Request,
};

mod body;
mod digest;
mod error;

use body::{Body, Piece};
pub use digest::HASH_WHILE_SENDING_MIN;
use digest::{PendingDigest, hash_changed, hash_file};

pub use error::ClientError;
use error::explain_io;
pub(crate) use error::{connect_advice, tls_advice, unexpected};

/// Time to establish the TCP connection and the TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Time the agent may take to answer (it fsyncs big files before replying).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(300);
/// An idle connection older than this is reopened before the next request;
/// keep the agent's `header_timeout` above it (its default is 60 s).
pub const RECONNECT_AFTER_IDLE: Duration = Duration::from_secs(30);
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
}

/// An observer that ignores everything.
impl Observer for () {}

/// Result of [`Client::send_file`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Sent {
    /// Name in the spool.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 confirmed by the agent.
    pub sha256: String,
    /// The identical file was already there; no body was sent.
    pub unchanged: bool,
    /// A different file of that name was replaced.
    pub replaced: bool,
    /// Seconds for the whole operation (hashing included).
    pub seconds: f64,
    /// Bytes of body that crossed the network (compressed or not).
    pub wire_bytes: u64,
    /// The body's compression on the wire, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
    /// Bytes an interrupted earlier upload had delivered, which were not
    /// sent again.
    pub resumed_from: u64,
}

/// Maps a local I/O error on `path` to [`ClientError::Local`].
/// Path, size and modification time: what identifies a file's version.
type FileStamp = (std::path::PathBuf, u64, Option<std::time::SystemTime>);

type LocalError = Box<dyn FnOnce(io::Error) -> ClientError + Send>;

fn local_error(path: &Path) -> impl Fn(&'static str) -> LocalError + use<> {
    let path = path.to_path_buf();
    move |what| {
        let path = path.clone();
        Box::new(move |source| ClientError::Local { what, path, source })
    }
}

/// Whether `send` compresses bodies on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Compression {
    /// Compress print files except formats that are compressed already
    /// (`.bgcode`, `.gz`, `.3mf`, ...).
    #[default]
    Auto,
    /// Compress every file.
    Always,
    /// Never compress.
    Never,
}

/// Result of [`Client::get`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Size in bytes.
    pub size: u64,
    /// Verified SHA-256.
    pub sha256: String,
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
                .map_err(|e| ClientError::Connect {
                    addr: self.addr.clone(),
                    reason: connect_advice(&e),
                })?;
            tcp.set_nodelay(true).ok();
            TlsConnector::from(Arc::clone(&self.tls))
                .connect(self.server_name.clone(), tcp)
                .await
                .map_err(|e| ClientError::Tls {
                    addr: self.addr.clone(),
                    reason: tls_advice(&e, &self.host),
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
        let ca_fingerprint = crate::identity::fingerprint(&identity.ca);
        let tls = crate::tls::client_config(identity).map_err(|e| ClientError::Tls {
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
            .map_or_else(|| "unknown".into(), crate::tls::suite_name)
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

    /// Deletes a file from the spool.
    pub async fn delete(&mut self, name: &str) -> Result<(), ClientError> {
        match self.request(&Request::Delete { name: name.into() }).await? {
            Reply::Deleted { .. } => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Sends the file at `path` under `name`.
    pub async fn send_file(
        &mut self,
        path: &Path,
        name: &str,
        overwrite: bool,
        observer: &mut (dyn Observer + Send),
    ) -> Result<Sent, ClientError> {
        let started = Instant::now();
        let local = local_error(path);
        let meta = tokio::fs::metadata(path)
            .await
            .map_err(local("cannot read"))?;
        let size = meta.len();
        let stamp = (path.to_path_buf(), size, meta.modified().ok());
        let cached = match &self.digest_cache {
            Some((cached, digest)) if *cached == stamp => Some(digest.clone()),
            _ => None,
        };
        let mut digest = match cached {
            Some(sha256) => PendingDigest::known(sha256),
            // The body starts at once and the digest follows inside it.
            None if size >= self.hash_while_sending_min => PendingDigest::later(path),
            None => {
                observer.phase(Phase::Hashing, size);
                let sha256 = hash_file(path, size, observer)
                    .await
                    .map_err(local("cannot read"))?;
                self.digest_cache = Some((stamp.clone(), sha256.clone()));
                PendingDigest::known(sha256)
            }
        };
        let mut resumed_from = 0;
        let mut retried_whole = false;
        let result = loop {
            let late = digest.now().is_none();
            let result = self
                .transfer(
                    path,
                    name,
                    size,
                    &mut digest,
                    overwrite,
                    observer,
                    &mut resumed_from,
                )
                .await;
            if late {
                // Known from now on: a retry sends it up front, to resume.
                let sha256 = digest.wait().await.map_err(local("cannot read"))?;
                self.digest_cache = Some((stamp.clone(), sha256));
            }
            match result {
                // A file of that name is there: with the digest, the agent
                // tells whether it is this one.
                Err(ClientError::Refused {
                    code: ErrorCode::Exists,
                    ..
                }) if late => {}
                // The part the agent kept was damaged; it dropped it: once more, whole.
                Err(ClientError::Refused {
                    code: ErrorCode::DigestMismatch,
                    ..
                }) if !retried_whole
                    && resumed_from > 0
                    && !hash_changed(path, digest.now().unwrap_or_default()).await =>
                {
                    retried_whole = true;
                }
                other => break other,
            }
        };
        result.map(|mut sent| {
            sent.seconds = started.elapsed().as_secs_f64();
            sent
        })
    }

    /// One `send` of a file: the request (with the digest if it is known
    /// by now), the body from the offset the agent gives (compressed if
    /// agreed, with the digest inside if the request lacked it), and the
    /// verdict.
    #[allow(clippy::too_many_arguments)]
    async fn transfer(
        &mut self,
        path: &Path,
        name: &str,
        size: u64,
        digest: &mut PendingDigest,
        overwrite: bool,
        observer: &mut (dyn Observer + Send),
        resumed_from: &mut u64,
    ) -> Result<Sent, ClientError> {
        let local = local_error(path);
        let offer = match self.compression {
            Compression::Auto => crate::codec::worth_compressing(name),
            Compression::Always => true,
            Compression::Never => false,
        };
        let announced = digest.now().map(str::to_string);
        let mut digest_due = announced.is_none();
        let request = Request::Send {
            name: name.into(),
            size,
            sha256: announced,
            overwrite,
            encoding: offer.then_some(Encoding::Zstd),
            resume: true,
        };
        let sent_as = |sha256, unchanged, replaced, wire_bytes, encoding, resumed_from| Sent {
            name: name.into(),
            size,
            sha256,
            unchanged,
            replaced,
            seconds: 0.0,
            wire_bytes,
            encoding,
            resumed_from,
        };
        let (encoding, offset) = match self.request(&request).await? {
            Reply::Continue { encoding, offset } if offset <= size => (encoding, offset),
            Reply::Continue { offset, .. } => {
                return Err(ClientError::Integrity(format!(
                    "the agent offered to resume at byte {offset} of a {size}-byte file"
                )));
            }
            Reply::Stored { sha256, .. } => return Ok(sent_as(sha256, true, false, 0, None, 0)),
            other => return Err(unexpected(&other)),
        };
        *resumed_from = offset;
        let hash = digest.is_unstarted();
        let (mut body, hashing) = Body::start(path, offset, size, hash);
        if hash {
            digest.hashed_by(hashing);
        }
        let mut deflate = match encoding {
            Some(Encoding::Zstd) => Some(Compressor::new().map_err(local("cannot compress"))?),
            None => None,
        };
        observer.phase(Phase::Sending, size);
        observer.progress(offset);
        let mut wire = Vec::with_capacity(2 * CHUNK_LEN);
        let mut wire_bytes = 0u64;
        let mut sent = offset;
        // The reader stops at the announced size; if the file changed
        // meanwhile the agent's digest check refuses it.
        while let Some(piece) = body.next().await {
            let chunk = match piece.map_err(|e| local(e.what)(e.source))? {
                Piece::Data(chunk) => chunk,
                Piece::Digest(sha256) => {
                    digest.set(sha256);
                    if digest_due {
                        self.send_digest(digest, path).await?;
                        digest_due = false;
                    }
                    continue;
                }
            };
            let bytes = chunk.bytes();
            match deflate.as_mut() {
                Some(c) => {
                    c.compress(bytes, &mut wire)
                        .map_err(local("cannot compress"))?;
                    if wire.len() >= CHUNK_LEN {
                        self.timed(|conn| conn.write_chunk(&wire)).await?;
                        wire_bytes += wire.len() as u64;
                        wire.clear();
                    }
                }
                None => {
                    self.timed(|conn| conn.write_chunk(bytes)).await?;
                    wire_bytes += bytes.len() as u64;
                }
            }
            sent += bytes.len() as u64;
            body.recycle(chunk);
            observer.progress(sent);
        }
        if let Some(c) = deflate.as_mut() {
            c.finish(&mut wire).map_err(local("cannot compress"))?;
            self.timed(|conn| conn.write_chunk(&wire)).await?;
            wire_bytes += wire.len() as u64;
        }
        if digest_due {
            self.send_digest(digest, path).await?;
        }
        self.timed(|conn| conn.write_end()).await?;
        let sha256 = digest.wait().await.map_err(local("cannot read"))?;
        let sha256 = sha256.as_str();
        match self.reply().await {
            Ok(Reply::Stored {
                sha256: confirmed,
                unchanged,
                replaced,
                ..
            }) if confirmed == sha256 => Ok(sent_as(
                confirmed, unchanged, replaced, wire_bytes, encoding, offset,
            )),
            Ok(Reply::Stored { sha256: other, .. }) => Err(ClientError::Integrity(format!(
                "the agent stored SHA-256 {other} but this file is {sha256}"
            ))),
            Ok(other) => Err(unexpected(&other)),
            Err(ClientError::Refused {
                code: ErrorCode::SizeMismatch | ErrorCode::DigestMismatch,
                message,
            }) if sent != size || hash_changed(path, sha256).await => Err(ClientError::Local {
                what: "file changed while it was being sent:",
                path: path.to_path_buf(),
                source: io::Error::other(message),
            }),
            Err(e) => Err(e),
        }
    }

    /// Fetches `name` into `dest`: written to a temp file beside it and
    /// renamed into place only once size and SHA-256 are verified.
    pub async fn get(
        &mut self,
        name: &str,
        dest: &Path,
        observer: &mut (dyn Observer + Send),
    ) -> Result<Fetched, ClientError> {
        let size = match self.request(&Request::Get { name: name.into() }).await? {
            Reply::Body { size, .. } => size,
            other => return Err(unexpected(&other)),
        };
        let dir = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let local = |what| {
            move |source| ClientError::Local {
                what,
                path: dest.to_path_buf(),
                source,
            }
        };
        let temp = tempfile::Builder::new()
            .prefix(".fileagent-")
            .suffix(".part")
            .tempfile_in(dir)
            .map_err(local("cannot create a file beside"))?;
        let (file, temp_path) = temp.into_parts();
        let mut file = tokio::fs::File::from_std(file);
        observer.phase(Phase::Receiving, size);
        let mut hasher = Sha256::new();
        let mut received = 0u64;
        while let Some(chunk) = self.conn.read_chunk(BODY_IDLE_TIMEOUT).await? {
            received += chunk.len() as u64;
            if received > size {
                return Err(ClientError::Integrity(format!(
                    "more than the announced {size} bytes arrived"
                )));
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(local("cannot write"))?;
            observer.progress(received);
        }
        let announced = match self.reply().await? {
            Reply::Complete { sha256 } => sha256,
            other => return Err(unexpected(&other)),
        };
        let computed = hex::encode(hasher.finalize());
        if received != size {
            return Err(ClientError::Integrity(format!(
                "{received} of the announced {size} bytes arrived"
            )));
        }
        if computed != announced {
            return Err(ClientError::Integrity(format!(
                "SHA-256 is {computed} but the agent sent {announced}"
            )));
        }
        file.sync_all().await.map_err(local("cannot write"))?;
        drop(file);
        temp_path
            .persist(dest)
            .map_err(|e| local("cannot write")(e.error))?;
        Ok(Fetched {
            size,
            sha256: computed,
        })
    }

    /// Asks the agent for a new certificate for a new key made here, and
    /// replaces the identity file at `path` with it (atomically, mode 0600).
    /// Returns the new expiry.
    pub async fn renew(&mut self, path: &Path) -> Result<time::OffsetDateTime, ClientError> {
        let local = |source| ClientError::Local {
            what: "cannot renew the identity file",
            path: path.to_path_buf(),
            source,
        };
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| local(io::Error::other(e)))?;
        let csr = crate::pairing::workstation::certificate_request(&self.endpoint.name, &key)
            .map_err(|e| local(io::Error::other(e)))?;
        let issued = match self.request(&Request::Renew { csr }).await? {
            Reply::Renewed(issued) => issued,
            other => return Err(unexpected(&other)),
        };
        let pem =
            crate::pairing::workstation::accept(&issued, &key, &self.endpoint.ca_fingerprint)?;
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

    async fn request(&mut self, request: &Request) -> Result<Reply, ClientError> {
        if self.last_used.elapsed() > self.reconnect_after {
            let _ = self.conn.shutdown().await;
            self.conn = self.endpoint.open().await?;
        }
        self.timed(|conn| conn.write_message(request)).await?;
        self.reply().await
    }

    async fn reply(&mut self) -> Result<Reply, ClientError> {
        let reply = self
            .conn
            .expect_message::<Reply>(REPLY_TIMEOUT)
            .await
            .map_err(|e| self.explain(e))?;
        self.last_used = Instant::now();
        match reply {
            Reply::Error { code, message } => Err(ClientError::Refused { code, message }),
            reply => Ok(reply),
        }
    }

    /// Sends the file's digest inside the body, waiting for it if need be.
    async fn send_digest(
        &mut self,
        digest: &mut PendingDigest,
        path: &Path,
    ) -> Result<(), ClientError> {
        let sha256 = digest
            .wait()
            .await
            .map_err(local_error(path)("cannot read"))?;
        let mut raw = [0u8; DIGEST_LEN];
        hex::decode_to_slice(&sha256, &mut raw)
            .map_err(|e| ClientError::Integrity(e.to_string()))?;
        self.timed(|conn| conn.write_digest(&raw)).await
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
