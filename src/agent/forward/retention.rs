//! What leaves the spool and the queue: entries of files deleted from
//! `ready/` before they were forwarded, forwarded files deleted on request
//! (`delete`: the agent's copy; OctoPrint keeps its own), and forwarded
//! files and records older than `keep_done`.

use tracing::info;

use super::Forget;
use super::forwarder::Forwarder;
use super::queue::{self, Entry, FileState};

impl Forwarder {
    /// Entries of files deleted from `ready/` while the agent was not
    /// watching go, as [`removed`](Self::removed) does for each.
    pub(super) fn removed_while_stopped(&mut self) {
        let waiting: Vec<String> = (self.queue.entries().iter())
            .filter(|e| e.state.in_ready())
            .map(|e| e.name.clone())
            .collect();
        for name in waiting {
            self.removed(&name);
        }
    }

    /// A file left `ready/` (deleted, or moved away by another tool): an
    /// entry still waiting for it goes, so `list` shows no ghost.
    pub(super) fn removed(&mut self, name: &str) {
        if self.ready.join(name).symlink_metadata().is_ok() {
            return; // another file of that name took its place
        }
        let gone = self
            .queue
            .remove_where(|e| e.name == name && e.state.in_ready());
        if !gone.is_empty() {
            info!(file_name = %name, "removed from ready/ before it was forwarded");
            self.save();
        }
    }

    /// `delete` of a forwarded file (uploaded, printed or failed): its
    /// entries go and so does the agent's copy; OctoPrint keeps its own.
    /// Not while it is being printed.
    pub(super) fn forget(&mut self, name: &str) -> Forget {
        let printing = |e: &Entry| e.name == name && e.state == FileState::Printing;
        if self.queue.entries().iter().any(printing) {
            return Forget::Printing;
        }
        let gone = self
            .queue
            .remove_where(|e| e.name == name && !e.state.in_ready());
        if gone.is_empty() {
            return Forget::Unknown;
        }
        self.remove_copies(name);
        info!(file_name = %name, "deleted the agent's copy of a forwarded file (the print server keeps its own)");
        self.save();
        Forget::Forgotten
    }

    /// Removes the agent's copies of a forwarded file.
    fn remove_copies(&self, name: &str) {
        for path in [
            self.done.join(name),
            self.failed.join(name),
            self.failed.join(format!("{name}.reason")),
        ] {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Removes files and records older than `keep_done`.
    pub(super) fn clean_up(&mut self) {
        let horizon = queue::now().saturating_sub(self.config.keep_done.as_secs());
        let expired = self.queue.remove_where(|e| {
            e.updated < horizon && matches!(e.state, FileState::Printed | FileState::Failed)
                || e.updated < horizon && e.state == FileState::Uploaded && !e.queued
        });
        if expired.is_empty() {
            return;
        }
        for entry in &expired {
            // A newer file of that name may own the copy now.
            if !self.queue.entries().iter().any(|e| e.name == entry.name) {
                self.remove_copies(&entry.name);
            }
        }
        info!(
            files = expired.len(),
            "removed forwarded files older than keep_done"
        );
        self.save();
    }
}
