//! Hashing the file being sent. The `send` header carries the whole
//! file's SHA-256, which takes reading the file once before the body
//! starts; for large files ([`HASH_WHILE_SENDING_MIN`]) the client instead
//! starts the body at once, has the thread reading the body hash the file
//! too ([`super::body`]), and sends the digest inside the body as soon as
//! it is known ([`PendingDigest`]).

use std::io;
use std::path::{Path, PathBuf};

use super::Observer;
use super::body::Hashing;
use crate::wire::digest::file_digest;

/// Files at least this large are hashed while they are sent rather than
/// before: hashing reads about 1 GB/s on a desktop core, so below this the
/// wait is under a tenth of a second and the digest goes in the header,
/// where the agent can answer "unchanged" or resume at once.
pub(crate) const HASH_WHILE_SENDING_MIN: u64 = 64 << 20;

/// A file's digest: known, to be computed, or being computed by the
/// thread reading the body.
#[derive(Debug)]
pub(super) enum PendingDigest {
    Known(String),
    /// Not started: the body's reader hashes the file if a body is sent,
    /// [`wait`](Self::wait) does otherwise.
    Later(PathBuf),
    Hashing(Hashing),
}

impl PendingDigest {
    /// A digest computed already.
    pub(super) fn known(sha256: String) -> PendingDigest {
        PendingDigest::Known(sha256)
    }

    /// The digest of the file at `path`, to be computed when it is read.
    pub(super) fn later(path: &Path) -> PendingDigest {
        PendingDigest::Later(path.to_path_buf())
    }

    /// The digest if it is known now, without waiting.
    pub(super) fn now(&self) -> Option<&str> {
        match self {
            PendingDigest::Known(sha256) => Some(sha256),
            _ => None,
        }
    }

    /// Whether the file is still to be hashed by whoever reads it next.
    pub(super) fn is_unstarted(&self) -> bool {
        matches!(self, PendingDigest::Later(_))
    }

    /// Hands the hashing to the thread reading the body.
    pub(super) fn hashed_by(&mut self, task: Hashing) {
        *self = PendingDigest::Hashing(task);
    }

    /// The digest, as the body's reader found it.
    pub(super) fn set(&mut self, sha256: String) {
        *self = PendingDigest::Known(sha256);
    }

    /// The digest, waiting for the hashing to end (or doing it if nobody
    /// has started it).
    pub(super) async fn wait(&mut self) -> io::Result<String> {
        let sha256 = match self {
            PendingDigest::Known(sha256) => return Ok(sha256.clone()),
            PendingDigest::Later(path) => hash_file(path, 0, &mut ()).await?,
            PendingDigest::Hashing(task) => task
                .await
                .map_err(io::Error::other)??
                .ok_or_else(|| io::Error::other("the body was read without hashing it"))?,
        };
        *self = PendingDigest::Known(sha256.clone());
        Ok(sha256)
    }
}

pub(super) async fn hash_file(
    path: &Path,
    size: u64,
    observer: &mut (dyn Observer + Send),
) -> io::Result<String> {
    // Large files: hash in a blocking thread, reporting progress from here.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let path = path.to_path_buf();
    let worker = tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(path)?;
        let mut reader = ProgressReader {
            inner: &mut file,
            done: 0,
            report: |done| {
                let _ = tx.send(done);
            },
        };
        file_digest(&mut reader)
    });
    while let Some(done) = rx.recv().await {
        observer.progress(done.min(size));
    }
    worker.await.map_err(io::Error::other)?
}

pub(super) async fn hash_changed(path: &Path, sha256: &str) -> bool {
    hash_file(path, 0, &mut ())
        .await
        .map_or(true, |now| now != sha256)
}

struct ProgressReader<'a, R, F> {
    inner: &'a mut R,
    done: u64,
    report: F,
}

impl<R: io::Read, F: FnMut(u64)> io::Read for ProgressReader<'_, R, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        (self.report)(self.done);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pending_digest_ends_as_the_files_digest() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f.gcode");
        std::fs::write(&path, b"G28\n").unwrap();
        let expected = hash_file(&path, 4, &mut ()).await.unwrap();
        let mut pending = PendingDigest::later(&path);
        assert!(pending.now().is_none() && pending.is_unstarted());
        assert_eq!(pending.wait().await.unwrap(), expected);
        assert_eq!(pending.now(), Some(expected.as_str()));
        assert!(!hash_changed(&path, &expected).await);

        let (_body, task) = super::super::body::Body::start(&path, 0, 4, true);
        let mut pending = PendingDigest::later(&path);
        pending.hashed_by(task);
        assert!(!pending.is_unstarted());
        assert_eq!(pending.wait().await.unwrap(), expected);

        let mut missing = PendingDigest::later(&tmp.path().join("gone"));
        assert_eq!(
            missing.wait().await.unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
