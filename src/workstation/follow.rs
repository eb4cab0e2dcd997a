//! Following the printer ([`Client::watch`]): one `watch` request, then the
//! agent's reports as things change, on this connection, which carries
//! nothing else afterwards (the next request opens a new one).

use crate::wire::protocol::{Reply, Request, WATCH_HEARTBEAT, Watched};

use super::{Client, ClientError, unexpected};

/// How long a watch waits for the agent's next report (it reports at least
/// every `WATCH_HEARTBEAT`) before taking the agent or the link for lost.
pub(crate) const WATCH_SILENCE: std::time::Duration = WATCH_HEARTBEAT.saturating_mul(3);

impl Client {
    /// Starts following the printer and, if named, one file: the first
    /// report. Then [`Client::next_watched`] gives each later one.
    pub async fn watch(&mut self, name: Option<&str>) -> Result<Watched, ClientError> {
        let request = Request::Watch {
            name: name.map(str::to_owned),
        };
        let reply = self.request(&request).await;
        // The watch takes this connection; the next request opens another.
        self.drop_connection();
        match reply? {
            Reply::Watching(watched) => Ok(watched),
            other => Err(unexpected(&other)),
        }
    }

    /// The next report of a watch: something changed, or the heartbeat.
    pub async fn next_watched(&mut self) -> Result<Watched, ClientError> {
        let reply = self
            .conn
            .expect_message::<Reply>(WATCH_SILENCE)
            .await
            .map_err(|e| self.explain(e))?;
        match super::error::answer(reply)? {
            Reply::Watching(watched) => Ok(watched),
            other => Err(unexpected(&other)),
        }
    }
}

/// What became of a file sent to print, as far as the agent can tell soon
/// after it stored the file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", content = "reason", rename_all = "snake_case")]
pub enum Fate {
    /// The printer is printing it (or already has).
    Started,
    /// It waits, for this reason (the printer is busy, the bed may hold
    /// the last part, OctoPrint cannot be reached, ...).
    Waiting(String),
    /// It cannot print: OctoPrint refused it, or it is no print file.
    Failed(String),
}

impl Fate {
    /// The file's fate in a `watch` report, once there is one to tell.
    /// `again`: the file was there already (sent unchanged), so an ended
    /// state is its last print's, not news, until the agent puts it back
    /// in line.
    pub fn of(watched: &Watched, again: bool) -> Option<Fate> {
        let printer = &watched.printer;
        let Some(file) = &watched.file else {
            // Not taken up by the forwarder (yet); if it cannot be, say why.
            return (!printer.connected).then(|| Fate::Waiting(printer.text.clone()));
        };
        let reason = || file.reason.clone().unwrap_or_default();
        match file.state.as_deref() {
            Some("printed" | "failed" | "skipped" | "interrupted" | "unknown") if again => None,
            // Back in line, before the agent has looked at it.
            Some("uploaded") if again && file.reason.is_none() => None,
            Some("printing" | "printed") => Some(Fate::Started),
            Some("uploaded") => Some(Fate::Waiting(match file.reason.clone() {
                Some(reason) => reason,
                None if printer.busy() => "the printer is busy".into(),
                None => "waiting to be started".into(),
            })),
            Some("failed" | "skipped" | "interrupted" | "unknown") => Some(Fate::Failed(reason())),
            // Received or uploading: while OctoPrint cannot be reached,
            // that is the news; else the upload to it is on its way.
            _ if !printer.connected => Some(Fate::Waiting(match file.reason.clone() {
                Some(reason) => reason,
                None => printer.text.clone(),
            })),
            _ => None,
        }
    }
}

impl Client {
    /// Follows the file `name` until its fate is known, at most `within`
    /// (then it waits, for the reason the last report gives); `again` as in
    /// [`Fate::of`].
    pub async fn fate(
        &mut self,
        name: &str,
        again: bool,
        within: std::time::Duration,
    ) -> Result<Fate, ClientError> {
        let deadline = tokio::time::Instant::now() + within;
        let mut report = self.watch(Some(name)).await?;
        loop {
            if let Some(fate) = Fate::of(&report, again) {
                return Ok(fate);
            }
            match tokio::time::timeout_at(deadline, self.next_watched()).await {
                Ok(next) => report = next?,
                Err(_) => {
                    let state = report
                        .file
                        .and_then(|f| f.state)
                        .unwrap_or_else(|| "received".into());
                    return Ok(Fate::Waiting(format!(
                        "not started yet ({state}; the printer: {})",
                        report.printer.text
                    )));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::protocol::FileEntry;

    fn report(state: Option<&str>, reason: Option<&str>, connected: bool) -> Watched {
        let mut w = Watched::default();
        w.printer.connected = connected;
        w.printer.text = if connected {
            "Operational"
        } else {
            "error: OctoPrint unreachable"
        }
        .into();
        w.file = state.map(|s| FileEntry {
            name: "a.gcode".into(),
            size: 1,
            modified: 0,
            state: Some(s.into()),
            reason: reason.map(str::to_owned),
        });
        w
    }

    #[test]
    fn a_files_fate_is_told_once_there_is_one() {
        // Sent again, unchanged: the last print's end is not this one's.
        assert_eq!(Fate::of(&report(Some("printed"), None, true), true), None);
        assert_eq!(Fate::of(&report(Some("uploaded"), None, true), true), None);
        assert_eq!(
            Fate::of(
                &report(Some("uploaded"), Some("the printer is busy"), true),
                true
            ),
            Some(Fate::Waiting("the printer is busy".into()))
        );
        assert_eq!(
            Fate::of(&report(None, None, true), false),
            None,
            "not taken up yet"
        );
        assert_eq!(Fate::of(&report(Some("received"), None, true), false), None);
        assert_eq!(
            Fate::of(&report(Some("uploading"), None, true), false),
            None
        );
        assert_eq!(
            Fate::of(&report(Some("printing"), None, true), false),
            Some(Fate::Started)
        );
        assert_eq!(
            Fate::of(&report(Some("printed"), None, true), false),
            Some(Fate::Started)
        );
        assert_eq!(
            Fate::of(
                &report(Some("uploaded"), Some("the printer is busy"), true),
                false
            ),
            Some(Fate::Waiting("the printer is busy".into()))
        );
        assert_eq!(
            Fate::of(&report(Some("failed"), Some("refused"), true), false),
            Some(Fate::Failed("refused".into()))
        );
        // OctoPrint cannot be reached: that is why it waits.
        assert_eq!(
            Fate::of(&report(Some("received"), None, false), false),
            Some(Fate::Waiting("error: OctoPrint unreachable".into()))
        );
        assert_eq!(
            Fate::of(&report(None, None, false), false),
            Some(Fate::Waiting("error: OctoPrint unreachable".into()))
        );
    }
}
