//! Crash-safe file writes shared by both sides (the agent's keys, queue and
//! spool; the workstation's identity files and client.toml): write a temp
//! file beside the target, fsync it, rename it into place (optionally
//! refusing to replace), then fsync the directory so the rename itself
//! survives a power cut. Also: handing files that root created back to the
//! owner of their tree (Unix).
//!
//! Portable: on Windows, modes do not apply (a file under the user's
//! profile, as `%APPDATA%` is, inherits its ACL: the user, SYSTEM and
//! Administrators only), and a directory cannot be opened to be fsynced
//! (NTFS journals the rename itself), so `sync_dir` does nothing there.

use std::io::{self, Write};
use std::path::Path;

/// Creates `dir` and its missing parents with `mode` (subject to the umask;
/// on Windows the directory inherits its parent's ACL).
pub fn create_dir(dir: &Path, mode: u32) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, mode);
    #[cfg(not(unix))]
    let _ = mode;
    builder.create(dir)
}

/// Whether [`write()`] may replace an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Fail with `AlreadyExists` if the target exists (keys are never overwritten).
    Keep,
    /// Replace the target atomically.
    Replace,
}

/// Atomically writes `contents` to `path` with `mode` (on Windows, with the
/// directory's ACL).
pub fn write(path: &Path, contents: &[u8], mode: u32, existing: Existing) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut builder = tempfile::Builder::new();
    builder.prefix(".tmp-");
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(mode));
    #[cfg(not(unix))]
    let _ = mode;
    let mut temp = builder.tempfile_in(dir)?;
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
#[cfg(unix)]
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Windows cannot open a directory as a file to flush it; NTFS journals
/// the rename itself.
#[cfg(not(unix))]
pub(crate) fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// When running as root on a tree owned by another user (the packaged
/// agent's `/var/lib/fileagent`, owned by `fileagent`), gives everything
/// root created in it to that user, so `sudo fileagent client issue` or
/// `sudo fileagent init` never leave files the service cannot read. Does
/// nothing for other users or root-owned trees; symlinks are not followed.
#[cfg(target_os = "linux")]
pub(crate) fn adopt_owner(root: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if !rustix::process::geteuid().is_root() {
        return Ok(());
    }
    let owner = match std::fs::symlink_metadata(root) {
        Ok(meta) if meta.is_dir() && meta.uid() != 0 => meta,
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let meta = std::fs::symlink_metadata(&path)?;
            if meta.uid() == 0 {
                std::os::unix::fs::lchown(&path, Some(owner.uid()), Some(owner.gid()))?;
            }
            if meta.is_dir() {
                pending.push(path);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[cfg(unix)]
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

    #[test]
    #[cfg(target_os = "linux")]
    fn root_gives_what_it_created_to_the_owner_of_the_tree() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let tree = tmp.path().join("state");
        std::fs::create_dir_all(tree.join("clients")).unwrap();
        std::fs::write(tree.join("clients/a.crt"), b"x").unwrap();
        let me = std::fs::metadata(&tree).unwrap().uid();
        adopt_owner(&tree).unwrap();
        if me != 0 {
            // Not root: nothing to adopt, nothing changed.
            assert_eq!(
                std::fs::metadata(tree.join("clients/a.crt")).unwrap().uid(),
                me
            );
            return;
        }
        // Root-owned tree: left alone.
        assert_eq!(std::fs::metadata(tree.join("clients")).unwrap().uid(), 0);
        std::os::unix::fs::chown(&tree, Some(65534), Some(65534)).unwrap();
        adopt_owner(&tree).unwrap();
        for path in [tree.join("clients"), tree.join("clients/a.crt")] {
            let meta = std::fs::metadata(&path).unwrap();
            assert_eq!(
                (meta.uid(), meta.gid()),
                (65534, 65534),
                "{}",
                path.display()
            );
        }
    }
}
