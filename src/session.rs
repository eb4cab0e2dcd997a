//! The agent's side of one authenticated connection: reads requests, carries
//! them out on the spool and answers, until the client leaves, a timeout
//! strikes or the agent shuts down.
//!
//! Errors the frame stream survives (a refused name, a bad digest, a
//! malformed JSON header) are answered and the session goes on; errors that
//! lose the framing (a bogus frame, an oversized header, a timeout) are
//! answered if possible and end the session.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::codec::Decompressor;
use crate::protocol::{
    AgentStatus, BodyRead, CHUNK_LEN, Connection, Encoding, ErrorCode, MIN_BODY_RATE,
    ProtocolError, Reply, Request,
};
use crate::spool::{Begin, MIN_PIECE_LEN, Spool, SpoolError};

/// What every session shares: the spool, the timeouts and the start time.
#[derive(Debug)]
pub struct Shared {
    /// The spool.
    pub spool: Spool,
    /// Time for each request header, including the wait for it.
    pub header_timeout: Duration,
    /// Time a body may go without data (both directions).
    pub body_idle_timeout: Duration,
    /// Largest file accepted (reported by `status`).
    pub max_file_size: u64,
    /// When the agent started.
    pub started: Instant,
    /// The forwarder to OctoPrint.
    pub forward: crate::forward::Handle,
    /// Issues renewed client certificates and notes when clients connect.
    pub authority: Arc<crate::clients::Authority>,
}

/// Why a session ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The frame stream broke or timed out.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// Writing a reply failed.
    #[error("cannot write to the client: {0}")]
    Io(#[from] std::io::Error),
}

/// One connection's request loop.
pub struct Session<S> {
    conn: Connection<S>,
    shared: Arc<Shared>,
    client: String,
    shutdown: watch::Receiver<bool>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// A session for `client` (the CN of its certificate).
    pub fn new(
        conn: Connection<S>,
        shared: Arc<Shared>,
        client: String,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Session {
            conn,
            shared,
            client,
            shutdown,
        }
    }

    /// Serves requests until the client closes the connection (`Ok`), or the
    /// stream breaks.
    pub async fn run(mut self) -> Result<(), SessionError> {
        let header_timeout = self.shared.header_timeout;
        loop {
            // Idle between requests: a shutdown ends the session at once.
            let next = tokio::select! {
                next = tokio::time::timeout(header_timeout, self.conn.read_message::<Request>(header_timeout)) => next,
                () = stopped(&mut self.shutdown) => {
                    self.conn.shutdown().await.ok();
                    return Ok(());
                }
            };
            let request = match next.unwrap_or(Err(ProtocolError::Timeout(header_timeout))) {
                Ok(Some(request)) => request,
                Ok(None) => return Ok(()),
                Err(e) if e.is_recoverable() => {
                    warn!(client_cn = %self.client, error = %e, "bad request");
                    self.send(&Reply::Error {
                        code: ErrorCode::BadRequest,
                        message: e.to_string(),
                    })
                    .await?;
                    continue;
                }
                Err(e) => return self.fail_stream(e).await,
            };
            self.handle(request).await?;
        }
    }

    /// Answers a stream that lost its framing (or timed out) with the most
    /// useful error, if the peer is still there, then ends the session.
    async fn fail_stream(&mut self, e: ProtocolError) -> Result<(), SessionError> {
        let code = match &e {
            ProtocolError::Io(_) | ProtocolError::UnexpectedEof => return Err(e.into()),
            ProtocolError::HeaderTooLarge { .. } => ErrorCode::HeaderTooLarge,
            ProtocolError::Timeout(_) | ProtocolError::TooSlow { .. } => ErrorCode::Timeout,
            _ => ErrorCode::BadRequest,
        };
        let reply = Reply::Error {
            code,
            message: e.to_string(),
        };
        // Best effort: the peer may already be gone.
        if self.send(&reply).await.is_ok() {
            self.conn.shutdown().await.ok();
        }
        Err(e.into())
    }

    /// Writes a reply; a client that stops reading for `body_idle_timeout`
    /// is given up on.
    async fn send(&mut self, reply: &Reply) -> Result<(), SessionError> {
        let idle = self.shared.body_idle_timeout;
        tokio::time::timeout(idle, self.conn.write_message(reply))
            .await
            .map_err(|_| ProtocolError::Timeout(idle))??;
        Ok(())
    }

    async fn handle(&mut self, request: Request) -> Result<(), SessionError> {
        let reply = match request {
            Request::Ping => Reply::Pong,
            Request::Send {
                name,
                size,
                sha256,
                overwrite,
                encoding,
                resume,
            } => {
                return self
                    .receive(&name, size, sha256.as_deref(), overwrite, encoding, resume)
                    .await;
            }
            Request::Get { name } => return self.send_file(&name).await,
            Request::List => match self.shared.spool.list().await {
                Ok(files) => Reply::Files {
                    files: self.shared.forward.view().listing(files),
                },
                Err(e) => self.error_reply(&e),
            },
            Request::Delete { name } => match self.shared.spool.delete(&name).await {
                Ok(()) => {
                    info!(client_cn = %self.client, file_name = %name, "deleted");
                    Reply::Deleted { name }
                }
                Err(e) => self.error_reply(&e),
            },
            Request::Status => Reply::Status(self.status().await),
            Request::Renew { csr } => self.renew(csr).await,
            Request::Pair { .. } | Request::PairConfirm { .. } => Reply::Error {
                code: ErrorCode::Forbidden,
                message: "this workstation is paired already: pairing needs a connection without a certificate"
                    .into(),
            },
        };
        self.send(&reply).await?;
        Ok(())
    }

    /// Signs a new certificate for this connection's client name over a new key.
    async fn renew(&self, csr: String) -> Reply {
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

    fn error_reply(&self, e: &SpoolError) -> Reply {
        let code = e.code();
        if code == ErrorCode::Internal {
            warn!(client_cn = %self.client, error = %e, "request failed");
        }
        let hint = match code {
            ErrorCode::Exists => " (send with --overwrite to replace it)",
            ErrorCode::NoSpace => " (delete files from the spool or free space on the agent)",
            ErrorCode::TooLarge => " (raise max_file_size in the agent's config)",
            ErrorCode::Internal => " (see the agent's log)",
            _ => "",
        };
        Reply::Error {
            code,
            message: format!("{e}{hint}"),
        }
    }

    async fn status(&self) -> AgentStatus {
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
        }
    }

    /// `send`: checks, `continue`, the body, then `stored` or an error.
    async fn receive(
        &mut self,
        name: &str,
        size: u64,
        sha256: Option<&str>,
        overwrite: bool,
        encoding: Option<Encoding>,
        resume: bool,
    ) -> Result<(), SessionError> {
        let started = Instant::now();
        let mut upload = match self
            .shared
            .spool
            .begin(name, size, sha256, overwrite, resume)
            .await
        {
            Ok(Begin::Receive(upload)) => upload,
            Ok(Begin::Unchanged(stored)) => {
                info!(client_cn = %self.client, file_name = %name, bytes = size, sha256 = %stored.sha256, "unchanged, already stored");
                return self.send(&stored_reply(stored)).await;
            }
            Err(e) => {
                info!(client_cn = %self.client, file_name = %name, bytes = size, error = %e, "send refused");
                return self.send(&self.error_reply(&e)).await;
            }
        };
        // Every encoding there is, this agent decodes: accept what is offered.
        let offset = upload.resumed_from();
        if offset > 0 {
            info!(client_cn = %self.client, file_name = %name, bytes = size, offset, "resuming an interrupted upload");
        }
        self.send(&Reply::Continue { encoding, offset }).await?;
        let idle = self.shared.body_idle_timeout;
        // Read the whole body even after a write error, so the reply is
        // read by a client that is still sending and the stream stays in sync.
        let mut failure: Option<SpoolError> = None;
        let mut inflate = match encoding {
            Some(Encoding::Zstd) => match Decompressor::new() {
                Ok(d) => Some(d),
                Err(e) => {
                    failure = Some(SpoolError::io("cannot start a zstd decoder")(e));
                    None
                }
            },
            None => None,
        };
        let mut wire_bytes = 0u64;
        // Compressed bodies (and the rest of a failed one) are read into
        // this; plain ones straight into the upload's buffers.
        let mut scratch = Vec::new();
        self.conn.guard_rate(Some((MIN_BODY_RATE, idle)));
        loop {
            let direct = failure.is_none() && inflate.is_none();
            let read = if direct {
                match upload.spare().await {
                    Ok(room) => self.conn.read_body(room, idle).await,
                    Err(e) => {
                        failure = Some(e);
                        continue;
                    }
                }
            } else {
                scratch.resize(MIN_PIECE_LEN, 0);
                self.conn.read_body(&mut scratch, idle).await
            };
            match read {
                Ok(BodyRead::Data(n)) => {
                    wire_bytes += n as u64;
                    let accepted = match inflate.as_mut() {
                        _ if failure.is_some() => Ok(()),
                        Some(d) => inflate_into(d, &scratch[..n], &mut upload).await,
                        None => upload.commit(n).await,
                    };
                    if let Err(e) = accepted {
                        failure = Some(e);
                    }
                }
                Ok(BodyRead::End) => break,
                // Allowed once, in a body whose `send` came without it.
                Ok(BodyRead::Digest(_)) if upload.has_digest() => {
                    // A client this confused keeps nothing for resuming.
                    upload.discard().await;
                    self.conn.guard_rate(None);
                    return self
                        .fail_stream(ProtocolError::Unexpected {
                            got: "digest",
                            expected: "data or end (the file's digest is known already)",
                        })
                        .await;
                }
                Ok(BodyRead::Digest(digest)) => {
                    match upload.declare_digest(&hex::encode(digest)).await {
                        Ok(resumable) => {
                            debug!(client_cn = %self.client, file_name = %name, received = upload.written(), resumable, "digest received");
                        }
                        Err(e) => failure = failure.or(Some(e)),
                    }
                }
                Err(e) => {
                    let kept = upload.is_resumable();
                    warn!(
                        client_cn = %self.client, file_name = %name, bytes = size, received = upload.written(),
                        kept_for_resume = kept, error = %e, "upload interrupted"
                    );
                    // A resumable body stays for the next try; a temp file goes.
                    upload.close().await;
                    self.conn.guard_rate(None);
                    return self.fail_stream(e).await;
                }
            }
        }
        self.conn.guard_rate(None);
        if failure.is_none() && inflate.as_ref().is_some_and(|d| !d.is_complete()) {
            failure = Some(SpoolError::BadEncoding(
                "the body ends inside a zstd frame".into(),
            ));
        }
        let result = match failure {
            // What a full disk left of the body goes, to give the space back.
            Some(e @ SpoolError::DiskFull) => {
                upload.discard().await;
                Err(e)
            }
            Some(e) => Err(e),
            None => upload.finish(overwrite).await,
        };
        let reply = match result {
            Ok(stored) => {
                let secs = started.elapsed().as_secs_f64();
                info!(
                    client_cn = %self.client, file_name = %stored.name, bytes = stored.size, sha256 = %stored.sha256,
                    replaced = stored.replaced, wire_bytes, encoding = ?encoding, secs, "stored"
                );
                self.shared
                    .forward
                    .stored(&stored.name, &stored.sha256, stored.size, &self.client);
                stored_reply(stored)
            }
            Err(e) => {
                warn!(client_cn = %self.client, file_name = %name, bytes = size, error = %e, "upload discarded");
                self.error_reply(&e)
            }
        };
        self.send(&reply).await
    }

    /// `get`: `body`, the data, `complete` with the digest of what was sent.
    async fn send_file(&mut self, name: &str) -> Result<(), SessionError> {
        let (mut file, size) = match self.shared.spool.open_file(name).await {
            Ok(found) => found,
            Err(e) => return self.send(&self.error_reply(&e)).await,
        };
        self.send(&Reply::Body {
            name: name.into(),
            size,
        })
        .await?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK_LEN];
        let mut sent = 0u64;
        // Send exactly `size` bytes: a file that grows meanwhile is cut at
        // the announced size, one that shrinks ends the stream (the client
        // then sees a short body and rejects it).
        while sent < size {
            let want = (size - sent).min(CHUNK_LEN as u64) as usize;
            let n = file.read(&mut buf[..want]).await?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            let idle = self.shared.body_idle_timeout;
            tokio::time::timeout(idle, self.conn.write_chunk(&buf[..n]))
                .await
                .map_err(|_| ProtocolError::Timeout(idle))??;
            sent += n as u64;
        }
        let idle = self.shared.body_idle_timeout;
        tokio::time::timeout(idle, self.conn.write_end())
            .await
            .map_err(|_| ProtocolError::Timeout(idle))??;
        let sha256 = hex::encode(hasher.finalize());
        info!(client_cn = %self.client, file_name = %name, bytes = sent, sha256 = %sha256, "sent");
        self.send(&Reply::Complete { sha256 }).await
    }
}

/// Completes once the agent starts shutting down.
/// Decompresses one received piece of a body into the upload.
async fn inflate_into(
    decoder: &mut Decompressor,
    compressed: &[u8],
    upload: &mut crate::spool::Upload,
) -> Result<(), SpoolError> {
    decoder.feed(compressed);
    loop {
        match decoder.next_piece() {
            Ok(Some(piece)) => upload.write(piece).await?,
            Ok(None) => return Ok(()),
            Err(e) => return Err(SpoolError::BadEncoding(e.to_string())),
        }
    }
}

async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // An error means the server is gone: that is a shutdown too.
    let _ = shutdown.wait_for(|&stop| stop).await;
}

fn stored_reply(stored: crate::spool::Stored) -> Reply {
    Reply::Stored {
        name: stored.name,
        size: stored.size,
        sha256: stored.sha256,
        unchanged: stored.unchanged,
        replaced: stored.replaced,
    }
}
