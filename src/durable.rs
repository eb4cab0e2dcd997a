//! Crash-safe file writes shared by the PKI (keys, certificates), the
//! forwarding queue and the spool: write a temp file beside the target,
//! fsync it, rename it into place (optionally refusing to replace), then
//! fsync the directory so the rename itself survives a power cut.

use std::io::{self, Write};
use std::path::Path;

/// Whether [`write`] may replace an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Fail with `AlreadyExists` if the target exists (keys are never overwritten).
    Keep,
    /// Replace the target atomically.
    Replace,
}

/// Atomically writes `contents` to `path` with `mode`.
pub fn write(path: &Path, contents: &[u8], mode: u32, existing: Existing) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(dir)?;
    temp.write_all(contents)?;
    temp.as_file().sync_all()?;
    match existing {
        Existing::Keep => temp.persist_noclobber(path),
        Existing::Replace => temp.persist(path),
    }
    .map_err(|e| e.error)?;
    sync_dir(dir)
}

/// Fsyncs a directory, making renames and removals in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keep_never_overwrites_and_replace_does() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("k");
        write(&path, b"one", 0o600, Existing::Keep).unwrap();
        let err = write(&path, b"two", 0o600, Existing::Keep).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        write(&path, b"three", 0o644, Existing::Replace).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"three");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            1,
            "no temp files left"
        );
    }
}
