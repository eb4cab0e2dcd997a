//! What sessions see of the forwarder ([`View`]): every known file with
//! its state and why it waits (said live, from the bed and the order rule),
//! what `status` says of the bed, which names forwarded files take, and
//! the printer as `watch` reports it. [`Published`] holds the view and
//! tells watchers when it changed.

use std::sync::Mutex;

use tokio::sync::watch;

use super::policy::{self, Bed, Policy};
use super::printer::PrinterState;
use super::queue::{self, Entry, FileState};
use crate::wire::protocol::{FileEntry, PrinterReport, Watched};

/// The forwarder's view, shared with sessions: updated by the forwarder,
/// read by sessions, and every update wakes those that `watch`.
#[derive(Debug)]
pub(crate) struct Published {
    view: Mutex<View>,
    changed: watch::Sender<()>,
}

impl Published {
    pub(crate) fn new(view: View) -> Published {
        Published {
            view: Mutex::new(view),
            changed: watch::Sender::new(()),
        }
    }

    /// Changes the view and tells the watchers.
    pub(crate) fn update(&self, change: impl FnOnce(&mut View)) {
        if let Ok(mut view) = self.view.lock() {
            change(&mut view);
        }
        self.changed.send_replace(());
    }

    /// A copy of the view as it is now.
    pub(crate) fn snapshot(&self) -> View {
        self.view.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Reads the view without copying it.
    pub(crate) fn read<R>(&self, read: impl FnOnce(&View) -> R) -> Option<R> {
        self.view.lock().ok().map(|v| read(&v))
    }

    /// Wakes on every later [`Published::update`].
    pub(crate) fn subscribe(&self) -> watch::Receiver<()> {
        self.changed.subscribe()
    }
}

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
    /// The printer's state at the last poll (`None`: not read yet, or
    /// OctoPrint is not usable).
    pub printer_state: Option<PrinterState>,
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

    /// What `watch` reports: the printer, the queue, the bed and, if
    /// named, one file's row.
    pub(crate) fn watched(&self, name: Option<&str>) -> Watched {
        let file = name.and_then(|name| {
            self.listing(Vec::new())
                .into_iter()
                .find(|f| f.name == name)
        });
        Watched {
            printer: self.report(),
            queued: self.queued(),
            bed: self.bed_text(),
            file,
        }
    }

    /// The printer as `watch` reports it.
    pub(crate) fn report(&self) -> PrinterReport {
        let Some(state) = self.printer_state.as_ref().filter(|_| self.enabled) else {
            return PrinterReport {
                text: self.printer.clone(),
                ..PrinterReport::default()
            };
        };
        PrinterReport {
            text: state.text.clone(),
            connected: state.operational,
            flags: state.flags.clone(),
            job: state.job_path.clone(),
            completion: state.completion,
            print_time: state.print_time,
            print_time_left: state.print_time_left,
            temperatures: state.temperatures.clone(),
        }
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
