//! Crash-safe file writes shared by the PKI (keys, certificates), the
//! forwarding queue and the spool: write a temp file beside the target,
//! fsync it, rename it into place (optionally refusing to replace), then
//! fsync the directory so the rename itself survives a power cut. Also:
//! reserving a large file's blocks before it is written (`preallocate`),
//! streaming it to the disk while it is written ([`Writeback`]), and
//! handing files that root created back to the owner of their tree.

use std::io::{self, Write};
use std::path::Path;

/// Creates `dir` and its missing parents with `mode` (subject to the umask).
pub fn create_dir(dir: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
}

/// Whether [`write()`] may replace an existing file.
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
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Pushes a file that is being appended to out to the disk as it grows,
/// instead of leaving it all to the final fsync: each full window of
/// `WRITEBACK_WINDOW` bytes is handed to the disk at once, and the writer
/// waits for the window before it. That bounds the dirty page cache a big
/// upload builds up (on a Pi with 1 GiB of RAM, a gigabyte of dirty pages
/// would stall everything else, a running print's streaming included) and
/// leaves the final fsync only the last window or two to write.
///
/// Once a window is on the disk its pages leave the page cache (drop-behind):
/// the file is read only once more, to forward it, while a big upload would
/// otherwise push out the page cache of everything else on the Pi
/// (OctoPrint's own copy of the running print among it). It also keeps the
/// agent writing into the same few recycled megabytes of memory: on a VM
/// whose host takes freed memory back (free page reporting, as on the
/// development machine), a gigabyte written into fresh pages cost the agent
/// up to 2.7 CPU-seconds of the host's page faults (docs/performance.md).
/// Errors are ignored: this is a hint, the fsync at the end is the guarantee.
#[derive(Debug)]
pub struct Writeback {
    /// Start of the first window not handed to the disk yet.
    next: u64,
}

/// Window of [`Writeback`].
pub(crate) const WRITEBACK_WINDOW: u64 = 8 << 20;

impl Writeback {
    /// For a file that holds `len` bytes already (a resumed upload).
    pub fn new(len: u64) -> Writeback {
        Writeback {
            next: len - len % WRITEBACK_WINDOW,
        }
    }

    /// Call after appending: `file` now holds `len` bytes.
    pub(crate) fn advance(&mut self, file: &std::fs::File, len: u64) {
        while len - self.next >= WRITEBACK_WINDOW {
            start_writeback(file, self.next, self.next.checked_sub(WRITEBACK_WINDOW));
            self.next += WRITEBACK_WINDOW;
        }
    }
}

/// Starts writing `[start, start + WINDOW)` back, waits until
/// `[wait, wait + WINDOW)` is on the disk and drops that window from the
/// page cache.
#[cfg(target_os = "linux")]
fn start_writeback(file: &std::fs::File, start: u64, wait: Option<u64>) {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    let len = WRITEBACK_WINDOW as libc::off64_t;
    // SAFETY: sync_file_range only reads its integer arguments; `fd` is
    // open for the whole call because `file` is borrowed.
    unsafe {
        libc::sync_file_range(fd, start as libc::off64_t, len, libc::SYNC_FILE_RANGE_WRITE);
    }
    let Some(wait) = wait else {
        return;
    };
    // SAFETY: as above.
    unsafe {
        libc::sync_file_range(
            fd,
            wait as libc::off64_t,
            len,
            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER,
        );
    }
    // Clean pages only: a page written again since stays.
    let _ = rustix::fs::fadvise(
        file,
        wait,
        std::num::NonZeroU64::new(WRITEBACK_WINDOW),
        rustix::fs::Advice::DontNeed,
    );
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &std::fs::File, _start: u64, _wait: Option<u64>) {}

/// Reserves the disk blocks of `[from, to)` for `file` without changing
/// its length (`fallocate` with `FALLOC_FL_KEEP_SIZE`), so that the body
/// written there lands in one piece of the disk, its writes skip the
/// filesystem's block allocation (a tenth of an upload's kernel time on
/// ext4), and a disk that fills up while it is written fails whoever
/// fills it, not the upload that was promised the space.
///
/// Returns whether the blocks are reserved: `false` where the filesystem
/// cannot (the body is then written as usual); a full disk is an error
/// ([`io::ErrorKind::StorageFull`]).
#[cfg(target_os = "linux")]
pub(crate) fn preallocate(file: &std::fs::File, from: u64, to: u64) -> io::Result<bool> {
    if to <= from {
        return Ok(true);
    }
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::KEEP_SIZE, from, to - from) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::NOSYS) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn preallocate(_file: &std::fs::File, _from: u64, _to: u64) -> io::Result<bool> {
    Ok(false)
}

/// When running as root on a tree owned by another user (the packaged
/// agent's `/var/lib/fileagent`, owned by `fileagent`), gives everything
/// root created in it to that user, so `sudo fileagent client issue` or
/// `sudo fileagent init` never leave files the service cannot read. Does
/// nothing for other users or root-owned trees; symlinks are not followed.
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

/// A temp dir on the disk the build is on (under `target/`), not in `/tmp`,
/// which may be a tmpfs: there the page cache and block allocation behave
/// as on the Pi's ext4.
#[cfg(test)]
pub(crate) fn disk_tempdir() -> tempfile::TempDir {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target).unwrap();
    tempfile::tempdir_in(target).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writeback_hands_over_whole_windows_after_a_resumed_start() {
        let tmp = tempfile::tempdir().unwrap();
        let mut file = std::fs::File::create(tmp.path().join("w")).unwrap();
        let mut writeback = Writeback::new(WRITEBACK_WINDOW + 5);
        assert_eq!(writeback.next, WRITEBACK_WINDOW);
        writeback.advance(&file, 2 * WRITEBACK_WINDOW - 1);
        assert_eq!(writeback.next, WRITEBACK_WINDOW);
        file.write_all(&vec![7u8; 3 * WRITEBACK_WINDOW as usize])
            .unwrap();
        writeback.advance(&file, 3 * WRITEBACK_WINDOW);
        assert_eq!(writeback.next, 3 * WRITEBACK_WINDOW);
        file.sync_all().unwrap();
        assert_eq!(file.metadata().unwrap().len(), 3 * WRITEBACK_WINDOW);
    }

    /// How many of the pages of `file` in `[start, start + len)` are in
    /// the page cache (mincore over a mapping of that range).
    #[cfg(target_os = "linux")]
    fn resident_pages(file: &std::fs::File, start: u64, len: usize) -> usize {
        use std::os::fd::AsRawFd;
        let page = rustix::param::page_size();
        let mut vec = vec![0u8; len.div_ceil(page)];
        // SAFETY: a read-only shared mapping of a range the file holds,
        // only passed to mincore (never read through) and unmapped before
        // returning; `vec` has one byte per page of the range.
        unsafe {
            let addr = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                start as libc::off_t,
            );
            assert_ne!(addr, libc::MAP_FAILED, "{}", io::Error::last_os_error());
            let rc = libc::mincore(addr, len, vec.as_mut_ptr().cast());
            let error = io::Error::last_os_error();
            libc::munmap(addr, len);
            assert_eq!(rc, 0, "mincore: {error}");
        }
        vec.iter().filter(|&&b| b & 1 == 1).count()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn windows_on_the_disk_leave_the_page_cache() {
        // Not in /tmp: a tmpfs keeps its pages whatever the hint.
        let tmp = disk_tempdir();
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(tmp.path().join("w"))
            .unwrap();
        let window = WRITEBACK_WINDOW as usize;
        let mut writeback = Writeback::new(0);
        for i in 0..3 {
            file.write_all(&vec![i as u8 + 1; window]).unwrap();
            writeback.advance(&file, (i as u64 + 1) * WRITEBACK_WINDOW);
        }
        // The first window waited for (the first) is dropped; the second
        // is on its way to the disk and the third not yet: both still cached.
        assert_eq!(resident_pages(&file, 0, window), 0);
        let page = rustix::param::page_size();
        assert_eq!(
            resident_pages(&file, 2 * WRITEBACK_WINDOW, window),
            window / page
        );
        // What was dropped reads back from the disk intact.
        file.sync_all().unwrap();
        let back = std::fs::read(tmp.path().join("w")).unwrap();
        assert!(back[..window].iter().all(|&b| b == 1));
        assert!(back[2 * window..].iter().all(|&b| b == 3));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn preallocated_blocks_are_held_beyond_the_length_until_written() {
        use std::os::unix::fs::MetadataExt;
        let tmp = disk_tempdir();
        let mut file = std::fs::File::create(tmp.path().join("p")).unwrap();
        file.write_all(&[1; 4096]).unwrap();
        let size = 4 << 20;
        assert!(preallocate(&file, 4096, size).unwrap());
        let meta = file.metadata().unwrap();
        assert_eq!(meta.len(), 4096, "the length is the bytes written");
        assert!(meta.blocks() * 512 >= size, "{} blocks", meta.blocks());
        // Nothing to reserve is no error; the written bytes are untouched.
        assert!(preallocate(&file, size, size).unwrap());
        file.write_all(&[2; 4096]).unwrap();
        let back = std::fs::read(tmp.path().join("p")).unwrap();
        assert_eq!(back.len(), 8192);
        assert!(back[..4096].iter().all(|&b| b == 1) && back[4096..].iter().all(|&b| b == 2));
        // (A full disk: tests/it/diskfull.rs, on a tmpfs of its own.)
    }

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
