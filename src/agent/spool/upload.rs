//! One upload in progress: its file in `incoming/` (a temp file, or a
//! partial file kept for resuming), the pieces it hands its writer
//! ([`super::writer`]) while the next piece arrives (the writer also holds
//! the space promised to it), and its verification, which yields the
//! [`Verified`] body that [`super::commit`] puts into `ready/`.
//! Dropping an [`Upload`] removes a temp file and keeps a partial one.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tempfile::TempPath;
use tokio::sync::mpsc;

use super::budget::{BufferShare, PIECES, Reservation};
use super::commit::Verified;
use super::writer::{Piece, Sink, Written, write_body};
use super::{SpoolError, Stored};

/// Where an upload's body goes in `incoming/`.
#[derive(Debug)]
pub(super) enum Target {
    /// A temp file, removed when the upload is dropped.
    Temp(TempPath),
    /// A partial file kept for resuming, claimed by this upload.
    Partial {
        /// Its path.
        path: PathBuf,
        /// The claim, released when the upload ends (held by the writer
        /// while it writes, so always there once the body is a partial file).
        claim: Option<super::partial::Claim>,
    },
}

/// Where an upload's body is, as the upload sees it (the partial file's
/// claim is with its writer).
#[derive(Debug)]
enum Destination {
    /// A temp file, removed when the upload is dropped, even while its
    /// writer still runs; with `adopt` while it may still become the
    /// partial file of its digest (the digest is due in the body).
    Temp {
        path: TempPath,
        adopt: Option<Adopt>,
    },
    /// The partial file kept for resuming.
    Partial(PathBuf),
}

/// Where a body is written and what it holds already.
#[derive(Debug)]
pub(super) struct Body {
    /// The open file, positioned at its end.
    pub(super) file: std::fs::File,
    /// The file's kind and path.
    pub(super) target: Target,
    /// Bytes it holds already (a resumed partial upload).
    pub(super) offset: u64,
    /// SHA-256 state over those bytes.
    pub(super) hasher: Sha256,
    /// The size of its buffers.
    pub(super) buffers: BufferShare,
}

/// Where a temp upload goes once its digest arrives: it becomes the
/// partial file `incoming/<sha256>-<size>.partial`, claimed in `busy`.
#[derive(Debug)]
pub(super) struct Adopt {
    /// The `incoming/` directory.
    pub(super) incoming: PathBuf,
    /// The partial files being written.
    pub(super) busy: Arc<super::partial::Busy>,
}

/// A body being received into `incoming/`. The pieces given to
/// [`commit`](Upload::commit) are hashed and written by a blocking task of
/// their own. Dropping the upload without [`finish`](Upload::finish) lets
/// that task write what it was given, then removes a temp file and keeps a
/// partial one.
#[derive(Debug)]
pub struct Upload {
    name: String,
    dest: PathBuf,
    declared_size: u64,
    /// The file's digest, once known: from the `send`, or from the body.
    declared_sha256: Option<String>,
    destination: Destination,
    /// Filled buffers to the writer; `None` once it is told to stop.
    to_writer: Option<mpsc::Sender<Piece>>,
    /// Buffers the writer is done with.
    free: mpsc::Receiver<Vec<u8>>,
    writer: Option<tokio::task::JoinHandle<Written>>,
    /// What the writer handed back once it stopped.
    stopped: Option<Written>,
    /// The buffer being filled and how much of it is.
    current: Option<(Vec<u8>, usize)>,
    allocated: usize,
    buffers: BufferShare,
    /// Bytes of the body accepted so far (written or on their way).
    received: u64,
    resumed_from: u64,
}

impl Upload {
    pub(super) fn new(
        name: &str,
        dest: PathBuf,
        declared_size: u64,
        declared_sha256: Option<&str>,
        body: Body,
        reservation: Reservation,
        adopt: Option<Adopt>,
    ) -> Upload {
        let (destination, claim) = match body.target {
            Target::Partial { path, claim } => (Destination::Partial(path), claim),
            Target::Temp(path) => (Destination::Temp { path, adopt }, None),
        };
        let offset = body.offset;
        let sink = Sink {
            file: body.file,
            claim,
            len: offset,
            hasher: body.hasher,
            size: declared_size,
            reservation,
        };
        let (to_writer, pieces) = mpsc::channel(PIECES);
        let (give_back, free) = mpsc::channel(PIECES);
        let writer = tokio::task::spawn_blocking(move || write_body(sink, pieces, give_back));
        Upload {
            name: name.into(),
            dest,
            declared_size,
            declared_sha256: declared_sha256.map(str::to_ascii_lowercase),
            destination,
            to_writer: Some(to_writer),
            free,
            writer: Some(writer),
            stopped: None,
            current: None,
            allocated: 0,
            buffers: body.buffers,
            received: offset,
            resumed_from: offset,
        }
    }

    /// Bytes an earlier, interrupted upload of this file had delivered:
    /// the client sends the body from there on.
    pub fn resumed_from(&self) -> u64 {
        self.resumed_from
    }

    /// Ends an upload whose body cannot become the file (a wrong size or
    /// digest, a full disk): once the writer is done, its file goes, a
    /// partial one too, and so does its claim, before the caller replies.
    pub(crate) async fn discard(mut self) {
        let _ = self.stop_writer().await;
        if let Destination::Partial(path) = &self.destination {
            let _ = tokio::fs::remove_file(path).await;
        }
    }

    /// Whether the file's digest is known (from the `send` or the body).
    pub(crate) fn has_digest(&self) -> bool {
        self.declared_sha256.is_some()
    }

    /// Takes the file's digest sent inside the body (a `send` without
    /// one). A resumable upload's temp file becomes the partial file of
    /// that digest, kept if the upload is interrupted from now on; returns
    /// whether it did.
    pub(crate) async fn declare_digest(&mut self, sha256: &str) -> Result<bool, SpoolError> {
        self.declared_sha256 = Some(sha256.to_ascii_lowercase());
        let Destination::Temp { path, adopt } = &mut self.destination else {
            return Ok(false);
        };
        let Some(adopt) = adopt.take() else {
            return Ok(false);
        };
        let Some((claim, name)) = super::partial::partial_name(sha256, self.declared_size)
            .and_then(|name| adopt.busy.claim(&name).map(|claim| (claim, name)))
        else {
            return Ok(false);
        };
        let to = adopt.incoming.join(name);
        // A stale partial file of the same content is replaced: this one
        // holds the body from its start. Failing that, the temp file stays.
        if tokio::fs::rename(&*path, &to).await.is_err() {
            return Ok(false);
        }
        if let Destination::Temp { path, .. } =
            std::mem::replace(&mut self.destination, Destination::Partial(to))
        {
            // Renamed away: nothing is left to remove at the temp path.
            let _ = path.keep();
        }
        match &self.to_writer {
            Some(to_writer) if to_writer.send(Piece::Claim(claim)).await.is_ok() => Ok(true),
            _ => Err(self.writer_failed().await),
        }
    }

    /// Whether the body will be kept for resuming if the upload is
    /// interrupted: now, or once its digest arrives in the body.
    pub(crate) fn keeps_partial(&self) -> bool {
        matches!(
            self.destination,
            Destination::Partial(_) | Destination::Temp { adopt: Some(_), .. }
        )
    }

    /// Whether the body is kept for resuming if the upload is interrupted.
    pub(crate) fn is_resumable(&self) -> bool {
        matches!(self.destination, Destination::Partial(_))
    }

    /// Bytes received so far.
    pub fn written(&self) -> u64 {
        self.received
    }

    /// Ends an interrupted or failed upload: what was received is written,
    /// then a partial file is kept for resuming (and free for the next try)
    /// and a temp file removed, before the caller replies.
    pub async fn close(mut self) {
        let _ = self.flush_current().await;
        let _ = self.stop_writer().await;
    }

    /// Room for the next bytes of the body: fill a prefix of it, then
    /// [`commit`](Self::commit) how many bytes that was.
    pub(crate) async fn spare(&mut self) -> Result<&mut [u8], SpoolError> {
        if self.current.is_none() {
            let buffer = if self.allocated < PIECES {
                self.allocated += 1;
                vec![0u8; self.buffers.piece_len()]
            } else {
                match self.free.recv().await {
                    Some(buffer) => buffer,
                    None => return Err(self.writer_failed().await),
                }
            };
            self.current = Some((buffer, 0));
        }
        let (buffer, filled) = self.current.as_mut().expect("a buffer was just set");
        Ok(&mut buffer[*filled..])
    }

    /// Accepts the first `n` bytes of what [`spare`](Self::spare) returned;
    /// more bytes than declared is an error.
    pub async fn commit(&mut self, n: usize) -> Result<(), SpoolError> {
        let len = n as u64;
        if self.received + len > self.declared_size {
            return Err(SpoolError::SizeMismatch {
                declared: self.declared_size,
                got: self.received + len,
                over: true,
            });
        }
        let Some((buffer, filled)) = self.current.as_mut() else {
            return Ok(());
        };
        *filled += n;
        self.received += len;
        if *filled == buffer.len() {
            self.flush_current().await?;
        }
        Ok(())
    }

    /// Appends a piece of the body (copying it); more bytes than declared
    /// is an error.
    pub async fn write(&mut self, mut data: &[u8]) -> Result<(), SpoolError> {
        while !data.is_empty() {
            let room = self.spare().await?;
            let n = room.len().min(data.len());
            room[..n].copy_from_slice(&data[..n]);
            self.commit(n).await?;
            data = &data[n..];
        }
        Ok(())
    }

    /// Hands the buffer being filled to the writer.
    async fn flush_current(&mut self) -> Result<(), SpoolError> {
        match self.current.take() {
            Some((buffer, 0)) => self.current = Some((buffer, 0)),
            Some(piece) => {
                let sent = match &self.to_writer {
                    Some(to_writer) => to_writer.send(Piece::Data(piece.0, piece.1)).await.is_ok(),
                    None => false,
                };
                if !sent {
                    return Err(self.writer_failed().await);
                }
            }
            None => {}
        }
        Ok(())
    }

    /// Lets the writer finish what it was given and takes back what it holds.
    async fn stop_writer(&mut self) -> Result<&mut Written, SpoolError> {
        self.to_writer = None;
        if let Some(writer) = self.writer.take() {
            let written = writer
                .await
                .map_err(|e| SpoolError::io("writing the upload")(io::Error::other(e)))?;
            self.stopped = Some(written);
        }
        self.stopped.as_mut().ok_or_else(|| {
            SpoolError::io("writing the upload")(io::Error::other("the writer failed"))
        })
    }

    /// Why the writer stopped early.
    async fn writer_failed(&mut self) -> SpoolError {
        match self.stop_writer().await {
            Ok(written) => match written.error.take() {
                Some(e) => SpoolError::io("cannot write to incoming/")(e),
                None => {
                    SpoolError::io("writing the upload")(io::Error::other("the writer stopped"))
                }
            },
            Err(e) => e,
        }
    }

    /// Verifies size and digest, fsyncs, renames into `ready/` (replacing a
    /// different file only with `overwrite`) and fsyncs the directory.
    pub async fn finish(self, overwrite: bool) -> Result<Stored, SpoolError> {
        self.verify().await?.commit(overwrite).await
    }

    /// Verifies size and digest and fsyncs the body: it is whole and on the
    /// disk, not yet in `ready/` ([`Verified::commit`] puts it there).
    pub(crate) async fn verify(mut self) -> Result<Verified, SpoolError> {
        self.flush_current().await?;
        if let Some(e) = self.stop_writer().await?.error.take() {
            return Err(SpoolError::io("cannot write to incoming/")(e));
        }
        let Written { sink, .. } = self.stopped.take().expect("the writer stopped");
        let Some(declared_sha256) = self.declared_sha256.clone() else {
            return Err(SpoolError::MissingDigest);
        };
        if sink.len != self.declared_size {
            let declared = self.declared_size;
            self.discard().await;
            return Err(SpoolError::SizeMismatch {
                declared,
                got: sink.len,
                over: false,
            });
        }
        let computed = hex::encode(sink.hasher.finalize());
        if computed != declared_sha256 {
            // A resumed body that does not add up: the kept part was damaged
            // (say by a power cut). It goes, so the next try starts afresh.
            self.discard().await;
            return Err(SpoolError::DigestMismatch {
                declared: declared_sha256,
                computed,
            });
        }
        let target = match self.destination {
            Destination::Temp { path, .. } => Target::Temp(path),
            Destination::Partial(path) => Target::Partial {
                path,
                claim: sink.claim,
            },
        };
        let file = sink.file;
        tokio::task::spawn_blocking(move || file.sync_all())
            .await
            .map_err(|e| SpoolError::io("cannot fsync the upload")(io::Error::other(e)))?
            .map_err(SpoolError::io("cannot fsync the upload"))?;
        Ok(Verified {
            name: self.name.clone(),
            dest: self.dest.clone(),
            size: self.declared_size,
            sha256: computed,
            target,
        })
    }
}
