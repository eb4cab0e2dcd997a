//! Sending a file ([`Client::send_file`]): the agent is asked whether it
//! has the file already or part of it; the body is then read, hashed and
//! (when worth it) compressed on the way, with the digest sent inside the
//! body as soon as it is known; the agent's verdict is checked against the
//! file as it is now, so a file that changed while it was sent is reported,
//! never taken for sent.

use std::io;
use std::path::Path;
use std::time::Instant;

use crate::wire::protocol::{Encoding, ErrorCode, Reply, Request};

use super::digest::{PendingDigest, hash_changed, hash_file};
use super::error::local_error;
use super::outgoing::Outgoing;
use super::{Client, ClientError, Compression, Observer, Phase, unexpected};

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

/// What every attempt of one send offers the agent.
pub(super) struct Offer<'a> {
    pub(super) path: &'a Path,
    pub(super) name: &'a str,
    pub(super) size: u64,
    pub(super) overwrite: bool,
    pub(super) compress: bool,
}

impl Offer<'_> {
    fn sent(
        &self,
        sha256: String,
        unchanged: bool,
        replaced: bool,
        wire_bytes: u64,
        encoding: Option<Encoding>,
        resumed_from: u64,
    ) -> Sent {
        Sent {
            name: self.name.into(),
            size: self.size,
            sha256,
            unchanged,
            replaced,
            seconds: 0.0,
            wire_bytes,
            encoding,
            resumed_from,
        }
    }
}

/// The agent's answer to a `send` request.
enum Answer {
    /// Send the body.
    Send(Accepted),
    /// It has this very file already (its SHA-256): nothing to send.
    Unchanged(String),
}

/// How the agent takes the body.
pub(super) struct Accepted {
    /// The agreed compression.
    pub(super) encoding: Option<Encoding>,
    /// Where the body starts (what an earlier upload delivered).
    pub(super) offset: u64,
    /// The agent keeps what it receives if the upload is interrupted.
    pub(super) keeps: bool,
}

/// What the agent's verdict means for this file: stored as sent, or why
/// not (a file that changed while it was sent is said to have changed).
async fn judge(
    offer: &Offer<'_>,
    sha256: &str,
    verdict: Result<Reply, ClientError>,
    out: &Outgoing,
    accepted: &Accepted,
) -> Result<Sent, ClientError> {
    match verdict {
        Ok(Reply::Stored {
            sha256: confirmed,
            unchanged,
            replaced,
            ..
        }) if confirmed == sha256 => Ok(offer.sent(
            confirmed,
            unchanged,
            replaced,
            out.wire_bytes,
            accepted.encoding,
            accepted.offset,
        )),
        Ok(Reply::Stored { sha256: other, .. }) => Err(ClientError::Integrity(format!(
            "the agent stored SHA-256 {other} but this file is {sha256}"
        ))),
        Ok(other) => Err(unexpected(&other)),
        Err(ClientError::Refused {
            code: ErrorCode::SizeMismatch | ErrorCode::DigestMismatch,
            message,
        }) if out.sent != offer.size || hash_changed(offer.path, sha256).await => {
            Err(ClientError::Local {
                what: "file changed while it was being sent:",
                path: offer.path.to_path_buf(),
                error: io::Error::other(message),
            })
        }
        Err(e) => Err(e),
    }
}

impl Client {
    /// Takes `sha256` for the digest of the file at `path` as it is now (a
    /// caller that wrote the file and hashed it on the way), so that
    /// `send_file` does not read it once more to hash it.
    pub fn know_digest(&mut self, path: &Path, sha256: String) -> io::Result<()> {
        let meta = std::fs::metadata(path)?;
        let stamp = (path.to_path_buf(), meta.len(), meta.modified().ok());
        self.digest_cache = Some((stamp, sha256));
        Ok(())
    }

    /// Sends the file at `path` under `name`.
    pub async fn send_file(
        &mut self,
        path: &Path,
        name: &str,
        overwrite: bool,
        observer: &mut (dyn Observer + Send),
    ) -> Result<Sent, ClientError> {
        let meta = tokio::fs::metadata(path)
            .await
            .map_err(local_error(path)("cannot read"))?;
        let stamp = (path.to_path_buf(), meta.len(), meta.modified().ok());
        self.send_stamped(stamp, name, overwrite, observer).await
    }

    /// Sends the file at `path`, `size` bytes once complete, while it is
    /// still being written (see [`Growth`](super::growing::Growth)): the
    /// body follows the writing, the digest comes at its end, and the
    /// send fails (nothing is stored) if the writing breaks off.
    pub async fn send_growing(
        &mut self,
        path: &Path,
        size: u64,
        growth: std::sync::Arc<super::growing::Growth>,
        name: &str,
        overwrite: bool,
        observer: &mut (dyn Observer + Send),
    ) -> Result<Sent, ClientError> {
        self.growing = Some(growth);
        let stamp = (path.to_path_buf(), size, None);
        let result = self.send_stamped(stamp, name, overwrite, observer).await;
        self.growing = None;
        result
    }

    /// Sends the file `stamp` names.
    async fn send_stamped(
        &mut self,
        stamp: FileStamp,
        name: &str,
        overwrite: bool,
        observer: &mut (dyn Observer + Send),
    ) -> Result<Sent, ClientError> {
        let started = Instant::now();
        let (path, size) = (stamp.0.as_path(), stamp.1);
        let local = local_error(path);
        let mut digest = self.digest_for(&stamp, observer).await?;
        let compress = self.compresses(path, name, size).await?;
        let offer = Offer {
            path,
            name,
            size,
            overwrite,
            compress,
        };
        let mut resumed_from = 0;
        let mut retried_whole = false;
        let result = loop {
            let late = digest.now().is_none();
            let result = self
                .transfer(&offer, &mut digest, observer, &mut resumed_from)
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

    /// The file's digest: known from the last send of this very version,
    /// hashed now, or (for a large file) to follow inside the body.
    async fn digest_for(
        &mut self,
        stamp: &FileStamp,
        observer: &mut (dyn Observer + Send),
    ) -> Result<PendingDigest, ClientError> {
        let (path, size, _) = stamp;
        if let Some((cached, sha256)) = &self.digest_cache
            && cached == stamp
        {
            return Ok(PendingDigest::known(sha256.clone()));
        }
        if *size >= self.hash_while_sending_min || self.growing.is_some() {
            // The body starts at once and the digest follows inside it.
            return Ok(PendingDigest::later(path));
        }
        observer.phase(Phase::Hashing, *size);
        let sha256 = hash_file(path, *size, observer)
            .await
            .map_err(local_error(path)("cannot read"))?;
        self.digest_cache = Some((stamp.clone(), sha256.clone()));
        Ok(PendingDigest::known(sha256))
    }

    /// Whether to offer a compressed body (`--compress auto`: text files of
    /// some size that are not compressed already).
    async fn compresses(&self, path: &Path, name: &str, size: u64) -> Result<bool, ClientError> {
        Ok(match self.compression {
            Compression::Auto => {
                if let Some(growth) = &self.growing {
                    let head = (crate::wire::codec::SNIFF_LEN as u64).min(size);
                    growth
                        .wait_for_async(head)
                        .await
                        .map_err(local_error(path)("cannot read"))?;
                }
                let head = head_of(path)
                    .await
                    .map_err(local_error(path)("cannot read"))?;
                crate::wire::codec::auto_compresses(name, size, &head)
            }
            Compression::Always => true,
            Compression::Never => false,
        })
    }

    /// One `send` of a file: the request (with the digest if it is known
    /// by now), the body from the offset the agent gives (compressed if
    /// agreed, with the digest inside if the request lacked it), and the
    /// verdict.
    async fn transfer(
        &mut self,
        offer: &Offer<'_>,
        digest: &mut PendingDigest,
        observer: &mut (dyn Observer + Send),
        resumed_from: &mut u64,
    ) -> Result<Sent, ClientError> {
        // Hashing is over: from here on the bar is the agent's.
        observer.phase(Phase::Sending, offer.size);
        let accepted = match self.request_send(offer, digest).await? {
            Answer::Send(accepted) => accepted,
            Answer::Unchanged(sha256) => return Ok(offer.sent(sha256, true, false, 0, None, 0)),
        };
        *resumed_from = accepted.offset;
        let out = self.send_body(offer, digest, &accepted, observer).await?;
        let sha256 = digest
            .wait()
            .await
            .map_err(local_error(offer.path)("cannot read"))?;
        let verdict = self.confirm(&sha256, offer.size, observer).await?;
        judge(offer, &sha256, verdict, &out, &accepted).await
    }

    /// The `send` request; the agent answers where the body starts, or
    /// that it has this file already.
    async fn request_send(
        &mut self,
        offer: &Offer<'_>,
        digest: &PendingDigest,
    ) -> Result<Answer, ClientError> {
        let request = Request::Send {
            name: offer.name.into(),
            size: offer.size,
            sha256: digest.now().map(str::to_string),
            overwrite: offer.overwrite,
            encoding: offer.compress.then_some(Encoding::Zstd),
            resume: true,
            confirm: true,
            progress: true,
            print: self.print,
        };
        match self.request(&request).await? {
            Reply::Continue {
                encoding,
                offset,
                keeps,
            } if offset <= offer.size => Ok(Answer::Send(Accepted {
                encoding,
                offset,
                keeps,
            })),
            Reply::Continue { offset, .. } => Err(ClientError::Integrity(format!(
                "the agent offered to resume at byte {offset} of a {}-byte file",
                offer.size
            ))),
            Reply::Stored { sha256, .. } => Ok(Answer::Unchanged(sha256)),
            other => Err(unexpected(&other)),
        }
    }

    /// The agent's verdict on the body; when it has it all, verified and
    /// matching this file, the final word (`commit`) stores it.
    async fn confirm(
        &mut self,
        sha256: &str,
        size: u64,
        observer: &mut (dyn Observer + Send),
    ) -> Result<Result<Reply, ClientError>, ClientError> {
        match self.reply_observed(observer).await {
            Ok(Reply::Verified { sha256: computed }) if computed == sha256 => {
                observer.progress(size);
                observer.committing();
                self.writing(|conn| conn.write_message(&Request::Commit))
                    .await?;
                Ok(self.reply().await)
            }
            Ok(Reply::Verified { sha256: other }) => Err(ClientError::Integrity(format!(
                "the agent received SHA-256 {other} but this file is {sha256}; not stored"
            ))),
            other => Ok(other),
        }
    }
}
