//! What each CLI command does: loads what it needs, calls into the library
//! and prints the result for people (tables, progress bars, summaries) or
//! scripts (`--json`).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use bytesize::ByteSize;
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::{ClientCommand, Command, GetArgs, UsageError};
use crate::client::{Observer, Phase};
use crate::config::Config;

mod identities;
mod send;

use identities::connect;

/// Runs one command to completion.
pub fn run(command: Command, logging: &crate::logging::Logging) -> Result<()> {
    let serve = matches!(command, Command::Serve(_));
    // The agent serves many connections at once. Any other command is one
    // operation on one connection: a worker pool would only make its
    // wake-ups hop between threads (file reading runs on a blocking thread
    // of its own either way).
    let mut builder = if serve {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Where a send is, for what an interruption leaves behind.
    let sending = Sending::default();
    if serve {
        // The agent handles SIGINT itself, as a graceful shutdown.
        return runtime.block_on(dispatch(command, logging, &sending));
    }
    // Elsewhere Ctrl-C drops the running operation, which removes its
    // partial files, instead of killing the process in the middle.
    runtime.block_on(async {
        // Registered before any work starts, so no early Ctrl-C is missed.
        let mut interrupt =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                .context("cannot watch for Ctrl-C")?;
        tokio::select! {
            result = dispatch(command, logging, &sending) => result,
            _ = interrupt.recv() => Err(Interrupted {
                sending: sending.active.load(Ordering::SeqCst),
                resumable: sending.resumable.load(Ordering::SeqCst),
                committing: sending.committing.load(Ordering::SeqCst),
            }
            .into()),
        }
    })
}

/// What to do after an upload stopped that the agent can resume.
const RESUME_HINT: &str =
    "the agent keeps what it received: send the same file again to resume where it stopped";

/// Where a running send is, at every moment.
#[derive(Debug, Default)]
pub struct Sending {
    /// A send runs.
    pub active: AtomicBool,
    /// The agent keeps what it received if the send stops now.
    pub resumable: AtomicBool,
    /// The agent verified the whole file and was told to store it.
    pub committing: AtomicBool,
}

/// The user pressed Ctrl-C.
#[derive(Debug, thiserror::Error)]
#[error("interrupted; {}", self.what_is_left())]
pub struct Interrupted {
    /// `send` was running.
    pub sending: bool,
    /// A send was under way that the agent can resume.
    pub resumable: bool,
    /// The file was complete on the agent and confirmed: it may be stored.
    pub committing: bool,
}

impl Interrupted {
    fn what_is_left(&self) -> &'static str {
        match (self.committing, self.resumable) {
            _ if !self.sending => "nothing partial was kept",
            (true, _) => {
                "the agent had the whole file and was told to store it just before: `fileagent list` shows whether it did"
            }
            (false, true) => {
                "nothing was stored; the agent keeps what it received: send the same file again to resume where it stopped"
            }
            (false, false) => "nothing was stored, and nothing partial was kept",
        }
    }
}

async fn dispatch(
    command: Command,
    logging: &crate::logging::Logging,
    sending: &Sending,
) -> Result<()> {
    match command {
        Command::Serve(args) => {
            let (config, source) = Config::load(args.config.as_deref())?;
            crate::daemon::serve(config, source, logging).await
        }
        Command::Init(args) => init(args.config.as_deref()),
        Command::Client(ClientCommand::Issue { name, out, agent }) => {
            identities::issue(&name, &out, agent.config.as_deref())
        }
        Command::Client(ClientCommand::List { json, agent }) => {
            identities::list(json, agent.config.as_deref())
        }
        Command::Client(ClientCommand::Revoke { who, agent }) => {
            identities::revoke(&who, agent.config.as_deref())
        }
        Command::Pair(args) => identities::pair(args).await,
        Command::Send(args) => send::send(args, sending).await,
        Command::Print(args) => {
            let mut client = connect(&args.target).await?;
            let name = args.name.as_deref().filter(|_| !args.next);
            let started = client.print(name).await?;
            client.close().await;
            println!("printing {started}");
            Ok(())
        }
        Command::List(args) => {
            let mut client = connect(&args.target).await?;
            let files = client.list().await?;
            client.close().await;
            if args.json {
                print_json(&files)
            } else {
                Ok(print_table(&files)?)
            }
        }
        Command::Get(args) => get(args).await,
        Command::Delete(args) => {
            let mut client = connect(&args.target).await?;
            let forwarded = client.delete(&args.name).await?;
            client.close().await;
            if forwarded {
                println!(
                    "deleted {} from the agent (it was forwarded: OctoPrint keeps its copy)",
                    args.name
                );
            } else {
                println!("deleted {}", args.name);
            }
            Ok(())
        }
        Command::Status(args) => {
            let mut client = connect(&args.target).await?;
            let status = client.status().await?;
            let addr = client.addr().to_string();
            let suite = client.cipher_suite();
            client.close().await;
            if args.json {
                let mut json = serde_json::to_value(&status)?;
                json["tls_cipher_suite"] = suite.into();
                return print_json(&json);
            }
            println!("agent       {addr} (fileagent {})", status.version);
            println!(
                "uptime      {}",
                humantime::format_duration(Duration::from_secs(status.uptime_secs))
            );
            println!(
                "ready       {}, {}",
                plural(status.ready, "file"),
                ByteSize(status.ready_bytes).display().iec()
            );
            println!("receiving   {}", status.incoming);
            println!(
                "free space  {}",
                ByteSize(status.free_bytes).display().iec()
            );
            println!(
                "max file    {}",
                ByteSize(status.max_file_size).display().iec()
            );
            println!("printer     {}", status.printer);
            println!("queued      {}", status.queued);
            if let Some(bed) = &status.bed {
                println!("bed         {bed}");
            }
            println!("you are     {}", status.client);
            println!(
                "tls         {suite} (this host {})",
                crate::tls::Preference::detect().describe()
            );
            Ok(())
        }
        Command::Generate(what) => crate::generate::run(what),
        Command::Ping(target) => {
            let mut client = connect(&target).await?;
            let rtt = client.ping().await?;
            let addr = client.addr().to_string();
            client.close().await;
            println!("{addr} answered in {:.1} ms", rtt.as_secs_f64() * 1000.0);
            Ok(())
        }
    }
}

fn init(config_path: Option<&Path>) -> Result<()> {
    let (config, source) = Config::load(config_path)?;
    let prepared = crate::daemon::prepare(&config, false)?;
    give_back(&config)?;
    let report = &prepared.report;
    println!("config          {source}");
    println!("state dir       {}", config.state_dir.display());
    println!("spool dir       {}", config.spool_dir.display());
    println!(
        "CA              {} (SHA-256 {})",
        if report.created_ca { "created" } else { "kept" },
        report.ca_fingerprint
    );
    println!(
        "server cert     {:?} for {}",
        report.server_cert,
        report.names.join(", ")
    );
    println!("next: fileagent pair   (prints a one-time code for the workstation)");
    Ok(())
}

/// After root worked on the packaged agent's directories: hands what it
/// created to the service user (see [`crate::durable::adopt_owner`]).
pub(crate) fn give_back(config: &Config) -> Result<()> {
    for dir in [&config.state_dir, &config.spool_dir] {
        crate::durable::adopt_owner(dir)
            .with_context(|| format!("cannot give {} back to its owner", dir.display()))?;
    }
    Ok(())
}

async fn get(args: GetArgs) -> Result<()> {
    let dest = match &args.output {
        Some(path) if path.is_dir() => path.join(&args.name),
        // "-o plates/" means a folder, which must exist.
        Some(path) if path.as_os_str().to_string_lossy().ends_with('/') => {
            return Err(UsageError(format!("no folder {}", path.display())).into());
        }
        Some(path) => path.clone(),
        None => PathBuf::from(&args.name),
    };
    let folder = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !folder.is_dir() {
        return Err(UsageError(format!(
            "no folder {} to write {} into: create it first, or pass -o with an existing folder",
            folder.display(),
            dest.display()
        ))
        .into());
    }
    if dest.is_dir() || (dest.symlink_metadata().is_ok() && !dest.is_file()) {
        return Err(UsageError(format!("{} is not a regular file", dest.display())).into());
    }
    let mut client = connect(&args.target).await?;
    let mut bar = Bar::new(std::io::stderr().is_terminal(), &args.name);
    let fetched = client
        .get(&args.name, &dest, args.overwrite, &mut bar)
        .await;
    bar.finish();
    let fetched = fetched?;
    client.close().await;
    let what = if fetched.unchanged {
        "unchanged"
    } else {
        "got"
    };
    println!(
        "{what} {} -> {}  {}  sha256 {}",
        args.name,
        dest.display(),
        ByteSize(fetched.size).display().iec(),
        fetched.sha256
    );
    Ok(())
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

fn print_table(files: &[crate::protocol::FileEntry]) -> std::io::Result<()> {
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
fn table(files: &[crate::protocol::FileEntry]) -> String {
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

/// A progress bar on stderr (bytes, rate, ETA), or nothing when stderr is
/// not a terminal.
struct Bar {
    bar: Option<ProgressBar>,
    /// No progress was shown in this phase yet: the first figure (a resumed
    /// upload's offset) is where the phase starts, not a rate.
    fresh: bool,
}

/// How often a bar redraws (elapsed time, ETA) between figures.
const BAR_TICK: Duration = Duration::from_millis(200);

impl Bar {
    fn new(interactive: bool, name: &str) -> Bar {
        let bar = interactive.then(|| {
            let bar = ProgressBar::new(0);
            bar.set_message(name.to_string());
            bar
        });
        Bar { bar, fresh: true }
    }

    fn finish(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    fn abandon(&mut self) {
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
    use crate::protocol::FileEntry;

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
