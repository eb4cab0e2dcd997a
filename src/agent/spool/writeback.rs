//! Writing a large body to the Pi's disk without hurting the print: its
//! blocks reserved before it is written ([`preallocate`]), and the file
//! streamed to the disk and out of the page cache while it grows
//! ([`Writeback`]). Linux calls (`fallocate`, `sync_file_range`,
//! `posix_fadvise`), as the agent is.

use std::io;

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

/// A temp dir on the disk the build is on (under `target/`), not in `/tmp`,
/// which may be a tmpfs: there the page cache and block allocation behave
/// as on the Pi's ext4.
#[cfg(test)]
pub(crate) fn disk_tempdir() -> tempfile::TempDir {
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target).unwrap();
    tempfile::tempdir_in(target).unwrap()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

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
}
