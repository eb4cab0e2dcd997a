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
use tracing::{info, warn};

use crate::agent::spool::{Spool, SpoolError};
use crate::wire::protocol::{CHUNK_LEN, Connection, ErrorCode, ProtocolError, Reply, Request};

mod follow;
mod intake;
mod manage;
mod receive;

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
    pub forward: crate::agent::forward::Handle,
    /// Issues renewed client certificates and notes when clients connect.
    pub authority: Arc<crate::agent::pki::registry::Authority>,
}

impl Shared {
    /// What sessions share, with `config`'s timeouts and limits: the one
    /// builder for a start, a reload (which keeps `started`, the spool's
    /// directories and the forwarder) and tests.
    pub fn new(
        config: &crate::agent::config::Config,
        spool: Spool,
        forward: crate::agent::forward::Handle,
        authority: Arc<crate::agent::pki::registry::Authority>,
        started: Instant,
    ) -> Shared {
        Shared {
            spool,
            header_timeout: config.header_timeout,
            body_idle_timeout: config.body_idle_timeout,
            max_file_size: config.max_file_size.as_u64(),
            started,
            forward,
            authority,
        }
    }
}

/// Why a session ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The frame stream broke or timed out.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// Writing a reply failed (in the message, so not its `source()`).
    #[error("cannot write to the client: {0}")]
    Io(std::io::Error),
}

impl From<std::io::Error> for SessionError {
    fn from(e: std::io::Error) -> Self {
        SessionError::Io(e)
    }
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
        mut conn: Connection<S>,
        shared: Arc<Shared>,
        client: String,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        conn.set_write_timeout(shared.body_idle_timeout);
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
                Err(e) => return Err(self.fail_stream(e).await),
            };
            self.handle(request).await?;
        }
    }

    /// Answers a stream that lost its framing (or timed out) with the most
    /// useful error, if the peer is still there, then ends the session.
    async fn fail_stream(&mut self, e: ProtocolError) -> SessionError {
        let code = match &e {
            // Nobody to tell: gone, or no longer reading.
            ProtocolError::Io(_) | ProtocolError::UnexpectedEof | ProtocolError::Stalled(_) => {
                return e.into();
            }
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
        e.into()
    }

    /// Writes a reply; a client that stops reading for `body_idle_timeout`
    /// is given up on (the connection's write timeout).
    async fn send(&mut self, reply: &Reply) -> Result<(), SessionError> {
        Ok(self.conn.write_message(reply).await?)
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
                confirm,
                progress,
                print,
            } => {
                let offer = receive::Offer {
                    name,
                    size,
                    sha256,
                    overwrite,
                    encoding,
                    resume,
                    confirm,
                    progress,
                    print,
                };
                return self.receive(offer).await;
            }
            Request::Commit => Reply::Error {
                code: ErrorCode::BadRequest,
                message: "commit only follows verified, right after a send's body".into(),
            },
            Request::Print { name } => self.print(name).await,
            Request::Get { name } => return self.send_file(&name).await,
            Request::List => match self.shared.spool.list().await {
                Ok(files) => Reply::Files {
                    files: self.shared.forward.view().listing(files),
                },
                Err(e) => self.error_reply(&e),
            },
            Request::Delete { name } => self.delete(name).await,
            Request::Status => Reply::Status(self.status().await),
            Request::Watch { name } => return self.watch(name).await,
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
            self.conn.write_chunk(&buf[..n]).await?;
            sent += n as u64;
        }
        self.conn.write_end().await?;
        let sha256 = hex::encode(hasher.finalize());
        info!(client_cn = %self.client, file_name = %name, bytes = sent, sha256 = %sha256, "sent");
        self.send(&Reply::Complete { sha256 }).await
    }
}

/// Completes once the agent starts shutting down.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // An error means the server is gone: that is a shutdown too.
    let _ = shutdown.wait_for(|&stop| stop).await;
}

fn stored_reply(stored: crate::agent::spool::Stored) -> Reply {
    Reply::Stored {
        name: stored.name,
        size: stored.size,
        sha256: stored.sha256,
        unchanged: stored.unchanged,
        replaced: stored.replaced,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::wire::protocol::{MAX_REPLY_HEADER_LEN, MAX_REQUEST_HEADER_LEN};

    const IDLE: Duration = Duration::from_secs(5);

    type Client = Connection<tokio::io::DuplexStream>;

    /// A session on a spool in `dir`, its client end over a 7-byte pipe (so
    /// every frame arrives in pieces), and the switch that shuts it down.
    fn start(
        dir: &Path,
    ) -> (
        Client,
        tokio::task::JoinHandle<Result<(), SessionError>>,
        watch::Sender<bool>,
    ) {
        let config = crate::agent::config::Config {
            state_dir: dir.join("state"),
            spool_dir: dir.join("spool"),
            header_timeout: IDLE,
            body_idle_timeout: IDLE,
            max_file_size: bytesize::ByteSize::b(1 << 20),
            ..Default::default()
        };
        let limits = crate::agent::spool::Limits {
            max_file_size: 1 << 20,
            min_free_space: 0,
            keep_partial: Duration::from_secs(3600),
        };
        let (spool, _) = Spool::open(&config.spool_dir, limits).unwrap();
        let shared = Arc::new(Shared::new(
            &config,
            spool,
            crate::agent::forward::Handle::disabled("not in this test"),
            Arc::new(crate::agent::pki::registry::Authority::new(&config)),
            Instant::now(),
        ));
        let (agent, client) = tokio::io::duplex(7);
        let (stop, shutdown) = watch::channel(false);
        let conn = Connection::new(agent, MAX_REQUEST_HEADER_LEN);
        let session = Session::new(conn, shared, "alice".into(), shutdown);
        let running = tokio::spawn(session.run());
        (Connection::new(client, MAX_REPLY_HEADER_LEN), running, stop)
    }

    async fn ask(client: &mut Client, request: &Request) -> Reply {
        client.write_message(request).await.unwrap();
        client.flush().await.unwrap();
        next_reply(client).await
    }

    async fn next_reply(client: &mut Client) -> Reply {
        client.read_message(IDLE).await.unwrap().unwrap()
    }

    fn send(name: &str, body: &[u8], sha256: Option<String>) -> Request {
        Request::Send {
            name: name.into(),
            size: body.len() as u64,
            sha256,
            overwrite: false,
            encoding: None,
            resume: true,
            confirm: false,
            progress: false,
            print: None,
        }
    }

    /// Writes a body: `pieces` as data frames, the digest if given, the end.
    async fn write_body(client: &mut Client, pieces: &[&[u8]], digest: Option<&[u8; 32]>) {
        for piece in pieces {
            client.write_chunk(piece).await.unwrap();
        }
        if let Some(digest) = digest {
            client.write_digest(digest).await.unwrap();
        }
        client.write_end().await.unwrap();
        client.flush().await.unwrap();
    }

    fn error_code(reply: Reply) -> (ErrorCode, String) {
        match reply {
            Reply::Error { code, message } => (code, message),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn requests_are_answered_in_turn_and_a_bad_header_is_survived() {
        let dir = tempfile::tempdir().unwrap();
        let (mut client, running, _stop) = start(dir.path());
        assert!(matches!(
            ask(&mut client, &Request::Ping).await,
            Reply::Pong
        ));

        // A body in pieces, its digest inside it: stored whole.
        let body = b"G28\nG1 X10 Y10\nM104 S200\n";
        let digest: [u8; 32] = Sha256::digest(body).into();
        let reply = ask(&mut client, &send("cube.gcode", body, None)).await;
        assert!(
            matches!(reply, Reply::Continue { offset: 0, .. }),
            "{reply:?}"
        );
        let pieces: Vec<&[u8]> = body.chunks(10).collect();
        write_body(&mut client, &pieces, Some(&digest)).await;
        match next_reply(&mut client).await {
            Reply::Stored {
                name, size, sha256, ..
            } => {
                assert_eq!((name.as_str(), size), ("cube.gcode", body.len() as u64));
                assert_eq!(sha256, hex::encode(digest));
            }
            other => panic!("expected stored, got {other:?}"),
        }
        let stored = dir.path().join("spool/ready/cube.gcode");
        assert_eq!(std::fs::read(stored).unwrap(), body);

        // Not JSON: answered, and the stream is still in sync.
        client
            .write_raw(&crate::wire::protocol::frame_prefix(b'H', 3))
            .await
            .unwrap();
        client.write_raw(b"{{{").await.unwrap();
        client.flush().await.unwrap();
        assert_eq!(
            error_code(next_reply(&mut client).await).0,
            ErrorCode::BadRequest
        );

        // The same name with other content: refused, with what to do.
        let (code, message) =
            error_code(ask(&mut client, &send("cube.gcode", b"M84\n", None)).await);
        assert_eq!(code, ErrorCode::Exists);
        assert!(message.contains("--overwrite"), "{message}");

        match ask(&mut client, &Request::List).await {
            Reply::Files { files } => {
                let names: Vec<_> = files.iter().map(|f| f.name.as_str()).collect();
                assert_eq!(names, ["cube.gcode"]);
            }
            other => panic!("expected files, got {other:?}"),
        }
        drop(client);
        running.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_body_that_does_not_add_up_is_refused_and_nothing_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let (mut client, running, _stop) = start(dir.path());
        let body = b"G1 X1\n";
        let wrong = hex::encode(Sha256::digest(b"something else"));
        let reply = ask(&mut client, &send("part.gcode", body, Some(wrong))).await;
        assert!(matches!(reply, Reply::Continue { .. }), "{reply:?}");
        write_body(&mut client, &[body], None).await;
        assert_eq!(
            error_code(next_reply(&mut client).await).0,
            ErrorCode::DigestMismatch
        );
        assert!(!dir.path().join("spool/ready/part.gcode").exists());
        // The session goes on.
        assert!(matches!(
            ask(&mut client, &Request::Ping).await,
            Reply::Pong
        ));
        drop(client);
        running.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_digest_the_send_already_gave_ends_the_session() {
        let dir = tempfile::tempdir().unwrap();
        let (mut client, running, _stop) = start(dir.path());
        let body = b"G1 X1\n";
        let digest: [u8; 32] = Sha256::digest(body).into();
        let request = send("part.gcode", body, Some(hex::encode(digest)));
        assert!(matches!(
            ask(&mut client, &request).await,
            Reply::Continue { .. }
        ));
        client.write_digest(&digest).await.unwrap();
        client.flush().await.unwrap();
        let (code, message) = error_code(next_reply(&mut client).await);
        assert_eq!(code, ErrorCode::BadRequest);
        assert!(message.contains("digest"), "{message}");
        assert!(matches!(
            running.await.unwrap(),
            Err(SessionError::Protocol(ProtocolError::Unexpected {
                got: "digest",
                ..
            }))
        ));
        assert!(!dir.path().join("spool/ready/part.gcode").exists());
    }

    /// With `confirm`, a verified body is stored only on `commit`; any other
    /// word leaves it unstored (kept for resuming) and ends the session.
    #[tokio::test]
    async fn a_confirmed_send_is_stored_only_on_the_clients_commit() {
        let dir = tempfile::tempdir().unwrap();
        let body = b"G28\nG1 X5\n";
        let sha256 = hex::encode(Sha256::digest(body));
        let confirmed = |name: &str| match send(name, body, Some(sha256.clone())) {
            Request::Send {
                name, size, sha256, ..
            } => Request::Send {
                name,
                size,
                sha256,
                overwrite: false,
                encoding: None,
                resume: true,
                confirm: true,
                progress: true,
                print: None,
            },
            other => other,
        };
        let ready = dir.path().join("spool/ready");

        let (mut client, running, _stop) = start(dir.path());
        let reply = ask(&mut client, &confirmed("kept.gcode")).await;
        assert!(matches!(reply, Reply::Continue { .. }), "{reply:?}");
        write_body(&mut client, &[body], None).await;
        let verified = next_reply(&mut client).await;
        assert_eq!(
            verified,
            Reply::Verified {
                sha256: sha256.clone()
            }
        );
        assert!(!ready.join("kept.gcode").exists(), "stored before commit");
        match ask(&mut client, &Request::Commit).await {
            Reply::Stored { name, .. } => assert_eq!(name, "kept.gcode"),
            other => panic!("expected stored, got {other:?}"),
        }
        assert_eq!(std::fs::read(ready.join("kept.gcode")).unwrap(), body);

        // Another word instead of commit: not stored, the session ends.
        ask(&mut client, &confirmed("other.gcode")).await;
        write_body(&mut client, &[body], None).await;
        assert!(matches!(
            next_reply(&mut client).await,
            Reply::Verified { .. }
        ));
        let (code, message) = error_code(ask(&mut client, &Request::Ping).await);
        assert_eq!(code, ErrorCode::BadRequest);
        assert!(message.contains("not stored"), "{message}");
        assert!(running.await.unwrap().is_err());
        assert!(!ready.join("other.gcode").exists());

        // A client gone after the body: nothing stored, the session ends
        // quietly. (The same content again would resume at its end: the
        // unconfirmed body above is kept.)
        let (mut client, running, _stop) = start(dir.path());
        let reply = ask(&mut client, &confirmed("gone.gcode")).await;
        assert!(
            matches!(reply, Reply::Continue { offset, .. } if offset == body.len() as u64),
            "{reply:?}"
        );
        write_body(&mut client, &[], None).await;
        drop(client);
        running.await.unwrap().unwrap();
        assert!(!ready.join("gone.gcode").exists());
    }

    #[tokio::test]
    async fn a_shutdown_ends_an_idle_session_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (mut client, running, stop) = start(dir.path());
        assert!(matches!(
            ask(&mut client, &Request::Ping).await,
            Reply::Pong
        ));
        stop.send(true).unwrap();
        running.await.unwrap().unwrap();
        // The client sees the end of the stream, not an error reply.
        assert!(client.read_message::<Reply>(IDLE).await.unwrap().is_none());
    }
}
