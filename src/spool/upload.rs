//! One upload in progress: the temp file in `incoming/`, its running
//! SHA-256, its share of the space reservation, and the verified, durable
//! commit into `ready/`. Dropping an [`Upload`] removes its temp file.

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

/// A body being received into a temp file in `incoming/`. Dropping it
/// without [`finish`](Upload::finish) removes the temp file.
#[derive(Debug)]
pub struct Upload {
    name: String,
    dest: PathBuf,
    declared_size: u64,
    declared_sha256: String,
    file: tokio::fs::File,
    path: TempPath,
    hasher: Sha256,
    written: u64,
    reservation: Reservation,
}

impl Upload {
    pub(super) fn new(
        name: &str,
        dest: PathBuf,
        declared_size: u64,
        declared_sha256: &str,
        file: tokio::fs::File,
        path: TempPath,
        reservation: Reservation,
    ) -> Upload {
        Upload {
            name: name.into(),
            dest,
            declared_size,
            declared_sha256: declared_sha256.to_ascii_lowercase(),
            file,
            path,
            hasher: Sha256::new(),
            written: 0,
            reservation,
        }
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
            return Err(SpoolError::SizeMismatch {
                declared: self.declared_size,
                got: self.written,
                over: false,
            });
        }
        let computed = hex::encode(self.hasher.finalize_reset());
        if computed != self.declared_sha256 {
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
            name, dest, path, ..
        } = self;
        let stored = |unchanged, replaced| Stored {
            name: name.clone(),
            size: self.declared_size,
            sha256: computed.clone(),
            unchanged,
            replaced,
        };
        let target = dest.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            if overwrite {
                let replaced = target.exists();
                path.persist(&target)
                    .map(|()| replaced)
                    .map_err(|e| e.error)
            } else {
                path.persist_noclobber(&target)
                    .map(|()| false)
                    .map_err(|e| e.error)
            }
        })
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
