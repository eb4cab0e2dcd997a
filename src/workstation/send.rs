//! Sending a file ([`Client::send_file`]): the agent is asked whether it
//! has the file already or part of it; the body is then read, hashed and
//! (when worth it) compressed on the way, with the digest sent inside the
//! body as soon as it is known; the agent's verdict is checked against the
//! file as it is now, so a file that changed while it was sent is reported,
//! never taken for sent.

use std::io;
use std::path::Path;
use std::time::Instant;

use crate::wire::codec::Compressor;
use crate::wire::protocol::{CHUNK_LEN, DIGEST_LEN, Encoding, ErrorCode, Reply, Request};

use super::body::{Body, Piece};
use super::digest::{PendingDigest, hash_changed, hash_file};
use super::error::local_error;
use super::{Client, ClientError, Compression, Conn, Observer, Phase, unexpected};

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

/// The first [`SNIFF_LEN`](crate::wire::codec::SNIFF_LEN) bytes of the file at
/// `path`, for `--compress auto` to tell text from binary.
async fn head_of(path: &Path) -> io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::with_capacity(crate::wire::codec::SNIFF_LEN);
    tokio::fs::File::open(path)
        .await?
        .take(crate::wire::codec::SNIFF_LEN as u64)
        .read_to_end(&mut head)
        .await?;
    Ok(head)
}

/// Path, size and modification time: what identifies a file's version.
pub(super) type FileStamp = (std::path::PathBuf, u64, Option<std::time::SystemTime>);

impl Client {
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
        let compress = match self.compression {
            Compression::Auto => {
                let head = head_of(path).await.map_err(local("cannot read"))?;
                crate::wire::codec::auto_compresses(name, size, &head)
            }
            Compression::Always => true,
            Compression::Never => false,
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
                    compress,
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
        compress: bool,
        observer: &mut (dyn Observer + Send),
        resumed_from: &mut u64,
    ) -> Result<Sent, ClientError> {
        let local = local_error(path);
        let announced = digest.now().map(str::to_string);
        let mut digest_due = announced.is_none();
        let request = Request::Send {
            name: name.into(),
            size,
            sha256: announced,
            overwrite,
            encoding: compress.then_some(Encoding::Zstd),
            resume: true,
            confirm: true,
            progress: true,
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
        // Hashing is over: from here on the bar is the agent's.
        observer.phase(Phase::Sending, size);
        let (encoding, offset, keeps) = match self.request(&request).await? {
            Reply::Continue {
                encoding,
                offset,
                keeps,
            } if offset <= size => (encoding, offset, keeps),
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
        observer.progress(offset);
        if keeps && !digest_due {
            observer.resumable();
        }
        let mut wire = Vec::with_capacity(2 * CHUNK_LEN);
        let mut wire_bytes = 0u64;
        let mut sent = offset;
        // The bar shows what the agent says it has, not what the kernel took.
        let heard = |conn: &mut Conn, observer: &mut (dyn Observer + Send)| {
            if let Some(received) = conn.take_progress() {
                observer.progress(received.min(size));
            }
        };
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
                        if keeps {
                            observer.resumable();
                        }
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
                        self.timed(|conn| conn.write_chunk_hearing(&wire, false))
                            .await?;
                        wire_bytes += wire.len() as u64;
                        wire.clear();
                    }
                }
                None => {
                    self.timed(|conn| conn.write_chunk_hearing(bytes, false))
                        .await?;
                    wire_bytes += bytes.len() as u64;
                }
            }
            sent += bytes.len() as u64;
            body.recycle(chunk);
            heard(&mut self.conn, observer);
        }
        if let Some(c) = deflate.as_mut() {
            c.finish(&mut wire).map_err(local("cannot compress"))?;
            self.timed(|conn| conn.write_chunk_hearing(&wire, false))
                .await?;
            wire_bytes += wire.len() as u64;
        }
        if digest_due {
            self.send_digest(digest, path).await?;
        }
        // Flushed while hearing the agent: the last pieces may take long
        // on a slow link, and the bar keeps moving meanwhile.
        self.timed(|conn| conn.write_chunk_hearing(&[], true))
            .await?;
        heard(&mut self.conn, observer);
        self.timed(|conn| conn.write_end()).await?;
        tracing::debug!(file_name = %name, wire_bytes, "body handed to the network; waiting for the agent's verdict");
        let sha256 = digest.wait().await.map_err(local("cannot read"))?;
        let sha256 = sha256.as_str();
        let verdict = match self.reply_observed(observer).await {
            // The agent has it all, verified: the final word stores it.
            Ok(Reply::Verified { sha256: computed }) if computed == sha256 => {
                observer.progress(size);
                observer.committing();
                self.timed(|conn| conn.write_message(&Request::Commit))
                    .await?;
                self.reply().await
            }
            Ok(Reply::Verified { sha256: other }) => {
                return Err(ClientError::Integrity(format!(
                    "the agent received SHA-256 {other} but this file is {sha256}; not stored"
                )));
            }
            other => other,
        };
        match verdict {
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
                error: io::Error::other(message),
            }),
            Err(e) => Err(e),
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
}
