//! A person's `print` (`fileagent print NAME` or `--next`): the one way,
//! besides OctoPrint itself, to say that the bed is clear. It starts the
//! file (uploading it first if need be) when the printer is connected and
//! idle, and says why not otherwise.

use tracing::info;

use super::PrintRefused;
use super::forwarder::Forwarder;
use super::printer::{PrinterError, PrinterState, Server};
use super::printing::printer_text;
use super::queue::{Entry, FileState};

impl Forwarder {
    /// `print`: a person starts `name` (or the oldest waiting file), which
    /// says the bed is clear. Uploads it first if it has not been yet.
    pub(super) async fn print_now(
        &mut self,
        name: Option<&str>,
        client: &str,
    ) -> Result<String, PrintRefused> {
        if !self.config.printer().remote_start {
            return Err(PrintRefused::Forbidden(format!(
                "this agent takes no print starts from workstations (remote_start = false in its \
                 config): start the print in {}, at the printer",
                self.printer.server()
            )));
        }
        let entry = self.chosen(name)?;
        let server = self.printer.server();
        let state = self.printer.state().await.map_err(|e| {
            PrintRefused::NotReady(format!(
                "cannot print: {server} is not usable ({e}); start it, or check [{}] in the agent's config, then try again",
                server.table()
            ))
        })?;
        printer_takes(&state, &entry.name, server)?;
        self.start(&entry, &state).await?;
        self.queue.bed.cleared_by_person();
        // Running now: its end is a print ending even if the next poll
        // comes after it.
        self.was_busy = Some(true);
        info!(file_name = %entry.name, client_cn = %client, "print started by a person (fileagent print)");
        self.save();
        Ok(entry.name)
    }

    /// Starts the entry's file: uploaded first (and started by that upload)
    /// if the print server does not have it yet, else selected and printed there.
    async fn start(&mut self, entry: &Entry, state: &PrinterState) -> Result<(), PrintRefused> {
        match (entry.state, entry.octoprint_path.clone()) {
            (FileState::Received | FileState::Uploading, _) => {
                self.upload(entry.id, state, true).await;
                let now = self.queue.entries().iter().find(|e| e.id == entry.id);
                match now.map(|e| (e.state, e.reason.clone())) {
                    Some((FileState::Printing, _)) => Ok(()),
                    Some((_, reason)) => Err(PrintRefused::Refused(format!(
                        "{} could not be started: {}",
                        entry.name,
                        reason.unwrap_or_else(|| format!(
                            "{} did not start it",
                            self.printer.server()
                        ))
                    ))),
                    None => Err(PrintRefused::NotFound(format!("{} is gone", entry.name))),
                }
            }
            (_, Some(path)) => match self.printer.print(&path).await {
                Ok(()) => {
                    self.mark_printing(entry.id);
                    Ok(())
                }
                Err(PrinterError::Conflict { message: why, .. }) => Err(PrintRefused::Busy(why)),
                Err(e) if e.is_transient() => {
                    Err(PrintRefused::NotReady(format!("cannot print: {e}")))
                }
                Err(e) => Err(PrintRefused::Refused(e.to_string())),
            },
            (_, None) => Err(PrintRefused::Refused(format!(
                "{} is not in {}: {}",
                entry.name,
                self.printer.server(),
                entry.reason.as_deref().unwrap_or("it was never uploaded")
            ))),
        }
    }

    /// The entry `print` means: the newest of that name, or the oldest
    /// file waiting to be started.
    fn chosen(&self, name: Option<&str>) -> Result<Entry, PrintRefused> {
        let entries = self.queue.entries();
        let found = match name {
            Some(name) => entries.iter().rev().find(|e| e.name == name),
            None => entries.iter().find(|e| {
                matches!(
                    e.state,
                    FileState::Received | FileState::Uploading | FileState::Uploaded
                )
            }),
        };
        let entry = found.cloned().ok_or_else(|| {
            PrintRefused::NotFound(match name {
                Some(name) => {
                    format!("no file named {name:?} was sent to this printer (see fileagent list)")
                }
                None => "no file is waiting to be printed".to_string(),
            })
        })?;
        match entry.state {
            FileState::Printing => Err(PrintRefused::Busy(format!(
                "{} is being printed already",
                entry.name
            ))),
            FileState::Skipped => Err(PrintRefused::Refused(format!(
                "{} is not a print file (extensions: {})",
                entry.name,
                self.config.print_extensions.join(", ")
            ))),
            _ => Ok(entry),
        }
    }
}
/// Whether the printer can take a print now: connected, and not busy.
fn printer_takes(state: &PrinterState, name: &str, server: Server) -> Result<(), PrintRefused> {
    if !state.operational {
        let fix = match server {
            Server::OctoPrint => "connect it in OctoPrint first",
            Server::Moonraker => {
                "start Klipper (klippy) or clear its error first (Mainsail, Fluidd)"
            }
        };
        return Err(PrintRefused::NotReady(format!(
            "cannot print: the printer is not ready ({}); {fix}",
            state.text
        )));
    }
    if state.busy {
        return Err(PrintRefused::Busy(format!(
            "the printer is busy ({}): start {name} once that print has ended and the bed is clear",
            printer_text(state)
        )));
    }
    Ok(())
}
