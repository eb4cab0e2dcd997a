//! What sessions see of the forwarder ([`View`]): every known file with
//! its state and why it waits (said live, from the bed and the order rule),
//! what `status` says of the bed, and which names forwarded files take.

use super::policy::{self, Bed, Policy};
use super::queue::{self, Entry, FileState};
use crate::wire::protocol::FileEntry;

/// What sessions can see of the forwarder.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Forwarding runs.
    pub enabled: bool,
    /// Printer state text, or why forwarding is off or failing.
    pub printer: String,
    /// Every known print file, in order of arrival.
    pub entries: Vec<Entry>,
    /// What is on the bed.
    pub bed: Bed,
    /// The print settings in force (`None` while forwarding is off).
    pub policy: Option<Policy>,
    /// The printer is running a job.
    pub printer_busy: bool,
}

/// A forwarded file of a name, as [`View::holds`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Its SHA-256.
    pub sha256: String,
    /// Its state (`uploaded`, `printing`, ...).
    pub state: &'static str,
}

impl View {
    /// The spool listing with forwarding states: files in `ready/` that the
    /// forwarder has not taken up (settling, or forwarding off) first, by
    /// name, then every known print file in order of arrival, one row per
    /// name (its newest version), each waiting one saying why.
    pub fn listing(&self, ready: Vec<FileEntry>) -> Vec<FileEntry> {
        let mut files: Vec<FileEntry> = ready
            .into_iter()
            .filter(|f| {
                !self
                    .entries
                    .iter()
                    .any(|e| e.name == f.name && e.state.in_ready())
            })
            .collect();
        let now = queue::now();
        let newest = |i: usize| {
            let name = &self.entries[i].name;
            !self.entries[i + 1..].iter().any(|e| &e.name == name)
        };
        files.extend((0..self.entries.len()).filter(|&i| newest(i)).map(|i| {
            let e = &self.entries[i];
            let why = self.policy.and_then(|policy| {
                policy::why_waiting(&self.entries, i, policy, &self.bed, self.printer_busy, now)
            });
            FileEntry {
                name: e.name.clone(),
                size: e.size,
                modified: e.updated,
                state: Some(e.state.as_str().to_string()),
                reason: why.or_else(|| e.reason.clone()),
            }
        }));
        files
    }

    /// The forwarded file of this name that the agent or OctoPrint holds
    /// (its newest version), if any: such a name is taken.
    pub fn holds(&self, name: &str) -> Option<Held> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.name == name && !e.state.in_ready() && !e.upload_refused())
            .map(|e| Held {
                sha256: e.sha256.clone(),
                state: e.state.as_str(),
            })
    }

    /// What `status` says of the bed while files wait for a person, e.g.
    /// "the last print (cube.gcode) ended 3 min ago: nothing starts by
    /// itself until a person clears the bed and starts a file (fileagent
    /// print)".
    pub(crate) fn bed_text(&self) -> Option<String> {
        let policy = self.policy?;
        if policy.queue || self.printer_busy {
            return None;
        }
        let occupied = self.bed.occupied.as_ref()?;
        Some(format!(
            "{}: nothing starts by itself until a person clears the bed and starts a file (fileagent print)",
            occupied.describe(queue::now())
        ))
    }

    /// Files waiting to be uploaded or printed: by the agent, or by a
    /// person (uploaded files that print only once started).
    pub fn queued(&self) -> u64 {
        let prints = self
            .policy
            .is_none_or(|p| p.auto_print != crate::agent::config::AutoPrint::Never);
        self.entries
            .iter()
            .filter(|e| match e.state {
                FileState::Received | FileState::Uploading => true,
                FileState::Uploaded => e.queued || prints,
                _ => false,
            })
            .count() as u64
    }
}
