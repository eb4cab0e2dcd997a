//! `fileagent send`: expands folders into files, sends them one after the
//! other on one connection, retries a transient failure with backoff, and
//! prints what happened to each file (a progress bar, then a summary line,
//! or JSON).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use anyhow::{Context, Result};
use bytesize::ByteSize;

use std::time::Duration;

use super::output::Lines;
use super::{Bar, RESUME_HINT, Sending, connect, print_json};
use crate::cli::args::{SendArgs, TargetArgs, UsageError};
use crate::workstation::{Client, ClientError, Fate, Observer, Phase, Sent};

/// Expands folders into their files; returns (path, name) pairs. What a
/// folder holds that is not sent (subfolders, hidden files) is said on
/// stderr.
fn expand(args: &SendArgs) -> Result<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    for path in &args.files {
        let meta = std::fs::metadata(path)
            .map_err(|e| UsageError(format!("cannot read {}: {e}", path.display())))?;
        if meta.is_dir() {
            let (mut entries, skipped) = folder_files(path)?;
            entries.sort();
            if !skipped.is_empty() {
                eprintln!(
                    "fileagent: {}: not sending {} (only the visible files directly in a folder are sent; name others one by one)",
                    path.display(),
                    skipped.join(", ")
                );
            }
            for entry in entries {
                out.push((entry.clone(), file_name(&entry)?));
            }
        } else {
            out.push((path.clone(), file_name(path)?));
        }
    }
    if let Some(name) = &args.as_name {
        if out.len() != 1 {
            return Err(UsageError("--as needs exactly one file".into()).into());
        }
        out[0].1 = name.clone();
    }
    if out.is_empty() {
        return Err(UsageError("nothing to send: the folders are empty".into()).into());
    }
    Ok(out)
}

/// The visible files directly in `dir`, and what it holds besides
/// ("2 subfolders (old, test)", "1 hidden file (.DS_Store)").
fn folder_files(dir: &Path) -> Result<(Vec<PathBuf>, Vec<String>)> {
    let (mut files, mut folders, mut hidden) = (Vec::new(), Vec::new(), Vec::new());
    let listing =
        std::fs::read_dir(dir).with_context(|| format!("cannot read folder {}", dir.display()))?;
    for entry in listing.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            hidden.push(name);
        } else if path.is_dir() {
            folders.push(name);
        } else if path.is_file() {
            files.push(path);
        }
    }
    let mut skipped = Vec::new();
    for (mut names, what) in [(folders, "subfolder"), (hidden, "hidden file")] {
        if names.is_empty() {
            continue;
        }
        names.sort();
        let count = super::plural(names.len() as u64, what);
        skipped.push(format!("{count} ({})", names.join(", ")));
    }
    Ok((files, skipped))
}

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

/// The spool name of `path`: its file name, if it is UTF-8.
fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .ok_or_else(|| {
            UsageError(format!(
                "{} has no usable UTF-8 file name; use --as NAME",
                path.display()
            ))
            .into()
        })
}

/// How long `send --print` waits to hear whether a file started.
const FATE_WITHIN: Duration = Duration::from_secs(60);

/// `fileagent send`: to one agent, or to each of several at once.
///
/// `sending` says at every moment what a Ctrl-C would leave: an upload the
/// agent can resume, or a file it was just told to store.
pub(super) async fn send(args: SendArgs, sending: &Sending) -> Result<()> {
    sending.active.store(true, Ordering::SeqCst);
    let files = expand(&args)?;
    let agents = agents_of(&args)?;
    if agents.len() > 1 {
        return super::fleet::send(&args, &files, &agents, sending).await;
    }
    let agent = agents.into_iter().next();
    let mut done = deliver(&args, &files, agent, sending, &Lines::default()).await;
    if args.json {
        print_json(&done.results)?;
    }
    let followed = done.followed.take();
    done.into_result()?;
    match followed {
        Some((client, name)) => {
            sending.active.store(false, Ordering::SeqCst);
            super::follow::follow(client, Some(&name), sending).await
        }
        None => Ok(()),
    }
}

/// The agents `--agent` names, groups expanded; none: the default agent.
fn agents_of(args: &SendArgs) -> Result<Vec<String>> {
    let dir = crate::workstation::config::config_dir().unwrap_or_else(|| PathBuf::from("."));
    let config = crate::workstation::config::ClientConfig::load(&dir)
        .map_err(|e| UsageError(format!("{e:#}")))?;
    let agents = config.expand_agents(&args.agents);
    if agents.len() > 1 && args.as_name.is_some() && args.files.len() > 1 {
        return Err(UsageError("--as needs exactly one file".into()).into());
    }
    if agents.len() > 1 && args.follow {
        return Err(UsageError(
            "--follow follows one printer: send to one agent, or follow each with `fileagent status --watch --agent NAME`".into(),
        )
        .into());
    }
    Ok(agents)
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

/// Every file to one agent in turn on one connection, each retried on a
/// transient failure, with a progress bar or a summary line per file, then
/// (with `--print`) what the printer did with each.
pub(super) async fn deliver(
    args: &SendArgs,
    files: &[(PathBuf, String)],
    agent: Option<String>,
    sending: &Sending,
    lines: &Lines,
) -> Delivered {
    let target = TargetArgs {
        agent,
        identity: args.identity.clone(),
    };
    let retries = if args.no_retry { 0 } else { args.retries };
    let mut report = Report::new(args.json, files.len(), lines.clone());
    let mut client = match connect_retrying(&target, retries).await {
        Ok(client) => client,
        Err(e) => {
            report.unreachable(files, e);
            return report.done(None);
        }
    };
    client.set_compression(args.compress);
    client.set_print(args.print_choice());
    for (path, name) in files {
        if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
            lines.warn(&format!(
                "note: {} is empty (0 bytes): the agent keeps it but forwards nothing to print",
                path.display()
            ));
        }
        let (outcome, bar) = send_one(&mut client, path, name, args, retries, sending, lines).await;
        if report.record(path, name, outcome, bar, sending).is_err() {
            break;
        }
    }
    if args.print_choice() == Some(true) {
        report.tell_fates(&mut client).await;
    }
    let last = report.last_sent();
    match (args.follow, last) {
        (true, Some(name)) => report.done(Some((client, name))),
        _ => {
            client.close().await;
            report.done(None)
        }
    }
}

/// Connects, retrying a transient failure.
async fn connect_retrying(target: &TargetArgs, retries: u32) -> Result<Client> {
    let mut attempts = 0;
    loop {
        match connect(target).await {
            Ok(client) => return Ok(client),
            Err(e) if attempts < retries && is_transient(&e) => {
                attempts += 1;
                wait_to_retry(&e, attempts, retries).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// One file, retried on a transient failure (on a new connection, whose
/// failures count as retries too); its outcome and its bar.
async fn send_one(
    client: &mut Client,
    path: &Path,
    name: &str,
    args: &SendArgs,
    retries: u32,
    sending: &Sending,
    lines: &Lines,
) -> (Result<Sent, ClientError>, Bar) {
    sending.resumable.store(false, Ordering::SeqCst);
    sending.committing.store(false, Ordering::SeqCst);
    let interactive = std::io::stderr().is_terminal() && !args.json;
    let mut progress = Progress {
        bar: lines.bar(interactive, name),
        sending,
    };
    let mut attempts = 0;
    let outcome = loop {
        let result = client
            .send_file(path, name, args.overwrite, &mut progress)
            .await;
        match result {
            Err(e) if attempts < retries && e.is_transient() => {
                attempts += 1;
                progress.bar.abandon();
                wait_to_retry(&e.into(), attempts, retries).await;
                while let Err(e) = client.reconnect().await {
                    if attempts >= retries || !e.is_transient_reconnect() {
                        break;
                    }
                    attempts += 1;
                    wait_to_retry(&e.into(), attempts, retries).await;
                }
                progress.bar = lines.bar(interactive, name);
            }
            other => break other,
        }
    };
    (outcome, progress.bar)
}

/// What happened to each file: said as it happens (a summary line, or the
/// error when several files are sent), and kept for the JSON.
struct Report {
    json: bool,
    total: usize,
    results: Vec<Outcome>,
    sent: usize,
    first_error: Option<anyhow::Error>,
    lines: Lines,
}

impl Report {
    fn new(json: bool, total: usize, lines: Lines) -> Report {
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
    fn unreachable(&mut self, files: &[(PathBuf, String)], e: anyhow::Error) {
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
    fn record(
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
    async fn tell_fates(&mut self, client: &mut Client) {
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
    fn last_sent(&self) -> Option<String> {
        self.results.iter().rev().find_map(|r| match r {
            Outcome::Sent { sent, .. } => Some(sent.name.clone()),
            Outcome::Failed { .. } => None,
        })
    }

    fn done(self, followed: Option<(Client, String)>) -> Delivered {
        Delivered {
            results: self.results,
            sent: self.sent,
            first_error: self.first_error,
            total: self.total,
            followed,
        }
    }
}

/// Whether the error has a transient [`ClientError`] in its chain.
fn is_transient(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<ClientError>()
            .is_some_and(ClientError::is_transient)
    })
}

/// Says why and how long, then waits before retry `attempt` of `retries`.
async fn wait_to_retry(e: &anyhow::Error, attempt: u32, retries: u32) {
    let wait = crate::workstation::retry_wait(attempt);
    eprintln!(
        "fileagent: {e:#}\nfileagent: retrying in {}s (retry {attempt} of {retries}; --no-retry to stop at the first failure)",
        wait.as_secs()
    );
    tokio::time::sleep(wait).await;
}

/// One file's progress bar, and what an interruption would leave.
struct Progress<'a> {
    bar: Bar,
    sending: &'a Sending,
}

impl Observer for Progress<'_> {
    fn phase(&mut self, phase: Phase, total: u64) {
        self.bar.phase(phase, total);
    }

    fn progress(&mut self, done: u64) {
        self.bar.progress(done);
    }

    fn resumable(&mut self) {
        self.sending.resumable.store(true, Ordering::SeqCst);
    }

    fn committing(&mut self) {
        self.sending.committing.store(true, Ordering::SeqCst);
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
    use clap::Parser;

    use super::*;
    use crate::cli::args::{Cli, Command};

    fn args(words: &[&str]) -> SendArgs {
        let argv = ["fileagent", "send"].iter().chain(words);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Send(args) => args,
            other => panic!("parsed as {other:?}"),
        }
    }

    fn usage_error(e: anyhow::Error) -> String {
        e.downcast::<UsageError>().expect("a usage error").0
    }

    #[test]
    fn folders_expand_to_their_visible_files_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let plate = dir.path().join("plate");
        std::fs::create_dir_all(plate.join("sub")).unwrap();
        for name in ["b.gcode", "a.gcode", ".hidden.gcode", "sub/deeper.gcode"] {
            std::fs::write(plate.join(name), b"G28\n").unwrap();
        }
        let single = dir.path().join("cube.gcode");
        std::fs::write(&single, b"G28\n").unwrap();
        let (_, skipped) = folder_files(&plate).unwrap();
        assert_eq!(
            skipped,
            ["1 subfolder (sub)", "1 hidden file (.hidden.gcode)"]
        );
        let files = expand(&args(&[plate.to_str().unwrap(), single.to_str().unwrap()])).unwrap();
        let names: Vec<_> = files.iter().map(|(_, name)| name.as_str()).collect();
        assert_eq!(names, ["a.gcode", "b.gcode", "cube.gcode"]);
        assert_eq!(files[2].0, single);

        let renamed = expand(&args(&[single.to_str().unwrap(), "--as", "other.gcode"])).unwrap();
        assert_eq!(renamed, [(single.clone(), "other.gcode".to_string())]);
    }

    #[test]
    fn what_cannot_be_sent_is_a_usage_error_that_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.gcode");
        let e = usage_error(expand(&args(&[missing.to_str().unwrap()])).unwrap_err());
        assert!(
            e.starts_with("cannot read ") && e.contains("missing.gcode"),
            "{e}"
        );

        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let e = usage_error(expand(&args(&[empty.to_str().unwrap()])).unwrap_err());
        assert_eq!(e, "nothing to send: the folders are empty");

        for name in ["a.gcode", "b.gcode"] {
            std::fs::write(dir.path().join(name), b"G28\n").unwrap();
        }
        let both = dir.path().to_str().unwrap();
        let e = usage_error(expand(&args(&[both, "--as", "x.gcode"])).unwrap_err());
        assert_eq!(e, "--as needs exactly one file");
    }

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
