//! Following a printer live: `fileagent status --watch` until Ctrl-C,
//! `send --follow` until the sent file's print ends. One line, redrawn on
//! a terminal; elsewhere a line per change that matters (state, job, each
//! whole percent), not a flood.

use std::io::{IsTerminal, Write};
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Result;

use super::Sending;
use crate::wire::protocol::Watched;
use crate::workstation::Client;

/// Follows the printer (and `name`) over `client` until the file's print
/// ends (with a name) or Ctrl-C.
pub(super) async fn follow(
    mut client: Client,
    name: Option<&str>,
    sending: &Sending,
) -> Result<()> {
    sending.following.store(true, Ordering::SeqCst);
    let terminal = std::io::stdout().is_terminal();
    let mut report = client.watch(name).await?;
    let mut shown = String::new();
    loop {
        let line = line(&report);
        if line != shown {
            show(&line, terminal)?;
            shown = line;
        }
        if let Some(end) = name.and_then(|n| ended(&report, n)) {
            if terminal {
                writeln!(std::io::stdout())?;
            }
            say!("{end}");
            return Ok(());
        }
        report = client.next_watched().await?;
    }
}

/// Writes the line: over the last one on a terminal, else on its own.
fn show(line: &str, terminal: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match terminal {
        true => write!(out, "\r\x1b[K{line}")?,
        false => writeln!(out, "{line}")?,
    }
    out.flush()
}

/// "Printing cube.gcode  42%  printed 12m 3s  about 17m left", or the state
/// and why the followed file waits.
pub(super) fn line(report: &Watched) -> String {
    let p = &report.printer;
    let mut line = p.text.clone();
    if p.busy()
        && let Some(job) = &p.job
    {
        line.push_str(&format!(" {job}  {:.0}%", p.completion.unwrap_or(0.0)));
        if let Some(t) = p.print_time {
            line.push_str(&format!("  printed {}", duration(t)));
        }
        if let Some(t) = p.print_time_left {
            line.push_str(&format!("  about {} left", duration(t)));
        }
    }
    if let Some(file) = &report.file
        && !matches!(file.state.as_deref(), Some("printing"))
    {
        let state = file.state.as_deref().unwrap_or("received");
        line.push_str(&format!("  |  {}: {state}", file.name));
        if let Some(reason) = &file.reason {
            line.push_str(&format!(" ({reason})"));
        }
    }
    line
}

/// Whole seconds, minutes or hours, as people read a print's time.
fn duration(secs: u64) -> String {
    // Seconds only while there are no minutes to show.
    let secs = if secs < 60 { secs } else { secs / 60 * 60 };
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// How the followed file's print ended, once it has.
fn ended(report: &Watched, name: &str) -> Option<String> {
    let file = report.file.as_ref()?;
    let why = file
        .reason
        .as_deref()
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    match file.state.as_deref()? {
        "printed" => Some(format!("{name}: printed")),
        state @ ("failed" | "interrupted" | "unknown" | "skipped") => {
            Some(format!("{name}: {state}{why}"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::protocol::FileEntry;

    #[test]
    fn the_line_says_state_job_progress_and_times() {
        let mut w = Watched::default();
        w.printer.text = "Printing".into();
        w.printer.flags.insert("printing".into(), true);
        w.printer.job = Some("cube.gcode".into());
        w.printer.completion = Some(41.6);
        w.printer.print_time = Some(723);
        w.printer.print_time_left = Some(1030);
        assert_eq!(
            line(&w),
            "Printing cube.gcode  42%  printed 12m  about 17m left"
        );
        w.printer = Default::default();
        w.printer.text = "Operational".into();
        w.file = Some(FileEntry {
            name: "next.gcode".into(),
            size: 1,
            modified: 0,
            state: Some("uploaded".into()),
            reason: Some("the printer is busy".into()),
        });
        assert_eq!(
            line(&w),
            "Operational  |  next.gcode: uploaded (the printer is busy)"
        );
        assert_eq!(ended(&w, "next.gcode"), None);
        w.file.as_mut().unwrap().state = Some("printed".into());
        assert_eq!(ended(&w, "next.gcode").unwrap(), "next.gcode: printed");
    }
}
