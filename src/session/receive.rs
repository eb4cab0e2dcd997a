//! The `send` request on the agent's side: checks and `continue`, the body
//! (plain straight into the upload's buffers, zstd through a decoder, the
//! digest where the `send` came without one), then `stored` or the error.
//! A body is read to its end even after a write error, so the client that
//! is still sending reads the reply and the stream stays in sync.

use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, info, warn};

use super::{Session, SessionError, stored_reply};
use crate::codec::Decompressor;
use crate::protocol::{BodyRead, Encoding, MIN_BODY_RATE, ProtocolError, Reply};
use crate::spool::{Begin, MIN_PIECE_LEN, SpoolError};

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// `send`: checks, `continue`, the body, then `stored` or an error.
    pub(super) async fn receive(
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
        let keeps = upload.keeps_partial();
        self.send(&Reply::Continue {
            encoding,
            offset,
            keeps,
        })
        .await?;
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
        // Every arm ends the upload before the reply, so that nothing of it
        // is seen in incoming/ by what the client does next.
        let result = match failure {
            // What a full disk left of the body goes, to give the space back.
            Some(e @ SpoolError::DiskFull) => {
                upload.discard().await;
                Err(e)
            }
            Some(e) => {
                upload.close().await;
                Err(e)
            }
            None => upload.finish(overwrite).await,
        };
        let reply = match result {
            Ok(stored) => {
                let secs = started.elapsed().as_secs_f64();
                info!(
                    client_cn = %self.client, file_name = %stored.name, bytes = stored.size, sha256 = %stored.sha256,
                    replaced = stored.replaced, wire_bytes,
                    encoding = %encoding.map_or("none", Encoding::name), secs, "stored"
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
}

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
