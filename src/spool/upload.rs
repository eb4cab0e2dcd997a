//! One upload in progress: its file in `incoming/` (a temp file, or a
//! partial file kept for resuming), its running SHA-256, its share of the
//! space reservation, and the verified, durable commit into `ready/`.
//! Dropping an [`Upload`] removes a temp file and keeps a partial one.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use tempfile::TempPath;
use tokio::io::AsyncWriteExt;

use super::{SpoolError, Stored};

/// Read buffer for hashing whole files.
const HASH_BUF_LEN: usize = 256 * 1024;

/// Bytes promised to one upload; given back as they are written or when the
/// upload ends.
#[derive(Debug)]
pub(super) struct Reservation {
    counter: Arc<AtomicU64>,
    remaining: u64,
}

impl Reservation {
    /// A reservation of `size` bytes already added to `counter`.
    pub(super) fn new(counter: Arc<AtomicU64>, size: u64) -> Reservation {
        Reservation {
            counter,
            remaining: size,
        }
    }

    fn consume(&mut self, n: u64) {
        let n = n.min(self.remaining);
        self.remaining -= n;
        self.counter.fetch_sub(n, Ordering::SeqCst);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.remaining, Ordering::SeqCst);
    }
}

/// Where an upload's body goes in `incoming/`.
#[derive(Debug)]
pub(super) enum Target {
    /// A temp file, removed when the upload is dropped.
    Temp(TempPath),
    /// A partial file kept for resuming, claimed by this upload.
    Partial {
        /// Its path.
        path: PathBuf,
        /// The claim, released when the upload ends.
        claim: super::partial::Claim,
    },
}

/// Where a body is written and what it holds already.
#[derive(Debug)]
pub(super) struct Body {
    /// The open file, positioned at its end.
    pub(super) file: tokio::fs::File,
    /// The file's kind and path.
    pub(super) target: Target,
    /// Bytes it holds already (a resumed partial upload).
    pub(super) offset: u64,
    /// SHA-256 state over those bytes.
    pub(super) hasher: Sha256,
}

/// A body being received into `incoming/`. Dropping it without
/// [`finish`](Upload::finish) removes a temp file and keeps a partial one.
#[derive(Debug)]
pub struct Upload {
    name: String,
    dest: PathBuf,
    declared_size: u64,
    declared_sha256: String,
    file: tokio::fs::File,
    target: Target,
    hasher: Sha256,
    written: u64,
    resumed_from: u64,
    reservation: Reservation,
}

impl Upload {
    pub(super) fn new(
        name: &str,
        dest: PathBuf,
        declared_size: u64,
        declared_sha256: &str,
        body: Body,
        reservation: Reservation,
    ) -> Upload {
        Upload {
            name: name.into(),
            dest,
            declared_size,
            declared_sha256: declared_sha256.to_ascii_lowercase(),
            file: body.file,
            target: body.target,
            hasher: body.hasher,
            written: body.offset,
            resumed_from: body.offset,
            reservation,
        }
    }

    /// Bytes an earlier, interrupted upload of this file had delivered:
    /// the client sends the body from there on.
    pub fn resumed_from(&self) -> u64 {
        self.resumed_from
    }

    /// Removes a partial file that cannot become the file (the upload ended
    /// with a wrong size or digest); a temp file goes when dropped anyway.
    pub async fn discard(&mut self) {
        if let Target::Partial { path, .. } = &self.target {
            let _ = tokio::fs::remove_file(path).await;
        }
    }

    /// Whether the body is kept for resuming if the upload is interrupted.
    pub fn is_resumable(&self) -> bool {
        matches!(self.target, Target::Partial { .. })
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends a piece of the body; more bytes than declared is an error.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), SpoolError> {
        let len = data.len() as u64;
        if self.written + len > self.declared_size {
            return Err(SpoolError::SizeMismatch {
                declared: self.declared_size,
                got: self.written + len,
                over: true,
            });
        }
        self.hasher.update(data);
        self.file
            .write_all(data)
            .await
            .map_err(SpoolError::io("cannot write to incoming/"))?;
        self.written += len;
        self.reservation.consume(len);
        Ok(())
    }

    /// Verifies size and digest, fsyncs, renames into `ready/` (replacing a
    /// different file only with `overwrite`) and fsyncs the directory.
    pub async fn finish(mut self, overwrite: bool) -> Result<Stored, SpoolError> {
        if self.written != self.declared_size {
            self.discard().await;
            return Err(SpoolError::SizeMismatch {
                declared: self.declared_size,
                got: self.written,
                over: false,
            });
        }
        let computed = hex::encode(self.hasher.finalize_reset());
        if computed != self.declared_sha256 {
            // A resumed body that does not add up: the kept part was damaged
            // (say by a power cut). It goes, so the next try starts afresh.
            self.discard().await;
            return Err(SpoolError::DigestMismatch {
                declared: self.declared_sha256,
                computed,
            });
        }
        self.file
            .flush()
            .await
            .map_err(SpoolError::io("cannot write to incoming/"))?;
        self.file
            .sync_all()
            .await
            .map_err(SpoolError::io("cannot fsync the upload"))?;
        let Upload {
            name, dest, target, ..
        } = self;
        let stored = |unchanged, replaced| Stored {
            name: name.clone(),
            size: self.declared_size,
            sha256: computed.clone(),
            unchanged,
            replaced,
        };
        let destination = dest.clone();
        let outcome = tokio::task::spawn_blocking(move || persist(target, &destination, overwrite))
            .await
            .map_err(|e| SpoolError::io("renaming into ready/")(io::Error::other(e)))?;
        match outcome {
            Ok(replaced) => {
                sync_dir(dest.parent().unwrap_or(Path::new(".")).to_path_buf()).await?;
                Ok(stored(false, replaced))
            }
            // Another upload of the same name won the race: fine if it is
            // the same content (the temp file is gone with the error).
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                match existing_digest(&dest, Some(self.declared_size)).await? {
                    Some(existing) if existing == computed => Ok(stored(true, false)),
                    _ => Err(SpoolError::Exists { name }),
                }
            }
            Err(e) => Err(SpoolError::io("cannot rename into ready/")(e)),
        }
    }
}

/// Renames the body into `target`; without `overwrite` never replaces a
/// file (`AlreadyExists`). Returns whether a file was replaced. A partial
/// file that could not be renamed is removed.
fn persist(body: Target, target: &Path, overwrite: bool) -> io::Result<bool> {
    match body {
        Target::Temp(path) if overwrite => {
            let replaced = target.exists();
            path.persist(target).map(|()| replaced).map_err(|e| e.error)
        }
        Target::Temp(path) => path
            .persist_noclobber(target)
            .map(|()| false)
            .map_err(|e| e.error),
        Target::Partial { path, claim } => {
            let replaced = overwrite && target.exists();
            let flags = if overwrite {
                rustix::fs::RenameFlags::empty()
            } else {
                rustix::fs::RenameFlags::NOREPLACE
            };
            let renamed =
                rustix::fs::renameat_with(rustix::fs::CWD, &path, rustix::fs::CWD, target, flags)
                    .map_err(io::Error::from);
            if renamed.is_err() {
                let _ = std::fs::remove_file(&path);
            }
            drop(claim);
            renamed.map(|()| replaced)
        }
    }
}

/// Opens (or creates) the partial file at `path` for a body of `size`:
/// returns it positioned at its end, how many bytes it holds, and the
/// SHA-256 state over them. A partial file longer than `size` is emptied.
pub(super) async fn open_partial(
    path: PathBuf,
    size: u64,
) -> Result<(tokio::fs::File, u64, Sha256), SpoolError> {
    tokio::task::spawn_blocking(move || -> io::Result<_> {
        use std::io::Seek;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::File::options()
            .mode(0o600)
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let mut held = file.metadata()?.len();
        if held > size {
            file.set_len(0)?;
            held = 0;
        }
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; HASH_BUF_LEN];
        let mut left = held;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            file.read_exact(&mut buf[..want])?;
            hasher.update(&buf[..want]);
            left -= want as u64;
        }
        file.seek(io::SeekFrom::Start(held))?;
        Ok((tokio::fs::File::from_std(file), held, hasher))
    })
    .await
    .map_err(|e| SpoolError::io("opening a partial upload")(io::Error::other(e)))?
    .map_err(SpoolError::io(
        "cannot open the partial upload in incoming/",
    ))
}

/// SHA-256 of the file at `path` if it exists (and has `size`, when given).
pub(super) async fn existing_digest(
    path: &Path,
    size: Option<u64>,
) -> Result<Option<String>, SpoolError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> io::Result<Option<String>> {
        let mut file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        if !meta.is_file() || size.is_some_and(|s| s != meta.len()) {
            return Ok(None);
        }
        file_digest(&mut file).map(Some)
    })
    .await
    .map_err(|e| SpoolError::io("hashing")(io::Error::other(e)))?
    .map_err(SpoolError::io("cannot read the existing file"))
}

/// Hex SHA-256 of everything `reader` yields.
pub fn file_digest(reader: &mut impl Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; HASH_BUF_LEN];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

pub(super) async fn sync_dir(dir: PathBuf) -> Result<(), SpoolError> {
    tokio::task::spawn_blocking(move || crate::durable::sync_dir(&dir))
        .await
        .map_err(|e| SpoolError::io("fsync")(io::Error::other(e)))?
        .map_err(SpoolError::io("cannot fsync ready/"))
}
