//! Following the printer: which queue entry the printer's job is, when its
//! print started and how it ended (as a pure [`transition`], tested below),
//! what the bed holds ([`super::policy::Bed`]), and starting the oldest
//! waiting file once the printer is free (`queue = true`).

use tracing::{info, warn};

use super::forwarder::Forwarder;
use super::policy::{BedChange, PRINTED_AT_PERCENT};
use super::printer::{PrinterError, PrinterState};
use super::queue::{self, Entry, FileState};

/// What the printer's state says about one forwarded file.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Transition {
    /// Its print is running.
    Started,
    /// Its print ended at completion.
    Finished,
    /// Its print ended before completion, at this percentage.
    Stopped(f64),
    /// OctoPrint no longer has a job (it restarted, or the printer
    /// disconnected) and never showed this one's end.
    Vanished,
    /// Another job took the printer before the end was seen.
    Replaced,
}

/// Whether `entry` is the printer's selected job.
fn is_job(entry: &Entry, state: &PrinterState) -> bool {
    entry.octoprint_path.is_some() && entry.octoprint_path == state.job_path
}

/// How `entry` moves on, given the printer's `state` and the completion
/// `seen` at the last poll while it printed; `None` when it stays. (A cancelled
/// job's completion reads 0 once it has stopped: where it stopped is what
/// was seen last.)
pub(super) fn transition(
    entry: &Entry,
    state: &PrinterState,
    seen: Option<f64>,
) -> Option<Transition> {
    let ours = is_job(entry, state);
    match entry.state {
        FileState::Uploaded if ours && state.busy => Some(Transition::Started),
        FileState::Printing if !state.operational => Some(Transition::Vanished),
        FileState::Printing if ours && state.busy => None,
        FileState::Printing if ours => match state.completion.unwrap_or(0.0) {
            done if done >= PRINTED_AT_PERCENT => Some(Transition::Finished),
            done => Some(Transition::Stopped(done.max(seen.unwrap_or(0.0)))),
        },
        FileState::Printing if state.job_path.is_none() => Some(Transition::Vanished),
        FileState::Printing => Some(Transition::Replaced),
        _ => None,
    }
}

impl Forwarder {
    /// Follows prints this agent started or that a person started.
    pub(super) fn follow(&mut self, state: &PrinterState) {
        let seen = |id| {
            self.progress
                .and_then(|(printing, done)| (printing == id).then_some(done))
        };
        let moves: Vec<(u64, String, Transition)> = self
            .queue
            .entries()
            .iter()
            .filter_map(|e| transition(e, state, seen(e.id)).map(|t| (e.id, e.name.clone(), t)))
            .collect();
        // How far the running print of ours has come (kept in memory only:
        // it changes on every poll).
        self.progress = self
            .queue
            .entries()
            .iter()
            .find(|e| e.state == FileState::Printing && state.busy && is_job(e, state))
            .map(|e| (e.id, state.completion.unwrap_or(0.0)));
        for (id, name, to) in &moves {
            match to {
                Transition::Started => {
                    info!(file_name = %name, "printing");
                    self.mark_printing(*id);
                }
                Transition::Finished => {
                    info!(file_name = %name, "print finished");
                    self.queue.set(*id, FileState::Printed, None);
                }
                Transition::Stopped(done) => {
                    warn!(file_name = %name, completion = done, printer = %state.text, "print stopped before the end");
                    self.queue
                        .set(*id, FileState::Failed, Some(stopped(*done, state)));
                }
                Transition::Vanished => {
                    let server = self.printer.server();
                    warn!(file_name = %name, %server, "the print server lost the job before its end was seen (restarted or disconnected)");
                    let reason = format!(
                        "{server} lost the job before it ended (it restarted, or the printer \
                         disconnected): check the printer; the print is probably not whole"
                    );
                    self.queue.set(*id, FileState::Interrupted, Some(reason));
                }
                Transition::Replaced => {
                    info!(file_name = %name, "no longer the printer's job; outcome not observed");
                    let reason = "another job was selected before this one's end was seen";
                    self.queue.set(*id, FileState::Unknown, Some(reason.into()));
                }
            }
        }
        let bed = self.watch_bed(state);
        self.set_printer(printer_text(state));
        if !moves.is_empty() || bed {
            self.save();
        }
    }

    /// Follows what the bed holds; whether it changed.
    fn watch_bed(&mut self, state: &PrinterState) -> bool {
        let change = self.queue.bed.watch(self.was_busy, state, queue::now());
        self.was_busy = Some(state.busy);
        if state.busy {
            self.last_job = state.job_path.clone();
        }
        // A job lost with OctoPrint (restarted) is named by what was seen of it.
        if change == Some(BedChange::PrintEnded)
            && let Some(occupied) = &mut self.queue.bed.occupied
            && occupied.job.is_none()
        {
            occupied.job = self.last_job.clone();
        }
        let seen = state.clone();
        self.view.update(|view| {
            view.printer_busy = seen.busy;
            view.printer_state = Some(seen);
        });
        let job = state.job_path.as_deref().unwrap_or("-");
        match &change {
            None => return false,
            Some(BedChange::PrintEnded) if self.config.printer().queue => {
                info!(
                    job,
                    "print ended; the next queued file starts when the printer is free"
                )
            }
            Some(BedChange::PrintEnded) => {
                info!(
                    job,
                    "print ended: nothing starts by itself until a person starts a file (the bed may hold the print)"
                )
            }
            Some(BedChange::FoundFinished) => {
                info!(
                    job,
                    "the print server shows a finished print: nothing starts by itself until a person starts a file"
                )
            }
            Some(BedChange::Selected(path)) => {
                info!(selected = %path, "a file was selected at the printer: a person is there, the bed counts as clear")
            }
        }
        true
    }

    /// With `queue = true`: starts the oldest waiting file when the printer
    /// is operational and idle.
    pub(super) async fn start_next(&mut self, state: &PrinterState) {
        let entries = self.queue.entries();
        if !state.operational
            || state.busy
            || entries.iter().any(|e| e.state == FileState::Printing)
        {
            return;
        }
        let Some(entry) = entries
            .iter()
            .find(|e| e.queued && e.state == FileState::Uploaded)
            .cloned()
        else {
            return;
        };
        let Some(path) = entry.octoprint_path.clone() else {
            return;
        };
        match self.printer.print(&path).await {
            Ok(()) => {
                info!(file_name = %entry.name, path = %path, "started the next queued print");
                self.mark_printing(entry.id);
                self.save();
            }
            Err(PrinterError::Conflict { message: why, .. }) => {
                info!(file_name = %entry.name, reason = %why, "printer not ready for the next print yet")
            }
            Err(e) if e.is_transient() => self.trouble(e),
            Err(e) => {
                warn!(file_name = %entry.name, error = %e, "the print server cannot print the queued file");
                self.queue
                    .set(entry.id, FileState::Failed, Some(e.to_string()));
                self.save();
            }
        }
    }

    /// Entry `id` is the printer's running job: no longer waiting in line.
    /// Its end is a print ending even if no poll sees it running (a short
    /// file on Klipper can finish between two).
    pub(super) fn mark_printing(&mut self, id: u64) {
        if let Some(e) = self.queue.get_mut(id) {
            e.queued = false;
        }
        self.queue.set(id, FileState::Printing, None);
        self.was_busy = Some(true);
    }
}

/// Why a print stopped before its end, as its row says: where, and the
/// printer's error when it shows one (Klipper's "Error: Extrude when no
/// extruder present", OctoPrint's "Offline after error"), not only a
/// cancel.
fn stopped(done: f64, state: &PrinterState) -> String {
    match state.flags.get("error") {
        Some(true) => format!("print stopped at {done:.0}%: {}", state.text),
        _ => format!("print stopped at {done:.0}%"),
    }
}

/// The printer's state as `status` and systemd show it: OctoPrint's text,
/// with the job and how far it has come while there is one
/// ("Printing cube.gcode (12%)", "Paused cube.gcode (40%)").
pub(super) fn printer_text(state: &PrinterState) -> String {
    match (&state.job_path, state.busy) {
        (Some(job), true) => format!(
            "{} {job} ({:.0}%)",
            state.text,
            state.completion.unwrap_or(0.0)
        ),
        _ => state.text.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::forward::printer::printer_for_test as printer;

    fn entry(state: FileState, path: Option<&str>) -> Entry {
        Entry {
            queued: true,
            octoprint_path: path.map(str::to_owned),
            ..Entry::for_test(1, "cube.gcode", state)
        }
    }

    #[test]
    fn a_print_is_followed_from_start_to_its_end() {
        let ours = Some("cube.gcode");
        let uploaded = entry(FileState::Uploaded, ours);
        let printing = entry(FileState::Printing, ours);
        // Uploaded and now the running job: started.
        let running = printer(true, ours, Some(3.0));
        assert_eq!(
            transition(&uploaded, &running, None),
            Some(Transition::Started)
        );
        assert_eq!(transition(&printing, &running, Some(2.0)), None);
        // Ended: finished at (about) 100 %, stopped before.
        let ended =
            |completion, seen| transition(&printing, &printer(false, ours, completion), seen);
        assert_eq!(ended(Some(100.0), Some(97.0)), Some(Transition::Finished));
        assert_eq!(ended(Some(99.95), None), Some(Transition::Finished));
        assert_eq!(
            ended(Some(42.0), Some(41.0)),
            Some(Transition::Stopped(42.0))
        );
        assert_eq!(ended(None, None), Some(Transition::Stopped(0.0)));
        // Cancelled: OctoPrint reads 0 by then; where it stopped was seen last.
        assert_eq!(
            ended(Some(0.0), Some(12.5)),
            Some(Transition::Stopped(12.5))
        );
        assert_eq!(ended(None, Some(60.0)), Some(Transition::Stopped(60.0)));
    }

    #[test]
    fn the_printer_line_names_the_job_and_its_progress() {
        let running = printer(true, Some("plates/cube.gcode"), Some(12.4));
        assert_eq!(printer_text(&running), "Printing plates/cube.gcode (12%)");
        let starting = printer(true, Some("cube.gcode"), None);
        assert_eq!(printer_text(&starting), "Printing cube.gcode (0%)");
        // Idle: a selected job is not news.
        let idle = printer(false, Some("cube.gcode"), Some(100.0));
        assert_eq!(printer_text(&idle), "Operational");
    }

    #[test]
    fn another_job_is_not_taken_for_ours() {
        let other = printer(true, Some("other.gcode"), Some(50.0));
        let uploaded = entry(FileState::Uploaded, Some("cube.gcode"));
        assert_eq!(transition(&uploaded, &other, None), None);
        // Ours was printing and another job took the printer.
        let printing = entry(FileState::Printing, Some("cube.gcode"));
        assert_eq!(
            transition(&printing, &other, Some(5.0)),
            Some(Transition::Replaced)
        );
        // OctoPrint restarted: no job, or the printer not connected.
        let restarted = printer(false, None, None);
        assert_eq!(
            transition(&printing, &restarted, Some(40.0)),
            Some(Transition::Vanished)
        );
        let mut offline = printer(false, Some("cube.gcode"), None);
        offline.operational = false;
        assert_eq!(
            transition(&printing, &offline, Some(40.0)),
            Some(Transition::Vanished)
        );
        // Not uploaded yet: no path can match, not even no job at all.
        let waiting = entry(FileState::Uploaded, None);
        assert_eq!(transition(&waiting, &printer(true, None, None), None), None);
        for done in [FileState::Printed, FileState::Failed] {
            let running = printer(true, Some("cube.gcode"), Some(1.0));
            assert_eq!(
                transition(&entry(done, Some("cube.gcode")), &running, None),
                None
            );
        }
    }

    #[test]
    fn a_print_stopped_by_a_printer_error_says_which() {
        let cancelled = printer(false, Some("cube.gcode"), Some(0.0));
        assert_eq!(stopped(12.4, &cancelled), "print stopped at 12%");
        let mut failed = cancelled.clone();
        failed.flags.insert("error".into(), true);
        failed.text = "Error: Extrude when no extruder present".into();
        assert_eq!(
            stopped(0.0, &failed),
            "print stopped at 0%: Error: Extrude when no extruder present"
        );
    }
}
