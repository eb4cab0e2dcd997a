//! Interrupted uploads kept for resuming. The body of an upload that offered
//! to resume is written to `incoming/<sha256>-<size>.partial`, named by the
//! whole file's digest and size, not by its name. If the connection drops
//! (or the agent is restarted or killed) the file stays, and sending the
//! same file again continues after the bytes it holds: they are hashed
//! again first, and the whole-file SHA-256 is still checked at the end, so
//! a partial file damaged by a power cut is found out and dropped, never
//! stored. Partial files older than `keep_partial_uploads` are removed.
//! One upload at a time writes a given partial file ([`Busy`]); another
//! sender of the same content meanwhile gets a fresh temp file.

use std::collections::HashSet;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::SpoolError;
use crate::wire::digest::hash_into;

/// Sweeps of expired partial files per `keep_partial` period, so that none
/// outlives its time by more than a quarter of it.
pub(crate) const SWEEPS_PER_KEEP: u32 = 4;
/// Shortest time between two sweeps of expired partial files.
pub(crate) const SWEEP_INTERVAL_MIN: Duration = Duration::from_secs(1);
/// Longest time between two sweeps of expired partial files.
pub(crate) const SWEEP_INTERVAL_MAX: Duration = Duration::from_secs(3600);
/// File name suffix of partial uploads in `incoming/`.
pub(crate) const PARTIAL_SUFFIX: &str = ".partial";

/// `<sha256>-<size>.partial`, or `None` if `sha256` is not 64 hex digits.
pub(super) fn partial_name(sha256: &str, size: u64) -> Option<String> {
    let valid = sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit());
    valid.then(|| format!("{}-{size}{PARTIAL_SUFFIX}", sha256.to_ascii_lowercase()))
}

/// The partial files being written right now.
#[derive(Debug, Default)]
pub(super) struct Busy(Mutex<HashSet<String>>);

/// The right to write one partial file; released when dropped.
#[derive(Debug)]
pub(super) struct Claim {
    busy: Arc<Busy>,
    name: String,
}

impl Busy {
    /// Claims `name`, unless another upload holds it.
    pub(super) fn claim(self: &Arc<Self>, name: &str) -> Option<Claim> {
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        set.insert(name.to_string()).then(|| Claim {
            busy: self.clone(),
            name: name.to_string(),
        })
    }

    /// How many partial files are being written.
    pub(super) fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn is_busy(&self, name: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut set = self.busy.0.lock().unwrap_or_else(|e| e.into_inner());
        set.remove(&self.name);
    }
}

/// Removes from `incoming/` the partial files not written for `keep` (and
/// not being written now), and, when `all_temp` (at start, when no upload
/// runs), every other leftover. Returns how many entries it removed.
pub(super) fn sweep(
    incoming: &Path,
    keep: Duration,
    busy: &Busy,
    all_temp: bool,
) -> io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(incoming)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale = if name.ends_with(PARTIAL_SUFFIX) {
            let idle = entry.metadata()?.modified()?.elapsed().unwrap_or_default();
            (idle >= keep || keep.is_zero()) && !busy.is_busy(&name)
        } else {
            all_temp
        };
        if !stale {
            continue;
        }
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
        removed += 1;
    }
    Ok(removed)
}

/// The disk space the partial file at `path` already takes for a body of
/// `size`: its bytes, and the blocks reserved for the rest when it was
/// first written (none if it is missing, or longer than `size` and so to
/// be emptied).
pub(super) async fn space_held(path: &Path, size: u64) -> u64 {
    use std::os::unix::fs::MetadataExt;
    match tokio::fs::metadata(path).await {
        Ok(meta) if meta.len() <= size => meta.len().max(meta.blocks() * 512).min(size),
        _ => 0,
    }
}

/// Opens (or creates) the partial file at `path` for a body of `size`:
/// returns it positioned at its end, how many bytes it holds, and the
/// SHA-256 state over them. A partial file longer than `size` is emptied.
pub(super) async fn open_partial(
    path: PathBuf,
    size: u64,
) -> Result<(std::fs::File, u64, Sha256), SpoolError> {
    tokio::task::spawn_blocking(move || -> io::Result<_> {
        use std::io::Seek;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::File::options()
            .mode(0o600)
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let mut held = file.metadata()?.len();
        if held > size {
            file.set_len(0)?;
            held = 0;
        }
        let mut hasher = Sha256::new();
        if hash_into(&mut hasher, (&mut file).take(held))? < held {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        file.seek(io::SeekFrom::Start(held))?;
        Ok((file, held, hasher))
    })
    .await
    .map_err(|e| SpoolError::io("opening a partial upload")(io::Error::other(e)))?
    .map_err(SpoolError::io(
        "cannot open the partial upload in incoming/",
    ))
}

impl super::Spool {
    /// Removes the partial files in `incoming/` that were not written for
    /// longer than they are kept (all of them with resuming off), except
    /// those being written now; returns how many it removed.
    pub(crate) async fn sweep_expired(&self) -> io::Result<usize> {
        let (incoming, keep, busy) = (
            self.incoming.clone(),
            self.limits.keep_partial,
            self.busy.clone(),
        );
        tokio::task::spawn_blocking(move || sweep(&incoming, keep, &busy, false))
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e)))
    }

    /// How often [`sweep_expired`](super::Spool::sweep_expired) should run so that
    /// no partial file outlives its time by much: that time over
    /// [`SWEEPS_PER_KEEP`], within
    /// [`SWEEP_INTERVAL_MIN`]..=[`SWEEP_INTERVAL_MAX`].
    pub(crate) fn sweep_interval(&self) -> Duration {
        let keep = self.limits.keep_partial;
        if keep.is_zero() {
            // Nothing new is kept; only what an earlier config left.
            return SWEEP_INTERVAL_MAX;
        }
        (keep / SWEEPS_PER_KEEP).clamp(SWEEP_INTERVAL_MIN, SWEEP_INTERVAL_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_need_a_real_digest() {
        let d = "AB".repeat(32);
        assert_eq!(
            partial_name(&d, 7).unwrap(),
            format!("{}-7.partial", "ab".repeat(32))
        );
        assert_eq!(partial_name("ab", 7), None);
        assert_eq!(partial_name(&"zz".repeat(32), 7), None);
        assert_eq!(partial_name(&format!("../{}", "a".repeat(61)), 7), None);
    }

    #[test]
    fn one_writer_per_partial_file() {
        let busy = Arc::new(Busy::default());
        let claim = busy.claim("x").unwrap();
        assert!(busy.claim("x").is_none());
        assert!(busy.claim("y").is_some());
        drop(claim);
        assert!(busy.claim("x").is_some());
    }

    #[test]
    fn sweeping_keeps_fresh_and_busy_partials() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        for name in ["a.partial", "b.partial", "upload-1.part"] {
            std::fs::write(dir.join(name), b"x").unwrap();
        }
        let busy = Arc::new(Busy::default());
        let hour = Duration::from_secs(3600);
        // Running: temp files belong to live uploads.
        assert_eq!(sweep(dir, hour, &busy, false).unwrap(), 0);
        // At start: leftovers go, fresh partials stay.
        assert_eq!(sweep(dir, hour, &busy, true).unwrap(), 1);
        let old = std::time::SystemTime::now() - 2 * hour;
        for name in ["a.partial", "b.partial"] {
            std::fs::File::options()
                .write(true)
                .open(dir.join(name))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        let _claim = busy.claim("b.partial").unwrap();
        assert_eq!(sweep(dir, hour, &busy, false).unwrap(), 1);
        assert!(dir.join("b.partial").exists() && !dir.join("a.partial").exists());
        // keep = 0: resuming is off, nothing is kept.
        drop(_claim);
        std::fs::write(dir.join("c.partial"), b"x").unwrap();
        assert_eq!(sweep(dir, Duration::ZERO, &busy, true).unwrap(), 2);
    }

    const LIMITS: super::super::Limits = super::super::Limits {
        max_file_size: 1 << 20,
        min_free_space: 0,
        keep_partial: Duration::from_secs(3600),
    };

    #[test]
    fn partial_files_are_swept_every_quarter_of_their_keep_time_within_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = super::super::Spool::open(dir.path(), LIMITS).unwrap();
        let every = |keep: u64| {
            spool
                .with_limits(super::super::Limits {
                    keep_partial: Duration::from_secs(keep),
                    ..LIMITS
                })
                .sweep_interval()
        };
        assert_eq!(every(20), Duration::from_secs(5));
        assert_eq!(every(2), SWEEP_INTERVAL_MIN);
        assert_eq!(every(24 * 3600), SWEEP_INTERVAL_MAX);
        assert_eq!(every(0), SWEEP_INTERVAL_MAX);
    }
}
