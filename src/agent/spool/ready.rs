//! The files in `ready/` as sessions see them: listed (`list`), opened for
//! `get` (from `done/` and `failed/` too, once forwarded) and deleted.

use std::io;
use std::time::UNIX_EPOCH;

use super::commit::sync_dir;
use super::{Spool, SpoolError, validate_name};
use crate::wire::protocol::FileEntry;

impl Spool {
    /// The files in `ready/`, sorted by name (hidden and temp files left out).
    pub async fn list(&self) -> Result<Vec<FileEntry>, SpoolError> {
        let mut files = Vec::new();
        let mut dir = tokio::fs::read_dir(&self.ready)
            .await
            .map_err(SpoolError::io("cannot read ready/"))?;
        while let Some(entry) = dir
            .next_entry()
            .await
            .map_err(SpoolError::io("cannot read ready/"))?
        {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if validate_name(&name).is_err() {
                continue;
            }
            let Ok(meta) = entry.metadata().await else {
                continue; // removed meanwhile
            };
            if !meta.is_file() {
                continue;
            }
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            files.push(FileEntry {
                name,
                size: meta.len(),
                modified,
                state: None,
                reason: None,
            });
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(files)
    }

    /// Opens a file for reading, from `ready/` or else (forwarded to
    /// OctoPrint) from `done/` or `failed/`; returns it with its size. A
    /// symbolic link is not followed (it could point anywhere).
    pub(crate) async fn open_file(&self, name: &str) -> Result<(tokio::fs::File, u64), SpoolError> {
        validate_name(name)?;
        let mut found = Err(SpoolError::NotFound { name: name.into() });
        for dir in std::iter::once(&self.ready).chain(&self.forwarded) {
            found = tokio::fs::OpenOptions::new()
                .read(true)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(dir.join(name))
                .await
                .map_err(|e| not_found_or(name, e));
            if !matches!(found, Err(SpoolError::NotFound { .. })) {
                break;
            }
        }
        let file = found?;
        let meta = file
            .metadata()
            .await
            .map_err(SpoolError::io("cannot stat file"))?;
        if !meta.is_file() {
            return Err(SpoolError::NotFound { name: name.into() });
        }
        Ok((file, meta.len()))
    }

    /// Removes a ready file.
    pub async fn delete(&self, name: &str) -> Result<(), SpoolError> {
        validate_name(name)?;
        let path = self.ready.join(name);
        tokio::fs::remove_file(&path)
            .await
            .map_err(|e| not_found_or(name, e))?;
        sync_dir(self.ready.clone()).await
    }
}

fn not_found_or(name: &str, e: io::Error) -> SpoolError {
    // ELOOP: a symbolic link opened with O_NOFOLLOW.
    if e.kind() == io::ErrorKind::NotFound
        || e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
    {
        SpoolError::NotFound { name: name.into() }
    } else {
        SpoolError::io(format!("cannot open {name:?}"))(e)
    }
}
