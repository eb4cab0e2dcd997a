//! How commands show things: JSON, the `list` table (aligned on the
//! terminal, wide characters too), counts in words, and the progress bar.

use std::io::Write;
use std::time::Duration;

use anyhow::Result;
use bytesize::ByteSize;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::workstation::{Observer, Phase};

pub(super) fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

pub(super) fn print_table(files: &[crate::wire::protocol::FileEntry]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if files.is_empty() {
        return writeln!(out, "the spool is empty");
    }
    write!(out, "{}", table(files))
}

/// "1 file", "2 files".
pub(crate) fn plural(n: u64, what: &str) -> String {
    match n {
        1 => format!("1 {what}"),
        n => format!("{n} {what}s"),
    }
}

/// `text` padded to `width` terminal columns (wide characters count two,
/// combining ones none).
fn pad(text: &str, width: usize) -> String {
    let shown = unicode_width::UnicodeWidthStr::width(text);
    format!("{text}{}", " ".repeat(width.saturating_sub(shown)))
}

/// The `list` table, columns aligned on the terminal.
fn table(files: &[crate::wire::protocol::FileEntry]) -> String {
    let width = files
        .iter()
        .map(|f| unicode_width::UnicodeWidthStr::width(f.name.as_str()))
        .max()
        .unwrap_or(4)
        .max(4);
    let mut text = format!(
        "{}  {:>10}  {:<20}  {:<11}  NOTE\n",
        pad("NAME", width),
        "SIZE",
        "CHANGED (UTC)",
        "STATE"
    );
    for file in files {
        let modified = std::time::UNIX_EPOCH + Duration::from_secs(file.modified);
        let line = format!(
            "{}  {:>10}  {:<20}  {:<11}  {}",
            pad(&file.name, width),
            ByteSize(file.size).display().iec().to_string(),
            humantime::format_rfc3339_seconds(modified).to_string(),
            file.state.as_deref().unwrap_or("-"),
            file.reason.as_deref().unwrap_or(""),
        );
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// Where one agent's lines go: straight out, or, when several agents are
/// sent to at once, prefixed with its name and printed above their bars.
#[derive(Clone, Default)]
pub(super) struct Lines {
    label: Option<String>,
    multi: Option<MultiProgress>,
}

impl Lines {
    /// Lines of agent `label`, above the bars of `multi`.
    pub(super) fn labelled(label: &str, multi: &MultiProgress) -> Lines {
        Lines {
            label: Some(label.to_string()),
            multi: Some(multi.clone()),
        }
    }

    fn prefixed(&self, line: &str) -> String {
        match &self.label {
            Some(label) => format!("{label}: {line}"),
            None => line.to_string(),
        }
    }

    /// One line of output (stdout).
    pub(super) fn say(&self, line: &str) -> std::io::Result<()> {
        let line = self.prefixed(line);
        let write = || writeln!(std::io::stdout(), "{line}");
        match &self.multi {
            Some(multi) => multi.suspend(write),
            None => write(),
        }
    }

    /// One line on stderr, as `fileagent: ...`.
    pub(super) fn warn(&self, line: &str) {
        let line = format!("fileagent: {}", self.prefixed(line));
        match &self.multi {
            Some(multi) => multi.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    /// A progress bar for `name`, with the others when there are others.
    pub(super) fn bar(&self, interactive: bool, name: &str) -> Bar {
        match &self.multi {
            Some(multi) => Bar::in_group(multi, interactive, &self.prefixed(name)),
            None => Bar::new(interactive, name),
        }
    }
}

/// A progress bar on stderr (bytes, rate, ETA), or nothing when stderr is
/// not a terminal.
pub(super) struct Bar {
    bar: Option<ProgressBar>,
    /// No progress was shown in this phase yet: the first figure (a resumed
    /// upload's offset) is where the phase starts, not a rate.
    fresh: bool,
}

/// How often a bar redraws (elapsed time, ETA) between figures.
const BAR_TICK: Duration = Duration::from_millis(200);

impl Bar {
    pub(super) fn new(interactive: bool, name: &str) -> Bar {
        let bar = interactive.then(|| {
            let bar = ProgressBar::new(0);
            bar.set_message(name.to_string());
            bar
        });
        Bar { bar, fresh: true }
    }

    /// A bar for `name` shown with the other agents' bars in `multi`.
    pub(super) fn in_group(multi: &MultiProgress, interactive: bool, name: &str) -> Bar {
        let mut bar = Bar::new(interactive, name);
        bar.bar = bar.bar.map(|b| multi.add(b));
        bar
    }

    pub(super) fn finish(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    pub(super) fn abandon(&mut self) {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
    }
}

impl Observer for Bar {
    fn phase(&mut self, phase: Phase, total: u64) {
        self.fresh = true;
        let Some(bar) = &self.bar else { return };
        let verb = match phase {
            Phase::Hashing => "hashing",
            Phase::Sending => "sending",
            Phase::Receiving => "receiving",
        };
        let template = format!(
            "{verb:>9} {{msg}} [{{bar:30}}] {{bytes}}/{{total_bytes}} {{binary_bytes_per_sec}} ETA {{eta}}"
        );
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_length(total);
        bar.set_position(0);
        bar.reset_eta();
        bar.enable_steady_tick(BAR_TICK);
    }

    fn progress(&mut self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            if std::mem::take(&mut self.fresh) {
                bar.reset_eta();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::protocol::FileEntry;

    fn row(name: &str, state: Option<&str>, reason: Option<&str>) -> FileEntry {
        FileEntry {
            name: name.into(),
            size: 733,
            modified: 0,
            state: state.map(str::to_owned),
            reason: reason.map(str::to_owned),
        }
    }

    #[test]
    fn the_list_table_lines_up_wide_names_on_the_terminal() {
        let files = [
            row("猫のベンチ.gcode", Some("printed"), None),
            row("cube.gcode", Some("interrupted"), Some("check the printer")),
            row("café.gcode", None, None),
        ];
        let text = table(&files);
        let columns: Vec<usize> = text
            .lines()
            .map(|line| {
                // Where the right-aligned SIZE column ends.
                let end = (line.find("733 B").map(|at| at + 5))
                    .or_else(|| line.find("SIZE").map(|at| at + 4))
                    .unwrap();
                unicode_width::UnicodeWidthStr::width(&line[..end])
            })
            .collect();
        assert!(columns.windows(2).all(|w| w[0] == w[1]), "{text}");
        assert!(text.contains("interrupted  check the printer"), "{text}");
        assert!(!text.lines().any(|l| l.ends_with(' ')), "{text:?}");
    }

    #[test]
    fn counts_read_as_english() {
        assert_eq!(plural(1, "file"), "1 file");
        assert_eq!(plural(0, "file"), "0 files");
        assert_eq!(plural(2, "subfolder"), "2 subfolders");
    }
}
