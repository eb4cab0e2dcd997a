//! Watches `ready/` for files that other tools (Samba, scp, cp) put there and
//! reports each one once it is complete.
//!
//! A file counts as complete when it was closed after writing, renamed into
//! the folder, or found by a scan (at start-up and every `rescan_interval`,
//! the safety net for missed inotify events), and its size and modification
//! time then stayed the same for `settle_time`. Hidden and temporary names
//! are ignored (the spool's name rule). A file is reported again only if it
//! changes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind, RenameMode};
use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::agent::spool::validate_name;

/// A complete file in `ready/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appeared {
    /// File name.
    pub name: String,
    /// Size when it settled.
    pub size: u64,
    /// Modification time when it settled.
    pub modified: SystemTime,
}

/// What is known of a file that is not yet reported.
#[derive(Debug)]
struct Pending {
    /// Closed after writing, renamed in, or found by a scan.
    closed: bool,
    /// (size, mtime) at the last look.
    seen: Option<(u64, SystemTime)>,
    /// When it last changed.
    changed: Instant,
}

/// The watcher's bookkeeping, separate from inotify so it can be tested.
#[derive(Debug)]
pub struct Settler {
    dir: PathBuf,
    settle: Duration,
    pending: HashMap<String, Pending>,
    reported: HashMap<String, (u64, SystemTime)>,
}

impl Settler {
    /// Bookkeeping for `dir` with the given settle time.
    pub fn new(dir: &Path, settle: Duration) -> Settler {
        Settler {
            dir: dir.to_path_buf(),
            settle,
            pending: HashMap::new(),
            reported: HashMap::new(),
        }
    }

    /// A file was written to (still open, maybe).
    pub fn written(&mut self, name: &str, now: Instant) {
        self.touch(name, false, now);
    }

    /// A file was closed after writing or renamed into the folder.
    pub(crate) fn completed(&mut self, name: &str, now: Instant) {
        self.touch(name, true, now);
    }

    fn touch(&mut self, name: &str, closed: bool, now: Instant) {
        if validate_name(name).is_err() {
            return;
        }
        let entry = self.pending.entry(name.to_string()).or_insert(Pending {
            closed,
            seen: None,
            changed: now,
        });
        entry.closed = closed;
        entry.changed = now;
    }

    /// A file disappeared.
    pub fn removed(&mut self, name: &str) {
        self.pending.remove(name);
        self.reported.remove(name);
    }

    /// Treats every file in the folder as closed, unless already reported
    /// unchanged or being written.
    pub(crate) fn scan(&mut self, now: Instant) {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in dir.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if self.pending.contains_key(&name) || validate_name(&name).is_err() {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            let stamp = (
                meta.len(),
                meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            );
            if meta.is_file() && self.reported.get(&name) != Some(&stamp) {
                self.completed(&name, now);
            }
        }
    }

    /// Files that are complete now.
    pub fn settled(&mut self, now: Instant) -> Vec<Appeared> {
        let mut done = Vec::new();
        for (name, pending) in self.pending.iter_mut() {
            if !pending.closed || now.duration_since(pending.changed) < self.settle {
                continue;
            }
            let meta = match std::fs::symlink_metadata(self.dir.join(name)) {
                Ok(meta) if meta.is_file() => meta,
                _ => {
                    done.push((name.clone(), None));
                    continue;
                }
            };
            let stamp = (
                meta.len(),
                meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            );
            if pending.seen == Some(stamp) {
                done.push((name.clone(), Some(stamp)));
            } else {
                // First look, or it changed since: wait another settle time.
                pending.seen = Some(stamp);
                pending.changed = now;
            }
        }
        let mut appeared = Vec::new();
        for (name, stamp) in done {
            self.pending.remove(&name);
            if let Some((size, modified)) = stamp
                && self.reported.insert(name.clone(), (size, modified)) != Some((size, modified))
            {
                appeared.push(Appeared {
                    name,
                    size,
                    modified,
                });
            }
        }
        appeared
    }

    /// Records a file the agent put in place itself, so it is not reported.
    pub fn known(&mut self, name: &str) {
        if let Ok(meta) = std::fs::metadata(self.dir.join(name)) {
            let stamp = (
                meta.len(),
                meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            );
            self.reported.insert(name.to_string(), stamp);
            self.pending.remove(name);
        }
    }

    /// How long until the next pending file may settle.
    pub(crate) fn next_check(&self, now: Instant) -> Option<Duration> {
        self.pending
            .values()
            .filter(|p| p.closed)
            .map(|p| (p.changed + self.settle).saturating_duration_since(now))
            .min()
    }
}

/// What the inotify thread reports.
#[derive(Debug)]
pub enum Change {
    /// Data was written.
    Written(String),
    /// Closed after writing, or renamed in.
    Completed(String),
    /// Removed or renamed away.
    Removed(String),
}

/// Starts an inotify watch on `dir`; changes arrive on the returned channel.
/// The watcher must be kept alive for as long as changes are wanted.
pub fn start(
    dir: &Path,
) -> notify::Result<(notify::RecommendedWatcher, mpsc::UnboundedReceiver<Change>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                warn!(error = %e, "file watch error; the periodic rescan covers it");
                return;
            }
        };
        let name_of = |path: &PathBuf| path.file_name().and_then(|n| n.to_str()).map(str::to_owned);
        for (i, path) in event.paths.iter().enumerate() {
            let Some(name) = name_of(path) else { continue };
            let change = match event.kind {
                EventKind::Access(AccessKind::Close(AccessMode::Write)) => Change::Completed(name),
                EventKind::Modify(ModifyKind::Name(RenameMode::To)) => Change::Completed(name),
                // A rename within the folder: the old name goes, the new one is complete.
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)) if i == 1 => {
                    Change::Completed(name)
                }
                EventKind::Modify(ModifyKind::Name(_)) | EventKind::Remove(_) => {
                    Change::Removed(name)
                }
                // chmod, utime (Samba sets times after closing): not a write;
                // the size and mtime check at settling covers real changes.
                EventKind::Modify(ModifyKind::Metadata(_)) => continue,
                EventKind::Create(CreateKind::File | CreateKind::Any) | EventKind::Modify(_) => {
                    Change::Written(name)
                }
                _ => continue,
            };
            debug!(?change, "spool change");
            let _ = tx.send(change);
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok((watcher, rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTLE: Duration = Duration::from_secs(2);

    #[test]
    fn a_closed_file_settles_after_two_equal_looks() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("a.gcode"), b"G28\n").unwrap();
        let mut s = Settler::new(tmp.path(), SETTLE);
        let t0 = Instant::now();
        s.completed("a.gcode", t0);
        assert!(s.settled(t0).is_empty(), "too early");
        assert!(
            s.settled(t0 + SETTLE).is_empty(),
            "first look records the size"
        );
        let appeared = s.settled(t0 + 2 * SETTLE);
        assert_eq!(appeared.len(), 1);
        assert_eq!(
            (appeared[0].name.as_str(), appeared[0].size),
            ("a.gcode", 4)
        );
        // Reported once; a scan does not bring it back.
        s.scan(t0 + 3 * SETTLE);
        assert!(s.settled(t0 + 6 * SETTLE).is_empty());
    }

    #[test]
    fn a_file_still_open_or_still_growing_waits() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("b.gcode");
        std::fs::write(&path, b"G28\n").unwrap();
        let mut s = Settler::new(tmp.path(), SETTLE);
        let t0 = Instant::now();
        s.written("b.gcode", t0);
        assert!(s.settled(t0 + 10 * SETTLE).is_empty(), "never closed");
        s.completed("b.gcode", t0);
        assert!(s.settled(t0 + SETTLE).is_empty());
        std::fs::write(&path, b"G28\nG1 X1\n").unwrap();
        assert!(
            s.settled(t0 + 2 * SETTLE).is_empty(),
            "size changed since the first look"
        );
        assert_eq!(s.settled(t0 + 3 * SETTLE).len(), 1);
    }

    #[test]
    fn hidden_temp_removed_and_known_files_are_not_reported() {
        let tmp = tempfile::tempdir().unwrap();
        for name in [
            ".hidden.gcode",
            "up.gcode.part",
            "x.tmp",
            "y~",
            "mine.gcode",
            "gone.gcode",
        ] {
            std::fs::write(tmp.path().join(name), b"x").unwrap();
        }
        let mut s = Settler::new(tmp.path(), SETTLE);
        s.known("mine.gcode");
        let t0 = Instant::now();
        s.scan(t0);
        std::fs::remove_file(tmp.path().join("gone.gcode")).unwrap();
        s.settled(t0 + SETTLE);
        assert!(s.settled(t0 + 2 * SETTLE).is_empty());
        assert_eq!(s.next_check(t0), None);
    }
}
