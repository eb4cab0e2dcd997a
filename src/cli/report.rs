//! What `fileagent send` says of each file and of each agent: the line
//! for a file sent, the error for one that was not, the JSON of both, what
//! the printer did with a file sent to print, and the command's result.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use anyhow::Result;
use bytesize::ByteSize;

use super::output::Lines;
use super::send::FATE_WITHIN;
use super::{Bar, RESUME_HINT, Sending};
use crate::workstation::{Client, ClientError, Fate, Sent};

/// What `send --json` reports of each file: what was sent (and, when it
/// was sent to print, what the printer did), or why not.
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
pub(super) enum Outcome {
    Sent {
        #[serde(flatten)]
        sent: Sent,
        #[serde(skip_serializing_if = "Option::is_none")]
        print: Option<Fate>,
    },
    Failed {
        name: String,
        path: PathBuf,
        /// The agent's error code, when the agent refused.
        #[serde(skip_serializing_if = "Option::is_none")]
        code: Option<String>,
        error: String,
    },
}

/// What one agent did with the files.
pub(super) struct Delivered {
    /// Each file's outcome, in order.
    pub(super) results: Vec<Outcome>,
    /// Files stored.
    pub(super) sent: usize,
    /// The first error (the command's, when it is the only agent).
    pub(super) first_error: Option<anyhow::Error>,
    /// Files tried.
    pub(super) total: usize,
    /// With `--follow`: the connection and the last file sent.
    pub(super) followed: Option<(Client, String)>,
}

impl Delivered {
    /// The command's result: the one file's error, or how many of the
    /// files were not sent.
    pub(super) fn into_result(self) -> Result<()> {
        match self.first_error {
            Some(e) if self.total == 1 => Err(e),
            Some(e) => {
                let failed = self.total - self.sent;
                let verb = if failed == 1 { "was" } else { "were" };
                Err(e.context(format!(
                    "{failed} of {} {verb} not sent",
                    super::plural(self.total as u64, "file")
                )))
            }
            None => Ok(()),
        }
    }

    /// What became of the files sent to print.
    pub(super) fn fates(&self) -> impl Iterator<Item = &Fate> {
        self.results.iter().filter_map(|r| match r {
            Outcome::Sent { print, .. } => print.as_ref(),
            Outcome::Failed { .. } => None,
        })
    }
}

/// What happened to each file: said as it happens (a summary line, or the
/// error when several files are sent), and kept for the JSON.
pub(super) struct Report {
    json: bool,
    total: usize,
    results: Vec<Outcome>,
    sent: usize,
    first_error: Option<anyhow::Error>,
    lines: Lines,
}

impl Report {
    pub(super) fn new(json: bool, total: usize, lines: Lines) -> Report {
        Report {
            json,
            total,
            results: Vec::new(),
            sent: 0,
            first_error: None,
            lines,
        }
    }

    /// The agent could not be reached: no file was sent.
    pub(super) fn unreachable(&mut self, files: &[(PathBuf, String)], e: anyhow::Error) {
        for (path, name) in files {
            self.results.push(Outcome::Failed {
                name: name.clone(),
                path: path.clone(),
                code: None,
                error: format!("{e:#}"),
            });
        }
        self.first_error = Some(e);
    }

    /// Records one file's outcome. A failure that is not the file's own
    /// (the network gave out, retries included) ends the agent's sends:
    /// an error then.
    pub(super) fn record(
        &mut self,
        path: &Path,
        name: &str,
        outcome: Result<Sent, ClientError>,
        mut bar: Bar,
        sending: &Sending,
    ) -> Result<()> {
        let e = match outcome {
            Ok(sent) => {
                sending.resumable.store(false, Ordering::SeqCst);
                sending.committing.store(false, Ordering::SeqCst);
                bar.finish();
                if !self.json {
                    self.lines.say(&summary(&sent))?;
                }
                self.sent += 1;
                self.results.push(Outcome::Sent { sent, print: None });
                return Ok(());
            }
            Err(e) => e,
        };
        // The bar shows how far an interrupted body came; a refusal says
        // all there is to say.
        let own = matches!(e, ClientError::Refused { .. } | ClientError::Local { .. });
        if own {
            bar.finish();
        } else {
            bar.abandon();
        }
        // The network gave out after the agent had the digest: it keeps
        // the partial upload.
        let hint = if e.is_transient() && sending.resumable.load(Ordering::SeqCst) {
            format!(" ({RESUME_HINT})")
        } else {
            String::new()
        };
        let code = match &e {
            ClientError::Refused { code, .. } => Some(code.to_string()),
            _ => None,
        };
        let e = anyhow::Error::new(e).context(format!("sending {} failed{hint}", path.display()));
        self.results.push(Outcome::Failed {
            name: name.to_string(),
            path: path.to_path_buf(),
            code,
            error: format!("{e:#}"),
        });
        if !own {
            self.first_error = Some(e);
            anyhow::bail!("the connection to the agent gave out");
        }
        if self.total > 1 {
            // One file's error is the command's error, printed once by main.
            self.lines.warn(&format!("{e:#}"));
        }
        self.first_error.get_or_insert(e);
        Ok(())
    }

    /// Follows each file sent to print until its fate is known; says it.
    pub(super) async fn tell_fates(&mut self, client: &mut Client) {
        for result in &mut self.results {
            let Outcome::Sent { sent, print } = result else {
                continue;
            };
            let fate = match client.fate(&sent.name, sent.unchanged, FATE_WITHIN).await {
                Ok(fate) => fate,
                Err(e) => Fate::Waiting(format!("cannot tell: {e}")),
            };
            if !self.json {
                let line = match &fate {
                    Fate::Started => format!("started {}", sent.name),
                    Fate::Waiting(why) => format!("{} waits: {why}", sent.name),
                    Fate::Failed(why) => format!("{} will not print: {why}", sent.name),
                };
                let _ = self.lines.say(&line);
            }
            *print = Some(fate);
        }
    }

    /// The name of the last file stored, if any.
    pub(super) fn last_sent(&self) -> Option<String> {
        self.results.iter().rev().find_map(|r| match r {
            Outcome::Sent { sent, .. } => Some(sent.name.clone()),
            Outcome::Failed { .. } => None,
        })
    }

    pub(super) fn done(self, followed: Option<(Client, String)>) -> Delivered {
        Delivered {
            results: self.results,
            sent: self.sent,
            first_error: self.first_error,
            total: self.total,
            followed,
        }
    }
}

/// Bodies smaller than this get no transfer rate in the summary line.
const RATE_MIN_BYTES: u64 = 1 << 20;

/// The line printed for a file sent.
fn summary(sent: &Sent) -> String {
    // A resumed upload sent only what the agent did not have: the rate and
    // the compression ratio are of that part. A small body's time is that
    // of the round trips, and an unchanged file sent none: no rate.
    let body = sent.size.saturating_sub(sent.resumed_from);
    let rate = if sent.wire_bytes > 0 && body >= RATE_MIN_BYTES && sent.seconds > 0.0 {
        format!("  {:.1} MB/s", body as f64 / sent.seconds / 1e6)
    } else {
        String::new()
    };
    let what = match (sent.unchanged, sent.replaced) {
        (true, _) => "unchanged",
        (_, true) => "replaced",
        _ => "sent",
    };
    let resumed = if sent.resumed_from > 0 {
        format!(
            "  resumed after {}",
            ByteSize(sent.resumed_from).display().iec()
        )
    } else {
        String::new()
    };
    let wire = match sent.encoding {
        Some(_) if sent.wire_bytes > 0 && body > 0 => format!(
            "  zstd {:.1}x ({} on the wire)",
            body as f64 / sent.wire_bytes as f64,
            ByteSize(sent.wire_bytes).display().iec()
        ),
        _ => String::new(),
    };
    format!(
        "{what} {}  {}  {:.2}s{rate}{wire}{resumed}  sha256 {}",
        sent.name,
        ByteSize(sent.size).display().iec(),
        sent.seconds,
        sent.sha256
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_line_says_what_happened() {
        let sent = Sent {
            name: "cube.gcode".into(),
            size: 4 << 20,
            sha256: "ab".repeat(32),
            unchanged: false,
            replaced: false,
            seconds: 2.0,
            wire_bytes: 1 << 20,
            encoding: Some(crate::wire::protocol::Encoding::Zstd),
            resumed_from: 1 << 20,
        };
        assert_eq!(
            summary(&sent),
            format!(
                "sent cube.gcode  4.0 MiB  2.00s  1.6 MB/s  zstd 3.0x (1.0 MiB on the wire)  \
                 resumed after 1.0 MiB  sha256 {}",
                "ab".repeat(32)
            )
        );
        // Not resumed: rate and ratio are of the whole file.
        let whole = Sent {
            resumed_from: 0,
            ..sent.clone()
        };
        assert!(
            summary(&whole).starts_with(
                "sent cube.gcode  4.0 MiB  2.00s  2.1 MB/s  zstd 4.0x (1.0 MiB on the wire)  sha256 "
            ),
            "{}",
            summary(&whole)
        );
        // Resumed at its very end: nothing was left to send or compress.
        let at_end = Sent {
            resumed_from: sent.size,
            wire_bytes: 9,
            ..sent.clone()
        };
        assert!(
            !summary(&at_end).contains("zstd")
                && summary(&at_end).contains("resumed after 4.0 MiB"),
            "{}",
            summary(&at_end)
        );
        let unchanged = Sent {
            unchanged: true,
            seconds: 0.05,
            wire_bytes: 0,
            encoding: None,
            resumed_from: 0,
            ..sent.clone()
        };
        assert!(
            summary(&unchanged).starts_with("unchanged cube.gcode  4.0 MiB  0.05s  sha256 "),
            "{}",
            summary(&unchanged)
        );
        let small = Sent {
            name: "tiny.gcode".into(),
            size: 733,
            seconds: 0.01,
            wire_bytes: 733,
            encoding: None,
            resumed_from: 0,
            ..sent
        };
        assert!(
            summary(&small).starts_with("sent tiny.gcode  733 B  0.01s  sha256 "),
            "{}",
            summary(&small)
        );
    }
}
