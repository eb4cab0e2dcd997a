//! `fileagent send`: expands folders into files, sends them one after the
//! other on one connection, retries a transient failure with backoff, and
//! prints what happened to each file (a progress bar, then a summary line,
//! or JSON).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use anyhow::{Context, Result};

use std::time::Duration;

use super::output::Lines;
use super::report::{Delivered, Report};
use super::{Bar, Sending, connect, print_json};
use crate::cli::args::{SendArgs, TargetArgs, UsageError};
use crate::workstation::{Client, ClientError, Observer, Phase, Sent};

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
pub(super) const FATE_WITHIN: Duration = Duration::from_secs(60);

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
}
