//! Uploading one file to OctoPrint: whether it starts at once (the
//! policy), the upload itself (at most once per content), and what follows
//! for the file: printing, waiting and why, tried again later, or refused
//! for good and moved to `failed/` with its reason.

use std::path::Path;
use std::time::Instant;

use tracing::{info, warn};

use super::forwarder::Forwarder;
use super::policy::{self, Policy};
use super::printer::{self, PrinterError, PrinterState, Server};
use super::queue::{self, FileState};
use crate::agent::config::AutoPrint;

impl Forwarder {
    /// Uploads one entry, printing it if the policy, the bed and the order
    /// allow, or if a person asked (`person`).
    pub(super) async fn upload(&mut self, id: u64, state: &PrinterState, person: bool) {
        let Some(entry) = self.queue.entries().iter().find(|e| e.id == id).cloned() else {
            return;
        };
        let source = self.ready.join(&entry.name);
        // The file this entry is about, opened: what is uploaded is what was
        // opened, and a newer file renamed over it meanwhile (send
        // --overwrite) stays in ready/ for its own turn.
        let Some((file, inode)) = open_with_inode(&source).await else {
            info!(file_name = %entry.name, "removed from ready/ before it was uploaded");
            self.queue.remove_where(|e| e.id == id);
            return self.save();
        };
        if entry.inode.is_some_and(|own| own != inode) {
            // A newer version took the name before this one was uploaded:
            // this one's content is gone; the newer one has its own entry.
            info!(file_name = %entry.name, sha256 = %entry.sha256, "replaced in ready/ by a newer version before it was uploaded");
            self.queue.remove_where(|e| e.id == id);
            return self.save();
        }
        let rules = Policy::of(self.config.printer());
        let print = person
            || policy::starts_by_itself(self.queue.entries(), id, rules, &self.queue.bed, state);
        self.queue.set(id, FileState::Uploading, None);
        self.save();
        let started = Instant::now();
        match self.put(&entry, file, &source, print).await {
            Ok(uploaded) => {
                self.healthy();
                info!(
                    file_name = %entry.name, sha256 = %entry.sha256, bytes = entry.size, path = %uploaded.path,
                    printing = uploaded.printing, secs = started.elapsed().as_secs_f64(), "uploaded to {}", self.printer.server()
                );
                let server = self.printer.server();
                let (after, reason, queued) =
                    after_upload(uploaded.printing, print, rules, entry.print, server);
                let reason = reason.or_else(|| unready(after, state));
                if let Some(e) = self.queue.get_mut(id) {
                    e.octoprint_path = Some(uploaded.path);
                    e.queued = queued;
                }
                match after {
                    FileState::Printing => self.mark_printing(id),
                    _ => self.queue.set(id, after, reason),
                }
                // Published before the file leaves ready/: a send that
                // replaces it meanwhile finds it in ready/ or held by the
                // print server (`View::holds`), never in neither, and says
                // it replaced it.
                self.save();
                self.move_out(&entry.name, &self.done.clone(), Some(inode));
            }
            Err(e) => {
                self.not_uploaded(&entry, e, state, inode);
                self.save();
            }
        }
    }

    /// Uploads the entry's file to `upload_folder` in OctoPrint, asking it
    /// to `print` it, unless OctoPrint has it already: at most once per
    /// content (after a crash mid-upload OctoPrint may hold it, its
    /// userdata carrying our digest). A different file of that name there
    /// is replaced only by a send with --overwrite.
    async fn put(
        &self,
        entry: &queue::Entry,
        file: tokio::fs::File,
        source: &Path,
        print: bool,
    ) -> Result<printer::Uploaded, PrinterError> {
        let outgoing = printer::Outgoing {
            file: source,
            name: &entry.name,
            folder: printer::folder(&self.config.printer().upload_folder),
            print,
            sha256: &entry.sha256,
            client: entry.client.as_deref(),
        };
        let path = outgoing.path();
        match self.printer.stored_digest(&path).await? {
            Some(digest) if digest == entry.sha256 => Ok(printer::Uploaded {
                path,
                printing: false,
            }),
            Some(_) if !entry.overwrite => Err(PrinterError::Rejected {
                server: self.printer.server(),
                status: 409,
                message: format!(
                    "{} already has a different {path}: send the file again with --overwrite to replace it, or under another name (--as)",
                    self.printer.server()
                ),
            }),
            _ => self.printer.upload(file, &outgoing).await,
        }
    }

    /// An upload that failed: it waits for the running print to end (409),
    /// is tried again later (OctoPrint unreachable, 5xx, bad key), or goes
    /// to `failed/` with its reason (refused for good).
    fn not_uploaded(
        &mut self,
        entry: &queue::Entry,
        e: PrinterError,
        state: &PrinterState,
        inode: (u64, u64),
    ) {
        let id = entry.id;
        match e {
            // The server is fine; it will not overwrite the file it prints.
            PrinterError::Conflict {
                message: why,
                server,
            } => {
                info!(file_name = %entry.name, reason = %why, "waits for the running print to end");
                self.hold(id);
                let reason = format!(
                    "waits for the running print to end: {server} does not overwrite a file \
                     being printed; then it does not start by itself"
                );
                self.queue.set(id, FileState::Received, Some(reason));
            }
            e if e.is_transient() => {
                let printer_free = state.operational && !state.busy;
                if !printer_free {
                    self.hold(id);
                }
                self.queue.set(id, FileState::Received, Some(e.to_string()));
                self.trouble(e);
            }
            e => {
                warn!(file_name = %entry.name, error = %e, "the print server refused the file for good, moved to failed/");
                self.queue.set(id, FileState::Failed, Some(e.to_string()));
                self.move_out(&entry.name, &self.failed.clone(), Some(inode));
                let reason = self.failed.join(format!("{}.reason", entry.name));
                if let Err(write) = std::fs::write(&reason, format!("{e}\n")) {
                    warn!(path = %reason.display(), error = %write, "cannot write the failure reason");
                }
            }
        }
    }
}

/// The file at `path`, opened, with its device and inode.
async fn open_with_inode(path: &Path) -> Option<(tokio::fs::File, (u64, u64))> {
    let file = tokio::fs::File::open(path).await.ok()?;
    let meta = file.metadata().await.ok()?;
    Some((file, crate::agent::spool::file_id(&meta)))
}

/// Why an uploaded file that would have started did not: the printer was
/// not ready (not connected, klippy down). Nothing starts it by itself
/// later, so the reason stays with it for `list` and `status`.
fn unready(after: FileState, printer: &PrinterState) -> Option<String> {
    (after == FileState::Uploaded && !printer.operational).then(|| {
        format!(
            "not started: the printer was not ready when it was uploaded ({})",
            printer.text
        )
    })
}

/// A file's state after its upload, why it waits (if that is not said
/// live by `list`, see `policy::why_waiting`), and whether it is queued to
/// print when the printer is free.
fn after_upload(
    printing: bool,
    print: bool,
    rules: Policy,
    choice: Option<bool>,
    server: Server,
) -> (FileState, Option<String>, bool) {
    let auto_print = rules.for_file(choice);
    let queued = auto_print != AutoPrint::Never && rules.queue;
    let (state, reason) = if printing {
        (FileState::Printing, None)
    } else if print {
        (
            FileState::Uploaded,
            Some(format!("{server} did not start it (printer busy)")),
        )
    } else if choice == Some(false) {
        (
            FileState::Uploaded,
            Some(
                "uploaded only, as its sender asked: start it with `fileagent print` when you want it printed"
                    .to_string(),
            ),
        )
    } else if choice == Some(true) && !rules.remote_start {
        (
            FileState::Uploaded,
            Some(format!(
                "its sender asked to print it, but this agent takes no print starts from \
                 workstations (remote_start = false): start it in {server}"
            )),
        )
    } else if auto_print == AutoPrint::Never {
        (
            FileState::Uploaded,
            Some("uploaded only (auto_print = never)".to_string()),
        )
    } else if queued {
        (
            FileState::Uploaded,
            Some("waiting: prints when the printer is free".to_string()),
        )
    } else {
        (FileState::Uploaded, None)
    };
    (state, reason, queued && !printing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_an_upload_the_state_says_what_comes_next() {
        let rules = |auto_print, queue| Policy {
            auto_print,
            queue,
            remote_start: true,
        };
        let on = rules(AutoPrint::WhenIdle, false);
        assert_eq!(
            after_upload(true, true, on, None, Server::OctoPrint),
            (FileState::Printing, None, false)
        );
        let (state, why, _) = after_upload(false, true, on, None, Server::OctoPrint);
        assert_eq!(state, FileState::Uploaded);
        assert!(why.unwrap().contains("did not start"));
        let never = after_upload(
            false,
            false,
            rules(AutoPrint::Never, true),
            None,
            Server::OctoPrint,
        );
        assert_eq!(
            never,
            (
                FileState::Uploaded,
                Some("uploaded only (auto_print = never)".to_string()),
                false
            )
        );
        let queued = after_upload(
            false,
            false,
            rules(AutoPrint::WhenIdle, true),
            None,
            Server::OctoPrint,
        );
        assert!(queued.2, "queued to print when the printer is free");
        assert!(queued.1.unwrap().contains("when the printer is free"));
        // Printing already: not queued any more.
        assert!(
            !after_upload(
                true,
                false,
                rules(AutoPrint::WhenIdle, true),
                None,
                Server::OctoPrint
            )
            .2
        );
        // Why it waits is said live by `list`.
        assert_eq!(
            after_upload(false, false, on, None, Server::OctoPrint),
            (FileState::Uploaded, None, false)
        );
        // Unless the printer was not ready: nothing starts it later.
        let mut down = crate::agent::forward::printer::printer_for_test(false, None, None);
        assert_eq!(unready(FileState::Uploaded, &down), None);
        down.operational = false;
        down.text = "Klipper not connected (klippy disconnected)".into();
        let why = unready(FileState::Uploaded, &down).unwrap();
        assert!(
            why.contains("not ready when it was uploaded (Klipper not connected"),
            "{why}"
        );
        assert_eq!(unready(FileState::Printing, &down), None);
    }

    #[test]
    fn the_senders_choice_is_said_after_the_upload() {
        let when_idle = Policy {
            auto_print: AutoPrint::WhenIdle,
            queue: true,
            remote_start: true,
        };
        // Upload only: never queued, and it says so.
        let (state, why, queued) =
            after_upload(false, false, when_idle, Some(false), Server::OctoPrint);
        assert_eq!(state, FileState::Uploaded);
        assert!(
            why.unwrap()
                .starts_with("uploaded only, as its sender asked")
        );
        assert!(!queued);
        // Upload and print on an agent that takes no remote starts.
        let closed = Policy {
            auto_print: AutoPrint::Never,
            remote_start: false,
            ..when_idle
        };
        let (_, why, queued) = after_upload(false, false, closed, Some(true), Server::OctoPrint);
        assert!(why.unwrap().contains("remote_start = false"));
        assert!(!queued);
        // Where remote starts are allowed, "print" makes a never-agent queue it.
        let open = Policy {
            remote_start: true,
            ..closed
        };
        assert!(after_upload(false, false, open, Some(true), Server::OctoPrint).2);
    }
}
