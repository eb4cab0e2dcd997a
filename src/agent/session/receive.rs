//! The `send` request on the agent's side: checks and `continue`, the body
//! (plain straight into the upload's buffers, zstd through a decoder, the
//! digest where the `send` came without one), then `stored` or the error.
//! A body is read to its end even after a write error, so the client that
//! is still sending reads the reply and the stream stays in sync.

use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, info, warn};

use super::intake::{Intake, Told};
use super::{Session, SessionError, stored_reply};
use crate::agent::spool::{Begin, MIN_PIECE_LEN, SpoolError, Upload, Verified};
use crate::wire::protocol::{
    BodyRead, Encoding, ErrorCode, MIN_BODY_RATE, ProtocolError, Reply, Request,
};

/// A `send` request's fields.
#[derive(Debug)]
pub(super) struct Offer {
    pub(super) name: String,
    pub(super) size: u64,
    pub(super) sha256: Option<String>,
    pub(super) overwrite: bool,
    pub(super) encoding: Option<Encoding>,
    pub(super) resume: bool,
    /// The client gives its final word (`commit`) before the file is stored.
    pub(super) confirm: bool,
    /// The client reads `progress` replies during the body.
    pub(super) progress: bool,
    /// The sender's print choice.
    pub(super) print: Option<bool>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// `send`: checks, `continue`, the body, then `stored` or an error
    /// (with `confirm`: `verified`, the client's `commit`, then `stored`).
    pub(super) async fn receive(&mut self, offer: Offer) -> Result<(), SessionError> {
        let started = Instant::now();
        let sha256 = offer.sha256.as_deref();
        if let Some(answer) =
            self.taken_by_forwarded(&offer.name, offer.size, sha256, offer.overwrite)
        {
            self.again_if_asked(&answer, &offer);
            return self.send(&answer).await;
        }
        let upload = match self.begin(&offer).await {
            Ok(upload) => upload,
            Err(answer) => return self.send(&answer).await,
        };
        // Every encoding there is, this agent decodes: accept what is offered.
        self.send(&Reply::Continue {
            encoding: offer.encoding,
            offset: upload.resumed_from(),
            keeps: upload.keeps_partial(),
        })
        .await?;
        let (upload, intake) = self.take_body(&offer, upload).await?;
        let receipt = Receipt {
            name: offer.name.clone(),
            size: offer.size,
            sent: crate::agent::forward::Sent {
                overwrite: offer.overwrite,
                print: offer.print,
            },
            started,
            wire_bytes: intake.wire_bytes,
            encoding: offer.encoding,
        };
        self.settle(upload, intake.ended(), offer.confirm, &receipt)
            .await
    }

    /// The spool's upload for the offer, or the answer that ends the
    /// request (the file is there already, or refused).
    async fn begin(&self, offer: &Offer) -> Result<Box<Upload>, Reply> {
        let (name, size) = (offer.name.as_str(), offer.size);
        let begun = self
            .shared
            .spool
            .begin(
                name,
                size,
                offer.sha256.as_deref(),
                offer.overwrite,
                offer.resume,
            )
            .await;
        match begun {
            Ok(Begin::Receive(upload)) => {
                let offset = upload.resumed_from();
                if offset > 0 {
                    info!(client_cn = %self.client, file_name = %name, bytes = size, offset, "resuming an interrupted upload");
                }
                Ok(upload)
            }
            Ok(Begin::Unchanged(stored)) => {
                info!(client_cn = %self.client, file_name = %name, bytes = size, sha256 = %stored.sha256, "unchanged, already stored");
                Err(stored_reply(stored))
            }
            Err(e) => {
                info!(client_cn = %self.client, file_name = %name, bytes = size, error = %e, "send refused");
                Err(self.error_reply(&e))
            }
        }
    }

    /// Reads the body to its end into `upload`, under the minimum rate,
    /// telling the client how far it came. Read to its end even after a
    /// write error, so the reply is read by a client that is still sending
    /// and the stream stays in sync; a broken stream ends the session (a
    /// resumable body stays for the next try).
    async fn take_body(
        &mut self,
        offer: &Offer,
        mut upload: Box<Upload>,
    ) -> Result<(Box<Upload>, Intake), SessionError> {
        let idle = self.shared.body_idle_timeout;
        let mut intake = Intake::new(offer.encoding);
        let mut told = Told::new(offer.progress, upload.resumed_from());
        self.conn.guard_rate(Some((MIN_BODY_RATE, idle)));
        loop {
            if let Some(received) = told.due(upload.written()) {
                self.send(&Reply::Progress { received }).await?;
            }
            match self.read_piece(&mut intake, &mut upload, idle).await {
                Ok(BodyRead::Data(n)) => intake.accept(n, &mut upload).await,
                Ok(BodyRead::End) => break,
                // Allowed once, in a body whose `send` came without it.
                Ok(BodyRead::Digest(_)) if upload.has_digest() => {
                    // A client this confused keeps nothing for resuming.
                    upload.discard().await;
                    let e = ProtocolError::Unexpected {
                        got: "digest",
                        expected: "data or end (the file's digest is known already)",
                    };
                    return Err(self.fail_stream(e).await);
                }
                Ok(BodyRead::Digest(digest)) => {
                    match upload.declare_digest(&hex::encode(digest)).await {
                        Ok(resumable) => {
                            debug!(client_cn = %self.client, file_name = %offer.name, received = upload.written(), resumable, "digest received");
                        }
                        Err(e) => intake.fail(e),
                    }
                }
                Err(e) => {
                    warn!(
                        client_cn = %self.client, file_name = %offer.name, bytes = offer.size, received = upload.written(),
                        kept_for_resume = upload.is_resumable(), error = %e, "upload interrupted"
                    );
                    // A resumable body stays for the next try; a temp file goes.
                    upload.close().await;
                    return Err(self.fail_stream(e).await);
                }
            }
        }
        self.conn.guard_rate(None);
        Ok((upload, intake))
    }

    /// The next piece of the body: straight into the upload's buffers
    /// while it is plain and all is well, else into the scratch buffer.
    async fn read_piece(
        &mut self,
        intake: &mut Intake,
        upload: &mut Upload,
        idle: std::time::Duration,
    ) -> Result<BodyRead, ProtocolError> {
        if intake.direct() {
            match upload.spare().await {
                Ok(room) => return self.conn.read_body(room, idle).await,
                Err(e) => intake.fail(e),
            }
        }
        intake.scratch.resize(MIN_PIECE_LEN, 0);
        self.conn.read_body(&mut intake.scratch, idle).await
    }

    /// Ends the upload of a body read to its end, before the reply, so
    /// that nothing of it is seen in `incoming/` by what the client does
    /// next: stored (after the client's `commit` with `confirm`), or the
    /// error.
    async fn settle(
        &mut self,
        upload: Box<Upload>,
        failure: Option<SpoolError>,
        confirm: bool,
        receipt: &Receipt,
    ) -> Result<(), SessionError> {
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
            None if confirm => match upload.verify().await {
                Ok(verified) => return self.await_commit(verified, receipt).await,
                Err(e) => Err(e),
            },
            None => upload.finish(receipt.sent.overwrite).await,
        };
        self.answer(result, receipt).await
    }

    /// A name stays taken while the agent or OctoPrint holds a file of that
    /// name that came through the agent, not only while it is in `ready/`
    /// (the spool checks that): the answer to a `send` of such a name
    /// (`stored` unchanged, or `exists`), or `None` to go on.
    fn taken_by_forwarded(
        &self,
        name: &str,
        size: u64,
        sha256: Option<&str>,
        overwrite: bool,
    ) -> Option<Reply> {
        let held = self.shared.forward.holds(name)?;
        let (client, state) = (&self.client, held.state);
        match sha256 {
            Some(sha256) if sha256.eq_ignore_ascii_case(&held.sha256) => {
                info!(client_cn = %client, file_name = %name, bytes = size, state, "unchanged, already forwarded");
                Some(stored_reply(crate::agent::spool::Stored {
                    name: name.into(),
                    size,
                    sha256: held.sha256,
                    unchanged: true,
                    replaced: false,
                    inode: None,
                }))
            }
            _ if overwrite => None,
            _ => {
                info!(client_cn = %client, file_name = %name, bytes = size, state, "send refused: the name is taken by a forwarded file");
                let what = match sha256 {
                    Some(_) => "with different content",
                    None => {
                        "(send again with the file's sha256 to find out whether it is the same file)"
                    }
                };
                Some(Reply::Error {
                    code: ErrorCode::Exists,
                    message: format!(
                        "{name:?} was sent before {what} and is {state} (the agent or the print server holds it) (send with --overwrite to replace it, or --as another name)"
                    ),
                })
            }
        }
    }

    /// A forwarded file sent once more, identical, to be printed: the
    /// forwarder puts it back in line (see `forward::again`).
    fn again_if_asked(&self, answer: &Reply, offer: &Offer) {
        if let (
            Reply::Stored {
                name,
                size,
                sha256,
                unchanged: true,
                ..
            },
            Some(true),
        ) = (answer, offer.print)
        {
            let file = crate::agent::spool::Stored {
                name: name.clone(),
                size: *size,
                sha256: sha256.clone(),
                unchanged: true,
                replaced: false,
                inode: None,
            };
            let sent = crate::agent::forward::Sent {
                overwrite: offer.overwrite,
                print: offer.print,
            };
            self.shared.forward.stored(&file, &self.client, sent);
        }
    }

    /// After `verified`: the client's `commit` stores the file; anything
    /// else (the client interrupted, gone, confused) leaves it unstored, kept
    /// for resuming where partial uploads are kept.
    async fn await_commit(
        &mut self,
        verified: Verified,
        receipt: &Receipt,
    ) -> Result<(), SessionError> {
        let sha256 = verified.sha256().to_string();
        let idle = self.shared.body_idle_timeout;
        let verdict = Reply::Verified {
            sha256: sha256.clone(),
        };
        // The client's word; `Err` says why none came, and whether that
        // ends the session with an error (a confused client) or quietly
        // (gone, as after Ctrl-C).
        let word = match self.send(&verdict).await {
            Err(e) => Err((format!("the client is gone ({e})"), None)),
            Ok(()) => match tokio::time::timeout(idle, self.conn.read_message(idle)).await {
                Ok(Ok(Some(Request::Commit))) => Ok(()),
                Ok(Ok(None)) => Err(("the client closed the connection".into(), None)),
                Ok(Ok(Some(_))) => Err((
                    "another request came instead of commit".into(),
                    Some(ProtocolError::Unexpected {
                        got: "another request",
                        expected: "commit",
                    }),
                )),
                // The connection broke: gone, like a close.
                Ok(Err(e @ (ProtocolError::Io(_) | ProtocolError::UnexpectedEof))) => {
                    Err((format!("the connection broke ({e})"), None))
                }
                Ok(Err(e)) => Err((e.to_string(), Some(e))),
                Err(_) => Err((
                    format!("no word within {idle:?}"),
                    Some(ProtocolError::Timeout(idle)),
                )),
            },
        };
        let (why, error) = match word {
            Ok(()) => {
                let result = verified.commit(receipt.sent.overwrite).await;
                return self.answer(result, receipt).await;
            }
            Err(none) => none,
        };
        warn!(
            client_cn = %self.client, file_name = %receipt.name, sha256 = %sha256,
            kept_for_resume = verified.is_resumable(), reason = %why,
            "the client did not confirm the file (interrupted?): not stored"
        );
        drop(verified);
        let Some(error) = error else {
            return Ok(());
        };
        let reply = Reply::Error {
            code: ErrorCode::BadRequest,
            message: format!(
                "the file was not stored: the agent waited for commit after verified ({why})"
            ),
        };
        // Best effort: a client this confused may not read it.
        let _ = self.send(&reply).await;
        Err(error.into())
    }

    /// Tells the forwarder and answers `stored`, or answers the error.
    async fn answer(
        &mut self,
        result: Result<crate::agent::spool::Stored, SpoolError>,
        receipt: &Receipt,
    ) -> Result<(), SessionError> {
        let Receipt {
            name,
            size,
            sent,
            started,
            wire_bytes,
            encoding,
        } = receipt;
        let reply = match result {
            Ok(mut stored) => {
                // A forwarded file of that name was replaced too, not only
                // one in ready/: the name was taken until this send (see
                // `taken_by_forwarded`), whether its file is still in
                // ready/ or already in the print server's storage.
                stored.replaced |= !stored.unchanged
                    && sent.overwrite
                    && self.shared.forward.holds(name).is_some();
                let secs = started.elapsed().as_secs_f64();
                info!(
                    client_cn = %self.client, file_name = %stored.name, bytes = stored.size, sha256 = %stored.sha256,
                    replaced = stored.replaced, wire_bytes,
                    encoding = %encoding.map_or("none", Encoding::name), secs, "stored"
                );
                self.shared.forward.stored(&stored, &self.client, *sent);
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

/// What the `stored` log line and the forwarder learn of a body.
struct Receipt {
    name: String,
    size: u64,
    sent: crate::agent::forward::Sent,
    started: Instant,
    wire_bytes: u64,
    encoding: Option<Encoding>,
}
