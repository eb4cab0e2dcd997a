//! The forwarder's durable record: every print file the agent has seen, in
//! order of arrival, with its state. Saved as JSON, atomically (temp file,
//! fsync, rename, directory fsync), after every change, so the queue and each
//! file's state survive a restart of the agent.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::policy::Bed;

/// What `list` says of a file from before forwarding ran, until it is
/// uploaded.
pub(crate) const BACKLOG_REASON: &str =
    "arrived while forwarding was off: uploaded when it is on, never started by itself";
use crate::durable::{self, Existing};

/// File name of the record inside the spool directory.
pub(crate) const QUEUE_FILE: &str = "queue.json";

/// Where a print file is on its way to the printer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileState {
    /// In `ready/`, waiting to be uploaded.
    Received,
    /// Being uploaded (after a crash: checked against OctoPrint, then redone).
    Uploading,
    /// In OctoPrint, not printing (waiting for a person or for the queue).
    Uploaded,
    /// OctoPrint is printing it.
    Printing,
    /// The print finished.
    Printed,
    /// OctoPrint lost the job before it ended (it restarted, or the printer
    /// disconnected): the print is probably not whole.
    Interrupted,
    /// Another job took the printer before this one's end was seen.
    Unknown,
    /// Gave up: see the reason.
    Failed,
    /// Not a print file (extension): stays in the spool, never uploaded.
    Skipped,
}

impl FileState {
    /// The state as shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            FileState::Received => "received",
            FileState::Uploading => "uploading",
            FileState::Uploaded => "uploaded",
            FileState::Printing => "printing",
            FileState::Printed => "printed",
            FileState::Interrupted => "interrupted",
            FileState::Unknown => "unknown",
            FileState::Failed => "failed",
            FileState::Skipped => "skipped",
        }
    }

    /// Whether the file is still in `ready/`: not forwarded (yet).
    pub(crate) fn in_ready(self) -> bool {
        matches!(
            self,
            FileState::Received | FileState::Uploading | FileState::Skipped
        )
    }
}

/// One print file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Arrival number, increasing.
    pub id: u64,
    /// File name in the spool.
    pub name: String,
    /// Hex SHA-256 of the content.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// CN of the client that sent it, if it came through fileagent.
    pub client: Option<String>,
    /// Current state.
    pub state: FileState,
    /// Why it failed or was skipped, or what it waits for.
    pub reason: Option<String>,
    /// The agent starts it when the printer is free (`queue = true`).
    #[serde(default)]
    pub queued: bool,
    /// An upload of it failed while the printer was not ready for it (busy,
    /// say, with the file it replaces): it never starts by itself later,
    /// when the bed may hold the print before it; only the queue or a
    /// person starts it.
    #[serde(default)]
    pub held: bool,
    /// It was in the spool before forwarding ran (held as well).
    #[serde(default)]
    pub backlog: bool,
    /// Sent with `--overwrite`: it may replace a different file of its name
    /// in OctoPrint.
    #[serde(default)]
    pub overwrite: bool,
    /// The sender's print choice: `Some(true)` "upload and print",
    /// `Some(false)` "upload only", `None` as `auto_print` says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub print: Option<bool>,
    /// Device and inode of its file in `ready/`, when the receiver stored
    /// it: a file renamed over it later (a newer version) is not it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inode: Option<(u64, u64)>,
    /// Path in OctoPrint's local storage, once uploaded.
    pub octoprint_path: Option<String>,
    /// When it arrived (Unix seconds).
    pub arrived: u64,
    /// Last state change (Unix seconds).
    pub updated: u64,
}

impl Entry {
    /// A new entry in `state` that arrived at `time` (Unix seconds), with
    /// nothing else known yet.
    fn arrived(
        id: u64,
        name: &str,
        sha256: &str,
        size: u64,
        client: Option<String>,
        state: FileState,
        time: u64,
    ) -> Entry {
        Entry {
            id,
            name: name.to_string(),
            sha256: sha256.to_string(),
            size,
            client,
            state,
            reason: None,
            queued: false,
            held: false,
            backlog: false,
            overwrite: false,
            print: None,
            inode: None,
            octoprint_path: None,
            arrived: time,
            updated: time,
        }
    }

    /// An entry for tests: arrived at 0, nothing but its id, name and state.
    #[cfg(test)]
    pub(super) fn for_test(id: u64, name: &str, state: FileState) -> Entry {
        Entry::arrived(id, name, &"00".repeat(32), 1, None, state, 0)
    }

    /// OctoPrint refused to take the file (it never had it): sending it
    /// again is a new try, not a duplicate.
    pub(crate) fn upload_refused(&self) -> bool {
        self.state == FileState::Failed && self.octoprint_path.is_none()
    }
}

/// The record of all entries, saved at `path`.
#[derive(Debug)]
pub struct Queue {
    path: PathBuf,
    next_id: u64,
    entries: Vec<Entry>,
    /// What is on the printer's bed.
    pub bed: Bed,
}

#[derive(Deserialize)]
struct OnDisk {
    next_id: u64,
    entries: Vec<Entry>,
    #[serde(default)]
    bed: Bed,
}

/// [`OnDisk`] for writing, without copying the entries.
#[derive(Serialize)]
struct OnDiskRef<'a> {
    next_id: u64,
    entries: &'a [Entry],
    bed: &'a Bed,
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Queue {
    /// Loads the record at `path`; a missing file is an empty record.
    pub fn load(path: &Path) -> io::Result<Queue> {
        let (next_id, entries, bed) = match std::fs::read(path) {
            Ok(bytes) => {
                let disk: OnDisk = serde_json::from_slice(&bytes).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{} is corrupt ({e}); move it away to start with an empty queue",
                            path.display()
                        ),
                    )
                })?;
                (disk.next_id, disk.entries, disk.bed)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (1, Vec::new(), Bed::default()),
            Err(e) => return Err(e),
        };
        Ok(Queue {
            path: path.to_path_buf(),
            next_id,
            entries,
            bed,
        })
    }

    /// Writes the record atomically.
    pub(crate) fn save(&self) -> io::Result<()> {
        let disk = OnDiskRef {
            next_id: self.next_id,
            entries: &self.entries,
            bed: &self.bed,
        };
        let json = serde_json::to_vec_pretty(&disk)?;
        durable::write(&self.path, &json, 0o600, Existing::Replace)
    }

    /// All entries in order of arrival (ids increase in order of
    /// registration: a file found late may have an earlier arrival).
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entry with this id.
    pub(crate) fn get_mut(&mut self, id: u64) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.id == id)
    }

    /// The entry for this name and content, if any.
    pub fn find(&self, name: &str, sha256: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| e.name == name && e.sha256 == sha256)
    }

    /// Adds a new entry in state `state`, arrived now; returns its id.
    #[cfg(test)]
    pub fn add(
        &mut self,
        name: &str,
        sha256: &str,
        size: u64,
        client: Option<String>,
        state: FileState,
    ) -> u64 {
        self.add_arrived(name, sha256, size, client, state, now())
    }

    /// Adds a new entry in state `state` that arrived at `time` (Unix
    /// seconds); returns its id.
    pub(crate) fn add_arrived(
        &mut self,
        name: &str,
        sha256: &str,
        size: u64,
        client: Option<String>,
        state: FileState,
        time: u64,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        // In order of arrival: a file found late that arrived long ago
        // (a backlog) goes before those that came after it.
        let at = self.entries.partition_point(|e| e.arrived <= time);
        self.entries.insert(
            at,
            Entry::arrived(id, name, sha256, size, client, state, time),
        );
        id
    }

    /// Adds a file that was in the spool before forwarding ran: held, it
    /// never starts by itself; returns its id.
    pub(crate) fn add_backlog(
        &mut self,
        name: &str,
        sha256: &str,
        size: u64,
        client: Option<String>,
        time: u64,
    ) -> u64 {
        let id = self.add_arrived(name, sha256, size, client, FileState::Received, time);
        if let Some(entry) = self.get_mut(id) {
            entry.held = true;
            entry.backlog = true;
            entry.reason = Some(BACKLOG_REASON.into());
        }
        id
    }

    /// Changes an entry's state and reason.
    pub fn set(&mut self, id: u64, state: FileState, reason: Option<String>) {
        if let Some(entry) = self.get_mut(id) {
            entry.state = state;
            entry.reason = reason;
            entry.updated = now();
        }
    }

    /// Removes entries for which `drop` is true; returns them.
    pub(crate) fn remove_where(&mut self, mut drop: impl FnMut(&Entry) -> bool) -> Vec<Entry> {
        let (gone, kept) = std::mem::take(&mut self.entries)
            .into_iter()
            .partition(|e| drop(e));
        self.entries = kept;
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_survives_a_reload() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(QUEUE_FILE);
        let mut queue = Queue::load(&path).unwrap();
        let a = queue.add(
            "a.gcode",
            "aa",
            1,
            Some("alice".into()),
            FileState::Received,
        );
        let b = queue.add("b.gcode", "bb", 2, None, FileState::Received);
        queue.set(a, FileState::Printing, None);
        queue.save().unwrap();
        let mut again = Queue::load(&path).unwrap();
        assert_eq!(again.entries(), queue.entries());
        let c = again.add("c.gcode", "cc", 3, None, FileState::Received);
        assert!(c > b, "ids keep increasing across reloads");
        assert_eq!(
            again.find("a.gcode", "aa").unwrap().state,
            FileState::Printing
        );
        assert!(again.find("a.gcode", "zz").is_none());
        let gone = again.remove_where(|e| e.name == "b.gcode");
        assert_eq!(gone.len(), 1);
        assert_eq!(again.entries().len(), 2);
    }

    #[test]
    fn a_corrupt_record_is_reported_with_advice() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(QUEUE_FILE);
        std::fs::write(&path, "{not json").unwrap();
        let err = Queue::load(&path).unwrap_err();
        assert!(err.to_string().contains("move it away"), "{err}");
    }
}
