//! The on-disk spool: `incoming/` for bodies being received, `ready/` for
//! complete, verified files.
//!
//! A body is written to a temp file in `incoming/`, hashed as it arrives,
//! and only when its size and SHA-256 match the declared ones is it fsynced,
//! renamed into `ready/` and the directory fsynced. An [`Upload`] that is
//! dropped before [`Upload::finish`] (error, timeout, shutdown, aborted task)
//! removes its temp file, and [`Spool::open`] removes leftovers of a crash.
//! A crash at any instant therefore leaves either no file or the whole file.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

mod budget;
mod commit;
pub(crate) use commit::{file_id, inode_of};
mod digest;
mod error;
mod name;
mod partial;
mod ready;
mod upload;
mod writeback;
mod writer;

pub(crate) use budget::MIN_PIECE_LEN;
pub use commit::Verified;
use digest::existing_digest;
pub use error::SpoolError;
pub(crate) use name::validate_name;
pub(crate) use partial::PARTIAL_SUFFIX;
pub use upload::Upload;

/// Sub-directory for bodies being received.
pub(crate) const INCOMING_DIR: &str = "incoming";
/// Sub-directory for complete files.
pub(crate) const READY_DIR: &str = "ready";
/// Sub-directory for files uploaded to OctoPrint (kept for `keep_done`).
pub(crate) const DONE_DIR: &str = "done";
/// Sub-directory for files OctoPrint refused for good.
pub(crate) const FAILED_DIR: &str = "failed";
/// Size limits enforced before a body is accepted.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest file accepted.
    pub max_file_size: u64,
    /// Space that must stay free.
    pub min_free_space: u64,
    /// How long an interrupted upload is kept for resuming (zero: never).
    pub keep_partial: std::time::Duration,
}

/// What [`Spool::begin`] decided.
#[derive(Debug)]
pub enum Begin {
    /// Receive the body into this upload.
    Receive(Box<Upload>),
    /// The identical file is already there: nothing to receive.
    Unchanged(Stored),
}

/// A file that is durably in `ready/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// File name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Hex SHA-256.
    pub sha256: String,
    /// It was already there with this content.
    pub unchanged: bool,
    /// A different file of that name was replaced.
    pub replaced: bool,
    /// Device and inode of the file this upload put in `ready/` (`None`
    /// when it was there already): which file in `ready/` is this one, even
    /// after a newer one took its name.
    pub inode: Option<(u64, u64)>,
}

/// The spool directories and limits.
#[derive(Debug)]
pub struct Spool {
    incoming: PathBuf,
    ready: PathBuf,
    /// `done/` and `failed/`: forwarded files, which `get` finds too.
    forwarded: [PathBuf; 2],
    limits: Limits,
    /// Bytes promised to uploads in flight and not yet written.
    reserved: Arc<AtomicU64>,
    /// Partial files being written now.
    busy: Arc<partial::Busy>,
    /// Memory for large body buffers.
    buffers: Arc<budget::BufferBudget>,
}

impl Spool {
    /// Creates the directories if needed and removes leftovers in
    /// `incoming/`; returns the spool and how many leftovers were removed.
    pub fn open(root: &Path, limits: Limits) -> io::Result<(Spool, usize)> {
        let incoming = root.join(INCOMING_DIR);
        let ready = root.join(READY_DIR);
        for dir in [&incoming, &ready] {
            crate::durable::create_dir(dir, 0o750).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let busy = Arc::new(partial::Busy::default());
        let removed = partial::sweep(&incoming, limits.keep_partial, &busy, true)?;
        let spool = Spool {
            incoming,
            ready,
            forwarded: [root.join(DONE_DIR), root.join(FAILED_DIR)],
            limits,
            reserved: Arc::new(AtomicU64::new(0)),
            busy,
            buffers: Arc::default(),
        };
        Ok((spool, removed))
    }

    /// The same spool under new limits, sharing the space reserved by
    /// uploads in flight and their buffers (for a reload while uploads run).
    pub(crate) fn with_limits(&self, limits: Limits) -> Spool {
        Spool {
            incoming: self.incoming.clone(),
            ready: self.ready.clone(),
            forwarded: self.forwarded.clone(),
            limits,
            reserved: self.reserved.clone(),
            busy: self.busy.clone(),
            buffers: self.buffers.clone(),
        }
    }

    #[cfg(test)]
    /// Path of the `ready/` directory.
    pub(crate) fn ready_dir(&self) -> &Path {
        &self.ready
    }

    /// Checks name, limits, free space and conflicts for an announced file,
    /// and opens a file for its body unless the identical file is already in
    /// place: with `resume`, the partial file kept for this digest and size
    /// (continuing after what it holds, see [`Upload::resumed_from`]), else
    /// a temp file. Without `sha256` (the client sends it inside the body)
    /// an existing file of that name is refused as `Exists` unless
    /// `overwrite`, and the body goes to a temp file that becomes the
    /// partial file once the digest arrives ([`Upload::declare_digest`]).
    pub(crate) async fn begin(
        &self,
        name: &str,
        size: u64,
        sha256: Option<&str>,
        overwrite: bool,
        resume: bool,
    ) -> Result<Begin, SpoolError> {
        self.check(name, size, sha256)?;
        let dest = self.ready.join(name);
        if let Some(stored) = unchanged(&dest, name, size, sha256).await? {
            return Ok(Begin::Unchanged(stored));
        }
        if !overwrite && tokio::fs::try_exists(&dest).await.unwrap_or(false) {
            let name = name.into();
            return Err(match sha256 {
                Some(_) => SpoolError::Exists { name },
                None => SpoolError::ExistsUnchecked { name },
            });
        }
        let resumable = resume && !self.limits.keep_partial.is_zero();
        match sha256 {
            // The digest follows in the body: a temp file until it arrives.
            None => {
                let adopt = resumable.then(|| upload::Adopt {
                    incoming: self.incoming.clone(),
                    busy: self.busy.clone(),
                });
                self.begin_temp(name, dest, size, None, adopt).await
            }
            Some(sha256) if resumable => match self.begin_partial(name, &dest, size, sha256).await?
            {
                Some(begun) => Ok(begun),
                None => self.begin_temp(name, dest, size, Some(sha256), None).await,
            },
            Some(sha256) => self.begin_temp(name, dest, size, Some(sha256), None).await,
        }
    }

    /// Refuses a bad name, a digest that is not one, or a file too large.
    fn check(&self, name: &str, size: u64, sha256: Option<&str>) -> Result<(), SpoolError> {
        validate_name(name)?;
        if let Some(sha256) = sha256
            && partial::partial_name(sha256, size).is_none()
        {
            return Err(SpoolError::BadDigest(sha256.chars().take(80).collect()));
        }
        if size > self.limits.max_file_size {
            return Err(SpoolError::TooLarge {
                size,
                max: self.limits.max_file_size,
            });
        }
        Ok(())
    }

    /// An upload into the partial file kept for this digest and size,
    /// continuing after what it holds; `None` while another upload writes
    /// that partial file.
    async fn begin_partial(
        &self,
        name: &str,
        dest: &Path,
        size: u64,
        sha256: &str,
    ) -> Result<Option<Begin>, SpoolError> {
        let Some(partial) = partial::partial_name(sha256, size) else {
            return Ok(None);
        };
        let Some(claim) = self.busy.claim(&partial) else {
            return Ok(None);
        };
        // Expired partial files go first, so this one is fresh or new.
        let _ = self.sweep_expired().await;
        let path = self.incoming.join(&partial);
        // Space first: a refused upload must not leave an empty partial file.
        let held = partial::space_held(&path, size).await;
        let reservation = self.reserve(size - held)?;
        let (file, offset, hasher) = partial::open_partial(path.clone(), size).await?;
        Ok(Some(Begin::Receive(Box::new(Upload::new(
            name,
            dest.to_path_buf(),
            size,
            Some(sha256),
            upload::Body {
                file,
                target: upload::Target::Partial {
                    path,
                    claim: Some(claim),
                },
                offset,
                hasher,
                buffers: self.buffers.share(size - offset),
            },
            reservation,
            None,
        )))))
    }

    /// An upload into a new temp file; with `adopt`, it becomes the
    /// partial file of its digest once that arrives.
    async fn begin_temp(
        &self,
        name: &str,
        dest: PathBuf,
        size: u64,
        sha256: Option<&str>,
        adopt: Option<upload::Adopt>,
    ) -> Result<Begin, SpoolError> {
        let reservation = self.reserve(size)?;
        let incoming = self.incoming.clone();
        let (file, path) = tokio::task::spawn_blocking(move || {
            tempfile::Builder::new()
                .prefix("upload-")
                .suffix(".part")
                .tempfile_in(&incoming)
                .map(tempfile::NamedTempFile::into_parts)
        })
        .await
        .map_err(|e| SpoolError::io("creating a temp file")(io::Error::other(e)))?
        .map_err(SpoolError::io("cannot create a temp file in incoming/"))?;
        Ok(Begin::Receive(Box::new(Upload::new(
            name,
            dest,
            size,
            sha256,
            upload::Body {
                file,
                target: upload::Target::Temp(path),
                offset: 0,
                hasher: sha2::Sha256::default(),
                buffers: self.buffers.share(size),
            },
            reservation,
            adopt,
        ))))
    }

    /// Number of bodies being received (temp files in `incoming/`).
    pub(crate) fn incoming_count(&self) -> u64 {
        // Temp files are uploads running now; partial files only while written.
        let temp = std::fs::read_dir(&self.incoming).map_or(0, |d| {
            d.filter_map(Result::ok)
                .filter(|e| !e.file_name().to_string_lossy().ends_with(PARTIAL_SUFFIX))
                .count() as u64
        });
        temp + self.busy.len() as u64
    }
}

/// The file as stored when `ready/` holds it with this size and digest
/// already: nothing to receive.
async fn unchanged(
    dest: &Path,
    name: &str,
    size: u64,
    sha256: Option<&str>,
) -> Result<Option<Stored>, SpoolError> {
    let Some(sha256) = sha256 else {
        return Ok(None);
    };
    Ok(existing_digest(dest, Some(size))
        .await?
        .filter(|existing| existing == sha256)
        .map(|existing| Stored {
            name: name.into(),
            size,
            sha256: existing,
            unchanged: true,
            replaced: false,
            inode: None,
        }))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::budget::MID_PIECE_LEN;

    use super::*;
    use crate::wire::protocol::ErrorCode;
    use sha2::{Digest, Sha256};

    const LIMITS: Limits = Limits {
        max_file_size: 1 << 20,
        min_free_space: 0,
        keep_partial: std::time::Duration::from_secs(3600),
    };

    fn digest(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    async fn put(
        spool: &Spool,
        name: &str,
        data: &[u8],
        overwrite: bool,
    ) -> Result<Stored, SpoolError> {
        match spool
            .begin(
                name,
                data.len() as u64,
                Some(&digest(data)),
                overwrite,
                false,
            )
            .await?
        {
            Begin::Unchanged(stored) => Ok(stored),
            Begin::Receive(mut upload) => {
                upload.write(data).await?;
                upload.finish(overwrite).await
            }
        }
    }

    /// Begins an upload that must be received (not already stored).
    async fn receiving(spool: &Spool, name: &str, size: u64, content: &[u8]) -> Box<Upload> {
        match spool
            .begin(name, size, Some(&digest(content)), false, false)
            .await
            .unwrap()
        {
            Begin::Receive(upload) => upload,
            Begin::Unchanged(stored) => panic!("expected an upload, got {stored:?}"),
        }
    }

    fn entries(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    #[tokio::test]
    async fn a_stored_file_is_listed_and_leaves_no_temp() {
        let tmp = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(tmp.path(), LIMITS).unwrap();
        let stored = put(&spool, "a.gcode", b"G28\n", false).await.unwrap();
        assert_eq!(stored.sha256, digest(b"G28\n"));
        assert_eq!(
            std::fs::read(spool.ready_dir().join("a.gcode")).unwrap(),
            b"G28\n"
        );
        assert_eq!(entries(&tmp.path().join(INCOMING_DIR)), 0);
        let list = spool.list().await.unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!((list[0].name.as_str(), list[0].size), ("a.gcode", 4));
    }

    #[tokio::test]
    async fn conflicts_need_overwrite_and_identical_content_is_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(tmp.path(), LIMITS).unwrap();
        put(&spool, "a.gcode", b"one", false).await.unwrap();
        let again = put(&spool, "a.gcode", b"one", false).await.unwrap();
        assert!(again.unchanged);
        let err = put(&spool, "a.gcode", b"two", false).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::Exists);
        let replaced = put(&spool, "a.gcode", b"two", true).await.unwrap();
        assert!(replaced.replaced);
        assert_eq!(
            std::fs::read(spool.ready_dir().join("a.gcode")).unwrap(),
            b"two"
        );
    }

    #[tokio::test]
    async fn bad_bodies_are_discarded() {
        let tmp = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(tmp.path(), LIMITS).unwrap();
        let mut upload = receiving(&spool, "s.gcode", 5, b"12345").await;
        upload.write(b"123").await.unwrap();
        assert_eq!(entries(&tmp.path().join(INCOMING_DIR)), 1);
        assert_eq!(
            upload.finish(false).await.unwrap_err().code(),
            ErrorCode::SizeMismatch
        );

        let mut upload = receiving(&spool, "l.gcode", 2, b"12").await;
        assert_eq!(
            upload.write(b"123").await.unwrap_err().code(),
            ErrorCode::SizeMismatch
        );
        drop(upload);

        let mut upload = receiving(&spool, "d.gcode", 2, b"ab").await;
        upload.write(b"xy").await.unwrap();
        assert_eq!(
            upload.finish(false).await.unwrap_err().code(),
            ErrorCode::DigestMismatch
        );

        assert_eq!(entries(&tmp.path().join(INCOMING_DIR)), 0);
        assert_eq!(entries(&tmp.path().join(READY_DIR)), 0);
        assert_eq!(spool.reserved.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_body_of_many_pieces_is_written_whole_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(tmp.path(), LIMITS).unwrap();
        let body: Vec<u8> = (0..3 * MID_PIECE_LEN + 17)
            .map(|i| (i % 241) as u8)
            .collect();
        let mut upload = receiving(&spool, "big.gcode", body.len() as u64, &body).await;
        // Straight into the upload's buffers, in uneven reads...
        let mut at = 0;
        while at < MID_PIECE_LEN + 100 {
            let room = upload.spare().await.unwrap();
            let n = room.len().min(7_000);
            room[..n].copy_from_slice(&body[at..at + n]);
            upload.commit(n).await.unwrap();
            at += n;
        }
        // ...and copied from slices larger than a buffer.
        upload.write(&body[at..]).await.unwrap();
        assert_eq!(upload.written(), body.len() as u64);
        upload.finish(false).await.unwrap();
        assert_eq!(
            std::fs::read(tmp.path().join(READY_DIR).join("big.gcode")).unwrap(),
            body
        );
        assert_eq!(entries(&tmp.path().join(INCOMING_DIR)), 0);
    }

    #[tokio::test]
    async fn limits_are_checked_before_any_byte() {
        let tmp = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(tmp.path(), LIMITS).unwrap();
        let err = spool
            .begin(
                "big.gcode",
                (1 << 20) + 1,
                Some(&"00".repeat(32)),
                false,
                false,
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::TooLarge);
        let hungry = Limits {
            max_file_size: u64::MAX,
            min_free_space: u64::MAX / 2,
            ..LIMITS
        };
        let (spool, _) = Spool::open(tmp.path(), hungry).unwrap();
        let err = spool
            .begin("a.gcode", 1, Some(&"00".repeat(32)), false, false)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::NoSpace, "{err}");
        assert_eq!(entries(&tmp.path().join(INCOMING_DIR)), 0);
    }

    #[tokio::test]
    async fn open_removes_crash_leftovers() {
        let tmp = tempfile::tempdir().unwrap();
        Spool::open(tmp.path(), LIMITS).unwrap();
        std::fs::write(tmp.path().join(INCOMING_DIR).join("upload-x.part"), b"half").unwrap();
        let (spool, removed) = Spool::open(tmp.path(), LIMITS).unwrap();
        assert_eq!(removed, 1);
        assert_eq!(spool.incoming_count(), 0);
    }

    #[tokio::test]
    async fn get_and_delete_report_missing_files() {
        let tmp = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(tmp.path(), LIMITS).unwrap();
        assert_eq!(
            spool.open_file("x.gcode").await.unwrap_err().code(),
            ErrorCode::NotFound
        );
        assert_eq!(
            spool.delete("x.gcode").await.unwrap_err().code(),
            ErrorCode::NotFound
        );
        assert_eq!(
            spool.delete("../x").await.unwrap_err().code(),
            ErrorCode::BadName
        );
        put(&spool, "x.gcode", b"x", false).await.unwrap();
        assert_eq!(spool.open_file("x.gcode").await.unwrap().1, 1);
        std::os::unix::fs::symlink("/etc/hostname", spool.ready_dir().join("link.gcode")).unwrap();
        assert_eq!(
            spool.open_file("link.gcode").await.unwrap_err().code(),
            ErrorCode::NotFound
        );
        assert!(
            spool
                .list()
                .await
                .unwrap()
                .iter()
                .all(|f| f.name != "link.gcode")
        );
        std::fs::remove_file(spool.ready_dir().join("link.gcode")).unwrap();
        spool.delete("x.gcode").await.unwrap();
        assert!(spool.list().await.unwrap().is_empty());
    }
}
