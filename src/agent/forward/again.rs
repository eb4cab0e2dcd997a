//! "Print it again": a sender asks to print a file the agent has already
//! forwarded (the identical content, sent with `print`: a slicer's "Upload
//! and Print" of the same part once more). The file goes back in line as
//! one sent to print, and starts by the same rules: the printer idle, the
//! bed clear, no older file waiting, `remote_start` on. Otherwise it waits,
//! and `list` (and a sender's `watch`) says why, rather than showing the
//! last print's "printed" as if it were this one.

use tracing::{info, warn};

use super::forwarder::Forwarder;
use super::policy::{self, Policy};
use super::printer::{PrinterError, PrinterState};
use super::queue::FileState;

impl Forwarder {
    /// Entry `id`, known already, was sent again to be printed.
    pub(super) fn asked_again(&mut self, id: u64) {
        let Some(entry) = self.queue.get_mut(id) else {
            return;
        };
        match entry.state {
            // Not uploaded yet: it starts by the rules once it is.
            FileState::Received | FileState::Uploading => {
                entry.print = Some(true);
                self.save();
            }
            // Printing it now already, or no print file.
            FileState::Printing | FileState::Skipped => {}
            // In OctoPrint: back in line at the next look (in one step, so
            // that nobody sees it "uploaded" before the rules have spoken).
            _ if entry.octoprint_path.is_some() => {
                self.again = Some(id);
                self.next_poll = std::time::Instant::now();
            }
            _ => {}
        }
    }

    /// Puts the entry sent again back in line, and starts it if the rules
    /// allow it now; else it waits, and `list` says why.
    pub(super) async fn start_again(&mut self, state: &PrinterState) {
        let Some(id) = self.again.take() else {
            return;
        };
        let Some(entry) = self.queue.get_mut(id) else {
            return;
        };
        entry.print = Some(true);
        entry.held = false;
        entry.queued = false;
        let (name, path) = (entry.name.clone(), entry.octoprint_path.clone());
        self.queue.set(id, FileState::Uploaded, None);
        info!(file_name = %name, "sent again to print");
        let rules = Policy::of(self.config.printer());
        let entries = self.queue.entries();
        let allowed = policy::starts_by_itself(entries, id, rules, &self.queue.bed, state);
        if let (Some(path), true) = (path, allowed) {
            match self.printer.print(&path).await {
                Ok(()) => {
                    info!(file_name = %name, path = %path, "printing again");
                    self.mark_printing(id);
                    // Running now: its end is a print ending.
                    self.was_busy = Some(true);
                }
                Err(PrinterError::Conflict { message: why, .. }) => {
                    info!(file_name = %name, reason = %why, "the printer did not take it again");
                    let reason = format!("the printer did not take it: {why}");
                    self.queue.set(id, FileState::Uploaded, Some(reason));
                }
                Err(e) if e.is_transient() => self.trouble(e),
                Err(e) => {
                    warn!(file_name = %name, error = %e, "the print server cannot print it again");
                    self.queue.set(id, FileState::Failed, Some(e.to_string()));
                }
            }
        }
        self.save();
    }
}
