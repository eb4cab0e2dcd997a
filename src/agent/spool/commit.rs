//! The commit of a verified body into `ready/`: a rename that replaces a
//! different file only when asked to (`renameat2(RENAME_NOREPLACE)` for a
//! partial file, `persist_noclobber` for a temp file), then an fsync of the
//! directory so the rename survives a power cut. A race with another upload
//! of the same name is fine when both carry the same content.

use std::io;
use std::path::{Path, PathBuf};

use super::digest::existing_digest;
use super::upload::Target;
use super::{SpoolError, Stored};

/// A body that arrived whole, matches its size and digest and is on the
/// disk, waiting for the client's final word. Dropped without
/// [`commit`](Verified::commit), a temp file is removed and a partial one
/// stays for resuming (the next `send` of it resumes at its end).
#[derive(Debug)]
pub struct Verified {
    pub(super) name: String,
    pub(super) dest: PathBuf,
    pub(super) size: u64,
    pub(super) sha256: String,
    pub(super) target: Target,
}

impl Verified {
    /// The SHA-256 the agent computed.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Whether dropping it keeps the body for resuming.
    pub(crate) fn is_resumable(&self) -> bool {
        matches!(self.target, Target::Partial { .. })
    }

    /// Renames the body into `ready/` (replacing a different file only with
    /// `overwrite`) and fsyncs the directory.
    pub async fn commit(self, overwrite: bool) -> Result<Stored, SpoolError> {
        let Verified {
            name,
            dest,
            size,
            sha256,
            target,
        } = self;
        let stored = |unchanged, replaced, inode| Stored {
            name: name.clone(),
            size,
            sha256: sha256.clone(),
            unchanged,
            replaced,
            inode,
        };
        let destination = dest.clone();
        let outcome = tokio::task::spawn_blocking(move || persist(target, &destination, overwrite))
            .await
            .map_err(|e| SpoolError::io("renaming into ready/")(io::Error::other(e)))?;
        match outcome {
            Ok((replaced, inode)) => {
                sync_dir(dest.parent().unwrap_or(Path::new(".")).to_path_buf()).await?;
                Ok(stored(false, replaced, inode))
            }
            // Another upload of the same name won the race: fine if it is
            // the same content (the temp file is gone with the error).
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                match existing_digest(&dest, Some(size)).await? {
                    Some(existing) if existing == sha256 => Ok(stored(true, false, None)),
                    _ => Err(SpoolError::Exists { name: name.clone() }),
                }
            }
            Err(e) => Err(SpoolError::io("cannot rename into ready/")(e)),
        }
    }
}

/// Renames the body into `target`; without `overwrite` never replaces a
/// file (`AlreadyExists`). Returns whether a file was replaced, and the
/// body's device and inode (a rename keeps them). A partial file that
/// could not be renamed is removed.
fn persist(body: Target, target: &Path, overwrite: bool) -> io::Result<(bool, Option<(u64, u64)>)> {
    let inode = inode_of(match &body {
        Target::Temp(temp) => temp.as_ref(),
        Target::Partial { path, .. } => path.as_path(),
    });
    renamed(body, target, overwrite).map(|replaced| (replaced, inode))
}

/// The rename of [`persist`]: whether a file was replaced.
fn renamed(body: Target, target: &Path, overwrite: bool) -> io::Result<bool> {
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

/// Device and inode of the file at `path` (not following a symlink): which
/// file a name stands for, as a rename keeps them.
pub(crate) fn inode_of(path: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(path).ok().map(|m| file_id(&m))
}

/// Device and inode in `meta`.
pub(crate) fn file_id(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

pub(super) async fn sync_dir(dir: PathBuf) -> Result<(), SpoolError> {
    tokio::task::spawn_blocking(move || crate::durable::sync_dir(&dir))
        .await
        .map_err(|e| SpoolError::io("fsync")(io::Error::other(e)))?
        .map_err(SpoolError::io("cannot fsync ready/"))
}
