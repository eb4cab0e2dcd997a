//! Hashing the file being sent. The `send` header carries the whole
//! file's SHA-256, which takes reading the file once before the body
//! starts; for large files ([`HASH_WHILE_SENDING_MIN`]) the client instead
//! starts the body at once and hashes on a thread of its own, sending the
//! digest inside the body when it is done ([`PendingDigest`]).

use std::io;
use std::path::Path;

use tokio::task::JoinHandle;

use super::Observer;
use crate::spool::file_digest;

/// Files at least this large are hashed while they are sent rather than
/// before: hashing reads about 1 GB/s on a desktop core, so below this the
/// wait is under a tenth of a second and the digest goes in the header,
/// where the agent can answer "unchanged" or resume at once.
pub const HASH_WHILE_SENDING_MIN: u64 = 64 << 20;

/// A file's digest, known or being computed on a blocking thread.
#[derive(Debug)]
pub(super) struct PendingDigest {
    known: Option<String>,
    task: Option<JoinHandle<io::Result<String>>>,
}

impl PendingDigest {
    /// A digest computed already.
    pub(super) fn known(sha256: String) -> PendingDigest {
        PendingDigest {
            known: Some(sha256),
            task: None,
        }
    }

    /// Starts hashing the file at `path`.
    pub(super) fn start(path: &Path) -> PendingDigest {
        let path = path.to_path_buf();
        PendingDigest {
            known: None,
            task: Some(tokio::task::spawn_blocking(move || {
                file_digest(&mut std::fs::File::open(path)?)
            })),
        }
    }

    /// The digest if it is known now, without waiting.
    pub(super) fn now(&self) -> Option<&str> {
        self.known.as_deref()
    }

    /// Whether [`wait`](Self::wait) would return at once.
    pub(super) fn is_ready(&self) -> bool {
        self.known.is_some() || self.task.as_ref().is_some_and(JoinHandle::is_finished)
    }

    /// The digest, waiting for the hashing to end.
    pub(super) async fn wait(&mut self) -> io::Result<String> {
        if let Some(task) = self.task.take() {
            self.known = Some(task.await.map_err(io::Error::other)??);
        }
        self.known
            .clone()
            .ok_or_else(|| io::Error::other("hashing the file failed"))
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
        let mut pending = PendingDigest::start(&path);
        assert_eq!(pending.wait().await.unwrap(), expected);
        assert!(pending.is_ready());
        assert_eq!(pending.now(), Some(expected.as_str()));
        assert!(!hash_changed(&path, &expected).await);

        let mut missing = PendingDigest::start(&tmp.path().join("gone"));
        assert_eq!(
            missing.wait().await.unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
